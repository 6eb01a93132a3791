//! The decision for one request, cheapest checks first: exemptions → query credentials → HTTPS →
//! credential extraction (missing → 401 at once) → API key → JWT → binding → forward.
//! Pure: the host hands in the request's headers and the time, and applies the [`Decision`].

use std::rc::Rc;

use crate::config::CredentialPolicy;
use crate::credentials::{credential_in_query, with_scheme};
use crate::denial::{Challenges, Denial, LocalReply};
use crate::jwt::{JwtVerifier, VerifiedJwt};
use crate::paths::is_canonical;
use crate::policy::{
    Policy, CONSUMER_HEADER, IDENTITY_HEADER_PREFIX, SUBJECT_HEADER, WOULD_DENY_HEADER,
};
use crate::request::RequestFacts;
use crate::transport::PlainHttp;

/// Who the caller was verified to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The API key's consumer, or the token's subject when only a token was required.
    pub consumer: Option<Rc<str>>,
    /// The verified JWT `sub`.
    pub subject: Option<String>,
    /// The issuer of the verified JWT.
    pub issuer: Option<String>,
}

/// Header edits for a request that goes on to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    pub remove_headers: Vec<String>,
    pub set_headers: Vec<(String, String)>,
    pub caller: Caller,
    /// The request came over HTTPS: its response gets HSTS.
    pub add_hsts: bool,
    /// In report-only mode, the denial that was not enforced.
    pub unenforced: Option<Denial>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Forward(Forward),
    Reply(LocalReply),
}

/// Why the checks stopped short of forwarding the request.
enum Stop<'p> {
    Refuse(Refusal<'p>),
    /// Plain HTTP, to be redirected to this `https://` URL.
    Redirect(String),
}

/// A refusal with the challenges its route calls for.
struct Refusal<'p> {
    denial: Denial,
    challenges: Challenges<'p>,
}

impl From<Denial> for Refusal<'_> {
    fn from(denial: Denial) -> Self {
        Self {
            denial,
            challenges: Challenges {
                api_key: None,
                bearer: false,
            },
        }
    }
}

/// Per-worker state: the shared policy and the JWT verifier's caches.
pub struct Guard {
    policy: Rc<Policy>,
    jwt: Option<JwtVerifier>,
}

impl Guard {
    pub fn new(policy: Rc<Policy>) -> Self {
        let jwt = policy.jwt.clone().map(JwtVerifier::new);
        Self { policy, jwt }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn jwt_verifier(&mut self) -> Option<&mut JwtVerifier> {
        self.jwt.as_mut()
    }

    pub fn decide(&mut self, req: &RequestFacts, now: i64) -> Decision {
        let policy = Rc::clone(&self.policy);
        let is_https = policy.https.is_https(req);
        let mut forward = Forward {
            remove_headers: spoofable_headers(req, &policy),
            add_hsts: is_https && policy.https.hsts.is_some(),
            ..Forward::default()
        };
        // Credentials are stripped whatever follows: exempt paths and report-only mode included.
        mark_for_stripping(&policy, req, &mut forward);
        if policy.exempt.iter().any(|p| p.matches(req.path())) {
            return Decision::Forward(forward);
        }
        match check(&policy, self.jwt.as_mut(), req, now, &mut forward) {
            Ok(caller) => {
                if let Some(consumer) = &caller.consumer {
                    forward
                        .set_headers
                        .push((CONSUMER_HEADER.to_owned(), consumer.to_string()));
                }
                if let Some(subject) = &caller.subject {
                    forward
                        .set_headers
                        .push((SUBJECT_HEADER.to_owned(), subject.clone()));
                }
                forward.caller = caller;
                Decision::Forward(forward)
            }
            Err(Stop::Redirect(location)) if !policy.report_only => {
                Decision::Reply(LocalReply::redirect(location))
            }
            Err(Stop::Redirect(_)) => {
                forward.set_headers.push((
                    WOULD_DENY_HEADER.to_owned(),
                    Denial::HttpsRequired.code().to_owned(),
                ));
                forward.unenforced = Some(Denial::HttpsRequired);
                Decision::Forward(forward)
            }
            Err(Stop::Refuse(refusal)) if policy.report_only => {
                forward.set_headers.push((
                    WOULD_DENY_HEADER.to_owned(),
                    refusal.denial.code().to_owned(),
                ));
                forward
                    .set_headers
                    .retain(|(name, _)| name == WOULD_DENY_HEADER);
                forward.unenforced = Some(refusal.denial);
                Decision::Forward(forward)
            }
            Err(Stop::Refuse(refusal)) => {
                let mut reply = LocalReply::denial(
                    &refusal.denial,
                    refusal.challenges,
                    &policy.realm,
                    req.request_id(),
                );
                if let (true, Some(hsts)) = (is_https, &policy.https.hsts) {
                    reply
                        .headers
                        .push(("strict-transport-security".to_owned(), hsts.clone()));
                }
                Decision::Reply(reply)
            }
        }
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method` and no body (a
/// body would be a real request dressed as a preflight, for upstreams that route `OPTIONS`).
fn is_cors_preflight(req: &RequestFacts) -> bool {
    req.method() == "OPTIONS"
        && req.end_of_stream()
        && req.header("origin").is_some()
        && req
            .header("access-control-request-method")
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|c| c.is_ascii_alphabetic()))
}

/// The checks proper, in order.
fn check<'p>(
    policy: &'p Policy,
    jwt: Option<&mut JwtVerifier>,
    req: &RequestFacts,
    now: i64,
    forward: &mut Forward,
) -> Result<Caller, Stop<'p>> {
    // An upstream could resolve such a path to one that another rule covers.
    if policy.matches_paths() && !is_canonical(req.path()) {
        return Err(Stop::Refuse(Denial::NonCanonicalPath.into()));
    }
    if let Some(param) = req
        .query()
        .and_then(|q| credential_in_query(q, &policy.query_params))
    {
        return Err(Stop::Refuse(
            Denial::CredentialInQuery {
                param: param.to_owned(),
            }
            .into(),
        ));
    }
    match policy.https.check(req) {
        None => {}
        Some(PlainHttp::Refuse) => return Err(Stop::Refuse(Denial::HttpsRequired.into())),
        Some(PlainHttp::Redirect(location)) => return Err(Stop::Redirect(location)),
    }
    if policy.allow_cors_preflight && is_cors_preflight(req) {
        return Ok(Caller::default());
    }
    let route = policy.route_for(req.path());
    let rule = route.map_or(policy.credentials, |r| r.credentials);
    let challenges = Challenges {
        api_key: policy
            .api_keys
            .as_ref()
            .filter(|_| rule.accepts_api_key())
            .map(|k| k.header.as_str()),
        bearer: rule.accepts_jwt(),
    };
    let refuse = |denial: Denial| Err(Stop::Refuse(Refusal { denial, challenges }));

    let presented = match policy.sources.extract(req) {
        Ok(p) => p,
        Err(ambiguous) => {
            return refuse(Denial::MultipleCredentials {
                header: ambiguous.header,
            })
        }
    };
    let api_key = presented.api_key.filter(|_| rule.accepts_api_key());
    let bearer = presented.bearer.filter(|_| rule.accepts_jwt());
    let missing = match rule {
        CredentialPolicy::ApiKey => api_key.is_none(),
        CredentialPolicy::Jwt => bearer.is_none(),
        CredentialPolicy::Either => api_key.is_none() && bearer.is_none(),
        CredentialPolicy::Both => api_key.is_none() || bearer.is_none(),
    };
    if missing {
        return refuse(Denial::MissingCredential);
    }

    let mut caller = Caller::default();
    if let (Some(key), Some(keys)) = (api_key, &policy.api_keys) {
        match keys.store.verify(key, now) {
            Ok(record) => caller.consumer = Some(Rc::clone(&record.consumer)),
            Err(rejection) => return refuse(Denial::ApiKey(rejection)),
        }
    }
    let mut token: Option<VerifiedJwt> = None;
    if let (Some(bearer), Some(verifier)) = (bearer, jwt) {
        match verifier.verify(bearer.expose(), now) {
            Ok(verified) => {
                forward
                    .set_headers
                    .extend(verified.forward_headers.iter().cloned());
                caller.subject = Some(verified.subject.clone());
                caller.issuer = Some(verified.issuer.clone());
                token = Some(verified);
            }
            Err(e) => {
                return refuse(Denial::Jwt {
                    code: e.code(),
                    description: e.description(),
                })
            }
        }
    }
    if let (Some(claim), Some(token)) = (route.and_then(|r| r.bind_claim.as_deref()), &token) {
        let bound = caller
            .consumer
            .as_deref()
            .is_some_and(|c| token.claim_str(claim).as_deref() == Some(c));
        if !bound {
            return refuse(Denial::BindingMismatch {
                claim: claim.to_owned(),
            });
        }
    }
    if caller.consumer.is_none() {
        caller.consumer = caller.subject.as_deref().map(Rc::from);
    }
    Ok(caller)
}

/// Credential headers present in the request are stripped (when configured) whatever the
/// outcome, so that report-only mode never forwards a credential either.
fn mark_for_stripping(policy: &Policy, req: &RequestFacts, forward: &mut Forward) {
    if let Some(keys) = policy.api_keys.as_ref().filter(|k| k.strip) {
        if req.header(&keys.header).is_some() {
            forward.remove_headers.push(keys.header.clone());
        }
        // An ApiKey credential is stripped even where that scheme is not accepted: it is ours.
        let apikey_scheme = req
            .header_values("authorization")
            .any(|v| with_scheme(v, "ApiKey").is_some());
        if apikey_scheme {
            forward.remove_headers.push("authorization".to_owned());
        }
    }
    if let Some(jwt) = policy.jwt.as_ref().filter(|j| j.strip_token()) {
        if req.header(jwt.header()).is_some() {
            forward.remove_headers.push(jwt.header().to_owned());
        }
    }
    forward.remove_headers.sort_unstable();
    forward.remove_headers.dedup();
}

/// Client-sent headers that only the plugin may set: every `x-apiguard-*` header and the targets
/// of forwarded claims.
fn spoofable_headers(req: &RequestFacts, policy: &Policy) -> Vec<String> {
    let mut names: Vec<String> = req
        .header_names()
        .filter(|n| n.starts_with(IDENTITY_HEADER_PREFIX))
        .map(str::to_owned)
        .collect();
    if let Some(jwt) = &policy.jwt {
        names.extend(
            jwt.forwarded_header_names()
                .iter()
                .filter(|n| req.header(n).is_some())
                .cloned(),
        );
    }
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::api_key::{self, RandomError, RandomSource};
    use crate::secret::to_hex;

    const NOW: i64 = 1_800_000_000;

    struct SeqRng(u8);
    impl RandomSource for SeqRng {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
            buf.fill(self.0);
            Ok(())
        }
    }

    fn key(seed: u8) -> String {
        api_key::generate(&mut SeqRng(seed)).unwrap()
    }

    fn entry(key: &str, consumer: &str, extra: &str) -> String {
        format!(
            r#"{{"sha256": "{}", "consumer": "{consumer}"{extra}}}"#,
            to_hex(&api_key::digest(key))
        )
    }

    /// A guard for keys 1 (alice), 2 (revoked), 3 (expired), with `extra` top-level fields.
    fn guard(extra: &str) -> Guard {
        let json = format!(
            r#"{{"api_keys": {{"keys": [{}, {}, {}]}}, "exempt_paths": ["/healthz"]{extra}}}"#,
            entry(&key(1), "alice", ""),
            entry(&key(2), "bob", r#", "revoked": true"#),
            entry(
                &key(3),
                "carol",
                r#", "expires_at": "2020-01-01T00:00:00Z""#
            ),
        );
        Guard::new(Rc::new(Policy::from_json(json.as_bytes()).unwrap()))
    }

    fn req(path: &str, extra: &[(&str, &str)]) -> RequestFacts {
        let mut headers = vec![
            (":method".to_owned(), "GET".to_owned()),
            (":scheme".to_owned(), "https".to_owned()),
            (":authority".to_owned(), "api.test".to_owned()),
            (":path".to_owned(), path.to_owned()),
            ("x-request-id".to_owned(), "rid-1".to_owned()),
        ];
        for (n, v) in extra {
            headers.retain(|(name, _)| name != n || n.starts_with("x-api-key"));
            headers.push(((*n).to_owned(), (*v).to_owned()));
        }
        let tls = headers.contains(&(":scheme".to_owned(), "https".to_owned()));
        RequestFacts::new(headers)
            .with_downstream_tls(tls)
            .with_end_of_stream(true)
    }

    fn denial_code(decision: &Decision) -> Option<&'static str> {
        match decision {
            Decision::Reply(reply) => reply.code,
            Decision::Forward(_) => None,
        }
    }

    fn forwarded(decision: Decision) -> Forward {
        match decision {
            Decision::Forward(f) => f,
            Decision::Reply(r) => panic!("expected forward, got {} {:?}", r.status, r.code),
        }
    }

    #[test]
    fn valid_key_forwards_with_identity_and_without_the_key() {
        let mut g = guard("");
        let f = forwarded(g.decide(
            &req(
                "/v1",
                &[("x-api-key", &key(1)), ("x-apiguard-consumer", "admin")],
            ),
            NOW,
        ));
        assert_eq!(
            f.set_headers,
            [(CONSUMER_HEADER.to_owned(), "alice".to_owned())]
        );
        assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
        assert!(f.remove_headers.contains(&"x-apiguard-consumer".to_owned()));
        assert!(f.add_hsts);
        assert_eq!(f.caller.consumer.as_deref(), Some("alice"));
    }

    #[test]
    fn each_key_problem_has_its_own_code() {
        let mut g = guard("");
        let mut typo = key(1);
        typo.pop();
        typo.push('!');
        let cases = [
            (req("/v1", &[]), "missing_credential"),
            (req("/v1", &[("x-api-key", &typo)]), "malformed_api_key"),
            (req("/v1", &[("x-api-key", &key(9))]), "unknown_api_key"),
            (req("/v1", &[("x-api-key", &key(2))]), "revoked_api_key"),
            (req("/v1", &[("x-api-key", &key(3))]), "expired_api_key"),
            (
                req("/v1?access_token=x", &[("x-api-key", &key(1))]),
                "credential_in_query",
            ),
            (
                req("/v1", &[("x-api-key", &key(1)), ("x-api-key", &key(9))]),
                "multiple_credentials",
            ),
            (
                req("/v1", &[(":scheme", "http"), ("x-api-key", &key(1))]),
                "https_required",
            ),
        ];
        for (request, code) in cases {
            assert_eq!(
                denial_code(&g.decide(&request, NOW)),
                Some(code),
                "{request:?}"
            );
        }
    }

    #[test]
    fn denials_never_echo_the_key() {
        let mut g = guard("");
        for k in [key(9), key(2), format!("{}x", key(1))] {
            let Decision::Reply(reply) =
                g.decide(&req(&format!("/v1?token={k}"), &[("x-api-key", &k)]), NOW)
            else {
                panic!("expected a denial")
            };
            let all = format!(
                "{:?}{}",
                reply.headers,
                String::from_utf8_lossy(&reply.body)
            );
            assert!(!all.contains(&k));
            let Decision::Reply(reply) = g.decide(&req("/v1", &[("x-api-key", &k)]), NOW) else {
                panic!()
            };
            assert!(!String::from_utf8_lossy(&reply.body).contains(&k));
        }
    }

    #[test]
    fn exempt_paths_and_preflights_skip_credentials_but_not_spoof_removal() {
        let mut g = guard("");
        let f = forwarded(g.decide(
            &req("/healthz/live", &[("x-apiguard-consumer", "admin")]),
            NOW,
        ));
        assert_eq!(f.remove_headers, ["x-apiguard-consumer"]);
        assert!(f.set_headers.is_empty());
        assert_eq!(
            denial_code(&g.decide(&req("/healthzz", &[]), NOW)),
            Some("missing_credential")
        );
        assert_eq!(
            denial_code(&g.decide(&req("/healthz/../admin", &[]), NOW)),
            Some("non_canonical_path")
        );
        let preflight = [
            (":method", "OPTIONS"),
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
        ];
        forwarded(g.decide(&req("/v1", &preflight), NOW));
        assert_eq!(
            denial_code(&g.decide(&req("/v1", &[(":method", "OPTIONS")]), NOW)),
            Some("missing_credential")
        );
        let mut strict = guard(r#", "allow_cors_preflight": false"#);
        assert_eq!(
            denial_code(&strict.decide(&req("/v1", &preflight), NOW)),
            Some("missing_credential")
        );
    }

    #[test]
    fn paths_an_upstream_could_read_differently_are_refused_when_rules_match_paths() {
        let mut g = guard("");
        for sneaky in [
            "/healthz/..;/admin",
            "/healthz/../admin",
            "/%68ealthz",
            "/v1;x=y",
            "/v1%00",
        ] {
            assert_eq!(
                denial_code(&g.decide(&req(sneaky, &[]), NOW)),
                Some("non_canonical_path"),
                "{sneaky}"
            );
        }
        // Without exemptions or routes nothing is matched on the path, so nothing to confuse.
        let json = format!(
            r#"{{"api_keys": {{"keys": [{}]}}}}"#,
            entry(&key(1), "alice", "")
        );
        let mut plain = Guard::new(Rc::new(Policy::from_json(json.as_bytes()).unwrap()));
        forwarded(plain.decide(&req("/v1;x=y", &[("x-api-key", &key(1))]), NOW));
    }

    #[test]
    fn credentials_are_stripped_on_exempt_paths_and_in_any_spelling() {
        let mut g = guard("");
        let with_tab = format!("ApiKey\t{}", key(1));
        let f = forwarded(g.decide(
            &req(
                "/healthz",
                &[("x-api-key", &key(1)), ("authorization", &with_tab)],
            ),
            NOW,
        ));
        assert_eq!(f.remove_headers, ["authorization", "x-api-key"]);
    }

    #[test]
    fn preflights_with_a_body_or_over_plain_http_are_not_preflights() {
        let mut g = guard("");
        let preflight = [
            (":method", "OPTIONS"),
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
        ];
        let with_body = req("/v1", &preflight).with_end_of_stream(false);
        assert_eq!(
            denial_code(&g.decide(&with_body, NOW)),
            Some("missing_credential")
        );
        let mut plain = preflight.to_vec();
        plain.push((":scheme", "http"));
        assert_eq!(
            denial_code(&g.decide(&req("/v1", &plain), NOW)),
            Some("https_required")
        );
    }

    #[test]
    fn report_only_forwards_and_names_what_it_would_deny() {
        let mut g = guard(r#", "report_only": true"#);
        let f = forwarded(g.decide(&req("/v1", &[("x-api-key", &key(2))]), NOW));
        assert_eq!(
            f.set_headers,
            [(WOULD_DENY_HEADER.to_owned(), "revoked_api_key".to_owned())]
        );
        assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
        assert_eq!(
            f.unenforced,
            Some(Denial::ApiKey(crate::api_key::KeyRejection::Revoked))
        );
        let f = forwarded(g.decide(
            &req("/v1", &[(":scheme", "http"), ("x-api-key", &key(1))]),
            NOW,
        ));
        assert_eq!(f.unenforced, Some(Denial::HttpsRequired));
        assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
        for refused_early in [
            req("/v1?token=1", &[("x-api-key", &key(1))]),
            req("/v1", &[("x-api-key", &key(1)), ("x-api-key", &key(2))]),
        ] {
            let f = forwarded(g.decide(&refused_early, NOW));
            assert!(f.unenforced.is_some());
            assert!(
                f.remove_headers.contains(&"x-api-key".to_owned()),
                "{refused_early:?}"
            );
            assert!(!f.set_headers.iter().any(|(n, _)| n == CONSUMER_HEADER));
        }
    }

    #[test]
    fn plain_http_gets_redirected_when_configured() {
        let mut g = guard(r#", "https": {"redirect": true}"#);
        let Decision::Reply(reply) = g.decide(&req("/v1?a=1", &[(":scheme", "http")]), NOW) else {
            panic!()
        };
        assert_eq!(reply.status, 308);
        assert_eq!(
            reply.headers,
            [("location".to_owned(), "https://api.test/v1?a=1".to_owned())]
        );
    }

    #[test]
    fn hsts_only_for_https_requests() {
        let mut g = guard(r#", "https": {"required": false}"#);
        assert!(
            !forwarded(g.decide(
                &req("/v1", &[(":scheme", "http"), ("x-api-key", &key(1))]),
                NOW
            ))
            .add_hsts
        );
        let Decision::Reply(reply) = g.decide(&req("/v1", &[]), NOW) else {
            panic!()
        };
        assert!(reply
            .headers
            .iter()
            .any(|(n, _)| n == "strict-transport-security"));
    }

    mod tokens {
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        use super::*;
        use crate::jwt::test_keys::{ec_public_jwk, mint};
        use crate::jwt::Alg;

        const ISS: &str = "https://idp.test";

        /// Key 1 belongs to consumer "alice"; `/bound` needs both, bound by `azp`.
        fn jwt_guard(credentials: &str) -> Guard {
            let mut jwk = ec_public_jwk();
            jwk["kid"] = serde_json::json!("ec");
            let json = serde_json::json!({
                "credentials": credentials,
                "api_keys": {"keys": [serde_json::from_str::<serde_json::Value>(&entry(&key(1), "alice", "")).unwrap()]},
                "jwt": {"providers": [{"issuer": ISS, "audiences": ["api"], "jwks": {"keys": [jwk]}}]},
                "routes": [{"prefix": "/bound", "credentials": "both", "bind_claim": "azp"},
                           {"prefix": "/keys-only", "credentials": "api_key"}],
            });
            Guard::new(Rc::new(
                Policy::from_json(json.to_string().as_bytes()).unwrap(),
            ))
        }

        fn token(sub: &str, azp: &str) -> String {
            let claims = serde_json::json!({"iss": ISS, "aud": "api", "sub": sub, "azp": azp, "iat": NOW, "exp": NOW + 300});
            format!("Bearer {}", mint(Alg::Es256, Some("ec"), &claims))
        }

        #[test]
        fn jwt_only_makes_the_subject_the_consumer_and_strips_the_token() {
            let mut g = jwt_guard("jwt");
            let f = forwarded(g.decide(
                &req(
                    "/v1",
                    &[
                        ("authorization", &token("user-7", "x")),
                        ("x-apiguard-subject", "root"),
                    ],
                ),
                NOW,
            ));
            assert!(f
                .set_headers
                .contains(&(SUBJECT_HEADER.to_owned(), "user-7".to_owned())));
            assert!(f
                .set_headers
                .contains(&(CONSUMER_HEADER.to_owned(), "user-7".to_owned())));
            assert!(f.remove_headers.contains(&"authorization".to_owned()));
            assert!(f.remove_headers.contains(&"x-apiguard-subject".to_owned()));
            // An API key alone does not satisfy a JWT-only policy.
            assert_eq!(
                denial_code(&g.decide(&req("/v1", &[("x-api-key", &key(1))]), NOW)),
                Some("missing_credential")
            );
        }

        #[test]
        fn bad_tokens_get_a_bearer_challenge_with_the_reason() {
            let mut g = jwt_guard("jwt");
            let Decision::Reply(reply) =
                g.decide(&req("/v1", &[("authorization", "Bearer not.a.token")]), NOW)
            else {
                panic!()
            };
            assert_eq!(reply.code, Some("malformed_token"));
            let challenge = reply
                .headers
                .iter()
                .find(|(n, _)| n == "www-authenticate")
                .map(|(_, v)| v.as_str());
            assert!(
                challenge.is_some_and(
                    |c| c.starts_with("Bearer realm=\"apiguard\", error=\"invalid_token\"")
                ),
                "{challenge:?}"
            );
            let expired = token("u", "x");
            assert_eq!(
                denial_code(&g.decide(&req("/v1", &[("authorization", &expired)]), NOW + 3600)),
                Some("token_expired")
            );
        }

        #[test]
        fn either_accepts_one_but_refuses_any_bad_one_presented() {
            let mut g = jwt_guard("either");
            forwarded(g.decide(&req("/v1", &[("x-api-key", &key(1))]), NOW));
            forwarded(g.decide(&req("/v1", &[("authorization", &token("u", "x"))]), NOW));
            let bad_key_good_token = [("x-api-key", key(9)), ("authorization", token("u", "x"))];
            let pairs: Vec<(&str, &str)> = bad_key_good_token
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            assert_eq!(
                denial_code(&g.decide(&req("/v1", &pairs), NOW)),
                Some("unknown_api_key")
            );
            let Decision::Reply(missing) = g.decide(&req("/v1", &[]), NOW) else {
                panic!()
            };
            assert_eq!(
                missing
                    .headers
                    .iter()
                    .filter(|(n, _)| n == "www-authenticate")
                    .count(),
                2
            );
        }

        #[test]
        fn both_requires_both_and_binding_ties_them() {
            let mut g = jwt_guard("both");
            let (k, t_alice, t_bob) = (key(1), token("u", "alice"), token("u", "bob"));
            assert_eq!(
                denial_code(&g.decide(&req("/v1", &[("x-api-key", &k)]), NOW)),
                Some("missing_credential")
            );
            let f = forwarded(g.decide(
                &req("/v1", &[("x-api-key", &k), ("authorization", &t_bob)]),
                NOW,
            ));
            assert_eq!(f.caller.consumer.as_deref(), Some("alice"));
            assert_eq!(f.caller.subject.as_deref(), Some("u"));
            forwarded(g.decide(
                &req(
                    "/bound/x",
                    &[("x-api-key", &k), ("authorization", &t_alice)],
                ),
                NOW,
            ));
            assert_eq!(
                denial_code(&g.decide(
                    &req("/bound/x", &[("x-api-key", &k), ("authorization", &t_bob)]),
                    NOW
                )),
                Some("credential_binding_mismatch")
            );
            // Routes override the default policy.
            forwarded(g.decide(&req("/keys-only", &[("x-api-key", &k)]), NOW));
        }

        #[test]
        fn keys_not_yet_fetched_is_a_retryable_503() {
            let json = serde_json::json!({"credentials": "jwt",
                "jwt": {"providers": [{"issuer": ISS, "remote_jwks": {"cluster": "idp"}}]}});
            let mut g = Guard::new(Rc::new(
                Policy::from_json(json.to_string().as_bytes()).unwrap(),
            ));
            let Decision::Reply(reply) =
                g.decide(&req("/v1", &[("authorization", &token("u", "x"))]), NOW)
            else {
                panic!()
            };
            assert_eq!(
                (reply.status, reply.code),
                (503, Some("no_verification_key"))
            );
            assert!(reply
                .headers
                .contains(&("retry-after".to_owned(), "5".to_owned())));
        }
    }

    #[test]
    fn authorization_apikey_scheme_only_when_enabled() {
        let json = format!(
            r#"{{"api_keys": {{"allow_authorization_header": true, "keys": [{}]}}}}"#,
            entry(&key(1), "alice", "")
        );
        let mut g = Guard::new(Rc::new(Policy::from_json(json.as_bytes()).unwrap()));
        let value = format!("ApiKey {}", key(1));
        let f = forwarded(g.decide(&req("/v1", &[("authorization", &value)]), NOW));
        assert!(f.remove_headers.contains(&"authorization".to_owned()));
        let mut off = guard("");
        assert_eq!(
            denial_code(&off.decide(&req("/v1", &[("authorization", &value)]), NOW)),
            Some("missing_credential")
        );
    }
}

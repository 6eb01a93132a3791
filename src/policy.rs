//! The compiled configuration: everything validated once at start-up, shared read-only by every
//! request on the worker.

use std::collections::HashMap;
use std::rc::Rc;

use crate::acl::AclPolicy;
use crate::api_key::{KeyRecord, KeyStore};
use crate::audit::AuditSettings;
use crate::config::{ApiKeysConfig, CredentialPolicy, PluginConfig, RouteConfig};
use crate::config_error::ConfigError;
use crate::credentials::CredentialSources;
use crate::identity::IDENTITY_HEADER_PREFIX;
use crate::jwt::JwtSettings;
use crate::key_entry::{check_key_entry, KeyEntryFields, KnownPlans};
use crate::live::source::DataSource;
use crate::paths::PathPrefix;
use crate::query::QueryCredentials;
use crate::ratelimit::{FailedAuthLimit, GlobalRateLimit, RateLimits};
use crate::request::{is_header_name, RequestFacts};
use crate::transport::HttpsPolicy;

#[derive(Debug)]
pub struct ApiKeySettings {
    pub header: String,
    pub in_authorization: bool,
    pub strip: bool,
    pub store: KeyStore,
}

/// The credential rule for one path prefix.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: PathPrefix,
    pub credentials: CredentialPolicy,
    pub bind_claim: Option<String>,
    /// Tokens a request takes from its caller's rate-limit bucket.
    pub cost: u64,
}

/// See [`Policy::needed_facts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededFacts {
    pub downstream_tls: bool,
    pub client_address: bool,
}

#[derive(Debug)]
pub struct Policy {
    pub credentials: CredentialPolicy,
    pub routes: Vec<Route>,
    pub api_keys: Option<ApiKeySettings>,
    pub jwt: Option<Rc<JwtSettings>>,
    pub https: HttpsPolicy,
    pub exempt: Vec<PathPrefix>,
    /// Query parameters that carry credentials, by name or value (see [`QueryCredentials`]).
    pub query_credentials: QueryCredentials,
    pub allow_cors_preflight: bool,
    pub report_only: bool,
    pub realm: String,
    pub sources: CredentialSources,
    pub rate_limits: Option<RateLimits>,
    pub failed_auth: Option<FailedAuthLimit>,
    /// Where the live policy document comes from.
    pub data_source: Option<DataSource>,
    pub global_rate_limit: Option<GlobalRateLimit>,
    pub audit: Option<Rc<AuditSettings>>,
    pub acl: Option<AclPolicy>,
    /// Valid but doubtful settings, logged at start-up.
    pub warnings: Vec<String>,
}

impl Policy {
    /// Parses and validates configuration text.
    pub fn from_json(text: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(crate::config::parse(text)?)
    }

    pub fn compile(cfg: PluginConfig) -> Result<Self, ConfigError> {
        let routes_given: Vec<RouteGiven> = cfg
            .routes
            .iter()
            .map(|r| RouteGiven {
                credentials: r.credentials.is_some(),
                cost: r.cost.is_some(),
            })
            .collect();
        let routes = cfg
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile_route(i, r, cfg.credentials))
            .collect::<Result<Vec<_>, _>>()?;
        // First match wins: a route behind a shorter prefix that covers it would never apply.
        for (i, later) in routes.iter().enumerate() {
            if let Some(j) = routes
                .iter()
                .take(i)
                .position(|r| r.prefix.matches_ignoring_case(later.prefix.as_str()))
            {
                return Err(ConfigError::new(
                    format!("routes[{i}].prefix"),
                    format!(
                        "is shadowed by routes[{j}] (first match wins: list longer prefixes first)"
                    ),
                ));
            }
        }
        let policies = std::iter::once(("credentials".to_owned(), cfg.credentials)).chain(
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("routes[{i}].credentials"), r.credentials)),
        );
        for (path, policy) in policies {
            if policy.accepts_api_key() && cfg.api_keys.is_none() {
                return Err(ConfigError::new(
                    "api_keys",
                    format!("required because {path} accepts API keys"),
                ));
            }
            if policy.accepts_jwt() && cfg.jwt.is_none() {
                return Err(ConfigError::new(
                    "jwt",
                    format!("required because {path} accepts JWTs"),
                ));
            }
        }
        let rate_limits = cfg.rate_limits.map(RateLimits::compile).transpose()?;
        let audit = cfg.audit.map(AuditSettings::compile).transpose()?;
        let failed_auth = cfg
            .failed_auth_limit
            .map(FailedAuthLimit::compile)
            .transpose()?;
        let api_keys = cfg
            .api_keys
            .map(|k| compile_api_keys(k, rate_limits.as_ref()))
            .transpose()?;
        let data_source = cfg.data_source.map(DataSource::compile).transpose()?;
        if data_source.is_some() && api_keys.is_none() {
            // The document's entries are API keys (its ACL data has no use without them yet).
            return Err(ConfigError::new(
                "data_source",
                "needs api_keys (the document's keys are read with its settings)",
            ));
        }
        let mut warnings = Vec::new();
        if let Some(limits) = &rate_limits {
            for (i, route) in routes.iter().enumerate() {
                for plan in limits.plans().filter(|p| route.cost > p.limit.burst()) {
                    warnings.push(format!(
                        "routes[{i}].cost {} exceeds the burst {} of plan {}: its callers are always refused",
                        route.cost,
                        plan.limit.burst(),
                        plan.name
                    ));
                }
            }
        }
        warnings.sort();
        let jwt = cfg
            .jwt
            .map(|j| JwtSettings::compile(j, "jwt"))
            .transpose()?
            .map(Rc::new);
        let exempt = cfg
            .exempt_paths
            .iter()
            .enumerate()
            .map(|(i, p)| prefix(p, &format!("exempt_paths[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        refuse_disabling_rules(&exempt, &routes, &routes_given)?;
        for (i, param) in cfg.query_credential_params.iter().enumerate() {
            if crate::query::normalize_name(param).is_empty() {
                return Err(ConfigError::new(
                    format!("query_credential_params[{i}]"),
                    "must name a parameter (letters or digits)",
                ));
            }
        }
        if cfg.realm.is_empty()
            || !cfg
                .realm
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ')
        {
            return Err(ConfigError::new(
                "realm",
                "must be printable ASCII without quotes or backslashes",
            ));
        }
        let h = &cfg.https;
        if h.redirect && !h.required {
            return Err(ConfigError::new(
                "https.redirect",
                "needs https.required to be true",
            ));
        }
        if h.hsts_preload && (h.hsts_max_age_seconds < 31_536_000 || !h.hsts_include_subdomains) {
            return Err(ConfigError::new(
                "https.hsts_preload",
                "preload needs hsts_max_age_seconds of at least 31536000 and hsts_include_subdomains",
            ));
        }
        let https = HttpsPolicy {
            required: h.required,
            redirect: h.redirect,
            trust_x_forwarded_proto: h.trust_x_forwarded_proto,
            hsts: HttpsPolicy::hsts_value(
                h.hsts_max_age_seconds,
                h.hsts_include_subdomains,
                h.hsts_preload,
            ),
        };
        // The credential headers' own names are refused as parameters too.
        let header_names = [
            api_keys.as_ref().map(|k| k.header.as_str()),
            jwt.as_ref().map(|j| j.header()),
            Some("authorization"),
        ];
        let query_credentials = QueryCredentials::new(
            cfg.query_credential_params
                .iter()
                .map(String::as_str)
                .chain(header_names.into_iter().flatten()),
        );
        let sources = CredentialSources {
            api_key_header: api_keys.as_ref().map(|k| k.header.clone()),
            api_key_in_authorization: api_keys.as_ref().is_some_and(|k| k.in_authorization),
            bearer_header: jwt.as_ref().map(|j| j.header().to_owned()),
        };
        if let (Some(k), Some(j)) = (&api_keys, &jwt) {
            if k.header == j.header() {
                return Err(ConfigError::new(
                    "api_keys.header",
                    "must differ from jwt.header",
                ));
            }
        }
        // A forwarded claim must never land in a header that carries a credential.
        if let Some(j) = &jwt {
            let credential_headers = [
                api_keys.as_ref().map(|k| k.header.as_str()),
                Some(j.header()),
                Some("authorization"),
            ];
            if let Some(clash) = j
                .forwarded_header_names()
                .iter()
                .find(|h| credential_headers.contains(&Some(h.as_str())))
            {
                return Err(ConfigError::new(
                    "jwt",
                    format!("forward_claims writes to {clash}, a credential header"),
                ));
            }
        }
        let global_rate_limit = match cfg.global_rate_limit {
            Some(global) => {
                let credential_headers: Vec<&str> = [
                    api_keys.as_ref().map(|k| k.header.as_str()),
                    jwt.as_ref().map(|j| j.header()),
                    Some("authorization"),
                ]
                .into_iter()
                .flatten()
                .collect();
                let claim_headers = jwt.as_ref().map_or(&[][..], |j| j.forwarded_header_names());
                Some(GlobalRateLimit::compile(
                    global,
                    &credential_headers,
                    claim_headers,
                )?)
            }
            None => None,
        };
        let acl = cfg
            .acl
            .map(|a| crate::acl::config::compile(a, jwt.is_some()))
            .transpose()?;
        Ok(Self {
            credentials: cfg.credentials,
            routes,
            api_keys,
            jwt,
            https,
            exempt,
            query_credentials,
            allow_cors_preflight: cfg.allow_cors_preflight,
            report_only: cfg.report_only,
            realm: cfg.realm,
            sources,
            rate_limits,
            failed_auth,
            data_source,
            global_rate_limit,
            audit,
            acl,
            warnings,
        })
    }

    /// The facts beyond the headers that a request's decision can depend on: the host reads
    /// only these (each is one more host call per request).
    pub fn needed_facts(&self) -> NeededFacts {
        NeededFacts {
            downstream_tls: self.https.needs_connection_state(),
            client_address: self.failed_auth.is_some()
                || self
                    .global_rate_limit
                    .as_ref()
                    .is_some_and(GlobalRateLimit::needs_client_address),
        }
    }

    /// Whether the host must read the jwt_authn filter's metadata for this request: it presents
    /// a bearer token that a provider verified by jwt_authn may have to vouch for. Other
    /// requests never pay that host call.
    pub fn wants_jwt_authn_metadata(&self, req: &RequestFacts) -> bool {
        let Some(jwt) = self.jwt.as_ref().filter(|j| j.uses_jwt_authn()) else {
            return false;
        };
        match self.sources.extract(req) {
            Ok(presented) => presented
                .bearer
                .is_some_and(|token| jwt.wants_jwt_authn_metadata(token.expose())),
            // Refused before any token is checked.
            Err(_) => false,
        }
    }

    /// Whether the root must tick: remote documents are refreshed, and requests that wait for
    /// an outbound answer are bounded by the tick too.
    pub fn needs_ticks(&self) -> bool {
        self.fetches_remote_documents()
            || self.global_rate_limit.is_some()
            // VMs load the configuration's ACL data that one of them publishes.
            || self
                .acl
                .as_ref()
                .is_some_and(|a| a.configured_data.is_some())
    }

    /// Whether some document is fetched from a remote endpoint (the root must tick).
    pub fn fetches_remote_documents(&self) -> bool {
        self.data_source.is_some()
            || self
                .jwt
                .as_ref()
                .is_some_and(|j| j.providers.iter().any(|p| p.remote.is_some()))
    }

    /// Whether a path that is not canonical could be matched wrongly (so must be refused).
    pub fn matches_paths(&self) -> bool {
        !self.exempt.is_empty() || !self.routes.is_empty() || self.acl.is_some()
    }

    /// The route whose prefix covers `path` first, if any (prefixes ignore ASCII case).
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.prefix.matches_ignoring_case(path))
    }
}

/// Refuses configurations that switch enforcement off by accident: an exemption of `/` (every
/// request unchecked), an exemption that covers a route's prefix (exemptions are checked first,
/// so the route would never apply), a route of `/` that sets nothing (it would only shadow
/// every later route).
fn refuse_disabling_rules(
    exempt: &[PathPrefix],
    routes: &[Route],
    given: &[RouteGiven],
) -> Result<(), ConfigError> {
    for (i, e) in exempt.iter().enumerate() {
        if e.as_str() == "/" {
            return Err(ConfigError::new(
                format!("exempt_paths[{i}]"),
                "exempts every path: nothing would be checked",
            ));
        }
        for (j, r) in routes.iter().enumerate() {
            // Some spelling of the route's paths is exempt (exemptions match case-sensitively,
            // routes do not).
            let lower = |p: &PathPrefix| PathPrefix::new(&p.as_str().to_ascii_lowercase());
            let covered = match (lower(e), lower(&r.prefix)) {
                (Some(e), Some(r)) => e.matches(r.as_str()),
                _ => e.matches(r.prefix.as_str()),
            };
            if covered {
                return Err(ConfigError::new(
                    format!("exempt_paths[{i}]"),
                    format!("covers routes[{j}].prefix: that route would never apply"),
                ));
            }
        }
    }
    for (i, (r, g)) in routes.iter().zip(given).enumerate() {
        if r.prefix.as_str() == "/" && !g.credentials && !g.cost && r.bind_claim.is_none() {
            return Err(ConfigError::new(
                format!("routes[{i}]"),
                "a route of '/' that sets neither credentials nor cost does nothing but shadow later routes",
            ));
        }
    }
    Ok(())
}

/// Which optional fields a route set explicitly.
#[derive(Debug, Clone, Copy)]
struct RouteGiven {
    credentials: bool,
    cost: bool,
}

fn prefix(text: &str, path: &str) -> Result<PathPrefix, ConfigError> {
    PathPrefix::new(text).ok_or_else(|| {
        ConfigError::new(
            path,
            "must start with '/' and contain no query, dot segments, '//' or encoded separators",
        )
    })
}

fn compile_route(
    i: usize,
    r: RouteConfig,
    default: CredentialPolicy,
) -> Result<Route, ConfigError> {
    let prefix = prefix(&r.prefix, &format!("routes[{i}].prefix"))?;
    let credentials = r.credentials.unwrap_or(default);
    if r.cost == Some(0) {
        return Err(ConfigError::new(
            format!("routes[{i}].cost"),
            "must be at least 1",
        ));
    }
    if let Some(claim) = &r.bind_claim {
        if credentials != CredentialPolicy::Both {
            return Err(ConfigError::new(
                format!("routes[{i}].bind_claim"),
                "only applies when credentials is 'both'",
            ));
        }
        if claim.is_empty() {
            return Err(ConfigError::new(
                format!("routes[{i}].bind_claim"),
                "must not be empty",
            ));
        }
    }
    Ok(Route {
        prefix,
        credentials,
        bind_claim: r.bind_claim,
        cost: r.cost.unwrap_or(1),
    })
}

/// A consumer id as configuration accepts it (it is forwarded in a header).
pub fn is_consumer_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-:@".contains(&c))
}

fn compile_api_keys(
    cfg: ApiKeysConfig,
    rate_limits: Option<&RateLimits>,
) -> Result<ApiKeySettings, ConfigError> {
    if !is_header_name(&cfg.header) || cfg.header.starts_with(IDENTITY_HEADER_PREFIX) {
        return Err(ConfigError::new(
            "api_keys.header",
            "must be a lower-case header name that does not start with 'x-apiguard-'",
        ));
    }
    let mut store = KeyStore::with_capacity(cfg.keys.len());
    // Many keys often share a consumer: keep one copy of each id.
    let mut consumers: HashMap<String, Rc<str>> = HashMap::new();
    for (i, key) in cfg.keys.iter().enumerate() {
        let at = |field: &str| format!("api_keys.keys[{i}].{field}");
        let fields = KeyEntryFields {
            sha256: &key.sha256,
            consumer: &key.consumer,
            expires_at: key.expires_at.as_deref(),
            revoked: key.revoked,
            plan: key.plan.as_deref(),
        };
        let checked = check_key_entry(fields, KnownPlans::Configured(rate_limits), at)?;
        let consumer = consumers
            .entry(checked.consumer.to_owned())
            .or_insert_with_key(|c| Rc::from(c.as_str()))
            .clone();
        let (digest, expires_at, plan) = (
            checked.digest,
            checked.expires_at,
            checked.plan.map(Rc::from),
        );
        store
            .insert(KeyRecord::new(digest, consumer, expires_at, checked.revoked).with_plan(plan))
            .map_err(|_| {
                ConfigError::new(at("sha256"), "the same digest appears earlier in the list")
            })?;
    }
    Ok(ApiKeySettings {
        header: cfg.header,
        in_authorization: cfg.allow_authorization_header,
        strip: cfg.strip_credential,
        store,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const DIGEST: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn error_of(json: &str) -> ConfigError {
        Policy::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn the_issue_example_compiles() {
        let json = format!(
            r#"{{"credentials": "api_key",
                "api_keys": {{"header": "x-api-key", "keys": [{{"sha256": "{DIGEST}", "consumer": "alice", "expires_at": "2027-01-01T00:00:00Z", "revoked": false}}]}},
                "https": {{"required": true, "trust_x_forwarded_proto": false, "hsts_max_age_seconds": 31536000}},
                "exempt_paths": ["/healthz"], "report_only": false}}"#
        );
        let policy = Policy::from_json(json.as_bytes()).unwrap();
        assert_eq!(policy.api_keys.unwrap().store.len(), 1);
        assert_eq!(
            policy.https.hsts.as_deref(),
            Some("max-age=31536000; includeSubDomains")
        );
    }

    #[test]
    fn each_invalid_value_names_its_field() {
        let cases = [
            (
                r#"{"api_keys": {"keys": [{"sha256": "abc", "consumer": "a"}]}}"#,
                "api_keys.keys[0].sha256",
            ),
            (
                &format!(
                    r#"{{"api_keys": {{"keys": [{{"sha256": "{DIGEST}", "consumer": "a b"}}]}}}}"#
                ),
                "api_keys.keys[0].consumer",
            ),
            (
                &format!(
                    r#"{{"api_keys": {{"keys": [{{"sha256": "{DIGEST}", "consumer": "a", "expires_at": "tomorrow"}}]}}}}"#
                ),
                "api_keys.keys[0].expires_at",
            ),
            (
                &format!(
                    r#"{{"api_keys": {{"keys": [{{"sha256": "{DIGEST}", "consumer": "a"}}, {{"sha256": "{}", "consumer": "b"}}]}}}}"#,
                    DIGEST.to_uppercase()
                ),
                "api_keys.keys[1].sha256",
            ),
            (r#"{"api_keys": {"header": "X-Key"}}"#, "api_keys.header"),
            (
                r#"{"api_keys": {"header": "x-apiguard-key"}}"#,
                "api_keys.header",
            ),
            (
                r#"{"api_keys": {}, "exempt_paths": ["healthz"]}"#,
                "exempt_paths[0]",
            ),
            (
                r#"{"api_keys": {}, "https": {"hsts_preload": true, "hsts_max_age_seconds": 0}}"#,
                "https.hsts_preload",
            ),
            (
                r#"{"api_keys": {}, "https": {"required": false, "redirect": true}}"#,
                "https.redirect",
            ),
            (
                r#"{"api_keys": {}, "query_credential_params": [""]}"#,
                "query_credential_params[0]",
            ),
            (r#"{"api_keys": {}, "realm": "a\"b"}"#, "realm"),
            (
                r#"{"api_keys": {}, "routes": [{"prefix": "/a", "credentials": "api_key", "bind_claim": "azp"}]}"#,
                "routes[0].bind_claim",
            ),
            (
                r#"{"api_keys": {}, "routes": [{"prefix": "/a", "credentials": "jwt"}]}"#,
                "jwt",
            ),
            (
                r#"{"api_keys": {"header": "x-key"}, "jwt": {"providers": [{"issuer": "i", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk"}]}, "forward_claims": {"tenant": "x-key"}}]}}"#,
                "jwt",
            ),
            (
                r#"{"api_keys": {}, "routes": [{"prefix": "/a", "credentials": "api_key"}, {"prefix": "/A/b", "credentials": "api_key"}]}"#,
                "routes[1].prefix",
            ),
            (r#"{}"#, "api_keys"),
        ];
        for (json, path) in cases {
            assert_eq!(error_of(json).path, path, "{json}");
        }
    }
}

//! The claim rules, and the identity a verified token yields.
//!
//! [`check_rules`] only ever refuses. It runs on the claims *before* the signature is checked
//! (a signature check costs far more than all the rules together, and most refused tokens are
//! refused for what their claims say, typically `exp`), so it sees attacker data: it returns a
//! verdict, never anything that is trusted. The identity, forwarded headers and cache entry are
//! built by [`identity`], which only takes [`VerifiedClaims`]: claims that passed the rules *and*
//! whose signature verified (see `token.rs`).

use std::fmt;
use std::rc::Rc;

use serde_json::{Map, Value};

use super::config::{normalize_typ, Provider};
use super::error::JwtError;
use super::token::VerifiedClaims;

/// Longest `sub` accepted: it is forwarded in a header and logged.
const MAX_SUB_BYTES: usize = 256;
/// Longest value a forwarded claim may have.
const MAX_FORWARDED_BYTES: usize = 4096;

/// A token that passed every check: signature, time, issuer, audience, subject, type.
#[derive(Clone)]
pub struct VerifiedJwt {
    /// `sub`: the caller's identity (1–256 printable ASCII characters, no surrounding spaces).
    pub subject: String,
    pub issuer: String,
    /// (header, value) pairs from the provider's `forward_claims`, in header-name order.
    pub forward_headers: Vec<(String, String)>,
    /// Index of the provider (in `jwt.providers`) that verified the token.
    pub provider: usize,
    expires_at: Option<i64>,
    claims: Rc<Map<String, Value>>,
}

impl VerifiedJwt {
    /// A string claim's value (`None` when absent or not a string), e.g. for API-key binding.
    pub fn claim_str(&self, name: &str) -> Option<String> {
        match name {
            "sub" => Some(self.subject.clone()),
            _ => self
                .claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// A claim's values: each string of an array of strings, or the words of a string (a
    /// space-separated list such as `scope`). Empty when absent or of another type.
    pub fn claim_strings(&self, name: &str) -> Vec<String> {
        match self.claims.get(name) {
            Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The token's `exp` (Unix seconds), when it has one.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    #[cfg(test)]
    pub(crate) fn for_test(subject: &str, provider: usize, exp: i64) -> Self {
        Self {
            subject: subject.to_owned(),
            issuer: String::new(),
            forward_headers: Vec::new(),
            provider,
            expires_at: Some(exp),
            claims: Rc::new(Map::new()),
        }
    }
}

// Claims may carry personal data: Debug shows the identity only.
impl fmt::Debug for VerifiedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedJwt")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("provider", &self.provider)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The registered time claims, kept with cached tokens so every hit re-checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeClaims {
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// `exp`, `nbf`, `iat` and the lifetime cap against `now`, with the provider's clock skew.
pub fn check_times(p: &Provider, t: TimeClaims, now: i64) -> Result<(), JwtError> {
    let skew = p.clock_skew;
    let exp = match t.exp {
        Some(exp) => exp,
        None if p.require_expiration => return Err(JwtError::MissingExp),
        None => {
            // Without exp there is no lifetime to cap (documented: require_expiration false
            // gives up the lifetime limit for such tokens).
            return check_start(t, now, skew);
        }
    };
    // RFC 7519 §4.1.4: refused on or after exp.
    if now >= exp.saturating_add(skew) {
        return Err(JwtError::Expired { exp, now });
    }
    check_start(t, now, skew)?;
    let max = i64::try_from(p.max_lifetime).unwrap_or(i64::MAX);
    let (lifetime, allowed) = match t.iat {
        // Issuer clock to issuer clock: no skew involved.
        Some(iat) => (exp.saturating_sub(iat), max),
        // Our clock against the issuer's: allow the skew.
        None => (exp.saturating_sub(now), max.saturating_add(skew)),
    };
    if lifetime > allowed {
        return Err(JwtError::LifetimeTooLong {
            lifetime,
            max: p.max_lifetime,
        });
    }
    Ok(())
}

fn check_start(t: TimeClaims, now: i64, skew: i64) -> Result<(), JwtError> {
    if let Some(nbf) = t.nbf {
        if now < nbf.saturating_sub(skew) {
            return Err(JwtError::NotYetValid { nbf, now });
        }
    }
    if let Some(iat) = t.iat {
        if iat > now.saturating_add(skew) {
            return Err(JwtError::IssuedInFuture { iat, now });
        }
    }
    Ok(())
}

/// Every claim rule, in order: refresh-token markers → `exp`/`nbf`/`iat`/lifetime → `iss`/`aud` →
/// `sub`. Refuse-only: called on the unverified claims, before the signature check. Returns the
/// `sub` it checked, which the caller must keep untrusted until the signature has verified.
pub fn check_rules<'c>(
    p: &Provider,
    header_typ: Option<&str>,
    times: TimeClaims,
    claims: &'c Map<String, Value>,
    now: i64,
) -> Result<&'c str, JwtError> {
    if is_refresh_token(p, header_typ, claims) {
        return Err(JwtError::RefreshToken);
    }
    check_times(p, times, now)?;
    // The provider was chosen by this claim; kept here so the rules stand on their own.
    if claims.get("iss").and_then(Value::as_str) != Some(p.issuer.as_str()) {
        return Err(JwtError::UnknownIssuer);
    }
    if !p.audiences.is_empty() && !audience_matches(&p.audiences, claims.get("aud")) {
        return Err(JwtError::AudienceMismatch);
    }
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.as_str(),
        _ => return Err(JwtError::MissingSub),
    };
    if !valid_subject(subject) {
        return Err(JwtError::InvalidSub);
    }
    Ok(subject)
}

/// Builds the identity from claims that passed [`check_rules`] and whose signature verified;
/// the last check is that the forwarded claims can be header values.
pub fn identity(
    p: &Provider,
    provider: usize,
    claims: VerifiedClaims,
) -> Result<(VerifiedJwt, TimeClaims), JwtError> {
    let VerifiedClaims {
        times,
        subject,
        other: claims,
    } = claims;
    let mut forward_headers = Vec::with_capacity(p.forward_claims.len());
    for (claim, header) in &p.forward_claims {
        if let Some(value) = claims.get(claim) {
            let text = header_value(value).ok_or_else(|| JwtError::UnforwardableClaim {
                claim: claim.clone(),
            })?;
            forward_headers.push((header.clone(), text));
        }
    }
    let verified = VerifiedJwt {
        subject,
        issuer: p.issuer.clone(),
        forward_headers,
        provider,
        expires_at: times.exp,
        claims: Rc::new(claims),
    };
    Ok((verified, times))
}

fn is_refresh_token(p: &Provider, header_typ: Option<&str>, claims: &Map<String, Value>) -> bool {
    if header_typ.is_some_and(|typ| p.refresh_header_types.contains(&normalize_typ(typ))) {
        return true;
    }
    let matches = |v: &Value, values: &[String]| {
        v.as_str()
            .is_some_and(|s| values.contains(&s.to_lowercase()))
    };
    p.refresh_claims
        .iter()
        .any(|(claim, values)| match claims.get(claim) {
            Some(Value::Array(items)) => items.iter().any(|v| matches(v, values)),
            Some(v) => matches(v, values),
            None => false,
        })
}

fn audience_matches(audiences: &[String], aud: Option<&Value>) -> bool {
    match aud {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(items)) => items
            .iter()
            .any(|v| v.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        _ => false,
    }
}

/// Printable ASCII, at most 256 bytes, no leading/trailing space (Envoy trims header values,
/// which would make `alice ` and `alice` the same identity upstream).
fn valid_subject(sub: &str) -> bool {
    sub.len() <= MAX_SUB_BYTES
        && sub.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !sub.starts_with(' ')
        && !sub.ends_with(' ')
}

fn header_value(value: &Value) -> Option<String> {
    let ok =
        |s: &str| s.len() <= MAX_FORWARDED_BYTES && s.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        // Arrays of strings are joined with commas, so an element may not contain one.
        Value::Array(items) => {
            let parts: Option<Vec<&str>> = items
                .iter()
                .map(|v| v.as_str().filter(|s| !s.contains(',')))
                .collect();
            parts?.join(",")
        }
        Value::Null | Value::Object(_) => return None,
    };
    ok(&text).then_some(text)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn provider() -> Provider {
        Provider {
            audiences: vec!["api".to_owned()],
            refresh_claims: vec![("token_use".to_owned(), vec!["refresh".to_owned()])],
            refresh_header_types: vec!["refresh+jwt".to_owned()],
            forward_claims: vec![
                ("tenant".to_owned(), "x-tenant".to_owned()),
                ("groups".to_owned(), "x-groups".to_owned()),
            ],
            ..Provider::for_tests("iss")
        }
    }

    const NOW: i64 = 1_700_000_000;

    fn times(exp: Option<i64>, nbf: Option<i64>, iat: Option<i64>) -> TimeClaims {
        TimeClaims { exp, nbf, iat }
    }

    /// The verifier's sequence without the signature: the rules, then the identity.
    fn validate(
        p: &Provider,
        typ: Option<&str>,
        times: TimeClaims,
        other: Map<String, Value>,
    ) -> Result<VerifiedJwt, JwtError> {
        let subject = check_rules(p, typ, times, &other, NOW)?.to_owned();
        let vc = VerifiedClaims {
            times,
            subject,
            other,
        };
        identity(p, 0, vc).map(|(v, _)| v)
    }

    fn run(claims: Value, typ: Option<&str>) -> Result<VerifiedJwt, JwtError> {
        let other = match claims {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        validate(
            &provider(),
            typ,
            times(Some(NOW + 600), None, Some(NOW)),
            other,
        )
    }

    #[test]
    fn time_boundaries_honour_the_skew() {
        let p = provider();
        assert_eq!(
            check_times(&p, times(Some(NOW - 59), None, None), NOW),
            Ok(())
        );
        assert_eq!(
            check_times(&p, times(Some(NOW - 60), None, None), NOW),
            Err(JwtError::Expired {
                exp: NOW - 60,
                now: NOW
            })
        );
        assert_eq!(
            check_times(&p, times(Some(NOW + 100), Some(NOW + 60), None), NOW),
            Ok(())
        );
        assert_eq!(
            check_times(&p, times(Some(NOW + 100), Some(NOW + 61), None), NOW),
            Err(JwtError::NotYetValid {
                nbf: NOW + 61,
                now: NOW
            })
        );
        assert_eq!(
            check_times(&p, times(Some(NOW + 100), None, Some(NOW + 60)), NOW),
            Ok(())
        );
        assert_eq!(
            check_times(&p, times(Some(NOW + 100), None, Some(NOW + 61)), NOW),
            Err(JwtError::IssuedInFuture {
                iat: NOW + 61,
                now: NOW
            })
        );
        assert_eq!(
            check_times(&p, times(None, None, None), NOW),
            Err(JwtError::MissingExp)
        );
        let lenient = Provider {
            require_expiration: false,
            ..provider()
        };
        assert_eq!(check_times(&lenient, times(None, None, None), NOW), Ok(()));
    }

    #[test]
    fn lifetime_is_capped_with_and_without_iat() {
        let p = provider();
        assert_eq!(
            check_times(&p, times(Some(NOW + 3600), None, Some(NOW)), NOW),
            Ok(())
        );
        assert_eq!(
            check_times(&p, times(Some(NOW + 3601), None, Some(NOW)), NOW),
            Err(JwtError::LifetimeTooLong {
                lifetime: 3601,
                max: 3600
            })
        );
        // An old iat with a far exp: the whole lifetime counts, not what is left.
        assert_eq!(
            check_times(&p, times(Some(NOW + 10), None, Some(NOW - 86_400)), NOW),
            Err(JwtError::LifetimeTooLong {
                lifetime: 86_410,
                max: 3600
            })
        );
        assert_eq!(
            check_times(&p, times(Some(NOW + 3660), None, None), NOW),
            Ok(())
        );
        assert_eq!(
            check_times(&p, times(Some(NOW + 3661), None, None), NOW),
            Err(JwtError::LifetimeTooLong {
                lifetime: 3661,
                max: 3600
            })
        );
        assert!(check_times(&p, times(Some(i64::MAX), None, Some(i64::MIN)), NOW).is_err());
    }

    #[test]
    fn good_claims_yield_identity_and_forwarded_headers() {
        let v = run(json!({"iss": "iss", "aud": ["other", "api"], "sub": "user-1", "tenant": "acme", "groups": ["a", "b"], "azp": "client"}), Some("at+jwt")).unwrap();
        assert_eq!(v.subject, "user-1");
        assert_eq!(v.issuer, "iss");
        assert_eq!(
            v.forward_headers,
            vec![
                ("x-tenant".to_owned(), "acme".to_owned()),
                ("x-groups".to_owned(), "a,b".to_owned())
            ]
        );
        assert_eq!(v.claim_str("azp").as_deref(), Some("client"));
        assert_eq!(v.claim_str("sub").as_deref(), Some("user-1"));
        assert_eq!(v.claim_str("groups"), None);
        assert_eq!(v.claim_str("missing"), None);
        assert_eq!(v.expires_at(), Some(NOW + 600));
    }

    #[test]
    fn each_claim_refusal_has_its_code() {
        let base = json!({"iss": "iss", "aud": "api", "sub": "u"});
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = base.clone();
            c.as_object_mut().map(|m| m.remove(k));
            c
        };
        let code = |c: Value, typ: Option<&str>| run(c, typ).err().map(|e| e.code());
        assert_eq!(code(base.clone(), None), None);
        assert_eq!(
            code(with("aud", json!("other")), None),
            Some("audience_mismatch")
        );
        assert_eq!(
            code(with("aud", json!(["x", 5])), None),
            Some("audience_mismatch")
        );
        assert_eq!(code(without("aud"), None), Some("audience_mismatch"));
        assert_eq!(code(without("sub"), None), Some("missing_sub"));
        assert_eq!(code(with("sub", json!("")), None), Some("missing_sub"));
        assert_eq!(code(with("sub", json!(42)), None), Some("missing_sub"));
        assert_eq!(
            code(with("sub", json!("a\r\nx-admin: 1")), None),
            Some("invalid_sub")
        );
        assert_eq!(
            code(with("sub", json!("caf\u{e9}")), None),
            Some("invalid_sub")
        );
        assert_eq!(
            code(with("sub", json!(" alice")), None),
            Some("invalid_sub")
        );
        assert_eq!(
            code(with("sub", json!("a".repeat(257))), None),
            Some("invalid_sub")
        );
        assert_eq!(code(with("sub", json!("a".repeat(256))), None), None);
        assert_eq!(
            code(with("iss", json!("evil")), None),
            Some("unknown_issuer")
        );
        assert_eq!(
            code(with("token_use", json!("Refresh")), None),
            Some("refresh_token_not_allowed")
        );
        assert_eq!(
            code(with("token_use", json!(["x", "refresh"])), None),
            Some("refresh_token_not_allowed")
        );
        assert_eq!(code(with("token_use", json!("access")), None), None);
        assert_eq!(
            code(base.clone(), Some("application/Refresh+JWT")),
            Some("refresh_token_not_allowed")
        );
        assert_eq!(
            code(with("tenant", json!("a\nb")), None),
            Some("unforwardable_claim")
        );
        assert_eq!(
            code(with("tenant", json!({"id": 1})), None),
            Some("unforwardable_claim")
        );
        assert_eq!(
            code(with("groups", json!(["a,b"])), None),
            Some("unforwardable_claim")
        );
        assert_eq!(
            run(with("tenant", json!(7)), None).unwrap().forward_headers[0].1,
            "7"
        );
    }

    #[test]
    fn audience_is_optional_when_provider_sets_none() {
        let p = Provider {
            audiences: Vec::new(),
            ..provider()
        };
        let mut other = Map::new();
        other.insert("iss".to_owned(), json!("iss"));
        other.insert("sub".to_owned(), json!("u"));
        assert!(validate(&p, None, times(Some(NOW + 10), None, None), other).is_ok());
    }
}

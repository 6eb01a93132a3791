//! `verified_by: envoy_jwt_authn`: the signature was checked by Envoy's jwt_authn filter earlier
//! in the chain, which put the verified payload in the request's dynamic metadata
//! (`payload_in_metadata`). apiguard trusts a token's claims only when that payload is there
//! *and* equals the payload of the token the request presents (jwt_authn must forward the token:
//! `forward: true`). Every claim rule still runs on those claims.
//!
//! Why the whole payload is compared: it ties the metadata to this request's token whatever
//! header each filter reads it from, and a token whose payload is, claim for claim, one that
//! jwt_authn verified can only yield the identity that jwt_authn vouched for.

use serde_json::{Map, Value};

use super::error::JwtError;
use crate::pbstruct::filter_metadata;

/// The jwt_authn filter's namespace in `metadata.filter_metadata`.
pub const FILTER_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// Largest dynamic metadata read: jwt_authn's payloads (tokens are at most 64 KiB) and what
/// other filters put beside them.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

/// The payload jwt_authn placed under `key`. `metadata` is the request's dynamic metadata as
/// Envoy serializes it (an `envoy.config.core.v3.Metadata`); the payload sits in the filter's
/// namespace. Absent, unreadable or empty: refused.
pub fn vouched_payload(metadata: Option<&[u8]>, key: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = metadata
        .filter(|b| !b.is_empty() && b.len() <= MAX_METADATA_BYTES)
        .ok_or(JwtError::NotVerifiedByJwtAuthn)?;
    let mut fields = filter_metadata(bytes, FILTER_NAMESPACE)
        .ok()
        .flatten()
        .ok_or(JwtError::NotVerifiedByJwtAuthn)?;
    match fields.remove(key) {
        Some(Value::Object(payload)) if !payload.is_empty() => Ok(payload),
        _ => Err(JwtError::NotVerifiedByJwtAuthn),
    }
}

/// Whether two payloads hold the same claims. Numbers compare as the doubles a Struct holds
/// (jwt_authn's metadata has no integers); everything else exactly.
pub fn same_payload(token: &Map<String, Value>, vouched: &Map<String, Value>) -> bool {
    token.len() == vouched.len()
        && token
            .iter()
            .all(|(k, v)| vouched.get(k).is_some_and(|w| same_value(v, w)))
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => same_payload(x, y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::pbstruct::encode;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// Dynamic metadata with `v` as jwt_authn's namespace.
    fn namespace(v: Value) -> Vec<u8> {
        encode::metadata(FILTER_NAMESPACE, &object(v))
    }

    #[test]
    fn the_payload_is_found_under_its_key() {
        let ns = namespace(json!({"https://idp": {"sub": "alice", "exp": 1_700_000_000}}));
        let p = vouched_payload(Some(&ns), "https://idp").unwrap();
        assert_eq!(p["sub"], json!("alice"));
    }

    #[test]
    fn absent_empty_or_unreadable_metadata_is_refused() {
        let refused = Err(JwtError::NotVerifiedByJwtAuthn);
        assert_eq!(vouched_payload(None, "k"), refused);
        assert_eq!(vouched_payload(Some(&[]), "k"), refused);
        let other = namespace(json!({"other": {"sub": "a"}}));
        assert_eq!(vouched_payload(Some(&other), "k"), refused);
        let empty = namespace(json!({"k": {}}));
        assert_eq!(vouched_payload(Some(&empty), "k"), refused);
        let not_object = namespace(json!({"k": "eyJ..."}));
        assert_eq!(vouched_payload(Some(&not_object), "k"), refused);
        assert_eq!(vouched_payload(Some(&[0x0a, 0x09]), "k"), refused);
        let elsewhere = encode::metadata("envoy.lb", &object(json!({"k": {"sub": "a"}})));
        assert_eq!(vouched_payload(Some(&elsewhere), "k"), refused);
        let huge = vec![0u8; MAX_METADATA_BYTES + 1];
        assert_eq!(vouched_payload(Some(&huge), "k"), refused);
    }

    #[test]
    fn envoys_real_metadata_vouches_for_the_tokens_payload() {
        use crate::pbstruct::tests::{envoy_metadata, envoy_metadata_claims};
        let meta = envoy_metadata();
        let payload = vouched_payload(Some(&meta), "https://idp.apiguard.test/").unwrap();
        assert!(same_payload(&object(envoy_metadata_claims()), &payload));
        let mut other = envoy_metadata_claims();
        other["ok"] = json!(1);
        assert!(!same_payload(&object(other), &payload));
    }

    #[test]
    fn payloads_compare_claim_for_claim_with_numbers_as_doubles() {
        let token = object(json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"],
            "ctx": {"n": 1, "l": [true]}}));
        let same = object(
            json!({"aud": ["x", "y"], "exp": 1_700_000_000.0, "sub": "a",
            "ctx": {"l": [true], "n": 1.0}}),
        );
        assert!(same_payload(&token, &same));
        let differing = [
            json!({"sub": "b", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}}),
            json!({"sub": "a", "exp": 1_700_000_001, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["y", "x"], "ctx": {"n": 1, "l": [true]}}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x"], "ctx": {"n": 1, "l": [true]}}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1}}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": "1", "l": [true]}}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"]}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}, "x": null}),
        ];
        for other in differing {
            assert!(!same_payload(&token, &object(other.clone())), "{other}");
        }
    }
}

//! `verified_by: envoy_jwt_authn`: the signature was checked by Envoy's jwt_authn filter earlier
//! in the chain, which put the verified payload in the request's dynamic metadata
//! (`payload_in_metadata`). apiguard trusts a token's claims only when that payload is there
//! *and* equals the payload of the token the request presents (jwt_authn must forward the token:
//! `forward: true`). Every claim rule still runs on those claims.
//!
//! Why the whole payload is compared: it ties the metadata to this request's token whatever
//! header each filter reads it from, and a token whose payload is, claim for claim, one that
//! jwt_authn verified can only yield the identity that jwt_authn vouched for.

use serde_json::Value;

use super::error::JwtError;
use crate::pbstruct::{find, Entries, Items, Kind};

/// The jwt_authn filter's namespace in `metadata.filter_metadata`.
pub const FILTER_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// Largest dynamic metadata read: jwt_authn's payloads (tokens are at most 64 KiB) and what
/// other filters put beside them.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

/// How deep the comparison follows nested claims (serde_json parses at most 128 levels).
const MAX_DEPTH: usize = 128;

/// The payload jwt_authn placed under `key` (a serialized `google.protobuf.Struct`).
/// `metadata` is the request's dynamic metadata as Envoy serializes it (an
/// `envoy.config.core.v3.Metadata`); the payload sits in the filter's namespace. Absent,
/// unreadable or empty: refused.
pub fn vouched_payload<'m>(metadata: Option<&'m [u8]>, key: &str) -> Result<&'m [u8], JwtError> {
    let refused = |_| JwtError::NotVerifiedByJwtAuthn;
    let bytes = metadata
        .filter(|b| !b.is_empty() && b.len() <= MAX_METADATA_BYTES)
        .ok_or(JwtError::NotVerifiedByJwtAuthn)?;
    let namespace = find(bytes, FILTER_NAMESPACE)
        .map_err(refused)?
        .ok_or(JwtError::NotVerifiedByJwtAuthn)?;
    let value = find(namespace, key)
        .map_err(refused)?
        .ok_or(JwtError::NotVerifiedByJwtAuthn)?;
    match Kind::of(value).map_err(refused)? {
        Kind::Struct(payload) if !payload.is_empty() => Ok(payload),
        _ => Err(JwtError::NotVerifiedByJwtAuthn),
    }
}

/// A claim the payload must hold.
#[derive(Clone, Copy)]
pub enum Want<'a> {
    /// Exactly this JSON value (numbers compared as the doubles a Struct holds).
    Json(&'a Value),
    /// A time claim read as whole seconds: the payload's number, truncated, must be it.
    Seconds(i64),
}

/// Whether the Struct `payload` holds exactly `count` claims, each the one `want` names for
/// its key. A key the payload holds twice is refused (protobuf would keep the last; Envoy never
/// writes two).
pub fn payload_is<'w>(
    payload: &[u8],
    count: usize,
    want: impl Fn(&str) -> Option<Want<'w>>,
) -> bool {
    struct_is(payload, count, &want, 0).unwrap_or(false)
}

fn struct_is<'w>(
    bytes: &[u8],
    count: usize,
    want: &dyn Fn(&str) -> Option<Want<'w>>,
    depth: usize,
) -> Option<bool> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut keys: Vec<&str> = Vec::with_capacity(count);
    let mut entries = Entries::of(bytes);
    while let Some((key, value)) = entries.next_entry().ok()? {
        let same = match want(key)? {
            Want::Json(expected) => value_is(value, expected, depth)?,
            Want::Seconds(seconds) => {
                matches!(Kind::of(value).ok()?, Kind::Number(n) if n.trunc() == seconds as f64)
            }
        };
        if !same || keys.len() >= count {
            return Some(false);
        }
        keys.push(key);
    }
    keys.sort_unstable();
    keys.dedup();
    Some(keys.len() == count)
}

fn value_is(bytes: &[u8], expected: &Value, depth: usize) -> Option<bool> {
    let kind = Kind::of(bytes).ok()?;
    Some(match (expected, kind) {
        (Value::Null, Kind::Null) => true,
        (Value::Bool(a), Kind::Bool(b)) => *a == b,
        (Value::Number(a), Kind::Number(b)) => a.as_f64() == Some(b),
        (Value::String(a), Kind::Text(b)) => a == b,
        (Value::Array(items), Kind::List(list)) => {
            let mut list = Items::of(list);
            for item in items {
                match list.next_item().ok()? {
                    Some(value) if value_is(value, item, depth + 1)? => {}
                    _ => return Some(false),
                }
            }
            list.next_item().ok()?.is_none()
        }
        (Value::Object(fields), Kind::Struct(inner)) => struct_is(
            inner,
            fields.len(),
            &|k: &str| fields.get(k).map(Want::Json),
            depth + 1,
        )?,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::pbstruct::encode;
    use serde_json::{json, Map};

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

    /// Whether the Struct `vouched` holds exactly the claims of `token`.
    fn same(token: &Value, vouched: &Value) -> bool {
        let token = object(token.clone());
        let bytes = encode::structure(&object(vouched.clone()));
        payload_is(&bytes, token.len(), |k| token.get(k).map(Want::Json))
    }

    #[test]
    fn the_payload_is_found_under_its_key() {
        let claims = json!({"sub": "alice", "exp": 1_700_000_000});
        let ns = namespace(json!({ "https://idp": claims.clone() }));
        let payload = vouched_payload(Some(&ns), "https://idp").unwrap();
        assert_eq!(payload, encode::structure(&object(claims)));
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
        let claims = object(envoy_metadata_claims());
        assert!(payload_is(payload, claims.len(), |k| claims
            .get(k)
            .map(Want::Json)));
        let mut other = claims.clone();
        other.insert("ok".to_owned(), json!(1));
        assert!(!payload_is(payload, other.len(), |k| other
            .get(k)
            .map(Want::Json)));
        // Time claims as whole seconds.
        let exp = claims["exp"].as_i64().unwrap();
        let timed = |k: &str| match k {
            "exp" => Some(Want::Seconds(exp)),
            _ => claims.get(k).map(Want::Json),
        };
        assert!(payload_is(payload, claims.len(), timed));
        let late = |k: &str| match k {
            "exp" => Some(Want::Seconds(exp + 1)),
            _ => claims.get(k).map(Want::Json),
        };
        assert!(!payload_is(payload, claims.len(), late));
    }

    #[test]
    fn payloads_compare_claim_for_claim_with_numbers_as_doubles() {
        let token = json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"],
            "ctx": {"n": 1, "l": [true]}, "z": null});
        let vouched = json!({"aud": ["x", "y"], "exp": 1_700_000_000.0, "sub": "a",
            "ctx": {"l": [true], "n": 1.0}, "z": null});
        assert!(same(&token, &vouched));
        let differing = [
            json!({"sub": "b", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}, "z": null}),
            json!({"sub": "a", "exp": 1_700_000_001, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}, "z": null}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["y", "x"], "ctx": {"n": 1, "l": [true]}, "z": null}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x"], "ctx": {"n": 1, "l": [true]}, "z": null}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y", "z"], "ctx": {"n": 1, "l": [true]}, "z": null}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1}, "z": null}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": "1", "l": [true]}, "z": null}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}, "z": false}),
            json!({"sub": "a", "exp": 1_700_000_000, "aud": ["x", "y"], "ctx": {"n": 1, "l": [true]}, "z": null, "x": 1}),
        ];
        for other in differing {
            assert!(!same(&token, &other), "{other}");
        }
    }

    #[test]
    fn a_claim_written_twice_is_refused() {
        // {"a": 1} twice, where the token has {"a": 1, "b": 2}: two entries, one claim vouched.
        let token = object(json!({"a": 1, "b": 2}));
        let mut bytes = encode::structure(&object(json!({"a": 1})));
        bytes.extend(encode::structure(&object(json!({"a": 1}))));
        assert!(!payload_is(&bytes, token.len(), |k| token
            .get(k)
            .map(Want::Json)));
    }
}

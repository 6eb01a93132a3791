//! Property tests over the parsers and matchers a request or a configuration reaches (from the
//! security review): configuration, the token parser and claim rules, path canonicalisation and
//! prefix matching, query-string credential detection, header parsing and the whole decision.
//!
//! Cases per property: `APIGUARD_PROPTEST_CASES` (default 512, so `cargo test` stays quick);
//! `make fuzz` runs them with 1_000_000 each in the release profile.

// A test: unwrapping and indexing are the assertions here (the crate denies them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::rc::Rc;

use apiguard::api_key::{self, RandomError, RandomSource};
use apiguard::credentials::{with_scheme, CredentialSources};
use apiguard::jwt::{JwtConfig, JwtSettings, JwtVerifier};
use apiguard::paths::{is_canonical, PathPrefix};
use apiguard::pipeline::{Decision, Env, Guard};
use apiguard::policy::Policy;
use apiguard::ports::fakes::{MemoryStore, RecordedEvents};
use apiguard::ports::KeySpace;
use apiguard::query::QueryCredentials;
use apiguard::request::RequestFacts;
use hmac::{Hmac, Mac};
use jwt_compact::alg::Es256;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};
use sha2::Sha256;

fn cases() -> u32 {
    std::env::var("APIGUARD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // No proptest-regressions/ files in the tree: a failure prints its minimal input.
        failure_persistence: None,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Proptest-drawn bytes standing in for the CSPRNG.
struct Drawn([u8; 32]);

impl RandomSource for Drawn {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.0[i % 32];
        }
        Ok(())
    }
}

fn key_from(seed: [u8; 32]) -> String {
    api_key::generate(&mut Drawn(seed)).unwrap()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn single_bit_flip(token: &str, bit: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[bit / 8] ^= 1 << (bit % 8);
    // The host hands header values over as text: a non-UTF-8 byte arrives replaced.
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Planted in configuration values: no error message may ever contain it.
const MARKER: &str = "QZXMARKERXZQ";

fn marker_string() -> BoxedStrategy<Value> {
    select(vec![
        MARKER.to_owned(),
        format!("/{MARKER}"),
        format!("x-{MARKER}"),
        format!("{MARKER}-plan"),
        format!("https://{MARKER}.example"),
        format!("2027-01-01T00:00:00Z{MARKER}"),
        "a".repeat(64) + MARKER,
    ])
    .prop_map(Value::String)
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        marker_string(),
        Just(json!([])),
        Just(json!({})),
        Just(json!([MARKER])),
        Just(json!({ "x": MARKER })),
    ]
    .boxed()
}

fn s(values: &[&str]) -> BoxedStrategy<Value> {
    let values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
    prop_oneof![12 => select(values), 1 => marker_string()].boxed()
}

fn num(max: u64) -> BoxedStrategy<Value> {
    prop_oneof![
        (0..=max).prop_map(Value::from),
        any::<u64>().prop_map(Value::from)
    ]
    .boxed()
}

fn boolean() -> BoxedStrategy<Value> {
    any::<bool>().prop_map(Value::from).boxed()
}

fn list(item: BoxedStrategy<Value>, max: usize) -> BoxedStrategy<Value> {
    proptest::collection::vec(item, 0..=max)
        .prop_map(Value::Array)
        .boxed()
}

/// An object with each field present or not; a field's value is plausible, or anything.
fn obj(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let fields: Vec<_> = fields
        .into_iter()
        .map(|(name, value)| {
            proptest::option::weighted(0.6, prop_oneof![30 => value, 1 => leaf()])
                .prop_map(move |v| v.map(|v| (name.to_owned(), v)))
        })
        .collect();
    (fields, proptest::option::weighted(0.1, marker_string()))
        .prop_map(|(fields, unknown)| {
            let mut map: Map<String, Value> = fields.into_iter().flatten().collect();
            if let Some(v) = unknown {
                map.insert("unknown_field".to_owned(), v);
            }
            Value::Object(map)
        })
        .boxed()
}

fn named_map(names: &[&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    proptest::collection::btree_map(select(names.to_vec()), value, 0..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        .boxed()
}

const CREDENTIALS: &[&str] = &["api_key", "jwt", "either", "both", "none", "API_KEY"];
const PLANS: &[&str] = &["free", "gold", "tiny"];

fn config_value() -> BoxedStrategy<Value> {
    let sha = prop_oneof![
        any::<[u8; 32]>().prop_map(|b| json!(to_hex(&b))),
        Just(json!("00")),
        Just(json!(format!("{}{MARKER}", "a".repeat(52)))),
    ]
    .boxed();
    let key_entry = obj(vec![
        ("sha256", sha),
        ("consumer", s(&["alice", "bob", "", "a b"])),
        (
            "expires_at",
            s(&["2027-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "tomorrow"]),
        ),
        ("revoked", boolean()),
        ("plan", s(PLANS)),
    ]);
    let api_keys = obj(vec![
        (
            "header",
            s(&["x-api-key", "X-Api-Key", "authorization", ""]),
        ),
        ("allow_authorization_header", boolean()),
        ("strip_credential", boolean()),
        ("keys", list(key_entry, 3)),
    ]);
    let jwk = prop_oneof![
        Just(json!({"kty": "oct", "k": b64url(&[7u8; 32]), "kid": "h"})),
        Just(json!({"kty": "oct", "k": MARKER})),
        Just(json!({"kty": "EC", "crv": "P-256", "x": MARKER, "y": MARKER})),
        Just(json!({"kty": "OKP", "crv": "Ed25519", "x": MARKER})),
        Just(json!({"kty": MARKER})),
    ]
    .boxed();
    let provider = obj(vec![
        ("issuer", s(&["https://idp.example", ""])),
        ("audiences", list(s(&["api"]), 2)),
        (
            "jwks",
            prop_oneof![
                list(jwk.clone(), 2).prop_map(|keys| json!({ "keys": keys })),
                Just(json!(format!("{{\"keys\": \"{MARKER}\"}}"))),
            ]
            .boxed(),
        ),
        (
            "remote_jwks",
            obj(vec![
                ("cluster", s(&["idp", ""])),
                ("path", s(&["/.well-known/jwks.json", "jwks"])),
                ("refresh_interval_seconds", num(100_000)),
                ("timeout_ms", num(10_000)),
            ]),
        ),
        (
            "algorithms",
            list(s(&["HS256", "ES256", "none", "RS256"]), 2),
        ),
        ("clock_skew_seconds", num(1000)),
        ("max_lifetime_seconds", num(100_000)),
        (
            "forward_claims",
            named_map(
                &["tenant", "sub"],
                s(&["x-tenant", "x-apiguard-subject", "Bad"]),
            ),
        ),
    ]);
    let jwt = obj(vec![
        ("header", s(&["authorization", "x-token"])),
        ("providers", list(provider, 2)),
        ("strip_token", boolean()),
        ("max_token_bytes", num(10_000)),
        ("cache_max_entries", num(10_000)),
    ]);
    let path = s(&[
        "/api", "/api/", "/healthz", "/", "api", "/a/../b", "/a;b", "/%70",
    ]);
    let route = obj(vec![
        ("prefix", path.clone()),
        ("credentials", s(CREDENTIALS)),
        ("cost", num(10)),
        ("bind_claim", s(&["azp", "sub"])),
    ]);
    let plan = obj(vec![
        ("rate", num(1000)),
        ("per", s(&["second", "minute", "hour", "day"])),
        ("burst", num(1000)),
    ]);
    let rate_limits = obj(vec![
        ("plans", named_map(PLANS, plan)),
        ("default_plan", s(PLANS)),
        ("consumers", named_map(&["alice", "bob"], s(PLANS))),
        ("plan_claim", s(&["plan", "tier"])),
        ("bucket_by", s(&["consumer", "key"])),
    ]);
    let failed_auth = obj(vec![
        ("rate", num(100)),
        ("per", s(&["second", "minute", "hour"])),
        ("burst", num(100)),
        ("client_address", s(&["connection", "x_forwarded_for"])),
        ("trusted_hops", num(5)),
        ("max_tracked_clients", num(100_000)),
    ]);
    let https = obj(vec![
        ("required", boolean()),
        ("redirect", boolean()),
        ("trust_x_forwarded_proto", boolean()),
        ("hsts_max_age_seconds", num(100_000_000)),
    ]);
    obj(vec![
        ("credentials", s(CREDENTIALS)),
        ("api_keys", api_keys),
        ("jwt", jwt),
        ("routes", list(route, 3)),
        ("exempt_paths", list(path, 2)),
        ("query_credential_params", list(s(&["api_key", "token"]), 2)),
        ("allow_cors_preflight", boolean()),
        ("report_only", boolean()),
        ("realm", s(&["api"])),
        ("rate_limits", rate_limits),
        ("failed_auth_limit", failed_auth),
        ("https", https),
    ])
}

fn check_config(text: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = Policy::from_json(text) {
        let shown = e.to_string();
        prop_assert!(
            !shown.contains(MARKER),
            "a configuration error echoes a value: {shown}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Policy::from_json(&bytes);
        let mut object = b"{".to_vec();
        object.extend_from_slice(&bytes);
        let _ = Policy::from_json(&object);
    }

    #[test]
    fn config_errors_never_echo_a_value(cfg in config_value()) {
        check_config(cfg.to_string().as_bytes())?;
    }

    #[test]
    fn config_errors_never_echo_a_value_in_a_valid_base(
        cfg in config_value(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        // A valid configuration with one or two generated fields: errors from the later
        // (semantic) checks, and accepted configurations.
        let mut base = json!({
            "https": {"required": false},
            "api_keys": {"keys": [{"sha256": to_hex(&[1u8; 32]), "consumer": "alice"}]}
        });
        if let (Some(base), Some(generated)) = (base.as_object_mut(), cfg.as_object()) {
            let fields: Vec<_> = generated.iter().collect();
            for pick in &picks {
                if !fields.is_empty() {
                    let (k, v) = fields[pick.index(fields.len())];
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        check_config(base.to_string().as_bytes())?;
    }

    #[test]
    fn config_errors_never_echo_a_value_in_mutated_text(
        cfg in config_value(),
        at in any::<prop::sample::Index>(),
        byte in select(b"{}[]\",:0\\ nx".to_vec()),
        delete in any::<bool>(),
    ) {
        let mut text = cfg.to_string().into_bytes();
        let i = at.index(text.len() + 1);
        if delete && i < text.len() {
            text.remove(i);
        } else {
            text.insert(i, byte);
        }
        check_config(&text)?;
    }
}

// ---------------------------------------------------------------------------------------------
// JWT: the token parser and the claim rules

const ISS: &str = "https://idp.example";
const NOW: i64 = 1_700_000_000;
const HMAC_SECRET: &[u8; 40] = b"property-test-secret-forty-bytes-long!!!";

fn ec_signing_key() -> <Es256 as Algorithm>::SigningKey {
    <<Es256 as Algorithm>::SigningKey as jwt_compact::alg::SigningKey<Es256>>::from_slice(
        &[9u8; 32],
    )
    .unwrap()
}

thread_local! {
    /// Deriving the public key and compiling the settings cost far more than one case.
    static VERIFIER: std::cell::RefCell<Option<JwtVerifier>> = const { std::cell::RefCell::new(None) };
    static EC_KEY: <Es256 as Algorithm>::SigningKey = ec_signing_key();
}

/// This thread's verifier, returned to it when dropped (its cache of verified tokens is bounded).
struct Pooled(Option<JwtVerifier>);

impl std::ops::Deref for Pooled {
    type Target = JwtVerifier;
    fn deref(&self) -> &JwtVerifier {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut JwtVerifier {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let v = self.0.take();
        VERIFIER.with(|slot| *slot.borrow_mut() = v);
    }
}

fn jwt_verifier() -> Pooled {
    let pooled = VERIFIER.with(|slot| slot.borrow_mut().take());
    Pooled(Some(pooled.unwrap_or_else(new_jwt_verifier)))
}

fn new_jwt_verifier() -> JwtVerifier {
    let sk = ec_signing_key();
    let vk = <_ as jwt_compact::alg::SigningKey<Es256>>::to_verifying_key(&sk);
    let mut ec = serde_json::to_value(JsonWebKey::from(&vk)).unwrap();
    ec["kid"] = json!("ec");
    let config = json!({"providers": [{"issuer": ISS, "audiences": ["api"], "jwks": {"keys": [
        {"kty": "oct", "k": b64url(HMAC_SECRET), "kid": "h"}, ec]}}]});
    let dto: JwtConfig = serde_json::from_value(config).unwrap();
    let settings = JwtSettings::compile(dto, "jwt").unwrap();
    JwtVerifier::new(Rc::new(settings), &KeySpace::new("t"))
}

#[derive(Debug, Clone, Copy)]
enum Signer {
    Hs256,
    Es256,
}

fn mint(signer: Signer, header: &Value, claims: &Value) -> String {
    mint_raw(
        signer,
        &b64url(header.to_string().as_bytes()),
        &b64url(claims.to_string().as_bytes()),
    )
}

fn mint_raw(signer: Signer, header: &str, payload: &str) -> String {
    let input = format!("{header}.{payload}");
    let sig = match signer {
        Signer::Hs256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Signer::Es256 => EC_KEY.with(|k| Es256.sign(k, input.as_bytes()).as_bytes().to_vec()),
    };
    format!("{input}.{}", b64url(&sig))
}

fn signer() -> impl Strategy<Value = Signer> {
    prop_oneof![3 => Just(Signer::Hs256), 1 => Just(Signer::Es256)]
}

fn header_for(signer: Signer) -> Value {
    match signer {
        Signer::Hs256 => json!({"alg": "HS256", "kid": "h", "typ": "JWT"}),
        Signer::Es256 => json!({"alg": "ES256", "kid": "ec"}),
    }
}

fn good_claims(sub: &str, lifetime: i64) -> Value {
    json!({"iss": ISS, "aud": "api", "sub": sub, "iat": NOW - 10, "exp": NOW - 10 + lifetime})
}

fn claim_value() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!(ISS)),
        Just(json!("api")),
        Just(json!(["api", "other"])),
        Just(json!(["other"])),
        Just(json!("https://evil.example")),
        (NOW - 4000..NOW + 4000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(1e300)),
        Just(json!(null)),
        Just(json!("refresh")),
        Just(json!({"nested": [1, 2]})),
        "[a-z]{0,8}".prop_map(Value::from),
    ]
    .boxed()
}

fn claims_strategy() -> BoxedStrategy<Value> {
    let names = vec![
        "iss",
        "aud",
        "sub",
        "iat",
        "exp",
        "nbf",
        "typ",
        "token_use",
        "azp",
        "x",
    ];
    proptest::collection::btree_map(select(names), claim_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        .boxed()
}

fn header_strategy() -> BoxedStrategy<Value> {
    let alg = prop_oneof![
        Just(json!("HS256")),
        Just(json!("ES256")),
        Just(json!("none")),
        Just(json!("hs256")),
        Just(json!("RS256")),
        Just(json!(null)),
        Just(json!(["HS256"])),
    ];
    let kid = prop_oneof![
        Just(None),
        Just(Some(json!("h"))),
        Just(Some(json!("ec"))),
        Just(Some(json!("zz"))),
        Just(Some(json!(7)))
    ];
    let typ = prop_oneof![
        Just(None),
        Just(Some(json!("JWT"))),
        Just(Some(json!("refresh+jwt"))),
        Just(Some(json!("at+jwt")))
    ];
    let crit = proptest::option::weighted(0.1, Just(json!(["exp"])));
    (alg, kid, typ, crit)
        .prop_map(|(alg, kid, typ, crit)| {
            let mut h = json!({ "alg": alg });
            for (name, v) in [("kid", kid), ("typ", typ), ("crit", crit)] {
                if let Some(v) = v {
                    h[name] = v;
                }
            }
            h
        })
        .boxed()
}

fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9_-]{0,60}",
        "[A-Za-z0-9+/=_-]{0,12}",
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|b| b64url(&b)),
        header_strategy().prop_map(|h| b64url(h.to_string().as_bytes())),
        claims_strategy().prop_map(|c| b64url(c.to_string().as_bytes())),
        Just("e30".to_owned()),
        Just(b64url(b"null")),
    ]
    .boxed()
}

/// What an accepted token's claims must satisfy whatever else it carries.
fn accepted_claims_are_sane(claims: &Value) -> Result<(), TestCaseError> {
    prop_assert_eq!(&claims["iss"], &json!(ISS));
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == "api",
        Value::Array(a) => a.contains(&json!("api")),
        _ => false,
    };
    prop_assert!(aud_ok, "audience: {}", claims);
    let exp = claims["exp"].as_f64();
    prop_assert!(
        exp.is_some_and(|e| e > (NOW - 60) as f64),
        "exp: {}",
        claims
    );
    if let Some(nbf) = claims.get("nbf") {
        prop_assert!(
            nbf.as_f64().is_some_and(|n| n <= (NOW + 60) as f64),
            "nbf: {}",
            claims
        );
    }
    if let Some(iat) = claims.get("iat") {
        prop_assert!(
            iat.as_f64().is_some_and(|n| n <= (NOW + 60) as f64),
            "iat: {}",
            claims
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jwt_arbitrary_strings_never_panic(token in any::<String>(), ascii in "[ -~]{0,300}") {
        let mut v = jwt_verifier();
        let _ = v.verify(&token, NOW);
        let _ = v.verify(&ascii, NOW);
    }

    #[test]
    fn jwt_near_tokens_never_panic(parts in proptest::collection::vec(segment(), 1..5), dots in 0usize..3) {
        let mut v = jwt_verifier();
        let token = parts.join(&".".repeat(dots.max(1)));
        let _ = v.verify(&token, NOW);
        // The same header and payload, validly signed: the claim rules see them.
        if parts.len() >= 2 {
            for signer in [Signer::Hs256, Signer::Es256] {
                let signed = mint_raw(signer, &parts[0], &parts[1]);
                let _ = v.verify(&signed, NOW);
            }
        }
    }

    #[test]
    fn jwt_claim_rules_hold_for_every_accepted_token(
        signer in signer(),
        header in header_strategy(),
        claims in claims_strategy(),
        base in any::<bool>(),
    ) {
        let mut v = jwt_verifier();
        // Start from valid claims half the time, so acceptance is common.
        let header = if base { header_for(signer) } else { header };
        let claims = if base {
            let mut c = good_claims("u", 600);
            if let (Some(c), Some(extra)) = (c.as_object_mut(), claims.as_object()) {
                for (k, val) in extra.iter().take(1) {
                    c.insert(k.clone(), val.clone());
                }
            }
            c
        } else {
            claims
        };
        let token = mint(signer, &header, &claims);
        if v.verify(&token, NOW).is_ok() {
            accepted_claims_are_sane(&claims)?;
            prop_assert!(header["alg"] == json!("HS256") || header["alg"] == json!("ES256"));
        }
    }

    #[test]
    fn jwt_no_single_bit_flip_is_accepted(
        signer in signer(),
        sub in "[a-zA-Z0-9@.]{1,24}",
        lifetime in 1i64..3000,
        bit in any::<prop::sample::Index>(),
    ) {
        let mut v = jwt_verifier();
        let token = mint(signer, &header_for(signer), &good_claims(&sub, lifetime));
        prop_assert!(v.verify(&token, NOW).is_ok(), "the valid token verifies: {}", token);
        let flipped = single_bit_flip(&token, bit.index(token.len() * 8));
        prop_assert!(v.verify(&flipped, NOW).is_err(), "a bit flip is accepted: {} -> {}", token, flipped);
    }
}

/// Every position of one token of each kind (the sampled property above covers random ones).
#[test]
fn jwt_every_single_bit_flip_is_refused() {
    let mut v = jwt_verifier();
    let mut accepted = Vec::new();
    for signer in [Signer::Hs256, Signer::Es256] {
        let token = mint(signer, &header_for(signer), &good_claims("user-1", 600));
        assert!(v.verify(&token, NOW).is_ok(), "{token}");
        for bit in 0..token.len() * 8 {
            let flipped = single_bit_flip(&token, bit);
            if v.verify(&flipped, NOW).is_ok() {
                accepted.push(format!(
                    "{signer:?} byte {} bit {}: {token} -> {flipped}",
                    bit / 8,
                    bit % 8
                ));
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "accepted bit flips:\n{}",
        accepted.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Paths

fn hex(c: Option<&u8>) -> Option<u8> {
    c.and_then(|c| char::from(*c).to_digit(16))
        .and_then(|d| u8::try_from(d).ok())
}

/// The rule of `is_canonical`'s doc comment, written independently.
fn reference_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || path.contains("//") {
        return false;
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return false;
    }
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' || c == b';' || !(0x21..=0x7e).contains(&c) {
            return false;
        }
        if c == b'%' {
            let (Some(hi), Some(lo)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) else {
                return false;
            };
            let d = hi * 16 + lo;
            let unreserved = d.is_ascii_alphanumeric() || b"-._~".contains(&d);
            if unreserved || b"/\\;%".contains(&d) || d < 0x20 || d == 0x7f {
                return false;
            }
            decoded.push(d);
            i += 3;
        } else {
            decoded.push(c);
            i += 1;
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// Segment matching from the doc comments of `PathPrefix`.
fn reference_covers(prefix: &str, path: &str, route: bool) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    if !reference_canonical(path) {
        return false;
    }
    let want: Vec<&str> = prefix[1..].split('/').collect();
    let have: Vec<&str> = path[1..].split('/').collect();
    if have.len() < want.len() {
        return false;
    }
    let same = |a: &str, b: &str| {
        if route {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let last = want.len() - 1;
    want.iter().zip(&have).enumerate().all(|(i, (w, h))| {
        if i < last {
            return same(w, h);
        }
        if same(w, h) {
            return true;
        }
        route
            && h.len() > w.len()
            && h.is_char_boundary(w.len())
            && same(w, &h[..w.len()])
            && matches!(h.as_bytes()[w.len()], b'.' | b':')
    })
}

fn path_piece() -> BoxedStrategy<&'static str> {
    select(vec![
        "/",
        "/",
        "/",
        ".",
        "..",
        ";",
        "\\",
        "%",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "%3b",
        "%25",
        "%C0",
        "%AE",
        "%c0%ae",
        "%C3%A9",
        "%c3",
        "%A9",
        "%E2%82%AC",
        "%E2%82",
        "%F0%9F%98%80",
        "%ED%A0%80",
        "%80",
        "%FF",
        "%20",
        "%7f",
        "%7F",
        "%00",
        "%1f",
        "%3F",
        "%23",
        "%41",
        "%7e",
        "%zz",
        "%4",
        "%g0",
        "a",
        "b",
        "A",
        "P",
        "p",
        "api",
        "API",
        "x",
        "0",
        "9",
        "f",
        "F",
        "~",
        "-",
        "_",
        ":",
        "@",
        "!",
        "=",
        "+",
        "?",
        "é",
        "\u{7f}",
        " ",
        "\t",
        "\u{0}",
        "//",
    ])
    .boxed()
}

fn path_strategy() -> BoxedStrategy<String> {
    (
        proptest::bool::weighted(0.9),
        proptest::collection::vec(path_piece(), 0..14),
    )
        .prop_map(|(slash, pieces)| {
            let mut p = if slash { "/".to_owned() } else { String::new() };
            p.extend(pieces);
            p
        })
        .boxed()
}

fn prefix_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        path_strategy(),
        proptest::collection::vec("[a-cA-C.:_-]{1,4}", 0..4).prop_map(|segs| {
            let mut p: String = segs.iter().map(|s| format!("/{s}")).collect();
            if p.is_empty() {
                p.push('/');
            }
            p
        }),
    ]
    .boxed()
}

/// A path built from the prefix (case changed here and there) and a tricky tail.
fn path_near(prefix: String) -> BoxedStrategy<(String, String)> {
    (
        proptest::collection::vec(any::<bool>(), prefix.len()),
        proptest::collection::vec(
            prop_oneof![path_piece(), select(vec!["/", ".", ":", "json", "/x"])],
            0..6,
        ),
        proptest::bool::weighted(0.7),
        path_strategy(),
    )
        .prop_map(move |(flips, tail, near, other)| {
            let path = if near {
                let mut p: String = prefix
                    .chars()
                    .zip(flips.iter().chain(std::iter::repeat(&false)))
                    .map(|(c, f)| if *f { c.to_ascii_uppercase() } else { c })
                    .collect();
                p.extend(tail);
                p
            } else {
                other
            };
            (prefix.clone(), path)
        })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn canonical_paths_match_the_reference(path in path_strategy()) {
        prop_assert_eq!(is_canonical(&path), reference_canonical(&path), "{:?}", path);
    }

    #[test]
    fn canonical_paths_match_the_reference_on_any_text(path in any::<String>(), ascii in "/[ -~]{0,40}") {
        prop_assert_eq!(is_canonical(&path), reference_canonical(&path), "{:?}", path);
        prop_assert_eq!(is_canonical(&ascii), reference_canonical(&ascii), "{:?}", ascii);
    }

    #[test]
    fn prefixes_match_whole_segments_like_the_reference(
        (prefix, path) in prefix_strategy().prop_flat_map(path_near)
    ) {
        let compiled = PathPrefix::new(&prefix);
        let valid = prefix.starts_with('/') && !prefix.contains('?') && reference_canonical(&prefix);
        prop_assert_eq!(compiled.is_some(), valid, "prefix {:?}", prefix);
        if let Some(p) = compiled {
            prop_assert_eq!(p.matches(&path), reference_covers(&prefix, &path, false),
                "matches: prefix {:?} path {:?}", prefix, path);
            prop_assert_eq!(p.matches_ignoring_case(&path), reference_covers(&prefix, &path, true),
                "matches_ignoring_case: prefix {:?} path {:?}", prefix, path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Query-string credentials

const QUERY_NAMES: &[&str] = &[
    "api_key",
    "access_token",
    "x-api-key",
    "token",
    "authorization",
    "key",
];

fn detector() -> QueryCredentials {
    QueryCredentials::new(QUERY_NAMES.iter().copied())
}

/// One character of a name as some client may write it.
fn spell_char(c: char) -> BoxedStrategy<String> {
    let up = c.to_ascii_uppercase();
    prop_oneof![
        Just(c.to_string()),
        Just(up.to_string()),
        Just(format!("%{:02X}", u32::from(c))),
        Just(format!("%{:02x}", u32::from(up))),
    ]
    .boxed()
}

fn separator() -> BoxedStrategy<&'static str> {
    select(vec![
        "", "", "", "", "_", "-", ".", "+", "%20", "%5F", "%2D", "%2E", "__",
    ])
    .boxed()
}

/// A configured name in any spelling the module comment lists.
fn spelled_name() -> BoxedStrategy<String> {
    select(QUERY_NAMES.to_vec())
        .prop_flat_map(|name| {
            let letters: Vec<char> = name.chars().filter(char::is_ascii_alphanumeric).collect();
            let pieces: Vec<_> = letters
                .into_iter()
                .map(|c| (separator(), spell_char(c)))
                .collect();
            (
                pieces,
                separator(),
                select(vec!["", "", "[]", "[0]", "[x]", "%5B%5D", "[", "%5B"]),
            )
        })
        .prop_map(|(pieces, end, suffix)| {
            let mut out = String::new();
            for (sep, c) in pieces {
                out.push_str(sep);
                out.push_str(&c);
            }
            out.push_str(end);
            // A lone `[` is PHP's `_`: only at the end, where it mangles nothing else.
            out.push_str(suffix);
            out
        })
        .boxed()
}

fn other_pair() -> BoxedStrategy<String> {
    prop_oneof![
        ("[a-z]{1,6}", "[a-zA-Z0-9%+.=_-]{0,10}").prop_map(|(n, v)| format!("{n}={v}")),
        "[a-z]{1,6}",
        Just(String::new()),
        Just("=".to_owned()),
        Just("a=1".to_owned()),
        Just("keys=2".to_owned()),
        Just("monkey=3".to_owned()),
    ]
    .boxed()
}

fn join_pairs(pairs: &[String], seps: &[bool]) -> String {
    let mut out = String::new();
    for (i, p) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(if seps.get(i).copied().unwrap_or(false) {
                ';'
            } else {
                '&'
            });
        }
        out.push_str(p);
    }
    out
}

/// The key, possibly with some characters %-encoded and padding a form decoder trims.
fn encoded_key(key: &str, encode: &[bool], pad: u8) -> String {
    let mut out = String::new();
    if pad == 1 {
        out.push_str("%20");
    }
    for (c, e) in key
        .chars()
        .zip(encode.iter().chain(std::iter::repeat(&false)))
    {
        if *e {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    if pad == 2 {
        out.push('+');
    }
    out
}

/// The strip property: nothing left to find, every other pair kept in order.
fn check_strip(d: &QueryCredentials, query: &str) -> Result<(), TestCaseError> {
    let stripped = d.strip(&format!("/v1?{query}"));
    let rest = stripped.strip_prefix("/v1").unwrap_or("<path changed>");
    let rest_query = rest.strip_prefix('?').unwrap_or("");
    prop_assert!(rest.is_empty() || rest.starts_with('?'), "{:?}", stripped);
    prop_assert_eq!(
        d.find(rest_query),
        None,
        "left behind in {:?} from {:?}",
        stripped,
        query
    );
    let expected: Vec<&str> = query
        .split(['&', ';'])
        .filter(|p| !p.is_empty() && d.find(p).is_none())
        .collect();
    let kept: Vec<&str> = rest_query.split('&').filter(|p| !p.is_empty()).collect();
    prop_assert_eq!(kept, expected, "from {:?}", query);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn query_detection_never_panics(query in any::<String>(), ascii in "[ -~]{0,80}") {
        let d = detector();
        let _ = d.find(&query);
        let _ = d.strip(&query);
        let _ = d.find(&ascii);
        check_strip(&d, &ascii)?;
    }

    #[test]
    fn query_names_in_every_spelling_are_found(
        name in spelled_name(),
        value in "[a-zA-Z0-9%+._-]{0,12}",
        with_value in proptest::bool::weighted(0.8),
        before in proptest::collection::vec(other_pair(), 0..4),
        after in proptest::collection::vec(other_pair(), 0..4),
        seps in proptest::collection::vec(any::<bool>(), 9),
    ) {
        let d = detector();
        let credential = if with_value { format!("{name}={value}") } else { name.clone() };
        let mut pairs = before;
        pairs.push(credential);
        pairs.extend(after);
        let query = join_pairs(&pairs, &seps);
        prop_assert!(d.find(&query).is_some(), "not found: {:?}", query);
        check_strip(&d, &query)?;
    }

    #[test]
    fn query_generated_keys_are_found_as_value_or_name(
        seed in any::<[u8; 32]>(),
        name in "[a-z]{0,8}",
        encode in proptest::collection::vec(proptest::bool::weighted(0.1), 53),
        pad in 0u8..3,
        as_name in proptest::bool::weighted(0.3),
        before in proptest::collection::vec(other_pair(), 0..4),
        after in proptest::collection::vec(other_pair(), 0..4),
        seps in proptest::collection::vec(any::<bool>(), 9),
    ) {
        let d = detector();
        let key = key_from(seed);
        let carried = encoded_key(&key, &encode, pad);
        let credential = if as_name { carried.clone() } else { format!("{name}={carried}") };
        let mut pairs = before;
        pairs.push(credential);
        pairs.extend(after);
        let query = join_pairs(&pairs, &seps);
        let found = d.find(&query);
        prop_assert!(found.is_some(), "not found: {:?}", query);
        prop_assert!(!format!("{found:?}").contains(&key), "the key leaves in the finding");
        check_strip(&d, &query)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Headers and the whole decision

fn header_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(vec![
            ":path", ":method", ":authority", ":scheme", "x-api-key", "authorization",
            "x-token", "origin", "access-control-request-method", "x-forwarded-proto",
            "x-forwarded-for", "x-apiguard-consumer", "x-request-id", "x-http-method-override",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z:-]{0,12}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn header_value(key: String) -> BoxedStrategy<String> {
    let k = key.clone();
    let flip_key = key.clone();
    prop_oneof![
        2 => "[ -~]{0,40}",
        1 => any::<String>(),
        1 => Just(key.clone()),
        1 => Just(format!("ApiKey {k}")),
        1 => Just(format!(" {k} ")),
        1 => Just(format!("{k},{k}")),
        1 => Just(format!("Bearer {k}")),
        2 => any::<prop::sample::Index>()
            .prop_map(move |i| single_bit_flip(&flip_key, i.index(flip_key.len() * 8))),
        1 => Just(key[..key.len() - 1].to_owned()),
        1 => select(vec!["GET", "OPTIONS", "POST", "https", "*", ""]).prop_map(str::to_owned),
    ]
    .boxed()
}

fn headers(key: String) -> BoxedStrategy<Vec<(String, String)>> {
    let path = prop_oneof![
        select(vec![
            "/v1",
            "/healthz",
            "/healthz/live",
            "/healthzz",
            "/Healthz",
            "/v1/healthz"
        ])
        .prop_map(str::to_owned),
        path_strategy(),
    ];
    (
        path,
        proptest::option::weighted(0.3, select(vec!["?a=1", "?api_key=x", "?q="])),
        proptest::collection::vec((header_name(), header_value(key.clone())), 0..8),
        any::<bool>(),
        // Often a key header, so that forwarding is common.
        proptest::option::weighted(
            0.6,
            (
                select(vec!["x-api-key", "authorization"]),
                header_value(key),
            ),
        ),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(path, query, mut rest, path_first, key_header, at)| {
            if let Some((name, value)) = key_header {
                rest.insert(at.index(rest.len() + 1), (name.to_owned(), value));
            }
            let path = format!("{path}{}", query.unwrap_or(""));
            if path_first {
                rest.insert(0, (":path".to_owned(), path));
            } else {
                rest.push((":path".to_owned(), path));
            }
            rest
        })
        .boxed()
}

/// The one valid key of the decision property, from a fixed draw.
fn the_key() -> String {
    key_from([42u8; 32])
}

fn guard(in_authorization: bool) -> Guard {
    let cfg = json!({
        "credentials": "api_key",
        "api_keys": {"allow_authorization_header": in_authorization,
                     "keys": [{"sha256": to_hex(&api_key::digest(&the_key())), "consumer": "alice"}]},
        "https": {"required": false},
        "exempt_paths": ["/healthz"],
        "allow_cors_preflight": false
    });
    let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
    Guard::new(Rc::new(policy), &KeySpace::new("t"), 1)
}

/// The request presents the valid key the way this policy reads keys.
fn presents_the_key(headers: &[(String, String)], key: &str, in_authorization: bool) -> bool {
    let one = |name: &str| {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        match values.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    };
    one("x-api-key").is_some_and(|v| v.trim() == key)
        || in_authorization
            && one("authorization").is_some_and(|v| with_scheme(v, "ApiKey") == Some(key))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn header_extraction_never_panics(
        hs in proptest::collection::vec((header_name(), header_value(the_key())), 0..8),
        api_key_header in proptest::option::of(select(vec!["x-api-key", "authorization", "x-token"])),
        in_authorization in any::<bool>(),
        bearer in proptest::option::of(select(vec!["authorization", "x-token", "x-api-key"])),
    ) {
        let sources = CredentialSources {
            api_key_header: api_key_header.map(str::to_owned),
            api_key_in_authorization: in_authorization,
            bearer_header: bearer.map(str::to_owned),
        };
        let req = RequestFacts::new(hs.clone());
        if let Ok(presented) = sources.extract(&req) {
            // Whatever is presented came from a header value, trimmed.
            for secret in [presented.api_key, presented.bearer].into_iter().flatten() {
                let v = secret.expose();
                prop_assert!(!v.is_empty());
                prop_assert!(hs.iter().any(|(_, h)| h.contains(v)));
            }
        }
    }

    #[test]
    fn no_request_without_the_valid_key_is_forwarded(
        hs in headers(the_key()),
        in_authorization in any::<bool>(),
        tls in any::<bool>(),
        end_of_stream in any::<bool>(),
        client in proptest::option::of(select(vec!["192.0.2.7:4711", "[::1]:5", "10.0.0.1:0", "x"])),
    ) {
        let mut g = guard(in_authorization);
        let store = MemoryStore::default();
        let mut events = RecordedEvents::default();
        let mut env = Env { now_ms: 1_800_000_000_000, store: &store, events: &mut events };
        let req = RequestFacts::new(hs.clone())
            .with_downstream_tls(tls)
            .with_end_of_stream(end_of_stream)
            .with_client_address(client);
        let decision = g.decide(&req, &mut env);
        if let Decision::Forward(f) = &decision {
            let exempt = PathPrefix::new("/healthz").unwrap().matches(req.path());
            prop_assert!(
                exempt || presents_the_key(&hs, &the_key(), in_authorization),
                "forwarded without the key: path {:?}, header names {:?}",
                req.path(),
                hs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
            );
            prop_assert!(f.unenforced.is_none());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The rate-limit service's answers (global_rate_limit): read by hand from protobuf's wire format,
// so any bytes must give an answer or an error, never a panic; and its configuration.

/// RateLimitResponse bytes made by the published message classes (tests/data/rls_wire_vectors.json).
fn rls_vectors() -> Vec<Vec<u8>> {
    let all: Value =
        serde_json::from_str(include_str!("data/rls_wire_vectors.json")).expect("vectors");
    all["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|c| {
            let hex = c["hex"].as_str().expect("hex");
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
                .collect()
        })
        .collect()
}

fn global_entry() -> BoxedStrategy<String> {
    prop_oneof![
        select(vec![
            "consumer",
            "plan",
            "route",
            "method",
            "client_address",
            "header:x-tenant",
            "header:authorization",
            "header:X-Up",
            "header:",
            "tenant"
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,20}",
        Just(format!("header:{MARKER}")),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rls_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = apiguard::ratelimit::rls::decode_response(&bytes);
    }

    #[test]
    fn rls_damaged_answers_never_panic(which in 0usize..16, cuts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), truncate in any::<usize>()) {
        let vectors = rls_vectors();
        let mut bytes = vectors[which % vectors.len()].clone();
        for (at, xor) in cuts {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= xor;
            }
        }
        bytes.truncate(truncate % (bytes.len() + 1));
        let _ = apiguard::ratelimit::rls::decode_response(&bytes);
    }

    #[test]
    fn global_rate_limit_configuration_never_panics_nor_echoes(
        descriptors in proptest::collection::vec(proptest::collection::vec(global_entry(), 0..4), 0..4),
        timeout in prop_oneof![Just(json!(50)), Just(json!(0)), Just(json!(-1)), Just(json!(MARKER))],
        cluster in prop_oneof![Just("ratelimit".to_owned()), "[ -~]{0,130}".prop_map(|s| s)],
    ) {
        let cfg = json!({"api_keys": {"keys": []}, "global_rate_limit": {
            "cluster": cluster, "domain": "apiguard", "timeout_ms": timeout, "descriptors": descriptors}});
        check_config(cfg.to_string().as_bytes())?;
    }
}

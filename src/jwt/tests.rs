//! End-to-end tests of [`JwtVerifier`]: configuration → token → decision.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeSet;
use std::rc::Rc;

use serde_json::{json, Value};

use super::test_keys::{self, b64url, mint, mint_with, with_segment, Signer};
use super::*;
use crate::ports::fakes::{MemoryStore, RecordedEvents};
use crate::ports::CallFailure;

const ISS: &str = "https://idp.example";
const NOW: i64 = 1_700_000_000;

fn settings(config: Value) -> Rc<JwtSettings> {
    let dto: JwtConfig = serde_json::from_value(config).unwrap();
    Rc::new(JwtSettings::compile(dto, "jwt").unwrap())
}

/// One provider with every RFC test key inline (kids: hmac, rsa, ec, ec384, ec521, ed).
fn all_keys_config() -> Value {
    let mut keys = Vec::new();
    for (kid, jwk) in [
        ("hmac", test_keys::hmac_jwk()),
        ("rsa", test_keys::rsa_public_jwk()),
        ("ec", test_keys::ec_public_jwk()),
        ("ec384", test_keys::ec384_public_jwk()),
        ("ec521", test_keys::ec521_public_jwk()),
        ("ed", test_keys::ed25519_public_jwk()),
    ] {
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        keys.push(jwk);
    }
    json!({"providers": [{"issuer": ISS, "audiences": ["api"], "jwks": {"keys": keys},
                          "forward_claims": {"tenant": "x-tenant"}}]})
}

fn verifier(config: Value) -> JwtVerifier {
    JwtVerifier::new(settings(config), &KeySpace::new("apiguard"))
}

/// The rest of the proxy as one verifier sees it: shared data and the events it emits.
#[derive(Default)]
struct Proxy {
    store: MemoryStore,
    events: RecordedEvents,
}

const VM: u64 = 7;

impl Proxy {
    /// The fetches this VM's tick starts at `now` (seconds).
    fn tick(&mut self, v: &mut JwtVerifier, now: i64) -> Vec<JwksFetch> {
        v.jwks_tick(&self.store, VM, now * 1000, &mut self.events)
            .unwrap()
    }

    fn refetch(&mut self, v: &mut JwtVerifier, now: i64) -> Refetch {
        v.refetch(0, &self.store, VM, now * 1000, &mut self.events)
            .unwrap()
    }

    fn answer(&mut self, v: &mut JwtVerifier, status: u16, body: &[u8], now: i64) {
        let reply = CallReply::Answered {
            status,
            headers: vec![],
            body: body.to_vec(),
        };
        v.on_jwks_reply(0, &reply, &self.store, now * 1000, &mut self.events)
            .unwrap();
    }

    /// Keys loaded by the last `JwksLoaded` event, if the last JWKS event was one.
    fn last_jwks_event(&self) -> Option<&Event> {
        self.events
            .0
            .iter()
            .rev()
            .find(|e| matches!(e, Event::JwksLoaded { .. } | Event::JwksRejected { .. }))
    }

    fn loaded(&self) -> Option<usize> {
        match self.last_jwks_event() {
            Some(Event::JwksLoaded { keys, .. }) => Some(*keys),
            _ => None,
        }
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "api", "sub": "user-1", "iat": NOW, "exp": NOW + 600, "tenant": "acme"})
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().map(|m| m.remove(key));
    c
}

fn code(v: &mut JwtVerifier, token: &str) -> &'static str {
    match v.verify(token, NOW) {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

fn kid_for(alg: Alg) -> &'static str {
    match alg.family() {
        KeyFamily::Hmac => "hmac",
        KeyFamily::Rsa => "rsa",
        KeyFamily::EcP256 => "ec",
        KeyFamily::EcP384 => "ec384",
        KeyFamily::EcP521 => "ec521",
        KeyFamily::Ed25519 => "ed",
    }
}

#[test]
fn every_algorithm_verifies_with_its_key() {
    let mut v = verifier(all_keys_config());
    for alg in Alg::ALL {
        // With and without kid: without, the key is found by algorithm support.
        for kid in [Some(kid_for(alg)), None] {
            let token = mint(alg, kid, &claims());
            let verified = v
                .verify(&token, NOW)
                .unwrap_or_else(|e| panic!("{alg} kid {kid:?}: {e}"));
            assert_eq!(verified.subject, "user-1");
            assert_eq!(verified.issuer, ISS);
            assert_eq!(verified.provider, 0);
            assert_eq!(
                verified.forward_headers,
                vec![("x-tenant".to_owned(), "acme".to_owned())]
            );
        }
    }
}

#[test]
fn every_algorithm_refuses_a_signature_by_another_key() {
    let mut v = verifier(all_keys_config());
    let header = |alg: Alg| json!({"alg": alg.name(), "kid": kid_for(alg)});
    for alg in [
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
        Alg::Es256,
        Alg::Es384,
        Alg::Es512,
    ] {
        let token = mint_with(alg, Signer::Other, &header(alg), &claims());
        assert_eq!(code(&mut v, &token), "invalid_signature", "{alg}");
    }
    // RSA and Ed25519: a signature moved from another algorithm / token.
    let rs = mint(Alg::Rs256, Some("rsa"), &claims());
    let ps = mint(Alg::Ps256, Some("rsa"), &claims());
    let ps_sig = ps.rsplit('.').next().unwrap_or_default();
    assert_eq!(
        code(&mut v, &with_segment(&rs, 2, ps_sig)),
        "invalid_signature"
    );
    let ed = mint(Alg::EdDsa, Some("ed"), &claims());
    let ed_other = mint(
        Alg::EdDsa,
        Some("ed"),
        &with(claims(), "sub", json!("user-2")),
    );
    let sig = ed_other.rsplit('.').next().unwrap_or_default();
    assert_eq!(
        code(&mut v, &with_segment(&ed, 2, sig)),
        "invalid_signature"
    );
}

/// RFC 7515 A.1–A.3 tokens have no `sub`. The verifier's key-selection and signature step
/// accepts the RFC token bytes with the RFC keys (from JWKs) and refuses them with other keys of
/// the same type; the full path refuses them for their claims (`missing_sub`, or `token_expired`)
/// before computing any signature, whatever the key.
#[test]
fn rfc7515_appendix_a1_a2_a3_examples_pass_the_signature_step() {
    let before_exp = test_keys::RFC7515_EXP - 100;
    for (token, good, wrong) in [
        (
            test_keys::RFC7515_A1_HS256,
            test_keys::hmac_jwk(),
            json!({"kty": "oct", "k": b64url(&[9; 64])}),
        ),
        (
            test_keys::RFC7515_A2_RS256,
            test_keys::rsa_public_jwk(),
            test_keys::other_rsa_public_jwk(),
        ),
        (
            test_keys::RFC7515_A3_ES256,
            test_keys::ec_public_jwk(),
            test_keys::other_ec_public_jwk(),
        ),
    ] {
        let config =
            |jwk: &Value| json!({"providers": [{"issuer": "joe", "jwks": {"keys": [jwk]}}]});
        let parsed = ParsedToken::parse(token).unwrap();
        let mut v = verifier(config(&good));
        assert!(v.check_signature(0, &parsed).is_ok(), "{token}");
        let mut w = verifier(config(&wrong));
        assert_eq!(
            w.check_signature(0, &parsed).err(),
            Some(JwtError::InvalidSignature),
            "{token}"
        );
        let checks = token::signature_checks();
        for verifier in [&mut v, &mut w] {
            assert_eq!(
                verifier.verify(token, before_exp).err(),
                Some(JwtError::MissingSub),
                "{token}"
            );
            assert_eq!(
                verifier.verify(token, test_keys::RFC7515_EXP + 60).err(),
                Some(JwtError::Expired {
                    exp: test_keys::RFC7515_EXP,
                    now: test_keys::RFC7515_EXP + 60
                })
            );
        }
        assert_eq!(token::signature_checks(), checks, "{token}");
    }
}

/// Tokens refused for their claims are refused before the signature: the refusal is the same
/// whether the signature is good, made by another key, garbage, or by a key never heard of —
/// and no signature is computed.
#[test]
fn claim_refusals_come_before_the_signature() {
    let mut v = verifier(all_keys_config());
    let cases = [
        (with(claims(), "exp", json!(NOW - 61)), "token_expired"),
        (
            with(claims(), "nbf", json!(NOW + 61)),
            "token_not_yet_valid",
        ),
        (
            with(
                with(claims(), "iat", json!(NOW + 61)),
                "exp",
                json!(NOW + 700),
            ),
            "token_issued_in_future",
        ),
        (
            with(claims(), "exp", json!(NOW + 3601)),
            "token_lifetime_too_long",
        ),
        (without(claims(), "exp"), "missing_exp"),
        (with(claims(), "aud", json!("other")), "audience_mismatch"),
        (
            with(claims(), "token_use", json!("refresh")),
            "refresh_token_not_allowed",
        ),
        (without(claims(), "sub"), "missing_sub"),
        (with(claims(), "sub", json!(" alice")), "invalid_sub"),
        (
            with(claims(), "iss", json!("https://evil.example")),
            "unknown_issuer",
        ),
    ];
    for (c, want) in &cases {
        let good = mint(Alg::Es256, Some("ec"), c);
        let forgeries = [
            good.clone(),
            mint_with(
                Alg::Es256,
                Signer::Other,
                &json!({"alg": "ES256", "kid": "ec"}),
                c,
            ),
            with_segment(&good, 2, &b64url(&[7; 64])),
            with_segment(&good, 2, "AA"),
            mint(Alg::Es256, Some("unknown"), c),
            mint_with(Alg::Es256, Signer::Other, &json!({"alg": "ES256"}), c),
            // Even an HMAC token aimed at the RSA key: the claims refuse it first.
            mint(Alg::Hs256, Some("rsa"), c),
        ];
        for token in &forgeries {
            let checks = token::signature_checks();
            assert_eq!(code(&mut v, token), *want, "{c}");
            assert_eq!(
                token::signature_checks(),
                checks,
                "{want}: no signature computed"
            );
        }
    }
    let typ = json!({"alg": "ES256", "kid": "ec", "typ": "refresh+jwt"});
    let checks = token::signature_checks();
    assert_eq!(
        code(
            &mut v,
            &mint_with(Alg::Es256, Signer::Other, &typ, &claims())
        ),
        "refresh_token_not_allowed"
    );
    assert_eq!(token::signature_checks(), checks);
    assert_eq!(v.cached_tokens(), 0);
}

/// With claims that pass every rule, the signature still decides, and the steps before the
/// claim rules (header, claims JSON) still come first.
#[test]
fn signature_and_header_refusals_are_unchanged_for_otherwise_valid_tokens() {
    let mut v = verifier(all_keys_config());
    let checks = token::signature_checks();
    let forged = mint_with(
        Alg::Es256,
        Signer::Other,
        &json!({"alg": "ES256", "kid": "ec"}),
        &claims(),
    );
    assert_eq!(code(&mut v, &forged), "invalid_signature");
    assert_eq!(token::signature_checks(), checks + 1);
    let garbage = with_segment(
        &mint(Alg::Es256, Some("ec"), &claims()),
        2,
        &b64url(&[7; 64]),
    );
    assert_eq!(code(&mut v, &garbage), "invalid_signature");
    assert_eq!(
        code(&mut v, &mint(Alg::Es256, Some("nope"), &claims())),
        "unknown_kid"
    );
    assert_eq!(
        code(&mut v, &mint(Alg::Hs256, Some("rsa"), &claims())),
        "algorithm_confusion"
    );
    assert_eq!(v.cached_tokens(), 0);

    // Header and structure problems win over an expired exp.
    let expired = with(claims(), "exp", json!(NOW - 61));
    let body = b64url(expired.to_string().as_bytes());
    assert_eq!(
        code(&mut v, &format!("{}.{body}.", b64url(br#"{"alg":"none"}"#))),
        "alg_none"
    );
    assert_eq!(
        code(
            &mut v,
            &mint_with(
                Alg::Es256,
                Signer::Rfc,
                &json!({"alg": "ES256", "kid": "ec", "crit": ["b64"]}),
                &expired
            )
        ),
        "unsupported_crit_header"
    );
    assert_eq!(
        code(
            &mut v,
            &format!("{}.{body}.AA", b64url(br#"{"alg":"HS1"}"#))
        ),
        "alg_not_allowed"
    );
    assert_eq!(
        code(
            &mut v,
            &format!("{}.{body}.a+b", b64url(br#"{"alg":"ES256"}"#))
        ),
        "malformed_token"
    );
    let bad_claims = with(expired, "nbf", json!("soon"));
    assert_eq!(
        code(&mut v, &mint(Alg::Es256, Some("ec"), &bad_claims)),
        "malformed_token"
    );
}

/// A good token with a kid not (yet) in the remote set is `unknown_kid` and may wait for a
/// refetch; an expired one is refused for its `exp` and, being refused anyway, waits for none.
#[test]
fn only_otherwise_valid_tokens_with_an_unknown_kid_await_keys() {
    let (mut v, mut proxy) = (verifier(remote_config()), Proxy::default());
    assert_eq!(proxy.tick(&mut v, NOW).len(), 1);
    proxy.answer(&mut v, 200, &jwks_body(&[ec_with_kid("k1")]), NOW);
    assert_eq!(proxy.loaded(), Some(1));
    let stale = mint(
        Alg::Es256,
        Some("k2"),
        &with(claims(), "exp", json!(NOW - 61)),
    );
    let refused = v.verify_or_await_keys(&stale, None, NOW + 30).unwrap_err();
    assert_eq!(
        (refused.error.code(), refused.awaits_keys_of),
        ("token_expired", None)
    );
    let fresh = mint(
        Alg::Es256,
        Some("k2"),
        &with(claims(), "exp", json!(NOW + 600)),
    );
    let refused = v.verify_or_await_keys(&fresh, None, NOW + 30).unwrap_err();
    assert_eq!(
        (refused.error.code(), refused.awaits_keys_of),
        ("unknown_kid", Some(0))
    );

    // Before the first good fetch, a token its claims condemn is a 401, not a 503.
    let mut cold = verifier(remote_config());
    assert_eq!(code(&mut cold, &stale), "token_expired");
    let refused = cold.verify_or_await_keys(&fresh, None, NOW).unwrap_err();
    assert_eq!(
        (refused.error.code(), refused.awaits_keys_of),
        ("no_verification_key", Some(0))
    );
    // Inline keys never await anything.
    let mut inline = verifier(all_keys_config());
    let unknown = mint(Alg::Es256, Some("nope"), &claims());
    assert_eq!(
        inline
            .verify_or_await_keys(&unknown, None, NOW)
            .unwrap_err()
            .awaits_keys_of,
        None
    );
}

#[test]
fn rfc8037_a4_example_verifies_as_jws_but_is_not_a_jwt() {
    // The signature step accepts it (see token.rs); as an access token its text payload is
    // refused before any key is consulted.
    let mut v = verifier(all_keys_config());
    assert_eq!(
        v.verify(test_keys::RFC8037_A4_JWS, NOW).err(),
        Some(JwtError::Malformed(Malformed::Claims))
    );
}

#[test]
fn every_bit_flip_of_a_valid_token_is_refused() {
    let mut v = verifier(all_keys_config());
    for alg in [Alg::Hs256, Alg::Es256, Alg::Es384, Alg::Es512, Alg::EdDsa] {
        let token = mint(alg, Some(kid_for(alg)), &claims());
        assert!(v.verify(&token, NOW).is_ok());
        for index in 0..3 {
            let mut bytes =
                jwks::b64url_decode(token.split('.').nth(index).unwrap_or_default()).unwrap();
            // P-384 and P-521 are slow in test builds: every 11th bit (the property tests flip
            // every bit).
            let step = if matches!(alg, Alg::Es384 | Alg::Es512) {
                11
            } else {
                1
            };
            for bit in (0..bytes.len() * 8).step_by(step) {
                bytes[bit / 8] ^= 1 << (bit % 8);
                let mutated = with_segment(&token, index, &b64url(&bytes));
                bytes[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    v.verify(&mutated, NOW).is_err(),
                    "{alg} segment {index} bit {bit}"
                );
            }
        }
        // The original is still fine (and was cached: the mutations were not cache hits).
        assert!(v.verify(&token, NOW).is_ok());
    }
}

#[test]
fn rsa_bit_flips_of_header_claims_and_signature_are_refused() {
    let mut v = verifier(all_keys_config());
    let token = mint(Alg::Rs256, Some("rsa"), &claims());
    for index in 0..3 {
        let mut bytes =
            jwks::b64url_decode(token.split('.').nth(index).unwrap_or_default()).unwrap();
        for bit in (0..bytes.len() * 8).step_by(97) {
            bytes[bit / 8] ^= 1 << (bit % 8);
            let mutated = with_segment(&token, index, &b64url(&bytes));
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(
                v.verify(&mutated, NOW).is_err(),
                "segment {index} bit {bit}"
            );
        }
    }
}

/// Each refusal code, produced through the public entry point.
#[test]
fn every_refusal_code_is_reachable() {
    let mut seen = BTreeSet::new();
    let mut expect = |v: &mut JwtVerifier, token: &str, want: &'static str| {
        assert_eq!(code(v, token), want);
        seen.insert(want);
    };
    let mut v = verifier(all_keys_config());
    let es = |c: &Value| mint(Alg::Es256, Some("ec"), c);

    expect(&mut v, &"a".repeat(8193), "token_too_large");
    expect(&mut v, "not-a-token", "malformed_token");
    expect(
        &mut v,
        &format!(
            "{}.{}.",
            b64url(br#"{"alg":"none"}"#),
            b64url(claims().to_string().as_bytes())
        ),
        "alg_none",
    );
    expect(
        &mut v,
        &mint_with(
            Alg::Es256,
            Signer::Rfc,
            &json!({"alg": "ES256", "kid": "ec", "crit": ["b64"], "b64": false}),
            &claims(),
        ),
        "unsupported_crit_header",
    );
    expect(
        &mut v,
        &mint(Alg::Es256, Some("nope"), &claims()),
        "unknown_kid",
    );
    // HS256 aimed at the RSA key: algorithm confusion.
    expect(
        &mut v,
        &mint(Alg::Hs256, Some("rsa"), &claims()),
        "algorithm_confusion",
    );
    // ES256 aimed at the RSA key: wrong key type.
    expect(
        &mut v,
        &mint(Alg::Es256, Some("rsa"), &claims()),
        "key_type_mismatch",
    );
    expect(
        &mut v,
        &with_segment(&es(&claims()), 2, &b64url(&[7; 64])),
        "invalid_signature",
    );
    expect(
        &mut v,
        &es(&with(claims(), "exp", json!(NOW - 61))),
        "token_expired",
    );
    expect(
        &mut v,
        &es(&with(claims(), "nbf", json!(NOW + 61))),
        "token_not_yet_valid",
    );
    expect(
        &mut v,
        &es(&with(
            with(claims(), "iat", json!(NOW + 61)),
            "exp",
            json!(NOW + 700),
        )),
        "token_issued_in_future",
    );
    expect(
        &mut v,
        &es(&with(claims(), "iss", json!("https://evil.example"))),
        "unknown_issuer",
    );
    expect(&mut v, &es(&without(claims(), "iss")), "unknown_issuer");
    expect(
        &mut v,
        &es(&with(claims(), "aud", json!(["other"]))),
        "audience_mismatch",
    );
    expect(&mut v, &es(&without(claims(), "exp")), "missing_exp");
    expect(&mut v, &es(&without(claims(), "sub")), "missing_sub");
    expect(
        &mut v,
        &es(&with(claims(), "sub", json!("a\u{7f}b"))),
        "invalid_sub",
    );
    expect(
        &mut v,
        &es(&with(claims(), "token_use", json!("refresh"))),
        "refresh_token_not_allowed",
    );
    expect(
        &mut v,
        &mint_with(
            Alg::Es256,
            Signer::Rfc,
            &json!({"alg": "ES256", "kid": "ec", "typ": "refresh+jwt"}),
            &claims(),
        ),
        "refresh_token_not_allowed",
    );
    expect(
        &mut v,
        &es(&with(claims(), "exp", json!(NOW + 3601))),
        "token_lifetime_too_long",
    );
    expect(
        &mut v,
        &es(&with(claims(), "tenant", json!(["a", {"b": 1}]))),
        "unforwardable_claim",
    );

    let mut only_es = verifier(
        json!({"providers": [{"issuer": ISS, "algorithms": ["ES256"],
        "jwks": {"keys": [test_keys::ec_public_jwk()]}}]}),
    );
    expect(
        &mut only_es,
        &mint(Alg::Hs256, None, &claims()),
        "alg_not_allowed",
    );
    expect(
        &mut only_es,
        &mint(Alg::EdDsa, None, &claims()),
        "alg_not_allowed",
    );

    let mut remote_only =
        verifier(json!({"providers": [{"issuer": ISS, "remote_jwks": {"cluster": "idp"}}]}));
    expect(&mut remote_only, &es(&claims()), "no_verification_key");

    let mut by_jwt_authn = verifier(jwt_authn_config(json!({})));
    expect(
        &mut by_jwt_authn,
        &es(&claims()),
        "not_verified_by_jwt_authn",
    );
    let vouched = jwt_authn_metadata(ISS, &with(claims(), "sub", json!("someone-else")));
    let refused = by_jwt_authn.verify_with(&es(&claims()), Some(&vouched), NOW);
    let code = refused.err().map_or("ok", |e| e.code());
    assert_eq!(code, "jwt_authn_payload_mismatch");
    seen.insert(code);

    let all: BTreeSet<&str> = JwtError::ALL_CODES.into_iter().collect();
    assert_eq!(seen, all);
}

#[test]
fn algorithm_confusion_with_the_public_key_as_hmac_secret_is_refused() {
    // The attack: sign HS256 with the RSA public key's bytes (here: the JWK's n) as secret.
    let mut v = verifier(
        json!({"providers": [{"issuer": ISS, "jwks": {"keys": [test_keys::rsa_public_jwk()]}}]}),
    );
    let n = jwks::b64url_decode(
        test_keys::rsa_public_jwk()["n"]
            .as_str()
            .unwrap_or_default(),
    )
    .unwrap();
    let input = format!(
        "{}.{}",
        b64url(br#"{"alg":"HS256"}"#),
        b64url(claims().to_string().as_bytes())
    );
    use jwt_compact::{Algorithm, AlgorithmSignature};
    let sig = jwt_compact::alg::Hs256.sign(&jwt_compact::alg::Hs256Key::new(&n), input.as_bytes());
    let forged = format!("{input}.{}", b64url(&sig.as_bytes()));
    assert_eq!(
        v.verify(&forged, NOW).err(),
        Some(JwtError::AlgorithmConfusion {
            alg: Alg::Hs256,
            key: KeyFamily::Rsa
        })
    );
    // Even if the operator allow-lists HS256 for this issuer, the RSA key never becomes a secret.
    let mut listed = verifier(
        json!({"providers": [{"issuer": ISS, "algorithms": ["RS256", "HS256"],
        "jwks": {"keys": [test_keys::rsa_public_jwk()]}}]}),
    );
    assert_eq!(
        listed.verify(&forged, NOW).err().map(|e| e.code()),
        Some("algorithm_confusion")
    );
}

#[test]
fn jwk_alg_pins_the_key_to_one_algorithm() {
    let mut jwk = test_keys::rsa_public_jwk();
    jwk["alg"] = json!("PS256");
    jwk["kid"] = json!("k");
    let mut v = verifier(json!({"providers": [{"issuer": ISS, "jwks": {"keys": [jwk]}}]}));
    assert!(v
        .verify(&mint(Alg::Ps256, Some("k"), &claims()), NOW)
        .is_ok());
    assert_eq!(
        code(&mut v, &mint(Alg::Rs256, Some("k"), &claims())),
        "key_type_mismatch"
    );
    assert_eq!(
        code(&mut v, &mint(Alg::Rs256, None, &claims())),
        "key_type_mismatch"
    );
}

#[test]
fn issuer_selects_the_provider() {
    let mut v = verifier(json!({"providers": [
        {"issuer": "a", "jwks": {"keys": [test_keys::ec_public_jwk()]}},
        {"issuer": "b", "audiences": ["api"], "jwks": {"keys": [test_keys::ed25519_public_jwk()]}}
    ]}));
    let c = |iss: &str| with(claims(), "iss", json!(iss));
    assert_eq!(
        v.verify(&mint(Alg::EdDsa, None, &c("b")), NOW)
            .map(|j| j.provider),
        Ok(1)
    );
    assert_eq!(
        v.verify(&mint(Alg::Es256, None, &c("a")), NOW)
            .map(|j| j.provider),
        Ok(0)
    );
    // Provider a's key cannot vouch for issuer b.
    assert_eq!(
        code(&mut v, &mint(Alg::Es256, None, &c("b"))),
        "key_type_mismatch"
    );
}

#[test]
fn cache_hit_skips_the_signature_but_rechecks_time() {
    let mut v = verifier(all_keys_config());
    let token = mint(Alg::Es256, Some("ec"), &claims());
    assert!(v.verify(&token, NOW).is_ok());
    assert_eq!(v.cached_tokens(), 1);
    // Remove every key: only a cache hit can still accept the token.
    let mut hollow = verifier(
        json!({"providers": [{"issuer": ISS, "audiences": ["api"], "remote_jwks": {"cluster": "idp"}}]}),
    );
    hollow.cache = std::mem::replace(&mut v.cache, cache::TokenCache::new(16));
    assert_eq!(
        hollow.verify(&token, NOW + 10).map(|j| j.subject),
        Ok("user-1".to_owned())
    );
    // exp is re-checked on a hit; the expired entry is dropped.
    assert_eq!(
        hollow.verify(&token, NOW + 660).err(),
        Some(JwtError::Expired {
            exp: NOW + 600,
            now: NOW + 660
        })
    );
    assert_eq!(hollow.cached_tokens(), 0);
    // nbf too: a token cached once is not valid before its nbf.
    let future = mint(
        Alg::Es256,
        Some("ec"),
        &with(claims(), "nbf", json!(NOW + 30)),
    );
    assert!(v.verify(&future, NOW).is_ok());
    assert_eq!(
        v.verify(&future, NOW - 100).err().map(|e| e.code()),
        Some("token_not_yet_valid")
    );
}

#[test]
fn cache_can_be_disabled_and_is_keyed_by_digest_only() {
    let mut config = all_keys_config();
    config["cache_max_entries"] = json!(0);
    let mut off = verifier(config);
    let token = mint(Alg::Es256, Some("ec"), &claims());
    assert!(off.verify(&token, NOW).is_ok());
    assert!(off.verify(&token, NOW).is_ok());
    assert_eq!(off.cached_tokens(), 0);

    let mut on = verifier(all_keys_config());
    assert!(on.verify(&token, NOW).is_ok());
    assert!(on.cache.get(&cache::digest(&token)).is_some());
    assert!(!format!("{:?}", on.cache).contains(&token[..20]));
}

#[test]
fn failed_verifications_are_not_cached() {
    let mut v = verifier(all_keys_config());
    let token = mint(Alg::Es256, Some("ec"), &without(claims(), "sub"));
    assert_eq!(code(&mut v, &token), "missing_sub");
    assert_eq!(v.cached_tokens(), 0);
}

fn remote_config() -> Value {
    json!({"providers": [{"issuer": ISS, "audiences": ["api"],
        "remote_jwks": {"cluster": "idp", "path": "/jwks", "authority": "idp.example",
                        "refresh_interval_seconds": 300, "timeout_ms": 1500, "min_refetch_interval_seconds": 30}}]})
}

fn jwks_body(keys: &[Value]) -> Vec<u8> {
    json!({"keys": keys}).to_string().into_bytes()
}

fn ec_with_kid(kid: &str) -> Value {
    let mut k = test_keys::ec_public_jwk();
    k["kid"] = json!(kid);
    k
}

#[test]
fn remote_jwks_lifecycle() {
    let (mut v, mut proxy) = (verifier(remote_config()), Proxy::default());
    let fetches = proxy.tick(&mut v, NOW);
    assert_eq!(fetches.len(), 1);
    let call = &fetches[0].call;
    assert_eq!(
        (
            call.cluster.as_str(),
            call.method.as_str(),
            call.path.as_str(),
            call.authority.as_str(),
            call.timeout_ms
        ),
        ("idp", "GET", "/jwks", "idp.example", 1500)
    );
    assert!(proxy.tick(&mut v, NOW).is_empty(), "in flight");
    let token = mint(Alg::Es256, Some("k1"), &claims());
    assert_eq!(code(&mut v, &token), "no_verification_key");

    // Mixed-purpose JWKS: unusable keys are skipped.
    let body = jwks_body(&[
        ec_with_kid("k1"),
        json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}),
        test_keys::hmac_jwk(),
    ]);
    proxy.answer(&mut v, 200, &body, NOW);
    assert_eq!(proxy.loaded(), Some(1));
    assert!(v.verify(&token, NOW).is_ok());

    // Failures and garbage keep the last good keys; each is one refetch, 30 s apart.
    let huge = vec![b' '; MAX_JWKS_BYTES + 1];
    let bad: [(u16, &[u8], &str); 6] = [
        (503, b"{}", "503"),
        (200, b"<html>", "not valid json"),
        (200, b"{\"keys\": 5}", "not a json object with a keys array"),
        (
            200,
            b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"AAAA\"}]}",
            "no usable",
        ),
        (200, &huge, "more than the 262144 allowed"),
        (404, b"", "404"),
    ];
    for (i, (status, body, reason)) in bad.into_iter().enumerate() {
        let at = NOW + 30 * (i as i64 + 1);
        assert!(
            matches!(proxy.refetch(&mut v, at), Refetch::Start(_)),
            "{i}"
        );
        proxy.answer(&mut v, status, body, at);
        match proxy.last_jwks_event() {
            Some(Event::JwksRejected { reason: got, .. }) => {
                assert!(got.contains(reason), "{got} lacks {reason}")
            }
            other => panic!("{other:?}"),
        }
        v.cache = cache::TokenCache::new(16);
        assert!(v.verify(&token, at).is_ok(), "{status}");
    }
    // A failed call too.
    let at = NOW + 300;
    assert!(matches!(proxy.refetch(&mut v, at), Refetch::Start(_)));
    v.on_jwks_reply(
        0,
        &CallReply::Failed(CallFailure::NoResponse),
        &proxy.store,
        at * 1000,
        &mut proxy.events,
    )
    .unwrap();
    assert!(v.verify(&token, at).is_ok());
}

#[test]
fn remote_refresh_and_unknown_kid_refetch_are_scheduled_per_proxy() {
    let (mut v, mut proxy) = (verifier(remote_config()), Proxy::default());
    assert_eq!(proxy.tick(&mut v, NOW).len(), 1);
    proxy.answer(&mut v, 200, &jwks_body(&[ec_with_kid("k1")]), NOW);
    assert!(proxy.tick(&mut v, NOW + 299).is_empty());

    // Unknown kid right after a fetch: rate-limited, no fetch.
    assert_eq!(proxy.refetch(&mut v, NOW + 5), Refetch::Refuse);
    // After the refetch interval the next one brings the fetch forward, once.
    assert!(matches!(proxy.refetch(&mut v, NOW + 30), Refetch::Start(_)));
    for _ in 0..50 {
        assert_eq!(proxy.refetch(&mut v, NOW + 31), Refetch::Underway);
    }
    // Another VM of the proxy (with the published keys loaded) sees it under way and starts
    // nothing either.
    let mut other = verifier(remote_config());
    assert!(other
        .load_published(&proxy.store, &mut proxy.events)
        .unwrap());
    assert_eq!(
        other
            .refetch(
                0,
                &proxy.store,
                VM + 1,
                (NOW + 31) * 1000,
                &mut proxy.events
            )
            .unwrap(),
        Refetch::Underway
    );
    proxy.answer(&mut v, 200, &jwks_body(&[ec_with_kid("k2")]), NOW + 31);
    let rotated = mint(Alg::Es256, Some("k2"), &claims());
    assert!(v.verify(&rotated, NOW + 31).is_ok());
    // The other VM loads what was published instead of fetching.
    assert_eq!(
        other
            .refetch(
                0,
                &proxy.store,
                VM + 1,
                (NOW + 32) * 1000,
                &mut proxy.events
            )
            .unwrap(),
        Refetch::Reloaded
    );
    assert!(other.verify(&rotated, NOW + 32).is_ok());
    // Periodic refresh, counted from the last publication.
    assert!(proxy.tick(&mut v, NOW + 330).is_empty());
    assert_eq!(proxy.tick(&mut v, NOW + 331).len(), 1);
}

#[test]
fn key_rotation_flushes_cached_tokens_of_that_provider() {
    let (mut v, mut proxy) = (verifier(remote_config()), Proxy::default());
    proxy.tick(&mut v, NOW);
    proxy.answer(&mut v, 200, &jwks_body(&[ec_with_kid("k1")]), NOW);
    let token = mint(Alg::Es256, Some("k1"), &claims());
    assert!(v.verify(&token, NOW).is_ok());
    assert_eq!(v.cached_tokens(), 1);
    // Same document again: same version, nothing reloaded, the cache stays.
    assert_eq!(proxy.tick(&mut v, NOW + 300).len(), 1);
    proxy.answer(&mut v, 200, &jwks_body(&[ec_with_kid("k1")]), NOW + 300);
    assert_eq!(
        proxy
            .events
            .0
            .iter()
            .filter(|e| matches!(e, Event::JwksLoaded { .. }))
            .count(),
        1
    );
    assert_eq!(v.cached_tokens(), 1);
    // k1 withdrawn: its tokens stop working at once, cached or not.
    assert_eq!(proxy.tick(&mut v, NOW + 600).len(), 1);
    proxy.answer(
        &mut v,
        200,
        &jwks_body(&[test_keys::ed25519_public_jwk()]),
        NOW + 600,
    );
    assert_eq!(proxy.loaded(), Some(1));
    assert_eq!(v.cached_tokens(), 0);
    assert_eq!(v.verify(&token, NOW + 1).err(), Some(JwtError::UnknownKid));
}

#[test]
fn inline_only_provider_never_asks_for_fetches() {
    let (mut v, mut proxy) = (verifier(all_keys_config()), Proxy::default());
    assert!(proxy.tick(&mut v, NOW).is_empty());
    assert_eq!(proxy.refetch(&mut v, NOW), Refetch::Refuse);
    assert!(
        proxy.store.keys().is_empty(),
        "no shared data for inline keys"
    );
}

#[test]
fn error_text_never_contains_token_or_key_material() {
    let mut v = verifier(all_keys_config());
    let token = mint(
        Alg::Hs256,
        Some("hmac"),
        &with(
            with(claims(), "sub", json!("\"quoted\\sub\"")),
            "aud",
            json!("x"),
        ),
    );
    let secret_sub = mint(
        Alg::Es256,
        Some("ec"),
        &with(claims(), "aud", json!("SECRET-AUD")),
    );
    for t in [token.as_str(), secret_sub.as_str(), "x.y.z"] {
        let err = v.verify(t, NOW).unwrap_err();
        let text = format!("{err} {err:?} {}", err.description());
        assert!(
            !text.contains(t.get(..10).unwrap_or(t))
                && !text.contains("SECRET")
                && !text.contains("quoted"),
            "{text}"
        );
        assert!(err
            .description()
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'));
        assert_eq!((err.status(), err.rfc6750_error()), (401, "invalid_token"));
    }
}

#[test]
fn a_kidless_forgery_buys_at_most_three_signature_checks() {
    // Five HMAC keys without kid; the token is signed with none of them.
    let keys: Vec<Value> = (1u8..=5)
        .map(|i| json!({"kty": "oct", "k": b64url(&[i; 32])}))
        .collect();
    let mut v = verifier(
        json!({"providers": [{"issuer": ISS, "audiences": ["api"], "jwks": {"keys": keys}}]}),
    );
    let forged = mint_with(
        Alg::Hs256,
        Signer::Other,
        &json!({"alg": "HS256"}),
        &claims(),
    );
    let before = token::signature_checks();
    assert_eq!(code(&mut v, &forged), "invalid_signature");
    assert_eq!(token::signature_checks() - before, MAX_KIDLESS_ATTEMPTS);
}

/// RFC 7515 Appendix A.4 (ES512, P-521 key of A.4.1): the signature step accepts the RFC bytes
/// with the RFC key, refuses them with another P-521 key, and never tries a key of another curve.
/// Its payload ("Payload") is no JWT: the full path refuses it before any key is consulted.
#[test]
fn rfc7515_appendix_a4_es512_passes_the_signature_step() {
    let token = test_keys::RFC7515_A4_ES512;
    let config = |jwk: Value| json!({"providers": [{"issuer": "joe", "jwks": {"keys": [jwk]}}]});
    let parsed = ParsedToken::parse(token).unwrap();
    assert_eq!(parsed.alg(), Alg::Es512);
    let v = verifier(config(test_keys::ec521_public_jwk()));
    assert!(v.check_signature(0, &parsed).is_ok());
    let w = verifier(config(test_keys::other_ec521_public_jwk()));
    assert_eq!(
        w.check_signature(0, &parsed).err(),
        Some(JwtError::InvalidSignature)
    );
    for (jwk, family) in [
        (test_keys::ec_public_jwk(), KeyFamily::EcP256),
        (test_keys::ec384_public_jwk(), KeyFamily::EcP384),
    ] {
        let before = token::signature_checks();
        assert_eq!(
            verifier(config(jwk)).check_signature(0, &parsed).err(),
            Some(JwtError::KeyTypeMismatch {
                alg: Alg::Es512,
                key: family
            })
        );
        assert_eq!(token::signature_checks(), before);
    }
    let mut full = verifier(all_keys_config());
    assert_eq!(
        full.verify(token, NOW).err(),
        Some(JwtError::Malformed(Malformed::Claims))
    );
}

/// A token whose `kid` names a key of another curve is refused as `key_type_mismatch` without
/// any signature check, whatever curve the token was really signed on; without `kid` the same.
#[test]
fn wrong_curve_for_the_kid_is_a_key_type_mismatch() {
    let mut v = verifier(all_keys_config());
    let ecdsa = [Alg::Es256, Alg::Es384, Alg::Es512];
    for alg in ecdsa {
        for other in ecdsa.into_iter().filter(|a| *a != alg) {
            let token = mint(alg, Some(kid_for(other)), &claims());
            let before = token::signature_checks();
            assert_eq!(
                v.verify(&token, NOW).err(),
                Some(JwtError::KeyTypeMismatch {
                    alg,
                    key: other.family()
                }),
                "{alg} token, {other} key"
            );
            assert_eq!(token::signature_checks(), before, "{alg} / {other}");
        }
        // HMAC aimed at an EC key of any curve is still algorithm confusion.
        assert_eq!(
            code(&mut v, &mint(Alg::Hs256, Some(kid_for(alg)), &claims())),
            "algorithm_confusion"
        );
    }
    // The signature of one curve relabelled as another algorithm: refused (no key fits).
    let es384 = mint(Alg::Es384, Some("ec384"), &claims());
    let relabelled = mint_with(
        Alg::Es512,
        Signer::Rfc,
        &json!({"alg": "ES512", "kid": "ec384"}),
        &claims(),
    );
    assert_eq!(code(&mut v, &relabelled), "key_type_mismatch");
    let sig384 = es384.rsplit('.').next().unwrap_or_default();
    let es512 = mint(Alg::Es512, Some("ec521"), &claims());
    assert_eq!(
        code(&mut v, &with_segment(&es512, 2, sig384)),
        "invalid_signature"
    );
    // Without kid: only P-256 keys in the set.
    let mut only_p256 = verifier(
        json!({"providers": [{"issuer": ISS, "jwks": {"keys": [test_keys::ec_public_jwk()]}}]}),
    );
    for alg in [Alg::Es384, Alg::Es512] {
        assert_eq!(
            only_p256.verify(&mint(alg, None, &claims()), NOW).err(),
            Some(JwtError::KeyTypeMismatch {
                alg,
                key: KeyFamily::EcP256
            })
        );
    }
}

#[test]
fn es384_and_es512_follow_the_allow_list_and_jwk_alg_pins() {
    let mut only_384 = verifier(
        json!({"providers": [{"issuer": ISS, "algorithms": ["ES384"],
        "jwks": {"keys": [test_keys::ec384_public_jwk()]}}]}),
    );
    assert!(only_384
        .verify(&mint(Alg::Es384, None, &claims()), NOW)
        .is_ok());
    assert_eq!(
        code(&mut only_384, &mint(Alg::Es512, None, &claims())),
        "alg_not_allowed"
    );
    assert_eq!(
        code(&mut only_384, &mint(Alg::Es256, None, &claims())),
        "alg_not_allowed"
    );

    let mut pinned = test_keys::ec521_public_jwk();
    pinned["alg"] = json!("ES512");
    pinned["kid"] = json!("k");
    let mut v = verifier(json!({"providers": [{"issuer": ISS, "jwks": {"keys": [pinned]}}]}));
    assert!(v
        .verify(&mint(Alg::Es512, Some("k"), &claims()), NOW)
        .is_ok());
    assert_eq!(
        code(&mut v, &mint(Alg::Es384, Some("k"), &claims())),
        "key_type_mismatch"
    );
}

#[test]
fn remote_jwks_serves_p384_and_p521_keys() {
    let mut v = verifier(remote_config());
    let mut proxy = Proxy::default();
    assert_eq!(proxy.tick(&mut v, NOW).len(), 1);
    let mut k384 = test_keys::ec384_public_jwk();
    k384["kid"] = json!("r384");
    let mut k521 = test_keys::ec521_public_jwk();
    k521["kid"] = json!("r521");
    // Unusable neighbours are skipped, as before: an X25519 key and a secp256k1 key.
    let x25519 = json!({"kty": "OKP", "crv": "X25519", "x": b64url(&[9; 32]), "kid": "x"});
    let k1 = json!({"kty": "EC", "crv": "secp256k1", "x": b64url(&[1; 32]), "y": b64url(&[2; 32])});
    proxy.answer(&mut v, 200, &jwks_body(&[k384, x25519, k521, k1]), NOW);
    assert_eq!(proxy.loaded(), Some(2));
    assert!(v
        .verify(&mint(Alg::Es384, Some("r384"), &claims()), NOW)
        .is_ok());
    assert!(v
        .verify(&mint(Alg::Es512, Some("r521"), &claims()), NOW)
        .is_ok());
    assert_eq!(
        code(&mut v, &mint(Alg::Es512, Some("r384"), &claims())),
        "key_type_mismatch"
    );
}

// --- verified_by: envoy_jwt_authn -------------------------------------------------------------

fn jwt_authn_config(extra: Value) -> Value {
    let mut p = json!({"issuer": ISS, "audiences": ["api"], "verified_by": "envoy_jwt_authn",
                       "forward_claims": {"tenant": "x-tenant"}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        p[k] = v.clone();
    }
    json!({"providers": [p]})
}

/// Dynamic metadata with `payload` under `key` in jwt_authn's namespace, as Envoy serializes it.
fn jwt_authn_metadata(key: &str, payload: &Value) -> Vec<u8> {
    let mut ns = serde_json::Map::new();
    ns.insert(key.to_owned(), payload.clone());
    crate::pbstruct::encode::metadata(crate::jwt::JWT_AUTHN_NAMESPACE, &ns)
}

/// A token no key of ours signed: in this mode, the signature is jwt_authn's business.
fn unsigned_here(c: &Value) -> String {
    with_segment(&mint(Alg::Es256, Some("k"), c), 2, &b64url(&[7; 64]))
}

#[test]
fn jwt_authn_payload_in_metadata_verifies_the_token_and_the_rules_still_apply() {
    let mut v = verifier(jwt_authn_config(json!({})));
    let token = unsigned_here(&claims());
    let meta = jwt_authn_metadata(ISS, &claims());
    let before = token::signature_checks();
    let ok = v.verify_with(&token, Some(&meta), NOW).unwrap();
    assert_eq!(
        token::signature_checks(),
        before,
        "no signature computed here"
    );
    assert_eq!((ok.subject.as_str(), ok.issuer.as_str()), ("user-1", ISS));
    assert_eq!(
        ok.forward_headers,
        vec![("x-tenant".to_owned(), "acme".to_owned())]
    );
    // Not cached: the same token without metadata on a later request is refused.
    assert_eq!(v.cached_tokens(), 0);
    assert_eq!(
        v.verify(&token, NOW).unwrap_err(),
        JwtError::NotVerifiedByJwtAuthn
    );

    // apiguard's own rules, on a payload jwt_authn accepted.
    let cases = [
        (
            with(claims(), "exp", json!(NOW + 7200)),
            "token_lifetime_too_long",
        ),
        (with(claims(), "exp", json!(NOW - 61)), "token_expired"),
        (
            with(claims(), "token_use", json!("refresh")),
            "refresh_token_not_allowed",
        ),
        (with(claims(), "aud", json!("other")), "audience_mismatch"),
        (with(claims(), "sub", json!(" padded")), "invalid_sub"),
        (
            with(claims(), "tenant", json!({"o": 1})),
            "unforwardable_claim",
        ),
    ];
    for (c, want) in cases {
        let meta = jwt_authn_metadata(ISS, &c);
        let got = v.verify_with(&unsigned_here(&c), Some(&meta), NOW);
        assert_eq!(got.err().map(|e| e.code()), Some(want), "{c}");
    }
}

#[test]
fn jwt_authn_metadata_must_be_there_and_be_this_tokens() {
    let mut v = verifier(jwt_authn_config(json!({})));
    let token = unsigned_here(&claims());
    let missing = Err(JwtError::NotVerifiedByJwtAuthn);
    // Absent, empty, under another key, or not a Struct at all.
    assert_eq!(v.verify_with(&token, None, NOW).map(|_| ()), missing);
    assert_eq!(v.verify_with(&token, Some(&[]), NOW).map(|_| ()), missing);
    let other_key = jwt_authn_metadata("https://other.example", &claims());
    assert_eq!(
        v.verify_with(&token, Some(&other_key), NOW).map(|_| ()),
        missing
    );
    assert_eq!(
        v.verify_with(&token, Some(b"{\"sub\":1}"), NOW).map(|_| ()),
        missing
    );

    // The metadata of another token (an attacker's valid token beside a forged one).
    for (claim, value) in [
        ("sub", json!("admin")),
        ("tenant", json!("other")),
        ("extra", json!(1)),
    ] {
        let meta = jwt_authn_metadata(ISS, &with(claims(), claim, value));
        assert_eq!(
            v.verify_with(&token, Some(&meta), NOW).map(|_| ()),
            Err(JwtError::JwtAuthnMismatch),
            "{claim}"
        );
    }
    // A claim the metadata has and the token lacks.
    let mut fewer = claims();
    fewer.as_object_mut().unwrap().remove("tenant");
    let meta = jwt_authn_metadata(ISS, &claims());
    assert_eq!(
        v.verify_with(&unsigned_here(&fewer), Some(&meta), NOW)
            .map(|_| ()),
        Err(JwtError::JwtAuthnMismatch)
    );
}

#[test]
fn payload_in_metadata_names_the_key() {
    let mut v = verifier(jwt_authn_config(
        json!({"payload_in_metadata": "my_payload"}),
    ));
    let token = unsigned_here(&claims());
    let at_issuer = jwt_authn_metadata(ISS, &claims());
    assert_eq!(
        v.verify_with(&token, Some(&at_issuer), NOW).map(|_| ()),
        Err(JwtError::NotVerifiedByJwtAuthn)
    );
    let named = jwt_authn_metadata("my_payload", &claims());
    assert!(v.verify_with(&token, Some(&named), NOW).is_ok());
}

#[test]
fn mixed_providers_keep_their_own_verification() {
    let config = json!({"providers": [
        {"issuer": ISS, "verified_by": "envoy_jwt_authn"},
        {"issuer": "https://keys.example", "jwks": {"keys": [test_keys::ec_public_jwk()]}}
    ]});
    let s = settings(config.clone());
    let mut v = verifier(config);
    let mesh = unsigned_here(&claims());
    let own_claims = with(claims(), "iss", json!("https://keys.example"));
    let own = mint(Alg::Es256, None, &own_claims);
    assert!(s.wants_jwt_authn_metadata(&mesh));
    assert!(!s.wants_jwt_authn_metadata(&own));
    assert!(!s.wants_jwt_authn_metadata("not-a-token"));
    assert!(v.verify(&own, NOW).is_ok());
    // Metadata that vouches for the other provider's payload does not replace its signature.
    let forged = with_segment(&own, 2, &b64url(&[7; 64]));
    let meta = jwt_authn_metadata("https://keys.example", &own_claims);
    assert_eq!(
        v.verify_with(&forged, Some(&meta), NOW).unwrap_err(),
        JwtError::InvalidSignature
    );
    let only_keys = settings(all_keys_config());
    assert!(!only_keys.wants_jwt_authn_metadata(&mesh));
    let only_mesh = settings(jwt_authn_config(json!({})));
    assert!(only_mesh.wants_jwt_authn_metadata("anything"));
}

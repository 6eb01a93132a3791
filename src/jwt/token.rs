//! Untrusted compact JWS → signature-checked claims. The types encode trust: a [`ParsedToken`]
//! and its [`UnverifiedClaims`] are attacker data (only the issuer may be peeked at, to pick the
//! provider). [`UnverifiedClaims::screen`] runs the claim rules on them before any signature is
//! checked; those rules can only refuse, and what passes is a [`ScreenedClaims`], still opaque.
//! [`VerifiedClaims`] can only be built from that with a [`SignatureChecked`] proof, which only
//! [`ParsedToken::check_signature`] creates.

#[cfg(test)]
use std::cell::Cell;

use jwt_compact::alg::{Ed25519, Hs256, Hs384, Hs384Key, Hs512, Hs512Key, RsaPublicKey};
use jwt_compact::{Algorithm, AlgorithmSignature, Claims, ParseError, UntrustedToken};
use rsa::pss::Pss;
use serde_json::{Map, Value};
use sha2::digest::DynDigest;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::alg::{is_none_alg, Alg};
use super::claims::{self, TimeClaims};
use super::config::Provider;
use super::ecdsa::{Es384, Es512};
use super::error::{JwtError, Malformed};
use super::jwks::{KeyMaterial, VerifyKey};
use super::jwt_authn::{self, Want};
use super::rsa_pkcs1::Pkcs1Hash;

type HeaderFields = Map<String, Value>;

/// A compact JWS whose header passed the structural checks; nothing in it is trusted yet.
pub struct ParsedToken<'a> {
    inner: UntrustedToken<'a, HeaderFields>,
    alg: Alg,
    signing_input: &'a [u8],
}

impl<'a> ParsedToken<'a> {
    /// Decodes the three segments and checks the header: `alg` must be a supported algorithm
    /// (never `none`) and no `crit` extension may be present (RFC 7515 §4.1.11: we understand
    /// none, so a token that has any must be refused).
    pub fn parse(token: &'a str) -> Result<Self, JwtError> {
        let inner = UntrustedToken::<HeaderFields>::try_from(token).map_err(|err| {
            JwtError::Malformed(match err {
                ParseError::InvalidBase64Encoding => Malformed::Base64,
                ParseError::MalformedHeader(_) => Malformed::Header,
                ParseError::UnsupportedContentType(_) => Malformed::ContentType,
                _ => Malformed::Structure,
            })
        })?;
        if is_none_alg(inner.algorithm()) {
            return Err(JwtError::AlgNone);
        }
        if inner.header().other_fields.contains_key("crit") {
            return Err(JwtError::CritHeader);
        }
        let alg = Alg::from_name(inner.algorithm()).ok_or(JwtError::AlgNotAllowed { alg: None })?;
        let signing_input = token
            .rsplit_once('.')
            .map(|(input, _)| input.as_bytes())
            .ok_or(JwtError::Malformed(Malformed::Structure))?;
        Ok(Self {
            inner,
            alg,
            signing_input,
        })
    }

    /// The header's `alg`, already known to be a supported algorithm. It only says which
    /// algorithm to try; whether that is allowed is decided by the provider and the key.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.inner.header().key_id.as_deref()
    }

    /// The header's `typ`.
    pub fn header_typ(&self) -> Option<&str> {
        self.inner.header().token_type.as_deref()
    }

    /// The claims, not yet covered by a signature check.
    pub fn unverified_claims(&self) -> Result<UnverifiedClaims, JwtError> {
        self.inner
            .deserialize_claims_unchecked::<Map<String, Value>>()
            .map(UnverifiedClaims)
            .map_err(|_| JwtError::Malformed(Malformed::Claims))
    }

    /// Verifies the signature over the signing input with `key`, using the token's `alg` only if
    /// `key` supports it (so an RSA key is never used as an HMAC secret).
    pub fn check_signature(&self, key: &VerifyKey) -> Result<SignatureChecked, JwtError> {
        if key.supports(self.alg)
            && signature_valid(
                key,
                self.alg,
                self.signing_input,
                self.inner.signature_bytes(),
            )
        {
            Ok(SignatureChecked(()))
        } else {
            Err(JwtError::InvalidSignature)
        }
    }
}

/// Proof that a token's signature was checked: against a trusted key, or by Envoy's jwt_authn
/// filter, whose verified payload is this token's ([`UnverifiedClaims::check_vouched`]).
#[derive(Debug)]
pub struct SignatureChecked(());

/// Claims from a token whose signature has not been checked.
pub struct UnverifiedClaims(Claims<Map<String, Value>>);

impl UnverifiedClaims {
    /// The `iss` claim: used only to choose which provider's keys to verify with.
    pub fn issuer_hint(&self) -> Option<&str> {
        self.0.custom.get("iss").and_then(Value::as_str)
    }

    /// The proof for a provider verified by Envoy's jwt_authn filter: `vouched` is the payload
    /// the filter verified (a serialized Struct from the request's dynamic metadata), and these
    /// claims must be it, claim for claim. The time claims were read as whole seconds, so the
    /// payload's are too.
    pub fn check_vouched(&self, vouched: &[u8]) -> Result<SignatureChecked, JwtError> {
        let claims = &self.0;
        let exp = claims.expiration.map(|t| t.timestamp());
        let nbf = claims.not_before.map(|t| t.timestamp());
        let iat = claims.issued_at.map(|t| t.timestamp());
        let count = claims
            .custom
            .len()
            .saturating_add([exp, nbf, iat].iter().flatten().count());
        let want = |key: &str| match key {
            "exp" => exp.map(Want::Seconds),
            "nbf" => nbf.map(Want::Seconds),
            "iat" => iat.map(Want::Seconds),
            _ => claims.custom.get(key).map(Want::Json),
        };
        if jwt_authn::payload_is(vouched, count, want) {
            Ok(SignatureChecked(()))
        } else {
            Err(JwtError::JwtAuthnMismatch)
        }
    }

    /// Applies the claim rules ([`claims::check_rules`]) before the signature is checked, so a
    /// token its own claims condemn costs no signature verification. The rules only refuse:
    /// what passes stays untrusted until [`ScreenedClaims::into_verified`] gets a proof.
    /// `header_typ` is the (equally unverified) header `typ`, for the refresh-token markers.
    pub fn screen(
        self,
        provider: &Provider,
        header_typ: Option<&str>,
        now: i64,
    ) -> Result<ScreenedClaims, JwtError> {
        let claims = self.0;
        let times = TimeClaims {
            exp: claims.expiration.map(|t| t.timestamp()),
            nbf: claims.not_before.map(|t| t.timestamp()),
            iat: claims.issued_at.map(|t| t.timestamp()),
        };
        let subject = claims::check_rules(provider, header_typ, times, &claims.custom, now)?;
        Ok(ScreenedClaims {
            times,
            subject: subject.to_owned(),
            other: claims.custom,
        })
    }
}

/// Claims that passed the claim rules, signature not yet checked: nothing can be read from them.
pub struct ScreenedClaims {
    times: TimeClaims,
    subject: String,
    other: Map<String, Value>,
}

impl ScreenedClaims {
    pub fn into_verified(self, _proof: SignatureChecked) -> VerifiedClaims {
        VerifiedClaims {
            times: self.times,
            subject: self.subject,
            other: self.other,
        }
    }
}

/// Claims that passed the claim rules and are covered by a valid signature.
#[derive(Debug)]
pub struct VerifiedClaims {
    pub times: TimeClaims,
    /// `sub`, as checked by the rules.
    pub subject: String,
    /// Every claim other than `exp`, `nbf` and `iat`.
    pub other: Map<String, Value>,
}

#[cfg(test)]
thread_local! {
    static SIGNATURE_CHECKS: Cell<usize> = const { Cell::new(0) };
}

/// Test-only: how many signature verifications this thread has computed.
#[cfg(test)]
pub fn signature_checks() -> usize {
    SIGNATURE_CHECKS.with(Cell::get)
}

/// Dispatches to jwt-compact's verifier for (key, alg). HMAC comparison is jwt-compact's
/// constant-time `CtOutput` equality.
fn signature_valid(key: &VerifyKey, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
    #[cfg(test)]
    SIGNATURE_CHECKS.with(|n| n.set(n.get() + 1));
    match (&key.material, alg) {
        (KeyMaterial::Hmac(k), Alg::Hs256) => verify(&Hs256, k, input, signature),
        (KeyMaterial::Hmac(k), Alg::Hs384) => verify(&Hs384, &Hs384Key::new(k), input, signature),
        (KeyMaterial::Hmac(k), Alg::Hs512) => verify(&Hs512, &Hs512Key::new(k), input, signature),
        (KeyMaterial::Rsa(k), Alg::Rs256) => k.pkcs1.verify(Pkcs1Hash::Sha256, input, signature),
        (KeyMaterial::Rsa(k), Alg::Rs384) => k.pkcs1.verify(Pkcs1Hash::Sha384, input, signature),
        (KeyMaterial::Rsa(k), Alg::Rs512) => k.pkcs1.verify(Pkcs1Hash::Sha512, input, signature),
        (KeyMaterial::Rsa(k), Alg::Ps256) => pss_valid::<Sha256>(&k.key, input, signature),
        (KeyMaterial::Rsa(k), Alg::Ps384) => pss_valid::<Sha384>(&k.key, input, signature),
        (KeyMaterial::Rsa(k), Alg::Ps512) => pss_valid::<Sha512>(&k.key, input, signature),
        (KeyMaterial::Es256(k), Alg::Es256) => k.verify(input, signature),
        (KeyMaterial::Es384(k), Alg::Es384) => verify(&Es384, k, input, signature),
        (KeyMaterial::Es512(k), Alg::Es512) => verify(&Es512, k, input, signature),
        (KeyMaterial::Ed25519(k), Alg::EdDsa) => verify(&Ed25519, k, input, signature),
        _ => false,
    }
}

/// RSASSA-PSS with the hash's length as salt length (RFC 7518 §3.5), through the rsa crate (which
/// checks the signature's length and range).
fn pss_valid<D>(key: &RsaPublicKey, input: &[u8], signature: &[u8]) -> bool
where
    D: Digest + DynDigest + Send + Sync + 'static,
{
    let padding = Pss::new_with_salt::<D>(<D as Digest>::output_size());
    key.verify(padding, &D::digest(input), signature).is_ok()
}

fn verify<A: Algorithm>(alg: &A, key: &A::VerifyingKey, input: &[u8], signature: &[u8]) -> bool {
    // Length first: some signature types' `try_from_slice` would panic on a wrong length.
    if A::Signature::LENGTH.is_some_and(|len| len.get() != signature.len()) {
        return false;
    }
    match A::Signature::try_from_slice(signature) {
        Ok(signature) => alg.verify_signature(&signature, key, input),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::jwt::jwks::{parse_jwk, KeySource};
    use crate::jwt::test_keys::{self, b64url, with_segment};
    use serde_json::json;

    fn key(jwk: Value, source: KeySource) -> VerifyKey {
        match jwk {
            Value::Object(m) => parse_jwk(&m, source).unwrap(),
            _ => unreachable!(),
        }
    }

    fn sig_ok(token: &str, key: &VerifyKey) -> bool {
        ParsedToken::parse(token)
            .unwrap()
            .check_signature(key)
            .is_ok()
    }

    #[test]
    fn rsa_signatures_verify_only_as_their_algorithm() {
        let rsa = key(test_keys::rsa_public_jwk(), KeySource::Remote);
        let input = b"header.payload";
        let rsa_algs = [
            Alg::Rs256,
            Alg::Rs384,
            Alg::Rs512,
            Alg::Ps256,
            Alg::Ps384,
            Alg::Ps512,
        ];
        for alg in rsa_algs {
            let token = test_keys::mint(alg, None, &json!({"sub": "s"}));
            let (signing_input, sig) = token.rsplit_once('.').unwrap();
            let sig = crate::jwt::jwks::b64url_decode(sig).unwrap();
            for other in rsa_algs {
                assert_eq!(
                    signature_valid(&rsa, other, signing_input.as_bytes(), &sig),
                    other == alg,
                    "{alg} as {other}"
                );
            }
            assert!(!signature_valid(&rsa, alg, input, &sig));
            let mut flipped = sig.clone();
            flipped[100] ^= 0x20;
            assert!(!signature_valid(
                &rsa,
                alg,
                signing_input.as_bytes(),
                &flipped
            ));
        }
    }

    #[test]
    fn rfc7515_a1_hs256_signature_verifies() {
        let parsed = ParsedToken::parse(test_keys::RFC7515_A1_HS256).unwrap();
        assert_eq!(parsed.alg(), Alg::Hs256);
        assert_eq!(parsed.header_typ(), Some("JWT"));
        assert!(parsed
            .check_signature(&key(test_keys::hmac_jwk(), KeySource::Inline))
            .is_ok());
        let claims = parsed.unverified_claims().unwrap();
        assert_eq!(claims.issuer_hint(), Some("joe"));
        // The RFC payload has no sub: the claim rules refuse it (exp is read: see Expired).
        let p = provider("joe");
        let exp = test_keys::RFC7515_EXP;
        assert_eq!(
            claims.screen(&p, parsed.header_typ(), exp - 100).err(),
            Some(JwtError::MissingSub)
        );
        let claims = parsed.unverified_claims().unwrap();
        assert_eq!(
            claims.screen(&p, parsed.header_typ(), exp + 60).err(),
            Some(JwtError::Expired { exp, now: exp + 60 })
        );
    }

    fn provider(issuer: &str) -> Provider {
        Provider::for_tests(issuer)
    }

    #[test]
    fn screened_claims_become_verified_claims_with_a_proof() {
        let now = 1_700_000_000;
        let token = test_keys::mint(
            Alg::Hs256,
            None,
            &json!({"iss": "joe", "sub": "u", "iat": now, "exp": now + 60, "is_root": true}),
        );
        let parsed = ParsedToken::parse(&token).unwrap();
        let screened = parsed
            .unverified_claims()
            .unwrap()
            .screen(&provider("joe"), parsed.header_typ(), now)
            .unwrap();
        let proof = parsed
            .check_signature(&key(test_keys::hmac_jwk(), KeySource::Inline))
            .unwrap();
        let verified = screened.into_verified(proof);
        assert_eq!(
            verified.times,
            TimeClaims {
                exp: Some(now + 60),
                nbf: None,
                iat: Some(now)
            }
        );
        assert_eq!(verified.subject, "u");
        assert_eq!(verified.other.get("is_root"), Some(&json!(true)));
    }

    #[test]
    fn rfc7515_a2_rs256_signature_verifies() {
        let rsa = key(test_keys::rsa_public_jwk(), KeySource::Remote);
        assert!(sig_ok(test_keys::RFC7515_A2_RS256, &rsa));
        assert!(!sig_ok(
            test_keys::RFC7515_A2_RS256,
            &key(test_keys::other_rsa_public_jwk(), KeySource::Remote)
        ));
    }

    #[test]
    fn rfc7515_a3_es256_signature_verifies() {
        assert!(sig_ok(
            test_keys::RFC7515_A3_ES256,
            &key(test_keys::ec_public_jwk(), KeySource::Remote)
        ));
        assert!(!sig_ok(
            test_keys::RFC7515_A3_ES256,
            &key(test_keys::other_ec_public_jwk(), KeySource::Remote)
        ));
    }

    #[test]
    fn rfc7515_a4_es512_signature_verifies() {
        let parsed = ParsedToken::parse(test_keys::RFC7515_A4_ES512).unwrap();
        assert_eq!(parsed.alg(), Alg::Es512);
        assert!(sig_ok(
            test_keys::RFC7515_A4_ES512,
            &key(test_keys::ec521_public_jwk(), KeySource::Remote)
        ));
        assert!(!sig_ok(
            test_keys::RFC7515_A4_ES512,
            &key(test_keys::other_ec521_public_jwk(), KeySource::Remote)
        ));
        // A P-384 or P-256 key never verifies it (the key does not support ES512).
        for jwk in [test_keys::ec384_public_jwk(), test_keys::ec_public_jwk()] {
            assert!(!sig_ok(
                test_keys::RFC7515_A4_ES512,
                &key(jwk, KeySource::Remote)
            ));
        }
    }

    /// RFC 6979 Appendix A.2.6 (P-384 key), "With SHA-384, message = 'sample'" and "'test'":
    /// deterministic ECDSA signatures that are valid ES384 signatures (RFC 7518 §3.4: ECDSA
    /// P-384 with SHA-384, `r || s`), checked through the verifier's own dispatch.
    #[test]
    fn rfc6979_a26_p384_sha384_signatures_verify_as_es384() {
        let k384 = key(test_keys::ec384_public_jwk(), KeySource::Remote);
        let sample = test_keys::unhex(test_keys::RFC6979_A26_SHA384_SAMPLE);
        let test = test_keys::unhex(test_keys::RFC6979_A26_SHA384_TEST);
        assert_eq!((sample.len(), test.len()), (96, 96));
        assert!(signature_valid(&k384, Alg::Es384, b"sample", &sample));
        assert!(signature_valid(&k384, Alg::Es384, b"test", &test));
        // Swapped messages, another algorithm, another key: refused.
        assert!(!signature_valid(&k384, Alg::Es384, b"test", &sample));
        assert!(!signature_valid(&k384, Alg::Es512, b"sample", &sample));
        assert!(!signature_valid(&k384, Alg::Es256, b"sample", &sample));
        let other = key(test_keys::other_ec384_public_jwk(), KeySource::Remote);
        assert!(!signature_valid(&other, Alg::Es384, b"sample", &sample));
        // Single-bit flips of the signature are refused (every 11th bit: P-384 is slow in test
        // builds).
        let mut sig = sample.clone();
        for bit in (0..sig.len() * 8).step_by(11) {
            sig[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !signature_valid(&k384, Alg::Es384, b"sample", &sig),
                "bit {bit}"
            );
            sig[bit / 8] ^= 1 << (bit % 8);
        }
        // Our deterministic signer reproduces the RFC signature over the same message.
        let signing = p384::ecdsa::SigningKey::from_slice(&test_keys::unhex(
            "6b9d3dad2e1b8c1c05b19875b6659f4de23c3b667bf297ba9aa47740787137d896d5724e4c70a825f872c9ea60d2edf5",
        ))
        .unwrap();
        assert_eq!(Es384.sign(&signing, b"sample").as_bytes().to_vec(), sample);
        // An ES384 JWS carrying it (signing input "sample" is not a JWS input): refused.
        let jws = format!(
            "{}.{}.{}",
            b64url(br#"{"alg":"ES384"}"#),
            b64url(b"sample"),
            b64url(&sample)
        );
        assert!(!sig_ok(&jws, &k384));
    }

    #[test]
    fn rfc8037_a4_a5_ed25519_signature_verifies() {
        // A.5: verification of the A.4 JWS with the A.2 public key. The payload is plain text,
        // so it verifies here but can never pass as claims.
        let parsed = ParsedToken::parse(test_keys::RFC8037_A4_JWS).unwrap();
        assert_eq!(parsed.alg(), Alg::EdDsa);
        assert!(parsed
            .check_signature(&key(test_keys::ed25519_public_jwk(), KeySource::Remote))
            .is_ok());
        assert!(matches!(
            parsed.unverified_claims(),
            Err(JwtError::Malformed(Malformed::Claims))
        ));
    }

    #[test]
    fn rfc_vectors_fail_under_every_single_bit_flip() {
        let cases = [
            (
                test_keys::RFC7515_A1_HS256,
                key(test_keys::hmac_jwk(), KeySource::Inline),
            ),
            (
                test_keys::RFC7515_A2_RS256,
                key(test_keys::rsa_public_jwk(), KeySource::Remote),
            ),
            (
                test_keys::RFC7515_A3_ES256,
                key(test_keys::ec_public_jwk(), KeySource::Remote),
            ),
            (
                test_keys::RFC8037_A4_JWS,
                key(test_keys::ed25519_public_jwk(), KeySource::Remote),
            ),
            (
                test_keys::RFC7515_A4_ES512,
                key(test_keys::ec521_public_jwk(), KeySource::Remote),
            ),
        ];
        for (token, key) in &cases {
            let parts: Vec<&str> = token.split('.').collect();
            // Every bit, except for RSA, P-384 and P-521 (slow in debug and wasm test builds):
            // every 13th bit; the property tests (`make fuzz`) flip every bit.
            let slow = [
                crate::jwt::alg::KeyFamily::Rsa,
                crate::jwt::alg::KeyFamily::EcP384,
                crate::jwt::alg::KeyFamily::EcP521,
            ];
            let step = if slow.contains(&key.family()) { 13 } else { 1 };
            for (index, part) in parts.iter().enumerate() {
                let mut bytes = crate::jwt::jwks::b64url_decode(part).unwrap();
                for bit in (0..bytes.len() * 8).step_by(step) {
                    bytes[bit / 8] ^= 1 << (bit % 8);
                    let mutated = with_segment(token, index, &b64url(&bytes));
                    bytes[bit / 8] ^= 1 << (bit % 8);
                    // Either the mutation breaks parsing, or the signature must fail.
                    if let Ok(parsed) = ParsedToken::parse(&mutated) {
                        assert!(
                            parsed.check_signature(key).is_err(),
                            "segment {index} bit {bit} of {token}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_length_signatures_are_refused_without_panicking() {
        for (token, key) in [
            (
                test_keys::RFC7515_A1_HS256,
                key(test_keys::hmac_jwk(), KeySource::Inline),
            ),
            (
                test_keys::RFC8037_A4_JWS,
                key(test_keys::ed25519_public_jwk(), KeySource::Remote),
            ),
            (
                test_keys::RFC7515_A3_ES256,
                key(test_keys::ec_public_jwk(), KeySource::Remote),
            ),
            (
                test_keys::RFC7515_A2_RS256,
                key(test_keys::rsa_public_jwk(), KeySource::Remote),
            ),
            (
                test_keys::RFC7515_A4_ES512,
                key(test_keys::ec521_public_jwk(), KeySource::Remote),
            ),
        ] {
            for sig in [
                "",
                "AA",
                &b64url(&[0u8; 64]),
                &b64url(&[1u8; 300]),
                &b64url(&[0u8; 96]),
                &b64url(&[0u8; 132]),
                &b64url(&[0xffu8; 132]),
            ] {
                assert!(!sig_ok(&with_segment(token, 2, sig), &key));
            }
        }
    }

    #[test]
    fn rsa_public_key_never_verifies_an_hmac_token() {
        // The classic confusion attack: HMAC over the input with the public key's bytes as secret.
        let rsa = key(test_keys::rsa_public_jwk(), KeySource::Inline);
        let forged = test_keys::mint(Alg::Hs256, None, &json!({"iss": "joe"}));
        assert!(!sig_ok(&forged, &rsa));
    }

    #[test]
    fn header_problems_have_distinct_errors() {
        let claims = b64url(br#"{"iss":"joe"}"#);
        let tok = |header: &str| {
            format!(
                "{}.{claims}.{}",
                b64url(header.as_bytes()),
                b64url(&[1; 32])
            )
        };
        let err = |t: &str| ParsedToken::parse(t).err();
        assert_eq!(err(&tok(r#"{"alg":"none"}"#)), Some(JwtError::AlgNone));
        assert_eq!(
            err(&format!("{}.{claims}.", b64url(br#"{"alg":"None"}"#))),
            Some(JwtError::AlgNone)
        );
        assert_eq!(
            err(&tok(r#"{"alg":"HS1"}"#)),
            Some(JwtError::AlgNotAllowed { alg: None })
        );
        assert_eq!(
            err(&tok(r#"{"alg":"hs256"}"#)),
            Some(JwtError::AlgNotAllowed { alg: None })
        );
        assert_eq!(
            err(&tok(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#)),
            Some(JwtError::CritHeader)
        );
        assert_eq!(
            err(&tok(r#"{"typ":"JWT"}"#)),
            Some(JwtError::Malformed(Malformed::Header))
        );
        assert_eq!(
            err(&tok(r#"{"alg":"HS256""#)),
            Some(JwtError::Malformed(Malformed::Header))
        );
        assert_eq!(
            err(&tok(r#"{"alg":"HS256","cty":"JWT"}"#)),
            Some(JwtError::Malformed(Malformed::ContentType))
        );
        assert_eq!(err("abc"), Some(JwtError::Malformed(Malformed::Structure)));
        assert_eq!(
            err("a.b.c.d"),
            Some(JwtError::Malformed(Malformed::Structure))
        );
        assert_eq!(
            err(&format!("{}.{claims}.a+b", b64url(br#"{"alg":"HS256"}"#))),
            Some(JwtError::Malformed(Malformed::Base64))
        );
        assert_eq!(
            err(&format!("{}=.{claims}.AA", b64url(br#"{"alg":"HS256"}"#))),
            Some(JwtError::Malformed(Malformed::Base64))
        );
        let not_json = format!("{}.{}.AA", b64url(br#"{"alg":"HS256"}"#), b64url(b"[1,2]"));
        assert!(matches!(
            ParsedToken::parse(&not_json).unwrap().unverified_claims(),
            Err(JwtError::Malformed(Malformed::Claims))
        ));
        let bad_exp = format!(
            "{}.{}.AA",
            b64url(br#"{"alg":"HS256"}"#),
            b64url(br#"{"exp":"soon"}"#)
        );
        assert!(matches!(
            ParsedToken::parse(&bad_exp).unwrap().unverified_claims(),
            Err(JwtError::Malformed(Malformed::Claims))
        ));
    }
}

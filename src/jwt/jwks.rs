//! JSON Web Keys (RFC 7517) → verification keys. We read the JWK members ourselves (instead of
//! deserializing jwt-compact's `JsonWebKey` straight from JSON) so that no error message can echo
//! a member's value: a bad `k` must never end up in a log line.

use std::borrow::Cow;
use std::fmt;

use jwt_compact::alg::{Ed25519, Hs256Key, RsaPublicKey};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::Algorithm;
use serde_json::{Map, Value};

use super::alg::{Alg, KeyFamily};
use super::ecdsa;
use super::es256::Es256Key;
use super::rsa_pkcs1::Pkcs1Key;

type Ed25519PublicKey = <Ed25519 as Algorithm>::VerifyingKey;

/// Most keys one JWKS may hold; more is a misconfiguration or an attack on CPU (tokens without
/// `kid` are tried against every matching key).
pub const MAX_KEYS_PER_SET: usize = 64;
/// RSA moduli below this are refused (NIST SP 800-131A; RFC 7518 §3.3 requires ≥ 2048).
const MIN_RSA_BITS: usize = 2048;
/// Longest `kid` we keep.
const MAX_KID_BYTES: usize = 256;

/// Where a JWK comes from: inline keys are the operator's and any problem is a configuration
/// error; remote keys are skipped one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Inline,
    Remote,
}

/// The public (or, for HMAC, secret) material of one key.
pub(crate) enum KeyMaterial {
    /// Kept in jwt-compact's key type: it zeroizes on drop and redacts itself in `Debug`.
    Hmac(Hs256Key),
    Rsa(RsaKey),
    /// With its precomputed table (about 52 KiB).
    Es256(Es256Key),
    Es384(p384::ecdsa::VerifyingKey),
    Es512(p521::ecdsa::VerifyingKey),
    Ed25519(Ed25519PublicKey),
}

/// An RSA public key: the `rsa` crate's for PS256/384/512, and the precomputed form RS256/384/512
/// verify with.
pub(crate) struct RsaKey {
    pub(crate) key: RsaPublicKey,
    pub(crate) pkcs1: Pkcs1Key,
}

/// One usable verification key.
pub struct VerifyKey {
    pub(crate) kid: Option<String>,
    /// JWK `alg`: when set, the key verifies that algorithm only (RFC 7517 §4.4).
    pub(crate) alg: Option<Alg>,
    pub(crate) material: KeyMaterial,
    /// Length of an HMAC secret / bits of an RSA modulus, for the strength rules.
    pub(crate) size: usize,
}

impl fmt::Debug for VerifyKey {
    // Key material is never printed: HMAC keys are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family())
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    pub fn family(&self) -> KeyFamily {
        match self.material {
            KeyMaterial::Hmac(_) => KeyFamily::Hmac,
            KeyMaterial::Rsa(_) => KeyFamily::Rsa,
            KeyMaterial::Es256(_) => KeyFamily::EcP256,
            KeyMaterial::Es384(_) => KeyFamily::EcP384,
            KeyMaterial::Es512(_) => KeyFamily::EcP521,
            KeyMaterial::Ed25519(_) => KeyFamily::Ed25519,
        }
    }

    /// Whether this key may verify `alg`: same family, the JWK `alg` (if any) agrees, and an HMAC
    /// secret is long enough for the hash (RFC 7518 §3.2).
    pub fn supports(&self, alg: Alg) -> bool {
        if alg.family() != self.family() || self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        self.family() != KeyFamily::Hmac || self.size >= alg.min_hmac_key_bytes()
    }

    /// The algorithms this key can verify.
    pub fn algorithms(&self) -> impl Iterator<Item = Alg> + '_ {
        Alg::ALL.into_iter().filter(|alg| self.supports(*alg))
    }
}

/// What is wrong with one JWK: the member it is about and a message without any value in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwkProblem {
    /// The JWK member (`kty`, `n`, ...) or empty for the whole key.
    pub field: &'static str,
    pub message: Cow<'static, str>,
}

fn problem(field: &'static str, message: impl Into<Cow<'static, str>>) -> JwkProblem {
    JwkProblem {
        field,
        message: message.into(),
    }
}

fn opt_str<'a>(
    jwk: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, JwkProblem> {
    match jwk.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(problem(field, "must be a string")),
    }
}

fn req_str<'a>(jwk: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, JwkProblem> {
    opt_str(jwk, field)?.ok_or_else(|| problem(field, "is required"))
}

fn req_bytes(jwk: &Map<String, Value>, field: &'static str) -> Result<Vec<u8>, JwkProblem> {
    let text = req_str(jwk, field)?;
    let bytes = b64url_decode(text).ok_or_else(|| problem(field, "is not unpadded base64url"))?;
    if bytes.is_empty() {
        return Err(problem(field, "is empty"));
    }
    Ok(bytes)
}

/// The `crv` values of the `EC` keys we verify with, one per ECDSA algorithm.
const EC_CURVES: [&str; 3] = ["P-256", "P-384", "P-521"];

/// What an inline JWK is for, judged from its type members alone (before any key material is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A signature key of a family we verify with (`kty`/`crv` supported, `use` absent or `sig`,
    /// `key_ops` absent or with `verify`, `alg` absent or one of ours): it must parse.
    Signature { family: KeyFamily, alg: Option<Alg> },
    /// Not a key we could ever verify with (encryption key, other curve or key type, an `alg`
    /// that is not one of ours): skipped without reading it any further.
    Other,
}

impl Purpose {
    /// Whether a signature key of this purpose could verify one of `algorithms`.
    pub fn serves(self, algorithms: &[Alg]) -> bool {
        match self {
            Self::Signature { family, alg } => algorithms
                .iter()
                .any(|a| a.family() == family && alg.map_or(true, |pinned| pinned == *a)),
            Self::Other => false,
        }
    }
}

/// Sorts a JWK into [`Purpose::Signature`] or [`Purpose::Other`]. Errors only for members whose
/// *shape* is wrong (a `kty`, `crv`, `use` or `alg` that is not a string, a missing `kty`, an EC
/// or OKP key without `crv`, a `key_ops` that is not an array): such a key cannot be classified.
pub fn classify(jwk: &Map<String, Value>) -> Result<Purpose, JwkProblem> {
    let kty = req_str(jwk, "kty")?;
    if opt_str(jwk, "use")?.is_some_and(|usage| usage != "sig") {
        return Ok(Purpose::Other);
    }
    if let Some(ops) = jwk.get("key_ops") {
        let ops = ops
            .as_array()
            .ok_or_else(|| problem("key_ops", "must be an array of strings"))?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(Purpose::Other);
        }
    }
    let family = match kty {
        "oct" => KeyFamily::Hmac,
        "RSA" => KeyFamily::Rsa,
        "EC" => match req_str(jwk, "crv")? {
            "P-256" => KeyFamily::EcP256,
            "P-384" => KeyFamily::EcP384,
            "P-521" => KeyFamily::EcP521,
            _ => return Ok(Purpose::Other),
        },
        "OKP" => match req_str(jwk, "crv")? {
            "Ed25519" => KeyFamily::Ed25519,
            _ => return Ok(Purpose::Other),
        },
        _ => return Ok(Purpose::Other),
    };
    let alg = match opt_str(jwk, "alg")? {
        None => None,
        Some(name) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            // An algorithm we do not verify (RSA-OAEP, ES256K, ...): the key is for something else.
            None => return Ok(Purpose::Other),
        },
    };
    Ok(Purpose::Signature { family, alg })
}

/// Private members of RSA/EC/OKP keys (RFC 7518 §6.2.2, §6.3.2, RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Parses one JWK object. Unknown members are ignored, as RFC 7517 §4 requires.
pub fn parse_jwk(jwk: &Map<String, Value>, source: KeySource) -> Result<VerifyKey, JwkProblem> {
    let kty = req_str(jwk, "kty")?;
    let kid = opt_str(jwk, "kid")?;
    if kid.is_some_and(|k| k.is_empty() || k.len() > MAX_KID_BYTES) {
        return Err(problem("kid", "must be 1 to 256 bytes"));
    }
    if let Some(usage) = opt_str(jwk, "use")? {
        if usage != "sig" {
            return Err(problem("use", "is not sig: the key is not for signatures"));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return Err(problem("key_ops", "does not include verify"));
        }
    }
    let alg = match opt_str(jwk, "alg")? {
        None => None,
        Some(name) => Some(
            Alg::from_name(name)
                .ok_or_else(|| problem("alg", format!("is not one of {}", Alg::NAMES)))?,
        ),
    };

    let (material, size) = match kty {
        "oct" => {
            if source == KeySource::Remote {
                // A shared secret served over HTTP is no secret; only the operator may configure one.
                return Err(problem("kty", "oct keys are accepted inline only"));
            }
            let secret = req_bytes(jwk, "k")?;
            if secret.len() < 32 {
                return Err(problem(
                    "k",
                    "an HMAC secret must be at least 32 bytes (RFC 7518 section 3.2)",
                ));
            }
            let len = secret.len();
            (KeyMaterial::Hmac(Hs256Key::new(secret)), len)
        }
        "RSA" => {
            refuse_private(jwk)?;
            let n = req_bytes(jwk, "n")?;
            let e = req_bytes(jwk, "e")?;
            let bits = bit_length(&n);
            if bits < MIN_RSA_BITS {
                return Err(problem(
                    "n",
                    format!(
                        "the RSA modulus has {bits} bits, at least {MIN_RSA_BITS} are required"
                    ),
                ));
            }
            // An even modulus is no RSA modulus.
            let pkcs1 = Pkcs1Key::new(&n, &e).ok_or_else(|| {
                problem(
                    "n",
                    "is not a valid RSA public key (modulus up to 4096 bits, valid exponent)",
                )
            })?;
            let jwk = JsonWebKey::Rsa {
                modulus: Cow::Owned(n),
                public_exponent: Cow::Owned(e),
                private_parts: None,
            };
            let key = RsaPublicKey::try_from(&jwk).map_err(|_| {
                problem(
                    "n",
                    "is not a valid RSA public key (modulus up to 4096 bits, valid exponent)",
                )
            })?;
            (KeyMaterial::Rsa(RsaKey { key, pkcs1 }), bits)
        }
        "EC" => {
            refuse_private(jwk)?;
            let crv = req_str(jwk, "crv")?;
            if !EC_CURVES.contains(&crv) {
                return Err(problem(
                    "crv",
                    "only P-256, P-384 and P-521 are supported for EC keys",
                ));
            }
            let x = req_bytes(jwk, "x")?;
            let y = req_bytes(jwk, "y")?;
            match crv {
                "P-384" => {
                    let key = ecdsa::p384_key(&x, &y).ok_or_else(|| {
                        problem("x", "x and y are not a point on P-384 (48 bytes each)")
                    })?;
                    (KeyMaterial::Es384(key), 384)
                }
                "P-521" => {
                    let key = ecdsa::p521_key(&x, &y).ok_or_else(|| {
                        problem("x", "x and y are not a point on P-521 (66 bytes each)")
                    })?;
                    (KeyMaterial::Es512(key), 521)
                }
                _ => {
                    let key = Es256Key::from_coordinates(&x, &y).ok_or_else(|| {
                        problem("x", "x and y are not a point on P-256 (32 bytes each)")
                    })?;
                    (KeyMaterial::Es256(key), 256)
                }
            }
        }
        "OKP" => {
            refuse_private(jwk)?;
            if req_str(jwk, "crv")? != "Ed25519" {
                return Err(problem("crv", "only Ed25519 is supported for OKP keys"));
            }
            let x = req_bytes(jwk, "x")?;
            let jwk = JsonWebKey::KeyPair {
                curve: Cow::Borrowed("Ed25519"),
                x: Cow::Owned(x),
                secret: None,
            };
            let key = Ed25519PublicKey::try_from(&jwk)
                .map_err(|_| problem("x", "is not a 32-byte Ed25519 public key"))?;
            (KeyMaterial::Ed25519(key), 256)
        }
        _ => return Err(problem("kty", "must be oct, RSA, EC or OKP")),
    };
    let key = VerifyKey {
        kid: kid.map(str::to_owned),
        alg,
        material,
        size,
    };
    if let Some(alg) = alg {
        if !key.supports(alg) {
            return Err(problem(
                "alg",
                format!(
                    "{alg} cannot be used with a {} key of this size",
                    key.family().describe()
                ),
            ));
        }
    }
    Ok(key)
}

fn refuse_private(jwk: &Map<String, Value>) -> Result<(), JwkProblem> {
    // A published private key is compromised; refusing it also keeps it out of VM memory.
    match PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        Some(member) => Err(problem(
            member,
            "private key material must not be in a JWKS: publish the public key only",
        )),
        None => Ok(()),
    }
}

fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        None => 0,
        Some(first) => {
            let lead = be.get(first).map_or(0, |b| b.leading_zeros() as usize);
            (be.len() - first) * 8 - lead
        }
    }
}

/// The `keys` array of a JWKS document, or `None` when the value is not `{"keys": [...]}`.
pub fn key_array(doc: &Value) -> Option<&Vec<Value>> {
    doc.as_object()?.get("keys")?.as_array()
}

/// Strict unpadded base64url (RFC 7515 §2): no padding, no whitespace, canonical trailing bits.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    // Leftover bits must be zero, or two different strings would decode to the same bytes.
    if acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::jwt::test_keys;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64url_decode("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(b64url_decode("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(b64url_decode(""), Some(vec![]));
        assert_eq!(b64url_decode("AQAB="), None, "padding");
        assert_eq!(b64url_decode("AQ+B"), None, "standard alphabet");
        assert_eq!(b64url_decode("AQ B"), None, "whitespace");
        assert_eq!(b64url_decode("A"), None, "impossible length");
        assert_eq!(b64url_decode("AR"), None, "non-zero trailing bits");
        assert_eq!(b64url_decode("AQ"), Some(vec![1]));
    }

    #[test]
    fn each_key_type_parses_and_supports_only_its_algorithms() {
        let rsa = parse_jwk(&obj(test_keys::rsa_public_jwk()), KeySource::Inline).unwrap();
        assert_eq!(rsa.family(), KeyFamily::Rsa);
        assert_eq!(rsa.size, 2048);
        let algs: Vec<_> = rsa.algorithms().collect();
        assert_eq!(
            algs,
            vec![
                Alg::Rs256,
                Alg::Rs384,
                Alg::Rs512,
                Alg::Ps256,
                Alg::Ps384,
                Alg::Ps512
            ]
        );

        let ec = parse_jwk(&obj(test_keys::ec_public_jwk()), KeySource::Remote).unwrap();
        assert_eq!(ec.algorithms().collect::<Vec<_>>(), vec![Alg::Es256]);

        let ed = parse_jwk(&obj(test_keys::ed25519_public_jwk()), KeySource::Remote).unwrap();
        assert_eq!(ed.algorithms().collect::<Vec<_>>(), vec![Alg::EdDsa]);

        let hmac = parse_jwk(&obj(test_keys::hmac_jwk()), KeySource::Inline).unwrap();
        // The RFC 7515 A.1 key is 64 bytes: long enough for every HS algorithm.
        assert_eq!(
            hmac.algorithms().collect::<Vec<_>>(),
            vec![Alg::Hs256, Alg::Hs384, Alg::Hs512]
        );
    }

    #[test]
    fn short_hmac_secret_supports_only_matching_strength() {
        let k32 = json!({"kty": "oct", "k": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
        let key = parse_jwk(&obj(k32), KeySource::Inline).unwrap();
        assert_eq!(key.algorithms().collect::<Vec<_>>(), vec![Alg::Hs256]);
        let k16 = json!({"kty": "oct", "k": "AAAAAAAAAAAAAAAAAAAAAA"});
        assert_eq!(
            parse_jwk(&obj(k16), KeySource::Inline).unwrap_err().field,
            "k"
        );
    }

    #[test]
    fn jwk_alg_restricts_the_key() {
        let mut jwk = test_keys::rsa_public_jwk();
        jwk["alg"] = json!("PS384");
        let key = parse_jwk(&obj(jwk), KeySource::Inline).unwrap();
        assert_eq!(key.algorithms().collect::<Vec<_>>(), vec![Alg::Ps384]);

        let mut wrong = test_keys::rsa_public_jwk();
        wrong["alg"] = json!("ES256");
        assert_eq!(
            parse_jwk(&obj(wrong), KeySource::Inline).unwrap_err().field,
            "alg"
        );
        let mut none = test_keys::rsa_public_jwk();
        none["alg"] = json!("none");
        assert_eq!(
            parse_jwk(&obj(none), KeySource::Inline).unwrap_err().field,
            "alg"
        );
    }

    #[test]
    fn an_even_rsa_modulus_is_refused() {
        let mut n = b64url_decode(test_keys::RSA_N).unwrap();
        if let Some(last) = n.last_mut() {
            *last &= 0xfe;
        }
        let mut jwk = test_keys::rsa_public_jwk();
        jwk["n"] = json!(test_keys::b64url(&n));
        let problem = parse_jwk(&obj(jwk), KeySource::Inline).unwrap_err();
        assert_eq!(problem.field, "n");
    }

    #[test]
    fn refusals_name_the_member_and_never_echo_values() {
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA+";
        let cases = [
            (json!({"kty": "oct", "k": secret}), "k"),
            (json!({"kty": "oct", "k": "abc"}), "k"),
            (json!({"kty": "RSA", "n": "AQAB"}), "e"),
            (json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}), "n"),
            (
                json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}),
                "crv",
            ),
            (
                json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
                "x",
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
                "x",
            ),
            (json!({"kty": "OKP", "crv": "X25519", "x": "AA"}), "crv"),
            (json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}), "x"),
            (json!({"kty": "XYZ"}), "kty"),
            (json!({"k": "AAAA"}), "kty"),
            (json!({"kty": 5}), "kty"),
            (json!({"kty": "oct", "k": secret, "use": "enc"}), "use"),
            (
                json!({"kty": "oct", "k": secret, "key_ops": ["sign"]}),
                "key_ops",
            ),
            (json!({"kty": "oct", "k": secret, "kid": ""}), "kid"),
        ];
        for (jwk, field) in cases {
            let err = parse_jwk(&obj(jwk.clone()), KeySource::Inline).unwrap_err();
            assert_eq!(err.field, field, "{jwk}");
            assert!(
                !err.message.contains(secret) && !err.message.contains("AAAA"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn private_keys_and_remote_secrets_are_refused() {
        let mut private = test_keys::ec_public_jwk();
        private["d"] = json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
        let err = parse_jwk(&obj(private), KeySource::Inline).unwrap_err();
        assert_eq!(err.field, "d");
        assert!(!err.message.contains("jpsQ"));
        assert_eq!(
            parse_jwk(&obj(test_keys::hmac_jwk()), KeySource::Remote)
                .unwrap_err()
                .field,
            "kty"
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = parse_jwk(&obj(test_keys::hmac_jwk()), KeySource::Inline).unwrap();
        let text = format!("{key:?}");
        assert!(text.contains("Hmac"));
        assert!(!text.contains("AyM1") && !text.contains("35, 51"), "{text}");
    }

    #[test]
    fn p384_and_p521_keys_parse_and_support_only_their_algorithm() {
        let k384 = parse_jwk(&obj(test_keys::ec384_public_jwk()), KeySource::Remote).unwrap();
        assert_eq!(k384.family(), KeyFamily::EcP384);
        assert_eq!(k384.algorithms().collect::<Vec<_>>(), vec![Alg::Es384]);
        let k521 = parse_jwk(&obj(test_keys::ec521_public_jwk()), KeySource::Inline).unwrap();
        assert_eq!(k521.family(), KeyFamily::EcP521);
        assert_eq!(k521.algorithms().collect::<Vec<_>>(), vec![Alg::Es512]);
        // alg pins must agree with the curve.
        for (jwk, good, bad) in [
            (test_keys::ec384_public_jwk(), "ES384", ["ES256", "ES512"]),
            (test_keys::ec521_public_jwk(), "ES512", ["ES256", "ES384"]),
            (test_keys::ec_public_jwk(), "ES256", ["ES384", "ES512"]),
        ] {
            let mut pinned = jwk.clone();
            pinned["alg"] = json!(good);
            assert!(parse_jwk(&obj(pinned), KeySource::Inline).is_ok());
            for alg in bad {
                let mut wrong = jwk.clone();
                wrong["alg"] = json!(alg);
                let err = parse_jwk(&obj(wrong), KeySource::Inline).unwrap_err();
                assert_eq!(err.field, "alg", "{alg}");
            }
        }
    }

    #[test]
    fn p384_and_p521_coordinates_are_validated() {
        let coord = |jwk: &Value, m: &str| b64url_decode(jwk[m].as_str().unwrap_or("")).unwrap();
        for (jwk, len) in [
            (test_keys::ec384_public_jwk(), 48),
            (test_keys::ec521_public_jwk(), 66),
        ] {
            let (x, y) = (coord(&jwk, "x"), coord(&jwk, "y"));
            assert_eq!((x.len(), y.len()), (len, len));
            let with = |x: &[u8], y: &[u8]| {
                let mut k = jwk.clone();
                k["x"] = json!(test_keys::b64url(x));
                k["y"] = json!(test_keys::b64url(y));
                parse_jwk(&obj(k), KeySource::Remote).map(|_| ())
            };
            assert!(with(&x, &y).is_ok());
            // Off the curve: y + 1.
            let mut y1 = y.clone();
            if let Some(last) = y1.last_mut() {
                *last ^= 1;
            }
            assert_eq!(with(&x, &y1).unwrap_err().field, "x");
            // Short (leading zero dropped) and long coordinates.
            assert_eq!(with(&x[1..], &y).unwrap_err().field, "x");
            let mut long = vec![0u8];
            long.extend_from_slice(&x);
            assert_eq!(with(&long, &y).unwrap_err().field, "x");
            // The other curve's length.
            let other = if len == 48 { 66 } else { 48 };
            assert_eq!(
                with(&vec![1u8; other], &vec![1u8; other])
                    .unwrap_err()
                    .field,
                "x"
            );
            // All-zero coordinates (not a point; the identity has no affine form).
            assert_eq!(
                with(&vec![0u8; len], &vec![0u8; len]).unwrap_err().field,
                "x"
            );
            // Private members are refused, as for P-256; the message never echoes them.
            let mut private = jwk.clone();
            private["d"] = json!("c2VjcmV0LXNjYWxhcg");
            let err = parse_jwk(&obj(private), KeySource::Inline).unwrap_err();
            assert_eq!(err.field, "d");
            assert!(!err.message.contains("c2Vj"));
        }
    }

    #[test]
    fn classify_sorts_signature_keys_from_the_rest() {
        let sig = |family, alg| Ok(Purpose::Signature { family, alg });
        let cases = [
            (test_keys::ec384_public_jwk(), sig(KeyFamily::EcP384, None)),
            (
                json!({"kty": "EC", "crv": "P-521"}),
                sig(KeyFamily::EcP521, None),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256"}),
                sig(KeyFamily::EcP256, Some(Alg::Es256)),
            ),
            (
                json!({"kty": "RSA", "key_ops": ["verify"]}),
                sig(KeyFamily::Rsa, None),
            ),
            (json!({"kty": "oct"}), sig(KeyFamily::Hmac, None)),
            (
                json!({"kty": "OKP", "crv": "Ed25519"}),
                sig(KeyFamily::Ed25519, None),
            ),
            // A malformed signature key still classifies as one: parsing then names the member.
            (
                json!({"kty": "EC", "crv": "P-384", "x": 5}),
                sig(KeyFamily::EcP384, None),
            ),
            (json!({"kty": "RSA", "use": "enc"}), Ok(Purpose::Other)),
            (
                json!({"kty": "RSA", "key_ops": ["encrypt"]}),
                Ok(Purpose::Other),
            ),
            (
                json!({"kty": "RSA", "alg": "RSA-OAEP-256"}),
                Ok(Purpose::Other),
            ),
            (json!({"kty": "OKP", "crv": "X25519"}), Ok(Purpose::Other)),
            (json!({"kty": "OKP", "crv": "Ed448"}), Ok(Purpose::Other)),
            (json!({"kty": "EC", "crv": "secp256k1"}), Ok(Purpose::Other)),
            (
                json!({"kty": "EC", "crv": "P-256", "alg": "ES256K"}),
                Ok(Purpose::Other),
            ),
            (json!({"kty": "AKP"}), Ok(Purpose::Other)),
            (json!({"crv": "P-256"}), Err("kty")),
            (json!({"kty": 1}), Err("kty")),
            (json!({"kty": "EC"}), Err("crv")),
            (json!({"kty": "OKP", "crv": 25519}), Err("crv")),
            (json!({"kty": "RSA", "use": 1}), Err("use")),
            (json!({"kty": "RSA", "alg": ["RS256"]}), Err("alg")),
            (json!({"kty": "RSA", "key_ops": "verify"}), Err("key_ops")),
        ];
        for (jwk, want) in cases {
            let got = classify(&obj(jwk.clone())).map_err(|p| p.field);
            assert_eq!(got, want, "{jwk}");
        }
        let p384 = Purpose::Signature {
            family: KeyFamily::EcP384,
            alg: None,
        };
        assert!(p384.serves(&[Alg::Es384]));
        assert!(!p384.serves(&[Alg::Es256, Alg::Es512]));
        let pinned = Purpose::Signature {
            family: KeyFamily::Rsa,
            alg: Some(Alg::Ps256),
        };
        assert!(pinned.serves(&[Alg::Rs256, Alg::Ps256]));
        assert!(!pinned.serves(&[Alg::Rs256]));
        assert!(!Purpose::Other.serves(&Alg::ALL));
    }
}

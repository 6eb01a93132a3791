//! Test-only fixed keys (all from RFC examples, so no key generation at test time) and a small
//! token minter that can write any header, including hostile ones.

use jwt_compact::alg::{
    Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa, RsaPrivateKey,
};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use serde_json::{json, Value};

use super::alg::Alg;
use super::ecdsa::{Es384, Es512};

/// RFC 7515 Appendix A.1: the HMAC SHA-256 key (64 bytes).
pub const HMAC_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

/// RFC 7515 Appendix A.1 / A.2 / A.3 JWS examples (payload
/// `{"iss":"joe","exp":1300819380,"http://example.com/is_root":true}`).
pub const RFC7515_A1_HS256: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const RFC7515_A2_RS256: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
pub const RFC7515_A3_ES256: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
/// The `exp` of the RFC 7515 examples.
pub const RFC7515_EXP: i64 = 1_300_819_380;

/// RFC 8037 Appendix A.4: EdDSA JWS over the (non-JSON) payload "Example of Ed25519 signing".
pub const RFC8037_A4_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

// RFC 7515 Appendix A.2.1: the RSA key.
pub const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
pub const RSA_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const RSA_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const RSA_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
/// RFC 7638 §3.1: an unrelated 2048-bit RSA public key (for "right type, wrong key").
const OTHER_RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

// RFC 7515 Appendix A.3.1: the P-256 key.
const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const EC_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

/// RFC 7515 Appendix A.4: ES512 (ECDSA P-521 SHA-512) JWS over the (non-JSON) payload "Payload".
pub const RFC7515_A4_ES512: &str = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";

// RFC 7515 Appendix A.4.1: the P-521 key.
const EC521_X: &str =
    "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk";
const EC521_Y: &str =
    "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2";
const EC521_D: &str =
    "AY5pb7A0UFiB3RELSD64fTLOSV_jazdF7fLYyuTw8lOfRhWg6Y6rUrPAxerEzgdRhajnu0ferB0d53vM9mE15j2C";

// RFC 6979 Appendix A.2.6: the P-384 key (private x; public Ux, Uy), base64url.
const EC384_X: &str = "7DpOQVtOGaRWhhgCn0J_pdqai8SukuAuBqrlKGswDGTe-PDqkFWGYGSiVFFUgLwT";
const EC384_Y: &str = "gBXZty19VyROqO-awMYhiWcIpZNn-d-59UyoSz8cnbEoiyMcOuDU_nNE_SUzJkcg";
const EC384_D: &str = "a509rS4bjBwFsZh1tmWfTeI8O2Z78pe6mqR3QHhxN9iW1XJOTHCoJfhyyepg0u31";

/// RFC 6979 Appendix A.2.6, "With SHA-384, message = ..." (P-384): `r || s` in hex, deterministic
/// ECDSA, the signatures ES384 verifies (RFC 7518 §3.4 has no published JWS example for ES384).
pub const RFC6979_A26_SHA384_SAMPLE: &str = "94edbb92a5ecb8aad4736e56c691916b3f88140666ce9fa73d64c4ea95ad133c81a648152e44acf96e36dd1e80fabe4699ef4aeb15f178cea1fe40db2603138f130e740a19624526203b6351d0a3a94fa329c145786e679e7b82c71a38628ac8";
pub const RFC6979_A26_SHA384_TEST: &str = "8203b63d3c853e8d77227fb377bcf7b7b772e97892a80f36ab775d509d7a5feb0542a7f0812998da8f1dd3ca3cf023dbddd0760448d42d8a43af45af836fce4de8be06b485e9b61b827c2f13173923e06a739f040649a667bf3b828246baa5a5";

// RFC 8037 Appendix A.1: the Ed25519 key.
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

pub fn hmac_jwk() -> Value {
    json!({"kty": "oct", "k": HMAC_K})
}
pub fn rsa_public_jwk() -> Value {
    json!({"kty": "RSA", "n": RSA_N, "e": "AQAB"})
}
pub fn other_rsa_public_jwk() -> Value {
    json!({"kty": "RSA", "n": OTHER_RSA_N, "e": "AQAB"})
}
pub fn ec_public_jwk() -> Value {
    json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y})
}
/// RFC 6979 A.2.6 P-384 public key.
pub fn ec384_public_jwk() -> Value {
    json!({"kty": "EC", "crv": "P-384", "x": EC384_X, "y": EC384_Y})
}
/// RFC 7515 A.4 P-521 public key.
pub fn ec521_public_jwk() -> Value {
    json!({"kty": "EC", "crv": "P-521", "x": EC521_X, "y": EC521_Y})
}
/// A second P-384 key, from a fixed scalar.
pub fn other_ec384_public_jwk() -> Value {
    let vk = other_ec384_signing_key().verifying_key().to_owned();
    let point = vk.to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-384", "x": b64url(point.x().unwrap()), "y": b64url(point.y().unwrap())})
}
/// A second P-521 key, from a fixed scalar.
pub fn other_ec521_public_jwk() -> Value {
    let vk = p521::ecdsa::VerifyingKey::from(&other_ec521_signing_key());
    let point = vk.to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-521", "x": b64url(point.x().unwrap()), "y": b64url(point.y().unwrap())})
}
fn other_ec384_signing_key() -> p384::ecdsa::SigningKey {
    p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap()
}
fn other_ec521_signing_key() -> p521::ecdsa::SigningKey {
    p521::ecdsa::SigningKey::from_slice(&[1u8; 66]).unwrap()
}
fn rfc_ec384_signing_key() -> p384::ecdsa::SigningKey {
    p384::ecdsa::SigningKey::from_slice(&crate::jwt::jwks::b64url_decode(EC384_D).unwrap()).unwrap()
}
fn rfc_ec521_signing_key() -> p521::ecdsa::SigningKey {
    p521::ecdsa::SigningKey::from_slice(&crate::jwt::jwks::b64url_decode(EC521_D).unwrap()).unwrap()
}

/// Lower-case hex → bytes (test vectors).
pub fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

pub fn ed25519_public_jwk() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X})
}
/// Public JWK of a second P-256 key derived from a fixed scalar.
pub fn other_ec_public_jwk() -> Value {
    let vk = other_ec_signing_key().verifying_key().to_owned();
    serde_json::to_value(JsonWebKey::from(&vk)).unwrap_or(Value::Null)
}

fn other_ec_signing_key() -> <Es256 as Algorithm>::SigningKey {
    <<Es256 as Algorithm>::SigningKey as jwt_compact::alg::SigningKey<Es256>>::from_slice(
        &[7u8; 32],
    )
    .unwrap()
}

fn private_jwk(v: Value) -> JsonWebKey<'static> {
    serde_json::from_value(v).unwrap()
}

/// Which private key signs a minted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The RFC key of the algorithm's family.
    Rfc,
    /// A different key of the same family (EC only; others fall back to a fixed other HMAC secret).
    Other,
}

pub fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// RFC 7515 Appendix A.2.1: the RSA private key.
pub fn rfc_rsa_private_key() -> RsaPrivateKey {
    RsaPrivateKey::try_from(&private_jwk(
        json!({"kty": "RSA", "n": RSA_N, "e": "AQAB", "d": RSA_D, "p": RSA_P, "q": RSA_Q}),
    ))
    .unwrap()
}

/// Signs `header.claims` (both given as JSON values, written verbatim) with `alg`.
pub fn mint_with(alg: Alg, signer: Signer, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let hmac_secret = match signer {
        Signer::Rfc => crate::jwt::jwks::b64url_decode(HMAC_K).unwrap(),
        Signer::Other => vec![0x42; 64],
    };
    let rsa = rfc_rsa_private_key;
    let sig: Vec<u8> = match alg {
        Alg::Hs256 => Hs256
            .sign(&Hs256Key::new(&hmac_secret), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Hs384 => Hs384
            .sign(&Hs384Key::new(&hmac_secret), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Hs512 => Hs512
            .sign(&Hs512Key::new(&hmac_secret), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Rs256 => Rsa::rs256()
            .sign(&rsa(), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Rs384 => Rsa::rs384()
            .sign(&rsa(), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Rs512 => Rsa::rs512()
            .sign(&rsa(), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Ps256 => Rsa::ps256()
            .sign(&rsa(), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Ps384 => Rsa::ps384()
            .sign(&rsa(), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Ps512 => Rsa::ps512()
            .sign(&rsa(), input.as_bytes())
            .as_bytes()
            .to_vec(),
        Alg::Es256 => {
            let key = match signer {
                Signer::Rfc => <Es256 as Algorithm>::SigningKey::try_from(&private_jwk(
                    json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "d": EC_D}),
                ))
                .unwrap(),
                Signer::Other => other_ec_signing_key(),
            };
            Es256.sign(&key, input.as_bytes()).as_bytes().to_vec()
        }
        Alg::Es384 => {
            let key = match signer {
                Signer::Rfc => rfc_ec384_signing_key(),
                Signer::Other => other_ec384_signing_key(),
            };
            Es384.sign(&key, input.as_bytes()).as_bytes().to_vec()
        }
        Alg::Es512 => {
            let key = match signer {
                Signer::Rfc => rfc_ec521_signing_key(),
                Signer::Other => other_ec521_signing_key(),
            };
            Es512.sign(&key, input.as_bytes()).as_bytes().to_vec()
        }
        Alg::EdDsa => {
            let key = <Ed25519 as Algorithm>::SigningKey::try_from(&private_jwk(
                json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X, "d": ED_D}),
            ))
            .unwrap();
            Ed25519.sign(&key, input.as_bytes()).as_bytes().to_vec()
        }
    };
    format!("{input}.{}", b64url(&sig))
}

/// A token with header `{"alg": alg}` (plus `kid` when given) signed by the RFC key.
pub fn mint(alg: Alg, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg.name()});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    mint_with(alg, Signer::Rfc, &header, claims)
}

/// Replaces one of the three segments of a compact token.
pub fn with_segment(token: &str, index: usize, segment: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = segment;
    parts.join(".")
}

/// `{"keys": [<RFC 7515 A.3 public key>]}` as JSON text.
pub fn ec_public_jwk_set_text() -> String {
    json!({"keys": [ec_public_jwk()]}).to_string()
}

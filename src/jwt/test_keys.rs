//! Test-only fixed keys (all from RFC examples, so no key generation at test time) and a small
//! token minter that can write any header, including hostile ones.

use jwt_compact::alg::{
    Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa, RsaPrivateKey,
};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use serde_json::{json, Value};

use super::alg::Alg;

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
const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const RSA_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const RSA_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const RSA_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
/// RFC 7638 §3.1: an unrelated 2048-bit RSA public key (for "right type, wrong key").
const OTHER_RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

// RFC 7515 Appendix A.3.1: the P-256 key.
const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const EC_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

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
    let rsa = || {
        RsaPrivateKey::try_from(&private_jwk(
            json!({"kty": "RSA", "n": RSA_N, "e": "AQAB", "d": RSA_D, "p": RSA_P, "q": RSA_Q}),
        ))
        .unwrap()
    };
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

//! Why a token or a JWKS document was refused. Variants carry only numbers, algorithm names and
//! operator-chosen names: never token text, claim values chosen by the caller, or key material.

use std::fmt;

use super::alg::{Alg, KeyFamily};

/// Which part of a compact JWS could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not three dot-separated segments.
    Structure,
    /// A segment is not unpadded base64url.
    Base64,
    /// The protected header is not a JSON object with a string `alg`.
    Header,
    /// The payload is not a JSON object of claims (or a registered claim has the wrong type).
    Claims,
    /// `cty` names a content type other than JSON (nested JWTs are not accepted).
    ContentType,
}

impl Malformed {
    fn describe(self) -> &'static str {
        match self {
            Self::Structure => "token is not three dot-separated base64url segments",
            Self::Base64 => "token segment is not valid unpadded base64url",
            Self::Header => "token header is not a valid json object",
            Self::Claims => "token claims are not a valid json object",
            Self::ContentType => "token content type is not supported",
        }
    }
}

/// A refused bearer token. Every variant maps to one stable [`JwtError::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    TokenTooLarge {
        bytes: usize,
        max: usize,
    },
    Malformed(Malformed),
    AlgNone,
    /// `alg` is unknown, or not on the provider's allow-list. Only a known name is kept.
    AlgNotAllowed {
        alg: Option<Alg>,
    },
    /// An HMAC `alg` aimed at an asymmetric (public) key, or the reverse: the classic
    /// "verify HS256 with the RSA public key as secret" attack.
    AlgorithmConfusion {
        alg: Alg,
        key: KeyFamily,
    },
    /// The selected key cannot verify this algorithm (wrong type, curve, JWK `alg`, or too short).
    KeyTypeMismatch {
        alg: Alg,
        key: KeyFamily,
    },
    UnknownKid,
    /// The provider has no usable key at all yet (remote JWKS not fetched or never valid).
    NoVerificationKey,
    CritHeader,
    InvalidSignature,
    Expired {
        exp: i64,
        now: i64,
    },
    NotYetValid {
        nbf: i64,
        now: i64,
    },
    IssuedInFuture {
        iat: i64,
        now: i64,
    },
    UnknownIssuer,
    AudienceMismatch,
    MissingExp,
    MissingSub,
    InvalidSub,
    RefreshToken,
    LifetimeTooLong {
        lifetime: i64,
        max: u64,
    },
    /// A claim configured in `forward_claims` holds a value that cannot be a header value.
    /// `claim` is the operator's configured claim name, not caller data.
    UnforwardableClaim {
        claim: String,
    },
    /// A provider verified by Envoy's jwt_authn filter, and no payload of it in the request's
    /// metadata: the filter is missing, skipped the request, or let it through unverified.
    NotVerifiedByJwtAuthn,
    /// The payload jwt_authn verified is not this token's payload.
    JwtAuthnMismatch,
}

impl JwtError {
    /// The stable, machine-readable denial code.
    /// Whether the token may well be good and the refusal is the verifier's (no keys yet).
    pub fn retryable(&self) -> bool {
        matches!(self, Self::NoVerificationKey)
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::TokenTooLarge { .. } => "token_too_large",
            Self::Malformed(_) => "malformed_token",
            Self::AlgNone => "alg_none",
            Self::AlgNotAllowed { .. } => "alg_not_allowed",
            Self::AlgorithmConfusion { .. } => "algorithm_confusion",
            Self::KeyTypeMismatch { .. } => "key_type_mismatch",
            Self::UnknownKid => "unknown_kid",
            Self::NoVerificationKey => "no_verification_key",
            Self::CritHeader => "unsupported_crit_header",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired { .. } => "token_expired",
            Self::NotYetValid { .. } => "token_not_yet_valid",
            Self::IssuedInFuture { .. } => "token_issued_in_future",
            Self::UnknownIssuer => "unknown_issuer",
            Self::AudienceMismatch => "audience_mismatch",
            Self::MissingExp => "missing_exp",
            Self::MissingSub => "missing_sub",
            Self::InvalidSub => "invalid_sub",
            Self::RefreshToken => "refresh_token_not_allowed",
            Self::LifetimeTooLong { .. } => "token_lifetime_too_long",
            Self::UnforwardableClaim { .. } => "unforwardable_claim",
            Self::NotVerifiedByJwtAuthn => "not_verified_by_jwt_authn",
            Self::JwtAuthnMismatch => "jwt_authn_payload_mismatch",
        }
    }

    /// Every code, for documentation and exhaustive tests.
    pub const ALL_CODES: [&'static str; 23] = [
        "token_too_large",
        "malformed_token",
        "alg_none",
        "alg_not_allowed",
        "algorithm_confusion",
        "key_type_mismatch",
        "unknown_kid",
        "no_verification_key",
        "unsupported_crit_header",
        "invalid_signature",
        "token_expired",
        "token_not_yet_valid",
        "token_issued_in_future",
        "unknown_issuer",
        "audience_mismatch",
        "missing_exp",
        "missing_sub",
        "invalid_sub",
        "refresh_token_not_allowed",
        "token_lifetime_too_long",
        "unforwardable_claim",
        "not_verified_by_jwt_authn",
        "jwt_authn_payload_mismatch",
    ];

    /// The RFC 6750 §3.1 `error` value: every refusal here means the token itself is unusable.
    pub fn rfc6750_error(&self) -> &'static str {
        "invalid_token"
    }

    /// HTTP status of the denial.
    pub fn status(&self) -> u16 {
        401
    }

    /// Text for RFC 6750 `error_description`: RFC 6750 §3 allows only %x20-21 / %x23-5B / %x5D-7E,
    /// so anything else (quotes, backslashes, non-ASCII, controls) is replaced.
    pub fn description(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| {
                if c.is_ascii() && (' '..='~').contains(&c) && c != '"' && c != '\\' {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenTooLarge { bytes, max } => {
                write!(f, "token is {bytes} bytes, more than the {max} allowed")
            }
            Self::Malformed(m) => f.write_str(m.describe()),
            Self::AlgNone => f.write_str("unsigned tokens (alg none) are never accepted"),
            Self::AlgNotAllowed { alg: Some(alg) } => {
                write!(f, "algorithm {alg} is not allowed for this issuer")
            }
            Self::AlgNotAllowed { alg: None } => f.write_str("token algorithm is not supported"),
            Self::AlgorithmConfusion { alg, key } => write!(
                f,
                "algorithm {alg} cannot be used with the {} key that signs for this issuer",
                key.describe()
            ),
            Self::KeyTypeMismatch { alg, key } => {
                write!(
                    f,
                    "the {} key selected cannot verify algorithm {alg}",
                    key.describe()
                )
            }
            Self::UnknownKid => f.write_str("token key id is not in the issuer key set"),
            Self::NoVerificationKey => {
                f.write_str("no verification key is available for this issuer yet")
            }
            Self::CritHeader => {
                f.write_str("token has critical header extensions, none are supported")
            }
            Self::InvalidSignature => f.write_str("token signature is invalid"),
            Self::Expired { exp, now } => {
                write!(f, "token expired {} seconds ago", now.saturating_sub(*exp))
            }
            Self::NotYetValid { nbf, now } => {
                write!(
                    f,
                    "token is not valid for another {} seconds",
                    nbf.saturating_sub(*now)
                )
            }
            Self::IssuedInFuture { iat, now } => {
                write!(
                    f,
                    "token is issued {} seconds in the future",
                    iat.saturating_sub(*now)
                )
            }
            Self::UnknownIssuer => f.write_str("token issuer is not trusted"),
            Self::AudienceMismatch => f.write_str("token audience does not include this api"),
            Self::MissingExp => f.write_str("token has no expiration time (exp)"),
            Self::MissingSub => f.write_str("token has no subject (sub)"),
            Self::InvalidSub => {
                f.write_str("token subject must be 1 to 256 printable ascii characters")
            }
            Self::RefreshToken => f.write_str("a refresh token cannot be used as an access token"),
            Self::LifetimeTooLong { lifetime, max } => {
                write!(
                    f,
                    "token lifetime of {lifetime} seconds exceeds the maximum of {max}"
                )
            }
            Self::UnforwardableClaim { claim } => {
                write!(f, "claim {claim} cannot be forwarded as a header value")
            }
            Self::NotVerifiedByJwtAuthn => {
                f.write_str("token was not verified by the proxy's jwt_authn filter")
            }
            Self::JwtAuthnMismatch => {
                f.write_str("token is not the one the proxy's jwt_authn filter verified")
            }
        }
    }
}

impl std::error::Error for JwtError {}

/// Why a JWKS fetch result was not taken (the previous keys stay in use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// `provider` is out of range or has no `remote_jwks`.
    UnknownProvider {
        provider: usize,
    },
    /// Connection failure, reset or timeout.
    Transport,
    HttpStatus {
        status: u16,
    },
    BodyTooLarge {
        bytes: usize,
        max: usize,
    },
    /// Not JSON at all.
    InvalidJson {
        line: usize,
        column: usize,
    },
    /// JSON, but not an object with a `keys` array.
    NotAKeySet,
    /// The document parsed, but no key in it is usable.
    NoUsableKeys {
        skipped: usize,
    },
}

impl JwksError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProvider { .. } => "jwks_unknown_provider",
            Self::Transport => "jwks_transport_error",
            Self::HttpStatus { .. } => "jwks_http_status",
            Self::BodyTooLarge { .. } => "jwks_too_large",
            Self::InvalidJson { .. } => "jwks_invalid_json",
            Self::NotAKeySet => "jwks_not_a_key_set",
            Self::NoUsableKeys { .. } => "jwks_no_usable_keys",
        }
    }
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownProvider { provider } => {
                write!(f, "provider {provider} has no remote jwks")
            }
            Self::Transport => f.write_str("jwks fetch failed or timed out"),
            Self::HttpStatus { status } => write!(f, "jwks endpoint answered status {status}"),
            Self::BodyTooLarge { bytes, max } => {
                write!(f, "jwks body is {bytes} bytes, more than the {max} allowed")
            }
            Self::InvalidJson { line, column } => {
                write!(
                    f,
                    "jwks body is not valid json (line {line} column {column})"
                )
            }
            Self::NotAKeySet => f.write_str("jwks body is not a json object with a keys array"),
            Self::NoUsableKeys { skipped } => {
                write!(f, "jwks has no usable signing key ({skipped} skipped)")
            }
        }
    }
}

impl std::error::Error for JwksError {}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn description_is_rfc6750_safe_even_with_odd_operator_names() {
        let err = JwtError::UnforwardableClaim {
            claim: "t\"en\\ant\u{e9}\n".to_owned(),
        };
        let d = err.description();
        assert!(
            d.bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
            "{d}"
        );
        assert!(d.contains("t?en?ant??"));
    }

    #[test]
    fn codes_are_distinct_snake_case() {
        let mut codes = JwtError::ALL_CODES.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), JwtError::ALL_CODES.len());
        for code in codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }
}

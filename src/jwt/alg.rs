//! The closed set of JWS algorithms apiguard verifies. `none` is deliberately not a member, so
//! no code path can ever select it.

use std::fmt;

/// A signature algorithm (RFC 7518 §3, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alg {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    EdDsa,
}

/// The key family an algorithm needs; a key of another family can never verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// JWK `oct`: a shared secret.
    Hmac,
    /// JWK `RSA`.
    Rsa,
    /// JWK `EC` on P-256.
    EcP256,
    /// JWK `OKP` on Ed25519.
    Ed25519,
}

impl KeyFamily {
    /// The JWK `kty` (and curve) for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Hmac => "oct",
            Self::Rsa => "RSA",
            Self::EcP256 => "EC P-256",
            Self::Ed25519 => "OKP Ed25519",
        }
    }
}

impl Alg {
    pub const ALL: [Alg; 11] = [
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::EdDsa,
    ];

    /// Exact, case-sensitive match on the registered name (RFC 7515 §4.1.1: `alg` is
    /// case-sensitive), so `hs256` is not an alias an attacker could play with.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Self::Hs256 | Self::Hs384 | Self::Hs512 => KeyFamily::Hmac,
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                KeyFamily::Rsa
            }
            Self::Es256 => KeyFamily::EcP256,
            Self::EdDsa => KeyFamily::Ed25519,
        }
    }

    /// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
    pub fn min_hmac_key_bytes(self) -> usize {
        match self {
            Self::Hs384 => 48,
            Self::Hs512 => 64,
            _ => 32,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `alg` values that mean "unsecured JWS" in any spelling.
pub fn is_none_alg(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("none")
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Alg::ALL {
            assert_eq!(Alg::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Alg::from_name("hs256"), None);
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("ES384"), None);
    }

    #[test]
    fn none_in_any_case_is_recognised() {
        assert!(is_none_alg("none"));
        assert!(is_none_alg("NoNe"));
        assert!(!is_none_alg("HS256"));
    }
}

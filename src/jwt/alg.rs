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
    Es384,
    Es512,
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
    /// JWK `EC` on P-384.
    EcP384,
    /// JWK `EC` on P-521.
    EcP521,
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
            Self::EcP384 => "EC P-384",
            Self::EcP521 => "EC P-521",
            Self::Ed25519 => "OKP Ed25519",
        }
    }
}

impl Alg {
    pub const ALL: [Alg; 13] = [
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
        Alg::Es384,
        Alg::Es512,
        Alg::EdDsa,
    ];

    /// Every name, space-separated, for error messages (no value from the input ever goes in).
    pub const NAMES: &'static str =
        "HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA";

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
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
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
            Self::Es384 => KeyFamily::EcP384,
            Self::Es512 => KeyFamily::EcP521,
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
        assert_eq!(Alg::from_name("ES384"), Some(Alg::Es384));
        assert_eq!(Alg::from_name("ES512"), Some(Alg::Es512));
        assert_eq!(Alg::from_name("es384"), None);
        assert_eq!(Alg::from_name("ES256K"), None);
    }

    #[test]
    fn names_lists_every_algorithm() {
        let listed: Vec<&str> = Alg::NAMES.split(' ').collect();
        let all: Vec<&str> = Alg::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(listed, all);
    }

    #[test]
    fn none_in_any_case_is_recognised() {
        assert!(is_none_alg("none"));
        assert!(is_none_alg("NoNe"));
        assert!(!is_none_alg("HS256"));
    }
}

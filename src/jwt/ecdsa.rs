//! `ES384` (ECDSA on P-384 with SHA-384) and `ES512` (ECDSA on P-521 with SHA-512), RFC 7518
//! §3.4, plugged into jwt-compact's [`Algorithm`] trait: jwt-compact 0.8 ships `ES256` only. The
//! curve arithmetic is RustCrypto's `p384` / `p521`, the same family as the `p256` crate behind
//! jwt-compact's `Es256`.
//!
//! A JWS ECDSA signature is the fixed-length `r || s` (RFC 7518 §3.4), never DER.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use p384::ecdsa::signature::{Signer as _, Verifier as _};

/// Bytes of one P-384 coordinate / scalar.
pub const P384_BYTES: usize = 48;
/// Bytes of one P-521 coordinate / scalar (521 bits, rounded up).
pub const P521_BYTES: usize = 66;

/// `ES384`: ECDSA on P-384 (secp384r1) with SHA-384.
#[derive(Debug, Default, Clone, Copy)]
pub struct Es384;

/// `ES512`: ECDSA on P-521 (secp521r1) with SHA-512.
#[derive(Debug, Default, Clone, Copy)]
pub struct Es512;

/// An `ES384` signature (`r || s`, 96 bytes). A newtype: the orphan rule forbids implementing
/// jwt-compact's trait on `p384`'s type directly.
#[derive(Debug, Clone, Copy)]
pub struct Es384Signature(p384::ecdsa::Signature);

/// An `ES512` signature (`r || s`, 132 bytes).
#[derive(Debug, Clone, Copy)]
pub struct Es512Signature(p521::ecdsa::Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(2 * P384_BYTES);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        // Checks the length and that r and s are in [1, n-1].
        p384::ecdsa::Signature::from_slice(slice)
            .map(Self)
            .map_err(|_| anyhow::anyhow!("not an ES384 signature"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

impl AlgorithmSignature for Es512Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(2 * P521_BYTES);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        p521::ecdsa::Signature::from_slice(slice)
            .map(Self)
            .map_err(|_| anyhow::anyhow!("not an ES512 signature"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

impl Algorithm for Es384 {
    type SigningKey = p384::ecdsa::SigningKey;
    type VerifyingKey = p384::ecdsa::VerifyingKey;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    /// Deterministic ECDSA (RFC 6979) over SHA-384 of `message`.
    fn sign(&self, signing_key: &Self::SigningKey, message: &[u8]) -> Self::Signature {
        Es384Signature(signing_key.sign(message))
    }

    fn verify_signature(
        &self,
        signature: &Self::Signature,
        verifying_key: &Self::VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0).is_ok()
    }
}

impl Algorithm for Es512 {
    type SigningKey = p521::ecdsa::SigningKey;
    type VerifyingKey = p521::ecdsa::VerifyingKey;
    type Signature = Es512Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES512")
    }

    /// ECDSA over SHA-512 of `message` with a random nonce from the OS (`p521` 0.13 has no
    /// RFC 6979 signer). The plugin never signs: only tests mint ES512 tokens.
    fn sign(&self, signing_key: &Self::SigningKey, message: &[u8]) -> Self::Signature {
        Es512Signature(signing_key.sign(message))
    }

    fn verify_signature(
        &self,
        signature: &Self::Signature,
        verifying_key: &Self::VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0).is_ok()
    }
}

/// The uncompressed SEC1 encoding `04 || x || y` of JWK coordinates, when both are exactly
/// `len` bytes (RFC 7518 §6.2.1.2: full length, leading zeros kept).
fn sec1_uncompressed(x: &[u8], y: &[u8], len: usize) -> Option<Vec<u8>> {
    if x.len() != len || y.len() != len {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Some(point)
}

/// A P-384 public key from JWK `x`, `y`: `None` unless both are 48 bytes and the point is on the
/// curve (and not the identity).
pub fn p384_key(x: &[u8], y: &[u8]) -> Option<p384::ecdsa::VerifyingKey> {
    let point = sec1_uncompressed(x, y, P384_BYTES)?;
    p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).ok()
}

/// A P-521 public key from JWK `x`, `y`: `None` unless both are 66 bytes and the point is on the
/// curve (and not the identity).
pub fn p521_key(x: &[u8], y: &[u8]) -> Option<p521::ecdsa::VerifyingKey> {
    let point = sec1_uncompressed(x, y, P521_BYTES)?;
    p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).ok()
}

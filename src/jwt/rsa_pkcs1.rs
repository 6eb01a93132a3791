//! `RS256` / `RS384` / `RS512` (RSASSA-PKCS1-v1_5 verification, RFC 8017 §8.2.2). The `rsa`
//! crate re-derives the Montgomery constants of the modulus on every verification (a long
//! division for R² mod n) and runs a generic 4-bit-window exponentiation (for e = 65537: 16 table
//! products, 28 squarings and 8 products); here the constants are computed once when the key is
//! loaded, and s^e is plain square-and-multiply: for e = 65537, 16 squarings and 3 products.
//!
//! Only public data goes through this code (the key, the signature, the signed bytes): it is
//! variable-time on purpose and must never see a private exponent. PS256 / PS384 / PS512 go
//! through the `rsa` crate.

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::words::{square_into, sub_in_place};

/// The hash of an RSASSA-PKCS1-v1_5 algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs1Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Pkcs1Hash {
    /// The DER `DigestInfo` header before the hash (RFC 8017 §9.2, note 1).
    fn digest_info(self) -> &'static [u8] {
        match self {
            Self::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Self::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Self::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(message).to_vec(),
            Self::Sha384 => Sha384::digest(message).to_vec(),
            Self::Sha512 => Sha512::digest(message).to_vec(),
        }
    }
}

/// An RSA public key and its Montgomery constants (R = 2^(32·limbs)).
pub struct Pkcs1Key {
    /// The modulus, little-endian 32-bit limbs, the top one non-zero.
    n: Vec<u32>,
    /// The public exponent.
    e: u64,
    /// -n⁻¹ mod 2^32.
    n0_inverse: u32,
    /// R² mod n.
    r_squared: Vec<u32>,
    /// k, the modulus' length in bytes: the length of every signature.
    len: usize,
}

impl Pkcs1Key {
    /// The key of JWK `n` and `e` (big-endian): `None` unless n is odd and above 1 (every RSA
    /// modulus is) and e is in [1, 2^64). The caller has already refused short moduli.
    pub fn new(n: &[u8], e: &[u8]) -> Option<Self> {
        let e = strip_zeros(e);
        if e.len() > 8 {
            return None;
        }
        let e = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let n_bytes = strip_zeros(n);
        let n = limbs(n_bytes, n_bytes.len().div_ceil(4))?;
        let low = *n.first()?;
        if e == 0 || low & 1 == 0 || (n.len() == 1 && low == 1) {
            return None;
        }
        // n0⁻¹ mod 2^32 by Newton's iteration: an odd n0 is its own inverse mod 8, and each step
        // doubles the correct low bits (3, 6, 12, 24, 48).
        let mut inverse = low;
        for _ in 0..4 {
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(low.wrapping_mul(inverse)));
        }
        let r_squared = r_squared(&n);
        Some(Self {
            e,
            n0_inverse: inverse.wrapping_neg(),
            r_squared,
            len: n_bytes.len(),
            n,
        })
    }

    /// Whether `signature` is a valid RSASSA-PKCS1-v1_5 signature of `message` with `hash`.
    pub fn verify(&self, hash: Pkcs1Hash, message: &[u8], signature: &[u8]) -> bool {
        // RFC 8017 §8.2.2 step 1: exactly k bytes; §5.2.2: s < n.
        if signature.len() != self.len {
            return false;
        }
        let Some(s) = limbs(signature, self.n.len()) else {
            return false;
        };
        if !less(&s, &self.n) {
            return false;
        }
        let m = self.pow(&s);
        self.encoded(&m) == expected_encoding(hash, message, self.len)
    }

    /// s^e mod n: left-to-right square-and-multiply in Montgomery form (s·R), then out of it.
    fn pow(&self, s: &[u32]) -> Vec<u32> {
        let s = self.mont_mul(s, &self.r_squared);
        let mut x = s.clone();
        for bit in (0..63 - self.e.leading_zeros()).rev() {
            x = self.mont_square(&x);
            if self.e >> bit & 1 == 1 {
                x = self.mont_mul(&x, &s);
            }
        }
        let mut one = vec![0u32; self.n.len()];
        if let Some(low) = one.first_mut() {
            *low = 1;
        }
        self.mont_mul(&x, &one)
    }

    /// a·b·R⁻¹ mod n for a, b < n (Montgomery multiplication word by word, a·b and m·n added in
    /// one pass with a carry each).
    fn mont_mul(&self, a: &[u32], b: &[u32]) -> Vec<u32> {
        let mut t = vec![0u32; self.n.len()];
        // Word n.len() of the accumulator (the one above is always zero between rounds).
        let mut high = 0u32;
        let b_0 = u64::from(b.first().copied().unwrap_or(0));
        for &a_i in a {
            let a_i = u64::from(a_i);
            // m makes the low word of t + a_i·b + m·n zero, so that word can be dropped.
            let low = u64::from(t.first().copied().unwrap_or(0)) + a_i * b_0;
            let m = u64::from((low as u32).wrapping_mul(self.n0_inverse));
            let (mut carry_ab, mut carry_mn) = (0u64, 0u64);
            for ((t_j, &b_j), &n_j) in t.iter_mut().zip(b).zip(&self.n) {
                let x = u64::from(*t_j) + a_i * u64::from(b_j) + carry_ab;
                carry_ab = x >> 32;
                let y = (x & 0xffff_ffff) + m * u64::from(n_j) + carry_mn;
                carry_mn = y >> 32;
                *t_j = y as u32;
            }
            let x = u64::from(high) + carry_ab + carry_mn;
            t.rotate_left(1);
            if let Some(last) = t.last_mut() {
                *last = x as u32;
            }
            high = (x >> 32) as u32;
        }
        // The result is below 2n: one subtraction at most.
        if high != 0 || !less(&t, &self.n) {
            sub_in_place(&mut t, &self.n);
        }
        t
    }

    /// a·a·R⁻¹ mod n for a < n: the square with each cross product a_i·a_j computed once and
    /// doubled, then reduced (REDC): about three quarters of `mont_mul`'s word products.
    fn mont_square(&self, a: &[u32]) -> Vec<u32> {
        let len = self.n.len();
        // a² in 2·len words, and one more for the reduction's last carry.
        let mut t = vec![0u32; 2 * len + 1];
        square_into(a, &mut t);
        // REDC: word by word, m·n added so that the low word becomes zero.
        for i in 0..len {
            let low = t.get(i).copied().unwrap_or(0);
            let m = u64::from(low.wrapping_mul(self.n0_inverse));
            let mut carry = 0u64;
            for (t_k, &n_j) in t.iter_mut().skip(i).zip(&self.n) {
                let x = u64::from(*t_k) + m * u64::from(n_j) + carry;
                *t_k = x as u32;
                carry = x >> 32;
            }
            for t_k in t.iter_mut().skip(i + len) {
                if carry == 0 {
                    break;
                }
                let x = u64::from(*t_k) + carry;
                *t_k = x as u32;
                carry = x >> 32;
            }
        }
        let mut out = t.split_off(len);
        let high = out.pop().unwrap_or(0);
        // The result is below 2n: one subtraction at most.
        if high != 0 || !less(&out, &self.n) {
            sub_in_place(&mut out, &self.n);
        }
        out
    }

    /// I2OSP(m, k): m as k big-endian bytes (m < n < 2^(8k)).
    fn encoded(&self, m: &[u32]) -> Vec<u8> {
        let bytes: Vec<u8> = m.iter().rev().flat_map(|limb| limb.to_be_bytes()).collect();
        bytes
            .get(bytes.len().saturating_sub(self.len)..)
            .map_or_else(Vec::new, <[u8]>::to_vec)
    }
}

/// EMSA-PKCS1-v1_5(message) in `len` bytes (RFC 8017 §9.2): 00 01 FF…FF 00 DigestInfo H.
fn expected_encoding(hash: Pkcs1Hash, message: &[u8], len: usize) -> Vec<u8> {
    let info = hash.digest_info();
    let digest = hash.digest(message);
    let padding = len.saturating_sub(3 + info.len() + digest.len());
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0x00, 0x01]);
    out.resize(2 + padding, 0xff);
    out.push(0x00);
    out.extend_from_slice(info);
    out.extend_from_slice(&digest);
    out
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

/// Big-endian bytes as `count` little-endian 32-bit limbs; `None` if they do not fit.
fn limbs(bytes: &[u8], count: usize) -> Option<Vec<u32>> {
    let bytes = strip_zeros(bytes);
    if bytes.len() > 4 * count {
        return None;
    }
    let mut out: Vec<u32> = bytes
        .rchunks(4)
        .map(|chunk| chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
        .collect();
    out.resize(count, 0);
    Some(out)
}

/// a < b, both of the same number of limbs.
fn less(a: &[u32], b: &[u32]) -> bool {
    a.iter().rev().lt(b.iter().rev())
}

/// R² mod n, R = 2^(32·limbs), by doubling 1 modulo n: once per key, a few thousand cheap steps.
fn r_squared(n: &[u32]) -> Vec<u32> {
    let mut x = vec![0u32; n.len()];
    if let Some(low) = x.first_mut() {
        *low = 1;
    }
    for _ in 0..64 * n.len() {
        let mut carry = 0u32;
        for limb in x.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        if carry != 0 || !less(&x, n) {
            sub_in_place(&mut x, n);
        }
    }
    x
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::jwt::jwks::b64url_decode;
    use crate::jwt::test_keys::{self, rfc_rsa_private_key};
    use jwt_compact::alg::{Rsa, RsaPublicKey};
    use jwt_compact::jwk::JsonWebKey;
    use jwt_compact::{Algorithm, AlgorithmSignature};
    use std::borrow::Cow;

    fn rfc_n() -> Vec<u8> {
        b64url_decode(test_keys::RSA_N).unwrap()
    }

    fn rfc_key() -> Pkcs1Key {
        Pkcs1Key::new(&rfc_n(), &[1, 0, 1]).unwrap()
    }

    fn rsa_crate_key() -> RsaPublicKey {
        RsaPublicKey::try_from(&JsonWebKey::Rsa {
            modulus: Cow::Owned(rfc_n()),
            public_exponent: Cow::Borrowed(&[1, 0, 1]),
            private_parts: None,
        })
        .unwrap()
    }

    fn rsa_crate_verifies(alg: &Rsa, message: &[u8], signature: &[u8]) -> bool {
        <Rsa as Algorithm>::Signature::try_from_slice(signature)
            .is_ok_and(|s| alg.verify_signature(&s, &rsa_crate_key(), message))
    }

    /// The RFC 7515 A.2 JWS: signing input and signature.
    fn rfc7515_a2() -> (Vec<u8>, Vec<u8>) {
        let (input, signature) = test_keys::RFC7515_A2_RS256.rsplit_once('.').unwrap();
        (input.as_bytes().to_vec(), b64url_decode(signature).unwrap())
    }

    #[test]
    fn rfc7515_a2_rs256_example_verifies() {
        let (input, signature) = rfc7515_a2();
        let key = rfc_key();
        assert!(key.verify(Pkcs1Hash::Sha256, &input, &signature));
        assert!(!key.verify(Pkcs1Hash::Sha384, &input, &signature));
        assert!(!key.verify(Pkcs1Hash::Sha512, &input, &signature));
        assert!(!key.verify(Pkcs1Hash::Sha256, &input[1..], &signature));
    }

    #[test]
    fn single_bit_flips_are_refused() {
        let (input, signature) = rfc7515_a2();
        let key = rfc_key();
        for bit in (0..signature.len() * 8).step_by(7) {
            let mut sig = signature.clone();
            sig[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify(Pkcs1Hash::Sha256, &input, &sig), "bit {bit}");
        }
        for bit in 0..input.len() * 8 {
            let mut message = input.clone();
            message[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !key.verify(Pkcs1Hash::Sha256, &message, &signature),
                "message bit {bit}"
            );
        }
    }

    #[test]
    fn signatures_out_of_range_or_of_another_length_are_refused() {
        let (input, signature) = rfc7515_a2();
        let key = rfc_key();
        let n = rfc_n();
        let mut n_plus_s = n.clone();
        n_plus_s[255] = n_plus_s[255].wrapping_add(1);
        for bad in [vec![0u8; 256], n.clone(), n_plus_s, vec![0xff; 256]] {
            assert!(!key.verify(Pkcs1Hash::Sha256, &input, &bad));
        }
        // n - 1 is -1: (-1)^65537 = -1, not an encoding.
        let mut n_minus_1 = n.clone();
        n_minus_1[255] -= 1;
        assert!(!key.verify(Pkcs1Hash::Sha256, &input, &n_minus_1));
        // k - 1 or k + 1 bytes, even with the same value.
        assert!(!key.verify(Pkcs1Hash::Sha256, &input, &signature[1..]));
        let padded = [&[0u8][..], &signature].concat();
        assert!(!key.verify(Pkcs1Hash::Sha256, &input, &padded));
        assert!(!key.verify(Pkcs1Hash::Sha256, &input, &[]));
    }

    #[test]
    fn even_moduli_and_zero_exponents_are_refused() {
        let n = rfc_n();
        assert!(Pkcs1Key::new(&n, &[0, 1, 0, 1]).is_some());
        assert!(Pkcs1Key::new(&n, &[3]).is_some());
        assert!(Pkcs1Key::new(&n, &[0]).is_none());
        assert!(Pkcs1Key::new(&n, &[]).is_none());
        assert!(Pkcs1Key::new(&n, &[1; 9]).is_none());
        let mut even = n.clone();
        even[255] &= 0xfe;
        assert!(Pkcs1Key::new(&even, &[1, 0, 1]).is_none());
        assert!(Pkcs1Key::new(&[1], &[1, 0, 1]).is_none());
        assert!(Pkcs1Key::new(&[], &[1, 0, 1]).is_none());
    }

    #[test]
    fn other_exponents_raise_to_their_power() {
        // s^3 and s^1 against products written out.
        let key3 = Pkcs1Key::new(&rfc_n(), &[3]).unwrap();
        let key1 = Pkcs1Key::new(&rfc_n(), &[1]).unwrap();
        let bytes: Vec<u8> = (0..4).flat_map(|i| Sha512::digest([i])).take(200).collect();
        let s = limbs(&bytes, key3.n.len()).unwrap();
        let s_r = key3.mont_mul(&s, &key3.r_squared);
        let cube = key3.mont_mul(&key3.mont_mul(&s_r, &s_r), &s);
        assert_eq!(key3.pow(&s), cube);
        assert_eq!(key1.pow(&s), s);
    }

    #[test]
    fn squares_equal_products_of_a_value_with_itself() {
        // The RFC key, and moduli of one, two and three words with their top bits set or not.
        let mut keys = vec![rfc_key()];
        for n in [
            &[0xff, 0xff, 0xff, 0xfb][..],
            &[0x01, 0x00, 0x00, 0x00, 0x01],
            &[0xf0, 0, 0, 0, 0x12, 0x34, 0x56, 0x79],
            &[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
        ] {
            keys.push(Pkcs1Key::new(n, &[1, 0, 1]).unwrap());
        }
        for key in &keys {
            let words = key.n.len();
            let mut n_minus_1 = key.n.clone();
            n_minus_1[0] -= 1;
            let mut values = vec![vec![0; words], limbs(&[1], words).unwrap(), n_minus_1];
            for seed in 0..8u8 {
                // One byte shorter than n: below it.
                let bytes: Vec<u8> = (0..8).flat_map(|i| Sha512::digest([seed, i])).collect();
                values.push(limbs(&bytes[..key.len - 1], words).unwrap());
            }
            for value in &values {
                assert_eq!(
                    key.mont_square(value),
                    key.mont_mul(value, value),
                    "{value:x?}"
                );
            }
        }
    }

    #[test]
    fn exponentiation_is_undone_by_the_private_exponent() {
        // (s^65537)^d = s mod n for the RFC key: the Montgomery product against RSA's identity,
        // for arbitrary s (a wrong product breaks it for almost every s).
        let key = rfc_key();
        let d = limbs(&b64url_decode(test_keys::RSA_D).unwrap(), key.n.len()).unwrap();
        let pow = |base: &[u32], exponent: &[u32]| {
            // Left-to-right square-and-multiply in Montgomery form.
            let base_m = key.mont_mul(base, &key.r_squared);
            let mut x = key.mont_mul(&limbs(&[1], key.n.len()).unwrap(), &key.r_squared);
            for limb in exponent.iter().rev() {
                for bit in (0..32).rev() {
                    x = key.mont_mul(&x, &x);
                    if limb >> bit & 1 == 1 {
                        x = key.mont_mul(&x, &base_m);
                    }
                }
            }
            key.mont_mul(&x, &limbs(&[1], key.n.len()).unwrap())
        };
        for seed in 0..3u8 {
            let bytes: Vec<u8> = (0..8)
                .flat_map(|i| Sha512::digest([seed, i]))
                .take(255)
                .collect();
            let s = limbs(&bytes, key.n.len()).unwrap();
            let m = key.pow(&s);
            assert_eq!(m, pow(&s, &limbs(&[1, 0, 1], 1).unwrap()));
            assert_eq!(pow(&m, &d), s);
        }
    }

    #[test]
    fn agrees_with_the_rsa_crate() {
        let private = rfc_rsa_private_key();
        let key = rfc_key();
        for (alg, hash) in [
            (Rsa::rs256(), Pkcs1Hash::Sha256),
            (Rsa::rs384(), Pkcs1Hash::Sha384),
            (Rsa::rs512(), Pkcs1Hash::Sha512),
        ] {
            for seed in 0..4u8 {
                let message = Sha256::digest([seed]).to_vec();
                let signature = alg.sign(&private, &message).as_bytes().to_vec();
                assert!(key.verify(hash, &message, &signature));
                assert!(rsa_crate_verifies(&alg, &message, &signature));
                let mut tampered = signature.clone();
                tampered[usize::from(seed) * 37] ^= 0x04;
                assert!(!key.verify(hash, &message, &tampered));
                assert!(!rsa_crate_verifies(&alg, &message, &tampered));
                // A PSS signature is no PKCS #1 v1.5 signature.
                let pss = Rsa::ps256().sign(&private, &message).as_bytes().to_vec();
                assert!(!key.verify(hash, &message, &pss));
            }
        }
    }
}

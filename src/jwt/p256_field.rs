//! Arithmetic modulo p = 2^256 - 2^224 + 2^192 + 2^96 - 1, the field of P-256, for ES256
//! verification in wasm.
//!
//! `p256`'s field elements use 64-bit words, and wasm has no 64×64→128-bit multiplication: each
//! of their word products becomes a call to the compiler's `__multi3` (four multiplications and
//! the call). Here words are 32 bits, so each word product is one native 64-bit multiplication,
//! and reduction is the NIST one (FIPS 186-4 D.2.3): additions and subtractions of the product's
//! words, no multiplication at all.
//!
//! Elements are always fully reduced (in [0, p)), so equality is equality of words. Everything
//! is variable-time: it serves signature verification, where every value is public.

use std::ops::{Add, Mul, MulAssign, Neg, Sub};

use super::words::{add_in_place, square_into, sub_in_place};

/// Words of p, least significant first.
const P: [u32; 8] = [
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0,
    0,
    1,
    0xffff_ffff,
];

/// An element of the field: eight 32-bit words, least significant first, below p.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fe([u32; 8]);

impl Fe {
    pub const ZERO: Self = Self([0; 8]);
    pub const ONE: Self = Self([1, 0, 0, 0, 0, 0, 0, 0]);

    /// The element of 32 big-endian bytes; `None` for a value ≥ p (never reduced: a coordinate
    /// out of range is invalid, not wrapped).
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let mut words = [0u32; 8];
        for (word, chunk) in words.iter_mut().zip(bytes.rchunks_exact(4)) {
            *word = u32::from_be_bytes(chunk.try_into().ok()?);
        }
        less_than_p(&words).then_some(Self(words))
    }

    /// 32 big-endian bytes.
    #[cfg(test)]
    pub fn to_bytes(self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.rchunks_exact_mut(4).zip(self.0) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        bytes
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    pub fn double(&self) -> Self {
        *self + *self
    }

    pub fn square(&self) -> Self {
        Self(reduce(&square_product(&self.0)))
    }

    /// self⁻¹ = self^(p-2) (Fermat); `None` for zero. Used only where tables are built.
    pub fn invert(&self) -> Option<Self> {
        if self.is_zero() {
            return None;
        }
        // p - 2, least significant word first; its bits from the top.
        let mut exponent = P;
        if let Some(low) = exponent.first_mut() {
            *low -= 2;
        }
        let mut result = Self::ONE;
        for word in exponent.iter().rev() {
            for bit in (0..32).rev() {
                result = result.square();
                if word >> bit & 1 == 1 {
                    result *= *self;
                }
            }
        }
        Some(result)
    }
}

impl Add for Fe {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        let mut sum = self.0;
        let carry = add_in_place(&mut sum, &other.0);
        // Below 2p: at most one subtraction (which also takes the carry out of word 7).
        if carry || !less_than_p(&sum) {
            sub_in_place(&mut sum, &P);
        }
        Self(sum)
    }
}

impl Sub for Fe {
    type Output = Self;

    fn sub(self, other: Self) -> Self {
        let mut difference = self.0;
        if sub_in_place(&mut difference, &other.0) {
            add_in_place(&mut difference, &P);
        }
        Self(difference)
    }
}

impl Neg for Fe {
    type Output = Self;

    fn neg(self) -> Self {
        Self::ZERO - self
    }
}

impl Mul for Fe {
    type Output = Self;

    fn mul(self, other: Self) -> Self {
        Self(reduce(&product(&self.0, &other.0)))
    }
}

impl MulAssign for Fe {
    fn mul_assign(&mut self, other: Self) {
        *self = *self * other;
    }
}

/// a·b, 512 bits in sixteen words (schoolbook: each step fits in 64 bits, as
/// (2^32 - 1)² + 2·(2^32 - 1) = 2^64 - 1).
fn product(a: &[u32; 8], b: &[u32; 8]) -> [u32; 16] {
    let mut t = [0u32; 16];
    for (i, &a_i) in a.iter().enumerate() {
        let a_i = u64::from(a_i);
        let mut carry = 0u64;
        for (t_k, &b_j) in t.iter_mut().skip(i).zip(b) {
            let v = u64::from(*t_k) + a_i * u64::from(b_j) + carry;
            *t_k = v as u32;
            carry = v >> 32;
        }
        if let Some(top) = t.get_mut(i + 8) {
            *top = carry as u32;
        }
    }
    t
}

/// a², 512 bits in sixteen words.
fn square_product(a: &[u32; 8]) -> [u32; 16] {
    let mut t = [0u32; 16];
    square_into(a, &mut t);
    t
}

/// c mod p for c < p², by FIPS 186-4 D.2.3: c ≡ T + 2·S1 + 2·S2 + S3 + S4 - D1 - D2 - D3 - D4,
/// sums of c's words taken here word position by word position.
fn reduce(c: &[u32; 16]) -> [u32; 8] {
    let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15] = c.map(i64::from);
    let mut words = [
        c0 + c8 + c9 - c11 - c12 - c13 - c14,
        c1 + c9 + c10 - c12 - c13 - c14 - c15,
        c2 + c10 + c11 - c13 - c14 - c15,
        c3 + 2 * c11 + 2 * c12 + c13 - c15 - c8 - c9,
        c4 + 2 * c12 + 2 * c13 + c14 - c9 - c10,
        c5 + 2 * c13 + 2 * c14 + c15 - c10 - c11,
        c6 + 3 * c14 + 2 * c15 + c13 - c8 - c9,
        c7 + 3 * c15 + c8 - c10 - c11 - c12 - c13,
    ];
    let mut out = [0u32; 8];
    // Each pass leaves a value congruent to c as words below 2^32 and a (small, signed) count
    // of 2^256 above them, then folds that count back in as 2^256 ≡ 2^224 - 2^192 - 2^96 + 1.
    // The count is at most 6 in size after the first pass, and 0 after at most two more.
    for _ in 0..4 {
        let mut carry = 0i64;
        for (o, w) in out.iter_mut().zip(&words) {
            let v = w + carry;
            *o = v as u32;
            carry = v >> 32;
        }
        if carry == 0 {
            break;
        }
        words = out.map(i64::from);
        let [w0, _, _, w3, _, _, w6, w7] = &mut words;
        *w0 += carry;
        *w3 -= carry;
        *w6 -= carry;
        *w7 += carry;
    }
    // Below 2^256 < 2p now: one subtraction at most.
    if !less_than_p(&out) {
        sub_in_place(&mut out, &P);
    }
    out
}

fn less_than_p(words: &[u32; 8]) -> bool {
    for (w, p) in words.iter().rev().zip(P.iter().rev()) {
        if w != p {
            return w < p;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use p256::FieldElement;
    use sha2::{Digest as _, Sha256};

    use super::*;

    /// p - 1, p - 2, 2^255 and other edge values, then pseudo-random ones (SHA-256 of a counter,
    /// those ≥ p skipped).
    fn samples() -> Vec<[u8; 32]> {
        let p_minus = |k: u8| {
            let mut b = Fe(P).to_bytes();
            b[31] -= k;
            b
        };
        let mut out = vec![[0u8; 32], p_minus(1), p_minus(2), p_minus(0xfe)];
        let mut one = [0u8; 32];
        one[31] = 1;
        out.push(one);
        let mut half = [0u8; 32];
        half[0] = 0x80;
        out.push(half);
        out.push([0xff; 32].map(|b| b & 0x7f));
        let mut words = [0u8; 32];
        words[4..8].copy_from_slice(&[0xff; 4]);
        out.push(words);
        for i in 0u32..200 {
            let bytes: [u8; 32] = Sha256::digest(i.to_be_bytes()).into();
            if Fe::from_bytes(&bytes).is_some() {
                out.push(bytes);
            }
        }
        out
    }

    fn theirs(bytes: &[u8; 32]) -> FieldElement {
        Option::from(FieldElement::from_bytes(&(*bytes).into())).unwrap()
    }

    fn ours(bytes: &[u8; 32]) -> Fe {
        Fe::from_bytes(bytes).unwrap()
    }

    fn same(a: Fe, b: FieldElement) -> bool {
        a.to_bytes()[..] == b.to_bytes()[..]
    }

    #[test]
    fn values_at_and_above_p_are_refused() {
        let p = Fe(P).to_bytes();
        assert_eq!(Fe::from_bytes(&p), None);
        assert_eq!(Fe::from_bytes(&[0xff; 32]), None);
        let mut p_minus_1 = p;
        p_minus_1[31] -= 1;
        assert_eq!(
            Fe::from_bytes(&p_minus_1).map(Fe::to_bytes),
            Some(p_minus_1)
        );
    }

    #[test]
    fn arithmetic_agrees_with_the_p256_crate() {
        let samples = samples();
        for a in &samples {
            for b in samples.iter().step_by(7) {
                let (x, y) = (ours(a), ours(b));
                let (u, v) = (theirs(a), theirs(b));
                assert!(same(x * y, u * v), "{a:02x?} * {b:02x?}");
                assert!(same(x + y, u + v), "{a:02x?} + {b:02x?}");
                assert!(same(x - y, u - v), "{a:02x?} - {b:02x?}");
            }
            let (x, u) = (ours(a), theirs(a));
            assert!(same(x.square(), u.square()));
            assert_eq!(square_product(&x.0), product(&x.0, &x.0), "{a:02x?}");
            assert!(same(x.double(), u.double()));
            assert!(same(-x, -u));
        }
    }

    #[test]
    fn inverses_multiply_to_one_and_zero_has_none() {
        for a in samples().iter().skip(1).step_by(5) {
            let x = ours(a);
            assert_eq!(x * x.invert().unwrap(), Fe::ONE, "{a:02x?}");
        }
        assert_eq!(Fe::ZERO.invert(), None);
        assert!(same(Fe::ONE, FieldElement::ONE));
    }
}

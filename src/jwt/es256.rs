//! `ES256` verification (ECDSA on P-256 with SHA-256, RFC 7518 §3.4) with fixed-base tables.
//!
//! A JWKS key lives for hours and the generator never changes, so both points of the ECDSA
//! equation `R = u1·G + u2·Q` are fixed bases: the first time a key verifies a token we store
//! the multiples `d·2^(w·i)·Q` (1 ≤ d ≤ 2^(w-1), one row per w-bit window) in affine form, and
//! the generator's table is built once per VM. A verification is then a short run of mixed
//! additions, one per non-zero signed digit of each scalar (at most 52 + 37), and no doubling
//! (`p256`'s own verification runs two separate scalar multiplications: about 500 doublings and
//! 128 additions, with constant-time table scans).
//!
//! Everything here is public data (the key, the signature, the signed bytes): the arithmetic is
//! variable-time on purpose (direct table indexing, branches on special cases, `invert_vartime`);
//! it must never be used with a secret scalar.
//!
//! The field arithmetic is RustCrypto's `p256` (`Fe`, exposed by its `expose-field`
//! feature). The point formulas are ours because `p256` 0.13 cannot batch-normalise its
//! projective points (its field element lacks the `Invert` that `primeorder` requires), and a
//! table needs one shared inversion instead of one per point: Jacobian coordinates, a = -3
//! (Cohen-Miyaji-Ono; the "madd-2007-bl" and "dbl-2001-b" formulas of the Explicit-Formulas
//! Database), with the special cases (identity, equal or opposite points) handled by branches.

use std::cell::Cell;
use std::sync::OnceLock;

use p256::elliptic_curve::ops::{Invert as _, Reduce};
use p256::elliptic_curve::{Field as _, PrimeField as _};
use p256::{FieldBytes, Scalar, U256};
use sha2::{Digest as _, Sha256};

use super::p256_field::Fe;

/// Bytes of one P-256 coordinate / scalar.
pub const P256_BYTES: usize = 32;

/// Window width (bits) of a key's table: 52 rows of 16 points, 832 affine points (52 KiB) per
/// key; a verification adds at most 52 of them.
const KEY_WINDOW: u32 = 5;
/// Window width of the generator's table, built once per VM: 37 rows of 64 points (148 KiB); at
/// most 37 additions.
const GENERATOR_WINDOW: u32 = 7;

/// p - n, big-endian: an x(R) in [n, p) is congruent to r when x(R) = r + n, possible only
/// for r < p - n.
const P_MINUS_N: [u8; P256_BYTES] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x43, 0x19, 0x05, 0x53, 0x58, 0xe8, 0x61, 0x7b,
    0x0c, 0x46, 0x35, 0x3d, 0x03, 0x9c, 0xda, 0xae,
];
/// b of the curve equation y² = x³ - 3x + b, big-endian.
const CURVE_B: [u8; P256_BYTES] = [
    0x5a, 0xc6, 0x35, 0xd8, 0xaa, 0x3a, 0x93, 0xe7, 0xb3, 0xeb, 0xbd, 0x55, 0x76, 0x98, 0x86, 0xbc,
    0x65, 0x1d, 0x06, 0xb0, 0xcc, 0x53, 0xb0, 0xf6, 0x3b, 0xce, 0x3c, 0x3e, 0x27, 0xd2, 0x60, 0x4b,
];
/// The generator G, big-endian coordinates.
const GENERATOR_X: [u8; P256_BYTES] = [
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
];
const GENERATOR_Y: [u8; P256_BYTES] = [
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];
/// n, the group order, big-endian.
const ORDER: [u8; P256_BYTES] = [
    0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
    0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// Most key tables alive in one VM (52 KiB each, 1.7 MiB in all): past it, a key verifies without
/// one (windowed double-and-add, about 3 times the work) until tables are freed.
const MAX_KEY_TABLES: usize = 32;

thread_local! {
    /// Key tables alive on this thread (a wasm VM has exactly one).
    static KEY_TABLES: Cell<usize> = const { Cell::new(0) };
}

/// A P-256 public key; its table is built by the first verification that needs it, so keys that
/// never sign a token cost no table.
pub struct Es256Key {
    point: Affine,
    table: OnceLock<Vec<Affine>>,
}

impl Drop for Es256Key {
    fn drop(&mut self) {
        if self.table.get().is_some() {
            KEY_TABLES.with(|n| n.set(n.get().saturating_sub(1)));
        }
    }
}

impl Es256Key {
    /// The key of JWK `x`, `y` (32 bytes each, RFC 7518 §6.2.1.2): `None` unless the point is on
    /// the curve. The identity has no affine coordinates, so it cannot be given.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Option<Self> {
        let point = Affine::from_coordinates(x, y)?;
        Some(Self {
            point,
            table: OnceLock::new(),
        })
    }

    /// Whether `signature` (`r || s`, 64 bytes) is a valid ECDSA signature of SHA-256(`message`)
    /// by this key (SEC 1 §4.1.4, FIPS 186-5 §6.4.2). High-s signatures are valid: JWS does not
    /// require the low-s form.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_with(self.table(), message, signature)
    }

    /// The key's table: built now if the VM's budget allows, `None` past it.
    fn table(&self) -> Option<&[Affine]> {
        if let Some(table) = self.table.get() {
            return Some(table);
        }
        if KEY_TABLES.with(Cell::get) >= MAX_KEY_TABLES {
            return None;
        }
        let table = table(self.point, KEY_WINDOW)?;
        KEY_TABLES.with(|n| n.set(n.get() + 1));
        Some(self.table.get_or_init(|| table))
    }

    fn verify_with(&self, table: Option<&[Affine]>, message: &[u8], signature: &[u8]) -> bool {
        let Some((r, s)) = signature_scalars(signature) else {
            return false;
        };
        let Some(generator) = generator_table() else {
            return false;
        };
        let e = <Scalar as Reduce<U256>>::reduce_bytes(&Sha256::digest(message));
        let Some(w) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let u2 = r * w;
        // u2·Q first: without a table it needs doublings, which must not touch u1·G.
        let mut sum = match table {
            Some(table) => {
                let mut sum = Jacobian::IDENTITY;
                add_multiple(&mut sum, table, KEY_WINDOW, &u2);
                sum
            }
            None => match multiply(self.point, &u2) {
                Some(sum) => sum,
                None => return false,
            },
        };
        add_multiple(&mut sum, generator, GENERATOR_WINDOW, &(e * w));
        x_matches(&sum, &r.to_bytes())
    }
}

/// k·P without a table: signed windows of KEY_WINDOW bits from the top, with P's first row
/// (1..=16 times P) built for the occasion.
fn multiply(point: Affine, k: &Scalar) -> Option<Jacobian> {
    let row = normalize(&multiples(point, 1 << (KEY_WINDOW - 1)))?;
    let mut sum = Jacobian::IDENTITY;
    for digit in signed_digits(k, KEY_WINDOW).iter().rev() {
        if !sum.is_identity() {
            for _ in 0..KEY_WINDOW {
                sum = sum.double();
            }
        }
        add_digit(&mut sum, &row, *digit);
    }
    Some(sum)
}

/// `r` and `s` of `r || s`, each in [1, n-1].
fn signature_scalars(signature: &[u8]) -> Option<(Scalar, Scalar)> {
    if signature.len() != 2 * P256_BYTES {
        return None;
    }
    let (r, s) = signature.split_at(P256_BYTES);
    Some((nonzero_scalar(r)?, nonzero_scalar(s)?))
}

/// A scalar in [1, n-1] from 32 big-endian bytes; `None` for 0 and for values ≥ n (no reduction:
/// a signature component out of range is invalid, not wrapped).
fn nonzero_scalar(bytes: &[u8]) -> Option<Scalar> {
    let bytes: [u8; P256_BYTES] = bytes.try_into().ok()?;
    let scalar = Option::<Scalar>::from(Scalar::from_repr(FieldBytes::from(bytes)))?;
    (!bool::from(scalar.is_zero())).then_some(scalar)
}

/// Whether x(R) mod n = r, without an inversion: x(R) = X/Z², so compare X with r·Z² and, when
/// r + n is still a field element, with (r + n)·Z². The identity never matches.
fn x_matches(point: &Jacobian, r: &FieldBytes) -> bool {
    if point.is_identity() {
        return false;
    }
    let zz = point.z.square();
    let Some(r_field) = Fe::from_bytes(&(*r).into()) else {
        return false;
    };
    if r_field * zz == point.x {
        return true;
    }
    if r[..] >= P_MINUS_N[..] {
        return false;
    }
    let Some(order) = Fe::from_bytes(&ORDER) else {
        return false;
    };
    (r_field + order) * zz == point.x
}

/// The generator's table, built on first use (once per VM: wasm VMs are single-threaded).
fn generator_table() -> Option<&'static [Affine]> {
    static TABLE: OnceLock<Option<Vec<Affine>>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            table(
                Affine::from_coordinates(&GENERATOR_X, &GENERATOR_Y)?,
                GENERATOR_WINDOW,
            )
        })
        .as_deref()
}

/// Windows of `width` bits that hold any scalar in signed-digit form: 256 bits plus the carry
/// out of the top window.
const fn windows(width: u32) -> usize {
    (256 / width + 1) as usize
}

/// Row `i` holds `d·2^(width·i)·P` for d = 1..=2^(width-1), in affine form. `None` only if a
/// multiple were the identity, which cannot happen for a point of prime order n > 2^255.
fn table(point: Affine, width: u32) -> Option<Vec<Affine>> {
    // Each row's base 2^(width·i)·P, then its multiples by mixed additions of that base.
    let mut bases = Vec::with_capacity(windows(width));
    let mut base = Jacobian::from(point);
    for _ in 0..windows(width) {
        bases.push(base);
        for _ in 0..width {
            base = base.double();
        }
    }
    let bases = normalize(&bases)?;
    let row = 1usize << (width - 1);
    let all: Vec<Jacobian> = bases
        .iter()
        .flat_map(|base| multiples(*base, row))
        .collect();
    normalize(&all)
}

/// 1·P, 2·P, …, count·P.
fn multiples(point: Affine, count: usize) -> Vec<Jacobian> {
    let mut out = Vec::with_capacity(count);
    let mut multiple = Jacobian::from(point);
    out.push(multiple);
    for _ in 1..count {
        multiple = multiple.add_affine(&point);
        out.push(multiple);
    }
    out
}

/// Affine forms of Jacobian points with one field inversion for all (Montgomery's trick).
fn normalize(points: &[Jacobian]) -> Option<Vec<Affine>> {
    // prefix[i] = z_0·…·z_i
    let mut prefix = Vec::with_capacity(points.len());
    let mut product = Fe::ONE;
    for point in points {
        product *= point.z;
        prefix.push(product);
    }
    let mut inverse = product.invert()?;
    let mut out = vec![Affine::default(); points.len()];
    for i in (0..points.len()).rev() {
        let point = points.get(i)?;
        // inverse = (z_0·…·z_i)⁻¹ here.
        let before = if i == 0 { Fe::ONE } else { *prefix.get(i - 1)? };
        let z_inverse = inverse * before;
        inverse *= point.z;
        let zz = z_inverse.square();
        *out.get_mut(i)? = Affine {
            x: point.x * zz,
            y: point.y * zz * z_inverse,
        };
    }
    Some(out)
}

/// `sum += k·P`, with `table` the rows of P for windows of `width` bits: one addition per non-zero
/// signed digit, no doubling.
fn add_multiple(sum: &mut Jacobian, table: &[Affine], width: u32, k: &Scalar) {
    let rows = table.chunks_exact(1 << (width - 1));
    for (row, digit) in rows.zip(signed_digits(k, width)) {
        add_digit(sum, row, digit);
    }
}

/// `sum += digit·B` with `row` = [1·B, 2·B, …]: a negative digit adds the negated point.
fn add_digit(sum: &mut Jacobian, row: &[Affine], digit: i8) {
    let Some(point) = usize::from(digit.unsigned_abs())
        .checked_sub(1)
        .and_then(|d| row.get(d))
    else {
        return;
    };
    *sum = if digit < 0 {
        sum.add_affine(&Affine {
            x: point.x,
            y: -point.y,
        })
    } else {
        sum.add_affine(point)
    };
}

/// k as signed digits d_i in [-2^(width-1), 2^(width-1)], k = Σ d_i·2^(width·i), least
/// significant first (`width` from 5 to 7: at most 52 digits; the rest are zero). A row then needs
/// only the positive multiples.
fn signed_digits(k: &Scalar, width: u32) -> [i8; 64] {
    let bytes = k.to_bytes();
    let half = 1u32 << (width - 1);
    let mut digits = [0i8; 64];
    let mut carry = 0;
    for (i, digit) in digits.iter_mut().enumerate().take(windows(width)) {
        let value = window(&bytes, i * width as usize, width) + carry;
        // value ≤ 2^width, so both casts are lossless for width ≤ 7.
        *digit = if value > half {
            carry = 1;
            -((2 * half - value) as i8)
        } else {
            carry = 0;
            value as i8
        };
    }
    digits
}

/// Bits `[position, position + width)` of a big-endian 256-bit number (zero past bit 255);
/// `width` ≤ 8.
fn window(bytes: &FieldBytes, position: usize, width: u32) -> u32 {
    let byte = |index: usize| -> u32 {
        (P256_BYTES - 1)
            .checked_sub(index)
            .and_then(|i| bytes.get(i))
            .map_or(0, |b| u32::from(*b))
    };
    let low = position / 8;
    let pair = byte(low) | (byte(low + 1) << 8);
    (pair >> (position % 8)) & ((1 << width) - 1)
}

/// A point other than the identity in affine coordinates.
#[derive(Clone, Copy, Default)]
struct Affine {
    x: Fe,
    y: Fe,
}

impl Affine {
    /// The point (x, y) given as 32 big-endian bytes each: `None` unless both are below p and
    /// y² = x³ - 3x + b (SEC 1 §3.2.2.1; the cofactor is 1, so the point is in the group).
    fn from_coordinates(x: &[u8], y: &[u8]) -> Option<Self> {
        let field = |bytes: &[u8]| -> Option<Fe> { Fe::from_bytes(bytes.try_into().ok()?) };
        let (x, y, b) = (field(x)?, field(y)?, field(&CURVE_B)?);
        let rhs = x.square() * x - (x.double() + x) + b;
        (y.square() == rhs).then_some(Self { x, y })
    }
}

/// A point in Jacobian coordinates: (X/Z², Y/Z³); Z = 0 is the identity.
#[derive(Clone, Copy)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl From<Affine> for Jacobian {
    fn from(p: Affine) -> Self {
        Self {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }
}

impl Jacobian {
    const IDENTITY: Self = Self {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    fn is_identity(&self) -> bool {
        self.z.is_zero()
    }

    // Out of line (here and in `add_affine`): inlined into each caller they cost kilobytes of
    // .wasm for no measurable speed.
    /// 2·self for a = -3 (dbl-2001-b: 3M + 5S). The identity doubles to itself (Z3 = 2·Y·Z = 0),
    /// and P-256 has no point of order 2.
    #[inline(never)]
    fn double(&self) -> Self {
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x * gamma;
        let t = (self.x - delta) * (self.x + delta);
        let alpha = t.double() + t;
        let beta4 = beta.double().double();
        let x = alpha.square() - beta4.double();
        let z = (self.y + self.z).square() - gamma - delta;
        let gamma_sq8 = gamma.square().double().double().double();
        let y = alpha * (beta4 - x) - gamma_sq8;
        Self { x, y, z }
    }

    /// self + p (madd-2007-bl: 7M + 4S), with the cases the formula does not cover taken apart.
    #[inline(never)]
    fn add_affine(&self, p: &Affine) -> Self {
        if self.is_identity() {
            return Self::from(*p);
        }
        let z1z1 = self.z.square();
        let u2 = p.x * z1z1;
        let s2 = p.y * self.z * z1z1;
        let h = u2 - self.x;
        let r = (s2 - self.y).double();
        if h.is_zero() {
            // Same x: the same point (double it) or its opposite (the sum is the identity).
            return if r.is_zero() {
                self.double()
            } else {
                Self::IDENTITY
            };
        }
        let hh = h.square();
        let i = hh.double().double();
        let j = h * i;
        let v = self.x * i;
        let x = r.square() - j - v.double();
        let y = r * (v - x) - (self.y * j).double();
        let z = (self.z + h).square() - z1z1 - hh;
        Self { x, y, z }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::jwt::test_keys::unhex;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::{EncodedPoint, FieldElement, ProjectivePoint};

    /// RFC 6979 A.2.5: the P-256 private key and its public point.
    const RFC6979_X: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
    const RFC6979_UX: &str = "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6";
    const RFC6979_UY: &str = "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";
    /// RFC 6979 A.2.5, "With SHA-256": `r || s` for "sample" and "test".
    const RFC6979_SAMPLE: &str = "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8";
    const RFC6979_TEST: &str = "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083";
    /// n, the order of the group.
    const ORDER: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

    fn rfc6979_key() -> Es256Key {
        Es256Key::from_coordinates(&unhex(RFC6979_UX), &unhex(RFC6979_UY)).unwrap()
    }

    fn key_of(verifying: &VerifyingKey) -> Es256Key {
        let point = verifying.to_encoded_point(false);
        Es256Key::from_coordinates(point.x().unwrap(), point.y().unwrap()).unwrap()
    }

    /// A signing key from a seed: SHA-256 of it, which is below n for every seed used here.
    fn signing_key(seed: u32) -> SigningKey {
        SigningKey::from_slice(&Sha256::digest(seed.to_be_bytes())).unwrap()
    }

    fn scalar_hex(s: &Scalar) -> Vec<u8> {
        s.to_bytes().to_vec()
    }

    #[test]
    fn rfc6979_a25_public_key_matches_the_private_key() {
        let signer = SigningKey::from_slice(&unhex(RFC6979_X)).unwrap();
        let point = signer.verifying_key().to_encoded_point(false);
        assert_eq!(point.x().unwrap().to_vec(), unhex(RFC6979_UX));
        assert_eq!(point.y().unwrap().to_vec(), unhex(RFC6979_UY));
    }

    #[test]
    fn rfc6979_a25_sha256_signatures_verify() {
        let key = rfc6979_key();
        let sample = unhex(RFC6979_SAMPLE);
        let test = unhex(RFC6979_TEST);
        assert!(key.verify(b"sample", &sample));
        assert!(key.verify(b"test", &test));
        assert!(!key.verify(b"test", &sample));
        assert!(!key.verify(b"sample", &test));
        assert!(!key.verify(b"Sample", &sample));
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let key = rfc6979_key();
        let sample = unhex(RFC6979_SAMPLE);
        // Every bit of r (first half) and s (second half).
        for bit in 0..sample.len() * 8 {
            let mut sig = sample.clone();
            sig[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify(b"sample", &sig), "bit {bit}");
        }
        // Every bit of the message.
        for bit in 0..6 * 8 {
            let mut message = b"sample".to_vec();
            message[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify(&message, &sample), "message bit {bit}");
        }
    }

    #[test]
    fn out_of_range_r_and_s_are_refused() {
        let key = rfc6979_key();
        let sample = unhex(RFC6979_SAMPLE);
        let (r, s) = sample.split_at(32);
        let order = unhex(ORDER);
        let mut order_plus_r = order.clone();
        // n + r overflows 256 bits for this r; n + 1 does not.
        order_plus_r[31] = order_plus_r[31].wrapping_add(1);
        let zero = vec![0u8; 32];
        let ones = vec![0xffu8; 32];
        for bad in [&zero, &order, &order_plus_r, &ones] {
            assert!(!key.verify(b"sample", &[bad.as_slice(), s].concat()));
            assert!(!key.verify(b"sample", &[r, bad.as_slice()].concat()));
        }
        // Wrong lengths.
        assert!(!key.verify(b"sample", &sample[..63]));
        assert!(!key.verify(b"sample", &[sample.as_slice(), &[0]].concat()));
        assert!(!key.verify(b"sample", &[]));
    }

    #[test]
    fn high_s_is_valid() {
        // (r, n - s) is the same signature's other form: ECDSA accepts both, and JWS sets no
        // low-s rule.
        let key = rfc6979_key();
        let sample = unhex(RFC6979_SAMPLE);
        let (r, s) = signature_scalars(&sample).unwrap();
        let high = [scalar_hex(&r), scalar_hex(&-s)].concat();
        assert!(key.verify(b"sample", &high));
        let sig = Signature::from_slice(&high).unwrap();
        let signer = SigningKey::from_slice(&unhex(RFC6979_X)).unwrap();
        assert!(signer.verifying_key().verify(b"sample", &sig).is_ok());
    }

    #[test]
    fn the_generator_constants_are_p256s() {
        let g = ProjectivePoint::GENERATOR
            .to_affine()
            .to_encoded_point(false);
        assert_eq!(g.x().unwrap().to_vec(), GENERATOR_X);
        assert_eq!(g.y().unwrap().to_vec(), GENERATOR_Y);
    }

    #[test]
    fn points_off_the_curve_are_refused_at_load() {
        let x = unhex(RFC6979_UX);
        let mut y = unhex(RFC6979_UY);
        assert!(Es256Key::from_coordinates(&x, &y).is_some());
        y[31] ^= 1;
        assert!(Es256Key::from_coordinates(&x, &y).is_none());
        // Coordinates ≥ p, the all-zero pair, wrong lengths.
        let p = unhex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        assert!(Es256Key::from_coordinates(&p, &unhex(RFC6979_UY)).is_none());
        assert!(Es256Key::from_coordinates(&[0; 32], &[0; 32]).is_none());
        assert!(Es256Key::from_coordinates(&x[1..], &unhex(RFC6979_UY)).is_none());
        assert!(Es256Key::from_coordinates(&[x.as_slice(), &[0]].concat(), &y).is_none());
    }

    #[test]
    fn a_sum_at_infinity_is_refused() {
        // With Q = d·G, u1·G + u2·Q = (e + r·d)/s · G: for d = -e/r it is the identity, whatever
        // s is. The signature must be refused, not compared through a meaningless x.
        let e = <Scalar as Reduce<U256>>::reduce_bytes(&Sha256::digest(b"sample"));
        let r = Scalar::from(7u64);
        let d = -(e * Option::<Scalar>::from(r.invert()).unwrap());
        let q = (ProjectivePoint::GENERATOR * d)
            .to_affine()
            .to_encoded_point(false);
        let key = Es256Key::from_coordinates(q.x().unwrap(), q.y().unwrap()).unwrap();
        for s in [1u64, 2, 12345] {
            let sig = [scalar_hex(&r), scalar_hex(&Scalar::from(s))].concat();
            assert!(!key.verify(b"sample", &sig));
            let sig = Signature::from_slice(&sig).unwrap();
            let p256_key = VerifyingKey::from_encoded_point(&q).unwrap();
            assert!(p256_key.verify(b"sample", &sig).is_err());
        }
    }

    /// The affine coordinates of a Jacobian point, as p256 encodes them (`None`: the identity).
    fn encoded(point: &Jacobian) -> Option<EncodedPoint> {
        let affine = normalize(&[*point])?;
        let p = affine.first()?;
        Some(EncodedPoint::from_affine_coordinates(
            &p.x.to_bytes().into(),
            &p.y.to_bytes().into(),
            false,
        ))
    }

    fn generic(k: &Scalar) -> Option<EncodedPoint> {
        let point = (ProjectivePoint::GENERATOR * k).to_affine();
        (!bool::from(point.is_identity())).then(|| point.to_encoded_point(false))
    }

    #[test]
    fn edge_scalars_multiply_like_the_generic_multiplication() {
        // k·G through the tables against p256's own multiplication, for scalars whose signed
        // digits carry through every window, and 0.
        let minus_one = -Scalar::ONE;
        let half = Option::<Scalar>::from(Scalar::from(2u64).invert()).unwrap();
        let mut edges = vec![
            Scalar::ZERO,
            Scalar::ONE,
            Scalar::from(2u64),
            minus_one,
            half,
            -half,
        ];
        for width in [KEY_WINDOW, GENERATOR_WINDOW] {
            let top = Scalar::from(1u64 << (width - 1));
            edges.extend([top, top + Scalar::ONE, top - Scalar::ONE, -top]);
        }
        let g = generator_table().unwrap();
        let g_key = table(g[0], KEY_WINDOW).unwrap();
        for k in edges {
            for (t, width) in [(g_key.as_slice(), KEY_WINDOW), (g, GENERATOR_WINDOW)] {
                let mut sum = Jacobian::IDENTITY;
                add_multiple(&mut sum, t, width, &k);
                assert_eq!(encoded(&sum), generic(&k));
            }
        }
    }

    #[test]
    fn point_formulas_cover_doubling_and_opposites() {
        let g = Jacobian::from(generator_table().unwrap()[0]);
        let g_affine = generator_table().unwrap()[0];
        let two = Scalar::from(2u64);
        // G + G through the addition takes the doubling branch.
        assert_eq!(encoded(&g.add_affine(&g_affine)), generic(&two));
        assert_eq!(encoded(&g.double()), generic(&two));
        // G + (-G) is the identity; the identity plus G is G; the identity doubles to itself.
        let minus = Affine {
            x: g_affine.x,
            y: -g_affine.y,
        };
        assert!(g.add_affine(&minus).is_identity());
        assert_eq!(
            encoded(&Jacobian::IDENTITY.add_affine(&g_affine)),
            generic(&Scalar::ONE)
        );
        assert!(Jacobian::IDENTITY.double().is_identity());
        // A non-trivial Z: 3G = 2G + G with 2G in Jacobian form.
        assert_eq!(
            encoded(&g.double().add_affine(&g_affine)),
            generic(&Scalar::from(3u64))
        );
        assert!(!x_matches(&Jacobian::IDENTITY, &Scalar::ONE.to_bytes()));
    }

    #[test]
    fn an_x_between_n_and_p_matches_r_equal_to_x_minus_n() {
        // x(R) mod n = r also holds when x(R) = r + n (possible for r < p - n, about 2^-128 of
        // signatures, so never met by chance): find a curve point with x = n + t.
        let b = FieldElement::from_bytes(&FieldBytes::from(
            <[u8; 32]>::try_from(unhex(
                "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
            ))
            .unwrap(),
        ))
        .unwrap();
        let order = FieldElement::from_bytes(&FieldBytes::from(super::ORDER)).unwrap();
        let (t, x, y) = (1u64..100)
            .find_map(|t| {
                let x = order + FieldElement::from_u64(t);
                let y2 = x.square() * x - x.double() - x + b;
                Option::<FieldElement>::from(y2.sqrt()).map(|y| (t, x, y))
            })
            .unwrap();
        // Found with p256's square root, then carried over into our field elements.
        let ours = |v: FieldElement| Fe::from_bytes(&v.to_bytes().into()).unwrap();
        let (x, y) = (ours(x), ours(y));
        let z = ours(FieldElement::from_u64(12345));
        let zz = z.square();
        let point = Jacobian {
            x: x * zz,
            y: y * zz * z,
            z,
        };
        assert!(x_matches(&point, &Scalar::from(t).to_bytes()));
        assert!(!x_matches(&point, &Scalar::from(t + 1).to_bytes()));
        // r = x itself is not a scalar (x ≥ n), so it can never be given; an r ≥ p - n never
        // takes the r + n branch.
        let big = Scalar::from_repr(FieldBytes::from(P_MINUS_N)).unwrap();
        assert!(!x_matches(&point, &(big + Scalar::from(t)).to_bytes()));
    }

    #[test]
    fn the_path_without_a_table_verifies_the_same() {
        let key = rfc6979_key();
        let sample = unhex(RFC6979_SAMPLE);
        assert!(key.verify_with(None, b"sample", &sample));
        assert!(key.verify_with(None, b"test", &unhex(RFC6979_TEST)));
        assert!(!key.verify_with(None, b"test", &sample));
        for bit in (0..sample.len() * 8).step_by(5) {
            let mut sig = sample.clone();
            sig[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify_with(None, b"sample", &sig), "bit {bit}");
        }
        for seed in 0..8u32 {
            let signer = signing_key(seed + 500);
            let key = key_of(signer.verifying_key());
            let message = format!("message {seed}");
            let signature: Signature = signer.sign(message.as_bytes());
            assert!(key.verify_with(None, message.as_bytes(), &signature.to_bytes()));
            assert!(!key.verify_with(None, b"another message", &signature.to_bytes()));
        }
        // k·P without a table for the edge scalars, against p256.
        let g = generator_table().unwrap()[0];
        for k in [
            Scalar::ONE,
            -Scalar::ONE,
            Scalar::from(16u64),
            Scalar::from(17u64),
            -Scalar::from(16u64),
        ] {
            assert_eq!(encoded(&multiply(g, &k).unwrap()), generic(&k));
        }
        assert!(multiply(g, &Scalar::ZERO).unwrap().is_identity());
    }

    #[test]
    fn tables_are_built_on_first_use_within_the_budget() {
        let live = || KEY_TABLES.with(Cell::get);
        let sample = unhex(RFC6979_SAMPLE);
        let before = live();
        let key = rfc6979_key();
        assert!(key.table.get().is_none());
        assert_eq!(live(), before);
        assert!(key.verify(b"sample", &sample));
        assert!(key.table.get().is_some());
        assert_eq!(live(), before + 1);
        // A failed verification uses the same table; another key gets its own.
        assert!(!key.verify(b"test", &sample));
        let other = rfc6979_key();
        assert!(other.verify(b"sample", &sample));
        assert_eq!(live(), before + 2);
        drop(other);
        drop(key);
        assert_eq!(live(), before);
        // Past the budget a key still verifies, without a table, and builds one once there is room.
        KEY_TABLES.with(|n| n.set(MAX_KEY_TABLES));
        let key = rfc6979_key();
        assert!(key.verify(b"sample", &sample));
        assert!(!key.verify(b"test", &sample));
        assert!(key.table.get().is_none());
        KEY_TABLES.with(|n| n.set(before));
        assert!(key.verify(b"sample", &sample));
        assert!(key.table.get().is_some());
        drop(key);
        assert_eq!(live(), before);
    }

    #[test]
    fn agrees_with_p256_on_random_keys_and_messages() {
        for seed in 0..24u32 {
            let signer = signing_key(seed);
            let verifying = signer.verifying_key();
            let key = key_of(verifying);
            let message = Sha256::digest(seed.to_le_bytes()).to_vec();
            let signature: Signature = signer.sign(&message);
            let bytes = signature.to_bytes();
            assert!(key.verify(&message, &bytes));
            assert!(verifying.verify(&message, &signature).is_ok());
            // Another key, another message, a tampered signature: both refuse.
            let other = key_of(signing_key(seed + 1000).verifying_key());
            assert!(!other.verify(&message, &bytes));
            assert!(!key.verify(&message[1..], &bytes));
            let mut tampered = bytes.to_vec();
            tampered[(seed as usize * 7) % 64] ^= 0x10;
            let ours = key.verify(&message, &tampered);
            let theirs = Signature::from_slice(&tampered)
                .is_ok_and(|s| verifying.verify(&message, &s).is_ok());
            assert_eq!(ours, theirs);
            assert!(!ours);
        }
    }

    #[test]
    fn agrees_with_p256_on_arbitrary_signatures() {
        // Random (r, s) pairs are (almost surely) invalid: both verifiers must refuse each.
        let key_pair = signing_key(7);
        let verifying = key_pair.verifying_key();
        let key = key_of(verifying);
        for seed in 0..16u32 {
            let r = <Scalar as Reduce<U256>>::reduce_bytes(&Sha256::digest([seed as u8, 1]));
            let s = <Scalar as Reduce<U256>>::reduce_bytes(&Sha256::digest([seed as u8, 2]));
            let sig = [scalar_hex(&r), scalar_hex(&s)].concat();
            let theirs = verifying
                .verify(b"m", &Signature::from_slice(&sig).unwrap())
                .is_ok();
            assert_eq!(key.verify(b"m", &sig), theirs);
            assert!(!theirs);
        }
    }
}

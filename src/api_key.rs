//! API keys: their format (prefix, 256 random bits, checksum), generation, and the digest store
//! that decides whether a presented key is valid. Configuration only ever holds SHA-256 digests.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::secret::{ct_eq, Secret};

/// Every apiguard key starts with this, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "agk_";
/// Random bytes in a key: 256 bits from the OS CSPRNG.
pub const KEY_RANDOM_BYTES: usize = 32;
/// 62^43 > 2^256, so 43 base62 digits hold the random bytes.
const BODY_LEN: usize = 43;
/// 62^6 > 2^32: six base62 digits hold a 32-bit checksum.
const CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A source of cryptographically secure random bytes (the OS CSPRNG in production).
pub trait RandomSource {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomError(pub String);

/// Makes a new key from the random source: `agk_` + 43 base62 digits + 6 base62 checksum digits.
pub fn generate(rng: &mut impl RandomSource) -> Result<String, RandomError> {
    let mut random = [0u8; KEY_RANDOM_BYTES];
    rng.fill(&mut random)?;
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(KEY_PREFIX);
    key.push_str(&base62_fixed(&random, BODY_LEN));
    let checksum = checksum_digits(checksum_of(&key));
    key.extend(checksum.iter().map(|&d| char::from(d)));
    Ok(key)
}

/// SHA-256 digest of a whole key: what configuration stores.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A key's short fingerprint: the first 16 hex digits of its digest. Safe to show and log (it
/// names a key without helping anyone guess it): audit records carry it, and
/// `apiguard-keygen --revoke` accepts it.
pub fn fingerprint(digest: &[u8; 32]) -> String {
    crate::secret::to_hex(digest.get(..8).unwrap_or(digest))
}

/// The checksum covers the prefix and body: the first four bytes of their SHA-256.
fn checksum_of(prefix_and_body: &str) -> [u8; 4] {
    let d: [u8; 32] = Sha256::digest(prefix_and_body.as_bytes()).into();
    [d[0], d[1], d[2], d[3]]
}

/// The checksum as its six base62 digits, in integer arithmetic (checked on every request).
fn checksum_digits(checksum: [u8; 4]) -> [u8; CHECKSUM_LEN] {
    let mut number = u32::from_be_bytes(checksum);
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62.get((number % 62) as usize).copied().unwrap_or(b'0');
        number /= 62;
    }
    digits
}

/// Big-endian bytes as exactly `width` base62 digits (most significant first).
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = vec![0u8; width];
    for slot in digits.iter_mut().rev() {
        // Long division of the big-endian number by 62; the remainder is the next digit.
        let mut rem: u32 = 0;
        for byte in number.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = BASE62.get(rem as usize).copied().unwrap_or(b'0');
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// True when `key` has the apiguard shape and its checksum matches: a cheap filter that refuses
/// garbage and typos.
pub fn is_well_formed(key: &str) -> bool {
    has_key_shape(key) && checksum_matches(key)
}

/// The prefix, the length and base62 digits only (no digest computed).
fn has_key_shape(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.starts_with(KEY_PREFIX)
        && key
            .bytes()
            .skip(KEY_PREFIX.len())
            .all(|c| c.is_ascii_alphanumeric())
}

/// Whether the last six digits of a key of the right shape are the checksum of the rest.
fn checksum_matches(key: &str) -> bool {
    let Some((head, checksum)) = key.split_at_checked(KEY_PREFIX.len() + BODY_LEN) else {
        return false;
    };
    // The body must not exceed 2^256 (only a forged key can), so decoding is not needed: the
    // checksum is over the text, and a one-character change alters it.
    ct_eq(&checksum_digits(checksum_of(head)), checksum.as_bytes())
}

/// One configured key, compiled.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    digest: [u8; 32],
    pub consumer: Rc<str>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    /// The key's rate-limit plan, when it has its own.
    pub plan: Option<Rc<str>>,
    /// Whether the key behind the digest has a valid checksum, once a request presented it: the
    /// answer can never change, so later requests skip that second SHA-256.
    checksum_ok: Cell<Option<bool>>,
}

impl KeyRecord {
    pub fn with_plan(mut self, plan: Option<Rc<str>>) -> Self {
        self.plan = plan;
        self
    }

    /// SHA-256 of the key (names its rate-limit bucket under `bucket_by: key`).
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Revocation and expiry at `now` (Unix seconds).
    pub fn check(&self, now: i64) -> Result<(), KeyRejection> {
        if self.revoked {
            return Err(KeyRejection::Revoked);
        }
        if self.expires_at.is_some_and(|at| now >= at) {
            return Err(KeyRejection::Expired);
        }
        Ok(())
    }

    pub fn new(
        digest: [u8; 32],
        consumer: Rc<str>,
        expires_at: Option<i64>,
        revoked: bool,
    ) -> Self {
        Self {
            digest,
            consumer,
            expires_at,
            revoked,
            plan: None,
            checksum_ok: Cell::new(None),
        }
    }

    /// The checksum verdict for `key`, the key whose digest this record holds.
    fn checksum_matches(&self, key: &str) -> bool {
        if let Some(known) = self.checksum_ok.get() {
            return known;
        }
        let ok = checksum_matches(key);
        self.checksum_ok.set(Some(ok));
        ok
    }
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Malformed,
    Unknown,
    Revoked,
    Expired,
}

/// The digests are uniformly random, so their first eight bytes are already a good hash.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Configured keys indexed by the first 64 bits of their digest: O(1) lookup, then a
/// constant-time comparison of the whole digest.
#[derive(Default)]
pub struct KeyStore {
    by_prefix: HashMap<u64, KeyRecord, BuildHasherDefault<PrefixHasher>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyStore({} keys)", self.by_prefix.len())
    }
}

fn prefix_of(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Returned by [`KeyStore::insert`] when a digest (or its 64-bit prefix) is already present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateDigest;

impl KeyStore {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            by_prefix: HashMap::with_capacity_and_hasher(n, BuildHasherDefault::default()),
        }
    }

    pub fn insert(&mut self, record: KeyRecord) -> Result<(), DuplicateDigest> {
        match self.by_prefix.entry(prefix_of(&record.digest)) {
            std::collections::hash_map::Entry::Occupied(_) => Err(DuplicateDigest),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(record);
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// An order-independent fingerprint of the configured digests (XOR of their hashes): it
    /// changes when a key is added or removed.
    pub fn digest_set_fingerprint(&self) -> [u8; 32] {
        let mut acc = [0u8; 32];
        for record in self.by_prefix.values() {
            let h: [u8; 32] = Sha256::digest(record.digest).into();
            for (a, b) in acc.iter_mut().zip(h) {
                *a ^= b;
            }
        }
        acc
    }

    /// Whether this exact digest is configured.
    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.by_prefix
            .get(&prefix_of(digest))
            .is_some_and(|r| r.digest == *digest)
    }

    /// The configured record of a well-formed key's digest (see [`KeyStore::verify`] for the
    /// whole check).
    pub fn get(&self, digest: &[u8; 32]) -> Option<&KeyRecord> {
        self.by_prefix
            .get(&prefix_of(digest))
            .filter(|r| ct_eq(&r.digest, digest))
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// Checks a presented key: format and checksum, the configured digests, revocation and
    /// expiry. A well-formed key that is not configured comes back with its digest, for the
    /// live policy document to look up. The digest is computed before the checksum is checked,
    /// so that a configured key's checksum is checked once per VM, not on every request.
    pub fn lookup(&self, key: Secret<'_>, now: i64) -> Result<Lookup<'_>, KeyRejection> {
        let key = key.expose();
        if !has_key_shape(key) {
            return Err(KeyRejection::Malformed);
        }
        // The same verdicts as checking the checksum first; a configured key's is remembered.
        let presented = digest(key);
        match self.get(&presented) {
            Some(record) if record.checksum_matches(key) => {
                record.check(now)?;
                Ok(Lookup::Configured(record))
            }
            None if checksum_matches(key) => Ok(Lookup::NotConfigured(presented)),
            _ => Err(KeyRejection::Malformed),
        }
    }
}

/// What the configured keys say about a well-formed key.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    Configured(&'a KeyRecord),
    /// Not configured: its SHA-256 digest.
    NotConfigured([u8; 32]),
}

/// Deterministic keys for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{generate, RandomError, RandomSource};

    /// Every byte the same: key `seed` is always the same key.
    struct SeqRng(u8);

    impl RandomSource for SeqRng {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
            buf.fill(self.0);
            Ok(())
        }
    }

    /// A valid key, the same for the same seed.
    pub fn key(seed: u8) -> String {
        generate(&mut SeqRng(seed)).unwrap()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Deterministic bytes standing in for the CSPRNG.
    struct CountingRng(u8);
    impl RandomSource for CountingRng {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
            for b in buf {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
            Ok(())
        }
    }

    struct FailingRng;
    impl RandomSource for FailingRng {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), RandomError> {
            Err(RandomError("no entropy".into()))
        }
    }

    fn store_with(key: &str, expires_at: Option<i64>, revoked: bool) -> KeyStore {
        let mut store = KeyStore::default();
        store
            .insert(KeyRecord::new(
                digest(key),
                Rc::from("alice"),
                expires_at,
                revoked,
            ))
            .unwrap();
        store
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = generate(&mut CountingRng(0)).unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with("agk_"));
        assert!(key[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert!(is_well_formed(&key));
        assert_ne!(key, generate(&mut CountingRng(1)).unwrap());
    }

    #[test]
    fn base62_encodes_big_endian_numbers() {
        for checksum in [
            [0; 4],
            [0, 0, 0, 61],
            [0, 0, 0, 62],
            [1, 2, 3, 4],
            [0xff; 4],
        ] {
            assert_eq!(
                checksum_digits(checksum),
                base62_fixed(&checksum, CHECKSUM_LEN).as_bytes()
            );
        }
        assert_eq!(base62_fixed(&[0], 3), "000");
        assert_eq!(base62_fixed(&[61], 2), "0z");
        assert_eq!(base62_fixed(&[0, 62], 2), "10");
        assert_eq!(base62_fixed(&[0xff; 32], BODY_LEN).len(), BODY_LEN);
        // 2^256 - 1 needs all 43 digits: the leading digit is not zero.
        assert_ne!(base62_fixed(&[0xff; 32], BODY_LEN).as_bytes()[0], b'0');
    }

    #[test]
    fn random_source_failure_is_an_error_not_a_weak_key() {
        assert_eq!(
            generate(&mut FailingRng),
            Err(RandomError("no entropy".into()))
        );
    }

    #[test]
    fn every_single_character_change_breaks_the_checksum() {
        let key = generate(&mut CountingRng(7)).unwrap();
        for i in KEY_PREFIX.len()..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(!is_well_formed(&typo), "position {i}");
        }
    }

    /// The configured keys' verdict alone: a key they do not hold is unknown.
    fn verify(store: &KeyStore, key: Secret<'_>, now: i64) -> Result<Rc<str>, KeyRejection> {
        match store.lookup(key, now)? {
            Lookup::Configured(record) => Ok(Rc::clone(&record.consumer)),
            Lookup::NotConfigured(_) => Err(KeyRejection::Unknown),
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let store = KeyStore::default();
        for bad in [
            "",
            "agk_",
            "hunter2",
            &"a".repeat(KEY_LEN),
            "agk_ééééééééééééééééééééé",
        ] {
            assert_eq!(
                verify(&store, Secret::new(bad), 0).unwrap_err(),
                KeyRejection::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn verify_accepts_a_configured_key_and_names_each_refusal() {
        let key = generate(&mut CountingRng(3)).unwrap();
        let other = generate(&mut CountingRng(4)).unwrap();
        let store = store_with(&key, Some(1_000), false);
        assert_eq!(&*verify(&store, Secret::new(&key), 999).unwrap(), "alice");
        assert_eq!(
            verify(&store, Secret::new(&key), 1_000).unwrap_err(),
            KeyRejection::Expired
        );
        assert_eq!(
            verify(&store, Secret::new(&other), 0).unwrap_err(),
            KeyRejection::Unknown
        );
        let revoked = store_with(&key, None, true);
        assert_eq!(
            verify(&revoked, Secret::new(&key), 0).unwrap_err(),
            KeyRejection::Revoked
        );
    }

    #[test]
    fn a_configured_digest_of_a_key_with_a_bad_checksum_stays_malformed() {
        // Its digest is found, but the checksum is still checked (and its verdict remembered).
        let key = generate(&mut CountingRng(5)).unwrap();
        let mut bytes = key.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        let store = store_with(&typo, None, false);
        let good = store_with(&key, None, false);
        for _ in 0..2 {
            assert_eq!(
                verify(&store, Secret::new(&typo), 0).unwrap_err(),
                KeyRejection::Malformed
            );
            assert_eq!(&*verify(&good, Secret::new(&key), 0).unwrap(), "alice");
        }
    }

    #[test]
    fn duplicate_digests_are_refused() {
        let mut store = store_with("agk_x", None, false);
        let again = KeyRecord::new(digest("agk_x"), Rc::from("bob"), None, false);
        assert_eq!(store.insert(again), Err(DuplicateDigest));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn digest_is_sha256_of_the_whole_key() {
        // FIPS 180-2 example: SHA-256("abc").
        assert_eq!(
            crate::secret::to_hex(&digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

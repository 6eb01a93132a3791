//! Buckets in the proxy's shared data, one key per bucket, updated by compare-and-swap so that
//! every worker takes from the same bucket.
//!
//! Creation is the delicate part: Envoy ignores the CAS token of a key that does not exist, so
//! two workers that both find a bucket missing could both "create" it with a grant each. Here a
//! missing bucket is created with a token that can never match an existing key (the token of the
//! last write to a probe key: every write gets a fresh token from one counter, so no bucket ever
//! holds the probe's). On a missing key that write creates it; if another worker created it in
//! the meantime, it is a CAS mismatch and the loop reads the bucket again. No double grant.

use crate::ports::{SharedStore, StoreError, Written};

use super::bucket::{decode, encode, Limit, Verdict};

/// Attempts before giving up on a bucket that other workers keep changing under us.
pub const CAS_ATTEMPTS: usize = 8;

/// Why a take did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// Other workers won every compare-and-swap.
    Contention,
    Store(StoreError),
}

impl From<StoreError> for TakeError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A token no bucket key can hold; see the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreationToken(u32);

impl CreationToken {
    /// Writes the probe key and keeps the token of that write (at start-up).
    pub fn new(store: &dyn SharedStore, probe_key: &str) -> Result<Self, StoreError> {
        store.set(probe_key, b"", None)?;
        let cas = store.get(probe_key)?.map_or(0, |s| s.cas);
        // 0 would mean "no CAS" to Envoy; the counter never hands it out.
        Ok(Self(cas.max(1)))
    }

    pub fn token(self) -> u32 {
        self.0
    }
}

/// Takes `cost` tokens from the bucket at `key`.
pub fn take(
    store: &dyn SharedStore,
    key: &str,
    limit: &Limit,
    cost: u64,
    now_ns: i64,
    create: CreationToken,
) -> Result<Verdict, TakeError> {
    for _ in 0..CAS_ATTEMPTS {
        let stored = store.get(key)?;
        let (tat, cas) = match &stored {
            Some(s) => (decode(&s.value), s.cas),
            None => (0, create.0),
        };
        let verdict = limit.take(tat, now_ns, cost);
        let Verdict::Admitted { tat_ns, .. } = verdict else {
            // A refusal changes nothing.
            return Ok(verdict);
        };
        if store.set(key, &encode(tat_ns), Some(cas))? == Written::Done {
            return Ok(verdict);
        }
    }
    Err(TakeError::Contention)
}

/// Whether a take of one token would be admitted now, without taking it; the seconds to wait
/// when not.
pub fn peek(
    store: &dyn SharedStore,
    key: &str,
    limit: &Limit,
    now_ns: i64,
) -> Result<Verdict, StoreError> {
    let tat = store.get(key)?.map_or(0, |s| decode(&s.value));
    Ok(limit.take(tat, now_ns, 1))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::cell::{Cell, RefCell};

    use super::super::bucket::Per;
    use super::*;
    use crate::ports::fakes::MemoryStore;
    use crate::ports::Stored;

    const NOW: i64 = 1_800_000_000 * 1_000_000_000;
    const KEY: &str = "apiguard/v1/rl/c/alice";

    /// What another worker does between our read and our write.
    type OtherWorker<'a> = RefCell<Box<dyn FnMut(&MemoryStore) + 'a>>;

    /// A store that lets the test act between this worker's read and its write, the way another
    /// worker's thread could.
    struct Interleaved<'a> {
        inner: &'a MemoryStore,
        before_set: OtherWorker<'a>,
        sets: Cell<usize>,
    }

    impl SharedStore for Interleaved<'_> {
        fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, StoreError> {
            self.sets.set(self.sets.get() + 1);
            (self.before_set.borrow_mut())(self.inner);
            self.inner.set(key, value, cas)
        }
    }

    fn interleaved<'a>(
        inner: &'a MemoryStore,
        f: impl FnMut(&MemoryStore) + 'a,
    ) -> Interleaved<'a> {
        Interleaved {
            inner,
            before_set: RefCell::new(Box::new(f)),
            sets: Cell::new(0),
        }
    }

    fn admitted(v: Result<Verdict, TakeError>) -> bool {
        matches!(v, Ok(Verdict::Admitted { .. }))
    }

    #[test]
    fn two_creators_at_once_grant_no_more_than_the_burst() {
        let store = MemoryStore::default();
        let token = CreationToken::new(&store, "apiguard/v1/rl/probe").unwrap();
        let limit = Limit::new(1, Per::Hour, 1);
        // Both workers find the bucket missing; the other one creates it between our read and
        // our write (with its own grant).
        let racing = interleaved(&store, |s| {
            if s.get(KEY).unwrap().is_none() {
                assert!(admitted(take(s, KEY, &limit, 1, NOW, token)));
            }
        });
        // Burst 1, already taken by the other worker: we must be refused, not granted again.
        let ours = take(&racing, KEY, &limit, 1, NOW, token);
        assert!(matches!(ours, Ok(Verdict::Refused { .. })), "{ours:?}");
        assert_eq!(
            racing.sets.get(),
            1,
            "our creation hit a CAS mismatch, then we read again"
        );
    }

    #[test]
    fn a_mismatch_on_every_retry_ends_in_contention_not_a_grant() {
        let store = MemoryStore::default();
        let token = CreationToken::new(&store, "apiguard/v1/rl/probe").unwrap();
        let limit = Limit::new(1_000_000, Per::Second, 1_000_000);
        let busy = interleaved(&store, |s| {
            // Another worker writes the bucket before each of our writes.
            let tat = s.get(KEY).unwrap().map_or(0, |v| decode(&v.value));
            s.set(KEY, &encode(tat), None).unwrap();
        });
        assert_eq!(
            take(&busy, KEY, &limit, 1, NOW, token),
            Err(TakeError::Contention)
        );
        assert_eq!(busy.sets.get(), CAS_ATTEMPTS);
        // Nothing of ours was written: the bucket still has its whole burst.
        let tat = decode(&store.get(KEY).unwrap().unwrap().value);
        assert!(tat <= NOW);
    }

    #[test]
    fn every_worker_takes_from_the_same_bucket() {
        let store = MemoryStore::default();
        let token = CreationToken::new(&store, "apiguard/v1/rl/probe").unwrap();
        let limit = Limit::new(1, Per::Hour, 5);
        let admitted_count = (0..20)
            .filter(|_| admitted(take(&store, KEY, &limit, 1, NOW, token)))
            .count();
        assert_eq!(admitted_count, 5);
        assert!(matches!(
            peek(&store, KEY, &limit, NOW),
            Ok(Verdict::Refused { .. })
        ));
        assert!(matches!(
            peek(&store, "apiguard/v1/rl/c/bob", &limit, NOW),
            Ok(Verdict::Admitted { .. })
        ));
    }

    #[test]
    fn a_refusal_writes_nothing_and_a_failing_store_is_an_error() {
        let store = MemoryStore::default();
        let token = CreationToken::new(&store, "apiguard/v1/rl/probe").unwrap();
        let limit = Limit::new(1, Per::Hour, 1);
        let counting = interleaved(&store, |_| {});
        assert!(admitted(take(&counting, KEY, &limit, 1, NOW, token)));
        assert!(!admitted(take(&counting, KEY, &limit, 1, NOW, token)));
        assert_eq!(counting.sets.get(), 1);
        store.fail_from_now_on();
        assert_eq!(
            take(&store, KEY, &limit, 1, NOW, token),
            Err(TakeError::Store(StoreError))
        );
    }
}

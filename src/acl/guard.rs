//! The enumeration guard: a consumer refused on more than `max_distinct_denied` distinct objects
//! within `window_seconds` is blocked for `block_seconds`, on every worker of the proxy.
//!
//! State lives in shared data, bounded like the rate-limit tables: a consumer maps (by a digest
//! of its id) to one of [`GUARD_SLOTS`] keys, created on first use and never deleted, no time in
//! a name. A slot's value names the consumer it tracks (a 64-bit digest of its id), when its
//! block ends and the recent refusals as (digest of the object, time) pairs, at most
//! `max_distinct_denied + 1` of them, updated by compare-and-swap.
//!
//! A block holds only for the consumer the slot names: a consumer that shares a slot with an
//! enumerating one is never blocked for it. The price: while a slot tracks one consumer (blocked,
//! or refused within the window), another consumer of that slot goes uncounted until the record
//! lapses. Two objects whose 32-bit digests collide count once.

use crate::ports::{KeySpace, SharedStore, StoreError, Written};
use crate::ratelimit::{CreationToken, TakeError, CAS_ATTEMPTS};
use crate::text::parts_digest as digest;

/// Slots of the guard's table in shared data.
pub const GUARD_SLOTS: u32 = 65_536;

/// Compiled `acl.enumeration_guard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    pub max_distinct_denied: u32,
    pub window_ms: i64,
    pub block_ms: i64,
}

/// What recording a refusal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted: the consumer now has this many distinct refused objects in the window.
    Counted { distinct: usize },
    /// The consumer is blocked for this many more seconds (from now on, or already).
    Blocked { retry_after: u64 },
    /// The slot tracks another consumer for now: this refusal is not counted.
    SlotBusy,
}

/// One slot's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    /// The consumer tracked ([`consumer_tag`]); 0 for a slot never used.
    consumer: u64,
    blocked_until_ms: i64,
    /// (object digest, time of its last refusal), oldest first.
    refused: Vec<(u32, i64)>,
}

const FORMAT: u8 = 2;
const HEADER_BYTES: usize = 1 + 8 + 8 + 2;
const ENTRY_BYTES: usize = 4 + 8;

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.refused.len() * ENTRY_BYTES);
        out.push(FORMAT);
        out.extend_from_slice(&self.consumer.to_le_bytes());
        out.extend_from_slice(&self.blocked_until_ms.to_le_bytes());
        let count = u16::try_from(self.refused.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for (object, at) in self.refused.iter().take(usize::from(count)) {
            out.extend_from_slice(&object.to_le_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
        out
    }

    /// A value that does not read (another layout, a placeholder) is an empty record.
    fn decode(bytes: &[u8]) -> Self {
        Self::try_decode(bytes).unwrap_or_default()
    }

    fn try_decode(bytes: &[u8]) -> Option<Self> {
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT {
            return None;
        }
        let consumer = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let blocked_until_ms = i64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
        let count = u16::from_le_bytes(rest.get(16..18)?.try_into().ok()?);
        let entries = rest.get(18..)?;
        if entries.len() != usize::from(count) * ENTRY_BYTES {
            return None;
        }
        let refused = entries
            .chunks_exact(ENTRY_BYTES)
            .map(|e| {
                let object = u32::from_le_bytes(e.get(..4)?.try_into().ok()?);
                let at = i64::from_le_bytes(e.get(4..)?.try_into().ok()?);
                Some((object, at))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            consumer,
            blocked_until_ms,
            refused,
        })
    }

    /// Whether the record still tracks its consumer: blocked, or refused within the window.
    fn in_use(&self, now_ms: i64, window_ms: i64) -> bool {
        let since = now_ms.saturating_sub(window_ms);
        self.blocked_until_ms > now_ms || self.refused.iter().any(|(_, at)| *at > since)
    }

    /// Seconds until the block ends, rounded up; `None` when not blocked.
    fn retry_after(&self, now_ms: i64) -> Option<u64> {
        let left = self.blocked_until_ms.saturating_sub(now_ms);
        (left > 0).then(|| u64::try_from((left + 999) / 1000).unwrap_or(1).max(1))
    }
}

fn first_u64(d: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

/// The consumer a record tracks, as stored (never 0, the tag of an unused slot).
fn consumer_tag(consumer: &str) -> u64 {
    first_u64(&digest(&[b"consumer", consumer.as_bytes()])).max(1)
}

/// One VM's handle on the guard's table.
#[derive(Debug)]
pub struct EnumerationGuard {
    space: KeySpace,
    create: Option<CreationToken>,
}

impl EnumerationGuard {
    pub fn new(space: KeySpace) -> Self {
        Self {
            space,
            create: None,
        }
    }

    /// Sets up the probe key whose token creates slots (at start-up; otherwise on first use).
    pub fn prepare(&mut self, store: &dyn SharedStore) -> Result<CreationToken, StoreError> {
        if let Some(create) = self.create {
            return Ok(create);
        }
        let create = CreationToken::new(store, &self.space.key("acl/probe"))?;
        self.create = Some(create);
        Ok(create)
    }

    fn key(&self, consumer: &str) -> String {
        let slot = first_u64(&digest(&[b"slot", consumer.as_bytes()])) % u64::from(GUARD_SLOTS);
        self.space.key(&format!("acl/e/{slot}"))
    }

    /// Seconds until `consumer`'s block ends, when it is blocked (nothing is written).
    pub fn blocked(
        &self,
        consumer: &str,
        store: &dyn SharedStore,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(store
            .get(&self.key(consumer))?
            .map(|s| Record::decode(&s.value))
            .filter(|r| r.consumer == consumer_tag(consumer))
            .and_then(|r| r.retry_after(now_ms)))
    }

    /// Counts a refusal of `consumer` on `object`; the refusal that takes the consumer past
    /// `max_distinct_denied` distinct objects within the window starts its block.
    pub fn record_refusal(
        &mut self,
        settings: &GuardSettings,
        consumer: &str,
        object: &str,
        store: &dyn SharedStore,
        now_ms: i64,
    ) -> Result<Recorded, TakeError> {
        let create = self.prepare(store)?;
        let key = self.key(consumer);
        let d = digest(&[consumer.as_bytes(), object.as_bytes()]);
        let object_digest = u32::try_from(first_u64(&d) & u64::from(u32::MAX)).unwrap_or(0);
        for _ in 0..CAS_ATTEMPTS {
            let stored = store.get(&key)?;
            let (mut record, cas) = match &stored {
                Some(s) => (Record::decode(&s.value), s.cas),
                None => (Record::default(), create.token()),
            };
            let tag = consumer_tag(consumer);
            if record.consumer != tag {
                if record.in_use(now_ms, settings.window_ms) {
                    return Ok(Recorded::SlotBusy);
                }
                // The record lapsed: the slot is this consumer's now.
                record = Record {
                    consumer: tag,
                    ..Record::default()
                };
            }
            if let Some(retry_after) = record.retry_after(now_ms) {
                return Ok(Recorded::Blocked { retry_after });
            }
            let since = now_ms.saturating_sub(settings.window_ms);
            record
                .refused
                .retain(|(o, at)| *at > since && *o != object_digest);
            record.refused.push((object_digest, now_ms));
            let distinct = record.refused.len();
            let limit = usize::try_from(settings.max_distinct_denied).unwrap_or(usize::MAX);
            let outcome = if distinct > limit {
                record.blocked_until_ms = now_ms.saturating_add(settings.block_ms);
                record.refused.clear();
                Recorded::Blocked {
                    retry_after: record.retry_after(now_ms).unwrap_or(1),
                }
            } else {
                Recorded::Counted { distinct }
            };
            if store.set(&key, &record.encode(), Some(cas))? == Written::Done {
                return Ok(outcome);
            }
        }
        Err(TakeError::Contention)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::ports::fakes::MemoryStore;

    const NOW: i64 = 1_800_000_000_000;
    const SETTINGS: GuardSettings = GuardSettings {
        max_distinct_denied: 3,
        window_ms: 60_000,
        block_ms: 300_000,
    };

    fn worker() -> EnumerationGuard {
        EnumerationGuard::new(KeySpace::new("apiguard"))
    }

    #[test]
    fn distinct_objects_past_the_limit_block_on_every_worker() {
        let store = MemoryStore::default();
        let (mut one, mut two) = (worker(), worker());
        // The same object again and again is one object.
        for _ in 0..10 {
            assert_eq!(
                one.record_refusal(&SETTINGS, "mallory", "acct-1", &store, NOW),
                Ok(Recorded::Counted { distinct: 1 })
            );
        }
        assert_eq!(
            two.record_refusal(&SETTINGS, "mallory", "acct-2", &store, NOW + 1),
            Ok(Recorded::Counted { distinct: 2 })
        );
        assert_eq!(
            one.record_refusal(&SETTINGS, "mallory", "acct-3", &store, NOW + 2),
            Ok(Recorded::Counted { distinct: 3 })
        );
        assert_eq!(one.blocked("mallory", &store, NOW + 3), Ok(None));
        assert_eq!(
            two.record_refusal(&SETTINGS, "mallory", "acct-4", &store, NOW + 3),
            Ok(Recorded::Blocked { retry_after: 300 })
        );
        // Both workers see the block; another consumer is not blocked.
        assert_eq!(one.blocked("mallory", &store, NOW + 4), Ok(Some(300)));
        assert_eq!(two.blocked("mallory", &store, NOW + 1_003), Ok(Some(299)));
        assert_eq!(one.blocked("alice", &store, NOW + 4), Ok(None));
        assert_eq!(
            one.record_refusal(&SETTINGS, "mallory", "acct-5", &store, NOW + 5),
            Ok(Recorded::Blocked { retry_after: 300 })
        );
        // The block ends after block_seconds, with a fresh count.
        let after = NOW + 3 + 300_000;
        assert_eq!(two.blocked("mallory", &store, after - 1), Ok(Some(1)));
        assert_eq!(two.blocked("mallory", &store, after), Ok(None));
        assert_eq!(
            one.record_refusal(&SETTINGS, "mallory", "acct-6", &store, after),
            Ok(Recorded::Counted { distinct: 1 })
        );
    }

    /// Two consumer ids whose records share one slot.
    fn slot_mates() -> (String, String) {
        let g = worker();
        let first = "c0".to_owned();
        let mate = (1..)
            .map(|i| format!("c{i}"))
            .find(|c| g.key(c) == g.key(&first))
            .unwrap();
        (first, mate)
    }

    #[test]
    fn a_block_holds_only_for_the_consumer_it_tracks() {
        let store = MemoryStore::default();
        let mut g = worker();
        let (mallory, mate) = slot_mates();
        for i in 0..4 {
            g.record_refusal(&SETTINGS, &mallory, &format!("o{i}"), &store, NOW)
                .unwrap();
        }
        assert_eq!(g.blocked(&mallory, &store, NOW), Ok(Some(300)));
        // The consumer sharing the slot is not blocked, and goes uncounted while it is in use.
        assert_eq!(g.blocked(&mate, &store, NOW), Ok(None));
        assert_eq!(
            g.record_refusal(&SETTINGS, &mate, "o9", &store, NOW + 1),
            Ok(Recorded::SlotBusy)
        );
        assert_eq!(g.blocked(&mallory, &store, NOW + 1), Ok(Some(300)));
        // Once the block ended and the window passed, the slot tracks whoever is refused next.
        let later = NOW + 300_000;
        assert_eq!(
            g.record_refusal(&SETTINGS, &mate, "o9", &store, later),
            Ok(Recorded::Counted { distinct: 1 })
        );
        assert_eq!(
            g.record_refusal(&SETTINGS, &mallory, "o1", &store, later + 1),
            Ok(Recorded::SlotBusy)
        );
    }

    #[test]
    fn refusals_older_than_the_window_no_longer_count() {
        let store = MemoryStore::default();
        let mut g = worker();
        for (i, at) in [0, 10_000, 20_000].iter().enumerate() {
            let object = format!("o{i}");
            assert!(g
                .record_refusal(&SETTINGS, "eve", &object, &store, NOW + at)
                .is_ok());
        }
        // o0 (at 0) left the window: three distinct within the last 60 s, not four.
        assert_eq!(
            g.record_refusal(&SETTINGS, "eve", "o3", &store, NOW + 60_000),
            Ok(Recorded::Counted { distinct: 3 })
        );
        // A repeat refreshes its time: o1 stays counted once.
        assert_eq!(
            g.record_refusal(&SETTINGS, "eve", "o1", &store, NOW + 60_001),
            Ok(Recorded::Counted { distinct: 3 })
        );
        assert_eq!(
            g.record_refusal(&SETTINGS, "eve", "o4", &store, NOW + 60_002),
            Ok(Recorded::Blocked { retry_after: 300 })
        );
    }

    #[test]
    fn records_round_trip_and_garbage_reads_empty() {
        let record = Record {
            consumer: 42,
            blocked_until_ms: NOW,
            refused: vec![(7, NOW - 1), (9, NOW)],
        };
        assert_eq!(Record::decode(&record.encode()), record);
        assert_eq!(Record::decode(b""), Record::default());
        assert_eq!(Record::decode(&[FORMAT, 1, 2]), Record::default());
        // The first layout (no consumer) reads as an unused slot.
        assert_eq!(
            Record::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Record::default()
        );
        let mut truncated = record.encode();
        truncated.pop();
        assert_eq!(Record::decode(&truncated), Record::default());
    }

    #[test]
    fn a_failing_store_is_an_error() {
        let store = MemoryStore::default();
        let mut g = worker();
        store.fail_from_now_on();
        assert_eq!(g.blocked("eve", &store, NOW), Err(StoreError));
        assert_eq!(
            g.record_refusal(&SETTINGS, "eve", "o", &store, NOW),
            Err(TakeError::Store(StoreError))
        );
    }
}

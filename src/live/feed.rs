//! One shared document: who fetches it (a lease taken by compare-and-swap, with an expiry so a
//! vanished holder is replaced), when (the schedule lives with the lease, so it is per proxy,
//! not per worker), and which version every VM should be using.

use sha2::{Digest, Sha256};

use super::bytes::Reader;
use crate::ports::{KeySpace, SharedStore, StoreError, Written};

/// Attempts at one compare-and-swap before giving up for now (another VM is writing the same
/// key at this very moment; it will have done what we wanted).
const CAS_ATTEMPTS: usize = 8;

/// The proxy-wide state of one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedState {
    /// Published version; 0 = nothing published yet.
    pub version: u64,
    /// SHA-256 of the published body: an unchanged body keeps its version.
    pub digest: [u8; 32],
    /// Lease holder (a VM's random id); 0 = nobody is fetching.
    pub holder: u64,
    pub lease_until_ms: i64,
    /// When the next scheduled fetch is due; 0 = at once.
    pub next_due_ms: i64,
    /// When the last fetch started; 0 = never (rate-limits early refetches).
    pub last_started_ms: i64,
    /// When a fetch last confirmed the published version as current (a new body, the same
    /// body, or `304 Not Modified`); 0 = never. How stale the proxy's copy is.
    pub last_ok_ms: i64,
    /// The VM that fetched last: it keeps fetching while it is alive (see
    /// [`FeedTiming::sticky_ms`]).
    pub last_holder: u64,
    /// What the publisher wants every reader to see with the version (a layout descriptor);
    /// opaque to the feed, read in the same host call as the version.
    pub extra: Vec<u8>,
}

const STATE_FORMAT: u8 = 2;
const FIXED_STATE_BYTES: usize = 1 + 8 + 32 + 8 + 8 + 8 + 8 + 8 + 8;

impl FeedState {
    /// Whether some VM holds an unexpired lease, i.e. a fetch is under way.
    pub fn fetching(&self, now_ms: i64) -> bool {
        self.holder != 0 && now_ms < self.lease_until_ms
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_STATE_BYTES + self.extra.len());
        out.push(STATE_FORMAT);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.holder.to_le_bytes());
        out.extend_from_slice(&self.lease_until_ms.to_le_bytes());
        out.extend_from_slice(&self.next_due_ms.to_le_bytes());
        out.extend_from_slice(&self.last_started_ms.to_le_bytes());
        out.extend_from_slice(&self.last_ok_ms.to_le_bytes());
        out.extend_from_slice(&self.last_holder.to_le_bytes());
        out.extend_from_slice(&self.extra);
        out
    }

    /// The placeholder (empty) and anything of another shape read as "nothing yet": the
    /// document is then fetched anew, which is always safe.
    fn decode(bytes: &[u8]) -> Self {
        let mut r = Reader(bytes);
        let parsed = (|| {
            if r.take(1)? != [STATE_FORMAT] || bytes.len() < FIXED_STATE_BYTES {
                return None;
            }
            Some(Self {
                version: r.u64()?,
                digest: r.take(32)?.try_into().ok()?,
                holder: r.u64()?,
                lease_until_ms: r.i64()?,
                next_due_ms: r.i64()?,
                last_started_ms: r.i64()?,
                last_ok_ms: r.i64()?,
                last_holder: r.u64()?,
                extra: r.0.to_vec(),
            })
        })();
        parsed.unwrap_or_default()
    }
}

/// The schedule of one document, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedTiming {
    /// A successful fetch is repeated after this long.
    pub refresh_ms: i64,
    /// Early refetches (and retries after a failure) no more often than this.
    pub min_refetch_ms: i64,
    /// A lease not released within this long is taken over (its holder is gone).
    pub lease_ms: i64,
    /// For this long after a scheduled fetch is due, only the VM that fetched last may take
    /// it: a large document then passes through one VM's memory, not through every VM's in
    /// turn (wasm memory never shrinks). 0 = any VM, at once.
    pub sticky_ms: i64,
}

/// Why a VM wants to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    /// The schedule says so (first fetch, refresh, retry after a failure).
    Scheduled,
    /// A request needs something the current version lacks (a token's unknown `kid`): fetch
    /// before the schedule, but at most once per `min_refetch_ms` for the whole proxy.
    Early,
}

/// Proof that this VM holds the fetch lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    holder: u64,
}

impl Lease {
    /// The holding VM's id.
    pub fn holder(&self) -> u64 {
        self.holder
    }
}

/// A version being written by the lease holder (see [`Feed::begin_publish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub lease: Lease,
    pub version: u64,
    /// The descriptor of the version in force while the new one is written.
    pub current_extra: Vec<u8>,
}

/// What publishing a fetched body did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A new version every VM will load.
    New { version: u64 },
    /// The body is the one already published.
    Unchanged { version: u64 },
    /// Our lease expired and another VM took over: its fetch wins, ours is dropped.
    LeaseLost,
}

/// The two keys of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    state_key: String,
    doc_key: String,
}

impl Feed {
    /// `name` must come from a bounded set (a configured URL's digest, never a time).
    pub fn new(space: &KeySpace, name: &str) -> Self {
        Self {
            state_key: space.key(&format!("{name}/state")),
            doc_key: space.key(&format!("{name}/doc")),
        }
    }

    /// Creates both keys with an empty placeholder where they do not exist yet, so that every
    /// later write is a true compare-and-swap.
    pub fn create(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        for key in [&self.state_key, &self.doc_key] {
            if store.get(key)?.is_none() {
                create_missing(store, key)?;
            }
        }
        Ok(())
    }

    fn read(&self, store: &dyn SharedStore) -> Result<(FeedState, Option<u32>), StoreError> {
        Ok(match store.get(&self.state_key)? {
            Some(stored) => (FeedState::decode(&stored.value), Some(stored.cas)),
            None => (FeedState::default(), None),
        })
    }

    pub fn state(&self, store: &dyn SharedStore) -> Result<FeedState, StoreError> {
        Ok(self.read(store)?.0)
    }

    /// Read-modify-write of the state by CAS. `change` returns `None` to leave it as it is.
    fn update<T>(
        &self,
        store: &dyn SharedStore,
        mut change: impl FnMut(&FeedState) -> Option<(FeedState, T)>,
    ) -> Result<Option<T>, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let (state, cas) = self.read(store)?;
            let Some((next, out)) = change(&state) else {
                return Ok(None);
            };
            if cas.is_none() {
                // Never created: create the placeholder and compete by CAS from there.
                self.create(store)?;
                continue;
            }
            if store.set(&self.state_key, &next.encode(), cas)? == Written::Done {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// Takes the fetch lease if no unexpired lease exists and the fetch is due for `reason`.
    pub fn try_lease(
        &self,
        store: &dyn SharedStore,
        holder: u64,
        reason: FetchReason,
        timing: FeedTiming,
        now_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        self.update(store, |state| {
            if state.fetching(now_ms) {
                return None;
            }
            let due = match reason {
                FetchReason::Scheduled => {
                    let others_wait = state.last_holder != 0 && state.last_holder != holder;
                    let due_ms = if others_wait {
                        state.next_due_ms.saturating_add(timing.sticky_ms)
                    } else {
                        state.next_due_ms
                    };
                    now_ms >= due_ms
                }
                FetchReason::Early => {
                    state.last_started_ms == 0
                        || now_ms >= state.last_started_ms.saturating_add(timing.min_refetch_ms)
                }
            };
            due.then(|| {
                let next = FeedState {
                    holder,
                    lease_until_ms: now_ms.saturating_add(timing.lease_ms),
                    last_started_ms: now_ms,
                    ..state.clone()
                };
                (next, Lease { holder })
            })
        })
    }

    /// Publishes a fetched body and releases the lease. The state is switched first and the
    /// body written after: a reader that sees the new version before its body simply loads it
    /// on its next look.
    pub fn publish(
        &self,
        store: &dyn SharedStore,
        lease: Lease,
        body: &[u8],
        timing: FeedTiming,
        now_ms: i64,
    ) -> Result<Published, StoreError> {
        let digest: [u8; 32] = Sha256::digest(body).into();
        let outcome = self.update(store, |state| {
            if state.holder != lease.holder {
                return None;
            }
            let unchanged = state.version != 0 && state.digest == digest;
            let version = if unchanged {
                state.version
            } else {
                state.version.saturating_add(1)
            };
            let next = FeedState {
                version,
                digest,
                holder: 0,
                lease_until_ms: 0,
                next_due_ms: now_ms.saturating_add(timing.refresh_ms),
                last_started_ms: state.last_started_ms,
                last_ok_ms: now_ms,
                last_holder: lease.holder,
                extra: state.extra.clone(),
            };
            let published = if unchanged {
                Published::Unchanged { version }
            } else {
                Published::New { version }
            };
            Some((next, published))
        })?;
        let Some(published) = outcome else {
            return Ok(Published::LeaseLost);
        };
        if let Published::New { version } = published {
            self.write_doc(store, version, body)?;
        }
        Ok(published)
    }

    /// Writes the body under `version` unless a newer one is already there.
    fn write_doc(
        &self,
        store: &dyn SharedStore,
        version: u64,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(8 + body.len());
        value.extend_from_slice(&version.to_le_bytes());
        value.extend_from_slice(body);
        for _ in 0..CAS_ATTEMPTS {
            let current = store.get(&self.doc_key)?;
            let cas = current.as_ref().map(|s| s.cas);
            if current.as_ref().and_then(|s| doc_version(&s.value)) >= Some(version) {
                return Ok(());
            }
            if store.set(&self.doc_key, &value, cas)? == Written::Done {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Releases the lease after a failed fetch; the next try is due after `min_refetch_ms`
    /// (or the refresh interval, if shorter). The published version stays in use.
    pub fn fail(
        &self,
        store: &dyn SharedStore,
        lease: Lease,
        timing: FeedTiming,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.update(store, |state| {
            (state.holder == lease.holder).then(|| {
                let next = FeedState {
                    holder: 0,
                    lease_until_ms: 0,
                    next_due_ms: now_ms
                        .saturating_add(timing.min_refetch_ms.min(timing.refresh_ms)),
                    last_holder: lease.holder,
                    ..state.clone()
                };
                (next, ())
            })
        })?;
        Ok(())
    }

    /// The fetch found the published version still current (`304 Not Modified`, or the same
    /// body again): releases the lease and schedules the next refresh; `extra`, when given,
    /// replaces the descriptor (the same body may come with a new ETag).
    pub fn confirm(
        &self,
        store: &dyn SharedStore,
        lease: Lease,
        timing: FeedTiming,
        now_ms: i64,
        extra: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let done = self.update(store, |state| {
            (state.holder == lease.holder).then(|| {
                let next = FeedState {
                    holder: 0,
                    lease_until_ms: 0,
                    next_due_ms: now_ms.saturating_add(timing.refresh_ms),
                    last_ok_ms: now_ms,
                    last_holder: lease.holder,
                    extra: extra.clone().unwrap_or_else(|| state.extra.clone()),
                    ..state.clone()
                };
                (next, ())
            })
        })?;
        Ok(done.is_some())
    }

    /// Extends this VM's lease while it is still the holder (a long write in progress); false
    /// when another VM has taken it over.
    pub fn renew(
        &self,
        store: &dyn SharedStore,
        lease: Lease,
        timing: FeedTiming,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let renewed = self.update(store, |state| {
            (state.holder == lease.holder).then(|| {
                let next = FeedState {
                    lease_until_ms: now_ms.saturating_add(timing.lease_ms),
                    ..state.clone()
                };
                (next, ())
            })
        })?;
        Ok(renewed.is_some())
    }

    /// Before a publisher writes a new version's data outside the feed: renews the lease (the
    /// writing may take a while) and names the version it will publish, with the descriptor
    /// now in force. `None`: the lease was lost.
    pub fn begin_publish(
        &self,
        store: &dyn SharedStore,
        lease: Lease,
        timing: FeedTiming,
        now_ms: i64,
    ) -> Result<Option<Pending>, StoreError> {
        self.update(store, |state| {
            (state.holder == lease.holder).then(|| {
                let next = FeedState {
                    lease_until_ms: now_ms.saturating_add(timing.lease_ms),
                    ..state.clone()
                };
                let pending = Pending {
                    lease,
                    version: state.version.saturating_add(1),
                    current_extra: state.extra.clone(),
                };
                (next, pending)
            })
        })
    }

    /// Switches every reader to `pending.version` with its descriptor `extra`, and releases the
    /// lease. Refused (`LeaseLost`) when another VM took over or published in between.
    pub fn commit(
        &self,
        store: &dyn SharedStore,
        pending: &Pending,
        digest: [u8; 32],
        extra: Vec<u8>,
        timing: FeedTiming,
        now_ms: i64,
    ) -> Result<Published, StoreError> {
        let lease = pending.lease;
        let outcome = self.update(store, |state| {
            if state.holder != lease.holder || state.version.saturating_add(1) != pending.version {
                return None;
            }
            let next = FeedState {
                version: pending.version,
                digest,
                holder: 0,
                lease_until_ms: 0,
                next_due_ms: now_ms.saturating_add(timing.refresh_ms),
                last_started_ms: state.last_started_ms,
                last_ok_ms: now_ms,
                last_holder: lease.holder,
                extra: extra.clone(),
            };
            Some((next, ()))
        })?;
        Ok(match outcome {
            Some(()) => Published::New {
                version: pending.version,
            },
            None => Published::LeaseLost,
        })
    }

    /// The published body, when its version differs from `have`.
    pub fn load_if_changed(
        &self,
        store: &dyn SharedStore,
        have: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let state = self.state(store)?;
        if state.version == 0 || state.version == have {
            return Ok(None);
        }
        let Some(stored) = store.get(&self.doc_key)? else {
            return Ok(None);
        };
        match doc_version(&stored.value) {
            // The state moved on before the body was written: the next look will find it.
            Some(version) if version == state.version => {
                let body = stored.value.get(8..).unwrap_or_default().to_vec();
                Ok(Some((version, body)))
            }
            _ => Ok(None),
        }
    }
}

/// Writes an empty placeholder at `key` unless another VM has created it since we looked. Envoy
/// ignores the CAS of a key that does not exist, so the write carries the CAS of a probe key we
/// just wrote: no other key can hold that value, so a key created meanwhile (with a lease in
/// it) is left alone, and a missing one is created.
fn create_missing(store: &dyn SharedStore, key: &str) -> Result<(), StoreError> {
    let probe = format!("{key}.probe");
    store.set(&probe, b"", None)?;
    // 0 would mean "no CAS"; Envoy's counter never hands it out.
    let token = store.get(&probe)?.map_or(1, |s| s.cas.max(1));
    store.set(key, b"", Some(token))?;
    Ok(())
}

fn doc_version(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::ports::fakes::MemoryStore;

    const T: FeedTiming = FeedTiming {
        refresh_ms: 300_000,
        min_refetch_ms: 30_000,
        lease_ms: 5_000,
        sticky_ms: 0,
    };
    const NOW: i64 = 1_800_000_000_000;
    const VM_A: u64 = 0xA;
    const VM_B: u64 = 0xB;

    fn feed() -> Feed {
        Feed::new(&KeySpace::new("apiguard"), "jwks/0123")
    }

    #[test]
    fn one_vm_gets_the_lease_the_others_wait_for_its_version() {
        let (store, f) = (MemoryStore::default(), feed());
        let lease = f
            .try_lease(&store, VM_A, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(
            f.try_lease(&store, VM_B, FetchReason::Scheduled, T, NOW)
                .unwrap(),
            None
        );
        assert!(f.state(&store).unwrap().fetching(NOW));
        assert_eq!(
            f.publish(&store, lease, b"{\"keys\":[]}", T, NOW + 10)
                .unwrap(),
            Published::New { version: 1 }
        );
        assert_eq!(
            f.load_if_changed(&store, 0).unwrap(),
            Some((1, b"{\"keys\":[]}".to_vec()))
        );
        assert_eq!(f.load_if_changed(&store, 1).unwrap(), None);
        // Not due again before the refresh interval, for any VM.
        assert_eq!(
            f.try_lease(&store, VM_B, FetchReason::Scheduled, T, NOW + 299_000)
                .unwrap(),
            None
        );
        assert!(f
            .try_lease(&store, VM_B, FetchReason::Scheduled, T, NOW + 300_010)
            .unwrap()
            .is_some());
    }

    #[test]
    fn an_unchanged_body_keeps_its_version() {
        let (store, f) = (MemoryStore::default(), feed());
        let lease = f
            .try_lease(&store, VM_A, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        f.publish(&store, lease, b"same", T, NOW).unwrap();
        let later = NOW + T.refresh_ms;
        let lease = f
            .try_lease(&store, VM_B, FetchReason::Scheduled, T, later)
            .unwrap()
            .unwrap();
        assert_eq!(
            f.publish(&store, lease, b"same", T, later).unwrap(),
            Published::Unchanged { version: 1 }
        );
    }

    #[test]
    fn a_stale_lease_is_taken_over_and_the_late_holder_loses_its_result() {
        let (store, f) = (MemoryStore::default(), feed());
        let slow = f
            .try_lease(&store, VM_A, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(
            f.try_lease(&store, VM_B, FetchReason::Scheduled, T, NOW + 4_999)
                .unwrap(),
            None
        );
        let taker = f
            .try_lease(&store, VM_B, FetchReason::Scheduled, T, NOW + 5_000)
            .unwrap()
            .unwrap();
        assert_eq!(
            f.publish(&store, slow, b"old", T, NOW + 6_000).unwrap(),
            Published::LeaseLost
        );
        assert_eq!(
            f.publish(&store, taker, b"new", T, NOW + 6_000).unwrap(),
            Published::New { version: 1 }
        );
        assert_eq!(f.load_if_changed(&store, 0).unwrap().unwrap().1, b"new");
    }

    #[test]
    fn early_fetches_are_rate_limited_per_proxy() {
        let (store, f) = (MemoryStore::default(), feed());
        let lease = f
            .try_lease(&store, VM_A, FetchReason::Early, T, NOW)
            .unwrap()
            .unwrap();
        f.publish(&store, lease, b"v1", T, NOW + 100).unwrap();
        // Another VM's unknown kid within min_refetch of the last start: no fetch.
        assert_eq!(
            f.try_lease(&store, VM_B, FetchReason::Early, T, NOW + 29_999)
                .unwrap(),
            None
        );
        assert!(f
            .try_lease(&store, VM_B, FetchReason::Early, T, NOW + 30_000)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_failure_keeps_the_version_and_retries_after_the_refetch_interval() {
        let (store, f) = (MemoryStore::default(), feed());
        let lease = f
            .try_lease(&store, VM_A, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        f.publish(&store, lease, b"v1", T, NOW).unwrap();
        let at = NOW + T.refresh_ms;
        let lease = f
            .try_lease(&store, VM_A, FetchReason::Scheduled, T, at)
            .unwrap()
            .unwrap();
        f.fail(&store, lease, T, at + 10).unwrap();
        let state = f.state(&store).unwrap();
        assert_eq!((state.version, state.fetching(at + 10)), (1, false));
        assert_eq!(
            f.try_lease(&store, VM_B, FetchReason::Scheduled, T, at + 30_009)
                .unwrap(),
            None
        );
        assert!(f
            .try_lease(&store, VM_B, FetchReason::Scheduled, T, at + 30_010)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_late_creator_never_overwrites_a_lease() {
        // B saw no state key, then A created it and took the lease; B's placeholder write comes
        // last and must not land.
        let (store, f) = (MemoryStore::default(), feed());
        f.try_lease(&store, VM_A, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        create_missing(&store, &f.state_key).unwrap();
        assert!(
            f.state(&store).unwrap().fetching(NOW),
            "the lease is still held"
        );
        assert_eq!(
            f.try_lease(&store, VM_B, FetchReason::Scheduled, T, NOW)
                .unwrap(),
            None
        );
        // A key that really is missing is created.
        create_missing(&store, "apiguard/v3/other/state").unwrap();
        assert_eq!(
            store.get("apiguard/v3/other/state").unwrap().unwrap().value,
            b""
        );
    }

    #[test]
    fn racing_creators_cost_at_most_a_duplicate_fetch_never_a_wrong_version() {
        // Should a write ever clobber A's lease (a host whose creation race we did not foresee),
        // both VMs fetch, and still only one version is published.
        let (store, f) = (MemoryStore::default(), feed());
        let a = f
            .try_lease(&store, VM_A, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        store.set(&f.state_key, b"", None).unwrap();
        let b = f
            .try_lease(&store, VM_B, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(
            f.publish(&store, a, b"body", T, NOW).unwrap(),
            Published::LeaseLost
        );
        assert_eq!(
            f.publish(&store, b, b"body", T, NOW).unwrap(),
            Published::New { version: 1 }
        );
        assert_eq!(
            f.load_if_changed(&store, 0).unwrap(),
            Some((1, b"body".to_vec()))
        );
    }

    #[test]
    fn a_reader_never_loads_a_body_older_than_the_state_says() {
        let (store, f) = (MemoryStore::default(), feed());
        let lease = f
            .try_lease(&store, VM_A, FetchReason::Scheduled, T, NOW)
            .unwrap()
            .unwrap();
        f.publish(&store, lease, b"v1", T, NOW).unwrap();
        // The state names version 2 but its body is not written yet.
        let mut state = f.state(&store).unwrap();
        state.version = 2;
        store.set(&f.state_key, &state.encode(), None).unwrap();
        assert_eq!(f.load_if_changed(&store, 1).unwrap(), None);
    }

    #[test]
    fn the_doc_is_never_overwritten_by_an_older_version() {
        let (store, f) = (MemoryStore::default(), feed());
        f.write_doc(&store, 3, b"three").unwrap();
        f.write_doc(&store, 2, b"two").unwrap();
        let value = store.get(&f.doc_key).unwrap().unwrap().value;
        assert_eq!(value.get(8..).unwrap(), b"three");
    }

    #[test]
    fn state_survives_encoding_and_garbage_reads_as_nothing_yet() {
        let state = FeedState {
            version: 7,
            digest: [9; 32],
            holder: 42,
            lease_until_ms: NOW,
            next_due_ms: NOW + 1,
            last_started_ms: NOW - 1,
            last_ok_ms: NOW - 2,
            last_holder: 3,
            extra: b"descriptor".to_vec(),
        };
        assert_eq!(FeedState::decode(&state.encode()), state);
        assert_eq!(FeedState::decode(b"garbage"), FeedState::default());
        assert_eq!(FeedState::decode(b""), FeedState::default());
    }
}

//! What the core may ask of the world beyond the request itself: data shared by every VM of the
//! proxy, outbound calls (HTTP, or unary gRPC), and a place to report what happened. All synchronous; the host
//! implements them over proxy-wasm (`src/host/`), tests over the in-memory fakes in [`fakes`].
//!
//! Shared data follows Envoy's semantics (proxy-wasm-cpp-host `shared_data.cc`), which shape
//! every use of it:
//! - a CAS token is ignored when the key does not exist yet, so two writers can both create a
//!   key: create keys with a placeholder first, then update them only by CAS;
//! - there is no delete: a key lives as long as the VMs, so the number of keys must be bounded
//!   by design (never a time or a version in a key's name);
//! - every plugin on a proxy shares one namespace (Istio sets no `vm_id`): every key goes
//!   through a [`KeySpace`].

use std::fmt;

/// A value read from shared data with the token that a compare-and-swap write must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Vec<u8>,
    pub cas: u32,
}

/// What a write did. A CAS mismatch is an answer, not a failure: read again and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Done,
    CasMismatch,
}

/// The host refused a shared-data operation (it should not happen; callers fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreError;

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the proxy's shared data refused the operation")
    }
}

/// Proxy-wide key/value data with compare-and-swap.
pub trait SharedStore {
    /// The value and its CAS token, or `None` when the key was never written.
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Writes `value`; with `cas`, only if the key still has that token (ignored when the key
    /// does not exist yet, as in Envoy).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, StoreError>;
}

/// The prefix of every key this plugin writes: root id and layout version, so that other
/// plugins on the proxy, and other layouts of this one, never read our bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
}

/// Bumped whenever the bytes stored under a key change shape.
pub const KEY_LAYOUT_VERSION: u32 = 3;

impl KeySpace {
    pub fn new(root_id: &str) -> Self {
        Self {
            prefix: format!("{root_id}/v{KEY_LAYOUT_VERSION}/"),
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// An outbound call through one of Envoy's clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Http(HttpCall),
    Grpc(GrpcCall),
}

impl Call {
    pub fn cluster(&self) -> &str {
        match self {
            Self::Http(c) => &c.cluster,
            Self::Grpc(c) => &c.cluster,
        }
    }

    pub fn timeout_ms(&self) -> u64 {
        match self {
            Self::Http(c) => c.timeout_ms,
            Self::Grpc(c) => c.timeout_ms,
        }
    }
}

/// An outbound HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// A unary gRPC call: one serialized request message, one response message. The cluster must
/// speak HTTP/2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub cluster: String,
    /// The fully qualified service (`envoy.service.ratelimit.v3.RateLimitService`).
    pub service: String,
    pub method: String,
    /// The serialized request message (without gRPC framing: Envoy adds it).
    pub message: Vec<u8>,
    pub timeout_ms: u64,
}

/// How an outbound call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallReply {
    /// An HTTP call's response.
    Answered {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A gRPC call's response message (gRPC status OK).
    Message(Vec<u8>),
    Failed(CallFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The host refused to start it (unknown cluster, bad headers).
    NotStarted,
    /// No response: connection failure, reset, or the call's timeout.
    NoResponse,
    /// The answer's body is larger than the plugin accepts (it was not read).
    TooLarge { bytes: usize },
    /// A gRPC call ended with this status (not OK, not DEADLINE_EXCEEDED): an error from the
    /// service, or Envoy's `UNAVAILABLE` when it could not reach it.
    GrpcStatus(u32),
}

/// gRPC's DEADLINE_EXCEEDED: the call's timeout.
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;

impl CallFailure {
    /// A gRPC call that ended with `status` (not OK).
    pub fn from_grpc_status(status: u32) -> Self {
        if status == GRPC_DEADLINE_EXCEEDED {
            Self::NoResponse
        } else {
            Self::GrpcStatus(status)
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted => f.write_str("the call could not be started"),
            Self::NoResponse => f.write_str("no response (connection failure or timeout)"),
            Self::TooLarge { bytes } => {
                write!(
                    f,
                    "the answer's body of {bytes} bytes is larger than allowed"
                )
            }
            Self::GrpcStatus(status) => write!(f, "gRPC status {status}"),
        }
    }
}

/// Starts outbound calls; the answer comes back later, to the context that started the call,
/// as a [`CallReply`] with the returned token. Envoy numbers HTTP and gRPC calls apart, so one
/// token never names two calls in flight.
pub trait Outbound {
    fn dispatch(&mut self, call: &Call) -> Result<u32, CallFailure>;
}

/// Everything worth a metric or a log line. The host maps each to counters and log lines;
/// nothing in here carries credential material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request went upstream with every check passed.
    Allowed,
    /// A request was refused (`code` is the problem code, `https_redirect` for a redirect).
    Denied { code: &'static str },
    /// Report-only mode forwarded a request it would have refused.
    ReportOnly {
        code: &'static str,
        status: u16,
        request_id: Option<String>,
    },
    /// `acl.mode: shadow` let a request through that the ACL would refuse (`code`: `forbidden`,
    /// `not_owner`, `enumeration_blocked`, or why its data could not be read).
    AclShadowDenial {
        code: &'static str,
        /// The rule that applied (`acl.rules[i] <path>`).
        rule: Option<String>,
        request_id: Option<String>,
    },
    /// The enumeration guard started blocking a consumer for `seconds`.
    EnumerationBlocked { consumer: String, seconds: u64 },
    /// A JWT provider's keys were loaded from a JWKS document of this proxy-wide version.
    JwksLoaded {
        provider: usize,
        keys: usize,
        version: u64,
    },
    /// This VM started a JWKS fetch (for the whole proxy: other VMs wait for its result).
    JwksFetchStarted,
    /// A fetched JWKS was not used; the last good keys stay.
    JwksRejected { provider: usize, reason: String },
    /// A request waits for a JWKS refetch (a token named a key id not known yet).
    WaitStarted,
    /// A waiting request went on: the awaited answer came (`timed_out` false) or its time ran out.
    WaitEnded { timed_out: bool },
    /// The proxy's shared data failed; the request was answered without it.
    StoreFailed,
    /// A rate-limit bucket could not be updated (other workers kept winning, or the store
    /// failed); `on_store_contention` decided.
    RateLimitContention,
    /// The rate-limit service did not answer in time, answered with an error or with a message
    /// that could not be read; `global_rate_limit.failure_mode` decided.
    RateLimitServiceFailed { reason: String },
    /// The rate-limit service asked for headers that apiguard does not let it set (identity,
    /// credential, hop-by-hop or malformed ones); they were dropped.
    RateLimitServiceHeadersDropped { count: usize },
    /// `failed_auth_limit.client_address` is `connection`, but Envoy took the downstream
    /// address from `x-forwarded-for` (a client can choose it).
    ClientAddressForwarded,
    /// A new live policy document is in force on the whole proxy (this VM published it).
    DataLoaded {
        document_version: String,
        version: u64,
        api_keys: u64,
        acl_groups: usize,
        acl_ownership_entries: usize,
    },
    /// The configuration's ACL data (`acl.groups`, `acl.owners`) is in shared data for the whole
    /// proxy (this VM published it).
    ConfigDataPublished {
        version: u64,
        acl_groups: usize,
        acl_ownership_entries: usize,
    },
    /// A fetched policy document failed validation: `path` and `message` say where and why (never
    /// a value); version `in_force` stays.
    DataRefused {
        path: String,
        message: String,
        in_force: u64,
    },
    /// The policy document could not be fetched; the version in force stays.
    DataFetchFailed { reason: String },
    /// This VM now decides with this version of the policy document.
    DataInForce {
        version: u64,
        document_version: String,
    },
    /// The endpoint confirmed the version in force (`304`, or the same bytes): nothing re-validated.
    DataNotModified,
    /// An audit export was acknowledged: `records` left the buffer.
    AuditShipped { records: usize },
    /// An audit export failed; it is retried after a backoff.
    AuditRetried,
    /// An audit record was dropped: the buffer was full (a gap record will say so).
    AuditDropped,
    /// Audit records waiting in this VM's buffer now.
    AuditBuffered { records: usize },
}

/// Receives events.
pub trait Events {
    fn emit(&mut self, event: Event);
}

/// In-memory fakes of the ports, for unit tests (native and wasm).
pub mod fakes {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::{
        Call, CallFailure, Event, Events, Outbound, SharedStore, StoreError, Stored, Written,
    };

    /// Shared data as Envoy keeps it: one CAS counter for all keys, starting at 1 and never 0;
    /// a CAS token is checked only when the key exists; nothing is ever deleted.
    #[derive(Debug)]
    pub struct MemoryStore {
        inner: RefCell<Inner>,
    }

    #[derive(Debug)]
    struct Inner {
        data: HashMap<String, (Vec<u8>, u32)>,
        next_cas: u32,
        fail: bool,
    }

    impl Default for MemoryStore {
        fn default() -> Self {
            Self {
                inner: RefCell::new(Inner {
                    data: HashMap::new(),
                    next_cas: 1,
                    fail: false,
                }),
            }
        }
    }

    impl MemoryStore {
        /// Makes every later operation fail, as a broken host would.
        pub fn fail_from_now_on(&self) {
            self.inner.borrow_mut().fail = true;
        }

        pub fn keys(&self) -> Vec<String> {
            let mut keys: Vec<String> = self.inner.borrow().data.keys().cloned().collect();
            keys.sort();
            keys
        }
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
            let inner = self.inner.borrow();
            if inner.fail {
                return Err(StoreError);
            }
            Ok(inner.data.get(key).map(|(value, cas)| Stored {
                value: value.clone(),
                cas: *cas,
            }))
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, StoreError> {
            let mut inner = self.inner.borrow_mut();
            if inner.fail {
                return Err(StoreError);
            }
            let token = inner.next_cas;
            inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
            match inner.data.get_mut(key) {
                Some(entry) => {
                    if cas.is_some_and(|c| c != 0 && c != entry.1) {
                        return Ok(Written::CasMismatch);
                    }
                    *entry = (value.to_vec(), token);
                }
                // Envoy ignores the CAS of a key that does not exist yet.
                None => {
                    inner.data.insert(key.to_owned(), (value.to_vec(), token));
                }
            }
            Ok(Written::Done)
        }
    }

    /// Records the calls it is asked to start and hands out tokens 1, 2, ...
    #[derive(Debug, Default)]
    pub struct RecordingOutbound {
        pub calls: Vec<(u32, Call)>,
        /// When set, every dispatch fails this way.
        pub refuse: Option<CallFailure>,
    }

    impl Outbound for RecordingOutbound {
        fn dispatch(&mut self, call: &Call) -> Result<u32, CallFailure> {
            if let Some(failure) = self.refuse {
                return Err(failure);
            }
            let token = u32::try_from(self.calls.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            self.calls.push((token, call.clone()));
            Ok(token)
        }
    }

    /// Keeps every event, in order.
    #[derive(Debug, Default)]
    pub struct RecordedEvents(pub Vec<Event>);

    impl Events for RecordedEvents {
        fn emit(&mut self, event: Event) {
            self.0.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::fakes::MemoryStore;
    use super::*;

    #[test]
    fn a_missing_key_reads_as_none() {
        let store = MemoryStore::default();
        assert_eq!(store.get("k").unwrap(), None);
    }

    #[test]
    fn cas_is_checked_for_existing_keys() {
        let store = MemoryStore::default();
        store.set("k", b"a", None).unwrap();
        let first = store.get("k").unwrap().unwrap();
        assert_eq!(
            store.set("k", b"b", Some(first.cas)).unwrap(),
            Written::Done
        );
        // The token changed with the write: the old one no longer matches.
        assert_eq!(
            store.set("k", b"c", Some(first.cas)).unwrap(),
            Written::CasMismatch
        );
        assert_eq!(store.get("k").unwrap().unwrap().value, b"b");
    }

    #[test]
    fn cas_is_ignored_when_the_key_does_not_exist_so_two_writers_can_both_create_it() {
        let store = MemoryStore::default();
        // Both writers read "absent" and write with a made-up token: both succeed.
        assert_eq!(store.set("k", b"first", Some(77)).unwrap(), Written::Done);
        let after_first = store.get("k").unwrap().unwrap();
        assert_eq!(store.set("k2", b"x", Some(78)).unwrap(), Written::Done);
        // A writer that read the key before the other created it passes no CAS and overwrites.
        assert_eq!(store.set("k", b"second", None).unwrap(), Written::Done);
        let after_second = store.get("k").unwrap().unwrap();
        assert_eq!(after_second.value, b"second");
        assert_ne!(after_first.cas, after_second.cas);
    }

    #[test]
    fn nothing_is_deleted_an_empty_value_stays_present() {
        let store = MemoryStore::default();
        store.set("k", b"v", None).unwrap();
        store.set("k", b"", None).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().value, b"");
        assert_eq!(store.keys(), ["k"]);
    }

    #[test]
    fn one_cas_counter_serves_every_key() {
        let store = MemoryStore::default();
        store.set("a", b"1", None).unwrap();
        store.set("b", b"1", None).unwrap();
        let (a, b) = (
            store.get("a").unwrap().unwrap(),
            store.get("b").unwrap().unwrap(),
        );
        assert_eq!(b.cas, a.cas + 1);
        // A token from one key does not open another.
        store.set("a", b"2", None).unwrap();
        assert_eq!(
            store.set("b", b"3", Some(a.cas)).unwrap(),
            Written::CasMismatch
        );
    }

    #[test]
    fn a_failing_host_is_an_error_not_a_panic() {
        let store = MemoryStore::default();
        store.fail_from_now_on();
        assert_eq!(store.get("k"), Err(StoreError));
        assert_eq!(store.set("k", b"", None), Err(StoreError));
    }

    #[test]
    fn keys_carry_the_root_id_and_layout_version() {
        assert_eq!(
            KeySpace::new("apiguard").key("jwks/ab/state"),
            "apiguard/v3/jwks/ab/state"
        );
    }
}

//! A provider's remote JWKS, fetched once per proxy: the VM that takes the lease in shared data
//! fetches and, when the document holds usable keys, publishes it; every VM (the fetcher
//! included) decodes the keys when the published version changes. Periodic refreshes are
//! scheduled per proxy; an unknown `kid` brings a fetch forward at most once per
//! `min_refetch_interval`, so tokens with made-up key ids cannot turn the proxy into a load
//! generator against the identity provider.

use sha2::{Digest, Sha256};

use super::config::RemoteJwks;
use super::jwks::VerifyKey;
use crate::live::{Feed, FeedTiming, Lease};
use crate::ports::{HttpCall, KeySpace};

/// Per-VM state of one remote provider.
#[derive(Debug)]
pub struct RemoteState {
    pub(super) feed: Feed,
    pub(super) timing: FeedTiming,
    /// The call that fetches the document.
    pub(super) call: HttpCall,
    /// Keys of the version this VM loaded.
    pub(super) keys: Vec<VerifyKey>,
    /// The published version the keys came from (0 = none yet).
    pub(super) version: u64,
    /// Held while this VM's fetch is under way.
    pub(super) lease: Option<Lease>,
}

impl RemoteState {
    pub fn new(remote: &RemoteJwks, space: &KeySpace) -> Self {
        Self {
            feed: Feed::new(space, &feed_name(remote)),
            timing: FeedTiming {
                refresh_ms: remote.refresh_interval.saturating_mul(1000),
                min_refetch_ms: remote.min_refetch_interval.saturating_mul(1000),
                lease_ms: lease_ms(remote.timeout_ms),
                sticky_ms: 0,
            },
            call: HttpCall {
                cluster: remote.cluster.clone(),
                method: "GET".to_owned(),
                path: remote.path.clone(),
                authority: remote.authority.clone(),
                headers: vec![("accept".to_owned(), "application/json".to_owned())],
                body: Vec::new(),
                timeout_ms: remote.timeout_ms,
            },
            keys: Vec::new(),
            version: 0,
            lease: None,
        }
    }
}

/// A lease outlives the call's timeout with room to spare; past it the holder is presumed gone
/// (its VM was replaced, or the answer was lost) and another VM takes over.
fn lease_ms(timeout_ms: u64) -> i64 {
    i64::try_from(timeout_ms.saturating_mul(2).saturating_add(1000)).unwrap_or(i64::MAX)
}

/// The document's name in shared data: a digest of where it comes from, so every plugin
/// configuration that fetches the same URL shares one copy, and the set of names stays bounded.
pub(crate) fn feed_name(remote: &RemoteJwks) -> String {
    let mut h = Sha256::new();
    for part in [&remote.cluster, &remote.authority, &remote.path] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("jwks/{hex}")
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn remote(path: &str) -> RemoteJwks {
        RemoteJwks {
            cluster: "idp".to_owned(),
            path: path.to_owned(),
            authority: "idp".to_owned(),
            refresh_interval: 300,
            timeout_ms: 2000,
            min_refetch_interval: 30,
            unknown_kid_wait_ms: 2000,
        }
    }

    #[test]
    fn one_document_per_url_with_a_bounded_name() {
        let (a, b) = (feed_name(&remote("/jwks")), feed_name(&remote("/other")));
        assert_ne!(a, b);
        assert_eq!(a, feed_name(&remote("/jwks")));
        assert_eq!(a.len(), "jwks/".len() + 16);
    }

    #[test]
    fn the_lease_outlives_the_call() {
        let state = RemoteState::new(&remote("/jwks"), &KeySpace::new("apiguard"));
        assert_eq!(state.timing.lease_ms, 5000);
        assert_eq!(state.timing.refresh_ms, 300_000);
        assert_eq!(state.call.timeout_ms, 2000);
    }
}

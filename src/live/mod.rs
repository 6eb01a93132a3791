//! Documents fetched once per proxy and shared by every worker VM through shared data: one VM
//! holds a lease and fetches, publishes the body under a version, and every VM loads a version
//! only when it changes. The first such document is a JWT provider's JWKS.
//!
//! Two keys per document, created once with a placeholder so that every later write can be a
//! real compare-and-swap (Envoy ignores the CAS of a key that does not exist yet):
//! - `<name>/state`: version, body digest, lease holder and expiry, schedule (small; read often);
//! - `<name>/doc`: version and body (read only when the version changed).

mod feed;

pub use feed::{Feed, FeedState, FeedTiming, FetchReason, Lease, Published};

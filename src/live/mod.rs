//! Documents fetched once per proxy and shared by every worker VM through shared data: one VM
//! holds a lease and fetches, publishes under a version, and every VM loads a version only when
//! it changes. Two such documents: a JWT provider's JWKS (published whole), and the live policy
//! document (API keys, ACL data) published as a sharded table, see [`table`].
//!
//! Every feed has a state key, created once with a placeholder so that every later write can be
//! a real compare-and-swap (Envoy ignores the CAS of a key that does not exist yet):
//! - `<name>/state`: version, body digest, lease holder and expiry, schedule, the publisher's
//!   descriptor (small; read often);
//! - `<name>/doc`: version and body, for documents published whole (read only when the version
//!   changed).

mod acl_data;
mod bytes;
pub mod document;
mod feed;
mod policy_data;
pub mod source;
pub mod table;

pub use acl_data::SharedAclData;
pub use feed::{Feed, FeedState, FeedTiming, FetchReason, Lease, Pending, Published};
pub use policy_data::{rules_digest, DataUnavailable, PolicyData};

//! The identity headers the plugin sets for the upstream (and strips from client requests);
//! JWT configuration refuses to forward claims into them.

/// Prefix of every header the plugin sets for the upstream; client-sent copies are removed.
pub const IDENTITY_HEADER_PREFIX: &str = "x-apiguard-";
pub const CONSUMER_HEADER: &str = "x-apiguard-consumer";
pub const SUBJECT_HEADER: &str = "x-apiguard-subject";
pub const WOULD_DENY_HEADER: &str = "x-apiguard-would-deny";

//! The identity headers the plugin sets for the upstream (and strips from client requests);
//! JWT configuration refuses to forward claims into them.

/// Prefix of every header the plugin sets for the upstream; client-sent copies are removed.
pub const IDENTITY_HEADER_PREFIX: &str = "x-apiguard-";
pub const CONSUMER_HEADER: &str = "x-apiguard-consumer";
pub const SUBJECT_HEADER: &str = "x-apiguard-subject";
pub const WOULD_DENY_HEADER: &str = "x-apiguard-would-deny";
/// The caller's groups the ACL decided with (comma-separated, sorted).
pub const GROUPS_HEADER: &str = "x-apiguard-groups";

/// Whether `name` starts with `prefix` as a CGI-style upstream reads header names: ASCII case
/// folded and `_` read as `-` (without allocating: this runs for every header of every request).
pub fn read_as_prefix(name: &str, prefix: &str) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| fold(a) == fold(b))
}

//! Where a configured outbound call goes (a JWKS, the live policy document): an Envoy cluster,
//! a path and an authority, checked the same way wherever they are configured.

use crate::config_error::ConfigError;

/// A checked destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub cluster: String,
    pub path: String,
    /// `:authority`; the cluster name when none is configured.
    pub authority: String,
}

/// Printable ASCII without spaces, 1-1024 bytes: what Envoy takes as a cluster name, a path or
/// an authority in an outbound call's headers.
fn is_token(text: &str) -> bool {
    (1..=1024).contains(&text.len()) && text.bytes().all(|c| c.is_ascii_graphic())
}

/// Checks the three fields; errors name `<at>.<field>`.
pub fn endpoint(
    at: &str,
    cluster: String,
    path: String,
    authority: Option<String>,
) -> Result<Endpoint, ConfigError> {
    let err = |field: &str, message: &str| ConfigError::new(format!("{at}.{field}"), message);
    if !is_token(&cluster) {
        return Err(err("cluster", "must be an Envoy cluster name"));
    }
    if !path.starts_with('/') || !is_token(&path) {
        return Err(err("path", "must be a request path starting with /"));
    }
    let authority = authority.unwrap_or_else(|| cluster.clone());
    if !is_token(&authority) {
        return Err(err("authority", "must be a host name (and optional port)"));
    }
    Ok(Endpoint {
        cluster,
        path,
        authority,
    })
}

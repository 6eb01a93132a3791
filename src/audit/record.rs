//! What one request's audit record says: the decision's facts (from the pipeline) and the
//! exchange's facts (from the host when the request ends), as OTLP attributes. OpenTelemetry
//! HTTP semantic-convention names where one exists, the rest under `apiguard.`.

use std::rc::Rc;

use super::chain::REQUEST_BODY;
use super::entry::Entry;
use crate::query::QueryCredentials;

/// How the plugin decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Report-only mode forwarded a request it would have refused.
    ReportOnly,
    /// Plain HTTP redirected to HTTPS.
    Redirected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::ReportOnly => "report_only",
            Self::Redirected => "redirected",
        }
    }
}

/// What the decision established; no credential in here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The problem code of a refusal (enforced or not).
    pub code: Option<&'static str>,
    pub consumer: Option<Rc<str>>,
    /// A short digest of the API key's SHA-256 (never the key).
    pub key_fingerprint: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub jti: Option<String>,
    /// The matching `routes[].prefix`.
    pub route: Option<String>,
    /// The rate-limit plan that applied, and the tokens left in the caller's bucket.
    pub plan: Option<Rc<str>>,
    pub tokens_left: Option<u64>,
    /// The ACL rule that applied (`acl.rules[i] <path>`).
    pub acl_rule: Option<String>,
}

impl Outcome {
    pub fn new(verdict: Verdict) -> Self {
        Self {
            verdict,
            code: None,
            consumer: None,
            key_fingerprint: None,
            issuer: None,
            subject: None,
            jti: None,
            route: None,
            plan: None,
            tokens_left: None,
            acl_rule: None,
        }
    }
}

/// The first 8 bytes of the key's SHA-256, in hex: enough to tell keys apart and find the
/// configuration entry (whose `sha256` starts with it), nothing that helps guess the key.
pub fn key_fingerprint(digest: &[u8; 32]) -> String {
    crate::api_key::fingerprint(digest)
}

/// The request as Envoy saw it, read when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    pub end_ms: i64,
    pub duration_ms: Option<i64>,
    pub request_id: Option<String>,
    pub client_address: Option<String>,
    pub method: Option<String>,
    pub authority: Option<String>,
    /// Path and query as received; the query's credential values are redacted here.
    pub path_and_query: Option<String>,
    pub response_status: Option<u16>,
}

/// Who wrote the record: the plugin's version and the configuration's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub version: &'static str,
    pub config_digest: String,
}

pub const REDACTED: &str = "REDACTED";

/// `ip:port` (`[v6]:port` for IPv6) as the semantic conventions want it: address and port apart.
fn split_peer(peer: &str) -> (&str, Option<u16>) {
    let Some((address, port)) = peer.rsplit_once(':') else {
        return (peer, None);
    };
    let address = match address.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(v6) => v6,
        // A bare IPv6 address has colons of its own and no port.
        None if address.contains(':') || address.is_empty() => return (peer, None),
        None => address,
    };
    match port.parse() {
        Ok(port) => (address, Some(port)),
        Err(_) => (peer, None),
    }
}

/// The request's record (before it is linked into the chain). `outcome` is `None` when no
/// decision was reached (the client went away while the request waited, or the VM failed).
pub fn request_entry(
    exchange: &Exchange,
    outcome: Option<&Outcome>,
    query: &QueryCredentials,
    stamp: &Stamp,
) -> Entry {
    let nanos = u64::try_from(exchange.end_ms)
        .unwrap_or(0)
        .saturating_mul(1_000_000);
    let mut e = Entry::new(nanos, REQUEST_BODY);
    let mut text = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            e.push_str(key, value);
        }
    };
    text("apiguard.request_id", exchange.request_id.as_deref());
    text("http.request.method", exchange.method.as_deref());
    text("apiguard.authority", exchange.authority.as_deref());
    if let Some(peer) = &exchange.client_address {
        let (address, port) = split_peer(peer);
        e.push_str("client.address", address);
        if let Some(port) = port {
            e.push_int("client.port", i64::from(port));
        }
    }
    if let Some(full) = &exchange.path_and_query {
        let (path, q) = full
            .split_once('?')
            .map_or((full.as_str(), None), |(p, q)| (p, Some(q)));
        e.push_str("url.path", path);
        if let Some(q) = q {
            e.push_str("url.query", query.redact(q, REDACTED));
        }
    }
    if let Some(status) = exchange.response_status {
        e.push_int("http.response.status_code", i64::from(status));
    }
    if let Some(ms) = exchange.duration_ms {
        e.push_int("apiguard.duration_ms", ms);
    }
    match outcome {
        Some(o) => {
            e.push_str("apiguard.decision", o.verdict.as_str());
            let mut text = |key: &str, value: Option<&str>| {
                if let Some(value) = value {
                    e.push_str(key, value);
                }
            };
            text("apiguard.code", o.code);
            text("apiguard.consumer", o.consumer.as_deref());
            text("apiguard.key_fingerprint", o.key_fingerprint.as_deref());
            text("apiguard.jwt.iss", o.issuer.as_deref());
            text("apiguard.jwt.sub", o.subject.as_deref());
            text("apiguard.jwt.jti", o.jti.as_deref());
            text("apiguard.route", o.route.as_deref());
            text("apiguard.rate_limit.plan", o.plan.as_deref());
            text("apiguard.acl.rule", o.acl_rule.as_deref());
            if let Some(left) = o.tokens_left {
                e.push_int(
                    "apiguard.rate_limit.tokens_left",
                    i64::try_from(left).unwrap_or(i64::MAX),
                );
            }
        }
        None => e.push_str("apiguard.decision", "undecided"),
    }
    e.push_str("apiguard.version", stamp.version);
    e.push_str("apiguard.config_digest", stamp.config_digest.clone());
    e
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            version: "0.1.0",
            config_digest: "ab".repeat(32),
        }
    }

    fn exchange(path: &str) -> Exchange {
        Exchange {
            end_ms: 1_700_000_000_123,
            duration_ms: Some(4),
            request_id: Some("r-1".into()),
            client_address: Some("10.0.0.1:5555".into()),
            method: Some("GET".into()),
            authority: Some("api.example".into()),
            path_and_query: Some(path.into()),
            response_status: Some(429),
        }
    }

    #[test]
    fn a_limited_request_names_its_caller_plan_and_code() {
        let mut o = Outcome::new(Verdict::Denied);
        o.code = Some("rate_limited");
        o.consumer = Some(Rc::from("alice"));
        o.key_fingerprint = Some(key_fingerprint(&[0xab; 32]));
        o.plan = Some(Rc::from("free"));
        o.tokens_left = Some(0);
        o.route = Some("/v1/".into());
        let q = QueryCredentials::new(["api_key"]);
        let e = request_entry(&exchange("/v1/x?page=2"), Some(&o), &q, &stamp());
        assert_eq!(e.time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(e.str("apiguard.decision"), Some("denied"));
        assert_eq!(e.str("apiguard.code"), Some("rate_limited"));
        assert_eq!(e.str("apiguard.consumer"), Some("alice"));
        assert_eq!(e.str("apiguard.key_fingerprint"), Some("abababababababab"));
        assert_eq!(e.str("apiguard.rate_limit.plan"), Some("free"));
        assert_eq!(e.int("apiguard.rate_limit.tokens_left"), Some(0));
        assert_eq!(e.int("http.response.status_code"), Some(429));
        assert_eq!(e.str("url.path"), Some("/v1/x"));
        assert_eq!(e.str("url.query"), Some("page=2"));
        assert_eq!(e.str("client.address"), Some("10.0.0.1"));
        assert_eq!(e.int("client.port"), Some(5555));
        assert_eq!(e.str("apiguard.route"), Some("/v1/"));
        assert_eq!(e.str("apiguard.acl.rule"), None);
        assert_eq!(e.str("apiguard.version"), Some("0.1.0"));
    }

    #[test]
    fn peers_split_into_address_and_port() {
        assert_eq!(split_peer("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_peer("10.1.2.3:80"), ("10.1.2.3", Some(80)));
        assert_eq!(split_peer("10.1.2.3"), ("10.1.2.3", None));
        assert_eq!(split_peer("::1"), ("::1", None));
    }

    #[test]
    fn credential_values_in_the_query_never_reach_the_record() {
        let key = crate::api_key::test_support::key(3);
        let q = QueryCredentials::new(["api_key", "token"]);
        let path = format!("/x?a=1&api_key=s3cret&other={key}&token=t0k");
        let e = request_entry(&exchange(&path), None, &q, &stamp());
        let query = e.str("url.query").unwrap();
        assert_eq!(query, "a=1&api_key=REDACTED&other=REDACTED&token=REDACTED");
        let json = e.to_json().to_string();
        for secret in ["s3cret", key.as_str(), "t0k"] {
            assert!(!json.contains(secret), "{secret}");
        }
        assert_eq!(e.str("apiguard.decision"), Some("undecided"));
    }
}

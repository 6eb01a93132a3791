//! `global_rate_limit`: quotas shared by every replica, asked of a rate-limit service over Envoy's
//! protocol ([`super::rls`]). This module is pure: it turns a request's facts into the
//! descriptors of a `RateLimitRequest`, and the service's `RateLimitResponse` into a verdict
//! (with the headers the service may set); the pipeline makes the call and waits.

use crate::config_error::ConfigError;
use crate::denial::{Denial, RateLimitFields};
use crate::identity::{read_as_prefix, IDENTITY_HEADER_PREFIX};
use crate::ports::GrpcCall;
use crate::request::{is_header_name, RequestFacts};

use super::ceil_seconds;
use super::config::{FailureMode, GlobalRateLimitConfig};
use super::rls::{self, Code, Descriptor, DescriptorStatus, Response};

/// Bounds that keep one request's call small.
const MAX_DESCRIPTORS: usize = 16;
const MAX_ENTRIES: usize = 8;
const MAX_TIMEOUT_MS: u64 = 60_000;
/// The longest cluster name whose `GrpcService` message is plain text (lengths under 128 take
/// one byte): the SDK hands the upstream to Envoy as a string.
const MAX_CLUSTER_LEN: usize = 120;

/// Where a descriptor entry's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource {
    Consumer,
    Plan,
    Route,
    Method,
    ClientAddress,
    /// A request header (its name is also the entry's key).
    Header(String),
}

impl EntrySource {
    fn key(&self) -> &str {
        match self {
            Self::Consumer => "consumer",
            Self::Plan => "plan",
            Self::Route => "route",
            Self::Method => "method",
            Self::ClientAddress => "client_address",
            Self::Header(name) => name,
        }
    }
}

/// What a request's descriptors are made of, beyond the request itself.
#[derive(Debug, Clone, Copy)]
pub struct DescriptorFacts<'a> {
    pub consumer: Option<&'a str>,
    pub plan: Option<&'a str>,
    /// The matched `routes[].prefix`, or `/`.
    pub route: &'a str,
}

/// Compiled `global_rate_limit`.
#[derive(Debug)]
pub struct GlobalRateLimit {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u64,
    pub failure_mode: FailureMode,
    pub descriptors: Vec<Vec<EntrySource>>,
    /// Request headers the service may never set (credential and forwarded-claim headers),
    /// beyond the fixed ones.
    protected_request_headers: Vec<String>,
}

/// Headers that no one but the client or the proxy may set on a request: credentials, framing,
/// and what upstreams trust about the client (its address, scheme, host).
const FIXED_REQUEST_HEADERS: [&str; 17] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
];

/// Headers of a response that apiguard or the proxy owns.
const FIXED_RESPONSE_HEADERS: [&str; 16] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "strict-transport-security",
    "www-authenticate",
    "set-cookie",
    "location",
];

/// The same header as an upstream reads names (any case, `_` for `-`).
fn same_header(a: &str, b: &str) -> bool {
    a.len() == b.len() && read_as_prefix(a, b)
}

/// A header value that Envoy and upstreams take as it is: no control characters but tab.
fn is_header_value(value: &str) -> bool {
    value.len() <= 8192 && !value.chars().any(|c| c.is_control() && c != '\t')
}

fn is_token_text(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len())
        && text
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
}

/// A limit's name as it may stand between quotes in a RateLimit field.
fn field_name(name: &str) -> &str {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-:/".contains(&c));
    if ok {
        name
    } else {
        "global"
    }
}

impl GlobalRateLimit {
    /// `credential_headers`: the request headers that carry credentials in this configuration
    /// (never read into a descriptor, never set by the service); `claim_headers`: those that
    /// carry forwarded JWT claims (never set by the service).
    pub fn compile(
        cfg: GlobalRateLimitConfig,
        credential_headers: &[&str],
        claim_headers: &[String],
    ) -> Result<Self, ConfigError> {
        const AT: &str = "global_rate_limit";
        if !is_token_text(&cfg.cluster, MAX_CLUSTER_LEN) {
            return Err(ConfigError::new(
                format!("{AT}.cluster"),
                format!("must be 1-{MAX_CLUSTER_LEN} printable ASCII characters without quotes or backslashes"),
            ));
        }
        if !is_token_text(&cfg.domain, 255) {
            return Err(ConfigError::new(
                format!("{AT}.domain"),
                "must be 1-255 printable ASCII characters without quotes or backslashes",
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&cfg.timeout_ms) {
            return Err(ConfigError::new(
                format!("{AT}.timeout_ms"),
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        if !(1..=MAX_DESCRIPTORS).contains(&cfg.descriptors.len()) {
            return Err(ConfigError::new(
                format!("{AT}.descriptors"),
                format!("must list 1 to {MAX_DESCRIPTORS} descriptors"),
            ));
        }
        let mut descriptors = Vec::with_capacity(cfg.descriptors.len());
        for (i, entries) in cfg.descriptors.iter().enumerate() {
            let at = format!("{AT}.descriptors[{i}]");
            if !(1..=MAX_ENTRIES).contains(&entries.len()) {
                return Err(ConfigError::new(
                    at,
                    format!("must list 1 to {MAX_ENTRIES} entries"),
                ));
            }
            let mut compiled: Vec<EntrySource> = Vec::with_capacity(entries.len());
            for (j, entry) in entries.iter().enumerate() {
                let at = format!("{at}[{j}]");
                let source = compile_entry(entry, credential_headers, &at)?;
                if compiled.iter().any(|e| e.key() == source.key()) {
                    return Err(ConfigError::new(at, "repeats a key of its descriptor"));
                }
                compiled.push(source);
            }
            descriptors.push(compiled);
        }
        let protected_request_headers = credential_headers
            .iter()
            .map(|h| (*h).to_owned())
            .chain(claim_headers.iter().cloned())
            .collect();
        Ok(Self {
            cluster: cfg.cluster,
            domain: cfg.domain,
            timeout_ms: cfg.timeout_ms,
            failure_mode: cfg.failure_mode,
            descriptors,
            protected_request_headers,
        })
    }

    /// Whether some descriptor needs the client's address (one more host call per request).
    pub fn needs_client_address(&self) -> bool {
        self.descriptors
            .iter()
            .flatten()
            .any(|e| *e == EntrySource::ClientAddress)
    }

    /// The request's descriptors: a descriptor with an entry whose value the request lacks (no
    /// plan, no such header, no address) is left out.
    pub fn descriptors_for(
        &self,
        req: &RequestFacts,
        facts: &DescriptorFacts<'_>,
    ) -> Vec<Descriptor> {
        self.descriptors
            .iter()
            .filter_map(|entries| {
                entries
                    .iter()
                    .map(|source| {
                        let value = match source {
                            EntrySource::Consumer => facts.consumer,
                            EntrySource::Plan => facts.plan,
                            EntrySource::Route => Some(facts.route),
                            EntrySource::Method => Some(req.method()),
                            EntrySource::ClientAddress => req.client_address(),
                            EntrySource::Header(name) => req.header(name),
                        }?;
                        Some((source.key().to_owned(), value.to_owned()))
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(|entries| Descriptor { entries })
            })
            .collect()
    }

    /// The call that asks the service about these descriptors (`None`: nothing to ask).
    pub fn call(&self, descriptors: &[Descriptor], hits_addend: u64) -> Option<GrpcCall> {
        if descriptors.is_empty() {
            return None;
        }
        let hits = u32::try_from(hits_addend).unwrap_or(u32::MAX);
        Some(GrpcCall {
            cluster: self.cluster.clone(),
            service: rls::SERVICE.to_owned(),
            method: rls::METHOD.to_owned(),
            message: rls::encode_request(&self.domain, descriptors, hits),
            timeout_ms: self.timeout_ms,
        })
    }

    /// What the service's answer decides. Header names are taken in lower case (HTTP/2's, and
    /// envoyproxy/ratelimit writes `RateLimit-Limit`).
    pub fn verdict(&self, response: &Response) -> GlobalVerdict {
        let mut dropped = 0;
        let lower = |(n, v): &(String, String)| (n.to_ascii_lowercase(), v.clone());
        let response_headers: Vec<(String, String)> = response
            .response_headers_to_add
            .iter()
            .map(lower)
            .filter(|(n, v)| {
                let ok = self.may_set_response_header(n, v);
                dropped += usize::from(!ok);
                ok
            })
            .collect();
        if response.overall_code == Code::OverLimit {
            return GlobalVerdict::OverLimit {
                denial: over_limit_denial(&response.statuses),
                response_headers,
                dropped,
            };
        }
        // As Envoy's own rate-limit filter: anything but OVER_LIMIT admits.
        let request_headers = response
            .request_headers_to_add
            .iter()
            .map(lower)
            .filter(|(n, v)| {
                let ok = self.may_set_request_header(n, v);
                dropped += usize::from(!ok);
                ok
            })
            .collect();
        GlobalVerdict::Admitted {
            request_headers,
            response_headers,
            dropped,
        }
    }

    fn may_set_request_header(&self, name: &str, value: &str) -> bool {
        is_header_name(name)
            && is_header_value(value)
            && !read_as_prefix(name, IDENTITY_HEADER_PREFIX)
            // Envoy's router obeys x-envoy-* request headers (timeouts, retries, routing).
            && !read_as_prefix(name, "x-envoy-")
            && !FIXED_REQUEST_HEADERS.contains(&name)
            && !self
                .protected_request_headers
                .iter()
                .any(|p| same_header(name, p))
    }

    fn may_set_response_header(&self, name: &str, value: &str) -> bool {
        is_header_name(name) && is_header_value(value) && !FIXED_RESPONSE_HEADERS.contains(&name)
    }
}

/// `consumer`, `plan`, `route`, `method`, `client_address` or `header:<name>`.
fn compile_entry(
    entry: &str,
    credential_headers: &[&str],
    at: &str,
) -> Result<EntrySource, ConfigError> {
    Ok(match entry {
        "consumer" => EntrySource::Consumer,
        "plan" => EntrySource::Plan,
        "route" => EntrySource::Route,
        "method" => EntrySource::Method,
        "client_address" => EntrySource::ClientAddress,
        other => {
            let Some(name) = other.strip_prefix("header:") else {
                return Err(ConfigError::new(
                    at,
                    "must be consumer, plan, route, method, client_address or header:<name>",
                ));
            };
            if !is_header_name(name) {
                return Err(ConfigError::new(
                    at,
                    "header:<name> needs a lower-case header name",
                ));
            }
            // A credential would leave the proxy in a descriptor; an x-apiguard- header is one
            // the client may have written itself (the plugin removes them only on the way up).
            let credential = credential_headers
                .iter()
                .chain(["authorization", "proxy-authorization", "cookie"].iter())
                .any(|c| same_header(name, c));
            if credential || read_as_prefix(name, IDENTITY_HEADER_PREFIX) {
                return Err(ConfigError::new(
                    at,
                    "names a credential or identity header: its value must not be sent to the rate-limit service",
                ));
            }
            EntrySource::Header(name.to_owned())
        }
    })
}

/// The binding status (over limit, latest reset) as a 429: `Retry-After` from its
/// `duration_until_reset` (or its limit's unit; at least 1 second), the RateLimit fields from its
/// limit.
fn over_limit_denial(statuses: &[DescriptorStatus]) -> Denial {
    let reset_ns = |s: &DescriptorStatus| -> Option<u64> {
        s.duration_until_reset_ns.or_else(|| {
            s.current_limit
                .as_ref()
                .and_then(|l| l.unit.seconds())
                .map(|secs| secs.saturating_mul(1_000_000_000))
        })
    };
    let binding = statuses
        .iter()
        .filter(|s| s.code == Code::OverLimit)
        .max_by_key(|s| reset_ns(s).unwrap_or(0));
    let Some(status) = binding else {
        return Denial::RateLimited {
            retry_after: 1,
            fields: None,
        };
    };
    let reset = i64::try_from(reset_ns(status).unwrap_or(0)).unwrap_or(i64::MAX);
    let retry_after = ceil_seconds(reset, 1);
    let fields = status.current_limit.as_ref().map(|limit| {
        let name = field_name(&limit.name);
        let window = limit
            .unit
            .seconds()
            .map(|w| format!(";w={w}"))
            .unwrap_or_default();
        RateLimitFields {
            policy: format!("\"{name}\";q={}{window}", limit.requests_per_unit),
            state: format!(
                "\"{name}\";r={};t={}",
                status.limit_remaining,
                ceil_seconds(reset, 0)
            ),
            remaining: u64::from(status.limit_remaining),
        }
    });
    Denial::RateLimited {
        retry_after,
        fields,
    }
}

/// What the service's answer decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalVerdict {
    Admitted {
        /// For the upstream request.
        request_headers: Vec<(String, String)>,
        /// For the client's response.
        response_headers: Vec<(String, String)>,
        /// Headers the service asked for that apiguard does not let it set.
        dropped: usize,
    },
    OverLimit {
        denial: Denial,
        response_headers: Vec<(String, String)>,
        dropped: usize,
    },
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::rls::{Limit, Unit};
    use super::*;
    use crate::request::test_support::TestRequest;

    fn config(descriptors: serde_json::Value) -> GlobalRateLimitConfig {
        serde_json::from_value(serde_json::json!({
            "cluster": "ratelimit", "domain": "apiguard", "descriptors": descriptors,
        }))
        .unwrap()
    }

    fn compile(descriptors: serde_json::Value) -> Result<GlobalRateLimit, ConfigError> {
        GlobalRateLimit::compile(
            config(descriptors),
            &["x-api-key", "authorization"],
            &["x-tenant-claim".to_owned()],
        )
    }

    #[test]
    fn defaults_and_the_documented_example() {
        let g = compile(serde_json::json!([["consumer"], ["consumer", "route"]])).unwrap();
        assert_eq!((g.timeout_ms, g.failure_mode), (50, FailureMode::Deny));
        let req = TestRequest::get("/payments/1")
            .set_header("x-tenant", "t1")
            .build();
        let facts = DescriptorFacts {
            consumer: Some("alice"),
            plan: None,
            route: "/payments",
        };
        let d = g.descriptors_for(&req, &facts);
        let pairs = |d: &Descriptor| d.entries.clone();
        assert_eq!(
            d.iter().map(pairs).collect::<Vec<_>>(),
            [
                vec![("consumer".to_owned(), "alice".to_owned())],
                vec![
                    ("consumer".to_owned(), "alice".to_owned()),
                    ("route".to_owned(), "/payments".to_owned())
                ]
            ]
        );
        let call = g.call(&d, 3).unwrap();
        assert_eq!(call.cluster, "ratelimit");
        assert_eq!(call.service, "envoy.service.ratelimit.v3.RateLimitService");
        assert_eq!(call.method, "ShouldRateLimit");
        assert_eq!(call.message, rls::encode_request("apiguard", &d, 3));
        assert_eq!(g.call(&[], 1), None);
    }

    #[test]
    fn a_descriptor_with_a_missing_value_is_left_out() {
        let g = compile(serde_json::json!([
            ["plan"],
            ["header:x-tenant", "method"],
            ["client_address"],
            ["route"]
        ]))
        .unwrap();
        assert!(g.needs_client_address());
        let facts = DescriptorFacts {
            consumer: Some("alice"),
            plan: None,
            route: "/",
        };
        let post = TestRequest::get("/x").set_header(":method", "POST");
        let d = g.descriptors_for(&post.clone().build(), &facts);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].entries, [("route".to_owned(), "/".to_owned())]);
        let facts = DescriptorFacts {
            plan: Some("gold"),
            ..facts
        };
        let req = post
            .set_header("x-tenant", "")
            .build()
            .with_client_address(Some("10.0.0.1:5555"));
        let d = g.descriptors_for(&req, &facts);
        assert_eq!(d.len(), 4);
        // Header entries are keyed by the header's name; an empty value is a value.
        assert_eq!(
            d[1].entries,
            [
                ("x-tenant".to_owned(), String::new()),
                ("method".to_owned(), "POST".to_owned())
            ]
        );
    }

    #[test]
    fn invalid_configurations_name_their_field() {
        for (descriptors, path) in [
            (serde_json::json!([]), "global_rate_limit.descriptors"),
            (serde_json::json!([[]]), "global_rate_limit.descriptors[0]"),
            (
                serde_json::json!([["consumer"], ["user"]]),
                "global_rate_limit.descriptors[1][0]",
            ),
            (
                serde_json::json!([["consumer", "consumer"]]),
                "global_rate_limit.descriptors[0][1]",
            ),
            (
                serde_json::json!([["header:X-Tenant"]]),
                "global_rate_limit.descriptors[0][0]",
            ),
            (
                serde_json::json!([["header:"]]),
                "global_rate_limit.descriptors[0][0]",
            ),
            (
                serde_json::json!([["header:x-api-key"]]),
                "global_rate_limit.descriptors[0][0]",
            ),
            (
                serde_json::json!([["header:authorization"]]),
                "global_rate_limit.descriptors[0][0]",
            ),
            (
                serde_json::json!([["header:cookie"]]),
                "global_rate_limit.descriptors[0][0]",
            ),
            (
                serde_json::json!([["header:x-apiguard-consumer"]]),
                "global_rate_limit.descriptors[0][0]",
            ),
            (
                serde_json::json!([["header:x_api_key"]]),
                "global_rate_limit.descriptors[0][0]",
            ),
        ] {
            let err = compile(descriptors.clone()).unwrap_err();
            assert_eq!(err.path, path, "{descriptors}: {err}");
        }
        let too_many: Vec<serde_json::Value> =
            (0..17).map(|_| serde_json::json!(["consumer"])).collect();
        assert_eq!(
            compile(serde_json::Value::Array(too_many))
                .unwrap_err()
                .path,
            "global_rate_limit.descriptors"
        );
        let longest = "c".repeat(MAX_CLUSTER_LEN);
        assert!(std::str::from_utf8(&rls::encode_grpc_service(&longest)).is_ok());
        for (field, value) in [
            ("cluster", serde_json::json!("")),
            (
                "cluster",
                serde_json::json!("c".repeat(MAX_CLUSTER_LEN + 1)),
            ),
            ("domain", serde_json::json!("a\"b")),
            ("timeout_ms", serde_json::json!(0)),
            ("timeout_ms", serde_json::json!(60_001)),
        ] {
            let mut json =
                serde_json::json!({"cluster": "c", "domain": "d", "descriptors": [["consumer"]]});
            json[field] = value;
            let cfg: GlobalRateLimitConfig = serde_json::from_value(json).unwrap();
            let err = GlobalRateLimit::compile(cfg, &[], &[]).unwrap_err();
            assert_eq!(err.path, format!("global_rate_limit.{field}"));
        }
    }

    fn status(
        code: Code,
        limit: Option<(&str, u32, Unit)>,
        remaining: u32,
        reset_ns: Option<u64>,
    ) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: limit.map(|(name, rpu, unit)| Limit {
                name: name.to_owned(),
                requests_per_unit: rpu,
                unit,
            }),
            limit_remaining: remaining,
            duration_until_reset_ns: reset_ns,
        }
    }

    fn over(statuses: Vec<DescriptorStatus>) -> Denial {
        let g = compile(serde_json::json!([["consumer"]])).unwrap();
        let response = Response {
            overall_code: Code::OverLimit,
            statuses,
            ..Response::default()
        };
        match g.verdict(&response) {
            GlobalVerdict::OverLimit { denial, .. } => denial,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn over_limit_takes_retry_after_and_fields_from_the_binding_status() {
        let denial = over(vec![
            status(
                Code::Ok,
                Some(("a", 100, Unit::Minute)),
                50,
                Some(59_000_000_000),
            ),
            status(
                Code::OverLimit,
                Some(("per-consumer", 10, Unit::Minute)),
                0,
                Some(41_200_000_000),
            ),
            status(
                Code::OverLimit,
                Some(("x\"y", 1000, Unit::Hour)),
                0,
                Some(1_799_000_000_001),
            ),
        ]);
        assert_eq!(
            denial,
            Denial::RateLimited {
                retry_after: 1800,
                fields: Some(RateLimitFields {
                    policy: "\"global\";q=1000;w=3600".to_owned(),
                    state: "\"global\";r=0;t=1800".to_owned(),
                    remaining: 0,
                }),
            }
        );
        // Without a reset, the unit; without a limit, no fields; Retry-After at least 1.
        assert_eq!(
            over(vec![status(
                Code::OverLimit,
                Some(("per-consumer", 10, Unit::Minute)),
                0,
                None
            )]),
            Denial::RateLimited {
                retry_after: 60,
                fields: Some(RateLimitFields {
                    policy: "\"per-consumer\";q=10;w=60".to_owned(),
                    state: "\"per-consumer\";r=0;t=60".to_owned(),
                    remaining: 0,
                }),
            }
        );
        assert_eq!(
            over(vec![status(Code::OverLimit, None, 0, Some(0))]),
            Denial::RateLimited {
                retry_after: 1,
                fields: None
            }
        );
        assert_eq!(
            over(vec![status(Code::Ok, None, 0, None)]),
            Denial::RateLimited {
                retry_after: 1,
                fields: None
            }
        );
        let unknown_unit = over(vec![status(
            Code::OverLimit,
            Some(("n", 5, Unit::Unknown)),
            0,
            None,
        )]);
        assert_eq!(
            unknown_unit,
            Denial::RateLimited {
                retry_after: 1,
                fields: Some(RateLimitFields {
                    policy: "\"n\";q=5".to_owned(),
                    state: "\"n\";r=0;t=0".to_owned(),
                    remaining: 0,
                }),
            }
        );
    }

    #[test]
    fn anything_but_over_limit_admits() {
        let g = compile(serde_json::json!([["consumer"]])).unwrap();
        for code in [Code::Ok, Code::Unknown] {
            let response = Response {
                overall_code: code,
                ..Response::default()
            };
            assert!(matches!(
                g.verdict(&response),
                GlobalVerdict::Admitted { .. }
            ));
        }
    }

    #[test]
    fn the_service_cannot_set_identity_credential_or_framing_headers() {
        let g = compile(serde_json::json!([["consumer"]])).unwrap();
        let h = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let response = Response {
            overall_code: Code::Ok,
            request_headers_to_add: vec![
                h("x-quota", "gold"),
                h("x-apiguard-consumer", "admin"),
                h("X_APIGUARD_SUBJECT", "root"),
                h("x-api-key", "k"),
                h("x_api_key", "k"),
                h("authorization", "Bearer x"),
                h("x-tenant-claim", "t"),
                h("host", "evil"),
                h(":path", "/admin"),
                h("content-length", "0"),
                h("x-bad-value", "a\r\nb: c"),
                h("x-envoy-upstream-rq-timeout-ms", "1"),
                h("X-Forwarded-For", "10.0.0.1"),
            ],
            response_headers_to_add: vec![
                h("x-ratelimit-limit", "10"),
                h("content-type", "text/html"),
                h("retry-after", "0"),
                h("set-cookie", "s=1"),
                h("RateLimit-Remaining", "9"),
                h("Content-Type", "text/html"),
            ],
            ..Response::default()
        };
        assert_eq!(
            g.verdict(&response),
            GlobalVerdict::Admitted {
                request_headers: vec![h("x-quota", "gold")],
                response_headers: vec![h("x-ratelimit-limit", "10"), h("ratelimit-remaining", "9")],
                dropped: 16,
            }
        );
    }
}

//! The production adapters of the core's ports over proxy-wasm: shared data, outbound calls and
//! the request being handled ([`ProxyHost`]), and events as Envoy counters and log lines.

use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType, MetricType, Status};

use super::env::{continue_request, log, set_header};
use super::flow::Host;
use crate::audit::Outcome;
use crate::denial::LocalReply;
use crate::ports::{
    Call, CallFailure, Event, Events, GrpcCall, HttpCall, Outbound, SharedStore, StoreError,
    Stored, Written,
};
use crate::ratelimit::rls::encode_grpc_service;

/// Envoy's shared data of this plugin's VM id.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        match hostcalls::get_shared_data(key) {
            // An existing key with an empty value comes back without bytes but with its token.
            Ok((value, Some(cas))) => Ok(Some(Stored {
                value: value.unwrap_or_default(),
                cas,
            })),
            Ok((Some(value), None)) => Ok(Some(Stored { value, cas: 0 })),
            Ok((None, None)) => Ok(None),
            Err(_) => Err(StoreError),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(Written::Done),
            Err(Status::CasMismatch) => Ok(Written::CasMismatch),
            Err(_) => Err(StoreError),
        }
    }
}

/// The proxy, acting on the effective context.
pub struct ProxyHost;

fn not_started(cluster: &str, status: Status) -> CallFailure {
    log(
        LogLevel::Warn,
        &format!("call to cluster {cluster} could not start: {status:?}"),
    );
    CallFailure::NotStarted
}

impl Outbound for ProxyHost {
    fn dispatch(&mut self, call: &Call) -> Result<u32, CallFailure> {
        match call {
            Call::Http(call) => dispatch_http(call),
            Call::Grpc(call) => dispatch_grpc(call),
        }
    }
}

/// A unary gRPC call; the cluster goes as a serialized `GrpcService` (never misread as one).
fn dispatch_grpc(call: &GrpcCall) -> Result<u32, CallFailure> {
    let service = encode_grpc_service(&call.cluster);
    // The SDK takes the upstream as a string; the bytes are handed to the host unchanged.
    let upstream = String::from_utf8(service).map_err(|_| CallFailure::NotStarted)?;
    hostcalls::dispatch_grpc_call(
        &upstream,
        &call.service,
        &call.method,
        vec![],
        Some(&call.message),
        Duration::from_millis(call.timeout_ms),
    )
    .map_err(|status| not_started(&call.cluster, status))
}

fn dispatch_http(call: &HttpCall) -> Result<u32, CallFailure> {
    {
        let mut headers = vec![
            (":method", call.method.as_str()),
            (":path", call.path.as_str()),
            (":authority", call.authority.as_str()),
        ];
        headers.extend(call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let body = (!call.body.is_empty()).then_some(call.body.as_slice());
        let timeout = Duration::from_millis(call.timeout_ms);
        hostcalls::dispatch_http_call(&call.cluster, headers, body, vec![], timeout)
            .map_err(|status| not_started(&call.cluster, status))
    }
}

impl Host for ProxyHost {
    fn switch_to(&mut self, context: u32) -> bool {
        hostcalls::set_effective_context(context).is_ok()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set_header(MapType::HttpRequestHeaders, name, value);
    }

    fn send_reply(&mut self, reply: &LocalReply) {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let status = u32::from(reply.status);
        if hostcalls::send_http_response(status, headers, Some(&reply.body)).is_err() {
            log(LogLevel::Error, "could not send the local reply");
        }
    }

    fn resume_request(&mut self) {
        continue_request();
    }

    /// Filter state `wasm.apiguard_consumer`, `wasm.apiguard_decision`, `wasm.apiguard_code`:
    /// Envoy's access log prints them with `%FILTER_STATE(wasm.apiguard_consumer:PLAIN)%`.
    fn expose_outcome(&mut self, outcome: &Outcome) {
        let values = [
            ("apiguard_consumer", outcome.consumer.as_deref()),
            ("apiguard_decision", Some(outcome.verdict.as_str())),
            ("apiguard_code", outcome.code),
        ];
        for (name, value) in values {
            if let Some(value) = value {
                let _ = hostcalls::set_property(vec![name], Some(value.as_bytes()));
            }
        }
    }
}

/// Events as Envoy counters (`wasmcustom.apiguard_*`) and log lines. Counter ids are defined
/// once per name and kept by the problem code, so a request formats no metric name.
#[derive(Default)]
pub struct HostEvents {
    allowed: Option<u32>,
    /// Allowed requests not yet added to the counter: the root adds them on its tick, so the
    /// request path makes no host call for the counter.
    allowed_pending: i64,
    denied: HashMap<&'static str, u32>,
    report_only: HashMap<&'static str, u32>,
    acl_shadow_denials: Option<u32>,
    enumeration_blocks: Option<u32>,
    jwks_failures: Option<u32>,
    jwks_fetches: Option<u32>,
    contention: Option<u32>,
    service_failures: Option<u32>,
    service_headers_dropped: Option<u32>,
    audit_shipped: Option<u32>,
    audit_retried: Option<u32>,
    audit_dropped: Option<u32>,
    audit_buffered: Option<u32>,
    /// This VM's share of the buffered-records gauge.
    audit_buffered_reported: i64,
    data: DataMetrics,
}

/// The live policy document's metrics.
#[derive(Default)]
struct DataMetrics {
    loads: Option<u32>,
    refusals: Option<u32>,
    fetch_failures: Option<u32>,
    not_modified: Option<u32>,
    /// Gauge: API keys in the version in force.
    entries: Option<u32>,
}

fn counter(slot: &mut Option<u32>, name: &str) -> Option<u32> {
    if slot.is_none() {
        *slot = hostcalls::define_metric(MetricType::Counter, name).ok();
    }
    *slot
}

fn counter_by_code(
    ids: &mut HashMap<&'static str, u32>,
    code: &'static str,
    kind: &str,
) -> Option<u32> {
    if let Some(id) = ids.get(code) {
        return Some(*id);
    }
    let name = format!("apiguard_{kind}_{code}_total");
    let id = hostcalls::define_metric(MetricType::Counter, &name).ok()?;
    ids.insert(code, id);
    Some(id)
}

fn gauge(slot: &mut Option<u32>, name: &str) -> Option<u32> {
    if slot.is_none() {
        *slot = hostcalls::define_metric(MetricType::Gauge, name).ok();
    }
    *slot
}

impl HostEvents {
    /// Adds what was counted in memory to Envoy's counters (from the root's tick, and before
    /// the VM's state is replaced or stops).
    pub fn flush_counts(&mut self) {
        if self.allowed_pending == 0 {
            return;
        }
        if let Some(id) = counter(&mut self.allowed, "apiguard_allowed_total") {
            if hostcalls::increment_metric(id, self.allowed_pending).is_ok() {
                self.allowed_pending = 0;
            }
        }
    }
}

fn increment(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Events for HostEvents {
    fn emit(&mut self, event: Event) {
        match event {
            Event::Allowed => self.allowed_pending = self.allowed_pending.saturating_add(1),
            Event::Denied { code } => increment(counter_by_code(&mut self.denied, code, "denied")),
            Event::ReportOnly {
                code,
                status,
                request_id,
            } => {
                increment(counter_by_code(&mut self.report_only, code, "report_only"));
                log(
                    LogLevel::Warn,
                    &format!(
                        "report-only: would deny status={status} code={code} request_id={}",
                        request_id.as_deref().unwrap_or("-")
                    ),
                );
            }
            Event::AclShadowDenial {
                code,
                rule,
                request_id,
            } => {
                increment(counter(
                    &mut self.acl_shadow_denials,
                    "apiguard_acl_shadow_denials_total",
                ));
                log(
                    LogLevel::Warn,
                    &format!(
                        "shadow: would deny {code} rule={} request_id={}",
                        rule.as_deref().unwrap_or("-"),
                        request_id.as_deref().unwrap_or("-")
                    ),
                );
            }
            Event::EnumerationBlocked { consumer, seconds } => {
                increment(counter(
                    &mut self.enumeration_blocks,
                    "apiguard_acl_enumeration_blocks_total",
                ));
                log(
                    LogLevel::Warn,
                    &format!(
                        "acl: consumer {consumer} blocked for {seconds} s: refused on too many distinct objects"
                    ),
                );
            }
            Event::JwksLoaded {
                provider,
                keys,
                version,
            } => log(
                LogLevel::Info,
                &format!("jwt provider {provider}: loaded {keys} keys (version {version})"),
            ),
            Event::JwksFetchStarted => {
                increment(counter(&mut self.jwks_fetches, "apiguard_jwks_fetches_total"));
            }
            Event::JwksRejected { provider, reason } => {
                increment(counter(
                    &mut self.jwks_failures,
                    "apiguard_jwks_fetch_failures_total",
                ));
                log(
                    LogLevel::Warn,
                    &format!(
                        "jwt provider {provider}: jwks ignored, keeping the last good keys: {reason}"
                    ),
                );
            }
            Event::WaitStarted => {}
            Event::WaitEnded { timed_out } => {
                if timed_out {
                    log(LogLevel::Debug, "a request stopped waiting: time is up");
                }
            }
            Event::RateLimitContention => increment(counter(
                &mut self.contention,
                "apiguard_rate_limit_contention_total",
            )),
            Event::RateLimitServiceFailed { reason } => {
                increment(counter(
                    &mut self.service_failures,
                    "apiguard_rate_limit_service_failures_total",
                ));
                log(
                    LogLevel::Debug,
                    &format!("rate-limit service: {reason}; failure_mode decides"),
                );
            }
            Event::RateLimitServiceHeadersDropped { count } => {
                let id = counter(
                    &mut self.service_headers_dropped,
                    "apiguard_rate_limit_service_headers_dropped_total",
                );
                if let Some(id) = id {
                    let _ = hostcalls::increment_metric(id, i64::try_from(count).unwrap_or(1));
                }
            }
            Event::ClientAddressForwarded => log(
                LogLevel::Warn,
                "failed_auth_limit.client_address is connection, but Envoy takes the downstream \
                 address from x-forwarded-for (use_remote_address is false), which a client can \
                 choose: set use_remote_address: true on the HTTP connection manager, or use \
                 client_address x_forwarded_for with trusted_hops",
            ),
            Event::AuditShipped { records } => {
                if let Some(id) = counter(
                    &mut self.audit_shipped,
                    "apiguard_audit_records_shipped_total",
                ) {
                    let _ = hostcalls::increment_metric(
                        id,
                        i64::try_from(records).unwrap_or(i64::MAX),
                    );
                }
            }
            Event::AuditRetried => increment(counter(
                &mut self.audit_retried,
                "apiguard_audit_exports_retried_total",
            )),
            Event::AuditDropped => increment(counter(
                &mut self.audit_dropped,
                "apiguard_audit_records_dropped_total",
            )),
            Event::AuditBuffered { records } => {
                // One gauge for all workers: each adds its own change, so it reads the sum.
                let now = i64::try_from(records).unwrap_or(i64::MAX);
                let change = now.saturating_sub(self.audit_buffered_reported);
                if let Some(id) = gauge(&mut self.audit_buffered, "apiguard_audit_records_buffered")
                {
                    if change != 0 && hostcalls::increment_metric(id, change).is_ok() {
                        self.audit_buffered_reported = now;
                    }
                }
            }
            Event::StoreFailed => log(
                LogLevel::Error,
                "the proxy's shared data failed; deciding without it",
            ),
            Event::DataLoaded {
                document_version,
                version,
                api_keys,
                acl_groups,
                acl_ownership_entries,
            } => {
                let d = &mut self.data;
                increment(counter(&mut d.loads, "apiguard_data_loads_total"));
                if d.entries.is_none() {
                    d.entries =
                        hostcalls::define_metric(MetricType::Gauge, "apiguard_data_entries").ok();
                }
                if let Some(id) = d.entries {
                    let _ = hostcalls::record_metric(id, api_keys);
                }
                log(
                    LogLevel::Info,
                    &format!(
                        "policy document {document_version} in force (proxy version {version}): \
                         {api_keys} api keys, {acl_groups} acl groups, {acl_ownership_entries} \
                         ownership entries"
                    ),
                );
            }
            Event::ConfigDataPublished {
                version,
                acl_groups,
                acl_ownership_entries,
            } => log(
                LogLevel::Info,
                &format!(
                    "the configuration's acl data in force (proxy version {version}): \
                     {acl_groups} groups, {acl_ownership_entries} ownership entries"
                ),
            ),
            Event::DataRefused {
                path,
                message,
                in_force,
            } => {
                increment(counter(
                    &mut self.data.refusals,
                    "apiguard_data_refusals_total",
                ));
                let at = if path.is_empty() {
                    "the top level".to_owned()
                } else {
                    path
                };
                log(
                    LogLevel::Warn,
                    &format!(
                        "policy document refused at {at}: {message}; proxy version {in_force} \
                         stays in force"
                    ),
                );
            }
            Event::DataFetchFailed { reason } => {
                increment(counter(
                    &mut self.data.fetch_failures,
                    "apiguard_data_fetch_failures_total",
                ));
                log(
                    LogLevel::Warn,
                    &format!("policy document fetch failed: {reason}; the version in force stays"),
                );
            }
            Event::DataInForce {
                version,
                document_version,
            } => log(
                LogLevel::Info,
                &format!("policy document {document_version}: proxy version {version} in force in this VM"),
            ),
            Event::DataNotModified => increment(counter(
                &mut self.data.not_modified,
                "apiguard_data_not_modified_total",
            )),
        }
    }
}

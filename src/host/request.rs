//! The HTTP context: one small struct per request. It hands the request's headers to the core
//! and applies the decision: header edits and go on, or a local reply.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use super::env::{header_map, host_now, log, set_header};
use super::metrics::Metrics;
use crate::pipeline::{Decision, Guard};
use crate::request::RequestFacts;

pub struct ApiguardRequest {
    guard: Rc<RefCell<Guard>>,
    metrics: Rc<RefCell<Metrics>>,
    /// Set when the response must carry HSTS.
    hsts: Option<String>,
}

impl ApiguardRequest {
    pub fn new(guard: Rc<RefCell<Guard>>, metrics: Rc<RefCell<Metrics>>) -> Self {
        Self {
            guard,
            metrics,
            hsts: None,
        }
    }

    fn reply(&self, status: u32, headers: &[(String, String)], body: &[u8]) {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if hostcalls::send_http_response(status, headers, Some(body)).is_err() {
            log(LogLevel::Error, "could not send the local reply");
        }
    }
}

/// Envoy sets `connection.tls_version` only for TLS connections.
fn downstream_is_tls() -> bool {
    hostcalls::get_property(vec!["connection", "tls_version"])
        .ok()
        .flatten()
        .is_some_and(|v| !v.is_empty())
}

impl Context for ApiguardRequest {}

impl HttpContext for ApiguardRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Without a clock, expiry cannot be checked: fail closed.
        let Some(now) = host_now() else {
            log(
                LogLevel::Error,
                "the host clock is unavailable; refusing the request",
            );
            self.reply(500, &[], b"");
            return Action::Pause;
        };
        let (decision, facts) = match self.guard.try_borrow_mut() {
            Ok(mut guard) => {
                // One host call fewer per request when the connection's TLS state cannot matter.
                let tls = guard.policy().https.needs_connection_state() && downstream_is_tls();
                let facts = RequestFacts::new(header_map(MapType::HttpRequestHeaders))
                    .with_downstream_tls(tls)
                    .with_end_of_stream(end_of_stream);
                (guard.decide(&facts, now), facts)
            }
            Err(_) => {
                // Cannot happen on a single-threaded VM; fail closed if it ever does.
                self.reply(500, &[], b"");
                return Action::Pause;
            }
        };
        let mut metrics = self.metrics.borrow_mut();
        match decision {
            Decision::Forward(forward) => {
                for name in &forward.remove_headers {
                    set_header(MapType::HttpRequestHeaders, name, None);
                }
                for (name, value) in &forward.set_headers {
                    set_header(MapType::HttpRequestHeaders, name, Some(value));
                }
                if forward.add_hsts {
                    self.hsts = self
                        .guard
                        .try_borrow()
                        .ok()
                        .and_then(|g| g.policy().https.hsts.clone());
                }
                if let Some(denial) = &forward.unenforced {
                    metrics.increment(&format!("apiguard_report_only_{}_total", denial.code()));
                    log(
                        LogLevel::Warn,
                        &format!(
                            "report-only: would deny status={} code={} request_id={}",
                            denial.status(),
                            denial.code(),
                            facts.request_id().unwrap_or("-")
                        ),
                    );
                } else {
                    metrics.increment("apiguard_allowed_total");
                }
                Action::Continue
            }
            Decision::Reply(reply) => {
                metrics.increment(&format!(
                    "apiguard_denied_{}_total",
                    reply.code.unwrap_or("https_redirect")
                ));
                self.reply(u32::from(reply.status), &reply.headers, &reply.body);
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(hsts) = &self.hsts {
            set_header(
                MapType::HttpResponseHeaders,
                "strict-transport-security",
                Some(hsts),
            );
        }
        Action::Continue
    }
}

//! The HTTP context: one small struct per request. It hands the request's facts to the VM's
//! [`Flows`](super::flow::Flows), which decide, pause, resume and apply.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use super::adapters::ProxyHost;
use super::env::{header_map, log, set_header};
use super::flow::{self, Host};
use super::root::{deliver_grpc_reply, deliver_reply, SharedVm, Vm};
use crate::denial::LocalReply;
use crate::request::RequestFacts;

pub struct ApiguardRequest {
    context_id: u32,
    vm: SharedVm,
    /// When the request headers arrived (for the audit record's duration).
    started_ms: Option<i64>,
}

impl ApiguardRequest {
    pub fn new(context_id: u32, vm: SharedVm) -> Self {
        Self {
            context_id,
            vm,
            started_ms: None,
        }
    }
}

/// The downstream connection's remote address (`ip:port`).
fn client_address() -> Option<String> {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
}

/// The request's dynamic metadata, where the jwt_authn filter puts the payloads it verified:
/// Envoy serializes the whole `envoy.config.core.v3.Metadata` message (a deeper path would come
/// back in an encoding without types; see `pbstruct`).
fn dynamic_metadata() -> Option<Vec<u8>> {
    hostcalls::get_property(vec!["metadata"]).ok().flatten()
}

/// Envoy sets `connection.tls_version` only for TLS connections.
fn downstream_is_tls() -> bool {
    hostcalls::get_property(vec!["connection", "tls_version"])
        .ok()
        .flatten()
        .is_some_and(|v| !v.is_empty())
}

impl Context for ApiguardRequest {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        deliver_reply(&self.vm, self.context_id, token_id, num_headers, body_size);
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        deliver_grpc_reply(
            &self.vm,
            self.context_id,
            token_id,
            status_code,
            response_size,
        );
    }

    fn on_done(&mut self) -> bool {
        let me = self.context_id;
        Vm::with(&self.vm, |guard, flows, env, _| {
            flows.on_done(me, guard, env)
        });
        true
    }
}

impl HttpContext for ApiguardRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let me = self.context_id;
        let now_ms = super::env::host_now_ms();
        self.started_ms = now_ms;
        let decided = now_ms.and_then(|now_ms| {
            Vm::with_time(&self.vm, now_ms, |guard, flows, env, host| {
                // One host call fewer per request when the connection's TLS state cannot matter.
                // Only the facts the configuration can use: each is one more host call.
                let needed = guard.policy().needed_facts();
                let tls = needed.downstream_tls && downstream_is_tls();
                let client = needed.client_address.then(client_address).flatten();
                let facts = RequestFacts::new(header_map(MapType::HttpRequestHeaders))
                    .with_downstream_tls(tls)
                    .with_end_of_stream(end_of_stream)
                    .with_client_address(client.as_deref());
                // Only for a token that a provider verified by jwt_authn may have to vouch for.
                let facts = if guard.policy().wants_jwt_authn_metadata(&facts) {
                    facts.with_dynamic_metadata(dynamic_metadata())
                } else {
                    facts
                };
                flows.on_request(me, facts, guard, env, host)
            })
        });
        match decided {
            Some(flow::Action::Continue) => Action::Continue,
            Some(flow::Action::Pause) => Action::Pause,
            None => {
                // No clock (expiry cannot be checked) or no configuration: fail closed.
                log(LogLevel::Error, "cannot decide the request; refusing it");
                ProxyHost.send_reply(&LocalReply::internal_error());
                Action::Pause
            }
        }
    }

    // Envoy holds a paused request's body and trailers itself, unless the filter's configuration
    // sets `allow_on_headers_stop_iteration`: then they come here, and continuing would send the
    // request upstream before it is decided. So they wait while the request waits.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_waiting()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_while_waiting()
    }

    fn on_log(&mut self) {
        super::audit::record(&self.vm, self.context_id, self.started_ms);
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let me = self.context_id;
        let headers = self
            .vm
            .try_borrow_mut()
            .ok()
            .and_then(|mut vm| vm.as_mut().map(|vm| vm.flows.take_response_headers(me)))
            .unwrap_or_default();
        for (name, value) in &headers {
            set_header(MapType::HttpResponseHeaders, name, Some(value));
        }
        Action::Continue
    }
}

impl ApiguardRequest {
    /// Pause while the request waits for its decision (also when the VM cannot tell: a paused
    /// request is resumed by its decision, a forwarded one never pauses here).
    fn hold_while_waiting(&self) -> Action {
        let waiting = self
            .vm
            .try_borrow()
            .ok()
            .and_then(|vm| vm.as_ref().map(|vm| vm.flows.is_waiting(self.context_id)))
            .unwrap_or(true);
        if waiting {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Drop for ApiguardRequest {
    fn drop(&mut self) {
        // A request Envoy never logged leaves no outcome behind.
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            if let Some(vm) = vm.as_mut() {
                vm.flows.take_outcome(self.context_id);
            }
        }
    }
}

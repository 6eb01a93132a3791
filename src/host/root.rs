//! The root context: one per VM. It compiles the configuration (refusing to start on any
//! error), owns the VM's [`Guard`] and request [`Flows`], and ticks: shared JWKS versions are
//! loaded, due fetches started, waiting requests resumed.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType};

use super::adapters::{HostEvents, HostStore, ProxyHost};
use super::env::{buffer, header_map, host_now_ms, log};
use super::flow::Flows;
use super::request::ApiguardRequest;
use crate::audit::{AuditLog, Stopping};
use crate::pipeline::{Env, Guard};
use crate::policy::Policy;
use crate::ports::{CallFailure, CallReply, Event, KeySpace};

/// How often the root looks at shared data when remote key sets are configured: it bounds how
/// late a request waiting for another VM's fetch learns of it.
const TICK: Duration = Duration::from_millis(100);

/// How often the root adds the requests it counted in memory to Envoy's counters when nothing
/// else makes it tick: a counter is at most this late.
const COUNTS_TICK: Duration = Duration::from_secs(1);

/// Namespace of the shared-data keys when Envoy names no root id.
const DEFAULT_ROOT_ID: &str = "apiguard";

/// Everything one VM keeps between callbacks.
pub struct Vm {
    pub guard: Guard,
    pub flows: Flows,
    pub events: HostEvents,
    pub audit: Option<AuditLog>,
}

pub type SharedVm = Rc<RefCell<Option<Vm>>>;

impl Vm {
    /// Runs `f` with the VM's parts, the ports and the time; `None` when the VM is busy (a
    /// re-entrant callback, which Envoy does not make), unconfigured or without a clock.
    pub fn with<T>(
        vm: &SharedVm,
        f: impl FnOnce(&mut Guard, &mut Flows, &mut Env<'_>, &mut ProxyHost) -> T,
    ) -> Option<T> {
        Self::with_time(vm, host_now_ms()?, f)
    }

    /// As [`Vm::with`], at `now_ms` (a time the caller just read: one clock read per callback).
    pub fn with_time<T>(
        vm: &SharedVm,
        now_ms: i64,
        f: impl FnOnce(&mut Guard, &mut Flows, &mut Env<'_>, &mut ProxyHost) -> T,
    ) -> Option<T> {
        let mut slot = vm.try_borrow_mut().ok()?;
        let vm = slot.as_mut()?;
        let mut env = Env {
            now_ms,
            store: &HostStore,
            events: &mut vm.events,
        };
        Some(f(&mut vm.guard, &mut vm.flows, &mut env, &mut ProxyHost))
    }
}

/// Hands the answer to call `token` (delivered by Envoy to `context`) to the audit log or the
/// VM's flows; true when it was an audit export's.
pub fn deliver_reply(
    vm: &SharedVm,
    context: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
) -> bool {
    // The bound comes from what the call was for (an audit export's answer is small).
    let max_body = vm
        .try_borrow()
        .ok()
        .and_then(|slot| {
            slot.as_ref()
                .map(|v| v.guard.max_answer_bytes(v.flows.call_topic(token)))
        })
        .unwrap_or(0);
    let reply = call_reply(num_headers, body_size, max_body);
    if super::audit::take_reply(vm, token, &reply) {
        return true;
    }
    Vm::with(vm, |guard, flows, env, host| {
        flows.on_call_reply(context, token, &reply, guard, env, host)
    });
    false
}

/// Hands the answer to gRPC call `token` (delivered by Envoy to `context`) to the VM's flows:
/// the response message when `status` is OK (0), else the status.
pub fn deliver_grpc_reply(
    vm: &SharedVm,
    context: u32,
    token: u32,
    status: u32,
    response_size: usize,
) {
    let reply = if status == 0 {
        CallReply::Message(buffer(BufferType::GrpcReceiveBuffer, response_size).unwrap_or_default())
    } else {
        CallReply::Failed(CallFailure::from_grpc_status(status))
    };
    Vm::with(vm, |guard, flows, env, host| {
        flows.on_call_reply(context, token, &reply, guard, env, host)
    });
}

/// The answer to an outbound call, as the core sees it.
fn call_reply(num_headers: usize, body_size: usize, max_body: usize) -> CallReply {
    if num_headers == 0 {
        // Envoy answers a failed or timed-out call without any header.
        return CallReply::Failed(CallFailure::NoResponse);
    }
    if body_size > max_body {
        // Never copied into the VM: its memory would keep the peak for good.
        return CallReply::Failed(CallFailure::TooLarge { bytes: body_size });
    }
    let headers = header_map(MapType::HttpCallResponseHeaders);
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok());
    match status {
        Some(status) => CallReply::Answered {
            status,
            headers,
            body: buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default(),
        },
        None => CallReply::Failed(CallFailure::NoResponse),
    }
}

pub struct ApiguardRoot {
    context_id: u32,
    vm: SharedVm,
    /// Set once Envoy stopped the plugin while audit records were being exported.
    stopping: Option<Stopping>,
    /// Whether the configuration needs the root's work on each tick (else it ticks only to
    /// flush the counters).
    works_on_tick: bool,
}

impl ApiguardRoot {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            vm: Rc::new(RefCell::new(None)),
            stopping: None,
            works_on_tick: false,
        }
    }

    fn flush_counts(&self) {
        if let Ok(mut slot) = self.vm.try_borrow_mut() {
            if let Some(vm) = slot.as_mut() {
                vm.events.flush_counts();
            }
        }
    }
}

/// The plugin's root id names its shared data (Istio sets no VM id, so all plugins of a proxy
/// share one namespace).
fn root_id() -> String {
    hostcalls::get_property(vec!["plugin_root_id"])
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| DEFAULT_ROOT_ID.to_owned())
}

/// A random lease-holder id for this VM's root context (WASI's random source, i.e. Envoy's).
fn vm_id() -> Option<u64> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes).max(1))
}

impl Context for ApiguardRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let exported = deliver_reply(&self.vm, self.context_id, token_id, num_headers, body_size);
        let Some(stopping) = self.stopping.as_mut().filter(|_| exported) else {
            return;
        };
        let go_on = stopping.after_export(super::audit::buffered(&self.vm))
            && super::audit::flush(&self.vm).exporting;
        if !go_on {
            self.stopping = None;
            let _ = hostcalls::done();
        }
    }

    fn on_done(&mut self) -> bool {
        self.flush_counts();
        // Pending audit records go out now; Envoy waits for the answer when it can.
        let now = super::audit::flush(&self.vm);
        if !now.exporting {
            return true;
        }
        log(
            LogLevel::Info,
            "stopping: exporting the pending audit records",
        );
        self.stopping = Some(Stopping::new(now.buffered));
        false
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
}

impl RootContext for ApiguardRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let text =
            buffer(BufferType::PluginConfiguration, plugin_configuration_size).unwrap_or_default();
        let policy = match Policy::from_json(&text) {
            Ok(policy) => policy,
            Err(e) => {
                // One line that names the field; never the value (it could be a secret).
                log(LogLevel::Error, &format!("invalid configuration {e}"));
                return false;
            }
        };
        let Some(vm_id) = vm_id() else {
            log(LogLevel::Error, "no random source for the VM id");
            return false;
        };
        for warning in &policy.warnings {
            log(LogLevel::Warn, &format!("configuration: {warning}"));
        }
        let needs_ticks =
            policy.needs_ticks() || policy.audit.as_ref().is_some_and(|a| a.otlp.is_some());
        let audit = match super::audit::open(&policy, &text) {
            Ok(audit) => audit,
            Err(problem) => {
                log(LogLevel::Error, problem);
                return false;
            }
        };
        let mut guard = Guard::new(Rc::new(policy), &KeySpace::new(&root_id()), vm_id);
        if guard.create_shared_keys(&HostStore).is_err() {
            log(LogLevel::Error, "cannot create the plugin's shared data");
            return false;
        }
        // What the configuration puts in shared data is there before the first request when this
        // VM publishes it; otherwise a tick loads it (requests that need it meanwhile get 503).
        let mut events = HostEvents::default();
        if let Some(now_ms) = host_now_ms() {
            let mut env = Env {
                now_ms,
                store: &HostStore,
                events: &mut events,
            };
            if guard.start(&mut env).is_err() {
                env.events.emit(Event::StoreFailed);
            }
        }
        // Calls started under a previous configuration answer into flows that are gone; what
        // its requests counted is kept.
        self.flush_counts();
        *self.vm.borrow_mut() = Some(Vm {
            guard,
            flows: Flows::new(audit.is_some()),
            events,
            audit,
        });
        self.works_on_tick = needs_ticks;
        let period = if needs_ticks { TICK } else { COUNTS_TICK };
        if hostcalls::set_tick_period(period).is_err() {
            log(LogLevel::Error, "cannot schedule the root's tick");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        if self.works_on_tick {
            let root = self.context_id;
            Vm::with(&self.vm, |guard, flows, env, host| {
                flows.on_tick(root, guard, env, host)
            });
            super::audit::tick(&self.vm);
        }
        self.flush_counts();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ApiguardRequest::new(
            context_id,
            Rc::clone(&self.vm),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

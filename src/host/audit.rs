//! The audit log in the host: opened at configuration, one record per request at its log
//! phase, exports started by the root's tick and their answers taken back.

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use sha2::{Digest, Sha256};

use super::adapters::ProxyHost;
use super::env::{host_now_ms, log};
use super::root::SharedVm;
use crate::audit::{AuditLog, Exchange, Stamp};
use crate::policy::Policy;
use crate::ports::CallReply;
use crate::secret::to_hex;

/// The VM's audit log for `policy` (whose configuration text is `text`), if it has one.
pub fn open(policy: &Policy, text: &[u8]) -> Result<Option<AuditLog>, &'static str> {
    let Some(settings) = policy.audit.clone() else {
        return Ok(None);
    };
    // A new stream per VM and configuration: its sequence starts at 0.
    let mut id = [0u8; 16];
    getrandom::getrandom(&mut id).map_err(|_| "no random source for the audit stream id")?;
    let stamp = Stamp {
        version: env!("CARGO_PKG_VERSION"),
        config_digest: to_hex(&Sha256::digest(text)),
    };
    Ok(Some(AuditLog::new(settings, &to_hex(&id), stamp)))
}

/// Hands an answer to the audit log; false when the call was not one of its exports.
pub fn take_reply(vm: &SharedVm, token: u32, reply: &CallReply) -> bool {
    let Some(now_ms) = host_now_ms() else {
        return false;
    };
    let Ok(mut slot) = vm.try_borrow_mut() else {
        return false;
    };
    let Some(vm) = slot.as_mut() else {
        return false;
    };
    let events = &mut vm.events;
    vm.audit
        .as_mut()
        .is_some_and(|a| a.on_reply(token, reply, now_ms, events))
}

/// The root's periodic turn (from the root context): starts a due export.
pub fn tick(vm: &SharedVm) {
    with_log(vm, |audit, now_ms, events| {
        audit.tick(now_ms, &mut ProxyHost, events)
    });
}

/// What a shutdown flush left: whether an export is under way, and the records still buffered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flushing {
    pub exporting: bool,
    pub buffered: usize,
}

/// Exports what is buffered, whatever its age (from the root context, as it stops).
pub fn flush(vm: &SharedVm) -> Flushing {
    with_log(vm, |audit, now_ms, events| Flushing {
        exporting: audit.flush(now_ms, &mut ProxyHost, events),
        buffered: audit.buffered(),
    })
    .unwrap_or_default()
}

/// Records waiting in the VM's buffer.
pub fn buffered(vm: &SharedVm) -> usize {
    with_log(vm, |audit, _, _| audit.buffered()).unwrap_or(0)
}

fn with_log<T>(
    vm: &SharedVm,
    f: impl FnOnce(&mut AuditLog, i64, &mut dyn crate::ports::Events) -> T,
) -> Option<T> {
    let now_ms = host_now_ms()?;
    let mut slot = vm.try_borrow_mut().ok()?;
    let vm = slot.as_mut()?;
    let audit = vm.audit.as_mut()?;
    Some(f(audit, now_ms, &mut vm.events))
}

fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

fn text_property(path: &[&str]) -> Option<String> {
    property(path).and_then(|v| String::from_utf8(v).ok())
}

/// Envoy's integer properties are 8 little-endian bytes.
fn int_property(path: &[&str]) -> Option<i64> {
    let bytes: [u8; 8] = property(path)?.try_into().ok()?;
    Some(i64::from_le_bytes(bytes))
}

/// Writes the record of the request `context` (the current one), at its log phase.
pub fn record(vm: &SharedVm, context: u32, started_ms: Option<i64>) {
    let Ok(mut slot) = vm.try_borrow_mut() else {
        return;
    };
    let Some(vm) = slot.as_mut() else {
        return;
    };
    let outcome = vm.flows.take_outcome(context);
    let Some(audit) = vm.audit.as_mut() else {
        return;
    };
    let Some(end_ms) = host_now_ms() else {
        return;
    };
    let exchange = Exchange {
        end_ms,
        duration_ms: started_ms.map(|s| end_ms.saturating_sub(s)),
        request_id: text_property(&["request", "id"]),
        client_address: text_property(&["source", "address"]),
        method: text_property(&["request", "method"]),
        authority: text_property(&["request", "host"]),
        path_and_query: text_property(&["request", "path"]),
        response_status: int_property(&["response", "code"]).and_then(|c| u16::try_from(c).ok()),
    };
    let query = &vm.guard.policy().query_credentials;
    if let Some(line) = audit.record(&exchange, outcome.as_ref(), query, &mut vm.events) {
        log(LogLevel::Info, &format!("audit {line}"));
    }
}

//! Host calls wrapped so that a failing call becomes a value, never a panic (the SDK's trait
//! defaults unwrap, and a panic would kill the VM for every request on the worker).

use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

pub fn log(level: LogLevel, message: &str) {
    // Nowhere to report a failure to log.
    let _ = hostcalls::log(level, message);
}

/// Envoy's wall clock in Unix milliseconds; None when the host cannot tell (callers fail closed).
pub fn host_now_ms() -> Option<i64> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// All pairs of a header map. Values that are not UTF-8 are decoded lossily: such a value can
/// never be a valid credential, and nothing is forwarded from this copy.
pub fn header_map(map: MapType) -> Vec<(String, String)> {
    hostcalls::get_map_bytes(map)
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(n, v)| {
                    // Valid UTF-8 (nearly always) keeps its buffer: no second copy.
                    let v = String::from_utf8(v)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    (n, v)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_header(map: MapType, name: &str, value: Option<&str>) {
    if hostcalls::set_map_value(map, name, value).is_err() {
        log(LogLevel::Error, &format!("could not set header {name}"));
    }
}

pub fn buffer(kind: BufferType, size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(kind, 0, size).ok().flatten()
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_continue_stream(stream_type: u32) -> u32;
}

/// Lets the current (paused) request go on. The SDK's `resume_http_request` panics on any
/// status but Ok; here a refusal is logged instead.
pub fn continue_request() {
    const HTTP_REQUEST: u32 = 0;
    const OK: u32 = 0;
    // SAFETY: a host import taking a plain integer and returning a status code.
    let status = unsafe { proxy_continue_stream(HTTP_REQUEST) };
    if status != OK {
        log(
            LogLevel::Error,
            &format!("could not resume the request (status {status})"),
        );
    }
}

//! A proxy-wasm HTTP filter that does nothing: every request continues untouched. `make bench`
//! loads it to measure what the wasm ABI alone costs per request.
//!
//! With the plugin configuration `hostcalls` it makes, per request, the same proxy-wasm host calls
//! as apiguard forwarding a request with an API key (read every request header, read the clock,
//! remove one header, add one, set two filter-state properties for the access log) and nothing
//! else, so the benchmark can tell the host-call cost apart from apiguard's own work.

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
}}

#[derive(Default)]
struct NoopRoot {
    /// Set when configured with `hostcalls`.
    mimic: Rc<Cell<bool>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, plugin_configuration_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.mimic.set(config == b"hostcalls");
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp { mimic: self.mimic.get() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct NoopHttp {
    mimic: bool,
}

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.mimic {
            let headers: Vec<(String, String)> = hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                .map(|pairs| pairs.into_iter().map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned())).collect())
                .unwrap_or_default();
            let now = hostcalls::get_current_time().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
            std::hint::black_box((&headers, now));
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-api-key", None);
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-noop-consumer", Some("bench"));
            let _ = hostcalls::set_property(vec!["noop_consumer"], Some(b"bench"));
            let _ = hostcalls::set_property(vec!["noop_decision"], Some(b"allowed"));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

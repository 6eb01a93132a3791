//! The root context: one per worker VM. It compiles the configuration (refusing to start on any
//! error), owns the per-worker [`Guard`], and fetches remote JWKS in the background.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use super::env::{buffer, host_now, log};
use super::metrics::Metrics;
use super::request::ApiguardRequest;
use crate::pipeline::Guard;
use crate::policy::Policy;

/// How often the root wakes up to start due JWKS fetches.
const TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ApiguardRoot {
    guard: Option<Rc<RefCell<Guard>>>,
    metrics: Rc<RefCell<Metrics>>,
    /// dispatch_http_call token → JWT provider index.
    jwks_in_flight: HashMap<u32, usize>,
}

impl ApiguardRoot {
    fn start_due_fetches(&mut self) {
        let Some(guard) = &self.guard else { return };
        let Ok(mut guard) = guard.try_borrow_mut() else {
            return;
        };
        let Some(verifier) = guard.jwt_verifier() else {
            return;
        };
        let Some(now) = host_now() else { return };
        for fetch in verifier.jwks_fetches_due(now) {
            let headers = vec![
                (":method", "GET"),
                (":path", fetch.path.as_str()),
                (":authority", fetch.authority.as_str()),
                ("accept", "application/json"),
            ];
            match hostcalls::dispatch_http_call(
                &fetch.cluster,
                headers,
                None,
                vec![],
                Duration::from_millis(fetch.timeout_ms),
            ) {
                Ok(token) => {
                    self.jwks_in_flight.insert(token, fetch.provider);
                }
                Err(status) => {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "jwks fetch from cluster {} could not start: {status:?}",
                            fetch.cluster
                        ),
                    );
                    let _ = verifier.on_jwks_response(fetch.provider, None, &[], now);
                }
            }
        }
    }
}

impl Context for ApiguardRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(provider) = self.jwks_in_flight.remove(&token_id) else {
            return;
        };
        let status = hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            ":status",
        )
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok());
        let body = buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default();
        let Some(guard) = &self.guard else { return };
        let Ok(mut guard) = guard.try_borrow_mut() else {
            return;
        };
        let Some(verifier) = guard.jwt_verifier() else {
            return;
        };
        match verifier.on_jwks_response(provider, status, &body, host_now().unwrap_or(0)) {
            Ok(keys) => log(
                LogLevel::Info,
                &format!("jwt provider {provider}: loaded {keys} keys"),
            ),
            Err(e) => {
                self.metrics
                    .borrow_mut()
                    .increment("apiguard_jwks_fetch_failures_total");
                log(
                    LogLevel::Warn,
                    &format!(
                        "jwt provider {provider}: jwks ignored, keeping the last good keys: {e}"
                    ),
                )
            }
        }
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
        let has_remote_jwks = policy
            .jwt
            .as_ref()
            .is_some_and(|j| j.providers.iter().any(|p| p.remote.is_some()));
        self.guard = Some(Rc::new(RefCell::new(Guard::new(Rc::new(policy)))));
        // Responses to fetches started under a previous configuration must not land here.
        self.jwks_in_flight.clear();
        if has_remote_jwks {
            if hostcalls::set_tick_period(TICK).is_err() {
                log(LogLevel::Error, "cannot schedule jwks refreshes");
                return false;
            }
            self.start_due_fetches();
        }
        true
    }

    fn on_tick(&mut self) {
        self.start_due_fetches();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let guard = self.guard.clone()?;
        Some(Box::new(ApiguardRequest::new(
            guard,
            Rc::clone(&self.metrics),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

//! Counters that Envoy exposes in its stats (`wasmcustom.apiguard_*`): one for allowed requests,
//! one per denial code, one per report-only denial code. Defined lazily, once per name.

use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

#[derive(Default)]
pub struct Metrics {
    ids: HashMap<String, u32>,
}

impl Metrics {
    pub fn increment(&mut self, name: &str) {
        let id = match self.ids.get(name) {
            Some(id) => *id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => *self.ids.entry(name.to_owned()).or_insert(id),
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    }
}

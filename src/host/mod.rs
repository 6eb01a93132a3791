//! The proxy-wasm side: the only code that talks to Envoy. It collects request facts, asks the
//! pure core for a decision, and applies it. Compiled for `wasm32-wasip1` only.

mod env;
mod metrics;
mod request;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::ApiguardRoot::default())
    });
}}

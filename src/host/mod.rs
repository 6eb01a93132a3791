//! The proxy-wasm side: the only code that talks to Envoy. The per-request state machine
//! ([`flow`]) is pure and tested natively; the rest adapts proxy-wasm to the core's ports,
//! collects request facts and applies decisions. Compiled for `wasm32-wasip1`.

#[cfg(any(target_os = "wasi", test))]
mod flow;

#[cfg(target_os = "wasi")]
mod adapters;
#[cfg(target_os = "wasi")]
mod audit;
#[cfg(target_os = "wasi")]
mod env;
#[cfg(target_os = "wasi")]
mod request;
#[cfg(target_os = "wasi")]
mod root;

#[cfg(target_os = "wasi")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::ApiguardRoot::new(context_id))
    });
}}

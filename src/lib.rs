//! apiguard: API security enforced at the proxy.
//!
//! The pure core (everything but `host`) knows nothing of proxy-wasm: time comes in as an
//! argument (`now`, read from Envoy's clock by the host), randomness through [`api_key::RandomSource`], so the same
//! code runs in native unit tests, in wasm under Node, and inside Envoy.

pub mod acl;
pub mod api_key;
pub mod audit;
pub mod config;
pub mod config_error;
pub mod credentials;
pub mod denial;
pub mod endpoint;
pub mod identity;
pub mod jwt;
pub mod key_entry;
pub mod live;
pub mod paths;
pub mod pbstruct;
pub mod pipeline;
pub mod policy;
pub mod ports;
pub mod protowire;
pub mod query;
pub mod ratelimit;
pub mod request;
#[cfg(feature = "schema")]
pub mod schema;
pub mod secret;
pub mod text;
pub mod time;
pub mod transport;

mod host;

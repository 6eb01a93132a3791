//! `data_source`: where the live policy document comes from, and how fresh it must be.

use serde::Deserialize;

use crate::config_error::ConfigError;
use crate::endpoint::{endpoint, Endpoint};

fn default_path() -> String {
    "/v1/policy.json".to_owned()
}
fn default_refresh_interval() -> u64 {
    10
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_document_bytes() -> u64 {
    256 * 1024 * 1024
}

/// The largest document a VM may be asked to hold: wasm32 memory is 4 GiB at most, and the
/// fetching VM holds the body, its parsed entries and the validated ones at once (about 3.5
/// times the body at its peak).
const MAX_DOCUMENT_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct DataSourceConfig {
    /// The Envoy cluster of the control endpoint.
    pub cluster: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// `:authority` of the request; defaults to the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_seconds: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: u64,
    /// When the endpoint has failed for this long (counted from the refresh that was due after
    /// its last confirmation), requests that need the document get 503; 0 = serve the last good
    /// version indefinitely.
    #[serde(default)]
    pub max_stale_seconds: u64,
}

/// `data_source`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_ms: i64,
    pub timeout_ms: u64,
    pub max_document_bytes: usize,
    /// 0 = never stale.
    pub max_stale_ms: i64,
}

impl DataSource {
    pub fn compile(dto: DataSourceConfig) -> Result<Self, ConfigError> {
        let err =
            |field: &str, message: &str| ConfigError::new(format!("data_source.{field}"), message);
        let Endpoint {
            cluster,
            path,
            authority,
        } = endpoint("data_source", dto.cluster, dto.path, dto.authority)?;
        if !(1..=86_400).contains(&dto.refresh_interval_seconds) {
            return Err(err(
                "refresh_interval_seconds",
                "must be between 1 and 86400",
            ));
        }
        if !(100..=60_000).contains(&dto.timeout_ms) {
            return Err(err("timeout_ms", "must be between 100 and 60000"));
        }
        if !(1..=MAX_DOCUMENT_BYTES).contains(&dto.max_document_bytes) {
            return Err(err(
                "max_document_bytes",
                "must be between 1 and 536870912 (512 MiB)",
            ));
        }
        if dto.max_stale_seconds > 30 * 86_400 {
            return Err(err(
                "max_stale_seconds",
                "must be at most 2592000 (30 days)",
            ));
        }
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Ok(Self {
            cluster,
            path,
            authority,
            refresh_ms: ms(dto.refresh_interval_seconds),
            timeout_ms: dto.timeout_ms,
            max_document_bytes: usize::try_from(dto.max_document_bytes).unwrap_or(usize::MAX),
            max_stale_ms: ms(dto.max_stale_seconds),
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn compile(value: serde_json::Value) -> Result<DataSource, ConfigError> {
        DataSource::compile(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let source = compile(json!({"cluster": "apiguard-control"})).unwrap();
        assert_eq!(
            source,
            DataSource {
                cluster: "apiguard-control".into(),
                path: "/v1/policy.json".into(),
                authority: "apiguard-control".into(),
                refresh_ms: 10_000,
                timeout_ms: 5000,
                max_document_bytes: 268_435_456,
                max_stale_ms: 0,
            }
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (json!({"cluster": ""}), "data_source.cluster"),
            (json!({"cluster": "c", "path": "v1"}), "data_source.path"),
            (
                json!({"cluster": "c", "authority": "a b"}),
                "data_source.authority",
            ),
            (
                json!({"cluster": "c", "refresh_interval_seconds": 0}),
                "data_source.refresh_interval_seconds",
            ),
            (
                json!({"cluster": "c", "timeout_ms": 10}),
                "data_source.timeout_ms",
            ),
            (
                json!({"cluster": "c", "max_document_bytes": 0}),
                "data_source.max_document_bytes",
            ),
            (
                json!({"cluster": "c", "max_document_bytes": 2_000_000_000u64}),
                "data_source.max_document_bytes",
            ),
            (
                json!({"cluster": "c", "max_stale_seconds": 3_000_000}),
                "data_source.max_stale_seconds",
            ),
        ];
        for (value, path) in cases {
            assert_eq!(compile(value.clone()).unwrap_err().path, path, "{value}");
        }
    }
}

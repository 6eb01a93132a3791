//! `audit` as the operator writes it, and its compiled form.

use std::fmt;
use std::rc::Rc;

use ed25519_compact::{KeyPair, Seed};
use serde::Deserialize;

use crate::config_error::ConfigError;
use crate::jwt::jwks::b64url_decode;

fn default_path() -> String {
    "/v1/logs".to_owned()
}
fn default_batch_max_records() -> usize {
    512
}
fn default_batch_max_age_ms() -> u64 {
    1000
}
fn default_buffer_max_records() -> usize {
    65_536
}
fn default_timeout_ms() -> u64 {
    3000
}
fn default_retry_max_backoff_ms() -> u64 {
    30_000
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where records are shipped (OTLP/HTTP JSON); absent: records are not shipped.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
    /// Ed25519 private JWK: every batch carries a checkpoint signed with it.
    #[serde(default)]
    pub signing_key: Option<SigningKeyConfig>,
    /// `off`, or `info`: each record is also written to Envoy's log.
    #[serde(default)]
    pub envoy_log: EnvoyLog,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The Envoy cluster of the collector.
    pub cluster: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// `:authority` of the export requests; the cluster name when absent.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    #[serde(default = "default_batch_max_age_ms")]
    pub batch_max_age_ms: u64,
    #[serde(default = "default_buffer_max_records")]
    pub buffer_max_records: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub d: String,
    pub kid: String,
}

impl fmt::Debug for SigningKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyConfig")
            .field("kid", &self.kid)
            .field("d", &"(redacted)")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum EnvoyLog {
    #[default]
    Off,
    Info,
}

/// Compiled `audit.otlp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub batch_max_records: usize,
    pub batch_max_age_ms: u64,
    pub buffer_max_records: usize,
    pub timeout_ms: u64,
    pub retry_max_backoff_ms: u64,
}

/// The checkpoint signing key. Debug shows the key id only.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub(crate) pair: KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Compiled `audit`.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub otlp: Option<OtlpSettings>,
    pub signing_key: Option<SigningKey>,
    pub envoy_log: EnvoyLog,
}

impl AuditSettings {
    pub fn compile(cfg: AuditConfig) -> Result<Rc<Self>, ConfigError> {
        if cfg.otlp.is_none() && cfg.envoy_log == EnvoyLog::Off {
            return Err(ConfigError::new(
                "audit",
                "needs otlp or envoy_log (records would go nowhere)",
            ));
        }
        let otlp = cfg.otlp.map(compile_otlp).transpose()?;
        let signing_key = cfg.signing_key.map(compile_key).transpose()?;
        if signing_key.is_some() && otlp.is_none() {
            return Err(ConfigError::new(
                "audit.signing_key",
                "signs the batches of audit.otlp, which is absent",
            ));
        }
        Ok(Rc::new(Self {
            otlp,
            signing_key,
            envoy_log: cfg.envoy_log,
        }))
    }
}

fn compile_otlp(cfg: OtlpConfig) -> Result<OtlpSettings, ConfigError> {
    let field = |name: &str| format!("audit.otlp.{name}");
    if cfg.cluster.is_empty() || !cfg.cluster.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::new(
            field("cluster"),
            "must name an Envoy cluster",
        ));
    }
    if !cfg.path.starts_with('/') || !cfg.path.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::new(field("path"), "must be an absolute path"));
    }
    let authority = cfg.authority.unwrap_or_else(|| cfg.cluster.clone());
    if authority.is_empty() || !authority.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::new(field("authority"), "must be a host name"));
    }
    let positive = [
        ("batch_max_records", cfg.batch_max_records as u64),
        ("batch_max_age_ms", cfg.batch_max_age_ms),
        ("buffer_max_records", cfg.buffer_max_records as u64),
        ("timeout_ms", cfg.timeout_ms),
        ("retry_max_backoff_ms", cfg.retry_max_backoff_ms),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(ConfigError::new(field(name), "must be at least 1"));
    }
    if cfg.batch_max_records > cfg.buffer_max_records {
        return Err(ConfigError::new(
            field("batch_max_records"),
            "must not exceed buffer_max_records",
        ));
    }
    Ok(OtlpSettings {
        cluster: cfg.cluster,
        path: cfg.path,
        authority,
        batch_max_records: cfg.batch_max_records,
        batch_max_age_ms: cfg.batch_max_age_ms,
        buffer_max_records: cfg.buffer_max_records,
        timeout_ms: cfg.timeout_ms,
        retry_max_backoff_ms: cfg.retry_max_backoff_ms,
    })
}

fn compile_key(cfg: SigningKeyConfig) -> Result<SigningKey, ConfigError> {
    let field = |name: &str| format!("audit.signing_key.{name}");
    if cfg.kty != "OKP" {
        return Err(ConfigError::new(field("kty"), "must be OKP"));
    }
    if cfg.crv != "Ed25519" {
        return Err(ConfigError::new(field("crv"), "must be Ed25519"));
    }
    if cfg.kid.is_empty() || !cfg.kid.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::new(field("kid"), "must be a printable key id"));
    }
    let seed = b64url_decode(&cfg.d)
        .and_then(|d| Seed::from_slice(&d).ok())
        .ok_or_else(|| ConfigError::new(field("d"), "must be 32 bytes of unpadded base64url"))?;
    let pair = KeyPair::from_seed(seed);
    let x = b64url_decode(&cfg.x)
        .ok_or_else(|| ConfigError::new(field("x"), "must be unpadded base64url"))?;
    if x.as_slice() != pair.pk.as_ref() {
        return Err(ConfigError::new(field("x"), "is not the public key of d"));
    }
    Ok(SigningKey { kid: cfg.kid, pair })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::super::chain::tests::{D, X};
    use crate::policy::Policy;

    fn refused(audit: serde_json::Value) -> crate::config_error::ConfigError {
        let cfg = json!({"api_keys": {"keys": []}, "audit": audit});
        Policy::from_json(cfg.to_string().as_bytes()).unwrap_err()
    }

    fn key(x: &str, d: &str) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": d, "kid": "audit-2026-11"})
    }

    #[test]
    fn the_documented_example_compiles_with_its_defaults() {
        let cfg = json!({"api_keys": {"keys": []}, "audit": {
            "otlp": {"cluster": "otel-collector"}, "signing_key": key(X, D)}});
        let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
        let audit = policy.audit.unwrap();
        let otlp = audit.otlp.as_ref().unwrap();
        assert_eq!(
            (otlp.path.as_str(), otlp.authority.as_str()),
            ("/v1/logs", "otel-collector")
        );
        assert_eq!((otlp.batch_max_records, otlp.batch_max_age_ms), (512, 1000));
        assert_eq!((otlp.buffer_max_records, otlp.timeout_ms), (65_536, 3000));
        assert_eq!(otlp.retry_max_backoff_ms, 30_000);
        assert_eq!(audit.envoy_log, super::EnvoyLog::Off);
        assert_eq!(audit.signing_key.as_ref().unwrap().kid, "audit-2026-11");
    }

    #[test]
    fn bad_settings_name_their_field_and_never_the_key() {
        let otlp = |extra: serde_json::Value| {
            let mut o = json!({"cluster": "c"});
            for (k, v) in extra.as_object().unwrap() {
                o[k] = v.clone();
            }
            json!({ "otlp": o })
        };
        let wrong_x = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        for (audit, path) in [
            (json!({}), "audit"),
            (json!({"envoy_log": "on"}), "audit.envoy_log"),
            (
                otlp(json!({"batch_max_records": 0})),
                "audit.otlp.batch_max_records",
            ),
            (
                otlp(json!({"buffer_max_records": 10, "batch_max_records": 11})),
                "audit.otlp.batch_max_records",
            ),
            (
                otlp(json!({"retry_max_backoff_ms": 0})),
                "audit.otlp.retry_max_backoff_ms",
            ),
            (otlp(json!({"path": "v1/logs"})), "audit.otlp.path"),
            (otlp(json!({"cluster": ""})), "audit.otlp.cluster"),
            (otlp(json!({"bogus": 1})), "audit.otlp.bogus"),
            (
                json!({"envoy_log": "info", "signing_key": key(X, D)}),
                "audit.signing_key",
            ),
            (
                json!({"otlp": {"cluster": "c"}, "signing_key": key(X, "short")}),
                "audit.signing_key.d",
            ),
            (
                json!({"otlp": {"cluster": "c"}, "signing_key": key(wrong_x, D)}),
                "audit.signing_key.x",
            ),
        ] {
            let err = refused(audit.clone());
            assert_eq!(err.path, path, "{audit}: {err}");
            assert!(!err.to_string().contains(D), "{err}");
        }
        let mut k = key(X, D);
        k["crv"] = json!("P-256");
        let err = refused(json!({"otlp": {"cluster": "c"}, "signing_key": k}));
        assert_eq!(err.path, "audit.signing_key.crv");
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let cfg = json!({"api_keys": {"keys": []}, "audit": {
            "otlp": {"cluster": "c"}, "signing_key": key(X, D)}});
        let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
        let shown = format!("{policy:?}");
        assert!(shown.contains("kid") && !shown.contains(D), "{shown}");
        let dto: super::SigningKeyConfig = serde_json::from_value(key(X, D)).unwrap();
        assert!(!format!("{dto:?}").contains(D));
    }
}

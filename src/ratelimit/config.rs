//! `rate_limits` and `failed_auth_limit` as the operator writes them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::bucket::Per;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum PerConfig {
    Second,
    Minute,
    Hour,
    Day,
}

impl From<PerConfig> for Per {
    fn from(p: PerConfig) -> Self {
        match p {
            PerConfig::Second => Per::Second,
            PerConfig::Minute => Per::Minute,
            PerConfig::Hour => Per::Hour,
            PerConfig::Day => Per::Day,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub rate: u64,
    pub per: PerConfig,
    pub burst: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum BucketBy {
    /// One bucket per consumer, shared by all its keys.
    Consumer,
    /// One bucket per API key (JWT callers: per subject).
    Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum OnContention {
    Deny,
    Allow,
}

fn default_bucket_by() -> BucketBy {
    BucketBy::Consumer
}
fn default_on_contention() -> OnContention {
    OnContention::Deny
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub plans: BTreeMap<String, PlanConfig>,
    #[serde(default)]
    pub default_plan: Option<String>,
    #[serde(default)]
    pub consumers: BTreeMap<String, String>,
    #[serde(default)]
    pub plan_claim: Option<String>,
    #[serde(default = "default_bucket_by")]
    pub bucket_by: BucketBy,
    #[serde(default = "default_on_contention")]
    pub on_store_contention: OnContention,
    #[serde(default = "default_true")]
    pub response_headers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum ClientAddressSource {
    /// The downstream connection's remote address.
    Connection,
    /// An entry of `x-forwarded-for`, `trusted_hops` from the right.
    XForwardedFor,
}

fn default_client_address() -> ClientAddressSource {
    ClientAddressSource::Connection
}
fn default_max_tracked_clients() -> u32 {
    65_536
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct FailedAuthConfig {
    pub rate: u64,
    pub per: PerConfig,
    pub burst: u64,
    #[serde(default = "default_client_address")]
    pub client_address: ClientAddressSource,
    #[serde(default)]
    pub trusted_hops: u32,
    #[serde(default = "default_max_tracked_clients")]
    pub max_tracked_clients: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// 503 `rate_limit_unavailable` with `Retry-After`.
    Deny,
    /// The request goes on as if the service had admitted it.
    Allow,
}

fn default_global_timeout_ms() -> u64 {
    50
}
fn default_failure_mode() -> FailureMode {
    FailureMode::Deny
}

/// `global_rate_limit`: quotas shared by every replica, kept by a rate-limit service that speaks
/// Envoy's `envoy.service.ratelimit.v3.RateLimitService` (envoyproxy/ratelimit, Limitador).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct GlobalRateLimitConfig {
    /// The Envoy cluster of the rate-limit service (it must speak HTTP/2: gRPC).
    pub cluster: String,
    /// The `domain` of every request to the service.
    pub domain: String,
    /// How long a request waits for the service's answer.
    #[serde(default = "default_global_timeout_ms")]
    pub timeout_ms: u64,
    /// What happens when the service does not answer in time or answers with an error.
    #[serde(default = "default_failure_mode")]
    pub failure_mode: FailureMode,
    /// The descriptors sent with every limited request: each a list of `consumer`, `plan`,
    /// `route`, `method`, `client_address` or `header:<name>`.
    pub descriptors: Vec<Vec<String>>,
}

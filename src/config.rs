//! Configuration: the JSON that Envoy (`plugin_config.configuration`) or Istio (`pluginConfig`)
//! hands the plugin. Parsed with serde into DTOs that reject unknown fields, then compiled into a
//! validated [`Policy`](crate::policy::Policy). Every error names the field path it is about.

use serde::Deserialize;

use crate::config_error::ConfigError;

/// Which credentials a request must present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum CredentialPolicy {
    /// An API key.
    ApiKey,
    /// A JWT access token.
    Jwt,
    /// At least one of the two; every credential presented must be valid.
    Either,
    /// Both, optionally bound to each other by a JWT claim.
    Both,
}

impl CredentialPolicy {
    pub fn accepts_api_key(self) -> bool {
        !matches!(self, Self::Jwt)
    }
    pub fn accepts_jwt(self) -> bool {
        !matches!(self, Self::ApiKey)
    }
}

fn default_credentials() -> CredentialPolicy {
    CredentialPolicy::ApiKey
}
fn default_true() -> bool {
    true
}
fn default_realm() -> String {
    "apiguard".to_owned()
}
fn default_query_params() -> Vec<String> {
    ["api_key", "apikey", "key", "access_token", "token"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The whole plugin configuration as written by the operator.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    #[serde(default = "default_credentials")]
    pub credentials: CredentialPolicy,
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    #[serde(default)]
    pub jwt: Option<crate::jwt::JwtConfig>,
    #[serde(default)]
    pub https: HttpsConfig,
    #[serde(default)]
    pub exempt_paths: Vec<String>,
    #[serde(default = "default_query_params")]
    pub query_credential_params: Vec<String>,
    #[serde(default = "default_true")]
    pub allow_cors_preflight: bool,
    #[serde(default)]
    pub report_only: bool,
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub rate_limits: Option<crate::ratelimit::RateLimitsConfig>,
    #[serde(default)]
    pub failed_auth_limit: Option<crate::ratelimit::FailedAuthConfig>,
    /// The live policy document (API keys, ACL data) fetched from a control endpoint.
    #[serde(default)]
    pub data_source: Option<crate::live::source::DataSourceConfig>,
    #[serde(default)]
    pub global_rate_limit: Option<crate::ratelimit::GlobalRateLimitConfig>,
    #[serde(default)]
    pub audit: Option<crate::audit::AuditConfig>,
    /// Authorization: who may call which route, and on which objects.
    #[serde(default)]
    pub acl: Option<crate::acl::config::AclConfig>,
}

fn default_key_header() -> String {
    "x-api-key".to_owned()
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    #[serde(default = "default_key_header")]
    pub header: String,
    #[serde(default)]
    pub allow_authorization_header: bool,
    #[serde(default = "default_true")]
    pub strip_credential: bool,
    #[serde(default)]
    pub keys: Vec<ApiKeyEntryConfig>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntryConfig {
    pub sha256: String,
    pub consumer: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked: bool,
    /// A `rate_limits.plans` name.
    #[serde(default)]
    pub plan: Option<String>,
}

fn default_hsts_max_age() -> u64 {
    31_536_000
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    #[serde(default = "default_true")]
    pub required: bool,
    #[serde(default)]
    pub redirect: bool,
    #[serde(default)]
    pub trust_x_forwarded_proto: bool,
    #[serde(default = "default_hsts_max_age")]
    pub hsts_max_age_seconds: u64,
    #[serde(default = "default_true")]
    pub hsts_include_subdomains: bool,
    #[serde(default)]
    pub hsts_preload: bool,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            required: true,
            redirect: false,
            trust_x_forwarded_proto: false,
            hsts_max_age_seconds: default_hsts_max_age(),
            hsts_include_subdomains: true,
            hsts_preload: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    /// The top-level `credentials` when absent.
    #[serde(default)]
    pub credentials: Option<CredentialPolicy>,
    /// Tokens a request on this route takes from its caller's bucket.
    #[serde(default)]
    pub cost: Option<u64>,
    #[serde(default)]
    pub bind_claim: Option<String>,
}

/// Parses the configuration text; a syntax or shape error names the path where it happened.
pub fn parse(text: &[u8]) -> Result<PluginConfig, ConfigError> {
    parse_object(text)
}

/// Parses a JSON object (configuration, or a document the plugin fetches); an error names the
/// path where it happened and never quotes a value.
pub(crate) fn parse_object<'de, T: Deserialize<'de>>(text: &'de [u8]) -> Result<T, ConfigError> {
    // serde would also read a struct from a JSON array; these are always objects.
    if text.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::new("", "expected a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // "." is the root; "?" means a syntax error before any field was known.
        let path = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        ConfigError::new(path, without_value(&e.into_inner().to_string()))
    })?;
    de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
    Ok(parsed)
}

/// serde's messages quote the offending value (`invalid type: string "hunter2", expected a
/// boolean`); a configuration value may be a secret, so the value is cut out and the kind and
/// the expectation are kept.
fn without_value(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: ", "unknown variant"] {
        let Some(rest) = message.strip_prefix(lead) else {
            continue;
        };
        let Some(expected) = message.rfind(", expected") else {
            break;
        };
        let kind = if lead == "unknown variant" {
            ""
        } else {
            rest.split(' ').next().unwrap_or("")
        };
        let kind = kind.trim_end_matches(',');
        let suffix = message.get(expected..).unwrap_or("");
        return format!("{lead}{kind}{suffix}");
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn minimal_config_takes_documented_defaults() {
        let cfg = parse(br#"{"api_keys": {"keys": []}}"#).unwrap();
        assert_eq!(cfg.credentials, CredentialPolicy::ApiKey);
        assert!(cfg.https.required);
        assert_eq!(cfg.https.hsts_max_age_seconds, 31_536_000);
        assert_eq!(cfg.query_credential_params.len(), 5);
        assert!(cfg.allow_cors_preflight);
        assert!(!cfg.report_only);
        let keys = cfg.api_keys.unwrap();
        assert_eq!(keys.header, "x-api-key");
        assert!(keys.strip_credential);
    }

    #[test]
    fn unknown_nested_field_names_its_path() {
        let err =
            parse(br#"{"api_keys": {"keys": [{"sah256": "00", "consumer": "a"}]}}"#).unwrap_err();
        assert_eq!(err.path, "api_keys.keys[0].sah256");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let err = parse(br#"{"https": {"required": "yes"}}"#).unwrap_err();
        assert_eq!(err.path, "https.required");
    }

    #[test]
    fn unknown_credentials_value_is_refused() {
        let err = parse(br#"{"credentials": "password"}"#).unwrap_err();
        assert_eq!(err.path, "credentials");
        assert!(err.message.contains("unknown variant"), "{err}");
    }

    #[test]
    fn rejected_values_never_reach_the_message() {
        for json in [
            r#"{"credentials": "s3cretMark"}"#,
            r#"{"https": {"required": "s3cretMark"}}"#,
            r#"{"https": {"hsts_max_age_seconds": "s3cretMark"}}"#,
            r#"{"https": {"hsts_max_age_seconds": -12345}}"#,
            r#"{"realm": ["s3cretMark"]}"#,
        ] {
            let err = parse(json.as_bytes()).unwrap_err();
            let shown = err.to_string();
            assert!(
                !shown.contains("s3cretMark") && !shown.contains("12345"),
                "{shown}"
            );
            assert!(shown.contains("expected"), "{shown}");
        }
        let err = parse(br#"{"credentials": "s3cretMark"}"#).unwrap_err();
        assert_eq!(err.message, "unknown variant, expected one of `api_key`, `jwt`, `either`, `both` at line 1 column 28");
        let err = parse(br#"{"https": {"required": "x"}}"#).unwrap_err();
        assert!(
            err.message
                .starts_with("invalid type: string, expected a boolean"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_the_top_level() {
        let err = parse(b"{").unwrap_err();
        assert_eq!(err.path, "");
        assert!(err.to_string().starts_with("at the top level: "), "{err}");
    }

    #[test]
    fn invalid_json_and_trailing_garbage_are_refused() {
        assert!(parse(b"{").is_err());
        assert!(parse(b"{} {}").is_err());
        assert!(parse(b"[]").is_err());
    }
}

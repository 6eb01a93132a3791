//! The `jwt` configuration object: serde DTOs (unknown fields rejected) and their compiled,
//! validated form. Every error names the field path.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::alg::{is_none_alg, Alg};
use super::jwks::{
    classify, key_array, parse_jwk, JwkProblem, KeySource, Purpose, VerifyKey, MAX_KEYS_PER_SET,
};
use crate::config_error::ConfigError;
use crate::endpoint::{endpoint, Endpoint};
use crate::identity::{CONSUMER_HEADER, SUBJECT_HEADER, WOULD_DENY_HEADER};
use crate::request::is_header_name;

fn default_header() -> String {
    "authorization".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_cache_max_entries() -> usize {
    4096
}
fn default_clock_skew() -> u64 {
    60
}
fn default_max_lifetime() -> u64 {
    3600
}
fn default_jwks_path() -> String {
    "/.well-known/jwks.json".to_owned()
}
fn default_refresh_interval() -> u64 {
    300
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_unknown_kid_wait_ms() -> u64 {
    2000
}
fn default_min_refetch() -> u64 {
    30
}
fn default_refresh_claims() -> Vec<RefreshClaimConfig> {
    vec![
        RefreshClaimConfig {
            claim: "token_use".to_owned(),
            values: vec!["refresh".to_owned()],
        },
        RefreshClaimConfig {
            claim: "typ".to_owned(),
            values: vec!["refresh".to_owned(), "refresh_token".to_owned()],
        },
    ]
}
fn default_refresh_header_types() -> Vec<String> {
    vec!["refresh+jwt".to_owned(), "refresh".to_owned()]
}

/// The `jwt` object.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default = "default_header")]
    pub header: String,
    pub providers: Vec<ProviderConfig>,
    #[serde(default = "default_true")]
    pub strip_token: bool,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    #[serde(default = "default_cache_max_entries")]
    pub cache_max_entries: usize,
}

/// One entry of `jwt.providers`.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// A JWKS object, or a string holding the JWKS JSON text.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::inline_jwks")
    )]
    pub jwks: Option<Value>,
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwksConfig>,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    #[serde(default = "default_true")]
    pub require_expiration: bool,
    #[serde(default = "default_refresh_claims")]
    pub refresh_token_claims: Vec<RefreshClaimConfig>,
    #[serde(default = "default_refresh_header_types")]
    pub refresh_token_header_types: Vec<String>,
    /// claim name → upstream header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Who checks the token's signature: apiguard with the provider's keys (the default), or
    /// Envoy's jwt_authn filter earlier in the chain.
    #[serde(default)]
    pub verified_by: VerifiedBy,
    /// With `verified_by: envoy_jwt_authn`: the jwt_authn provider's `payload_in_metadata` name
    /// (default: the issuer, as Istio's RequestAuthentication names it).
    #[serde(default)]
    pub payload_in_metadata: Option<String>,
}

/// `verified_by`: who checks a provider's token signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum VerifiedBy {
    /// apiguard, with the provider's `jwks` / `remote_jwks`.
    #[default]
    Apiguard,
    /// Envoy's `envoy.filters.http.jwt_authn` filter, earlier in the filter chain: apiguard takes
    /// the payload it placed in dynamic metadata, and refuses the request without it.
    EnvoyJwtAuthn,
}

/// `remote_jwks`: where the host fetches the provider's JWKS.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    pub cluster: String,
    #[serde(default = "default_jwks_path")]
    pub path: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_seconds: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_min_refetch")]
    pub min_refetch_interval_seconds: u64,
    /// How long a request whose token names an unknown `kid` may wait for the refetch.
    #[serde(default = "default_unknown_kid_wait_ms")]
    pub unknown_kid_wait_ms: u64,
}

/// One `refresh_token_claims` rule: the token is a refresh token when `claim` is (or, for an
/// array, contains) one of `values`, compared case-insensitively.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RefreshClaimConfig {
    pub claim: String,
    pub values: Vec<String>,
}

// Inline JWKS may hold HMAC secrets: never print them.
impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("jwks", &self.jwks.as_ref().map(|_| "<redacted>"))
            .field("remote_jwks", &self.remote_jwks)
            .field("algorithms", &self.algorithms)
            .field("clock_skew_seconds", &self.clock_skew_seconds)
            .field("max_lifetime_seconds", &self.max_lifetime_seconds)
            .field("require_expiration", &self.require_expiration)
            .field("refresh_token_claims", &self.refresh_token_claims)
            .field(
                "refresh_token_header_types",
                &self.refresh_token_header_types,
            )
            .field("forward_claims", &self.forward_claims)
            .field("verified_by", &self.verified_by)
            .field("payload_in_metadata", &self.payload_in_metadata)
            .finish()
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("header", &self.header)
            .field("providers", &self.providers)
            .field("strip_token", &self.strip_token)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("cache_max_entries", &self.cache_max_entries)
            .finish()
    }
}

/// Compiled remote JWKS settings.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_interval: i64,
    pub timeout_ms: u64,
    pub min_refetch_interval: i64,
    /// 0: refuse at once, as before the refetch.
    pub unknown_kid_wait_ms: u64,
}

/// How a provider's signatures are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// By apiguard, with the provider's inline and remote keys.
    Keys,
    /// By Envoy's jwt_authn filter: the verified payload is read from the request's dynamic
    /// metadata (`filter_metadata["envoy.filters.http.jwt_authn"][metadata_key]`).
    EnvoyJwtAuthn { metadata_key: String },
}

impl Provider {
    /// Whether Envoy's jwt_authn filter checks this provider's signatures.
    pub fn by_jwt_authn(&self) -> bool {
        matches!(self.verification, Verification::EnvoyJwtAuthn { .. })
    }
}

/// Compiled settings of one provider.
#[derive(Debug)]
pub struct Provider {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Explicit allow-list; `None` means "whatever the provider's keys support".
    pub algorithms: Option<Vec<Alg>>,
    pub inline_keys: Vec<VerifyKey>,
    pub remote: Option<RemoteJwks>,
    pub clock_skew: i64,
    pub max_lifetime: u64,
    pub require_expiration: bool,
    /// (claim, lower-cased values)
    pub refresh_claims: Vec<(String, Vec<String>)>,
    /// lower-cased header `typ` values, without any `application/` prefix.
    pub refresh_header_types: Vec<String>,
    /// (claim, header)
    pub forward_claims: Vec<(String, String)>,
    pub verification: Verification,
}

/// Compiled, validated, immutable JWT settings shared by all requests of a VM.
#[derive(Debug)]
pub struct JwtSettings {
    pub(crate) header: String,
    pub(crate) providers: Vec<Provider>,
    pub(crate) strip_token: bool,
    pub(crate) max_token_bytes: usize,
    pub(crate) cache_max_entries: usize,
    /// Every header `forward_claims` may set, sorted and distinct (computed once: the host
    /// strips clients' copies on every request).
    forwarded_headers: Vec<String>,
    /// How many providers are verified by Envoy's jwt_authn (computed once: asked per request).
    by_jwt_authn: usize,
}

/// Header names that apiguard itself sets upstream.
const RESERVED_HEADERS: [&str; 3] = [SUBJECT_HEADER, CONSUMER_HEADER, WOULD_DENY_HEADER];

/// A lower-cased header name of reasonable length.
fn valid_header_name(name: &str) -> bool {
    name.len() <= 128 && is_header_name(name)
}

fn printable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn nonempty_printable(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && printable(text)
}

#[cfg(test)]
impl Provider {
    /// A provider with the documented defaults and nothing configured beyond its issuer.
    pub(crate) fn for_tests(issuer: &str) -> Self {
        Provider {
            issuer: issuer.to_owned(),
            audiences: Vec::new(),
            algorithms: None,
            inline_keys: Vec::new(),
            remote: None,
            clock_skew: 60,
            max_lifetime: 3600,
            require_expiration: true,
            refresh_claims: Vec::new(),
            refresh_header_types: Vec::new(),
            forward_claims: Vec::new(),
            verification: Verification::Keys,
        }
    }
}

impl JwtSettings {
    /// Validates the DTO. `path` is where the `jwt` object sits (normally `"jwt"`).
    pub fn compile(dto: JwtConfig, path: &str) -> Result<JwtSettings, ConfigError> {
        let header = dto.header.to_ascii_lowercase();
        if !valid_header_name(&header) {
            return Err(ConfigError::new(
                format!("{path}.header"),
                "must be an HTTP header name",
            ));
        }
        if !(256..=65_536).contains(&dto.max_token_bytes) {
            return Err(ConfigError::new(
                format!("{path}.max_token_bytes"),
                "must be between 256 and 65536",
            ));
        }
        if dto.cache_max_entries > 1_000_000 {
            return Err(ConfigError::new(
                format!("{path}.cache_max_entries"),
                "must be at most 1000000 (0 disables the cache)",
            ));
        }
        if dto.providers.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.providers"),
                "at least one provider is required",
            ));
        }
        let mut providers: Vec<Provider> = Vec::with_capacity(dto.providers.len());
        for (index, provider) in dto.providers.into_iter().enumerate() {
            let at = format!("{path}.providers[{index}]");
            let compiled = compile_provider(provider, &at)?;
            if providers.iter().any(|p| p.issuer == compiled.issuer) {
                return Err(ConfigError::new(
                    format!("{at}.issuer"),
                    "another provider has the same issuer",
                ));
            }
            providers.push(compiled);
        }
        let mut forwarded_headers: Vec<String> = providers
            .iter()
            .flat_map(|p| p.forward_claims.iter().map(|(_, h)| h.clone()))
            .collect();
        forwarded_headers.sort_unstable();
        forwarded_headers.dedup();
        let by_jwt_authn = providers.iter().filter(|p| p.by_jwt_authn()).count();
        Ok(JwtSettings {
            by_jwt_authn,
            header,
            providers,
            forwarded_headers,
            strip_token: dto.strip_token,
            max_token_bytes: dto.max_token_bytes,
            cache_max_entries: dto.cache_max_entries,
        })
    }

    /// Whether a request presenting `token` needs the jwt_authn filter's metadata: a provider
    /// its issuer may name is verified by jwt_authn. Requests for other providers never pay the
    /// host call; with only jwt_authn providers, no token is parsed to tell.
    pub fn wants_jwt_authn_metadata(&self, token: &str) -> bool {
        if self.by_jwt_authn == 0 {
            return false;
        }
        if self.by_jwt_authn == self.providers.len() {
            return true;
        }
        super::token::ParsedToken::parse(token)
            .ok()
            .and_then(|parsed| parsed.unverified_claims().ok())
            .and_then(|claims| {
                let iss = claims.issuer_hint()?;
                Some(
                    self.providers
                        .iter()
                        .any(|p| p.issuer == iss && p.by_jwt_authn()),
                )
            })
            .unwrap_or(false)
    }

    /// Whether some provider is verified by Envoy's jwt_authn filter.
    pub fn uses_jwt_authn(&self) -> bool {
        self.by_jwt_authn > 0
    }

    /// The (lower-case) request header that carries the bearer token.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Whether the token header is removed before the request goes upstream.
    pub fn strip_token(&self) -> bool {
        self.strip_token
    }

    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    pub fn cache_max_entries(&self) -> usize {
        self.cache_max_entries
    }

    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// Every header name that `forward_claims` may set. The host must remove these from the
    /// client's request (like `x-apiguard-*`), or a client could send them itself.
    pub fn forwarded_header_names(&self) -> &[String] {
        &self.forwarded_headers
    }
}

fn compile_provider(dto: ProviderConfig, at: &str) -> Result<Provider, ConfigError> {
    let err = |field: &str, message: &str| ConfigError::new(format!("{at}.{field}"), message);
    if !nonempty_printable(&dto.issuer, 1024) {
        return Err(err(
            "issuer",
            "must be 1 to 1024 printable ASCII characters",
        ));
    }
    for (i, aud) in dto.audiences.iter().enumerate() {
        if aud.is_empty() {
            return Err(err(&format!("audiences[{i}]"), "must not be empty"));
        }
    }
    if dto.clock_skew_seconds > 600 {
        return Err(err("clock_skew_seconds", "must be at most 600"));
    }
    if !(1..=31_536_000).contains(&dto.max_lifetime_seconds) {
        return Err(err(
            "max_lifetime_seconds",
            "must be between 1 and 31536000",
        ));
    }

    let verification = compile_verification(&dto, at)?;
    let by_keys = verification == Verification::Keys;
    let algorithms = match dto.algorithms {
        None => None,
        Some(names) => {
            if names.is_empty() {
                return Err(err(
                    "algorithms",
                    "must list at least one algorithm (omit it to allow what the keys support)",
                ));
            }
            let mut algs = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let alg = if is_none_alg(name) {
                    return Err(err(
                        &format!("algorithms[{i}]"),
                        "none is never allowed: tokens must be signed",
                    ));
                } else {
                    Alg::from_name(name).ok_or_else(|| {
                        err(
                            &format!("algorithms[{i}]"),
                            &format!("unknown algorithm: use one of {}", Alg::NAMES),
                        )
                    })?
                };
                if !algs.contains(&alg) {
                    algs.push(alg);
                }
            }
            Some(algs)
        }
    };

    let remote = match dto.remote_jwks {
        None => None,
        Some(r) => Some(compile_remote(r, &format!("{at}.remote_jwks"))?),
    };
    let inline_keys = match &dto.jwks {
        None => Vec::new(),
        Some(jwks) => {
            let keys = compile_inline_jwks(jwks, algorithms.as_deref(), &format!("{at}.jwks"))?;
            if keys.is_empty() && remote.is_none() {
                return Err(err(
                    "jwks.keys",
                    "no key in this set can verify the provider's algorithms (keys of other \
                     types, curves or uses are skipped): add one, or set remote_jwks",
                ));
            }
            keys
        }
    };
    if by_keys && inline_keys.is_empty() && remote.is_none() {
        return Err(err(
            "jwks",
            "a provider needs keys: set jwks (with at least one key) or remote_jwks",
        ));
    }

    let mut refresh_claims = Vec::with_capacity(dto.refresh_token_claims.len());
    for (i, rule) in dto.refresh_token_claims.into_iter().enumerate() {
        if rule.claim.is_empty()
            || rule.values.is_empty()
            || rule.values.iter().any(String::is_empty)
        {
            return Err(err(
                &format!("refresh_token_claims[{i}]"),
                "needs a claim name and at least one non-empty value",
            ));
        }
        refresh_claims.push((
            rule.claim,
            rule.values.iter().map(|v| v.to_lowercase()).collect(),
        ));
    }
    let refresh_header_types = dto
        .refresh_token_header_types
        .iter()
        .map(|t| normalize_typ(t))
        .collect();

    let mut forward_claims: Vec<(String, String)> = Vec::with_capacity(dto.forward_claims.len());
    for (claim, header) in dto.forward_claims {
        let field = format!("forward_claims.{claim}");
        if !nonempty_printable(&claim, 128) {
            return Err(err(
                "forward_claims",
                "claim names must be 1 to 128 printable ASCII characters",
            ));
        }
        let header = header.to_ascii_lowercase();
        if !header.starts_with("x-") || !valid_header_name(&header) {
            return Err(err(&field, "must be a header name starting with x-"));
        }
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(err(&field, "is set by apiguard itself"));
        }
        if forward_claims.iter().any(|(_, h)| *h == header) {
            return Err(err(
                &field,
                "another claim is already forwarded in this header",
            ));
        }
        forward_claims.push((claim, header));
    }

    Ok(Provider {
        issuer: dto.issuer,
        audiences: dto.audiences,
        algorithms,
        inline_keys,
        remote,
        clock_skew: i64::try_from(dto.clock_skew_seconds).unwrap_or(600),
        max_lifetime: dto.max_lifetime_seconds,
        require_expiration: dto.require_expiration,
        refresh_claims,
        refresh_header_types,
        forward_claims,
        verification,
    })
}

/// Longest `payload_in_metadata` name (an issuer URL, typically).
const MAX_METADATA_KEY_BYTES: usize = 1024;

/// `verified_by` and what goes with it. A provider verified by jwt_authn has no keys or
/// algorithms of its own here: they would never be used, and a reader could think they are.
fn compile_verification(dto: &ProviderConfig, at: &str) -> Result<Verification, ConfigError> {
    let err = |field: &str, message: &str| ConfigError::new(format!("{at}.{field}"), message);
    match dto.verified_by {
        VerifiedBy::Apiguard => match dto.payload_in_metadata {
            Some(_) => Err(err(
                "payload_in_metadata",
                "only applies with verified_by: envoy_jwt_authn",
            )),
            None => Ok(Verification::Keys),
        },
        VerifiedBy::EnvoyJwtAuthn => {
            let forbidden = [
                ("jwks", dto.jwks.is_some()),
                ("remote_jwks", dto.remote_jwks.is_some()),
                ("algorithms", dto.algorithms.is_some()),
            ];
            if let Some((field, _)) = forbidden.iter().find(|(_, set)| *set) {
                return Err(err(
                    field,
                    "must not be set with verified_by: envoy_jwt_authn (the jwt_authn filter \
                     checks signatures with its own keys and algorithms)",
                ));
            }
            let metadata_key = dto
                .payload_in_metadata
                .clone()
                .unwrap_or_else(|| dto.issuer.clone());
            if !nonempty_printable(&metadata_key, MAX_METADATA_KEY_BYTES) {
                return Err(err(
                    "payload_in_metadata",
                    "must be 1 to 1024 printable ASCII characters",
                ));
            }
            Ok(Verification::EnvoyJwtAuthn { metadata_key })
        }
    }
}

/// Lower-cases a `typ` and drops the optional `application/` prefix (RFC 7515 §4.1.9).
pub fn normalize_typ(typ: &str) -> String {
    let lower = typ.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// Compiles an inline JWKS. Keys that are not for the provider's signatures are skipped (see
/// [`classify`]: other `use`, `kty`, curve or `alg`; with an `algorithms` allow-list, keys for none
/// of its algorithms too); every other key must parse, or the error names its member.
fn compile_inline_jwks(
    jwks: &Value,
    algorithms: Option<&[Alg]>,
    at: &str,
) -> Result<Vec<VerifyKey>, ConfigError> {
    let parsed;
    let doc = match jwks {
        Value::String(text) => {
            // serde_json's message could quote the text (and so a secret): report the position only.
            parsed = serde_json::from_str::<Value>(text).map_err(|e| {
                ConfigError::new(
                    at,
                    format!(
                        "the JWKS text is not valid JSON (line {} column {})",
                        e.line(),
                        e.column()
                    ),
                )
            })?;
            &parsed
        }
        other => other,
    };
    let keys = key_array(doc).ok_or_else(|| {
        ConfigError::new(
            at,
            "must be a JWKS: an object with a keys array (or its JSON text)",
        )
    })?;
    if keys.is_empty() {
        return Err(ConfigError::new(
            format!("{at}.keys"),
            "must hold at least one key",
        ));
    }
    if keys.len() > MAX_KEYS_PER_SET {
        return Err(ConfigError::new(
            format!("{at}.keys"),
            format!("at most {MAX_KEYS_PER_SET} keys are supported"),
        ));
    }
    let mut out: Vec<VerifyKey> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let key_at = format!("{at}.keys[{i}]");
        let object = key
            .as_object()
            .ok_or_else(|| ConfigError::new(&key_at, "must be a JWK object"))?;
        let at_member = |p: JwkProblem| {
            let path = if p.field.is_empty() {
                key_at.clone()
            } else {
                format!("{key_at}.{}", p.field)
            };
            ConfigError::new(path, p.message)
        };
        let purpose = classify(object).map_err(at_member)?;
        let wanted = match (purpose, algorithms) {
            (Purpose::Other, _) => false,
            (_, Some(algs)) => purpose.serves(algs),
            (_, None) => true,
        };
        if !wanted {
            continue;
        }
        let key = parse_jwk(object, KeySource::Inline).map_err(at_member)?;
        if let Some(algs) = algorithms {
            // Of the right family, but e.g. an HMAC secret too short for the allowed HS512.
            if !key.algorithms().any(|a| algs.contains(&a)) {
                return Err(ConfigError::new(
                    &key_at,
                    "this key cannot verify any of the provider's algorithms",
                ));
            }
        }
        if key.kid.is_some() && out.iter().any(|k| k.kid == key.kid) {
            return Err(ConfigError::new(
                format!("{key_at}.kid"),
                "another key has the same kid",
            ));
        }
        out.push(key);
    }
    Ok(out)
}

fn compile_remote(dto: RemoteJwksConfig, at: &str) -> Result<RemoteJwks, ConfigError> {
    let err = |field: &str, message: &str| ConfigError::new(format!("{at}.{field}"), message);
    let Endpoint {
        cluster,
        path,
        authority,
    } = endpoint(at, dto.cluster, dto.path, dto.authority)?;
    if !(10..=86_400).contains(&dto.refresh_interval_seconds) {
        return Err(err(
            "refresh_interval_seconds",
            "must be between 10 and 86400",
        ));
    }
    if !(100..=60_000).contains(&dto.timeout_ms) {
        return Err(err("timeout_ms", "must be between 100 and 60000"));
    }
    if !(1..=3600).contains(&dto.min_refetch_interval_seconds) {
        return Err(err(
            "min_refetch_interval_seconds",
            "must be between 1 and 3600",
        ));
    }
    if dto.unknown_kid_wait_ms > 10_000 {
        return Err(err(
            "unknown_kid_wait_ms",
            "must be between 0 and 10000 (a request holds its connection while it waits)",
        ));
    }
    Ok(RemoteJwks {
        cluster,
        path,
        authority,
        refresh_interval: i64::try_from(dto.refresh_interval_seconds).unwrap_or(86_400),
        timeout_ms: dto.timeout_ms,
        min_refetch_interval: i64::try_from(dto.min_refetch_interval_seconds).unwrap_or(3600),
        unknown_kid_wait_ms: dto.unknown_kid_wait_ms,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::jwt::test_keys::{self, b64url};
    use serde_json::json;

    fn compile(v: Value) -> Result<JwtSettings, ConfigError> {
        let dto: JwtConfig =
            serde_json::from_value(v).map_err(|e| ConfigError::new("jwt", e.to_string()))?;
        JwtSettings::compile(dto, "jwt")
    }

    fn err_path(v: Value) -> String {
        compile(v).err().map(|e| e.path).unwrap_or_default()
    }

    fn provider(extra: Value) -> Value {
        let mut p = json!({"issuer": "https://issuer.example", "jwks": {"keys": [test_keys::ec_public_jwk()]}});
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                p.insert(k.clone(), v.clone());
            }
        }
        json!({"providers": [p]})
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = compile(provider(json!({}))).unwrap();
        assert_eq!(s.header(), "authorization");
        assert!(s.strip_token());
        assert_eq!(s.max_token_bytes(), 8192);
        assert_eq!(s.cache_max_entries(), 4096);
        let p = &s.providers[0];
        assert_eq!(
            (p.clock_skew, p.max_lifetime, p.require_expiration),
            (60, 3600, true)
        );
        assert!(p.algorithms.is_none());
        assert_eq!(p.refresh_header_types, vec!["refresh+jwt", "refresh"]);
        assert_eq!(p.refresh_claims.len(), 2);
    }

    #[test]
    fn fixed_field_names_parse() {
        let s = compile(json!({"header": "X-Token", "providers": [{
            "issuer": "a", "audiences": ["api"], "jwks": test_keys::ec_public_jwk_set_text(),
            "clock_skew_seconds": 5, "max_lifetime_seconds": 600, "require_expiration": false,
            "algorithms": ["ES256"], "forward_claims": {"tenant": "X-Tenant"},
            "remote_jwks": {"cluster": "idp", "path": "/keys", "refresh_interval_seconds": 60,
                            "timeout_ms": 500, "min_refetch_interval_seconds": 10}
        }], "strip_token": false, "max_token_bytes": 4096, "cache_max_entries": 0}))
        .unwrap();
        assert_eq!(s.header(), "x-token");
        assert_eq!(s.forwarded_header_names(), ["x-tenant"]);
        let r = s.providers[0].remote.as_ref().unwrap();
        assert_eq!(
            (r.authority.as_str(), r.path.as_str(), r.refresh_interval),
            ("idp", "/keys", 60)
        );
        assert_eq!(s.providers[0].inline_keys.len(), 1);
    }

    #[test]
    fn unknown_fields_are_rejected_everywhere() {
        assert!(compile(json!({"providers": [], "extra": 1})).is_err());
        assert!(compile(provider(json!({"issuer_url": "x"}))).is_err());
        assert!(compile(provider(
            json!({"remote_jwks": {"cluster": "c", "url": "x"}})
        ))
        .is_err());
        assert!(compile(provider(
            json!({"refresh_token_claims": [{"claim": "a", "values": ["b"], "x": 1}]})
        ))
        .is_err());
    }

    #[test]
    fn invalid_values_name_their_path() {
        let cases = [
            (
                provider(json!({"algorithms": ["none"]})),
                "jwt.providers[0].algorithms[0]",
            ),
            (
                provider(json!({"algorithms": ["RS256", "HS1"]})),
                "jwt.providers[0].algorithms[1]",
            ),
            (
                provider(json!({"algorithms": []})),
                "jwt.providers[0].algorithms",
            ),
            (
                provider(json!({"algorithms": ["RS256"]})),
                "jwt.providers[0].jwks.keys",
            ),
            (
                provider(json!({"algorithms": ["ES384", "ES512"]})),
                "jwt.providers[0].jwks.keys",
            ),
            (
                provider(
                    json!({"algorithms": ["HS512"], "jwks": {"keys": [{"kty": "oct", "k": b64url(&[1; 32])}]}}),
                ),
                "jwt.providers[0].jwks.keys[0]",
            ),
            (provider(json!({"issuer": ""})), "jwt.providers[0].issuer"),
            (
                provider(json!({"audiences": ["a", ""]})),
                "jwt.providers[0].audiences[1]",
            ),
            (
                provider(json!({"clock_skew_seconds": 601})),
                "jwt.providers[0].clock_skew_seconds",
            ),
            (
                provider(json!({"max_lifetime_seconds": 0})),
                "jwt.providers[0].max_lifetime_seconds",
            ),
            (
                provider(json!({"jwks": {"keys": []}})),
                "jwt.providers[0].jwks.keys",
            ),
            (
                provider(json!({"jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}})),
                "jwt.providers[0].jwks.keys[0].n",
            ),
            (
                provider(
                    json!({"jwks": {"keys": [test_keys::hmac_jwk(), {"kty": "oct", "k": "!"}]}}),
                ),
                "jwt.providers[0].jwks.keys[1].k",
            ),
            (
                provider(json!({"jwks": "{\"keys\": ["})),
                "jwt.providers[0].jwks",
            ),
            (provider(json!({"jwks": [1]})), "jwt.providers[0].jwks"),
            (provider(json!({"jwks": null})), "jwt.providers[0].jwks"),
            (
                provider(json!({"forward_claims": {"tenant": "tenant"}})),
                "jwt.providers[0].forward_claims.tenant",
            ),
            (
                provider(json!({"forward_claims": {"sub": "x-apiguard-subject"}})),
                "jwt.providers[0].forward_claims.sub",
            ),
            (
                provider(json!({"forward_claims": {"a": "x-a", "b": "X-A"}})),
                "jwt.providers[0].forward_claims.b",
            ),
            (
                provider(json!({"forward_claims": {"a": "x-a b"}})),
                "jwt.providers[0].forward_claims.a",
            ),
            (
                provider(json!({"refresh_token_claims": [{"claim": "x", "values": []}]})),
                "jwt.providers[0].refresh_token_claims[0]",
            ),
            (
                provider(json!({"remote_jwks": {"cluster": ""}})),
                "jwt.providers[0].remote_jwks.cluster",
            ),
            (
                provider(json!({"remote_jwks": {"cluster": "c", "path": "keys"}})),
                "jwt.providers[0].remote_jwks.path",
            ),
            (
                provider(json!({"remote_jwks": {"cluster": "c", "timeout_ms": 0}})),
                "jwt.providers[0].remote_jwks.timeout_ms",
            ),
            (
                provider(json!({"remote_jwks": {"cluster": "c", "refresh_interval_seconds": 1}})),
                "jwt.providers[0].remote_jwks.refresh_interval_seconds",
            ),
            (
                provider(
                    json!({"remote_jwks": {"cluster": "c", "min_refetch_interval_seconds": 0}}),
                ),
                "jwt.providers[0].remote_jwks.min_refetch_interval_seconds",
            ),
            (
                provider(json!({"remote_jwks": {"cluster": "c", "unknown_kid_wait_ms": 10_001}})),
                "jwt.providers[0].remote_jwks.unknown_kid_wait_ms",
            ),
            (json!({"providers": []}), "jwt.providers"),
            (
                json!({"header": "bad header", "providers": []}),
                "jwt.header",
            ),
            (
                json!({"max_token_bytes": 10, "providers": []}),
                "jwt.max_token_bytes",
            ),
        ];
        for (config, path) in cases {
            assert_eq!(err_path(config.clone()), path, "{config}");
        }
    }

    fn keys(v: Value) -> Value {
        json!({"providers": [{"issuer": "a", "jwks": {"keys": v}}]})
    }

    #[test]
    fn mixed_inline_jwks_skips_keys_of_other_types_curves_and_uses() {
        let mut p384 = test_keys::ec384_public_jwk();
        p384["kid"] = json!("p384");
        let mut p521 = test_keys::ec521_public_jwk();
        p521["kid"] = json!("p521");
        let skipped = [
            json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "p384"}),
            json!({"kty": "OKP", "crv": "X25519", "x": b64url(&[9; 32])}),
            json!({"kty": "OKP", "crv": "Ed448", "x": "AA"}),
            json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "d": "AA"}),
            json!({"kty": "AKP", "pub": "AA"}),
            json!({"kty": "EC", "crv": "P-256", "key_ops": ["deriveKey"], "x": "AA", "y": "AA"}),
            json!({"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"}),
        ];
        let mut all = vec![p384.clone()];
        all.extend(skipped.iter().cloned());
        all.push(p521.clone());
        let s = compile(keys(json!(all))).unwrap();
        let kept: Vec<_> = s.providers[0]
            .inline_keys
            .iter()
            .map(|k| k.kid.as_deref())
            .collect();
        assert_eq!(kept, vec![Some("p384"), Some("p521")]);

        // With an allow-list, usable keys for none of its algorithms are skipped too.
        let s = compile(json!({"providers": [{"issuer": "a", "algorithms": ["ES512"],
            "jwks": {"keys": [p384.clone(), test_keys::rsa_public_jwk(), {"kty": "RSA", "n": "AQAB"}, p521.clone()]}}]}))
        .unwrap();
        assert_eq!(s.providers[0].inline_keys.len(), 1);
        assert_eq!(s.providers[0].inline_keys[0].kid.as_deref(), Some("p521"));

        // Only skipped keys: an error without remote_jwks, fine with it.
        assert_eq!(err_path(keys(json!(skipped))), "jwt.providers[0].jwks.keys");
        let s = compile(
            json!({"providers": [{"issuer": "a", "jwks": {"keys": skipped},
            "remote_jwks": {"cluster": "idp"}}]}),
        )
        .unwrap();
        assert!(s.providers[0].inline_keys.is_empty());
    }

    #[test]
    fn mixed_inline_jwks_still_refuses_malformed_signature_keys() {
        let good = test_keys::ec_public_jwk();
        let mut p384_private = test_keys::ec384_public_jwk();
        p384_private["d"] = json!("AA");
        let mut p521_pinned_wrong = test_keys::ec521_public_jwk();
        p521_pinned_wrong["alg"] = json!("ES384");
        let mut p384_short = test_keys::ec384_public_jwk();
        p384_short["x"] = json!("AAAA");
        let mut p384_sig = test_keys::ec384_public_jwk();
        p384_sig["use"] = json!("sig");
        p384_sig["y"] = json!(test_keys::ec521_public_jwk()["y"]);
        let skip = json!({"kty": "OKP", "crv": "X25519", "x": "AA"});
        let cases = [
            (p384_short, "x"),
            (p384_sig, "x"),
            (p384_private, "d"),
            (p521_pinned_wrong, "alg"),
            (json!({"kty": "EC", "crv": "P-521", "x": "AA"}), "y"),
            (json!({"kty": "EC", "x": "AA", "y": "AA"}), "crv"),
            (json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}), "n"),
            (json!({"kty": "oct", "k": "AA"}), "k"),
            (json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}), "x"),
            (json!({"use": "sig"}), "kty"),
            (json!({"kty": "RSA", "use": 3}), "use"),
        ];
        for (bad, member) in cases {
            let set = json!([good.clone(), skip.clone(), bad.clone()]);
            assert_eq!(
                err_path(keys(set)),
                format!("jwt.providers[0].jwks.keys[2].{member}"),
                "{bad}"
            );
        }
        assert_eq!(
            err_path(keys(json!([good, 7]))),
            "jwt.providers[0].jwks.keys[1]"
        );
    }

    #[test]
    fn algorithms_accept_es384_and_es512_and_list_them_when_unknown() {
        let s = compile(
            json!({"providers": [{"issuer": "a", "algorithms": ["ES384", "ES512"],
            "jwks": {"keys": [test_keys::ec384_public_jwk(), test_keys::ec521_public_jwk()]}}]}),
        )
        .unwrap();
        assert_eq!(
            s.providers[0].algorithms,
            Some(vec![Alg::Es384, Alg::Es512])
        );
        let err = compile(provider(json!({"algorithms": ["ES256K"]}))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ES384") && text.contains("ES512") && !text.contains("ES256K"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_issuers_and_kids_are_refused() {
        let p = json!({"issuer": "a", "jwks": {"keys": [test_keys::ec_public_jwk()]}});
        assert_eq!(
            err_path(json!({"providers": [p.clone(), p]})),
            "jwt.providers[1].issuer"
        );
        let mut k = test_keys::ec_public_jwk();
        k["kid"] = json!("one");
        assert_eq!(
            err_path(provider(json!({"jwks": {"keys": [k.clone(), k]}}))),
            "jwt.providers[0].jwks.keys[1].kid"
        );
    }

    #[test]
    fn verified_by_jwt_authn_refuses_keys_and_names_its_metadata_key() {
        let mesh = |extra: Value| {
            let mut p = json!({"issuer": "https://idp", "verified_by": "envoy_jwt_authn"});
            for (k, v) in extra.as_object().into_iter().flatten() {
                p[k] = v.clone();
            }
            json!({"providers": [p]})
        };
        let s = compile(mesh(json!({}))).unwrap();
        assert_eq!(
            s.providers[0].verification,
            Verification::EnvoyJwtAuthn {
                metadata_key: "https://idp".to_owned()
            }
        );
        let s = compile(mesh(json!({"payload_in_metadata": "jwt_payload"}))).unwrap();
        assert_eq!(
            s.providers[0].verification,
            Verification::EnvoyJwtAuthn {
                metadata_key: "jwt_payload".to_owned()
            }
        );
        let cases = [
            (
                mesh(json!({"jwks": {"keys": [test_keys::ec_public_jwk()]}})),
                "jwt.providers[0].jwks",
            ),
            (
                mesh(json!({"remote_jwks": {"cluster": "idp"}})),
                "jwt.providers[0].remote_jwks",
            ),
            (
                mesh(json!({"algorithms": ["ES256"]})),
                "jwt.providers[0].algorithms",
            ),
            (
                mesh(json!({"payload_in_metadata": ""})),
                "jwt.providers[0].payload_in_metadata",
            ),
            (
                mesh(json!({"payload_in_metadata": "a\nb"})),
                "jwt.providers[0].payload_in_metadata",
            ),
            (
                provider(json!({"payload_in_metadata": "x"})),
                "jwt.providers[0].payload_in_metadata",
            ),
            (provider(json!({"verified_by": "istio"})), "jwt"),
        ];
        for (config, path) in cases {
            assert_eq!(err_path(config.clone()), path, "{config}");
        }
        // The default is apiguard's own verification.
        let s = compile(provider(json!({"verified_by": "apiguard"}))).unwrap();
        assert_eq!(s.providers[0].verification, Verification::Keys);
    }

    #[test]
    fn remote_only_provider_is_valid_and_authority_defaults_to_cluster() {
        let s = compile(json!({"providers": [{"issuer": "a", "remote_jwks": {"cluster": "idp"}}]}))
            .unwrap();
        let r = s.providers[0].remote.as_ref().unwrap();
        assert_eq!(
            (
                r.authority.as_str(),
                r.path.as_str(),
                r.timeout_ms,
                r.min_refetch_interval,
                r.unknown_kid_wait_ms
            ),
            ("idp", "/.well-known/jwks.json", 2000, 30, 2000)
        );
        assert!(s.providers[0].inline_keys.is_empty());
    }

    #[test]
    fn config_errors_and_debug_never_contain_secrets() {
        let bad = json!({"providers": [{"issuer": "a", "jwks": format!("{{\"keys\":[{{\"kty\":\"oct\",\"k\":\"{}+\"}}]}}", test_keys::HMAC_K)}]});
        let e = compile(bad).err().unwrap();
        assert!(!e.message.contains("AyM1"), "{e}");
        let broken = json!({"providers": [{"issuer": "a", "jwks": format!("{{\"keys\":[{{\"k\":\"{}\" ", test_keys::HMAC_K)}]});
        assert!(!compile(broken).err().unwrap().message.contains("AyM1"));

        let dto: JwtConfig = serde_json::from_value(
            json!({"providers": [{"issuer": "a", "jwks": {"keys": [test_keys::hmac_jwk()]}}]}),
        )
        .unwrap();
        assert!(!format!("{dto:?}").contains("AyM1"));
        let settings = JwtSettings::compile(dto, "jwt").unwrap();
        assert!(!format!("{settings:?}").contains("AyM1"));
    }
}

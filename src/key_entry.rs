//! The rules of one API key entry, the same wherever the entry comes from: `api_keys.keys[]` in
//! configuration, or `api_keys[]` in the live policy document.

use crate::config_error::ConfigError;
use crate::policy::is_consumer_id;
use crate::ratelimit::{is_plan_name, RateLimits};
use crate::secret::parse_hex32;
use crate::time::parse_rfc3339;

/// Which plan names an entry may use.
#[derive(Debug, Clone, Copy)]
pub enum KnownPlans<'a> {
    /// Those `rate_limits.plans` defines (none without `rate_limits`).
    Configured(Option<&'a RateLimits>),
    /// Any well-formed name: the document is edited without the configuration at hand (the
    /// plugin checks the names when it loads the document).
    Unchecked,
}

/// An entry's fields as written.
#[derive(Debug, Clone, Copy)]
pub struct KeyEntryFields<'a> {
    pub sha256: &'a str,
    pub consumer: &'a str,
    pub expires_at: Option<&'a str>,
    pub revoked: bool,
    pub plan: Option<&'a str>,
}

/// An entry that passed every rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedKeyEntry<'a> {
    pub digest: [u8; 32],
    pub consumer: &'a str,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    /// A plan that `rate_limits.plans` defines.
    pub plan: Option<&'a str>,
}

/// Checks one entry; `at` turns a field name into its path for the error.
pub fn check_key_entry<'a>(
    fields: KeyEntryFields<'a>,
    plans: KnownPlans<'_>,
    at: impl Fn(&str) -> String,
) -> Result<CheckedKeyEntry<'a>, ConfigError> {
    let digest = parse_hex32(fields.sha256).ok_or_else(|| {
        ConfigError::new(
            at("sha256"),
            format!(
                "expected 64 hex digits, got {} characters",
                fields.sha256.chars().count()
            ),
        )
    })?;
    if !is_consumer_id(fields.consumer) {
        return Err(ConfigError::new(
            at("consumer"),
            "must be 1-128 characters of A-Z a-z 0-9 . _ - : @",
        ));
    }
    let expires_at = fields
        .expires_at
        .map(|t| parse_rfc3339(t).map_err(|e| ConfigError::new(at("expires_at"), e.to_string())))
        .transpose()?;
    let plan = match (fields.plan, plans) {
        (None, _) => None,
        (Some(name), KnownPlans::Configured(Some(limits))) if limits.plan(name).is_some() => {
            Some(name)
        }
        (Some(name), KnownPlans::Unchecked) if is_plan_name(name) => Some(name),
        (Some(_), _) => {
            return Err(ConfigError::new(
                at("plan"),
                "names a plan that rate_limits.plans does not define",
            ))
        }
    };
    Ok(CheckedKeyEntry {
        digest,
        consumer: fields.consumer,
        expires_at,
        revoked: fields.revoked,
        plan,
    })
}

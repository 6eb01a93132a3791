//! Authorization: who may call which route, and on which objects (OWASP API1, broken object
//! level authorization).
//!
//! - [`config`]: `acl` as written, compiled into an [`AclPolicy`];
//! - [`template`]: path templates and their specificity; [`rules`]: which rule applies;
//! - [`data`]: group membership and ownership, read one entry at a time through [`AclData`];
//! - [`decision`]: the decision for one request; [`guard`]: the enumeration guard;
//! - [`enforce`]: the ACL as a step of the request's checks (refusals, shadow mode).

pub mod config;
pub mod data;
pub mod decision;
pub mod enforce;
pub mod guard;
pub mod rules;
pub mod template;

use serde::Deserialize;

#[cfg(test)]
pub use self::data::MemoryAclData;
pub use self::data::{AclData, AclDataError, Principal};
pub use self::decision::{decide, AclCaller, AclDecision, AclRefusal};
pub use self::guard::{EnumerationGuard, GuardSettings, Recorded};

/// What happens to an authenticated request whose path no rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    #[default]
    Deny,
    Allow,
}

/// Whether refusals are enforced, or only reported (`x-apiguard-would-deny`, a log line, a
/// counter) while the request goes on: how a service rolls authorization out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum AclMode {
    #[default]
    Enforce,
    Shadow,
}

/// How a refusal answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyStatus {
    /// 403 `forbidden` / `not_owner`.
    Forbidden,
    /// 404 `not_found` with a neutral body, whatever the reason.
    NotFound,
}

/// Compiled `acl`.
#[derive(Debug)]
pub struct AclPolicy {
    pub rules: rules::RuleSet,
    pub group_claims: Vec<String>,
    pub unmatched: Unmatched,
    pub mode: AclMode,
    pub deny_status: DenyStatus,
    pub guard: Option<GuardSettings>,
    /// `acl.groups` and `acl.owners` of the configuration as one JSON object (`{"groups": …,
    /// "owners": …}`): published into shared data once per proxy, read one entry at a time like
    /// the live document's; `None` when both are empty.
    pub configured_data: Option<std::rc::Rc<[u8]>>,
    /// Ownership entries in `acl.owners`.
    pub configured_ownership_entries: usize,
    /// Each rule as logs and audit records name it: `acl.rules[i] <path>`.
    pub rule_names: Vec<String>,
}

impl AclPolicy {
    pub fn rule_name(&self, index: usize) -> Option<String> {
        self.rule_names.get(index).cloned()
    }
}

#[cfg(test)]
mod tests;

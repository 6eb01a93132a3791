//! `acl` as the operator writes it, and its compilation into an [`AclPolicy`]; every error names
//! its field path (`acl.rules[1].owner.param`).

use serde::Deserialize;

use super::data::{check_acl_data, GroupsConfig, OwnersConfig};
use super::guard::GuardSettings;
use super::rules::{first_tie, EqualsTo, Grant, Methods, OwnerCheck, Rule, RuleSet};
use super::template::Template;
use super::{AclMode, AclPolicy, DenyStatus, Unmatched};
use crate::config_error::ConfigError;
use crate::policy::is_consumer_id;
use crate::text::push_json_str;

fn default_deny_status() -> u16 {
    403
}

fn all_methods() -> Vec<String> {
    vec!["*".to_owned()]
}

/// `acl`: who may call which route, and on which objects.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Group name → member consumer ids.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// JWT claims whose values are groups of the caller (an array of strings, or a
    /// space-separated string such as `scope`).
    #[serde(default)]
    pub group_claims: Vec<String>,
    #[serde(default)]
    pub rules: Vec<AclRuleConfig>,
    /// Object type → object id → owners (`consumer:<id>` or `group:<name>`).
    #[serde(default)]
    pub owners: OwnersConfig,
    /// What happens to a request whose path no rule matches.
    #[serde(default)]
    pub unmatched: Unmatched,
    #[serde(default)]
    pub mode: AclMode,
    /// 403, or 404 (a refusal then does not confirm that the object exists).
    #[serde(default = "default_deny_status")]
    pub deny_status: u16,
    #[serde(default)]
    pub enumeration_guard: Option<EnumerationGuardConfig>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct AclRuleConfig {
    /// A path template: `/v1/accounts/{account}/orders/{order}`.
    pub path: String,
    /// Methods, compared exactly; `*` for all.
    #[serde(default = "all_methods")]
    pub methods: Vec<String>,
    /// `consumer:<id>`, `group:<name>` or `any` (any authenticated caller).
    pub allow: Vec<String>,
    #[serde(default)]
    pub owner: Option<OwnerConfig>,
}

/// The object check: `{"param", "type"}` (an ownership entry) or `{"param", "equals"}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    /// A `{param}` of the rule's path.
    pub param: String,
    /// An `owners` type: the value must have an entry there naming the caller or its group.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The value must equal the caller's consumer or JWT subject.
    #[serde(default)]
    pub equals: Option<EqualsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum EqualsConfig {
    Consumer,
    Subject,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct EnumerationGuardConfig {
    /// Distinct object ids a consumer may be refused within the window (more blocks it).
    pub max_distinct_denied: u32,
    pub window_seconds: u32,
    pub block_seconds: u32,
}

/// Largest `max_distinct_denied`: the ids are tracked in one shared-data value per slot.
pub const MAX_DISTINCT_DENIED: u32 = 1000;
/// Largest `window_seconds` and `block_seconds` (a day).
const MAX_GUARD_SECONDS: u32 = 86_400;

/// Compiles `acl`. `jwt`: whether JWTs are configured (claims and subjects need them).
pub fn compile(cfg: AclConfig, jwt: bool) -> Result<AclPolicy, ConfigError> {
    let (_, configured_ownership_entries) = check_acl_data(&cfg.groups, &cfg.owners)?;
    let configured_data = if cfg.groups.is_empty() && cfg.owners.is_empty() {
        None
    } else {
        Some(data_json(&cfg.groups, &cfg.owners).into_bytes().into())
    };
    for (i, claim) in cfg.group_claims.iter().enumerate() {
        if claim.is_empty() {
            return Err(ConfigError::new(
                format!("acl.group_claims[{i}]"),
                "must name a claim",
            ));
        }
        if !jwt {
            return Err(ConfigError::new(
                format!("acl.group_claims[{i}]"),
                "needs jwt (groups from claims come from verified tokens)",
            ));
        }
    }
    let rules = cfg
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| compile_rule(i, r, jwt))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some((i, j)) = first_tie(&rules) {
        return Err(ConfigError::new(
            format!("acl.rules[{j}].path"),
            format!(
                "ties with acl.rules[{i}]: some request matches both, equally specific, with a method in common"
            ),
        ));
    }
    let deny_status = match cfg.deny_status {
        403 => DenyStatus::Forbidden,
        404 => DenyStatus::NotFound,
        _ => return Err(ConfigError::new("acl.deny_status", "must be 403 or 404")),
    };
    let guard = cfg.enumeration_guard.map(compile_guard).transpose()?;
    let rule_names = rules
        .iter()
        .enumerate()
        .map(|(i, r)| format!("acl.rules[{i}] {}", r.template.as_str()))
        .collect();
    Ok(AclPolicy {
        rule_names,
        rules: RuleSet::new(rules),
        group_claims: cfg.group_claims,
        unmatched: cfg.unmatched,
        mode: cfg.mode,
        deny_status,
        guard,
        configured_data,
        configured_ownership_entries,
    })
}

/// `{"groups": …, "owners": …}`, written out by hand (a generic serializer for these maps adds
/// about 4 KB to the .wasm).
fn data_json(groups: &GroupsConfig, owners: &OwnersConfig) -> String {
    fn list(out: &mut String, items: &[String]) {
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, item);
        }
        out.push(']');
    }
    let mut out = String::from(r#"{"groups":{"#);
    for (i, (group, members)) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, group);
        out.push(':');
        list(&mut out, members);
    }
    out.push_str(r#"},"owners":{"#);
    for (i, (kind, objects)) in owners.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, kind);
        out.push_str(":{");
        for (j, (id, principals)) in objects.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            push_json_str(&mut out, id);
            out.push(':');
            list(&mut out, principals);
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

fn compile_guard(cfg: EnumerationGuardConfig) -> Result<GuardSettings, ConfigError> {
    let at = |field: &str| format!("acl.enumeration_guard.{field}");
    if !(1..=MAX_DISTINCT_DENIED).contains(&cfg.max_distinct_denied) {
        return Err(ConfigError::new(
            at("max_distinct_denied"),
            format!("must be between 1 and {MAX_DISTINCT_DENIED}"),
        ));
    }
    for (field, value) in [
        ("window_seconds", cfg.window_seconds),
        ("block_seconds", cfg.block_seconds),
    ] {
        if !(1..=MAX_GUARD_SECONDS).contains(&value) {
            return Err(ConfigError::new(
                at(field),
                format!("must be between 1 and {MAX_GUARD_SECONDS}"),
            ));
        }
    }
    Ok(GuardSettings {
        max_distinct_denied: cfg.max_distinct_denied,
        window_ms: i64::from(cfg.window_seconds) * 1000,
        block_ms: i64::from(cfg.block_seconds) * 1000,
    })
}

/// A method as HTTP writes one (an RFC 9110 token).
fn is_method(m: &str) -> bool {
    !m.is_empty()
        && m.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn compile_rule(i: usize, r: AclRuleConfig, jwt: bool) -> Result<Rule, ConfigError> {
    let at = |field: &str| format!("acl.rules[{i}].{field}");
    let template =
        Template::parse(&r.path).map_err(|e| ConfigError::new(at("path"), e.to_string()))?;
    let methods = if r.methods.iter().any(|m| m == "*") {
        if r.methods.len() > 1 {
            return Err(ConfigError::new(
                at("methods"),
                "'*' covers every method: list it alone",
            ));
        }
        Methods::All
    } else {
        if r.methods.is_empty() {
            return Err(ConfigError::new(
                at("methods"),
                "must list a method, or '*'",
            ));
        }
        if let Some(j) = r.methods.iter().position(|m| !is_method(m)) {
            return Err(ConfigError::new(
                format!("acl.rules[{i}].methods[{j}]"),
                "must be a method name (compared exactly: GET, not get)",
            ));
        }
        Methods::Only(r.methods)
    };
    if r.allow.is_empty() {
        return Err(ConfigError::new(
            at("allow"),
            "must grant someone: consumer:<id>, group:<name> or any",
        ));
    }
    let allow = r
        .allow
        .iter()
        .enumerate()
        .map(|(j, entry)| {
            Grant::parse(entry).ok_or_else(|| {
                ConfigError::new(
                    format!("acl.rules[{i}].allow[{j}]"),
                    "must be consumer:<id>, group:<name> or any",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let owner = match r.owner {
        None => None,
        Some(owner) => {
            let segment = template.param_position(&owner.param).ok_or_else(|| {
                ConfigError::new(at("owner.param"), "must name a {param} of the rule's path")
            })?;
            Some(match (owner.kind, owner.equals) {
                (Some(kind), None) => {
                    if !is_consumer_id(&kind) {
                        return Err(ConfigError::new(
                            at("owner.type"),
                            "must be an object type name (1-128 characters of A-Z a-z 0-9 . _ - : @)",
                        ));
                    }
                    OwnerCheck::Entry { segment, kind }
                }
                (None, Some(equals)) => {
                    let to = match equals {
                        EqualsConfig::Consumer => EqualsTo::Consumer,
                        EqualsConfig::Subject if !jwt => {
                            return Err(ConfigError::new(
                                at("owner.equals"),
                                "subject needs jwt (the subject is the verified token's sub)",
                            ))
                        }
                        EqualsConfig::Subject => EqualsTo::Subject,
                    };
                    OwnerCheck::Equals { segment, to }
                }
                _ => {
                    return Err(ConfigError::new(
                        at("owner"),
                        "needs exactly one of type and equals",
                    ))
                }
            })
        }
    };
    Ok(Rule {
        template,
        methods,
        allow,
        owner,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn the_data_json_reads_back_as_the_maps_it_was_written_from() {
        let mut groups = GroupsConfig::new();
        groups.insert("support".into(), vec!["bob".into(), "carol".into()]);
        groups.insert("empty".into(), vec![]);
        let mut owners = OwnersConfig::new();
        let objects = owners.entry("doc".into()).or_default();
        for id in [
            "a\"b",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "ünï/çødé",
            "plain",
        ] {
            objects.insert(
                id.into(),
                vec!["consumer:alice".into(), "group:support".into()],
            );
        }
        owners.insert("none".into(), Default::default());
        let text = data_json(&groups, &owners);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"groups": groups, "owners": owners})
        );
    }
}

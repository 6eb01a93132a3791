//! The ACL's decision for one authenticated request: which rule applies, whether it grants the
//! caller, and whether the caller may touch the object the path names. Group membership and
//! ownership are read through [`AclData`], only the entries this request needs.

use super::data::{AclData, AclDataError, Principal};
use super::rules::{EqualsTo, Grant, OwnerCheck, Selection};
use super::{AclPolicy, Unmatched};

/// Who is asking, as the earlier checks verified it.
#[derive(Debug, Clone, Copy)]
pub struct AclCaller<'a> {
    pub consumer: &'a str,
    /// The verified JWT's `sub`.
    pub subject: Option<&'a str>,
}

/// Why the ACL refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclRefusal {
    /// No rule grants the caller.
    Forbidden,
    /// The rule grants the caller, the object check failed.
    NotOwner,
}

impl AclRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::NotOwner => "not_owner",
        }
    }
}

/// What the ACL decided, and what it decided with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclDecision {
    pub refusal: Option<AclRefusal>,
    /// The rule that applied (`acl.rules[i]`).
    pub rule: Option<usize>,
    /// The caller's groups (sorted, no duplicates).
    pub groups: Vec<String>,
    /// The object the path names: the values of the rule's parameters, joined by `/` (for the
    /// enumeration guard).
    pub object: Option<String>,
}

/// Decides `method` on `path` (canonical) for `caller`, whose token's group claims gave
/// `claim_groups`.
pub fn decide(
    acl: &AclPolicy,
    method: &str,
    path: &str,
    caller: AclCaller<'_>,
    claim_groups: Vec<String>,
    data: &mut dyn AclData,
) -> Result<AclDecision, AclDataError> {
    let mut groups = data.groups_of(caller.consumer)?;
    groups.extend(claim_groups);
    groups.sort_unstable();
    groups.dedup();
    let mut decision = AclDecision {
        refusal: None,
        rule: None,
        groups,
        object: None,
    };
    let (index, rule, segments) = match acl.rules.select(method, path) {
        Selection::Rule {
            index,
            rule,
            segments,
        } => (index, rule, segments),
        Selection::MethodNotCovered => {
            decision.refusal = Some(AclRefusal::Forbidden);
            return Ok(decision);
        }
        Selection::Unmatched => {
            if acl.unmatched == Unmatched::Deny {
                decision.refusal = Some(AclRefusal::Forbidden);
            }
            return Ok(decision);
        }
    };
    decision.rule = Some(index);
    let params: Vec<&str> = segments
        .iter()
        .enumerate()
        .filter(|(i, _)| rule.template.is_param(*i))
        .map(|(_, s)| *s)
        .collect();
    if !params.is_empty() {
        decision.object = Some(params.join("/"));
    }
    let granted = rule.allow.iter().any(|grant| match grant {
        Grant::Any => true,
        Grant::Principal(p) => names(p, caller.consumer, &decision.groups),
    });
    if !granted {
        decision.refusal = Some(AclRefusal::Forbidden);
        return Ok(decision);
    }
    let Some(check) = &rule.owner else {
        return Ok(decision);
    };
    let value = segments.get(check.segment()).copied().unwrap_or("");
    let owns = match check {
        OwnerCheck::Equals {
            to: EqualsTo::Consumer,
            ..
        } => value == caller.consumer,
        OwnerCheck::Equals {
            to: EqualsTo::Subject,
            ..
        } => caller.subject == Some(value),
        OwnerCheck::Entry { kind, .. } => data.owners_of(kind, value)?.is_some_and(|owners| {
            owners
                .iter()
                .any(|p| names(p, caller.consumer, &decision.groups))
        }),
    };
    if !owns {
        decision.refusal = Some(AclRefusal::NotOwner);
    }
    Ok(decision)
}

/// Whether `principal` is the caller or one of its groups.
fn names(principal: &Principal, consumer: &str, groups: &[String]) -> bool {
    match principal {
        Principal::Consumer(c) => c == consumer,
        Principal::Group(g) => groups.binary_search(g).is_ok(),
    }
}

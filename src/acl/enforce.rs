//! The ACL as a step of the request's checks: the enumeration guard first (a blocked consumer
//! costs no lookup), then the decision, then what it means on the wire: a refusal (403, or 404
//! with `deny_status: 404`), or in shadow mode a forward that names the refusal.

use super::data::{AclData, AclDataError};
use super::decision::{decide, AclCaller, AclRefusal};
use super::guard::{EnumerationGuard, Recorded};
use super::{AclMode, AclPolicy, DenyStatus};
use crate::audit::Outcome;
use crate::denial::Denial;
use crate::identity::{GROUPS_HEADER, WOULD_DENY_HEADER};
use crate::policy::is_consumer_id;
use crate::ports::{Event, Events, SharedStore};
use crate::ratelimit::TakeError;

/// The request as the ACL sees it.
#[derive(Debug, Clone, Copy)]
pub struct AclRequest<'a> {
    pub method: &'a str,
    /// Canonical (the pipeline refused any other).
    pub path: &'a str,
    pub caller: AclCaller<'a>,
    pub request_id: Option<&'a str>,
}

/// The ports and the time.
pub struct AclEnv<'a> {
    pub store: &'a dyn SharedStore,
    pub events: &'a mut dyn Events,
    pub now_ms: i64,
}

/// Groups a token's `group_claims` give its caller: values that are not group names (1-128
/// characters of A-Z a-z 0-9 . _ - : @) are left out (they could not be named in a rule, and
/// the groups header must stay a plain comma-separated list).
pub fn claim_groups(values: impl IntoIterator<Item = String>) -> Vec<String> {
    values.into_iter().filter(|v| is_consumer_id(v)).collect()
}

/// Runs the ACL for an authenticated request. Returns the headers for the upstream
/// (`x-apiguard-groups`, and in shadow mode `x-apiguard-would-deny`), or the refusal.
pub fn enforce(
    acl: &AclPolicy,
    request: AclRequest<'_>,
    claim_groups: Vec<String>,
    data: &mut dyn AclData,
    guard: Option<&mut EnumerationGuard>,
    env: AclEnv<'_>,
    noted: &mut Outcome,
) -> Result<Vec<(String, String)>, Denial> {
    let consumer = request.caller.consumer;
    let mut guard = guard.zip(acl.guard.as_ref());
    let mut would_deny: Option<Denial> = None;
    if let Some((g, _)) = guard.as_mut() {
        match g.blocked(consumer, env.store, env.now_ms) {
            Ok(Some(retry_after)) => {
                let blocked = Denial::EnumerationBlocked { retry_after };
                if acl.mode == AclMode::Enforce {
                    return Err(blocked);
                }
                would_deny = Some(blocked);
            }
            Ok(None) => {}
            // The guard is a second line: the ACL itself still decides.
            Err(_) => env.events.emit(Event::StoreFailed),
        }
    }
    let decided = decide(
        acl,
        request.method,
        request.path,
        request.caller,
        claim_groups,
        data,
    );
    let decision = match decided {
        Ok(decision) => decision,
        Err(error) => {
            if error == AclDataError::Store {
                env.events.emit(Event::StoreFailed);
            }
            let denial = match error {
                AclDataError::NotLoaded => Denial::PolicyNotLoaded { stale: false },
                AclDataError::Stale => Denial::PolicyNotLoaded { stale: true },
                AclDataError::Store => Denial::AclDataUnavailable,
            };
            if acl.mode == AclMode::Enforce {
                return Err(denial);
            }
            let code = would_deny.as_ref().unwrap_or(&denial).code();
            return Ok(shadow(code, None, request.request_id, env.events));
        }
    };
    let rule = decision.rule.and_then(|i| acl.rule_name(i));
    noted.acl_rule.clone_from(&rule);
    let mut headers = Vec::new();
    if !decision.groups.is_empty() {
        headers.push((GROUPS_HEADER.to_owned(), decision.groups.join(",")));
    }
    if let (Some(_), Some((g, settings)), Some(object)) =
        (decision.refusal, guard.as_mut(), decision.object.as_deref())
    {
        match g.record_refusal(settings, consumer, object, env.store, env.now_ms) {
            Ok(Recorded::Blocked { retry_after }) if would_deny.is_none() => {
                // This refusal started the block (or met one another worker just started).
                env.events.emit(Event::EnumerationBlocked {
                    consumer: consumer.to_owned(),
                    seconds: retry_after,
                });
            }
            Ok(_) => {}
            Err(TakeError::Store(_)) => env.events.emit(Event::StoreFailed),
            // Other workers kept winning: this refusal goes uncounted.
            Err(TakeError::Contention) => env.events.emit(Event::RateLimitContention),
        }
    }
    let refusal = decision.refusal.map(|r| match (r, acl.deny_status) {
        (_, DenyStatus::NotFound) => Denial::NotFound,
        (AclRefusal::Forbidden, DenyStatus::Forbidden) => Denial::Forbidden,
        (AclRefusal::NotOwner, DenyStatus::Forbidden) => Denial::NotOwner,
    });
    if acl.mode == AclMode::Enforce {
        return match refusal {
            Some(denial) => Err(denial),
            None => Ok(headers),
        };
    }
    // Shadow: the reason is reported as it is (forbidden / not_owner), whatever deny_status.
    let reason = would_deny
        .map(|d| d.code())
        .or(decision.refusal.map(AclRefusal::code));
    if let Some(code) = reason {
        headers.extend(shadow(code, rule, request.request_id, env.events));
    }
    Ok(headers)
}

/// Reports a refusal that shadow mode does not enforce; the header for the upstream.
fn shadow(
    code: &'static str,
    rule: Option<String>,
    request_id: Option<&str>,
    events: &mut dyn Events,
) -> Vec<(String, String)> {
    events.emit(Event::AclShadowDenial {
        code,
        rule,
        request_id: request_id.map(str::to_owned),
    });
    vec![(WOULD_DENY_HEADER.to_owned(), code.to_owned())]
}

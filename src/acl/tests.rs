//! The ACL end to end inside the core: configuration errors, decisions over in-memory data, and
//! the pipeline's answers (403 / 404 / 429, shadow mode, the groups header) with a stopped clock.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::rc::Rc;

use serde_json::{json, Value};

use super::decision::{decide, AclCaller, AclDecision, AclRefusal};
use super::enforce::{enforce, AclEnv, AclRequest};
use super::*;
use crate::api_key::test_support::key;
use crate::audit::{Outcome, Verdict};
use crate::denial::Denial;
use crate::identity::{GROUPS_HEADER, WOULD_DENY_HEADER};
use crate::jwt::test_keys::{ec_public_jwk, mint};
use crate::jwt::Alg;
use crate::pipeline::{Decision, Env, Forward, Guard};
use crate::policy::Policy;
use crate::ports::fakes::{MemoryStore, RecordedEvents};
use crate::ports::{Event, KeySpace};
use crate::request::test_support::TestRequest;
use crate::secret::to_hex;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://idp.test";

/// The issue's example, with three keys (alice, bob, mallory) and a JWT provider.
fn issue_acl() -> Value {
    json!({
        "groups": {"support": ["bob", "carol"]},
        "group_claims": ["groups", "scope"],
        "rules": [
            {"path": "/v1/accounts/{account}/orders/{order}", "methods": ["GET", "HEAD"],
             "allow": ["group:support", "consumer:alice"], "owner": {"param": "account", "type": "account"}},
            {"path": "/v1/users/{user}", "methods": ["*"], "allow": ["any"], "owner": {"param": "user", "equals": "consumer"}},
            {"path": "/v1/me/{sub}", "methods": ["GET"], "allow": ["any"], "owner": {"param": "sub", "equals": "subject"}},
            {"path": "/v1/reports", "methods": ["GET"], "allow": ["group:auditors"]}
        ],
        "owners": {"account": {"acct-1": ["consumer:alice", "group:support"], "acct-2": ["consumer:mallory"]}},
        "unmatched": "deny",
        "mode": "enforce",
        "deny_status": 403,
        "enumeration_guard": {"max_distinct_denied": 3, "window_seconds": 60, "block_seconds": 300}
    })
}

fn config(acl: Value) -> Value {
    let mut jwk = ec_public_jwk();
    jwk["kid"] = json!("ec");
    let entry = |seed: u8, consumer: &str| json!({"sha256": to_hex(&crate::api_key::digest(&key(seed))), "consumer": consumer});
    json!({
        "credentials": "either",
        "api_keys": {"keys": [entry(1, "alice"), entry(2, "bob"), entry(3, "mallory")]},
        "jwt": {"providers": [{"issuer": ISS, "audiences": ["api"], "jwks": {"keys": [jwk]}}]},
        "exempt_paths": ["/healthz"],
        "acl": acl,
    })
}

fn policy(acl: Value) -> Policy {
    Policy::from_json(config(acl).to_string().as_bytes()).unwrap()
}

fn error_of(acl: Value) -> String {
    Policy::from_json(config(acl).to_string().as_bytes())
        .unwrap_err()
        .path
}

fn with(mut acl: Value, field: &str, value: Value) -> Value {
    acl[field] = value;
    acl
}

fn token(claims: Value) -> String {
    let mut all = json!({"iss": ISS, "aud": "api", "iat": NOW, "exp": NOW + 300});
    if let (Some(all), Some(extra)) = (all.as_object_mut(), claims.as_object()) {
        all.extend(extra.clone());
    }
    format!("Bearer {}", mint(Alg::Es256, Some("ec"), &all))
}

/// A request carrying API key `seed`.
fn keyed(method: &str, path: &str, seed: u8) -> crate::request::RequestFacts {
    keyed_request(method, path, seed).build()
}

fn keyed_request(method: &str, path: &str, seed: u8) -> TestRequest {
    TestRequest::get(path)
        .set_header(":method", method)
        .set_header("x-api-key", &key(seed))
}

fn bearer(path: &str, claims: Value) -> crate::request::RequestFacts {
    TestRequest::get(path)
        .set_header("authorization", &token(claims))
        .build()
}

/// One worker of a proxy whose shared data is `store`.
struct Worker<'s> {
    guard: Guard,
    store: &'s MemoryStore,
    events: RecordedEvents,
}

impl<'s> Worker<'s> {
    fn new(policy: &Rc<Policy>, store: &'s MemoryStore, vm_id: u64) -> Self {
        let mut guard = Guard::new(Rc::clone(policy), &KeySpace::new("apiguard"), vm_id);
        guard.create_shared_keys(store).unwrap();
        let mut events = RecordedEvents::default();
        let mut env = Env {
            now_ms: 0,
            store,
            events: &mut events,
        };
        guard.start(&mut env).unwrap();
        Self {
            guard,
            store,
            events,
        }
    }

    fn decide(&mut self, req: &crate::request::RequestFacts, now_ms: i64) -> Decision {
        let mut env = Env {
            now_ms,
            store: self.store,
            events: &mut self.events,
        };
        self.guard.decide(req, &mut env)
    }
}

fn status_and_code(decision: &Decision) -> (u16, Option<&'static str>) {
    match decision {
        Decision::Reply(r) => (r.status, r.code),
        Decision::Forward(_) => (200, None),
        Decision::Wait(_) => (0, None),
    }
}

fn forwarded(decision: Decision) -> Forward {
    match decision {
        Decision::Forward(f) => f,
        other => panic!("expected a forward, got {:?}", status_and_code(&other)),
    }
}

fn header<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
    f.set_headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

// --- configuration ---

#[test]
fn the_issue_example_compiles() {
    let p = policy(issue_acl());
    let acl = p.acl.as_ref().unwrap();
    assert_eq!(acl.rules.len(), 4);
    assert_eq!(acl.mode, AclMode::Enforce);
    assert_eq!(acl.deny_status, DenyStatus::Forbidden);
    assert_eq!(acl.configured_ownership_entries, 2);
    let data = MemoryAclData::from_configured(acl.configured_data.as_deref());
    assert_eq!(data.ownership_entries(), 2);
    // Defaults: unmatched deny, enforce, 403, no guard, every method.
    let minimal = policy(json!({"rules": [{"path": "/a", "allow": ["any"]}]}));
    let acl = minimal.acl.as_ref().unwrap();
    assert_eq!(
        (acl.unmatched, acl.mode, acl.deny_status, acl.guard),
        (
            Unmatched::Deny,
            AclMode::Enforce,
            DenyStatus::Forbidden,
            None
        )
    );
    assert!(p.matches_paths(), "an ACL needs canonical paths");
}

#[test]
fn each_configuration_error_names_its_field() {
    let rule = |r: Value| json!({"rules": [r]});
    let cases = [
        (
            json!({"rules": [{"path": "/a/{x}/c", "allow": ["any"]}, {"path": "/{y}/b/c", "methods": ["GET"], "allow": ["any"]}]}),
            "acl.rules[1].path",
        ),
        (
            rule(json!({"path": "/a", "allow": ["role:admin"]})),
            "acl.rules[0].allow[0]",
        ),
        (
            rule(json!({"path": "/a", "allow": []})),
            "acl.rules[0].allow",
        ),
        (
            rule(json!({"path": "/a/{x}", "allow": ["any"], "owner": {"param": "y", "type": "t"}})),
            "acl.rules[0].owner.param",
        ),
        (
            rule(
                json!({"path": "/a/{x}", "allow": ["any"], "owner": {"param": "x", "type": "a b"}}),
            ),
            "acl.rules[0].owner.type",
        ),
        (
            rule(json!({"path": "/a/{x}", "allow": ["any"], "owner": {"param": "x"}})),
            "acl.rules[0].owner",
        ),
        (
            rule(
                json!({"path": "/a/{x}", "allow": ["any"], "owner": {"param": "x", "type": "t", "equals": "consumer"}}),
            ),
            "acl.rules[0].owner",
        ),
        (
            rule(
                json!({"path": "/a/{x}", "allow": ["any"], "owner": {"param": "x", "equals": "tenant"}}),
            ),
            "acl.rules[0].owner.equals",
        ),
        (
            rule(json!({"path": "a", "allow": ["any"]})),
            "acl.rules[0].path",
        ),
        (
            rule(json!({"path": "/a", "methods": [], "allow": ["any"]})),
            "acl.rules[0].methods",
        ),
        (
            rule(json!({"path": "/a", "methods": ["GET", "*"], "allow": ["any"]})),
            "acl.rules[0].methods",
        ),
        (
            rule(json!({"path": "/a", "methods": ["GET /"], "allow": ["any"]})),
            "acl.rules[0].methods[0]",
        ),
        (
            rule(json!({"path": "/a", "allow": ["any"], "extra": 1})),
            "acl.rules[0].extra",
        ),
        (json!({"deny_status": 401}), "acl.deny_status"),
        (json!({"mode": "audit"}), "acl.mode"),
        (json!({"unmatched": "maybe"}), "acl.unmatched"),
        (json!({"group_claims": [""]}), "acl.group_claims[0]"),
        (json!({"groups": {"g": ["a b"]}}), "acl.groups.g[0]"),
        (
            json!({"owners": {"account": {"a": ["alice"]}}}),
            "acl.owners.account",
        ),
        (
            json!({"enumeration_guard": {"max_distinct_denied": 0, "window_seconds": 60, "block_seconds": 60}}),
            "acl.enumeration_guard.max_distinct_denied",
        ),
        (
            json!({"enumeration_guard": {"max_distinct_denied": 5, "window_seconds": 0, "block_seconds": 60}}),
            "acl.enumeration_guard.window_seconds",
        ),
        (
            json!({"enumeration_guard": {"max_distinct_denied": 5, "window_seconds": 60, "block_seconds": 0}}),
            "acl.enumeration_guard.block_seconds",
        ),
    ];
    for (acl, path) in cases {
        assert_eq!(error_of(acl.clone()), path, "{acl}");
    }
    // Equally specific rules with disjoint methods do not tie; an owners type with no rule and
    // a rule type with no entries are fine (the data may come live).
    policy(json!({
        "rules": [{"path": "/a/{x}", "methods": ["GET"], "allow": ["any"], "owner": {"param": "x", "type": "later"}},
                  {"path": "/a/{y}", "methods": ["POST"], "allow": ["any"]}],
        "owners": {"unused": {"o": ["consumer:alice"]}}
    }));
}

#[test]
fn claims_and_subjects_need_jwt() {
    let without_jwt = |acl: Value| {
        let mut c = config(acl);
        c["credentials"] = json!("api_key");
        c.as_object_mut().unwrap().remove("jwt");
        Policy::from_json(c.to_string().as_bytes())
            .unwrap_err()
            .path
    };
    assert_eq!(
        without_jwt(json!({"group_claims": ["groups"]})),
        "acl.group_claims[0]"
    );
    assert_eq!(
        without_jwt(
            json!({"rules": [{"path": "/u/{s}", "allow": ["any"], "owner": {"param": "s", "equals": "subject"}}]})
        ),
        "acl.rules[0].owner.equals"
    );
}

// --- decisions over in-memory data ---

fn decide_for(
    acl: &AclPolicy,
    method: &str,
    path: &str,
    consumer: &str,
    subject: Option<&str>,
    claims: &[&str],
) -> AclDecision {
    let mut data = MemoryAclData::from_configured(acl.configured_data.as_deref());
    let claims = claims.iter().map(|s| (*s).to_owned()).collect();
    decide(
        acl,
        method,
        path,
        AclCaller { consumer, subject },
        claims,
        &mut data,
    )
    .unwrap()
}

fn refusal(d: &AclDecision) -> Option<AclRefusal> {
    d.refusal
}

#[test]
fn grants_by_consumer_group_and_claim_then_the_owner_entry() {
    let p = policy(issue_acl());
    let acl = p.acl.as_ref().unwrap();
    let orders = "/v1/accounts/acct-1/orders/7";
    // By consumer; by configured group; by a group from a claim.
    let alice = decide_for(acl, "GET", orders, "alice", None, &[]);
    assert_eq!((refusal(&alice), alice.rule), (None, Some(0)));
    assert!(alice.groups.is_empty());
    let bob = decide_for(acl, "GET", orders, "bob", None, &[]);
    assert_eq!(
        (refusal(&bob), bob.groups.clone()),
        (None, vec!["support".to_owned()])
    );
    let dave = decide_for(acl, "HEAD", orders, "dave", None, &["support"]);
    assert_eq!(refusal(&dave), None);
    // Granted by the rule, but acct-2 is not theirs: not_owner; an unknown account too.
    for account in ["acct-2", "acct-9"] {
        let path = format!("/v1/accounts/{account}/orders/7");
        assert_eq!(
            refusal(&decide_for(acl, "GET", &path, "bob", None, &[])),
            Some(AclRefusal::NotOwner)
        );
    }
    // Not granted at all: forbidden (no owner lookup), with the object named for the guard.
    let eve = decide_for(acl, "GET", orders, "eve", None, &[]);
    assert_eq!(refusal(&eve), Some(AclRefusal::Forbidden));
    assert_eq!(eve.object.as_deref(), Some("acct-1/7"));
    // Methods compare exactly: the rule covers GET and HEAD only.
    assert_eq!(
        refusal(&decide_for(acl, "DELETE", orders, "alice", None, &[])),
        Some(AclRefusal::Forbidden)
    );
    // Literal segments ignore case; the object id keeps its own.
    assert_eq!(
        refusal(&decide_for(
            acl,
            "GET",
            "/V1/Accounts/acct-1/ORDERS/7",
            "alice",
            None,
            &[]
        )),
        None
    );
    assert_eq!(
        refusal(&decide_for(
            acl,
            "GET",
            "/v1/accounts/ACCT-1/orders/7",
            "alice",
            None,
            &[]
        )),
        Some(AclRefusal::NotOwner)
    );
}

#[test]
fn owners_by_equality_to_consumer_and_subject() {
    let p = policy(issue_acl());
    let acl = p.acl.as_ref().unwrap();
    assert_eq!(
        refusal(&decide_for(
            acl,
            "PUT",
            "/v1/users/alice",
            "alice",
            None,
            &[]
        )),
        None
    );
    assert_eq!(
        refusal(&decide_for(acl, "PUT", "/v1/users/bob", "alice", None, &[])),
        Some(AclRefusal::NotOwner)
    );
    assert_eq!(
        refusal(&decide_for(
            acl,
            "GET",
            "/v1/me/user-7",
            "alice",
            Some("user-7"),
            &[]
        )),
        None
    );
    // The consumer is not the subject; no token, no subject.
    assert_eq!(
        refusal(&decide_for(acl, "GET", "/v1/me/alice", "alice", None, &[])),
        Some(AclRefusal::NotOwner)
    );
}

#[test]
fn unmatched_paths_follow_unmatched() {
    let deny = policy(issue_acl());
    let d = decide_for(
        deny.acl.as_ref().unwrap(),
        "GET",
        "/v2/other",
        "alice",
        None,
        &[],
    );
    assert_eq!((refusal(&d), d.rule), (Some(AclRefusal::Forbidden), None));
    let allow = policy(with(issue_acl(), "unmatched", json!("allow")));
    let acl = allow.acl.as_ref().unwrap();
    assert_eq!(
        refusal(&decide_for(acl, "GET", "/v2/other", "alice", None, &[])),
        None
    );
    // Format suffixes and custom methods of a ruled path stay under its rule.
    for path in ["/v1/reports.json", "/v1/reports:export"] {
        let d = decide_for(acl, "GET", path, "alice", None, &[]);
        assert_eq!(
            (refusal(&d), d.rule),
            (Some(AclRefusal::Forbidden), Some(3)),
            "{path}"
        );
    }
    // A path some rule covers is never unmatched, whatever the method.
    assert_eq!(
        refusal(&decide_for(acl, "POST", "/v1/reports", "alice", None, &[])),
        Some(AclRefusal::Forbidden)
    );
}

#[test]
fn the_more_specific_rule_takes_precedence() {
    let p = policy(json!({
        "rules": [{"path": "/v1/users/{user}", "allow": ["group:admins"]},
                  {"path": "/v1/users/me", "methods": ["GET"], "allow": ["any"]}],
        "groups": {"admins": ["root"]}
    }));
    let acl = p.acl.as_ref().unwrap();
    let me = decide_for(acl, "GET", "/v1/users/me", "alice", None, &[]);
    assert_eq!((refusal(&me), me.rule), (None, Some(1)));
    let other = decide_for(acl, "GET", "/v1/users/bob", "alice", None, &[]);
    assert_eq!(
        (refusal(&other), other.rule),
        (Some(AclRefusal::Forbidden), Some(0))
    );
    assert_eq!(
        refusal(&decide_for(
            acl,
            "DELETE",
            "/v1/users/me",
            "root",
            None,
            &[]
        )),
        None
    );
}

/// Data that counts its lookups and can fail.
struct CountingData {
    lookups: usize,
    fail: Option<AclDataError>,
}

impl AclData for CountingData {
    fn groups_of(&mut self, _: &str) -> Result<Vec<String>, AclDataError> {
        self.lookups += 1;
        self.fail.map_or(Ok(Vec::new()), Err)
    }
    fn owners_of(&mut self, _: &str, _: &str) -> Result<Option<Vec<Principal>>, AclDataError> {
        self.lookups += 1;
        self.fail.map_or(Ok(None), Err)
    }
}

fn run_enforce(
    acl: &AclPolicy,
    data: &mut CountingData,
    guard: Option<&mut EnumerationGuard>,
    store: &MemoryStore,
    events: &mut RecordedEvents,
    path: &str,
) -> Result<Vec<(String, String)>, Denial> {
    let request = AclRequest {
        method: "GET",
        path,
        caller: AclCaller {
            consumer: "mallory",
            subject: None,
        },
        request_id: Some("rid-1"),
    };
    let env = AclEnv {
        store,
        events,
        now_ms: NOW * 1000,
    };
    enforce(
        acl,
        request,
        Vec::new(),
        data,
        guard,
        env,
        &mut Outcome::new(Verdict::Allowed),
    )
}

#[test]
fn data_failures_fail_closed_and_blocked_consumers_cost_no_lookup() {
    let p = policy(issue_acl());
    let acl = p.acl.as_ref().unwrap();
    let store = MemoryStore::default();
    let mut events = RecordedEvents::default();
    let path = "/v1/accounts/acct-1/orders/1";
    let mut data = CountingData {
        lookups: 0,
        fail: Some(AclDataError::NotLoaded),
    };
    assert_eq!(
        run_enforce(acl, &mut data, None, &store, &mut events, path),
        Err(Denial::PolicyNotLoaded { stale: false })
    );
    data.fail = Some(AclDataError::Store);
    assert_eq!(
        run_enforce(acl, &mut data, None, &store, &mut events, path),
        Err(Denial::AclDataUnavailable)
    );
    assert_eq!(events.0.last(), Some(&Event::StoreFailed));
    // Four distinct refused objects (limit 3) block mallory; then no lookup happens at all.
    let mut guard = EnumerationGuard::new(KeySpace::new("apiguard"));
    let mut data = CountingData {
        lookups: 0,
        fail: None,
    };
    for i in 0..4 {
        let path = format!("/v1/accounts/acct-{i}/orders/1");
        assert_eq!(
            run_enforce(acl, &mut data, Some(&mut guard), &store, &mut events, &path),
            Err(Denial::Forbidden)
        );
    }
    assert!(events.0.contains(&Event::EnumerationBlocked {
        consumer: "mallory".to_owned(),
        seconds: 300
    }));
    let before = data.lookups;
    assert_eq!(
        run_enforce(acl, &mut data, Some(&mut guard), &store, &mut events, path),
        Err(Denial::EnumerationBlocked { retry_after: 300 })
    );
    assert_eq!(data.lookups, before);
}

// --- through the pipeline ---

#[test]
fn the_pipeline_refuses_with_403_and_forwards_the_groups() {
    let p = Rc::new(policy(issue_acl()));
    let store = MemoryStore::default();
    let mut w = Worker::new(&p, &store, 1);
    let at = NOW * 1000;
    let f = forwarded(
        w.decide(
            &keyed_request("GET", "/v1/accounts/acct-1/orders/7", 2)
                .set_header("x-apiguard-groups", "admins")
                .build(),
            at,
        ),
    );
    assert_eq!(header(&f, GROUPS_HEADER), Some("support"));
    assert!(f.remove_headers.contains(&"x-apiguard-groups".to_owned()));
    assert_eq!(
        status_and_code(&w.decide(&keyed("GET", "/v1/accounts/acct-2/orders/7", 2), at)),
        (403, Some("not_owner"))
    );
    assert_eq!(
        status_and_code(&w.decide(&keyed("GET", "/v1/reports", 1), at)),
        (403, Some("forbidden"))
    );
    assert_eq!(
        status_and_code(&w.decide(&keyed("GET", "/v2/unmatched", 1), at)),
        (403, Some("forbidden"))
    );
    // Exempt paths skip the ACL.
    assert_eq!(
        status_and_code(&w.decide(&TestRequest::get("/healthz").build(), at)).0,
        200
    );
    // Groups from a token's claims: an array and a space-separated string, merged and sorted;
    // values that are no group names are left out.
    let f = forwarded(w.decide(
        &bearer(
            "/v1/accounts/acct-1/orders/7",
            json!({"sub": "dave", "groups": ["support", "a,b"], "scope": "read write"}),
        ),
        at,
    ));
    assert_eq!(header(&f, GROUPS_HEADER), Some("read,support,write"));
    // equals: subject, through the pipeline.
    assert_eq!(
        status_and_code(&w.decide(&bearer("/v1/me/dave", json!({"sub": "dave"})), at)).0,
        200
    );
    assert_eq!(
        status_and_code(&w.decide(&bearer("/v1/me/erin", json!({"sub": "dave"})), at)),
        (403, Some("not_owner"))
    );
}

#[test]
fn deny_status_404_hides_both_reasons_behind_a_neutral_answer() {
    let p = Rc::new(policy(with(issue_acl(), "deny_status", json!(404))));
    let store = MemoryStore::default();
    let mut w = Worker::new(&p, &store, 1);
    let at = NOW * 1000;
    for (path, seed) in [("/v1/accounts/acct-2/orders/7", 2), ("/v1/reports", 1)] {
        let Decision::Reply(reply) = w.decide(&keyed("GET", path, seed), at) else {
            panic!("expected a refusal");
        };
        assert_eq!((reply.status, reply.code), (404, Some("not_found")));
        let body = String::from_utf8(reply.body).unwrap();
        for word in ["owner", "forbidden", "allowed", "acct"] {
            assert!(!body.contains(word), "{body}");
        }
    }
}

#[test]
fn shadow_mode_forwards_names_the_refusal_and_reports_it() {
    let p = Rc::new(policy(with(issue_acl(), "mode", json!("shadow"))));
    let store = MemoryStore::default();
    let mut w = Worker::new(&p, &store, 1);
    let at = NOW * 1000;
    let f = forwarded(w.decide(&keyed("GET", "/v1/accounts/acct-2/orders/7", 2), at));
    assert_eq!(header(&f, WOULD_DENY_HEADER), Some("not_owner"));
    assert!(w.events.0.contains(&Event::AclShadowDenial {
        code: "not_owner",
        rule: Some("acl.rules[0] /v1/accounts/{account}/orders/{order}".to_owned()),
        request_id: Some("rid-1".to_owned()),
    }));
    assert_eq!(
        w.guard.take_outcome().unwrap().acl_rule.as_deref(),
        Some("acl.rules[0] /v1/accounts/{account}/orders/{order}")
    );
    let f = forwarded(w.decide(&keyed("GET", "/v1/accounts/acct-1/orders/7", 2), at));
    assert_eq!(header(&f, WOULD_DENY_HEADER), None);
    // Would-denials count towards the guard, whose block is reported, not enforced.
    for i in 0..4 {
        w.decide(
            &keyed("GET", &format!("/v1/accounts/x-{i}/orders/1"), 3),
            at,
        );
    }
    let f = forwarded(w.decide(&keyed("GET", "/v1/accounts/acct-2/orders/1", 3), at));
    assert_eq!(header(&f, WOULD_DENY_HEADER), Some("enumeration_blocked"));
}

#[test]
fn an_enumeration_is_blocked_on_every_worker_and_unblocked_later() {
    let p = Rc::new(policy(issue_acl()));
    let store = MemoryStore::default();
    let (mut one, mut two) = (Worker::new(&p, &store, 1), Worker::new(&p, &store, 2));
    let at = NOW * 1000;
    let orders = |i: u32| {
        keyed(
            "GET",
            &format!("/v1/accounts/acct-{}/orders/{i}", i + 10),
            3,
        )
    };
    // Refusals spread over both workers: the fourth distinct object (limit 3) starts the block.
    for i in 0..4 {
        let w = if i % 2 == 0 { &mut one } else { &mut two };
        assert_eq!(
            status_and_code(&w.decide(&orders(i), at + i64::from(i))),
            (403, Some("forbidden"))
        );
    }
    // Blocked on both workers, even where mallory is allowed; others are not.
    for w in [&mut one, &mut two] {
        let Decision::Reply(reply) = w.decide(&keyed("GET", "/v1/users/mallory", 3), at + 10)
        else {
            panic!("expected a refusal");
        };
        assert_eq!(
            (reply.status, reply.code),
            (429, Some("enumeration_blocked"))
        );
        assert!(reply
            .headers
            .contains(&("retry-after".to_owned(), "300".to_owned())));
    }
    assert_eq!(
        status_and_code(&one.decide(&keyed("GET", "/v1/accounts/acct-1/orders/1", 1), at + 10)).0,
        200
    );
    // Unblocked once block_seconds have passed.
    let later = at + 3 + 300_000;
    assert_eq!(
        status_and_code(&two.decide(&keyed("GET", "/v1/users/mallory", 3), later - 1)).0,
        429
    );
    assert_eq!(
        status_and_code(&two.decide(&keyed("GET", "/v1/users/mallory", 3), later)).0,
        200
    );
}

#[test]
fn token_claims_read_as_groups() {
    use crate::jwt::JwtVerifier;
    let p = policy(issue_acl());
    let settings = p.jwt.clone().unwrap();
    let mut v = JwtVerifier::new(settings, &KeySpace::new("apiguard"));
    let t = token(json!({"sub": "s", "groups": ["a", "b", 3], "scope": " read  write ", "n": 5}));
    let verified = v.verify(t.trim_start_matches("Bearer "), NOW).unwrap();
    assert_eq!(verified.claim_strings("groups"), ["a", "b"]);
    assert_eq!(verified.claim_strings("scope"), ["read", "write"]);
    assert!(verified.claim_strings("n").is_empty());
    assert!(verified.claim_strings("absent").is_empty());
}

#[test]
fn a_refused_request_costs_no_call_to_the_rate_limit_service() {
    let mut c = config(issue_acl());
    c["global_rate_limit"] = json!({"cluster": "ratelimit", "domain": "apiguard", "timeout_ms": 80,
                                    "descriptors": [["consumer"]]});
    let p = Rc::new(Policy::from_json(c.to_string().as_bytes()).unwrap());
    let store = MemoryStore::default();
    let mut w = Worker::new(&p, &store, 1);
    let at = NOW * 1000;
    // Refused by the ACL: answered at once, no call.
    assert_eq!(
        status_and_code(&w.decide(&keyed("GET", "/v1/reports", 1), at)),
        (403, Some("forbidden"))
    );
    // Admitted by the ACL: it waits for the service, with the groups header already decided.
    let Decision::Wait(wait) = w.decide(&keyed("GET", "/v1/accounts/acct-1/orders/7", 2), at)
    else {
        panic!("expected a wait for the rate-limit service");
    };
    assert!(wait.call.is_some());
}

#[test]
fn report_only_forwards_an_acl_refusal_as_any_other() {
    let mut c = config(issue_acl());
    c["report_only"] = json!(true);
    let p = Rc::new(Policy::from_json(c.to_string().as_bytes()).unwrap());
    let store = MemoryStore::default();
    let mut w = Worker::new(&p, &store, 1);
    let f = forwarded(w.decide(&keyed("GET", "/v1/reports", 1), NOW * 1000));
    assert_eq!(header(&f, WOULD_DENY_HEADER), Some("forbidden"));
    assert_eq!(f.unenforced, Some(Denial::Forbidden));
}

#[test]
fn shadow_mode_passes_a_data_failure_too() {
    let p = policy(with(issue_acl(), "mode", json!("shadow")));
    let acl = p.acl.as_ref().unwrap();
    let store = MemoryStore::default();
    let mut events = RecordedEvents::default();
    let mut data = CountingData {
        lookups: 0,
        fail: Some(AclDataError::Store),
    };
    let headers = run_enforce(acl, &mut data, None, &store, &mut events, "/v1/reports").unwrap();
    assert_eq!(
        headers,
        [(
            WOULD_DENY_HEADER.to_owned(),
            "acl_data_unavailable".to_owned()
        )]
    );
    assert!(events.0.contains(&Event::StoreFailed));
}

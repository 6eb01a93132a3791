//! Quotas and the failed-authentication throttle as the pipeline applies them, against the
//! Envoy-faithful store fake; plan resolution, bucket naming and configuration errors.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::api_key;
use crate::api_key::test_support::key;
use crate::pipeline::{Decision, Env, Guard};
use crate::policy::Policy;
use crate::ports::fakes::{MemoryStore, RecordedEvents};
use crate::request::test_support::TestRequest;
use crate::secret::to_hex;

const NOW_MS: i64 = 1_800_000_000_000;

fn entry(seed: u8, consumer: &str, plan: Option<&str>) -> Value {
    let mut e = json!({"sha256": to_hex(&api_key::digest(&key(seed))), "consumer": consumer});
    if let Some(plan) = plan {
        e["plan"] = json!(plan);
    }
    e
}

/// Keys 1 and 2 belong to alice, 3 to bob (plan "tiny" of its own), 4 to carol.
fn config(extra: Value) -> Value {
    let mut c = json!({
        "https": {"required": false},
        "api_keys": {"keys": [entry(1, "alice", None), entry(2, "alice", None),
                               entry(3, "bob", Some("tiny")), entry(4, "carol", None)]},
        "routes": [{"prefix": "/expensive", "cost": 2}],
        "rate_limits": {
            "plans": {"free": {"rate": 1, "per": "hour", "burst": 3},
                      "tiny": {"rate": 1, "per": "day", "burst": 1},
                      "gold": {"rate": 600, "per": "minute", "burst": 100}},
            "default_plan": "free",
            "consumers": {"carol": "gold"}
        }
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// One VM of a proxy (VMs built over the same store share its buckets).
struct Vm {
    guard: Guard,
    events: RecordedEvents,
}

fn vm(config: &Value, vm_id: u64) -> Vm {
    let policy = Policy::from_json(config.to_string().as_bytes()).unwrap();
    Vm {
        guard: Guard::new(
            Rc::new(policy),
            &crate::ports::KeySpace::new("apiguard"),
            vm_id,
        ),
        events: RecordedEvents::default(),
    }
}

impl Vm {
    fn decide(
        &mut self,
        store: &MemoryStore,
        req: &crate::request::RequestFacts,
        ms: i64,
    ) -> Decision {
        let mut env = Env {
            now_ms: NOW_MS + ms,
            store,
            events: &mut self.events,
        };
        self.guard.decide(req, &mut env)
    }
}

fn with_key(path: &str, seed: u8) -> crate::request::RequestFacts {
    TestRequest::get(path)
        .set_header("x-api-key", &key(seed))
        .build()
        .with_client_address(Some("192.0.2.7:4711"))
}

fn status(d: &Decision) -> u16 {
    match d {
        Decision::Forward(_) => 200,
        Decision::Reply(r) => r.status,
        Decision::Wait(_) => 0,
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    let headers = match d {
        Decision::Forward(f) => &f.response_headers,
        Decision::Reply(r) => &r.headers,
        Decision::Wait(_) => return None,
    };
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_plan_admits_its_burst_across_vms_then_429_with_the_ietf_fields() {
    let store = MemoryStore::default();
    let cfg = config(json!({}));
    let (mut a, mut b) = (vm(&cfg, 1), vm(&cfg, 2));
    let first = a.decide(&store, &with_key("/v1", 1), 0);
    assert_eq!(status(&first), 200);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        Some("\"free\";q=3;w=10800")
    );
    assert_eq!(header(&first, "ratelimit"), Some("\"free\";r=2;t=3600"));
    assert_eq!(status(&b.decide(&store, &with_key("/v1", 1), 0)), 200);
    assert_eq!(status(&a.decide(&store, &with_key("/v1", 1), 0)), 200);
    let refused = b.decide(&store, &with_key("/v1", 1), 0);
    let Decision::Reply(reply) = &refused else {
        panic!()
    };
    assert_eq!((reply.status, reply.code), (429, Some("rate_limited")));
    assert_eq!(header(&refused, "retry-after"), Some("3600"));
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        Some("\"free\";q=3;w=10800")
    );
    assert_eq!(header(&refused, "ratelimit"), Some("\"free\";r=0;t=10800"));
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["status"], 429);
    // An hour later, exactly one more.
    assert_eq!(
        status(&a.decide(&store, &with_key("/v1", 1), 3_600_000)),
        200
    );
    assert_eq!(
        status(&a.decide(&store, &with_key("/v1", 1), 3_600_000)),
        429
    );
}

#[test]
fn buckets_by_consumer_or_by_key_and_routes_cost_more() {
    let store = MemoryStore::default();
    let mut g = vm(&config(json!({})), 1);
    // alice's two keys share her bucket (3), carol's gold plan is hers alone.
    let admitted = (0..6)
        .filter(|i| status(&g.decide(&store, &with_key("/v1", 1 + (i % 2)), 0)) == 200)
        .count();
    assert_eq!(admitted, 3);
    assert_eq!(status(&g.decide(&store, &with_key("/v1", 4), 0)), 200);
    // bob's key has its own plan: one request a day.
    assert_eq!(status(&g.decide(&store, &with_key("/v1", 3), 0)), 200);
    assert_eq!(status(&g.decide(&store, &with_key("/v1", 3), 0)), 429);

    let store = MemoryStore::default();
    let mut by_key = vm(
        &config(json!({"rate_limits": {
        "plans": {"free": {"rate": 1, "per": "hour", "burst": 3}, "tiny": {"rate": 1, "per": "day", "burst": 1}},
        "default_plan": "free", "bucket_by": "key"}})),
        1,
    );
    let admitted = (0..8)
        .filter(|i| status(&by_key.decide(&store, &with_key("/v1", 1 + (i % 2)), 0)) == 200)
        .count();
    assert_eq!(admitted, 6, "each of alice's keys has its own bucket");

    let store = MemoryStore::default();
    let mut g = vm(&config(json!({})), 1);
    assert_eq!(
        status(&g.decide(&store, &with_key("/expensive/x", 1), 0)),
        200
    );
    let second = g.decide(&store, &with_key("/expensive/x", 1), 0);
    assert_eq!(status(&second), 429, "cost 2 with one token left");
    assert_eq!(status(&g.decide(&store, &with_key("/v1", 1), 0)), 200);
}

#[test]
fn no_plan_means_not_limited_and_a_refused_request_takes_no_quota() {
    let store = MemoryStore::default();
    let mut g = vm(
        &config(json!({"rate_limits": {
        "plans": {"gold": {"rate": 1, "per": "hour", "burst": 1}, "tiny": {"rate": 1, "per": "day", "burst": 1}},
        "consumers": {"carol": "gold"}}})),
        1,
    );
    for _ in 0..10 {
        assert_eq!(status(&g.decide(&store, &with_key("/v1", 1), 0)), 200);
    }
    // A refused request (unknown key) takes nothing from anyone's quota.
    let unknown = g.decide(&store, &with_key("/v1", 9), 0);
    assert_eq!(status(&unknown), 401);
    assert_eq!(status(&g.decide(&store, &with_key("/v1", 4), 0)), 200);
}

#[test]
fn the_plan_comes_from_key_then_consumer_then_claim_then_default() {
    let limits = RateLimits::compile(
        serde_json::from_value(json!({
            "plans": {"a": {"rate": 1, "per": "second", "burst": 1},
                      "b": {"rate": 2, "per": "second", "burst": 2},
                      "c": {"rate": 3, "per": "second", "burst": 3},
                      "d": {"rate": 4, "per": "second", "burst": 4}},
            "default_plan": "d", "consumers": {"alice": "b"}, "plan_claim": "plan"
        }))
        .unwrap(),
    )
    .unwrap();
    let name = |p: Option<Rc<Plan>>| p.map(|p| p.name.to_string());
    assert_eq!(
        name(limits.plan_for(Some("a"), Some("alice"), Some("c"))),
        Some("a".into())
    );
    assert_eq!(
        name(limits.plan_for(None, Some("alice"), Some("c"))),
        Some("b".into())
    );
    assert_eq!(
        name(limits.plan_for(None, Some("bob"), Some("c"))),
        Some("c".into())
    );
    assert_eq!(
        name(limits.plan_for(None, Some("bob"), Some("platinum"))),
        Some("d".into())
    );
    assert_eq!(name(limits.plan_for(None, None, None)), Some("d".into()));
}

#[test]
fn a_client_that_keeps_failing_is_throttled_before_its_credential_is_looked_at() {
    let store = MemoryStore::default();
    let cfg = config(json!({"failed_auth_limit": {"rate": 1, "per": "hour", "burst": 2}}));
    let (mut a, mut b) = (vm(&cfg, 1), vm(&cfg, 2));
    assert_eq!(status(&a.decide(&store, &with_key("/v1", 9), 0)), 401);
    assert_eq!(
        status(
            &b.decide(
                &store,
                &TestRequest::get("/v1")
                    .build()
                    .with_client_address(Some("192.0.2.7:1")),
                0
            )
        ),
        401
    );
    // Two failures: the bucket is empty. Even a valid key is now refused, before any lookup.
    let throttled = a.decide(&store, &with_key("/v1", 1), 0);
    let Decision::Reply(reply) = &throttled else {
        panic!()
    };
    assert_eq!(
        (reply.status, reply.code),
        (429, Some("too_many_auth_failures"))
    );
    assert_eq!(header(&throttled, "retry-after"), Some("3600"));
    // Another client is not affected; successes take nothing.
    let other = TestRequest::get("/v1")
        .set_header("x-api-key", &key(4))
        .build()
        .with_client_address(Some("198.51.100.1:9"));
    for _ in 0..5 {
        assert_eq!(status(&b.decide(&store, &other, 0)), 200);
    }
    // An hour later one failure's worth has come back.
    assert_eq!(
        status(&a.decide(&store, &with_key("/v1", 1), 3_599_000)),
        429
    );
    assert_eq!(
        status(&a.decide(&store, &with_key("/v1", 1), 3_600_000)),
        200
    );
}

#[test]
fn report_only_reports_429s_and_forwards() {
    let store = MemoryStore::default();
    let mut g = vm(
        &config(json!({"report_only": true,
        "rate_limits": {"plans": {"one": {"rate": 1, "per": "day", "burst": 1}, "tiny": {"rate": 1, "per": "day", "burst": 1}},
        "default_plan": "one"}})),
        1,
    );
    assert_eq!(status(&g.decide(&store, &with_key("/v1", 1), 0)), 200);
    let Decision::Forward(f) = g.decide(&store, &with_key("/v1", 1), 0) else {
        panic!()
    };
    assert!(f.set_headers.contains(&(
        "x-apiguard-would-deny".to_owned(),
        "rate_limited".to_owned()
    )));
    assert!(matches!(
        f.unenforced,
        Some(crate::denial::Denial::RateLimited { .. })
    ));
}

#[test]
fn contention_follows_on_store_contention() {
    let store = MemoryStore::default();
    store.fail_from_now_on();
    let mut deny = vm(&config(json!({})), 1);
    let d = deny.decide(&store, &with_key("/v1", 1), 0);
    assert_eq!((status(&d), header(&d, "retry-after")), (429, Some("1")));
    assert!(deny
        .events
        .0
        .contains(&crate::ports::Event::RateLimitContention));
    let mut allow = vm(
        &config(json!({"rate_limits": {
        "plans": {"free": {"rate": 1, "per": "hour", "burst": 3}, "tiny": {"rate": 1, "per": "day", "burst": 1}},
        "default_plan": "free", "on_store_contention": "allow", "response_headers": false}})),
        1,
    );
    let d = allow.decide(&store, &with_key("/v1", 1), 0);
    assert_eq!((status(&d), header(&d, "ratelimit")), (200, None));
}

#[test]
fn x_forwarded_for_hops_pick_the_client_address() {
    let limit = |hops: u32| {
        FailedAuthLimit::compile(
            serde_json::from_value(json!({"rate": 1, "per": "minute", "burst": 1,
            "client_address": "x_forwarded_for", "trusted_hops": hops}))
            .unwrap(),
        )
        .unwrap()
    };
    let req = TestRequest::get("/")
        .set_header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
        .add_header("x-forwarded-for", "10.0.0.2")
        .build()
        .with_client_address(Some("127.0.0.1:5555"));
    assert_eq!(limit(0).client_address(&req), Some("10.0.0.2"));
    assert_eq!(limit(1).client_address(&req), Some("10.0.0.1"));
    assert_eq!(limit(2).client_address(&req), Some("203.0.113.9"));
    assert_eq!(
        limit(3).client_address(&req),
        Some("127.0.0.1"),
        "too few entries"
    );
    let ipv6 = TestRequest::get("/")
        .build()
        .with_client_address(Some("[2001:db8::1]:443"));
    assert_eq!(limit(0).client_address(&ipv6), Some("2001:db8::1"));
}

#[test]
fn address_slots_are_bounded_and_salted() {
    let limit = FailedAuthLimit::compile(
        serde_json::from_value(json!({"rate": 1, "per": "minute",
        "burst": 1, "max_tracked_clients": 16}))
        .unwrap(),
    )
    .unwrap();
    let space = crate::ports::KeySpace::new("apiguard");
    let keys: std::collections::BTreeSet<String> = (0..2000)
        .map(|i| limit.key(&space, b"salt", &format!("10.0.{}.{}", i / 256, i % 256)))
        .collect();
    assert_eq!(keys.len(), 16);
    let moved = (0..64)
        .filter(|i| {
            let a = format!("10.1.0.{i}");
            limit.key(&space, b"salt", &a) != limit.key(&space, b"pepper", &a)
        })
        .count();
    assert!(
        moved > 32,
        "another salt maps addresses elsewhere ({moved}/64 moved)"
    );
}

#[test]
fn every_vm_of_a_proxy_agrees_on_the_salt() {
    let store = MemoryStore::default();
    let space = crate::ports::KeySpace::new("apiguard");
    let create = CreationToken::new(&store, &space.key("rl/probe")).unwrap();
    let first = proxy_salt(&store, &space, 1, create).unwrap();
    let second = proxy_salt(&store, &space, 2, create).unwrap();
    assert_eq!(first, second);
    assert_eq!(first, 1u64.to_le_bytes());
}

#[test]
fn configuration_errors_name_their_field() {
    let cases = [
        (json!({"rate_limits": {"plans": {}}}), "rate_limits.plans"),
        (
            json!({"rate_limits": {"plans": {"a": {"rate": 0, "per": "second", "burst": 1}}}}),
            "rate_limits.plans.a.rate",
        ),
        (
            json!({"rate_limits": {"plans": {"a": {"rate": 1, "per": "second", "burst": 0}}}}),
            "rate_limits.plans.a.burst",
        ),
        (
            json!({"rate_limits": {"plans": {"a": {"rate": 1, "per": "week", "burst": 1}}}}),
            "rate_limits.plans.a.per",
        ),
        (
            json!({"rate_limits": {"plans": {"a\"b": {"rate": 1, "per": "second", "burst": 1}}}}),
            "rate_limits.plans.a\"b",
        ),
        (
            json!({"rate_limits": {"plans": {"a": {"rate": 1, "per": "second", "burst": 1}}, "default_plan": "b"}}),
            "rate_limits.default_plan",
        ),
        (
            json!({"rate_limits": {"plans": {"a": {"rate": 1, "per": "second", "burst": 1}}, "consumers": {"x": "b"}}}),
            "rate_limits.consumers.x",
        ),
        (
            json!({"rate_limits": {"plans": {"a": {"rate": 1, "per": "second", "burst": 1}}, "bucket_by": "ip"}}),
            "rate_limits.bucket_by",
        ),
        (
            json!({"failed_auth_limit": {"rate": 1, "per": "second", "burst": 1, "client_address": "header"}}),
            "failed_auth_limit.client_address",
        ),
        (
            json!({"failed_auth_limit": {"rate": 1, "per": "second", "burst": 1, "trusted_hops": 1}}),
            "failed_auth_limit.trusted_hops",
        ),
        (
            json!({"failed_auth_limit": {"rate": 1, "per": "second", "burst": 1, "max_tracked_clients": 0}}),
            "failed_auth_limit.max_tracked_clients",
        ),
        (
            json!({"routes": [{"prefix": "/x", "cost": 0}]}),
            "routes[0].cost",
        ),
    ];
    for (extra, path) in cases {
        let err = Policy::from_json(config(extra.clone()).to_string().as_bytes()).unwrap_err();
        assert_eq!(err.path, path, "{extra}: {err}");
    }
    // A key's plan must exist too.
    let mut cfg = config(json!({}));
    cfg["api_keys"]["keys"][0]["plan"] = json!("platinum");
    let err = Policy::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.path, "api_keys.keys[0].plan");
}

#[test]
fn a_cost_above_a_burst_is_a_configuration_warning() {
    let cfg = config(json!({"routes": [{"prefix": "/bulk", "cost": 5}]}));
    let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
    assert!(
        policy
            .warnings
            .iter()
            .any(|w| w.contains("routes[0].cost 5") && w.contains("plan free")),
        "{:?}",
        policy.warnings
    );
}

#[test]
fn a_connection_address_from_x_forwarded_for_is_reported_once() {
    let store = MemoryStore::default();
    let mut g = vm(
        &config(json!({"failed_auth_limit": {"rate": 1, "per": "hour", "burst": 2}})),
        1,
    );
    let peer = with_key("/v1", 1);
    g.decide(&store, &peer, 0);
    let forwarded = TestRequest::get("/v1")
        .set_header("x-api-key", &key(4))
        .build()
        .with_client_address(Some("203.0.113.5:0"));
    assert!(forwarded.client_address_forwarded() && !peer.client_address_forwarded());
    g.decide(&store, &forwarded, 0);
    g.decide(&store, &forwarded, 0);
    let warned = g
        .events
        .0
        .iter()
        .filter(|e| **e == crate::ports::Event::ClientAddressForwarded)
        .count();
    assert_eq!(warned, 1);
}

#[test]
fn the_audit_outcome_names_the_caller_route_plan_and_tokens_left() {
    use crate::audit::Verdict;
    let store = MemoryStore::default();
    let mut vm = vm(&config(json!({})), 1);
    vm.decide(&store, &with_key("/expensive/x", 1), 0);
    let admitted = vm.guard.take_outcome().unwrap();
    assert_eq!(admitted.verdict, Verdict::Allowed);
    assert_eq!(admitted.consumer.as_deref(), Some("alice"));
    let digest = to_hex(&api_key::digest(&key(1)));
    assert_eq!(admitted.key_fingerprint.as_deref(), Some(&digest[..16]));
    assert_eq!(admitted.route.as_deref(), Some("/expensive"));
    assert_eq!(admitted.plan.as_deref(), Some("free"));
    assert_eq!(admitted.tokens_left, Some(1), "burst 3, cost 2");
    assert_eq!(admitted.acl_rule, None);
    vm.decide(&store, &with_key("/expensive/x", 1), 1);
    let refused = vm.guard.take_outcome().unwrap();
    assert_eq!(refused.verdict, Verdict::Denied);
    assert_eq!(refused.code, Some("rate_limited"));
    assert_eq!(
        (refused.plan.as_deref(), refused.tokens_left),
        (Some("free"), Some(1))
    );
    assert!(vm.guard.take_outcome().is_none(), "taken once");
}

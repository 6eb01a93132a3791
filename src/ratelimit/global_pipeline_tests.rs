//! `global_rate_limit` through the pipeline: the local checks first, then one call per request to
//! the rate-limit service, finished with its answer (real response bytes from the wire vectors).

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::rc::Rc;

use crate::api_key;
use crate::api_key::test_support::key;
use crate::denial::LocalReply;
use crate::pipeline::{Decision, Env, Forward, Guard, Topic, Wait};
use crate::policy::Policy;
use crate::ports::fakes::{MemoryStore, RecordedEvents};
use crate::ports::{Call, CallFailure, CallReply, Event, KeySpace};
use crate::ratelimit::rls::{self, Descriptor};
use crate::request::test_support::TestRequest;
use crate::request::RequestFacts;
use crate::secret::to_hex;

const NOW_MS: i64 = 1_800_000_000_000;

/// The response bytes of the wire vector named `name` (made by the published message classes).
fn vector(name: &str) -> Vec<u8> {
    let all: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/data/rls_wire_vectors.json")).unwrap();
    let hex = all["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["hex"]
        .as_str()
        .unwrap()
        .to_owned();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn ok_answer() -> CallReply {
    CallReply::Message(vector("OK with two statuses"))
}

/// OVER_LIMIT; the binding limit is "gold", 1000 per hour, reset in 1799.000001 s; it asks for
/// response headers x-ratelimit-limit and x-ratelimit-raw and request header x-quota-hit.
fn over_limit_answer() -> CallReply {
    CallReply::Message(vector(
        "OVER_LIMIT with headers, a raw header value, and fields apiguard skips",
    ))
}

struct World {
    guard: Guard,
    store: MemoryStore,
    events: RecordedEvents,
}

impl World {
    fn new(extra: &str) -> Self {
        Self::with(extra, "")
    }

    /// `extra`: more top-level fields; `global`: more `global_rate_limit` fields.
    fn with(extra: &str, global: &str) -> Self {
        let json = format!(
            r#"{{"api_keys": {{"keys": [{{"sha256": "{}", "consumer": "alice", "plan": "small"}},
                                        {{"sha256": "{}", "consumer": "bob"}}]}},
                "rate_limits": {{"plans": {{"small": {{"rate": 1, "per": "hour", "burst": 2}}}}}},
                "routes": [{{"prefix": "/payments", "cost": 2}}],
                "exempt_paths": ["/healthz"],
                "global_rate_limit": {{"cluster": "ratelimit", "domain": "apiguard", "timeout_ms": 80,
                    "descriptors": [["consumer"], ["consumer", "route"], ["plan"], ["header:x-tenant", "method"]]{global}}}
                {extra}}}"#,
            to_hex(&api_key::digest(&key(1))),
            to_hex(&api_key::digest(&key(2))),
        );
        let policy = Policy::from_json(json.as_bytes()).unwrap();
        let store = MemoryStore::default();
        let mut guard = Guard::new(Rc::new(policy), &KeySpace::new("apiguard"), 7);
        guard.create_shared_keys(&store).unwrap();
        Self {
            guard,
            store,
            events: RecordedEvents::default(),
        }
    }

    fn decide(&mut self, req: &RequestFacts) -> Decision {
        let mut env = Env {
            now_ms: NOW_MS,
            store: &self.store,
            events: &mut self.events,
        };
        self.guard.decide(req, &mut env)
    }

    fn finish(&mut self, wait: Wait, answer: Option<&CallReply>) -> Decision {
        let mut env = Env {
            now_ms: NOW_MS,
            store: &self.store,
            events: &mut self.events,
        };
        self.guard.finish(*wait.held.unwrap(), answer, &mut env)
    }

    fn waits(&mut self, req: &RequestFacts) -> Wait {
        match self.decide(req) {
            Decision::Wait(wait) => *wait,
            Decision::Forward(_) => panic!("forwarded without asking"),
            Decision::Reply(r) => panic!("replied {} {:?} without asking", r.status, r.code),
        }
    }
}

fn request(key_seed: u8, path: &str) -> RequestFacts {
    TestRequest::get(path)
        .set_header("x-api-key", &key(key_seed))
        .set_header("x-tenant", "t-9")
        .build()
}

fn forwarded(decision: Decision) -> Forward {
    match decision {
        Decision::Forward(f) => f,
        Decision::Reply(r) => panic!("expected a forward, got {} {:?}", r.status, r.code),
        Decision::Wait(_) => panic!("expected a forward, got a wait"),
    }
}

fn replied(decision: Decision) -> LocalReply {
    match decision {
        Decision::Reply(r) => r,
        _ => panic!("expected a reply"),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn pairs(entries: &[(&str, &str)]) -> Descriptor {
    Descriptor {
        entries: entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[test]
fn an_admitted_request_asks_with_its_descriptors_and_cost() {
    let mut w = World::new("");
    let wait = w.waits(&request(1, "/payments/7"));
    assert_eq!(wait.topic, Topic::GlobalQuota);
    assert_eq!(wait.until_ms, NOW_MS + 80);
    let Some(Call::Grpc(call)) = &wait.call else {
        panic!("{:?}", wait.call)
    };
    assert_eq!((call.cluster.as_str(), call.timeout_ms), ("ratelimit", 80));
    assert_eq!(
        (call.service.as_str(), call.method.as_str()),
        (
            "envoy.service.ratelimit.v3.RateLimitService",
            "ShouldRateLimit"
        )
    );
    let expected = [
        pairs(&[("consumer", "alice")]),
        pairs(&[("consumer", "alice"), ("route", "/payments")]),
        pairs(&[("plan", "small")]),
        pairs(&[("x-tenant", "t-9"), ("method", "GET")]),
    ];
    // hits_addend is the route's cost.
    assert_eq!(call.message, rls::encode_request("apiguard", &expected, 2));
    // Bob has no plan: no plan descriptor; no route matched: "/"; cost 1.
    let wait = w.waits(&request(2, "/v1"));
    let Some(Call::Grpc(call)) = &wait.call else {
        panic!()
    };
    let expected = [
        pairs(&[("consumer", "bob")]),
        pairs(&[("consumer", "bob"), ("route", "/")]),
        pairs(&[("x-tenant", "t-9"), ("method", "GET")]),
    ];
    assert_eq!(call.message, rls::encode_request("apiguard", &expected, 1));
}

#[test]
fn ok_forwards_with_identity_and_the_local_fields() {
    let mut w = World::new("");
    let wait = w.waits(&request(1, "/v1"));
    let f = forwarded(w.finish(wait, Some(&ok_answer())));
    assert_eq!(f.caller.consumer.as_deref(), Some("alice"));
    assert_eq!(header(&f.set_headers, "x-apiguard-consumer"), Some("alice"));
    assert!(header(&f.response_headers, "ratelimit").is_some());
    assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
    assert_eq!(w.events.0.last(), Some(&Event::Allowed));
}

#[test]
fn over_limit_is_a_429_with_the_services_fields_and_headers() {
    let mut w = World::new("");
    let wait = w.waits(&request(1, "/v1"));
    let reply = replied(w.finish(wait, Some(&over_limit_answer())));
    assert_eq!((reply.status, reply.code), (429, Some("rate_limited")));
    let h = &reply.headers;
    assert_eq!(header(h, "retry-after"), Some("1800"));
    assert_eq!(
        header(h, "ratelimit-policy"),
        Some("\"gold\";q=1000;w=3600")
    );
    assert_eq!(header(h, "ratelimit"), Some("\"gold\";r=0;t=1800"));
    assert_eq!(header(h, "x-ratelimit-limit"), Some("1000"));
    assert_eq!(header(h, "x-ratelimit-raw"), Some("raw"));
    assert!(header(h, "strict-transport-security").is_some());
    assert!(header(h, "www-authenticate").is_none());
    assert_eq!(
        w.events.0.last(),
        Some(&Event::Denied {
            code: "rate_limited"
        })
    );
}

#[test]
fn the_local_bucket_refuses_first_without_asking() {
    let mut w = World::new("");
    // Alice's plan holds 2 tokens; /payments costs 2.
    let wait = w.waits(&request(1, "/payments"));
    forwarded(w.finish(wait, Some(&ok_answer())));
    let reply = replied(w.decide(&request(1, "/v1")));
    assert_eq!((reply.status, reply.code), (429, Some("rate_limited")));
    assert_eq!(
        header(&reply.headers, "ratelimit-policy"),
        Some("\"small\";q=2;w=7200")
    );
    // Nor do failed authentication, exempt paths or bob's refusals of the local checks ask.
    replied(w.decide(&TestRequest::get("/v1").build()));
    forwarded(w.decide(&TestRequest::get("/healthz").build()));
}

#[test]
fn no_answer_follows_failure_mode() {
    for (failure_mode, answer) in [
        ("deny", None),
        ("deny", Some(CallReply::Failed(CallFailure::NoResponse))),
        ("deny", Some(CallReply::Failed(CallFailure::GrpcStatus(14)))),
        ("deny", Some(CallReply::Message(vec![0x0b]))),
        ("allow", None),
        ("allow", Some(CallReply::Failed(CallFailure::NotStarted))),
    ] {
        let mut w = World::with("", &format!(r#", "failure_mode": "{failure_mode}""#));
        let wait = w.waits(&request(2, "/v1"));
        let decision = w.finish(wait, answer.as_ref());
        assert!(
            w.events
                .0
                .iter()
                .any(|e| matches!(e, Event::RateLimitServiceFailed { .. })),
            "{failure_mode} {answer:?}: counted either way"
        );
        if failure_mode == "deny" {
            let reply = replied(decision);
            assert_eq!(
                (reply.status, reply.code),
                (503, Some("rate_limit_unavailable"))
            );
            assert!(header(&reply.headers, "retry-after").is_some());
        } else {
            let f = forwarded(decision);
            assert_eq!(header(&f.set_headers, "x-apiguard-consumer"), Some("bob"));
        }
    }
}

#[test]
fn report_only_reports_rate_limited_and_forwards_without_identity() {
    let mut w = World::new(r#", "report_only": true"#);
    let wait = w.waits(&request(2, "/v1"));
    let f = forwarded(w.finish(wait, Some(&over_limit_answer())));
    assert_eq!(
        f.set_headers,
        [(
            "x-apiguard-would-deny".to_owned(),
            "rate_limited".to_owned()
        )]
    );
    assert_eq!(
        f.unenforced.as_ref().map(|d| d.code()),
        Some("rate_limited")
    );
    assert!(f.remove_headers.contains(&"x-api-key".to_owned()));
    assert!(matches!(
        w.events.0.last(),
        Some(Event::ReportOnly {
            code: "rate_limited",
            status: 429,
            ..
        })
    ));
}

#[test]
fn the_services_request_headers_reach_the_upstream_only_when_admitted() {
    let mut w = World::new("");
    // An OK answer that also asks for headers: the OVER_LIMIT vector with its code set to OK
    // (overall_code is its first field: 08 02).
    let CallReply::Message(mut bytes) = over_limit_answer() else {
        unreachable!()
    };
    assert_eq!(&bytes[..2], &[0x08, 0x02]);
    bytes[1] = 0x01;
    let wait = w.waits(&request(2, "/v1"));
    let f = forwarded(w.finish(wait, Some(&CallReply::Message(bytes))));
    assert_eq!(header(&f.set_headers, "x-quota-hit"), Some("gold"));
    assert_eq!(
        header(&f.response_headers, "x-ratelimit-limit"),
        Some("1000")
    );
}

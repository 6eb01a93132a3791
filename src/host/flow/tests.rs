//! The wait/resume state machine against a fake host: calls answered, failed and timed out;
//! requests waiting for another VM's fetch; clients that go away before the answer.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::HashSet;
use std::rc::Rc;

use super::*;
use crate::jwt::test_keys::{ec_public_jwk, mint};
use crate::jwt::Alg;
use crate::live::{Feed, FeedTiming, FetchReason};
use crate::policy::Policy;
use crate::ports::fakes::{MemoryStore, RecordedEvents};
use crate::ports::{Event, KeySpace};
use crate::request::test_support::TestRequest;

const ISS: &str = "https://idp.test";
const NOW_MS: i64 = 1_800_000_000_000;
const ROOT: u32 = 1;
const OTHER_VM: u64 = 0xBEEF;

/// What the fake host was asked to do, per request context.
#[derive(Debug, Default)]
struct FakeHost {
    current: u32,
    /// Contexts whose client went away.
    gone: HashSet<u32>,
    /// (context, operation) in order.
    ops: Vec<(u32, Op)>,
    next_token: u32,
    refuse_calls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Header(String, Option<String>),
    Reply(u16, Option<&'static str>),
    Resume,
    Dispatch(u32, String),
}

impl Outbound for FakeHost {
    fn dispatch(&mut self, call: &Call) -> Result<u32, CallFailure> {
        if self.refuse_calls {
            return Err(CallFailure::NotStarted);
        }
        self.next_token += 1;
        let what = match call {
            Call::Http(c) => c.path.clone(),
            Call::Grpc(c) => format!("{}/{}", c.service, c.method),
        };
        let op = Op::Dispatch(self.next_token, what);
        self.ops.push((self.current, op));
        Ok(self.next_token)
    }
}

impl Host for FakeHost {
    fn switch_to(&mut self, context: u32) -> bool {
        if self.gone.contains(&context) {
            return false;
        }
        self.current = context;
        true
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let op = Op::Header(name.to_owned(), value.map(str::to_owned));
        self.ops.push((self.current, op));
    }
    fn send_reply(&mut self, reply: &LocalReply) {
        self.ops
            .push((self.current, Op::Reply(reply.status, reply.code)));
    }
    fn resume_request(&mut self) {
        self.ops.push((self.current, Op::Resume));
    }
}

impl FakeHost {
    fn of(&self, context: u32) -> Vec<Op> {
        self.ops
            .iter()
            .filter(|(c, _)| *c == context)
            .map(|(_, op)| op.clone())
            .collect()
    }

    /// How the request of `context` ended: forwarded (with the subject it was given), refused
    /// with a code, or nothing yet.
    fn outcome(&self, context: u32) -> Option<Result<String, &'static str>> {
        let ops = self.of(context);
        if let Some(code) = ops.iter().find_map(|op| match op {
            Op::Reply(_, code) => Some(code.unwrap_or("")),
            _ => None,
        }) {
            return Some(Err(code));
        }
        ops.contains(&Op::Resume).then(|| {
            Ok(ops
                .iter()
                .find_map(|op| match op {
                    Op::Header(n, Some(v)) if n == "x-apiguard-subject" => Some(v.clone()),
                    _ => None,
                })
                .unwrap_or_default())
        })
    }
}

/// One VM's world: its guard and flows, the proxy's shared store, the events.
struct Vm {
    guard: Guard,
    flows: Flows,
    store: Rc<MemoryStore>,
    events: RecordedEvents,
    host: FakeHost,
    now_ms: i64,
}

fn policy(wait_ms: u64) -> Rc<Policy> {
    let json = serde_json::json!({
        "credentials": "jwt",
        "jwt": {"providers": [{"issuer": ISS, "audiences": ["api"],
            "remote_jwks": {"cluster": "idp", "path": "/jwks", "refresh_interval_seconds": 300,
                            "min_refetch_interval_seconds": 30, "timeout_ms": 1000,
                            "unknown_kid_wait_ms": wait_ms}}]},
    });
    Rc::new(Policy::from_json(json.to_string().as_bytes()).unwrap())
}

impl Vm {
    fn new(store: Rc<MemoryStore>, vm_id: u64) -> Self {
        let mut guard = Guard::new(policy(2000), &KeySpace::new("apiguard"), vm_id);
        guard.create_shared_keys(store.as_ref()).unwrap();
        Self {
            guard,
            flows: Flows::default(),
            store,
            events: RecordedEvents::default(),
            host: FakeHost::default(),
            now_ms: NOW_MS,
        }
    }

    fn request(&mut self, context: u32, token: &str) -> Action {
        self.host.current = context;
        let facts = facts(token);
        let mut env = Env {
            now_ms: self.now_ms,
            store: self.store.as_ref(),
            events: &mut self.events,
        };
        self.flows
            .on_request(context, facts, &mut self.guard, &mut env, &mut self.host)
    }

    fn reply(&mut self, context: u32, token: u32, reply: CallReply) {
        self.host.current = context;
        let mut env = Env {
            now_ms: self.now_ms,
            store: self.store.as_ref(),
            events: &mut self.events,
        };
        self.flows.on_call_reply(
            context,
            token,
            &reply,
            &mut self.guard,
            &mut env,
            &mut self.host,
        );
    }

    fn tick(&mut self) {
        self.host.current = ROOT;
        let mut env = Env {
            now_ms: self.now_ms,
            store: self.store.as_ref(),
            events: &mut self.events,
        };
        self.flows
            .on_tick(ROOT, &mut self.guard, &mut env, &mut self.host);
    }

    fn done(&mut self, context: u32) {
        self.host.gone.insert(context);
        let mut env = Env {
            now_ms: self.now_ms,
            store: self.store.as_ref(),
            events: &mut self.events,
        };
        self.flows.on_done(context, &mut self.guard, &mut env);
    }

    fn dispatched(&self) -> Vec<(u32, u32)> {
        self.host
            .ops
            .iter()
            .filter_map(|(c, op)| match op {
                Op::Dispatch(token, _) => Some((*c, *token)),
                _ => None,
            })
            .collect()
    }
}

fn facts(token: &str) -> RequestFacts {
    TestRequest::get("/v1")
        .set_header("authorization", &format!("Bearer {token}"))
        .build()
}

fn token(kid: &str, sub: &str) -> String {
    let now = NOW_MS / 1000;
    let claims =
        serde_json::json!({"iss": ISS, "aud": "api", "sub": sub, "iat": now, "exp": now + 300});
    mint(Alg::Es256, Some(kid), &claims)
}

fn jwks(kid: &str) -> CallReply {
    let mut jwk = ec_public_jwk();
    jwk["kid"] = serde_json::json!(kid);
    CallReply::Answered {
        status: 200,
        headers: vec![],
        body: serde_json::json!({"keys": [jwk]}).to_string().into_bytes(),
    }
}

const A: u32 = 10;
const B: u32 = 11;
const C: u32 = 12;

#[test]
fn requests_wait_for_one_fetch_and_all_go_on_with_its_keys() {
    let mut vm = Vm::new(Rc::default(), 1);
    assert_eq!(vm.request(A, &token("k1", "alice")), Action::Pause);
    assert_eq!(vm.request(B, &token("k1", "bob")), Action::Pause);
    // One call, made from the first waiting request's own context.
    assert_eq!(vm.dispatched(), [(A, 1)]);
    assert_eq!(vm.flows.waiting(), 2);
    let fetches = |vm: &Vm| {
        vm.events
            .0
            .iter()
            .filter(|e| **e == Event::JwksFetchStarted)
            .count()
    };
    assert_eq!(fetches(&vm), 1);
    vm.reply(A, 1, jwks("k1"));
    assert_eq!(vm.host.outcome(A), Some(Ok("alice".into())));
    assert_eq!(vm.host.outcome(B), Some(Ok("bob".into())));
    assert_eq!(vm.flows.waiting(), 0);
    assert_eq!(vm.host.current, A, "back on the context the answer came to");
    // Both responses get HSTS (they came over TLS), once.
    let hsts = |h: Vec<(String, String)>| h.iter().any(|(n, _)| n == "strict-transport-security");
    assert!(hsts(vm.flows.take_response_headers(B)));
    assert!(vm.flows.take_response_headers(B).is_empty());
    // The keys are loaded: the next request is decided at once.
    assert_eq!(vm.request(C, &token("k1", "carol")), Action::Continue);
    assert!(vm.events.0.contains(&Event::WaitEnded { timed_out: false }));
}

#[test]
fn a_failed_fetch_resumes_the_waiters_with_the_refusal() {
    let mut vm = Vm::new(Rc::default(), 1);
    vm.request(A, &token("k1", "alice"));
    vm.request(B, &token("k1", "bob"));
    let failed = CallReply::Answered {
        status: 503,
        headers: vec![],
        body: vec![],
    };
    vm.reply(A, 1, failed);
    assert_eq!(vm.host.outcome(A), Some(Err("no_verification_key")));
    assert_eq!(vm.host.outcome(B), Some(Err("no_verification_key")));
    assert!(vm
        .events
        .0
        .iter()
        .any(|e| matches!(e, Event::JwksRejected { .. })));
}

#[test]
fn a_call_that_cannot_start_is_decided_at_once() {
    let mut vm = Vm::new(Rc::default(), 1);
    vm.host.refuse_calls = true;
    assert_eq!(vm.request(A, &token("k1", "alice")), Action::Pause);
    assert_eq!(vm.host.outcome(A), Some(Err("no_verification_key")));
    assert_eq!(vm.flows.waiting(), 0);
}

#[test]
fn a_call_in_flight_is_known_by_its_topic_until_it_is_answered() {
    let mut vm = Vm::new(Rc::default(), 1);
    vm.request(A, &token("k1", "alice"));
    let topic = vm.flows.call_topic(1);
    assert_eq!(topic, Some(Topic::JwksKeys { provider: 0 }));
    // A JWKS answer is read up to the JWKS bound, whatever else is configured.
    assert_eq!(vm.guard.max_answer_bytes(topic), 1024 * 1024);
    vm.reply(A, 1, CallReply::Failed(CallFailure::NoResponse));
    assert_eq!(vm.flows.call_topic(1), None);
}

#[test]
fn a_call_timeout_resumes_the_waiters_as_timed_out() {
    let mut vm = Vm::new(Rc::default(), 1);
    vm.request(A, &token("k1", "alice"));
    vm.reply(A, 1, CallReply::Failed(CallFailure::NoResponse));
    assert_eq!(vm.host.outcome(A), Some(Err("no_verification_key")));
    assert!(vm.events.0.contains(&Event::WaitEnded { timed_out: true }));
}

#[test]
fn a_request_waiting_for_another_vm_goes_on_when_that_vm_publishes() {
    let store = Rc::new(MemoryStore::default());
    let mut vm = Vm::new(Rc::clone(&store), 1);
    // Another VM holds the lease: this one must not fetch too.
    let feed = Feed::new(&KeySpace::new("apiguard"), &jwks_feed_name(&vm));
    let timing = FeedTiming {
        refresh_ms: 300_000,
        min_refetch_ms: 30_000,
        lease_ms: 3_000,
        sticky_ms: 0,
    };
    let lease = feed
        .try_lease(
            store.as_ref(),
            OTHER_VM,
            FetchReason::Scheduled,
            timing,
            NOW_MS,
        )
        .unwrap()
        .unwrap();
    assert_eq!(vm.request(A, &token("k1", "alice")), Action::Pause);
    assert!(vm.dispatched().is_empty());
    vm.now_ms += 100;
    vm.tick();
    assert_eq!(vm.host.outcome(A), None, "still under way");
    let CallReply::Answered { body, .. } = jwks("k1") else {
        unreachable!()
    };
    feed.publish(store.as_ref(), lease, &body, timing, NOW_MS + 150)
        .unwrap();
    vm.now_ms += 100;
    vm.tick();
    assert_eq!(vm.host.outcome(A), Some(Ok("alice".into())));
}

#[test]
fn a_request_whose_time_is_up_goes_on_with_the_answer_of_today() {
    let store = Rc::new(MemoryStore::default());
    let mut vm = Vm::new(Rc::clone(&store), 1);
    let feed = Feed::new(&KeySpace::new("apiguard"), &jwks_feed_name(&vm));
    let timing = FeedTiming {
        refresh_ms: 300_000,
        min_refetch_ms: 30_000,
        lease_ms: 60_000,
        sticky_ms: 0,
    };
    feed.try_lease(
        store.as_ref(),
        OTHER_VM,
        FetchReason::Scheduled,
        timing,
        NOW_MS,
    )
    .unwrap()
    .unwrap();
    vm.request(A, &token("k1", "alice"));
    vm.now_ms += 1999;
    vm.tick();
    assert_eq!(vm.host.outcome(A), None);
    vm.now_ms += 1;
    vm.tick();
    assert_eq!(vm.host.outcome(A), Some(Err("no_verification_key")));
    assert!(vm.events.0.contains(&Event::WaitEnded { timed_out: true }));
}

#[test]
fn when_the_caller_goes_away_the_root_fetches_for_those_still_waiting() {
    let mut vm = Vm::new(Rc::default(), 1);
    vm.request(A, &token("k1", "alice"));
    vm.request(B, &token("k1", "bob"));
    vm.done(A);
    vm.tick();
    assert_eq!(vm.dispatched(), [(A, 1), (ROOT, 2)]);
    // The cancelled call's late answer (if Envoy delivered one) changes nothing.
    vm.reply(A, 1, jwks("k1"));
    assert_eq!(vm.host.outcome(B), None);
    vm.reply(ROOT, 2, jwks("k1"));
    assert_eq!(vm.host.outcome(B), Some(Ok("bob".into())));
    assert_eq!(
        vm.host.outcome(A),
        None,
        "nothing is done for a request that is gone"
    );
}

#[test]
fn when_the_only_waiter_goes_away_the_lease_is_released() {
    let store = Rc::new(MemoryStore::default());
    let mut vm = Vm::new(Rc::clone(&store), 1);
    vm.request(A, &token("k1", "alice"));
    vm.done(A);
    let feed = Feed::new(&KeySpace::new("apiguard"), &jwks_feed_name(&vm));
    assert!(!feed.state(store.as_ref()).unwrap().fetching(vm.now_ms));
    vm.tick();
    assert_eq!(
        vm.dispatched(),
        [(A, 1)],
        "no fetch before the retry interval"
    );
}

#[test]
fn a_token_refused_for_its_claims_never_waits() {
    let mut vm = Vm::new(Rc::default(), 1);
    let now = NOW_MS / 1000;
    let expired = mint(
        Alg::Es256,
        Some("k1"),
        &serde_json::json!({"iss": ISS, "aud": "api", "sub": "x", "iat": now - 900, "exp": now - 600}),
    );
    assert_eq!(vm.request(A, &expired), Action::Pause);
    assert_eq!(vm.host.outcome(A), Some(Err("token_expired")));
    assert!(vm.dispatched().is_empty());
}

#[test]
fn the_tick_fetches_once_per_proxy_and_every_vm_loads_the_keys() {
    let store = Rc::new(MemoryStore::default());
    let mut first = Vm::new(Rc::clone(&store), 1);
    let mut second = Vm::new(Rc::clone(&store), 2);
    first.tick();
    second.tick();
    assert_eq!(first.dispatched(), [(ROOT, 1)]);
    assert!(second.dispatched().is_empty(), "the lease is taken");
    first.reply(ROOT, 1, jwks("k1"));
    second.now_ms += 1000;
    second.tick();
    assert_eq!(second.request(A, &token("k1", "alice")), Action::Continue);
    assert!(second
        .events
        .0
        .iter()
        .any(|e| matches!(e, Event::JwksLoaded { version: 1, .. })));
}

fn jwks_feed_name(vm: &Vm) -> String {
    let jwt = vm.guard.policy().jwt.as_ref().unwrap();
    crate::jwt::jwks_feed_name(jwt.providers[0].remote.as_ref().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Requests held for their own call to the rate-limit service (global_rate_limit).

fn global_policy() -> Rc<Policy> {
    let entry = |seed: u8, consumer: &str| {
        serde_json::json!({"sha256": crate::secret::to_hex(&crate::api_key::digest(
            &crate::api_key::test_support::key(seed))), "consumer": consumer})
    };
    let json = serde_json::json!({
        "credentials": "either",
        "api_keys": {"keys": [entry(1, "alice"), entry(2, "bob"), entry(3, "carol")]},
        "jwt": {"providers": [{"issuer": ISS, "audiences": ["api"],
            "remote_jwks": {"cluster": "idp", "path": "/jwks", "timeout_ms": 1000,
                            "unknown_kid_wait_ms": 2000}}]},
        "global_rate_limit": {"cluster": "ratelimit", "domain": "apiguard", "timeout_ms": 50,
                              "descriptors": [["consumer"]]},
    });
    Rc::new(Policy::from_json(json.to_string().as_bytes()).unwrap())
}

fn ok_message() -> CallReply {
    // RateLimitResponse{overall_code: OK}
    CallReply::Message(vec![0x08, 0x01])
}

fn over_limit_message() -> CallReply {
    // RateLimitResponse{overall_code: OVER_LIMIT}
    CallReply::Message(vec![0x08, 0x02])
}

impl Vm {
    fn global() -> Self {
        let store: Rc<MemoryStore> = Rc::default();
        let mut guard = Guard::new(global_policy(), &KeySpace::new("apiguard"), 1);
        guard.create_shared_keys(store.as_ref()).unwrap();
        Self {
            guard,
            flows: Flows::default(),
            store,
            events: RecordedEvents::default(),
            host: FakeHost::default(),
            now_ms: NOW_MS,
        }
    }

    fn keyed(&mut self, context: u32, seed: u8) -> Action {
        self.host.current = context;
        let facts = TestRequest::get("/v1")
            .set_header("x-api-key", &crate::api_key::test_support::key(seed))
            .build();
        let mut env = Env {
            now_ms: self.now_ms,
            store: self.store.as_ref(),
            events: &mut self.events,
        };
        self.flows
            .on_request(context, facts, &mut self.guard, &mut env, &mut self.host)
    }

    fn consumer_of(&self, context: u32) -> Option<String> {
        self.host.of(context).iter().find_map(|op| match op {
            Op::Header(n, Some(v)) if n == "x-apiguard-consumer" => Some(v.clone()),
            _ => None,
        })
    }
}

const RLS: &str = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

#[test]
fn each_request_waits_on_its_own_call_and_is_finished_by_its_answer() {
    let mut vm = Vm::global();
    assert_eq!(vm.keyed(A, 1), Action::Pause);
    assert_eq!(vm.keyed(B, 2), Action::Pause);
    assert_eq!(vm.keyed(C, 3), Action::Pause);
    // Three calls at once, each from its own request's context.
    assert_eq!(vm.dispatched(), [(A, 1), (B, 2), (C, 3)]);
    assert!(vm.host.ops.iter().all(|(_, op)| match op {
        Op::Dispatch(_, what) => what == RLS,
        _ => true,
    }));
    assert_eq!(vm.flows.waiting(), 3);
    // Answers in any order finish only their own request.
    vm.reply(B, 2, over_limit_message());
    assert_eq!(vm.host.outcome(B), Some(Err("rate_limited")));
    assert_eq!((vm.host.outcome(A), vm.host.outcome(C)), (None, None));
    vm.reply(C, 3, ok_message());
    assert!(matches!(vm.host.outcome(C), Some(Ok(_))));
    assert_eq!(vm.consumer_of(C).as_deref(), Some("carol"));
    assert_eq!(vm.host.outcome(A), None);
    vm.reply(A, 1, CallReply::Failed(CallFailure::NoResponse));
    assert_eq!(vm.host.outcome(A), Some(Err("rate_limit_unavailable")));
    assert_eq!(vm.flows.waiting(), 0);
    assert!(vm.events.0.contains(&Event::WaitEnded { timed_out: true }));
}

#[test]
fn a_held_request_whose_time_is_up_is_finished_without_the_answer() {
    let mut vm = Vm::global();
    vm.keyed(A, 1);
    vm.now_ms += 49;
    vm.tick();
    assert_eq!(vm.host.outcome(A), None);
    vm.now_ms += 1;
    vm.tick();
    assert_eq!(vm.host.outcome(A), Some(Err("rate_limit_unavailable")));
    // The late answer changes nothing.
    vm.reply(A, 1, ok_message());
    assert_eq!(vm.host.outcome(A), Some(Err("rate_limit_unavailable")));
    assert_eq!(
        vm.host
            .of(A)
            .iter()
            .filter(|op| matches!(op, Op::Reply(..)))
            .count(),
        1
    );
}

#[test]
fn a_call_to_the_service_that_cannot_start_follows_failure_mode_at_once() {
    let mut vm = Vm::global();
    vm.host.refuse_calls = true;
    assert_eq!(vm.keyed(A, 1), Action::Pause);
    assert_eq!(vm.host.outcome(A), Some(Err("rate_limit_unavailable")));
    assert_eq!(vm.flows.waiting(), 0);
}

#[test]
fn a_held_request_that_goes_away_leaves_the_others_alone() {
    let mut vm = Vm::global();
    vm.keyed(A, 1);
    vm.keyed(B, 2);
    vm.done(A);
    vm.tick();
    let to_the_service = vm
        .host
        .ops
        .iter()
        .filter(|(_, op)| matches!(op, Op::Dispatch(_, what) if what == RLS))
        .count();
    assert_eq!(to_the_service, 2, "nothing is started again");
    vm.reply(B, 2, ok_message());
    assert!(matches!(vm.host.outcome(B), Some(Ok(_))));
    assert_eq!(vm.host.outcome(A), None);
}

#[test]
fn a_request_that_waited_for_keys_then_waits_for_the_service() {
    let mut vm = Vm::global();
    // A token whose key is not known yet: the request waits for the JWKS fetch first.
    assert_eq!(vm.request(A, &token("k1", "dora")), Action::Pause);
    assert_eq!(vm.dispatched(), [(A, 1)]);
    vm.reply(A, 1, jwks("k1"));
    // Decided again with the keys: now it asks the rate-limit service, still paused.
    assert_eq!(vm.dispatched(), [(A, 1), (A, 2)]);
    assert_eq!(vm.host.outcome(A), None);
    vm.reply(A, 2, ok_message());
    assert_eq!(vm.host.outcome(A), Some(Ok("dora".into())));
    assert_eq!(
        vm.host.of(A).iter().filter(|op| **op == Op::Resume).count(),
        1
    );
}

#[test]
fn a_request_resumed_by_another_requests_answer_asks_from_the_root() {
    let mut vm = Vm::global();
    // Both wait for the fetch that A starts (the key k1 is not known yet).
    assert_eq!(vm.request(A, &token("k1", "dora")), Action::Pause);
    assert_eq!(vm.request(B, &token("k1", "erin")), Action::Pause);
    let fetch = vm.dispatched()[0];
    assert_eq!(fetch.0, A);
    // The answer comes to A: A asks the service from its own callback; B's call would be
    // answered to A, which may be gone by then: the root starts it on its next tick.
    vm.reply(A, fetch.1, jwks("k1"));
    let rls_calls = |vm: &Vm| -> Vec<(u32, u32)> {
        vm.host
            .ops
            .iter()
            .filter_map(|(c, op)| match op {
                Op::Dispatch(t, what) if what == RLS => Some((*c, *t)),
                _ => None,
            })
            .collect()
    };
    let first = rls_calls(&vm);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, A);
    assert_eq!(vm.host.outcome(B), None);
    vm.reply(A, first[0].1, over_limit_message());
    assert_eq!(vm.host.outcome(A), Some(Err("rate_limited")));
    // Later than B's timeout_ms (50): its time counts from the call, not from the wait.
    vm.now_ms += 80;
    vm.tick();
    let calls = rls_calls(&vm);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, ROOT);
    assert_eq!(
        vm.host.outcome(B),
        None,
        "not timed out while its call was not made"
    );
    vm.reply(ROOT, calls[1].1, ok_message());
    assert_eq!(vm.host.outcome(B), Some(Ok("erin".into())));
}

#[test]
fn each_decided_request_keeps_its_outcome_for_its_audit_record_once() {
    let mut vm = Vm::new(Rc::default(), 1);
    // Waits for the keys: no outcome yet.
    vm.request(A, &token("k1", "alice"));
    assert_eq!(vm.flows.take_outcome(A), None);
    vm.reply(A, 1, jwks("k1"));
    let outcome = vm.flows.take_outcome(A).unwrap();
    assert_eq!(outcome.verdict, crate::audit::Verdict::Allowed);
    assert_eq!(outcome.subject.as_deref(), Some("alice"));
    assert_eq!(outcome.issuer.as_deref(), Some(ISS));
    assert_eq!(vm.flows.take_outcome(A), None, "taken once");
    // Decided at once, refused.
    vm.request(B, "not-a-token");
    let refused = vm.flows.take_outcome(B).unwrap();
    assert_eq!(refused.verdict, crate::audit::Verdict::Denied);
    assert!(refused.code.is_some());
}

#[test]
fn without_an_audit_log_no_outcome_is_kept() {
    let mut vm = Vm::new(Rc::default(), 1);
    vm.flows = Flows::new(false);
    vm.request(B, "not-a-token");
    assert!(matches!(vm.host.outcome(B), Some(Err(_))), "still refused");
    assert_eq!(vm.flows.take_outcome(B), None);
}

#[test]
fn a_request_is_waiting_from_its_pause_until_its_decision() {
    let mut vm = Vm::new(Rc::default(), 1);
    vm.request(A, &token("k1", "alice"));
    assert!(vm.flows.is_waiting(A), "waits for the keys");
    assert!(!vm.flows.is_waiting(B), "never seen");
    vm.reply(A, 1, jwks("k1"));
    assert!(!vm.flows.is_waiting(A), "decided");
    assert_eq!(vm.host.outcome(A), Some(Ok("alice".into())));
}

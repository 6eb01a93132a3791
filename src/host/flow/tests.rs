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
        let op = Op::Dispatch(self.next_token, call.path.clone());
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
    let fetches = |vm: &Vm| vm.events.0.iter().filter(|e| **e == Event::JwksFetchStarted).count();
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

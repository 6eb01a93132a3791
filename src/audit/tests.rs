//! The audit log end to end in memory: records, chain, batches, retries, drops and gaps, and
//! the verifier on what the fake collector received.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::rc::Rc;

use serde_json::json;

use super::chain::tests::{public_key, settings};
use super::verify::{verify, FindingKind};
use super::*;
use crate::ports::fakes::{RecordedEvents, RecordingOutbound};
use crate::ports::{Call, CallFailure, CallReply, Event, HttpCall};

/// The audit log only makes HTTP calls.
fn http(call: &Call) -> &HttpCall {
    match call {
        Call::Http(call) => call,
        Call::Grpc(_) => panic!("the audit log made a gRPC call"),
    }
}

fn stamp() -> Stamp {
    Stamp {
        version: "0.1.0",
        config_digest: "cd".repeat(32),
    }
}

fn exchange(n: i64) -> Exchange {
    Exchange {
        end_ms: 1_000 + n,
        duration_ms: Some(1),
        request_id: Some(format!("r-{n}")),
        method: Some("GET".into()),
        path_and_query: Some("/v1/x".into()),
        response_status: Some(200),
        ..Exchange::default()
    }
}

fn outcome(consumer: &str) -> Outcome {
    let mut o = Outcome::new(Verdict::Allowed);
    o.consumer = Some(Rc::from(consumer));
    o
}

struct Rig {
    log: AuditLog,
    out: RecordingOutbound,
    events: RecordedEvents,
    query: QueryCredentials,
    /// Bodies the collector accepted, in order.
    collected: Vec<(String, Vec<u8>)>,
}

impl Rig {
    fn new(extra: serde_json::Value) -> Self {
        Self {
            log: AuditLog::new(settings(extra), "stream-a", stamp()),
            out: RecordingOutbound::default(),
            events: RecordedEvents::default(),
            query: QueryCredentials::new(["api_key"]),
            collected: Vec::new(),
        }
    }

    fn request(&mut self, n: i64) {
        let o = outcome("alice");
        self.log
            .record(&exchange(n), Some(&o), &self.query, &mut self.events);
    }

    fn tick(&mut self, now_ms: i64) {
        self.log.tick(now_ms, &mut self.out, &mut self.events);
    }

    /// Answers the last call: the collector takes it (`status` 200) or not.
    fn answer(&mut self, status: Option<u16>, now_ms: i64) {
        let (token, call) = self.out.calls.last().cloned().unwrap();
        let reply = match status {
            Some(status) => {
                if status == 200 {
                    let name = format!("body-{}", self.collected.len() + 1);
                    self.collected.push((name, http(&call).body.clone()));
                }
                CallReply::Answered {
                    status,
                    headers: vec![],
                    body: vec![],
                }
            }
            None => CallReply::Failed(CallFailure::NoResponse),
        };
        assert!(self.log.on_reply(token, &reply, now_ms, &mut self.events));
    }

    fn count(&self, wanted: &Event) -> usize {
        self.events.0.iter().filter(|e| *e == wanted).count()
    }
}

#[test]
fn a_full_batch_is_sent_at_the_next_tick_with_a_signed_checkpoint() {
    let mut rig = Rig::new(json!({}));
    for n in 0..3 {
        rig.request(n);
    }
    rig.tick(1_010);
    assert_eq!(rig.out.calls.len(), 1);
    let call = http(&rig.out.calls[0].1);
    assert_eq!(call.cluster, "otel-collector");
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/v1/logs")
    );
    assert_eq!(call.authority, "otel-collector");
    assert!(call
        .headers
        .contains(&("content-type".into(), "application/json".into())));
    let records = entry::records_of(&call.body).unwrap();
    assert_eq!(records.len(), 4, "three records and a checkpoint");
    // Nothing else starts while the export is under way.
    rig.request(3);
    rig.tick(5_000);
    assert_eq!(rig.out.calls.len(), 1);
    rig.answer(Some(200), 5_000);
    assert_eq!(rig.count(&Event::AuditShipped { records: 3 }), 1);
    assert_eq!(rig.log.buffered(), 1);
    let summary = verify(&rig.collected, &public_key());
    assert_eq!(summary.findings, vec![]);
    assert_eq!((summary.records, summary.checkpoints), (3, 1));
}

#[test]
fn a_small_batch_waits_for_its_age() {
    let mut rig = Rig::new(json!({"otlp": {"cluster": "c", "batch_max_records": 10,
        "batch_max_age_ms": 500}}));
    rig.request(0); // queued at 1000
    rig.tick(1_499);
    assert!(rig.out.calls.is_empty());
    rig.tick(1_500);
    assert_eq!(rig.out.calls.len(), 1);
    assert_eq!(
        http(&rig.out.calls[0].1).authority,
        "c",
        "the cluster when no authority"
    );
}

#[test]
fn failures_back_off_exponentially_up_to_the_bound_then_the_records_arrive() {
    let mut rig = Rig::new(json!({"otlp": {"cluster": "c", "batch_max_records": 1,
        "retry_max_backoff_ms": 1000}}));
    rig.request(0);
    let mut now = 2_000;
    rig.tick(now);
    let mut waits = Vec::new();
    for _ in 0..5 {
        rig.answer(None, now);
        let calls = rig.out.calls.len();
        let start = now;
        while rig.out.calls.len() == calls {
            now += 50;
            rig.tick(now);
        }
        waits.push(now - start);
    }
    assert_eq!(waits, vec![250, 500, 1000, 1000, 1000]);
    assert_eq!(rig.count(&Event::AuditRetried), 5);
    rig.answer(Some(503), now);
    now += 1000;
    rig.tick(now);
    rig.answer(Some(200), now);
    assert_eq!(rig.log.buffered(), 0);
    assert_eq!(verify(&rig.collected, &public_key()).findings, vec![]);
}

#[test]
fn a_refused_dispatch_is_retried_like_a_failure() {
    let mut rig = Rig::new(json!({}));
    for n in 0..3 {
        rig.request(n);
    }
    rig.out.refuse = Some(CallFailure::NotStarted);
    rig.tick(1_100);
    assert_eq!(rig.count(&Event::AuditRetried), 1);
    rig.out.refuse = None;
    rig.tick(1_200);
    assert!(rig.out.calls.is_empty(), "backing off");
    rig.tick(1_350);
    assert_eq!(rig.out.calls.len(), 1);
}

#[test]
fn drops_beyond_the_buffer_are_counted_and_declared_by_a_gap_record() {
    // batch 3, buffer 5.
    let mut rig = Rig::new(json!({}));
    for n in 0..8 {
        rig.request(n);
    }
    assert_eq!(rig.log.buffered(), 5);
    assert_eq!(rig.count(&Event::AuditDropped), 3);
    rig.tick(1_100);
    rig.answer(Some(200), 1_100);
    // Room again: the gap comes first, then new records.
    rig.request(9);
    for now in [1_200, 2_200] {
        rig.tick(now);
        rig.answer(Some(200), now);
    }
    assert_eq!(rig.log.buffered(), 0);
    let summary = verify(&rig.collected, &public_key());
    let kinds: Vec<FindingKind> = summary.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FindingKind::DeclaredGap]);
    assert!(summary.findings[0]
        .detail
        .contains("3 records dropped before seq 5"));
    assert_eq!(summary.records, 7, "five records, the gap, one more");
}

#[test]
fn a_flush_sends_young_records_at_once() {
    let mut rig = Rig::new(json!({}));
    rig.request(0);
    assert!(rig.log.flush(1_001, &mut rig.out, &mut rig.events));
    assert_eq!(rig.out.calls.len(), 1);
    rig.answer(Some(200), 1_002);
    assert!(!rig.log.flush(1_003, &mut rig.out, &mut rig.events));
    // A flush whose export cannot start leaves nothing to wait for.
    rig.request(1);
    rig.out.refuse = Some(CallFailure::NotStarted);
    assert!(!rig.log.flush(1_004, &mut rig.out, &mut rig.events));
    assert_eq!(rig.log.buffered(), 1);
}

#[test]
fn answers_to_other_calls_are_not_taken() {
    let mut rig = Rig::new(json!({}));
    let reply = CallReply::Failed(CallFailure::NoResponse);
    assert!(!rig.log.on_reply(7, &reply, 0, &mut rig.events));
}

#[test]
fn the_envoy_log_line_is_the_record() {
    let mut rig = Rig::new(json!({"envoy_log": "info"}));
    let line = rig
        .log
        .record(
            &exchange(1),
            Some(&outcome("bob")),
            &rig.query,
            &mut rig.events,
        )
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    let entry = Entry::from_json(&value).unwrap();
    assert_eq!(entry.str("apiguard.consumer"), Some("bob"));
    let mut quiet = Rig::new(json!({}));
    assert!(quiet
        .log
        .record(&exchange(1), None, &quiet.query, &mut quiet.events)
        .is_none());
}

#[test]
fn the_buffer_size_is_reported_when_it_changes() {
    let mut rig = Rig::new(json!({}));
    rig.request(0);
    rig.tick(1_001);
    rig.tick(1_002);
    assert_eq!(rig.count(&Event::AuditBuffered { records: 1 }), 1);
}

/// Collected bodies of 3 batches (3 + 3 + 2 records), all clean.
fn collected() -> Vec<(String, Vec<u8>)> {
    let mut rig = Rig::new(json!({}));
    for n in 0..8 {
        rig.request(n);
        if n % 3 == 2 || n == 7 {
            rig.log.flush(2_000 + n, &mut rig.out, &mut rig.events);
            rig.answer(Some(200), 2_000 + n);
        }
    }
    assert_eq!(rig.collected.len(), 3);
    rig.collected
}

/// Rewrites the records of body `file` with `f`.
fn edit(files: &mut [(String, Vec<u8>)], file: usize, f: impl FnOnce(&mut Vec<serde_json::Value>)) {
    let mut doc: serde_json::Value = serde_json::from_slice(&files[file].1).unwrap();
    let records = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array_mut()
        .unwrap();
    f(records);
    files[file].1 = serde_json::to_vec(&doc).unwrap();
}

fn kinds(files: &[(String, Vec<u8>)]) -> Vec<FindingKind> {
    let mut k: Vec<FindingKind> = verify(files, &public_key())
        .findings
        .iter()
        .map(|f| f.kind)
        .collect();
    k.dedup();
    k
}

#[test]
fn clean_streams_pass() {
    let summary = verify(&collected(), &public_key());
    assert_eq!(summary.findings, vec![]);
    assert_eq!(
        (summary.streams, summary.records, summary.checkpoints),
        (1, 8, 3)
    );
}

#[test]
fn a_deleted_record_is_found_where_it_was() {
    let mut files = collected();
    edit(&mut files, 1, |r| {
        r.remove(1);
    });
    let summary = verify(&files, &public_key());
    assert_eq!(summary.findings[0].kind, FindingKind::Deleted);
    assert_eq!(summary.findings[0].at, "body-2#2");
    assert!(summary.findings[0].detail.contains("seq 4..=4"));
}

#[test]
fn a_deleted_tail_is_found_by_its_checkpoint() {
    let mut files = collected();
    edit(&mut files, 2, |r| {
        r.remove(1);
    });
    // What is left of the batch is no longer vouched for either.
    assert_eq!(
        kinds(&files),
        vec![FindingKind::Deleted, FindingKind::MissingCheckpoint]
    );
    // The whole last batch with its checkpoint gone cannot be told from a batch never sent;
    // keeping its checkpoint shows it.
    let mut files = collected();
    edit(&mut files, 2, |r| {
        r.drain(0..2);
    });
    assert_eq!(kinds(&files), vec![FindingKind::Deleted]);
}

#[test]
fn a_changed_record_is_found() {
    for (file, index) in [(0, 1), (1, 2)] {
        let mut files = collected();
        edit(&mut files, file, |r| {
            r[index]["attributes"][3]["value"] = json!({"stringValue": "mallory"});
        });
        let summary = verify(&files, &public_key());
        assert_eq!(
            summary.findings[0].kind,
            FindingKind::Modified,
            "{summary:?}"
        );
    }
}

#[test]
fn swapped_records_are_found() {
    let mut files = collected();
    edit(&mut files, 0, |r| r.swap(0, 1));
    assert!(kinds(&files).contains(&FindingKind::Reordered));
}

#[test]
fn an_inserted_record_is_found() {
    let mut files = collected();
    edit(&mut files, 1, |r| {
        let mut copy = r[0].clone();
        copy["attributes"][0]["value"] = json!({"stringValue": "r-forged"});
        r.insert(1, copy);
    });
    assert!(
        kinds(&files).contains(&FindingKind::Inserted),
        "{:?}",
        kinds(&files)
    );
}

#[test]
fn an_exact_redelivery_is_not_a_finding() {
    let mut files = collected();
    let again = files[1].clone();
    files.insert(2, (String::from("again"), again.1));
    assert_eq!(verify(&files, &public_key()).findings, vec![]);
}

#[test]
fn a_forged_or_missing_checkpoint_is_found() {
    let mut files = collected();
    edit(&mut files, 1, |r| {
        let sig = r[3]["attributes"][5]["value"]["stringValue"]
            .as_str()
            .unwrap()
            .to_owned();
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        r[3]["attributes"][5]["value"] = json!({"stringValue": format!("{flipped}{}", &sig[1..])});
    });
    assert_eq!(
        kinds(&files),
        vec![
            FindingKind::MissingCheckpoint,
            FindingKind::ForgedCheckpoint
        ]
    );
    let mut files = collected();
    edit(&mut files, 0, |r| {
        r.pop();
    });
    assert_eq!(kinds(&files), vec![FindingKind::MissingCheckpoint]);
}

#[test]
fn a_rewritten_chain_fails_its_signed_checkpoint() {
    // Records re-linked after an edit, so the chain holds: the signature shows it.
    let mut files = collected();
    edit(&mut files, 2, |r| {
        let mut e = Entry::from_json(&r[1]).unwrap();
        e.attributes.retain(|(k, _)| k != "apiguard.consumer");
        e.push_str("apiguard.consumer", "mallory");
        r[1] = e.to_json();
    });
    assert_eq!(
        kinds(&files),
        vec![FindingKind::Modified, FindingKind::MissingCheckpoint]
    );
}

#[test]
fn garbage_is_reported_not_skipped() {
    let files = vec![("junk".to_owned(), b"{\"x\":1}".to_vec())];
    assert_eq!(kinds(&files), vec![FindingKind::Unreadable]);
}

#[test]
fn the_public_key_comes_from_a_jwk() {
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": super::chain::tests::X});
    assert!(verify::public_key_from_jwk(jwk.to_string().as_bytes()).is_ok());
    let rsa = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
    assert!(verify::public_key_from_jwk(rsa.to_string().as_bytes()).is_err());
}

/// The outcome the pipeline leaves for the record of `req` under `config`.
fn outcome_of(config: serde_json::Value, req: &crate::request::RequestFacts) -> Option<Outcome> {
    let policy = crate::policy::Policy::from_json(config.to_string().as_bytes()).unwrap();
    let mut guard =
        crate::pipeline::Guard::new(Rc::new(policy), &crate::ports::KeySpace::new("apiguard"), 1);
    let store = crate::ports::fakes::MemoryStore::default();
    let mut events = RecordedEvents::default();
    let mut env = crate::pipeline::Env {
        now_ms: 1_800_000_000_000,
        store: &store,
        events: &mut events,
    };
    guard.decide(req, &mut env);
    guard.take_outcome()
}

#[test]
fn report_only_and_redirects_are_recorded_as_such() {
    use crate::request::test_support::TestRequest;
    let req = TestRequest::get("/x")
        .set_header("x-api-key", "agk_not-a-key")
        .build();
    let keys = json!({"keys": []});
    let shadow = outcome_of(
        json!({"api_keys": keys, "https": {"required": false}, "report_only": true}),
        &req,
    )
    .unwrap();
    assert_eq!(shadow.verdict, Verdict::ReportOnly);
    assert!(shadow.code.is_some());
    let redirected = outcome_of(
        json!({"api_keys": keys, "https": {"required": true, "redirect": true}}),
        &TestRequest::get("/x").tls(false).build(),
    )
    .unwrap();
    assert_eq!(redirected.verdict, Verdict::Redirected);
    assert_eq!(redirected.code, Some("https_redirect"));
}

#[test]
fn a_stopped_plugin_exports_batch_after_batch_and_gives_up_after_three_failures() {
    let mut stopping = Stopping::new(1200);
    assert!(stopping.after_export(688), "a batch went out");
    assert!(stopping.after_export(176));
    assert!(!stopping.after_export(0), "all out");
    let mut stopping = Stopping::new(10);
    assert!(stopping.after_export(10));
    assert!(stopping.after_export(5), "a success in between");
    assert!(stopping.after_export(5));
    assert!(!stopping.after_export(5), "the third failure ends the wait");
}

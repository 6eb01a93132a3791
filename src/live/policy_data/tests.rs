#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::api_key::test_support::key;
use crate::api_key::{digest, KeyStore};
use crate::ports::fakes::{MemoryStore, RecordedEvents};
use crate::ports::HttpCall;
use crate::secret::to_hex;

const NOW: i64 = 1_800_000_000_000;
const VM_A: u64 = 0xA;
const VM_B: u64 = 0xB;
const REFRESH: i64 = 10_000;

fn source(max_stale_ms: i64) -> DataSource {
    DataSource {
        cluster: "apiguard-control".into(),
        path: "/v1/policy.json".into(),
        authority: "control.example.com".into(),
        refresh_ms: REFRESH,
        timeout_ms: 5000,
        max_document_bytes: 1 << 20,
        max_stale_ms,
    }
}

fn vm(max_stale_ms: i64) -> PolicyData {
    PolicyData::new(source(max_stale_ms), &KeySpace::new("apiguard"), [0; 32])
}

fn rules() -> DocumentRules<'static> {
    DocumentRules {
        max_bytes: 1 << 20,
        config_keys: None,
        plans: crate::key_entry::KnownPlans::Configured(None),
    }
}

/// A document of `(key seed, consumer, revoked)` entries.
fn doc(version: &str, keys: &[(u8, &str, bool)]) -> Vec<u8> {
    let entries: Vec<_> = keys
        .iter()
        .map(|(seed, consumer, revoked)| {
            serde_json::json!({"sha256": to_hex(&digest(&key(*seed))), "consumer": consumer, "revoked": revoked})
        })
        .collect();
    serde_json::json!({"version": version, "api_keys": entries})
        .to_string()
        .into_bytes()
}

fn ok(body: Vec<u8>, etag: &str) -> CallReply {
    CallReply::Answered {
        status: 200,
        headers: vec![("etag".into(), etag.into())],
        body,
    }
}

fn not_modified() -> CallReply {
    CallReply::Answered {
        status: 304,
        headers: vec![],
        body: vec![],
    }
}

/// `vm` takes the lease at `now` and gets `reply`.
fn fetch(
    vm: &mut PolicyData,
    id: u64,
    store: &MemoryStore,
    now: i64,
    reply: CallReply,
) -> (HttpCall, RecordedEvents) {
    let Call::Http(call) = vm
        .tick(store, id, now, &mut RecordedEvents::default())
        .unwrap()
        .expect("the fetch is due")
    else {
        panic!("the document is fetched over HTTP")
    };
    let mut events = RecordedEvents::default();
    vm.on_reply(&reply, &rules(), store, now, &mut events)
        .unwrap();
    (call, events)
}

fn consumer_of(
    vm: &mut PolicyData,
    store: &MemoryStore,
    seed: u8,
    now: i64,
) -> Result<Option<(String, bool)>, DataUnavailable> {
    Ok(vm
        .lookup(&digest(&key(seed)), store, now)?
        .map(|e| (e.consumer, e.revoked)))
}

fn found(consumer: &str, revoked: bool) -> Result<Option<(String, bool)>, DataUnavailable> {
    Ok(Some((consumer.to_owned(), revoked)))
}

#[test]
fn nothing_is_served_before_the_first_version_then_every_vm_sees_it() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (vm(0), vm(0));
    a.create(&store).unwrap();
    assert_eq!(
        consumer_of(&mut b, &store, 1, NOW),
        Err(DataUnavailable::NotLoaded)
    );
    let Some(Call::Http(call)) = a
        .tick(&store, VM_A, NOW, &mut RecordedEvents::default())
        .unwrap()
    else {
        panic!("the first tick fetches over HTTP")
    };
    assert_eq!(
        (
            call.cluster.as_str(),
            call.path.as_str(),
            call.authority.as_str()
        ),
        ("apiguard-control", "/v1/policy.json", "control.example.com")
    );
    assert!(!call.headers.iter().any(|(n, _)| n == "if-none-match"));
    // One fetch per proxy: B finds the lease taken.
    assert_eq!(
        b.tick(&store, VM_B, NOW, &mut RecordedEvents::default())
            .unwrap(),
        None
    );
    let mut events = RecordedEvents::default();
    let body = doc("v1", &[(1, "alice", false), (2, "bob", false)]);
    a.on_reply(&ok(body, "\"e1\""), &rules(), &store, NOW + 5, &mut events)
        .unwrap();
    assert!(matches!(
        &events.0[..],
        [Event::DataLoaded { document_version, version: 1, api_keys: 2, .. }] if document_version == "v1"
    ));
    // B reads the new version without a tick (nothing was loaded at its last one).
    assert_eq!(consumer_of(&mut b, &store, 2, NOW + 6), found("bob", false));
    assert_eq!(
        consumer_of(&mut a, &store, 1, NOW + 6),
        found("alice", false)
    );
    assert_eq!(consumer_of(&mut a, &store, 3, NOW + 6), Ok(None));
}

#[test]
fn refreshes_are_conditional_and_a_304_costs_no_validation() {
    let store = MemoryStore::default();
    let mut a = vm(0);
    let v1 = doc("v1", &[(1, "alice", false)]);
    fetch(&mut a, VM_A, &store, NOW, ok(v1.clone(), "\"e1\""));
    assert_eq!(
        a.tick(
            &store,
            VM_A,
            NOW + REFRESH - 1,
            &mut RecordedEvents::default()
        )
        .unwrap(),
        None,
        "not due yet"
    );
    let (call, events) = fetch(&mut a, VM_A, &store, NOW + REFRESH + 10, not_modified());
    assert!(call
        .headers
        .contains(&("if-none-match".into(), "\"e1\"".into())));
    assert_eq!(events.0, vec![Event::DataNotModified]);
    let state = a.feed.state(&store).unwrap();
    assert_eq!((state.version, state.last_ok_ms), (1, NOW + REFRESH + 10));
    // The same bytes from an endpoint without ETags: confirmed, not re-validated or re-written.
    let (_, events) = fetch(&mut a, VM_A, &store, NOW + 2 * REFRESH + 20, ok(v1, ""));
    assert_eq!(events.0, vec![Event::DataNotModified]);
    assert_eq!(a.feed.state(&store).unwrap().version, 1);
}

#[test]
fn a_revoked_or_removed_key_is_seen_by_every_vm_at_the_next_version() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (vm(0), vm(0));
    let v1 = doc("v1", &[(1, "alice", false), (2, "bob", false)]);
    fetch(&mut a, VM_A, &store, NOW, ok(v1, "\"e1\""));
    assert_eq!(
        consumer_of(&mut b, &store, 1, NOW + 10),
        found("alice", false)
    );
    let later = NOW + REFRESH + 10;
    let v2 = doc("v2", &[(1, "alice", true)]);
    fetch(&mut a, VM_A, &store, later, ok(v2, "\"e2\""));
    b.tick(&store, VM_B, later + 100, &mut RecordedEvents::default())
        .unwrap();
    assert_eq!(
        consumer_of(&mut b, &store, 1, later + 100),
        found("alice", true)
    );
    assert_eq!(consumer_of(&mut b, &store, 2, later + 100), Ok(None));
}

#[test]
fn a_reader_whose_slot_was_rewritten_looks_at_the_state_again() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (vm(0), vm(0));
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(doc("v1", &[(1, "alice", false)]), ""),
    );
    assert_eq!(consumer_of(&mut b, &store, 1, NOW), found("alice", false));
    // Two more versions while B does not tick: version 3 rewrote B's slot.
    let v2 = doc("v2", &[(1, "alice2", false)]);
    fetch(&mut a, VM_A, &store, NOW + REFRESH, ok(v2, ""));
    let v3 = doc("v3", &[(1, "alice3", false)]);
    fetch(&mut a, VM_A, &store, NOW + 2 * REFRESH, ok(v3, ""));
    assert_eq!(
        consumer_of(&mut b, &store, 1, NOW + 2 * REFRESH),
        found("alice3", false)
    );
    assert_eq!(b.version(), 3);
}

#[test]
fn storage_is_reused_across_versions() {
    let store = MemoryStore::default();
    let mut a = vm(0);
    let many: Vec<(u8, &str, bool)> = (0..100).map(|s| (s, "c", false)).collect();
    fetch(&mut a, VM_A, &store, NOW, ok(doc("v1", &many), ""));
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW + REFRESH,
        ok(doc("v2", &many[..50]), ""),
    );
    let keys_after_two = store.keys().len();
    for n in 3..8usize {
        let body = doc(&format!("v{n}"), &many[..(n * 10)]);
        let at = NOW + i64::try_from(n).unwrap() * REFRESH;
        fetch(&mut a, VM_A, &store, at, ok(body, ""));
    }
    assert_eq!(store.keys().len(), keys_after_two, "no key per version");
    assert_eq!(
        consumer_of(&mut a, &store, 69, NOW + 8 * REFRESH),
        found("c", false)
    );
    assert_eq!(consumer_of(&mut a, &store, 70, NOW + 8 * REFRESH), Ok(None));
}

#[test]
fn a_refused_document_leaves_the_version_in_force() {
    let store = MemoryStore::default();
    let mut a = vm(0);
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(doc("v1", &[(1, "alice", false)]), ""),
    );
    let bad = br#"{"version": "v2", "api_keys": [{"sha256": "nothex", "consumer": "x"}]}"#;
    let (_, events) = fetch(&mut a, VM_A, &store, NOW + REFRESH, ok(bad.to_vec(), ""));
    assert!(matches!(
        &events.0[..],
        [Event::DataRefused { path, in_force: 1, .. }] if path == "api_keys[0].sha256"
    ));
    assert_eq!(
        consumer_of(&mut a, &store, 1, NOW + REFRESH + 10),
        found("alice", false)
    );
    // A body over the limit is refused the same way (the host did not even read it).
    let too_large = CallReply::Failed(CallFailure::TooLarge { bytes: 1 << 30 });
    let (_, events) = fetch(&mut a, VM_A, &store, NOW + 2 * REFRESH, too_large);
    assert!(matches!(
        &events.0[..],
        [Event::DataRefused { in_force: 1, .. }]
    ));
}

#[test]
fn a_document_that_repeats_a_configured_digest_is_refused() {
    let store = MemoryStore::default();
    let mut configured = KeyStore::default();
    let record = crate::api_key::KeyRecord::new(digest(&key(1)), "cfg".into(), None, false);
    configured.insert(record).unwrap();
    let rules = DocumentRules {
        config_keys: Some(&configured),
        ..rules()
    };
    let mut a = vm(0);
    a.tick(&store, VM_A, NOW, &mut RecordedEvents::default())
        .unwrap()
        .unwrap();
    let mut events = RecordedEvents::default();
    let body = doc("v1", &[(2, "b", false), (1, "a", false)]);
    a.on_reply(&ok(body, ""), &rules, &store, NOW, &mut events)
        .unwrap();
    assert!(matches!(
        &events.0[..],
        [Event::DataRefused { path, in_force: 0, .. }] if path == "api_keys[1].sha256"
    ));
    assert_eq!(
        consumer_of(&mut a, &store, 2, NOW),
        Err(DataUnavailable::NotLoaded)
    );
}

#[test]
fn failures_keep_the_last_version_until_max_stale_then_fail_closed() {
    let store = MemoryStore::default();
    let (mut a, mut forever) = (vm(30_000), vm(0));
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(doc("v1", &[(1, "alice", false)]), ""),
    );
    let timeout = CallReply::Failed(CallFailure::NoResponse);
    let (_, events) = fetch(&mut a, VM_A, &store, NOW + REFRESH, timeout);
    assert!(matches!(&events.0[..], [Event::DataFetchFailed { .. }]));
    let error = CallReply::Answered {
        status: 500,
        headers: vec![],
        body: vec![],
    };
    let (_, events) = fetch(&mut a, VM_A, &store, NOW + 2 * REFRESH, error);
    assert!(matches!(
        &events.0[..],
        [Event::DataFetchFailed { reason }] if reason.contains("500")
    ));
    // The endpoint has failed since the refresh after the last confirmation: 30 s from there.
    assert_eq!(
        consumer_of(&mut a, &store, 1, NOW + REFRESH + 30_000),
        found("alice", false)
    );
    assert_eq!(
        consumer_of(&mut a, &store, 1, NOW + REFRESH + 30_001),
        Err(DataUnavailable::Stale)
    );
    // max_stale_seconds 0: the last good version serves indefinitely.
    forever
        .tick(&store, VM_B, NOW + 30_001, &mut RecordedEvents::default())
        .unwrap();
    assert_eq!(
        consumer_of(&mut forever, &store, 1, NOW + 86_400_000),
        found("alice", false)
    );
}

#[test]
fn the_vm_that_fetched_last_keeps_fetching_while_it_is_alive() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (vm(0), vm(0));
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(doc("v1", &[(1, "alice", false)]), ""),
    );
    let due = NOW + REFRESH;
    assert_eq!(
        b.tick(&store, VM_B, due, &mut RecordedEvents::default())
            .unwrap(),
        None
    );
    assert_eq!(
        b.tick(
            &store,
            VM_B,
            due + STICKY_MS - 1,
            &mut RecordedEvents::default()
        )
        .unwrap(),
        None
    );
    // A is gone: B takes over once the grace is over.
    assert!(b
        .tick(
            &store,
            VM_B,
            due + STICKY_MS,
            &mut RecordedEvents::default()
        )
        .unwrap()
        .is_some());
}

#[test]
fn a_shared_data_failure_is_not_a_miss() {
    let store = MemoryStore::default();
    let mut a = vm(0);
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(doc("v1", &[(1, "alice", false)]), ""),
    );
    store.fail_from_now_on();
    assert_eq!(
        consumer_of(&mut a, &store, 1, NOW + 10),
        Err(DataUnavailable::StoreFailed)
    );
}

#[test]
fn a_healthy_endpoint_never_goes_stale_even_with_the_smallest_bound() {
    let store = MemoryStore::default();
    let mut a = vm(1_000);
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(doc("v1", &[(1, "alice", false)]), "\"e1\""),
    );
    // Each refresh comes a tick late and takes a while to answer; the key keeps working.
    for n in 1..5 {
        let due = NOW + n * (REFRESH + 300);
        assert_eq!(
            consumer_of(&mut a, &store, 1, due + 250),
            found("alice", false)
        );
        fetch(&mut a, VM_A, &store, due + 300, not_modified());
    }
}

#[test]
fn the_same_body_with_a_new_etag_keeps_the_new_etag() {
    let store = MemoryStore::default();
    let mut a = vm(0);
    let v1 = doc("v1", &[(1, "alice", false)]);
    fetch(&mut a, VM_A, &store, NOW, ok(v1.clone(), "\"old\""));
    let (_, events) = fetch(&mut a, VM_A, &store, NOW + REFRESH, ok(v1, "\"touched\""));
    assert_eq!(events.0, vec![Event::DataNotModified]);
    let (call, _) = fetch(&mut a, VM_A, &store, NOW + 2 * REFRESH, not_modified());
    assert!(call
        .headers
        .contains(&("if-none-match".into(), "\"touched\"".into())));
    assert_eq!(
        consumer_of(&mut a, &store, 1, NOW + 2 * REFRESH),
        found("alice", false)
    );
}

#[test]
fn a_vm_whose_lease_was_taken_over_publishes_nothing() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (vm(0), vm(0));
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(doc("v1", &[(1, "alice", false)]), ""),
    );
    // A takes the next fetch and never hears back within its lease; B takes over and publishes.
    let late = NOW + REFRESH;
    a.tick(&store, VM_A, late, &mut RecordedEvents::default())
        .unwrap()
        .unwrap();
    let taken_over = late + a.timing.lease_ms + STICKY_MS;
    fetch(
        &mut b,
        VM_B,
        &store,
        taken_over,
        ok(doc("v2", &[(1, "bob", false)]), ""),
    );
    // A's answer finally arrives: a different document, which must not land.
    let mut events = RecordedEvents::default();
    let stale = ok(doc("v2-from-a", &[(1, "mallory", false)]), "");
    a.on_reply(&stale, &rules(), &store, taken_over + 1, &mut events)
        .unwrap();
    assert!(!events
        .0
        .iter()
        .any(|e| matches!(e, Event::DataLoaded { .. })));
    a.tick(&store, VM_A, taken_over + 2, &mut RecordedEvents::default())
        .unwrap();
    assert_eq!(
        consumer_of(&mut a, &store, 1, taken_over + 2),
        found("bob", false)
    );
    assert_eq!(
        consumer_of(&mut b, &store, 1, taken_over + 2),
        found("bob", false)
    );
}

#[test]
fn the_same_body_under_another_configuration_is_validated_again() {
    let store = MemoryStore::default();
    let mut old = vm(0);
    let body = doc("v1", &[(1, "alice", false)]);
    fetch(&mut old, VM_A, &store, NOW, ok(body.clone(), "\"e1\""));
    // A new configuration now holds key 1 itself: its VMs must not keep the old validation.
    let mut configured = KeyStore::default();
    let record = crate::api_key::KeyRecord::new(digest(&key(1)), "cfg".into(), None, false);
    configured.insert(record).unwrap();
    let rules = DocumentRules {
        config_keys: Some(&configured),
        ..rules()
    };
    let mut new = PolicyData::new(
        source(0),
        &KeySpace::new("apiguard"),
        rules_digest(&rules, &[]),
    );
    let later = NOW + REFRESH + STICKY_MS;
    new.tick(&store, VM_B, later, &mut RecordedEvents::default())
        .unwrap()
        .unwrap();
    let mut events = RecordedEvents::default();
    new.on_reply(&ok(body, "\"e1\""), &rules, &store, later, &mut events)
        .unwrap();
    assert!(
        matches!(&events.0[..], [Event::DataRefused { path, .. }] if path == "api_keys[0].sha256"),
        "{:?}",
        events.0
    );
}

#[test]
fn acl_entries_of_a_live_document_are_looked_up_one_entry_each() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (vm(0), vm(0));
    a.create(&store).unwrap();
    let body = serde_json::json!({"version": "v1", "acl": {
        "groups": {"support": ["bob"], "ops": ["bob", "carol"]},
        "owners": {"account": {"acct-1": ["consumer:alice", "group:support"]}}}});
    fetch(
        &mut a,
        VM_A,
        &store,
        NOW,
        ok(body.to_string().into_bytes(), "\"e1\""),
    );
    assert_eq!(b.groups_of("bob", &store, NOW).unwrap(), ["ops", "support"]);
    assert_eq!(
        b.groups_of("dave", &store, NOW).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        b.owners_of("account", "acct-1", &store, NOW).unwrap(),
        Some(vec![
            "consumer:alice".to_owned(),
            "group:support".to_owned()
        ])
    );
    assert_eq!(b.owners_of("account", "acct-2", &store, NOW).unwrap(), None);
    // A kind is part of the name: the same id of another type is another object.
    assert_eq!(b.owners_of("order", "acct-1", &store, NOW).unwrap(), None);
    // An index digest is never taken for an API key.
    assert_eq!(
        b.lookup(&crate::live::table::group_index("bob"), &store, NOW),
        Ok(None)
    );
}

/// A VM whose configuration has `acl` data (it counts as configured when it first publishes).
fn configured_vm(acl: serde_json::Value) -> PolicyData {
    PolicyData::configured(
        acl.to_string().into_bytes().into(),
        &KeySpace::new("apiguard"),
        [1; 32],
    )
}

#[test]
fn configured_acl_data_is_published_once_per_proxy_and_read_by_every_vm() {
    let store = MemoryStore::default();
    let acl = serde_json::json!({"groups": {"support": ["bob"]},
        "owners": {"account": {"acct-1": ["consumer:alice"]}}});
    let (mut a, mut b) = (configured_vm(acl.clone()), configured_vm(acl));
    a.create(&store).unwrap();
    assert_eq!(
        b.groups_of("bob", &store, NOW),
        Err(DataUnavailable::NotLoaded)
    );
    let mut events = RecordedEvents::default();
    a.publish_configured(&rules(), &store, VM_A, NOW, &mut events)
        .unwrap();
    assert!(matches!(
        &events.0[..],
        [Event::ConfigDataPublished {
            acl_groups: 1,
            acl_ownership_entries: 1,
            ..
        }]
    ));
    let version = a.version();
    // B's configuration is the same data: nothing to write again.
    b.publish_configured(
        &rules(),
        &store,
        VM_B,
        NOW + 3,
        &mut RecordedEvents::default(),
    )
    .unwrap();
    assert_eq!(b.groups_of("bob", &store, NOW).unwrap(), ["support"]);
    assert_eq!(
        b.owners_of("account", "acct-1", &store, NOW).unwrap(),
        Some(vec!["consumer:alice".to_owned()])
    );
    assert_eq!(b.version(), version);
    // A configuration's data never goes stale and never fetches.
    assert_eq!(
        a.tick(
            &store,
            VM_A,
            NOW + 86_400_000,
            &mut RecordedEvents::default()
        )
        .unwrap(),
        None
    );
    assert!(a.groups_of("bob", &store, NOW + 86_400_000).is_ok());
}

#[test]
fn the_newest_configuration_is_the_one_in_force() {
    let store = MemoryStore::default();
    let old_acl = serde_json::json!({"groups": {"support": ["bob"]}});
    let new_acl = serde_json::json!({"groups": {"support": ["carol"]}});
    let mut old = configured_vm(old_acl);
    let mut new = configured_vm(new_acl);
    old.create(&store).unwrap();
    old.publish_configured(&rules(), &store, VM_A, NOW, &mut RecordedEvents::default())
        .unwrap();
    new.publish_configured(
        &rules(),
        &store,
        VM_B,
        NOW + 60_000,
        &mut RecordedEvents::default(),
    )
    .unwrap();
    assert_eq!(new.groups_of("carol", &store, NOW).unwrap(), ["support"]);
    // A VM of the old configuration, still draining, does not put its data back.
    old.publish_configured(
        &rules(),
        &store,
        VM_A,
        NOW + 61_000,
        &mut RecordedEvents::default(),
    )
    .unwrap();
    // Its next tick loads the version in force.
    old.tick(&store, VM_A, NOW + 61_000, &mut RecordedEvents::default())
        .unwrap();
    assert_eq!(
        old.groups_of("bob", &store, NOW).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(old.groups_of("carol", &store, NOW).unwrap(), ["support"]);
}

#[test]
fn a_configuration_publisher_that_died_is_replaced_after_its_lease() {
    let store = MemoryStore::default();
    let acl = serde_json::json!({"groups": {"support": ["bob"]}});
    let (a, mut b) = (configured_vm(acl.clone()), configured_vm(acl));
    a.create(&store).unwrap();
    // A took the lease and died before writing anything.
    let feed = Feed::new(&KeySpace::new("apiguard"), "config-data");
    let timing = FeedTiming {
        refresh_ms: i64::MAX / 4,
        min_refetch_ms: 1000,
        lease_ms: 60_000,
        sticky_ms: 0,
    };
    assert!(feed
        .try_lease(&store, VM_A, FetchReason::Early, timing, NOW)
        .unwrap()
        .is_some());
    b.publish_configured(
        &rules(),
        &store,
        VM_B,
        NOW + 1000,
        &mut RecordedEvents::default(),
    )
    .unwrap();
    assert_eq!(
        b.groups_of("bob", &store, NOW),
        Err(DataUnavailable::NotLoaded)
    );
    b.publish_configured(
        &rules(),
        &store,
        VM_B,
        NOW + 60_001,
        &mut RecordedEvents::default(),
    )
    .unwrap();
    assert_eq!(b.groups_of("bob", &store, NOW).unwrap(), ["support"]);
    drop(a);
}

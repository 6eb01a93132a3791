"""Live policy data in real Envoy with four workers (V8), fed by nginx (Debian) serving the document
file with its ETags: one VM per proxy fetches, validates the whole document and publishes it into
shared data; every worker decides with the new version within one refresh interval. Keys are
added and revoked without restarting Envoy; a broken document is refused whole and the last good
version stays; the endpoint down keeps the last version, or fails closed after max_stale_seconds;
unchanged documents come back as 304 and cost no re-validation.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from support.harness import wait_until
from support.jwt import LOG_THREAD, log_lines
from support.keys import Key
from support.nginx import Nginx
from support.problems import assert_problem

WORKERS = 4
REFRESH_S = 1
# A change is in force on every worker within one refresh interval; the slack covers the fetch
# itself and the root tick (100 ms) that switches each VM.
WITHIN_ONE_INTERVAL = REFRESH_S + 1.5
DOC = "v1/policy.json"
LOADS = "wasmcustom.apiguard_data_loads_total"
REFUSALS = "wasmcustom.apiguard_data_refusals_total"
FAILURES = "wasmcustom.apiguard_data_fetch_failures_total"
NOT_MODIFIED = "wasmcustom.apiguard_data_not_modified_total"
ENTRIES = "wasmcustom.apiguard_data_entries"


def config(configured: list[dict], **source) -> dict:
    return {
        "credentials": "api_key",
        "https": {"required": False},
        "api_keys": {"keys": configured},
        "data_source": {"cluster": "apiguard-control", "path": "/" + DOC,
                        "authority": "control.example.com", "refresh_interval_seconds": REFRESH_S,
                        "timeout_ms": 1000, **source},
    }


def document(version: str, *entries: dict) -> dict:
    return {"version": version, "api_keys": list(entries)}


def vms_in_force(guard, version: str) -> set[str]:
    """Threads (workers and the main thread) whose VM decides with document `version`."""
    needle = f"policy document {version}: proxy version"
    return {m.group(1) for line in log_lines(guard.envoy, needle) if (m := LOG_THREAD.match(line))}


def wait_in_force(guard, version: str, timeout: float = WITHIN_ONE_INTERVAL):
    # every worker's VM and the main thread's
    wait_until(lambda: len(vms_in_force(guard, version)) >= WORKERS + 1, timeout,
               f"every worker deciding with document {version}")


def key_header(key) -> dict:
    return {"x-api-key": key.key}


def assert_consumer(guard, key, consumer: str, times: int = 12):
    """`times` requests on fresh connections (so on any worker) all pass as `consumer`."""
    for _ in range(times):
        resp = guard.get("/", key_header(key))
        assert resp.status == 200, resp
        assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == [consumer]


def stat(guard, name: str) -> int:
    return guard.envoy.stat(name) or 0


@pytest.fixture
def live(tmp_path, new_guard, keygen):
    """nginx serving document v1 (one key, ann), and an Envoy that fetches it; `configured` is a
    key from the plugin configuration."""
    ann, configured = keygen("ann"), keygen("configured")
    nginx = Nginx(tmp_path / "nginx").start()
    nginx.publish(DOC, document("v1", ann.entry))
    guard = None
    try:
        guard = new_guard(config([configured.entry]),
                          extra_clusters={"apiguard-control": nginx.port}, concurrency=WORKERS)
        wait_in_force(guard, "v1", timeout=10)
        yield nginx, guard, ann, configured
    finally:
        if guard:
            guard.stop()
        nginx.stop()


def test_a_key_added_to_the_document_works_on_every_worker_within_one_interval(live, keygen):
    nginx, guard, ann, configured = live
    assert_consumer(guard, ann, "ann")
    assert_consumer(guard, configured, "configured", times=2)
    ben = keygen("ben")
    resp = guard.get("/", key_header(ben))
    assert_problem(resp, 401, "unknown_api_key", secrets=(ben.key,))
    nginx.publish(DOC, document("v2", ann.entry, ben.entry))
    wait_in_force(guard, "v2")
    assert_consumer(guard, ben, "ben")
    assert stat(guard, ENTRIES) == 2
    # one fetch and one load per proxy and version, not one per worker
    assert stat(guard, LOADS) == 2


def test_a_revoked_or_removed_key_is_refused_within_one_interval(live, keygen):
    nginx, guard, ann, _ = live
    ben = keygen("ben")
    nginx.publish(DOC, document("v2", ann.entry, ben.entry))
    wait_in_force(guard, "v2")
    assert_consumer(guard, ben, "ben", times=2)
    nginx.publish(DOC, document("v3", {**ann.entry, "revoked": True}))
    wait_in_force(guard, "v3")
    for _ in range(12):
        assert_problem(guard.get("/", key_header(ann)), 401, "revoked_api_key", secrets=(ann.key,))
        assert_problem(guard.get("/", key_header(ben)), 401, "unknown_api_key", secrets=(ben.key,))


def test_a_broken_document_is_refused_whole_and_the_last_version_keeps_working(live, keygen):
    nginx, guard, ann, configured = live
    ben = keygen("ben")
    broken = [
        ('{"version": "v2", "api_keys": [', "at api_keys: EOF while parsing"),
        # a good entry, then a digest the configuration already has: the whole update is refused
        (document("v2", ben.entry, configured.entry), "at api_keys[1].sha256"),
        (document("v2", ben.entry, {**ann.entry, "expires_at": "next week"}), "at api_keys[1].expires_at"),
    ]
    for body, where in broken:
        refusals = stat(guard, REFUSALS)
        nginx.publish(DOC, body)
        wait_until(lambda: stat(guard, REFUSALS) > refusals, WITHIN_ONE_INTERVAL, "the refusal")
        refused = log_lines(guard.envoy, "policy document refused")
        assert any(where in line for line in refused), refused
        assert_consumer(guard, ann, "ann", times=4)
        assert_problem(guard.get("/", key_header(ben)), 401, "unknown_api_key", secrets=(ben.key,))
    log = guard.envoy.log()
    assert configured.entry["sha256"] not in log and "next week" not in log, "a value was logged"
    assert vms_in_force(guard, "v2") == set()


def test_an_unchanged_document_comes_back_as_304_and_costs_no_revalidation(live):
    nginx, guard, ann, _ = live
    loads, not_modified = stat(guard, LOADS), stat(guard, NOT_MODIFIED)
    started, fetched = time.monotonic(), len(nginx.statuses())
    wait_until(lambda: nginx.statuses().count("304") >= 3, 3 * REFRESH_S + 3, "three conditional refreshes")
    assert nginx.statuses()[0] == "200" and set(nginx.statuses()) == {"200", "304"}, nginx.statuses()
    assert stat(guard, NOT_MODIFIED) >= not_modified + 3
    assert stat(guard, LOADS) == loads, "a 304 published nothing"
    # one fetch per interval for the whole proxy, not one per worker (five VMs tick)
    fetches = len(nginx.statuses()) - fetched
    assert fetches <= (time.monotonic() - started) / REFRESH_S + 1, fetches
    assert_consumer(guard, ann, "ann", times=4)


def test_keys_issued_and_revoked_with_the_key_generator(live, keygen_bin):
    nginx, guard, ann, _ = live
    doc_path = nginx.www / DOC

    def keygen(*args) -> dict:
        out = subprocess.run([str(keygen_bin), *args, "--into", str(doc_path), "--json"],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    issued = keygen("--consumer", "cleo")
    version = json.loads(doc_path.read_text())["version"]
    wait_in_force(guard, version)
    key = Key(issued["key"], issued["entry"])
    assert_consumer(guard, key, "cleo")
    keygen("--revoke", issued["fingerprint"])
    version = json.loads(doc_path.read_text())["version"]
    wait_in_force(guard, version)
    assert_problem(guard.get("/", key_header(key)), 401, "revoked_api_key", secrets=(key.key,))
    assert_consumer(guard, ann, "ann", times=2)


def test_too_large_a_document_is_refused(tmp_path, new_guard, keygen):
    ann = keygen("ann")
    nginx = Nginx(tmp_path / "nginx").start()
    nginx.publish(DOC, document("v1", ann.entry))
    guard = new_guard(config([], max_document_bytes=300), extra_clusters={"apiguard-control": nginx.port},
                      concurrency=WORKERS)
    try:
        wait_in_force(guard, "v1", timeout=10)
        padded = document("v2-" + "x" * 200, ann.entry)
        nginx.publish(DOC, padded)
        wait_until(lambda: log_lines(guard.envoy, "max_document_bytes (300)"), WITHIN_ONE_INTERVAL,
                   "the size refusal")
        assert stat(guard, REFUSALS) >= 1
        assert_consumer(guard, ann, "ann", times=2)
    finally:
        guard.stop()
        nginx.stop()


def test_the_endpoint_down_keeps_the_last_version(live):
    nginx, guard, ann, _ = live
    nginx.stop()
    failures = stat(guard, FAILURES)
    wait_until(lambda: stat(guard, FAILURES) >= failures + 2, 2 * REFRESH_S + 3, "failed refreshes")
    assert log_lines(guard.envoy, "policy document fetch failed")
    # max_stale_seconds 0: the last good version is served for as long as it takes
    assert_consumer(guard, ann, "ann")


def test_max_stale_seconds_fails_closed_then_recovers(tmp_path, new_guard, keygen):
    ann, configured = keygen("ann"), keygen("configured")
    nginx = Nginx(tmp_path / "nginx").start()
    nginx.publish(DOC, document("v1", ann.entry))
    guard = new_guard(config([configured.entry], max_stale_seconds=2),
                      extra_clusters={"apiguard-control": nginx.port}, concurrency=WORKERS)
    try:
        wait_in_force(guard, "v1", timeout=10)
        assert_consumer(guard, ann, "ann", times=2)
        nginx.stop()

        def refused_as_stale() -> bool:
            resp = guard.get("/", key_header(ann))
            return resp.status == 503

        wait_until(refused_as_stale, 2 + 3, "the document going stale", interval=0.1)
        for _ in range(8):
            resp = guard.get("/", key_header(ann))
            doc = assert_problem(resp, 503, "policy_not_loaded", secrets=(ann.key,))
            assert "out of date" in doc["detail"], doc
            assert resp.header("retry-after"), resp
        # the configuration's keys never depend on the document
        assert_consumer(guard, configured, "configured", times=4)
        # the endpoint back: the same version is confirmed and served again
        nginx = Nginx(nginx.dir, port=nginx.port).start()
        wait_until(lambda: guard.get("/", key_header(ann)).status == 200, WITHIN_ONE_INTERVAL + 1,
                   "the endpoint confirming the document")
        assert_consumer(guard, ann, "ann")
    finally:
        guard.stop()
        nginx.stop()


def test_before_the_first_document_only_configured_keys_work(tmp_path, new_guard, keygen):
    ann, configured = keygen("ann"), keygen("configured")
    nginx = Nginx(tmp_path / "nginx").start()   # no document yet: 404
    guard = new_guard(config([configured.entry]), extra_clusters={"apiguard-control": nginx.port},
                      concurrency=WORKERS)
    try:
        wait_until(lambda: stat(guard, FAILURES) >= 1, 10, "the first fetch failing")
        for _ in range(6):
            resp = guard.get("/", key_header(ann))
            doc = assert_problem(resp, 503, "policy_not_loaded", secrets=(ann.key,))
            assert "not loaded yet" in doc["detail"], doc
            assert resp.header("retry-after"), resp
        assert_consumer(guard, configured, "configured", times=4)
        nginx.publish(DOC, document("v1", ann.entry))
        wait_in_force(guard, "v1")
        assert_consumer(guard, ann, "ann")
    finally:
        guard.stop()
        nginx.stop()


def acl_document(version: str, key, owners: dict, groups: dict | None = None) -> dict:
    return {"version": version, "api_keys": [key.entry],
            "acl": {"groups": groups or {}, "owners": {"account": owners}}}


def test_acl_entries_of_the_document_take_effect_within_one_interval(tmp_path, new_guard, keygen):
    """Ownership and group entries come from the live document as well as the configuration; an
    entry added (or removed) there decides on every worker within one refresh interval."""
    ann = keygen("ann")
    nginx = Nginx(tmp_path / "nginx").start()
    nginx.publish(DOC, acl_document("v1", ann, {"acct-1": ["consumer:ann"]}))
    cfg = {**config([]), "acl": {
        "groups": {"support": ["ann"]},
        "owners": {"account": {"acct-5": ["group:support"]}},
        "rules": [{"path": "/v1/accounts/{account}", "methods": ["GET"], "allow": ["any"],
                   "owner": {"param": "account", "type": "account"}}],
    }}
    guard = new_guard(cfg, extra_clusters={"apiguard-control": nginx.port}, concurrency=WORKERS)

    def owned(account: str, times: int = 12) -> list[str]:
        """The groups upstream saw on `times` requests (each on a fresh connection)."""
        seen = []
        for _ in range(times):
            resp = guard.get(f"/v1/accounts/{account}", key_header(ann))
            assert resp.status == 200, resp
            seen.append(resp.upstream_saw["headers"].get("x-apiguard-groups", [""])[0])
        return seen

    def not_owner(account: str, times: int = 12):
        for _ in range(times):
            assert_problem(guard.get(f"/v1/accounts/{account}", key_header(ann)), 403, "not_owner",
                           secrets=(ann.key,))

    try:
        wait_in_force(guard, "v1", timeout=10)
        owned("acct-1")
        # the configuration's group, the configuration's ownership entry
        assert set(owned("acct-5", times=2)) == {"support"}
        not_owner("acct-9")
        # an ownership entry for a group the document defines, and one for ann herself
        nginx.publish(DOC, acl_document("v2", ann, {"acct-1": ["consumer:ann"], "acct-9": ["consumer:ann"],
                                                    "acct-7": ["group:auditors"]},
                                        groups={"auditors": ["ann"]}))
        wait_in_force(guard, "v2")
        owned("acct-9")
        # groups from both sources reach the upstream
        assert set(owned("acct-7", times=4)) == {"auditors,support"}
        # removed from the document: refused again on every worker
        nginx.publish(DOC, acl_document("v3", ann, {"acct-1": ["consumer:ann"]}))
        wait_in_force(guard, "v3")
        not_owner("acct-9")
        not_owner("acct-7", times=2)
        owned("acct-5", times=2)
    finally:
        guard.stop()
        nginx.stop()

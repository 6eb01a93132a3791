"""One JWKS fetch per proxy, in real Envoy with four workers (V8): the VM that takes the lease in
shared data fetches and publishes, every VM loads the published version. A token signed by a key
the identity provider just rotated in waits for one refetch instead of being refused; requests that
wait for the same refetch share it; with the JWKS server down or silent, such a token is refused
within `unknown_kid_wait_ms` while tokens of known keys keep working.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from support.harness import StaticServer, wait_until
from support.jwt import (
    AUDIENCE,
    ISSUER,
    LOG_THREAD,
    assert_token_refused,
    bearer,
    claims,
    ec_key,
    jwks,
    log_lines,
)

WORKERS = 4
REFRESH_S = 10
LOADED = "jwt provider 0: loaded"
ALLOWED_STAT = "wasmcustom.apiguard_allowed_total"
UNKNOWN_KID_STAT = "wasmcustom.apiguard_denied_unknown_kid_total"
FAILURES_STAT = "wasmcustom.apiguard_jwks_fetch_failures_total"


def config(cluster: str = "idp", **remote) -> dict:
    return {
        "credentials": "jwt",
        "https": {"required": False},
        "jwt": {"providers": [{
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "remote_jwks": {"cluster": cluster, "path": "/jwks", "refresh_interval_seconds": REFRESH_S,
                            "min_refetch_interval_seconds": 1, "timeout_ms": 2000, **remote},
        }]},
    }


def loaded_threads(guard) -> set[str]:
    """Threads (worker or main) that logged loading a key set."""
    return {m.group(1) for line in log_lines(guard.envoy, LOADED) if (m := LOG_THREAD.match(line))}


def wait_all_loaded(guard, timeout: float = 10):
    # every worker VM and the main thread's VM load the published version on their own tick
    wait_until(lambda: len(loaded_threads(guard)) >= WORKERS, timeout, f"{WORKERS} VMs loading the key set")


class SilentServer:
    """Accepts connections (the kernel's backlog) and never answers: an IdP that hangs."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def stop(self):
        self.sock.close()


@pytest.fixture
def idp(new_guard):
    k1 = ec_key("k1")
    server = StaticServer(json.dumps(jwks(k1)).encode()).start()
    guard = None
    try:
        guard = new_guard(config(), extra_clusters={"idp": server.port}, concurrency=WORKERS)
        wait_all_loaded(guard)
        yield server, guard, k1
    finally:
        if guard:
            guard.stop()
        server.stop()


def test_one_fetch_per_refresh_interval_for_the_whole_proxy(idp):
    server, guard, k1 = idp
    started = time.monotonic()
    # five VMs (four workers, the main thread) each load the set; only one fetched it
    assert server.hits == 1, server.hits
    token = k1.sign(claims("one-fetch"))
    for _ in range(20):
        assert guard.get("/", bearer(token)).status == 200
    # one periodic refresh for the proxy, not one per VM
    wait_until(lambda: server.hits >= 2, REFRESH_S + 5, "the periodic refresh")
    time.sleep(max(0.0, 2.0 - (time.monotonic() - started) % REFRESH_S))
    assert server.hits == 2, server.hits
    # the same document again: same version, no VM reloads it
    assert len(log_lines(guard.envoy, LOADED)) == len(loaded_threads(guard))


def test_a_token_of_a_rotated_key_passes_on_its_first_request(idp):
    server, guard, k1 = idp
    for round_ in range(2):
        # a refetch comes at most once per min_refetch_interval_seconds (1 s) after the last fetch
        time.sleep(1.1)
        new_key = ec_key(f"rotated-{round_}")
        server.body = json.dumps(jwks(k1, new_key)).encode()
        hits = server.hits
        allowed = guard.envoy.stat(ALLOWED_STAT) or 0
        token = new_key.sign(claims(f"rotated-{round_}"))
        resp = guard.get("/", bearer(token))
        assert resp.status == 200, resp
        assert resp.upstream_saw["headers"]["x-apiguard-subject"] == [f"rotated-{round_}"]
        assert server.hits == hits + 1, "one refetch"
        # every worker now has it (fresh connections land on any worker)
        for _ in range(12):
            assert guard.get("/", bearer(token)).status == 200
        assert server.hits == hits + 1
        wait_until(lambda: (guard.envoy.stat(ALLOWED_STAT) or 0) >= allowed + 13, 5, "allowed counter")


def test_requests_waiting_for_the_same_refetch_share_it(idp):
    server, guard, k1 = idp
    time.sleep(1.1)   # past min_refetch_interval_seconds since the start-up fetch
    new_key = ec_key("shared-refetch")
    server.body = json.dumps(jwks(k1, new_key)).encode()
    hits = server.hits
    results: list[int] = []

    def call(i: int):
        results.append(guard.get("/", bearer(new_key.sign(claims(f"c{i}")))).status)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [200] * 12, results
    assert server.hits == hits + 1, server.hits - hits


def test_jwks_server_down_unknown_kid_refused_within_the_bound_known_keys_work(new_guard):
    k1 = ec_key("k1")
    server = StaticServer(json.dumps(jwks(k1)).encode()).start()
    guard = new_guard(config(unknown_kid_wait_ms=800), extra_clusters={"idp": server.port},
                      concurrency=WORKERS)
    try:
        wait_all_loaded(guard)
        server.stop()
        time.sleep(1.1)   # past min_refetch_interval: the next unknown kid may refetch
        failures = guard.envoy.stat(FAILURES_STAT) or 0
        denied = guard.envoy.stat(UNKNOWN_KID_STAT) or 0
        stranger = ec_key("not-published")
        for i in range(3):
            token = stranger.sign(claims(f"down-{i}"))
            started = time.monotonic()
            resp = guard.get("/", bearer(token))
            elapsed = time.monotonic() - started
            assert_token_refused(resp, "unknown_kid", token)
            assert elapsed < 0.8 + 0.5, elapsed
        for i in range(12):   # fresh tokens: verified with the kept keys, not from a cache
            resp = guard.get("/", bearer(k1.sign(claims(f"known-{i}"))))
            assert resp.status == 200, resp
        wait_until(lambda: (guard.envoy.stat(UNKNOWN_KID_STAT) or 0) >= denied + 3, 5, "denied counter")
        wait_until(lambda: (guard.envoy.stat(FAILURES_STAT) or 0) >= failures + 1, 5, "failure counter")
    finally:
        guard.stop()


def test_a_silent_jwks_server_holds_a_token_no_longer_than_the_bound(new_guard):
    # An IdP that accepts connections and never answers: before any key set is published, tokens
    # wait for the fetch under way for at most unknown_kid_wait_ms, then get the retryable 503.
    k1 = ec_key("k1")
    silent = SilentServer()
    guard = new_guard(config(unknown_kid_wait_ms=700), extra_clusters={"idp": silent.port},
                      concurrency=WORKERS)
    try:
        token = k1.sign(claims("silent"))
        waited = []
        for _ in range(3):
            started = time.monotonic()
            resp = guard.get("/", bearer(token))
            waited.append(time.monotonic() - started)
            assert resp.status == 503 and resp.json()["code"] == "no_verification_key", resp
            assert resp.header("retry-after") == "5", resp
        assert max(waited) < 0.7 + 0.6, waited
        assert max(waited) > 0.4, waited   # they did wait for the fetch under way
    finally:
        guard.stop()
        silent.stop()

"""Remote JWKS end to end: a real JWKS server on 127.0.0.1 (support.harness.StaticServer) is Envoy's "idp"
cluster; one VM of the proxy fetches it (a lease in shared data), every VM (both workers, V8, and
the main thread's) loads the published key set and verifies tokens with it.

Readiness means "both workers logged loading it", read off the thread id in Envoy's log lines, and
"N requests on fresh connections in a row succeeded". A refused document is logged by the one VM
that fetched it, which may be the main thread's. See test_jwks_shared.py for the per-proxy fetch.
"""
from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from support.guards import Guard
from support.harness import StaticServer, wait_until
from support.jwt import (
    AUDIENCE,
    ISSUER,
    LOG_THREAD,
    SigningKey,
    assert_token_refused,
    b64u,
    bearer,
    claims,
    ec_key,
    ed25519_key,
    hs256_with_secret,
    jwks,
    log_lines,
    rsa_key,
    token_secrets,
)
from support.problems import assert_problem

WORKERS = 2
LOADED = "jwt provider 0: loaded"
IGNORED = "jwt provider 0: jwks ignored, keeping the last good keys"
FAILURES_STAT = "wasmcustom.apiguard_jwks_fetch_failures_total"
IN_A_ROW = 10   # fresh connections in a row that must agree: a worker is missed with p = 2**-10


def remote_config(**remote) -> dict:
    return {
        "credentials": "jwt",
        "https": {"required": False},
        "jwt": {"providers": [{
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "remote_jwks": {"cluster": "idp", "path": "/jwks", "refresh_interval_seconds": 10,
                            "min_refetch_interval_seconds": 1, "timeout_ms": 500, **remote},
        }]},
    }


# ------------------------------------------------------------------------------ helpers

def main_thread(guard: Guard) -> str:
    for line in guard.envoy.log().splitlines():
        m = LOG_THREAD.match(line)
        if m:
            return m.group(1)
    raise AssertionError("no log line yet")


def worker_lines(guard: Guard, needle: str) -> list[tuple[str, str]]:
    """(thread id, line) of the log lines with `needle` written by worker threads."""
    main = main_thread(guard)
    out = []
    for line in log_lines(guard.envoy, needle):
        m = LOG_THREAD.match(line)
        if m and m.group(1) != main:
            out.append((m.group(1), line))
    return out


def mark(guard: Guard, needle: str) -> int:
    return len(worker_lines(guard, needle))


def wait_any_logged(guard: Guard, needle: str, after: int, timeout: float, poke=None) -> list[str]:
    """Wait until some VM (the one that fetched) logged `needle` after the first `after` lines."""
    def check():
        lines = log_lines(guard.envoy, needle)[after:]
        if lines:
            return lines
        if poke:
            poke()
        return None
    return wait_until(check, timeout, f"a VM logging {needle!r}", interval=0.05)


def marks(guard: Guard, needle: str) -> int:
    return len(log_lines(guard.envoy, needle))


def wait_workers_logged(guard: Guard, needle: str, after: int, timeout: float,
                        poke=None) -> list[str]:
    """Wait until every worker logged `needle` (counting only lines after the first `after`).
    `poke` runs between polls (e.g. a request that makes a worker fetch)."""
    def check():
        threads = {tid for tid, _ in worker_lines(guard, needle)[after:]}
        if len(threads) >= WORKERS:
            return [line for _, line in worker_lines(guard, needle)[after:]]
        if poke:
            poke()
        return None
    return wait_until(check, timeout, f"{WORKERS} workers logging {needle!r}", interval=0.05)


def all_pass(guard: Guard, token: str, sub: str, n: int = IN_A_ROW):
    for i in range(n):
        resp = guard.get("/", bearer(token))
        seen = resp.upstream_saw
        assert seen["headers"]["x-apiguard-subject"] == [sub], f"request {i}: {seen['headers']}"
        assert "authorization" not in seen["headers"]


def passes_in_a_row(guard: Guard, token: str, n: int = IN_A_ROW) -> bool:
    return all(guard.get("/", bearer(token)).status == 200 for _ in range(n))


class Idp:
    """A JWKS server and an Envoy whose "idp" cluster points at it."""

    def __init__(self, server: StaticServer, guard: Guard):
        self.server = server
        self.guard = guard

    def publish(self, *keys, status: int = 200):
        self.server.body = json.dumps(jwks(*keys)).encode()
        self.server.status = status

    def serve(self, body: bytes, status: int = 200):
        self.server.body = body
        self.server.status = status

    def stop(self):
        self.guard.stop()
        self.server.stop()


def start_idp(new_guard, body: bytes, status: int = 200, **remote) -> Idp:
    server = StaticServer(body, status).start()
    try:
        guard = new_guard(remote_config(**remote), extra_clusters={"idp": server.port})
    except BaseException:
        server.stop()
        raise
    return Idp(server, guard)


# ------------------------------------------------------------------------------ the shared Envoy

class KeySet:
    def __init__(self):
        self.k1 = ec_key("k1")
        self.r1 = rsa_key("r1")
        self.k2 = ed25519_key("k2")       # rotated in
        self.k3 = ec_key("k3")            # rotated in when k1 is withdrawn


@pytest.fixture(scope="module")
def ks() -> KeySet:
    return KeySet()


@pytest.fixture(scope="module")
def shared(new_guard, ks):
    idp = start_idp(new_guard, json.dumps(jwks(ks.k1, ks.r1)).encode())
    try:
        wait_workers_logged(idp.guard, LOADED, 0, 10)
        yield idp
    finally:
        idp.stop()


@pytest.fixture
def idp(shared, ks):
    """The shared Envoy, with k1 and r1 published and k1 verifying on every worker."""
    shared.publish(ks.k1, ks.r1)
    token = ks.k1.sign(claims("precondition"))
    wait_until(lambda: passes_in_a_row(shared.guard, token), 10, "k1 verifying on every worker")
    return shared


def test_good_token_passes_once_keys_are_loaded(idp, ks):
    lines = worker_lines(idp.guard, LOADED)
    assert all("loaded 2 keys" in line for _, line in lines[:WORKERS]), lines
    all_pass(idp.guard, ks.k1.sign(claims("remote-ec")), "remote-ec")
    all_pass(idp.guard, ks.r1.sign(claims("remote-ps"), alg="PS256"), "remote-ps")


def test_refusals_still_carry_their_codes_with_remote_keys(idp, ks):
    expired = ks.k1.sign(claims(iat=int(time.time()) - 900, exp=int(time.time()) - 300))
    assert_token_refused(idp.guard.get("/", bearer(expired)), "token_expired", expired)
    forged = ks.k3.sign(claims(), kid="k1")   # right kid, wrong key
    assert_token_refused(idp.guard.get("/", bearer(forged)), "invalid_signature", forged)


def test_key_rotation_new_kid_is_accepted_after_refetch(idp, ks):
    before = mark(idp.guard, LOADED)
    idp.publish(ks.k1, ks.r1, ks.k2)
    token = ks.k2.sign(claims("rotated"))

    first = idp.guard.get("/", bearer(token))
    if first.status != 200:
        # not fetched yet by this worker: refused as unknown, which brings the fetch forward
        assert_token_refused(first, "unknown_kid", token)

    def accepted_everywhere():
        resp = idp.guard.get("/", bearer(token))
        if resp.status != 200:
            assert_token_refused(resp, "unknown_kid", token)
            return False
        return passes_in_a_row(idp.guard, token)

    started = time.monotonic()
    wait_until(accepted_everywhere, 8, "the rotated key on every worker", interval=0.1)
    assert time.monotonic() - started < 8
    lines = wait_workers_logged(idp.guard, LOADED, before, 5)
    assert any("loaded 3 keys" in line for line in lines), lines
    all_pass(idp.guard, token, "rotated")
    all_pass(idp.guard, ks.k1.sign(claims("still-k1")), "still-k1")


def test_unusable_remote_keys_are_skipped_and_the_rest_used(idp, ks):
    # Real key sets mix purposes: an encryption key, a key published with its private part, a weak
    # RSA key and an HMAC secret are skipped one by one; the usable keys of the same set are loaded.
    enc = ec_key("enc1")
    enc.jwk["use"] = "enc"
    leaky = ec_key("priv1")
    leaky.jwk["d"] = b64u(leaky.private.private_numbers().private_value.to_bytes(32, "big"))
    weak_priv = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = SigningKey("weak1", "RS256", weak_priv, {
        "kty": "RSA", "kid": "weak1",
        "n": b64u(weak_priv.public_key().public_numbers().n.to_bytes(128, "big")), "e": "AQAB"})
    newcomer = ec_key("mixed-new")
    before = mark(idp.guard, LOADED)
    idp.serve(json.dumps({"keys": [enc.jwk, leaky.jwk, weak.jwk, ks.k1.jwk,
                                   {"kty": "oct", "kid": "oct1", "k": b64u(b"x" * 32)},
                                   ks.r1.jwk, newcomer.jwk]}).encode())
    fresh = newcomer.sign(claims("new-in-mixed-set"))
    wait_until(lambda: passes_in_a_row(idp.guard, fresh), 8, "the mixed set on every worker", interval=0.1)
    lines = wait_workers_logged(idp.guard, LOADED, before, 5)
    by_worker = {}
    for tid, line in worker_lines(idp.guard, LOADED)[before:]:
        by_worker.setdefault(tid, []).append(line)
    assert len(by_worker) == WORKERS and all(
        any("loaded 3 keys" in line for line in got) for got in by_worker.values()), lines
    for key in (enc, leaky, weak):
        token = key.sign(claims())
        assert_token_refused(idp.guard.get("/", bearer(token)), "unknown_kid", token)
    oct_token = hs256_with_secret({"alg": "HS256", "kid": "oct1"}, claims(), b"x" * 32)
    resp = idp.guard.get("/", bearer(oct_token))
    assert resp.status == 401 and resp.json()["code"] in ("unknown_kid", "alg_not_allowed"), resp
    all_pass(idp.guard, ks.k1.sign(claims("k1-in-mixed-set")), "k1-in-mixed-set")


def test_unknown_kid_refetches_are_rate_limited(idp, ks):
    # Tokens with made-up kids must not turn the proxy into a load generator against the IdP:
    # the proxy refetches at most once per min_refetch_interval_seconds (1 s here), whatever the
    # number of workers; each such token waits for the refetch under way, if any.
    hits = idp.server.hits
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 2.0:
        token = ks.k1.sign(claims(), kid=f"ghost-{n}")
        assert_token_refused(idp.guard.get("/", bearer(token)), "unknown_kid", token)
        n += 1
    elapsed = time.monotonic() - started
    fetches = idp.server.hits - hits
    # for the proxy: one per elapsed second plus one at the start and one of slack, plus at most
    # one periodic refresh
    allowed = int(elapsed) + 2 + 1
    assert n >= 20, n
    assert fetches <= allowed, f"{fetches} JWKS fetches for {n} unknown-kid tokens in {elapsed:.1f}s"


@pytest.mark.parametrize("body", [
    pytest.param(b"{this is not json", id="garbage"),
    pytest.param(b'{"keys": []}', id="empty-keys"),
    pytest.param(b"[]", id="not-a-key-set"),
    pytest.param(b"<html>login</html>", id="html"),
    pytest.param(json.dumps({"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}).encode(),
                 id="only-an-oct-key"),
])
def test_bad_jwks_response_is_ignored_and_old_keys_still_verify(idp, ks, body):
    failures = idp.guard.envoy.stat(FAILURES_STAT) or 0
    before = marks(idp.guard, IGNORED)
    idp.serve(body)
    n = [0]

    def poke():  # an unknown kid brings each worker's next fetch forward
        n[0] += 1
        idp.guard.get("/", bearer(ks.k1.sign(claims(), kid=f"poke-{n[0]}")))

    lines = wait_any_logged(idp.guard, IGNORED, before, 8, poke=poke)
    assert lines, lines
    for line in lines:
        assert "c2VjcmV0" not in line, "a JWKS member value reached the log"
    wait_until(lambda: (idp.guard.envoy.stat(FAILURES_STAT) or 0) >= failures + 1, 5, "failure counter")
    all_pass(idp.guard, ks.k1.sign(claims("after-bad-jwks")), "after-bad-jwks")
    all_pass(idp.guard, ks.r1.sign(claims("after-bad-jwks-rsa")), "after-bad-jwks-rsa")


def test_jwks_server_error_keeps_cached_keys(idp, ks):
    before = marks(idp.guard, IGNORED)
    idp.serve(b'{"error": "maintenance"}', status=500)
    n = [0]

    def poke():
        n[0] += 1
        idp.guard.get("/", bearer(ks.k1.sign(claims(), kid=f"poke500-{n[0]}")))

    lines = wait_any_logged(idp.guard, IGNORED, before, 8, poke=poke)
    assert any("500" in line for line in lines), lines
    all_pass(idp.guard, ks.k1.sign(claims("during-outage")), "during-outage")


def test_withdrawn_key_stops_verifying_after_refetch(idp, ks):
    # Runs last among the shared-Envoy tests; the `idp` fixture republishes k1 for any later one.
    old = ks.k1.sign(claims("withdrawn"))
    all_pass(idp.guard, old, "withdrawn")          # now in both workers' verified-token caches
    idp.publish(ks.k3, ks.r1)
    new = ks.k3.sign(claims("k3"))
    wait_until(lambda: passes_in_a_row(idp.guard, new), 8, "k3 on every worker", interval=0.1)
    for _ in range(IN_A_ROW):
        assert_token_refused(idp.guard.get("/", bearer(old)), "unknown_kid", old)


# ------------------------------------------------------------------------------ own Envoys

def test_no_verification_key_until_first_good_fetch(new_guard, ks):
    idp = start_idp(new_guard, b"internal error", status=500)
    try:
        wait_any_logged(idp.guard, IGNORED, 0, 10)
        token = ks.k1.sign(claims("cold"))
        for _ in range(IN_A_ROW):
            resp = idp.guard.get("/", bearer(token))
            assert_problem(resp, 503, "no_verification_key", secrets=token_secrets(token))
            assert resp.header("retry-after") == "5", resp
            assert resp.header_all("www-authenticate") == [], resp

        idp.publish(ks.k1)
        wait_workers_logged(idp.guard, LOADED, 0, 10)
        all_pass(idp.guard, token, "cold")
    finally:
        idp.stop()


def test_jwks_server_down_keeps_cached_keys_across_periodic_refresh(new_guard, ks):
    # Nothing pokes this one: the failed fetch is the periodic refresh (refresh_interval 10 s).
    idp = start_idp(new_guard, json.dumps(jwks(ks.k1)).encode())
    try:
        wait_workers_logged(idp.guard, LOADED, 0, 10)
        token = ks.k1.sign(claims("server-down"))
        all_pass(idp.guard, token, "server-down")
        idp.server.stop()
        lines = wait_any_logged(idp.guard, IGNORED, 0, 15)
        assert lines, lines
        all_pass(idp.guard, token, "server-down")
        fresh = ks.k1.sign(claims("server-down-fresh"))   # not cached: verified with the kept keys
        all_pass(idp.guard, fresh, "server-down-fresh")
    finally:
        idp.stop()

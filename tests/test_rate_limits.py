"""Rate limits end to end, in real Envoy with four workers (V8): per-plan token buckets in Envoy's
shared data, one bucket for all workers however many connections race for it; the 429 with
`Retry-After` and the IETF RateLimit fields; and the failed-authentication throttle per client
address (the connection's, or an x-forwarded-for hop), with bounded memory.

Every configuration has an Envoy of its own for the module (buckets live in that Envoy's shared
data), and every test uses consumers, keys and client addresses of its own, so the tests of one
Envoy do not share a bucket. Clients are told apart by their source address: every address of
127.0.0.0/8 is loopback on Linux, so a connection from 127.0.0.2 is another client as Envoy sees it.

Slow plans (one token per hour) make "no refill during the test" a fact rather than a hope; the
refill tests use fast plans, sleep by design and judge the result against the measured time.
"""
from __future__ import annotations

import http.client
import json
import math
import re
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from support.failclosed import assert_failed_closed, assert_loaded, launch_selected
from support.harness import free_port, wait_until
from support.jwt import AUDIENCE, ISSUER, bearer, claims, ec_key, jwks
from support.keys import flip_char
from support.problems import apiguard_headers, assert_problem

WORKERS = 4

ALLOWED = "wasmcustom.apiguard_allowed_total"
RATE_LIMITED = "wasmcustom.apiguard_denied_rate_limited_total"
AUTH_FAILURES = "wasmcustom.apiguard_denied_too_many_auth_failures_total"
CONTENTION = "wasmcustom.apiguard_rate_limit_contention_total"
RO_RATE_LIMITED = "wasmcustom.apiguard_report_only_rate_limited_total"
RO_AUTH_FAILURES = "wasmcustom.apiguard_report_only_too_many_auth_failures_total"

HOUR, DAY = 3600, 86400

# plan name -> plan; w is RateLimit-Policy's seconds to refill the whole burst, rounded up
PLANS = {
    "burst20": {"rate": 1, "per": "hour", "burst": 20},       # w = 72000
    "burst5": {"rate": 1, "per": "hour", "burst": 5},         # w = 18000
    "refill": {"rate": 10, "per": "second", "burst": 20},     # w = 2
    "capped": {"rate": 10, "per": "second", "burst": 5},      # w = 0.5 -> 1
    "gold": {"rate": 600, "per": "minute", "burst": 100},     # w = 10
    "claimed": {"rate": 2, "per": "minute", "burst": 9},      # w = 270
    "free": {"rate": 1, "per": "day", "burst": 7},            # w = 604800
}


def window(plan: str) -> int:
    p = PLANS[plan]
    per = {"second": 1, "minute": 60, "hour": HOUR, "day": DAY}[p["per"]]
    return math.ceil(p["burst"] * per / p["rate"])


# ---------------------------------------------------------------------------------------------
# reading the answers

_SF_ITEM = re.compile(r'"(?P<name>[^"\\]*)"(?P<params>(?:;[a-z][a-z0-9_-]*=\d+)*)')


def sf_item(value: str | None, what: str) -> tuple[str, dict[str, int]]:
    """A structured-field item `"name";k=1;k2=2` (as RateLimit and RateLimit-Policy carry it)."""
    assert value is not None, f"no {what} field"
    m = _SF_ITEM.fullmatch(value.strip())
    assert m, f"{what} is not a quoted name with integer parameters: {value!r}"
    params = {}
    for part in m.group("params").split(";")[1:]:
        key, _, number = part.partition("=")
        assert key not in params, f"{what} repeats {key}: {value!r}"
        params[key] = int(number)
    return m.group("name"), params


def policy(resp) -> tuple[str, int, int]:
    """RateLimit-Policy: "<plan>";q=<burst>;w=<seconds> -> (plan, q, w)."""
    name, params = sf_item(resp.header("ratelimit-policy"), "RateLimit-Policy")
    assert set(params) == {"q", "w"}, f"RateLimit-Policy parameters {sorted(params)}, expected q and w"
    return name, params["q"], params["w"]


def ratelimit(resp) -> tuple[str, int, int]:
    """RateLimit: "<plan>";r=<tokens left>;t=<seconds until full> -> (plan, r, t)."""
    name, params = sf_item(resp.header("ratelimit"), "RateLimit")
    assert set(params) == {"r", "t"}, f"RateLimit parameters {sorted(params)}, expected r and t"
    return name, params["r"], params["t"]


def retry_after(resp) -> int:
    value = resp.header("retry-after")
    assert value is not None and re.fullmatch(r"\d+", value), f"Retry-After {value!r} is not whole seconds"
    seconds = int(value)
    assert seconds >= 1, f"Retry-After {seconds} < 1"
    return seconds


def no_ratelimit_fields(resp):
    assert resp.header("ratelimit") is None and resp.header("ratelimit-policy") is None, resp


def assert_rate_limited(resp, plan: str, *, secrets: tuple[str, ...] = ()) -> int:
    """429 rate_limited, problem+json, not forwarded, the plan's RateLimit fields; returns
    Retry-After."""
    assert_problem(resp, 429, "rate_limited", secrets=secrets)
    assert policy(resp) == (plan, PLANS[plan]["burst"], window(plan)), resp.headers
    name, _, _ = ratelimit(resp)
    assert name == plan
    return retry_after(resp)


def assert_auth_throttled(resp, *, secrets: tuple[str, ...] = ()) -> int:
    assert_problem(resp, 429, "too_many_auth_failures", secrets=secrets)
    return retry_after(resp)


def consumer_seen(resp) -> list[str] | None:
    return resp.upstream_saw["headers"].get("x-apiguard-consumer")


def key_header(key) -> dict:
    return {"x-api-key": key.key}


def stat(guard, name: str) -> int:
    return guard.envoy.stat(name) or 0


def wait_stat(guard, name: str, expected: int, what: str):
    """The counter reaches `expected` (counters are bumped as the request is decided, but read
    through the admin endpoint) and then is exactly that."""
    wait_until(lambda: stat(guard, name) >= expected, 5, f"{what} ({name} = {expected})")
    assert stat(guard, name) == expected, f"{name} = {stat(guard, name)}, expected {expected}"


def worker_connections(guard) -> dict[int, int]:
    """Connections each worker of the proxy has accepted (Envoy's per-worker listener stats)."""
    _, body = guard.envoy.admin("/stats?filter=downstream_cx_total")
    pat = re.compile(rf"^listener\.127\.0\.0\.1_{guard.port}\.worker_(\d+)\.downstream_cx_total: (\d+)$", re.M)
    return {int(w): int(c) for w, c in pat.findall(body)}


def fire(guard, n: int, headers, *, path: str = "/", threads: int = 32, source: str | None = None) -> list:
    """n requests at once: `threads` threads released together by a barrier, each sending its
    share one after another, every request on a new connection (so they land on all workers).
    `headers` is a dict, or a function of the request's index returning one."""
    threads = min(threads, n)
    barrier = threading.Barrier(threads)
    results: list = [None] * n
    errors: list[BaseException] = []

    def worker(first: int):
        barrier.wait()
        for i in range(first, n, threads):
            try:
                results[i] = guard.get(path, headers(i) if callable(headers) else headers, source=source)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, f"{len(errors)} requests failed: {errors[:3]}"
    return results


def statuses(resps) -> Counter:
    return Counter(r.status for r in resps)


def drain(guard, headers, *, path: str = "/", limit: int = 100, source: str | None = None):
    """Sends requests one after another until the first refusal; returns (admitted, the refusal,
    time before sending it, time after its answer)."""
    for admitted in range(limit):
        sent = time.monotonic()
        resp = guard.get(path, headers, source=source)
        answered = time.monotonic()
        if resp.status != 200:
            return admitted, resp, sent, answered
    raise AssertionError(f"{limit} requests admitted, no refusal")


# ---------------------------------------------------------------------------------------------
# the cast: keys from the real generator, one consumer per purpose

@pytest.fixture(scope="module")
def rk(keygen):
    names = {
        "exact1": "rl-exact-1", "exact2": "rl-exact-2", "exact3": "rl-exact-3",
        "ind_a": "rl-ind-a", "ind_b": "rl-ind-b",
        "shared1": "rl-shared", "shared2": "rl-shared",
        "cost": "rl-cost", "cost_partial": "rl-cost-partial",
        "hdr": "rl-hdr", "refill": "rl-refill", "capped": "rl-capped",
        "prec_key": "rl-prec-key", "prec_cons": "rl-prec-cons", "prec_default": "rl-prec-default",
        "order": "rl-order", "metrics": "rl-metrics",
        "unplanned": "rl-unplanned", "hdr_off": "rl-hdr-off",
        "ro": "rl-ro", "ro_free": "rl-ro-free",
    }
    return SimpleNamespace(**{attr: keygen(consumer) for attr, consumer in names.items()})


@pytest.fixture(scope="module")
def signer():
    return ec_key("rl-es256")


def jwt_block(signer, *extra_providers) -> dict:
    return {"providers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": jwks(signer)},
                          *extra_providers]}


# ---------------------------------------------------------------------------------------------
# (A) quotas: bucket_by consumer, response headers on, a default plan, a route with a cost

def quota_config(rk, signer) -> dict:
    return {
        "credentials": "api_key",
        "api_keys": {"keys": [
            rk.exact1.config_entry(plan="burst20"),
            rk.exact2.config_entry(plan="burst20"),
            rk.exact3.config_entry(plan="burst20"),
            rk.ind_a.config_entry(plan="burst5"),
            rk.ind_b.config_entry(plan="burst5"),
            rk.shared1.entry,                       # plan from rate_limits.consumers
            rk.shared2.entry,
            rk.cost.config_entry(plan="burst20"),
            rk.cost_partial.config_entry(plan="burst5"),
            rk.hdr.config_entry(plan="burst5"),
            rk.refill.config_entry(plan="refill"),
            rk.capped.config_entry(plan="capped"),
            rk.prec_key.config_entry(plan="gold"),  # its consumer is mapped to "claimed" too
            rk.prec_cons.entry,
            rk.prec_default.entry,
            rk.order.config_entry(plan="burst5"),
            rk.metrics.config_entry(plan="burst5"),
        ]},
        "jwt": jwt_block(signer),
        "routes": [
            {"prefix": "/expensive", "cost": 5},    # no credentials: the top-level policy applies
            {"prefix": "/jwt", "credentials": "jwt"},
            {"prefix": "/both", "credentials": "both"},
        ],
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
        "rate_limits": {
            "plans": PLANS,
            "default_plan": "free",
            "consumers": {"rl-shared": "burst5", "rl-prec-key": "claimed", "rl-prec-cons": "claimed",
                          "jwt-mapped": "gold"},
            "plan_claim": "plan",
            "bucket_by": "consumer",
            "on_store_contention": "deny",
            "response_headers": True,
        },
    }


@pytest.fixture(scope="module")
def quota(new_guard, rk, signer):
    guard = new_guard(quota_config(rk, signer), concurrency=WORKERS)
    yield guard
    guard.stop()


def test_exactly_the_burst_is_admitted_when_many_connections_race(quota, rk):
    """One key, burst 20, one token an hour: of 80 requests sent at once on 80 connections spread
    over the four workers, exactly 20 pass (no over-admission from races, no under-admission from
    lost updates or contention), and the other 60 get 429."""
    before = worker_connections(quota)
    resps = fire(quota, 80, key_header(rk.exact1), threads=40)
    after = worker_connections(quota)
    busy = [w for w in after if after[w] > before.get(w, 0)]
    assert len(busy) >= 2, f"the connections did not spread over the workers: {before} -> {after}"
    got = statuses(resps)
    assert got == {200: 20, 429: 60}, (f"expected exactly 20 admitted, got {dict(got)} "
                                       f"{[(r.status, r.body[:200]) for r in resps if r.status not in (200, 429)]}; "
                                       f"contention counter {stat(quota, CONTENTION)}")
    for r in resps:
        if r.status == 200:
            assert consumer_seen(r) == ["rl-exact-1"]
        else:
            assert_rate_limited(r, "burst20", secrets=(rk.exact1.key,))
    forwarded = [r for r in quota.upstream.requests
                 if r["headers"].get("x-apiguard-consumer") == ["rl-exact-1"]]
    assert len(forwarded) == 20


def test_two_keys_racing_together_each_get_exactly_their_burst(quota, rk):
    """Two consumers' requests interleaved, 60 each, all at once: each gets exactly its 20."""
    def headers(i):
        return key_header(rk.exact2 if i % 2 else rk.exact3)
    resps = fire(quota, 120, headers, threads=40)
    per_key = Counter((("exact2" if i % 2 else "exact3"), r.status) for i, r in enumerate(resps))
    assert per_key == {("exact2", 200): 20, ("exact2", 429): 40, ("exact3", 200): 20, ("exact3", 429): 40}, (
        f"{dict(per_key)}; contention counter {stat(quota, CONTENTION)}")


def test_two_keys_have_independent_buckets(quota, rk):
    admitted, refusal, _, _ = drain(quota, key_header(rk.ind_a))
    assert admitted == 5
    assert_rate_limited(refusal, "burst5", secrets=(rk.ind_a.key,))
    # ind_b is untouched by ind_a's empty bucket
    admitted, refusal, _, _ = drain(quota, key_header(rk.ind_b))
    assert admitted == 5
    assert_rate_limited(refusal, "burst5")
    assert quota.get("/", key_header(rk.ind_a)).status == 429


def test_keys_of_one_consumer_share_its_bucket(quota, rk):
    """bucket_by consumer: rl-shared's two keys draw from one bucket of 5 (plan from consumers)."""
    resps = [quota.get("/", key_header(rk.shared1 if i % 2 else rk.shared2)) for i in range(10)]
    assert [r.status for r in resps] == [200] * 5 + [429] * 5, [r.status for r in resps]
    for r in resps[:5]:
        assert consumer_seen(r) == ["rl-shared"]
        assert policy(r) == ("burst5", 5, window("burst5"))
    for r in resps[5:]:
        assert_rate_limited(r, "burst5")


def test_a_route_cost_takes_that_many_tokens(quota, rk):
    """cost 5 on a burst of 20: four requests, then 429 until five tokens are back (5 hours)."""
    resps = [quota.get("/expensive/report", key_header(rk.cost)) for _ in range(5)]
    assert [r.status for r in resps] == [200, 200, 200, 200, 429], [r.status for r in resps]
    assert [ratelimit(r)[1] for r in resps[:4]] == [15, 10, 5, 0]
    ra = assert_rate_limited(resps[4], "burst20", secrets=(rk.cost.key,))
    assert 5 * HOUR - 10 <= ra <= 5 * HOUR, f"Retry-After {ra}: five tokens at one an hour"
    # the bucket is empty for the route of cost 1 too
    ra = assert_rate_limited(quota.get("/", key_header(rk.cost)), "burst20")
    assert HOUR - 10 <= ra <= HOUR, ra
    # a route without `credentials` keeps the top-level policy
    resp = quota.get("/expensive/report")
    assert_problem(resp, 401, "missing_credential")


def test_a_request_costing_more_than_is_left_takes_nothing(quota, rk):
    """3 tokens left and a request of cost 5: 429 with Retry-After for the 2 missing tokens; the
    3 tokens are still there for three requests of cost 1."""
    for expected_left in (4, 3):
        resp = quota.get("/", key_header(rk.cost_partial))
        assert resp.status == 200, resp
        assert ratelimit(resp)[1] == expected_left
    refused = quota.get("/expensive", key_header(rk.cost_partial))
    ra = assert_rate_limited(refused, "burst5")
    assert 2 * HOUR - 10 <= ra <= 2 * HOUR, f"Retry-After {ra}: two more tokens at one an hour"
    assert ratelimit(refused)[1] == 3
    for expected_left in (2, 1, 0):
        resp = quota.get("/", key_header(rk.cost_partial))
        assert resp.status == 200, resp
        assert ratelimit(resp)[1] == expected_left
    ra = assert_rate_limited(quota.get("/", key_header(rk.cost_partial)), "burst5")
    assert HOUR - 10 <= ra <= HOUR, ra


def test_allowed_and_refused_responses_carry_the_ratelimit_fields(quota, rk):
    w = window("burst5")
    for n in range(1, 6):
        resp = quota.get("/items", key_header(rk.hdr))
        assert resp.status == 200, resp
        assert policy(resp) == ("burst5", 5, w)
        name, r, t = ratelimit(resp)
        assert (name, r) == ("burst5", 5 - n)
        # n tokens short of full at one an hour, rounded up
        assert n * HOUR - 5 <= t <= n * HOUR, f"t={t} after {n} requests"
        assert "ratelimit" not in resp.upstream_saw["headers"]
    refused = quota.get("/items", key_header(rk.hdr), request_id="rl-hdr-refused")
    doc = assert_problem(refused, 429, "rate_limited", secrets=(rk.hdr.key,))
    assert doc["request_id"] == "rl-hdr-refused"
    assert doc["type"] == "urn:apiguard:problem:rate_limited"
    assert doc["status"] == 429
    ra = retry_after(refused)
    assert HOUR - 5 <= ra <= HOUR, f"Retry-After {ra}: one token at one an hour"
    assert policy(refused) == ("burst5", 5, w)
    name, r, t = ratelimit(refused)
    assert (name, r) == ("burst5", 0)
    assert w - 5 <= t <= w, t
    # exempt paths are not counted and carry no fields
    healthz = quota.get("/healthz", key_header(rk.hdr))
    assert healthz.status == 200
    no_ratelimit_fields(healthz)


def test_the_plan_comes_from_key_then_consumers_then_claim_then_default(quota, rk, signer):
    # api_keys.keys[].plan wins over rate_limits.consumers
    assert policy(quota.get("/", key_header(rk.prec_key))) == ("gold", 100, 10)
    # rate_limits.consumers
    assert policy(quota.get("/", key_header(rk.prec_cons))) == ("claimed", 9, 270)
    # neither: default_plan
    assert policy(quota.get("/", key_header(rk.prec_default))) == ("free", 7, 7 * DAY)
    # JWT callers: the plan claim, when it names a configured plan
    resp = quota.get("/jwt", bearer(signer.sign(claims("jwt-claimed", plan="claimed"))))
    assert resp.status == 200, resp
    assert policy(resp) == ("claimed", 9, 270)
    # a claim naming no configured plan is ignored: default plan
    resp = quota.get("/jwt", bearer(signer.sign(claims("jwt-platinum", plan="platinum"))))
    assert resp.status == 200, resp
    assert policy(resp)[0] == "free"
    # no claim: default plan
    resp = quota.get("/jwt", bearer(signer.sign(claims("jwt-no-claim"))))
    assert resp.status == 200, resp
    assert policy(resp)[0] == "free"
    # rate_limits.consumers (by subject) wins over the claim
    resp = quota.get("/jwt", bearer(signer.sign(claims("jwt-mapped", plan="claimed"))))
    assert resp.status == 200, resp
    assert policy(resp)[0] == "gold"


def test_jwt_callers_are_limited_by_subject_across_tokens(quota, signer):
    """Nine different tokens of one subject (plan "claimed", burst 9) pass; the tenth is 429."""
    resps = [quota.get("/jwt", bearer(signer.sign(claims("jwt-bucket", plan="claimed")))) for _ in range(10)]
    assert [r.status for r in resps] == [200] * 9 + [429], [r.status for r in resps]
    assert_rate_limited(resps[9], "claimed")
    # another subject is not affected
    assert quota.get("/jwt", bearer(signer.sign(claims("jwt-other", plan="claimed")))).status == 200


def test_a_refused_request_takes_no_quota(quota, rk, signer):
    """Quota is taken only after authentication succeeded: a valid key next to a bad token, or
    without the token the route needs, is refused without touching the key's bucket."""
    expired = signer.sign(claims("order", iat=int(time.time()) - 1000, exp=int(time.time()) - 500))
    for _ in range(6):
        resp = quota.get("/both", {**key_header(rk.order), **bearer(expired)})
        assert resp.status == 401 and resp.json()["code"] == "token_expired", resp
    for _ in range(3):
        resp = quota.get("/both", key_header(rk.order))
        assert resp.status == 401 and resp.json()["code"] == "missing_credential", resp
    admitted, refusal, _, _ = drain(quota, key_header(rk.order))
    assert admitted == 5, "refused requests took tokens from the key's bucket"
    assert_rate_limited(refusal, "burst5")


def test_bucket_refills_at_the_configured_rate(quota, rk):
    """10 tokens a second, burst 20: drained, then after ~0.5 s about 5 requests pass, within
    one token of what the measured time allows."""
    resp = quota.get("/", key_header(rk.refill))
    assert policy(resp) == ("refill", 20, 2)
    admitted, refusal, t0_sent, t0_answered = drain(quota, key_header(rk.refill))
    assert admitted >= 19, admitted
    assert assert_rate_limited(refusal, "refill") == 1   # 0.1 s for the next token, rounded up
    assert ratelimit(refusal)[2] == 2                    # < 2 s until full
    time.sleep(0.5)
    t1_start = time.monotonic()
    resps = fire(quota, 15, key_header(rk.refill), threads=15)
    t1_end = time.monotonic()
    got = statuses(resps)
    assert set(got) <= {200, 429}, got
    admitted = got[200]
    rate = 10
    # at the refusal's decision the bucket held less than one token (and at least none)
    lowest = math.floor(rate * (t1_start - t0_answered))
    highest = math.floor(1 + rate * (t1_end - t0_sent))
    assert lowest - 1 <= admitted <= highest + 1, (
        f"{admitted} admitted after {t1_start - t0_answered:.3f}-{t1_end - t0_sent:.3f} s of refill "
        f"at {rate}/s: expected {lowest}..{highest} (±1)")


def test_bucket_refills_no_further_than_its_burst(quota, rk):
    """10 tokens a second, burst 5: after a second (10 tokens' worth) only the burst is there."""
    first = quota.get("/", key_header(rk.capped))
    assert policy(first) == ("capped", 5, 1)            # 0.5 s to refill, rounded up
    assert ratelimit(first)[1:] == (4, 1)               # 0.1 s until full, rounded up
    admitted, refusal, _, _ = drain(quota, key_header(rk.capped))
    assert_rate_limited(refusal, "capped")
    time.sleep(1.0)
    t1_start = time.monotonic()
    resps = fire(quota, 15, key_header(rk.capped), threads=15)
    elapsed = time.monotonic() - t1_start
    admitted = statuses(resps)[200]
    # the full burst, plus what refilled while the burst itself was being answered
    assert 5 <= admitted <= 5 + math.floor(10 * elapsed) + 1, (admitted, elapsed)


def test_metrics_count_admissions_and_rate_limited_denials(new_guard, rk, signer):
    # An Envoy of its own: admissions are added to the counter on the next tick, so another
    # test's could still be on their way into a shared one's.
    guard = new_guard(quota_config(rk, signer), concurrency=WORKERS)
    try:
        resps = [guard.get("/", key_header(rk.metrics)) for _ in range(8)]
        assert [r.status for r in resps] == [200] * 5 + [429] * 3
        wait_stat(guard, RATE_LIMITED, 3, "rate-limited denials")
        wait_stat(guard, ALLOWED, 5, "allowed requests")
    finally:
        guard.stop()


# ---------------------------------------------------------------------------------------------
# (B) bucket_by key, no default plan, no fields on allowed responses

def per_key_config(rk) -> dict:
    return {
        "credentials": "api_key",
        "api_keys": {"keys": [rk.shared1.entry, rk.shared2.entry, rk.unplanned.entry,
                              rk.hdr_off.config_entry(plan="burst5")]},
        "https": {"required": False},
        "rate_limits": {
            "plans": {"burst5": PLANS["burst5"], "burst20": PLANS["burst20"]},
            "consumers": {"rl-shared": "burst5"},
            "bucket_by": "key",
            "response_headers": False,
        },
    }


@pytest.fixture(scope="module")
def per_key(new_guard, rk):
    guard = new_guard(per_key_config(rk), concurrency=WORKERS)
    yield guard
    guard.stop()


def test_bucket_by_key_gives_each_key_of_a_consumer_its_own_bucket(per_key, rk):
    resps = [per_key.get("/", key_header(rk.shared1 if i % 2 else rk.shared2)) for i in range(14)]
    by_key = Counter((i % 2, r.status) for i, r in enumerate(resps))
    assert by_key == {(0, 200): 5, (1, 200): 5, (0, 429): 2, (1, 429): 2}, dict(by_key)
    for r in resps:
        if r.status == 200:
            assert consumer_seen(r) == ["rl-shared"]
        else:
            assert_rate_limited(r, "burst5")


def test_without_a_default_plan_a_caller_without_plan_is_not_limited(per_key, rk):
    resps = fire(per_key, 40, key_header(rk.unplanned), threads=20)
    assert statuses(resps) == {200: 40}


def test_response_headers_false_keeps_the_fields_off_allowed_responses_only(per_key, rk):
    for _ in range(5):
        resp = per_key.get("/", key_header(rk.hdr_off))
        assert resp.status == 200, resp
        no_ratelimit_fields(resp)
    refused = per_key.get("/", key_header(rk.hdr_off))
    ra = assert_rate_limited(refused, "burst5")
    assert HOUR - 5 <= ra <= HOUR
    assert ratelimit(refused)[1] == 0


# ---------------------------------------------------------------------------------------------
# (C) report-only

def report_only_config(rk) -> dict:
    return {
        "credentials": "api_key",
        "api_keys": {"keys": [rk.ro.config_entry(plan="burst3"), rk.ro_free.entry]},
        "https": {"required": False},
        "report_only": True,
        "rate_limits": {"plans": {"burst3": {"rate": 1, "per": "hour", "burst": 3}}},
        "failed_auth_limit": {"rate": 1, "per": "hour", "burst": 3, "client_address": "connection"},
    }


@pytest.fixture(scope="module")
def report_only(new_guard, rk):
    guard = new_guard(report_only_config(rk), concurrency=WORKERS)
    yield guard
    guard.stop()


def would_deny(resp) -> list[str] | None:
    return resp.upstream_saw["headers"].get("x-apiguard-would-deny")


def test_report_only_forwards_over_quota_requests_with_would_deny(report_only, rk):
    before = stat(report_only, RO_RATE_LIMITED)
    resps = [report_only.get("/", key_header(rk.ro)) for _ in range(5)]
    assert [r.status for r in resps] == [200] * 5, resps
    assert [would_deny(r) for r in resps] == [None] * 3 + [["rate_limited"]] * 2
    for r in resps[:3]:
        assert consumer_seen(r) == ["rl-ro"]
    wait_stat(report_only, RO_RATE_LIMITED, before + 2, "report-only rate_limited")
    assert stat(report_only, RATE_LIMITED) == 0


def test_report_only_forwards_throttled_clients_with_would_deny(report_only, rk, keys):
    before = stat(report_only, RO_AUTH_FAILURES)
    client, other = "127.0.0.40", "127.0.0.41"
    for _ in range(3):
        resp = report_only.get("/", key_header(keys.stranger), source=client)
        assert would_deny(resp) == ["unknown_api_key"]
    resp = report_only.get("/", key_header(keys.stranger), source=client)
    assert would_deny(resp) == ["too_many_auth_failures"]
    # a valid key from the throttled client would be refused too
    resp = report_only.get("/", key_header(rk.ro_free), source=client)
    assert would_deny(resp) == ["too_many_auth_failures"]
    assert "x-api-key" not in resp.upstream_saw["headers"]
    # another client is not throttled
    resp = report_only.get("/", key_header(rk.ro_free), source=other)
    assert apiguard_headers(resp.upstream_saw) == {"x-apiguard-consumer": ["rl-ro-free"]}
    wait_stat(report_only, RO_AUTH_FAILURES, before + 2, "report-only too_many_auth_failures")
    assert stat(report_only, AUTH_FAILURES) == 0


# ---------------------------------------------------------------------------------------------
# (D) failed-authentication throttle by connection address

REMOTE_ISSUER = "https://remote-idp.apiguard.test/"


def auth_config(keys, signer) -> dict:
    return {
        "credentials": "api_key",
        "api_keys": {"keys": keys.entries()},
        "jwt": jwt_block(signer, {"issuer": REMOTE_ISSUER,
                                  "remote_jwks": {"cluster": "idp", "path": "/jwks", "unknown_kid_wait_ms": 0}}),
        "routes": [
            {"prefix": "/jwt", "credentials": "jwt"},
            {"prefix": "/both", "credentials": "both", "bind_claim": "azp"},
        ],
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
        # one token every 2 s, burst 5
        "failed_auth_limit": {"rate": 30, "per": "minute", "burst": 5, "client_address": "connection"},
    }


@pytest.fixture(scope="module")
def auth(new_guard, keys, signer):
    # the remote provider's JWKS cluster points at a port nobody listens on: it never has keys
    # `connection` means the TCP peer only where the connection manager says so (an edge proxy):
    # otherwise Envoy takes the downstream address from x-forwarded-for (see the next test).
    guard = new_guard(auth_config(keys, signer), extra_clusters={"idp": free_port()}, concurrency=WORKERS,
                      use_remote_address=True)
    yield guard
    guard.stop()


def test_every_kind_of_refused_api_key_takes_a_token(auth, keys):
    client = "127.0.0.10"
    refusals = [
        ({}, "missing_credential"),
        ({"x-api-key": flip_char(keys.alice.key, 12)}, "malformed_api_key"),
        (key_header(keys.stranger), "unknown_api_key"),
        (key_header(keys.bob), "revoked_api_key"),
        (key_header(keys.carol), "expired_api_key"),
    ]
    for headers, code in refusals:
        assert_problem(auth.get("/", headers, source=client), 401, code)
    ra = assert_auth_throttled(auth.get("/", key_header(keys.stranger), source=client))
    assert ra <= 2, f"Retry-After {ra}: a token comes every 2 s"


def test_jwt_refusals_and_binding_mismatches_take_tokens_successes_do_not(auth, keys, signer):
    client = "127.0.0.11"
    now = int(time.time())
    failures = [
        ("/jwt", bearer("not-a-token"), "malformed_token"),
        ("/jwt", bearer(signer.sign(claims("u", iat=now - 1000, exp=now - 500))), "token_expired"),
        ("/jwt", bearer(signer.sign(claims("u", iss="https://evil.example/"))), "unknown_issuer"),
        ("/both", {**key_header(keys.alice), **bearer(signer.sign(claims("u", azp="mallory")))},
         "credential_binding_mismatch"),
    ]
    for path, headers, code in failures:
        resp = auth.get(path, headers, source=client)
        assert resp.status == 401 and resp.json()["code"] == code, resp
    # successes take nothing
    for _ in range(5):
        ok = auth.get("/both", {**key_header(keys.alice), **bearer(signer.sign(claims("u", azp="alice")))},
                      source=client)
        assert ok.status == 200, ok
        assert auth.get("/jwt", bearer(signer.sign(claims("u"))), source=client).status == 200
    assert_problem(auth.get("/", key_header(keys.stranger), source=client), 401, "unknown_api_key")
    assert_auth_throttled(auth.get("/jwt", bearer(signer.sign(claims("u"))), source=client))


def test_the_retryable_no_verification_key_takes_no_token(auth, keys):
    client = "127.0.0.12"
    remote = ec_key("remote-k1")
    for _ in range(8):
        resp = auth.get("/jwt", bearer(remote.sign(claims("r", iss=REMOTE_ISSUER))), source=client)
        assert resp.status == 503 and resp.json()["code"] == "no_verification_key", resp
    for _ in range(5):
        assert_problem(auth.get("/", key_header(keys.stranger), source=client), 401, "unknown_api_key")
    assert_auth_throttled(auth.get("/", key_header(keys.stranger), source=client))


def test_a_throttled_client_with_a_valid_key_is_refused_until_its_bucket_refills(auth, keys):
    client = "127.0.0.13"
    for _ in range(5):
        assert auth.get("/", key_header(keys.stranger), source=client).status == 401
    refused = auth.get("/", key_header(keys.alice), source=client)
    ra = assert_auth_throttled(refused, secrets=(keys.alice.key,))
    assert ra <= 2, f"Retry-After {ra}: a token comes every 2 s"
    throttled_at = time.monotonic()
    # the cheap hygiene checks come first: exempt paths and credentials in the query string
    assert auth.get("/healthz", key_header(keys.alice), source=client).status == 200
    assert_problem(auth.get("/?api_key=x", key_header(keys.alice), source=client), 400, "credential_in_query")
    # Retry-After is honest: after it, the valid key passes
    time.sleep(max(0.0, ra - (time.monotonic() - throttled_at)) + 0.05)
    ok = auth.get("/", key_header(keys.alice), source=client)
    assert ok.status == 200, f"still refused {time.monotonic() - throttled_at:.2f} s after Retry-After {ra}: {ok!r}"
    assert consumer_seen(ok) == ["alice"]
    # the one token that came back is taken by the next failure, then the client is throttled again
    assert auth.get("/", key_header(keys.stranger), source=client).status == 401
    assert_auth_throttled(auth.get("/", key_header(keys.alice), source=client))


def test_other_clients_are_not_affected(auth, keys):
    throttled, other = "127.0.0.14", "127.0.0.15"
    for _ in range(5):
        assert auth.get("/", key_header(keys.stranger), source=throttled).status == 401
    assert_auth_throttled(auth.get("/", key_header(keys.alice), source=throttled))
    ok = auth.get("/", key_header(keys.alice), source=other)
    assert ok.status == 200 and consumer_seen(ok) == ["alice"], ok
    assert_problem(auth.get("/", key_header(keys.stranger), source=other), 401, "unknown_api_key")
    assert_auth_throttled(auth.get("/", key_header(keys.alice), source=throttled))


def test_successful_requests_take_nothing_from_the_client_bucket(auth, keys):
    client = "127.0.0.16"
    resps = fire(auth, 30, key_header(keys.alice), threads=10, source=client)
    assert statuses(resps) == {200: 30}
    for _ in range(5):
        assert auth.get("/", key_header(keys.stranger), source=client).status == 401
    assert_auth_throttled(auth.get("/", key_header(keys.stranger), source=client))


def test_concurrent_failures_of_one_client_all_count(auth, keys):
    """20 failures at once from one client on many connections, spread over the workers: at least
    the burst is answered 401 (the bucket is looked at before the credential and takes a token
    after it failed, so racing failures may all get through), and none of the failures is lost:
    afterwards the client is throttled."""
    client = "127.0.0.18"
    resps = fire(auth, 20, key_header(keys.stranger), threads=20, source=client)
    got = statuses(resps)
    assert set(got) <= {401, 429} and got[401] >= 5, got
    assert_auth_throttled(auth.get("/", key_header(keys.alice), source=client))


def test_connection_mode_ignores_x_forwarded_for(auth, keys):
    """`connection` with use_remote_address (the documented setting): the TCP peer; a client that
    varies x-forwarded-for gets no fresh bucket."""
    client = "127.0.0.17"
    for i in range(5):
        resp = auth.get("/", {**key_header(keys.stranger), "x-forwarded-for": f"10.17.0.{i}"}, source=client)
        assert resp.status == 401, resp
    resp = auth.get("/", {**key_header(keys.stranger), "x-forwarded-for": "10.17.0.99"}, source=client)
    assert_auth_throttled(resp)
    resp = auth.get("/", {**key_header(keys.alice), "x-forwarded-for": "10.17.1.1"}, source=client)
    assert_auth_throttled(resp)


def test_metrics_count_throttled_requests(auth, keys):
    client = "127.0.0.19"
    before = stat(auth, AUTH_FAILURES)
    for _ in range(5):
        assert auth.get("/", key_header(keys.stranger), source=client).status == 401
    for _ in range(3):
        assert_auth_throttled(auth.get("/", key_header(keys.alice), source=client))
    wait_stat(auth, AUTH_FAILURES, before + 3, "too_many_auth_failures denials")


# ---------------------------------------------------------------------------------------------
# (E) failed-authentication throttle by x-forwarded-for hop

def xff_config(keys, trusted_hops: int, **extra) -> dict:
    return {
        "credentials": "api_key",
        "api_keys": {"keys": keys.entries()},
        "https": {"required": False},
        "failed_auth_limit": {"rate": 1, "per": "hour", "burst": 3, "client_address": "x_forwarded_for",
                              "trusted_hops": trusted_hops, **extra},
    }


@pytest.fixture(scope="module")
def xff0(new_guard, keys):
    guard = new_guard(xff_config(keys, 0), concurrency=WORKERS)
    yield guard
    guard.stop()


@pytest.fixture(scope="module")
def xff1(new_guard, keys):
    guard = new_guard(xff_config(keys, 1), concurrency=WORKERS)
    yield guard
    guard.stop()


def xff(value: str, key) -> dict:
    return {"x-forwarded-for": value, **key_header(key)}


def test_trusted_hops_0_takes_the_rightmost_entry(xff0, keys):
    for _ in range(3):
        assert xff0.get("/", xff("198.51.100.1", keys.stranger)).status == 401
    # entries left of the client's are the client's own claims: they change nothing
    assert_auth_throttled(xff0.get("/", xff("203.0.113.50, 198.51.100.1", keys.stranger)))
    assert_auth_throttled(xff0.get("/", xff("198.51.100.1", keys.alice)))
    assert_auth_throttled(xff0.get("/", xff("192.0.2.1,198.51.100.1", keys.alice)))
    # another rightmost entry is another client, whatever the connection
    assert_problem(xff0.get("/", xff("198.51.100.2", keys.stranger)), 401, "unknown_api_key")
    ok = xff0.get("/", xff("198.51.100.1, 198.51.100.3", keys.alice))
    assert ok.status == 200 and consumer_seen(ok) == ["alice"], ok


def test_trusted_hops_0_without_the_header_uses_the_connection_address(xff0, keys):
    client = "127.0.0.20"
    for _ in range(3):
        assert xff0.get("/", key_header(keys.stranger), source=client).status == 401
    assert_auth_throttled(xff0.get("/", key_header(keys.alice), source=client))
    # the same connection address with a forwarded client is that client
    ok = xff0.get("/", xff("198.51.100.20", keys.alice), source=client)
    assert ok.status == 200, ok
    # another connection address without the header is another client
    assert xff0.get("/", key_header(keys.alice), source="127.0.0.21").status == 200


def test_trusted_hops_1_takes_the_second_entry_from_the_right(xff1, keys):
    for proxy in ("10.10.0.1", "10.10.0.2", "10.10.0.3"):
        assert xff1.get("/", xff(f"192.0.2.1, {proxy}", keys.stranger)).status == 401
    # the same client through another trusted proxy, or with more entries on its left
    assert_auth_throttled(xff1.get("/", xff("192.0.2.1, 10.10.0.9", keys.alice)))
    assert_auth_throttled(xff1.get("/", xff("6.6.6.6, 192.0.2.1, 10.10.0.4", keys.alice)))
    assert_auth_throttled(xff1.get("/", xff("192.0.2.1,10.10.0.1", keys.stranger)))
    # another client through the same proxy
    assert_problem(xff1.get("/", xff("192.0.2.2, 10.10.0.1", keys.stranger)), 401, "unknown_api_key")
    assert xff1.get("/", xff("192.0.2.3, 10.10.0.1", keys.alice)).status == 200


def test_trusted_hops_1_with_too_few_entries_uses_the_connection_address(xff1, keys):
    client = "127.0.0.22"
    # no entry where two are needed: the client is the connection (Envoy's downstream address,
    # here the TCP peer: without use_remote_address Envoy would take it from a lone entry)
    for _ in range(3):
        assert xff1.get("/", key_header(keys.stranger), source=client).status == 401
    assert_auth_throttled(xff1.get("/", key_header(keys.stranger), source=client))
    assert_auth_throttled(xff1.get("/", key_header(keys.alice), source=client))
    # enough entries: the forwarded client, not the connection
    ok = xff1.get("/", xff("192.0.2.70, 10.10.0.1", keys.alice), source=client)
    assert ok.status == 200, ok
    # another connection with one entry is another client
    assert xff1.get("/", xff("192.0.2.70", keys.alice), source="127.0.0.23").status == 200


# ---------------------------------------------------------------------------------------------
# (F) flooding with distinct addresses

FLOOD_SLOTS = 64


@pytest.fixture(scope="module")
def flood_guard(new_guard, keys):
    guard = new_guard(xff_config(keys, 0, max_tracked_clients=FLOOD_SLOTS), concurrency=WORKERS)
    yield guard
    guard.stop()


def flood(guard, addresses: list[str], headers: dict, threads: int = 8) -> Counter:
    """One request per address in x-forwarded-for, on `threads` keep-alive connections."""
    got: Counter = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(chunk: list[str]):
        conn = http.client.HTTPConnection("127.0.0.1", guard.port, timeout=10)
        try:
            for address in chunk:
                for attempt in range(2):
                    try:
                        conn.request("GET", "/", headers={**headers, "x-forwarded-for": address})
                        resp = conn.getresponse()
                        resp.read()
                        with lock:
                            got[resp.status] += 1
                        break
                    except (http.client.HTTPException, OSError) as e:
                        conn.close()   # Envoy closed the keep-alive connection: reconnect once
                        if attempt:
                            errors.append(e)
        finally:
            conn.close()

    pool = [threading.Thread(target=run, args=(addresses[i::threads],)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors[:3]
    return got


def memory(guard) -> tuple[int, int]:
    """(RSS of the Envoy process, bytes allocated on Envoy's heap, from the admin /memory)."""
    with open(f"/proc/{guard.envoy.proc.pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    allocated = int(json.loads(guard.envoy.admin("/memory")[1])["allocated"])
    return rss_kib * 1024, allocated


def addresses(start: int, count: int) -> list[str]:
    return [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(start, start + count)]


def test_flooding_with_distinct_addresses_keeps_memory_bounded_and_the_throttle(flood_guard, keys):
    target = "203.0.113.7"
    for _ in range(3):
        assert flood_guard.get("/", xff(target, keys.stranger)).status == 401
    assert_auth_throttled(flood_guard.get("/", xff(target, keys.alice)))

    # warm-up: more addresses than slots, so every slot and code path exists before measuring
    got = flood(flood_guard, addresses(1, 2000), key_header(keys.stranger))
    assert set(got) <= {401, 429}, got
    rss0, heap0 = memory(flood_guard)
    got = flood(flood_guard, addresses(100_000, 8000), key_header(keys.stranger))
    assert set(got) <= {401, 429}, got
    assert got[429] > 0, "8000 failures on 64 slots of burst 3 throttled nobody"
    rss1, heap1 = memory(flood_guard)
    # Measured: ~±20 KB of heap and ≤ 50 KB of RSS over such a flood when the slots are bounded;
    # with a slot per address (max_tracked_clients 16777216) the same flood adds ~990 KB of heap.
    assert heap1 - heap0 < 512 * 1024, f"Envoy's heap grew by {heap1 - heap0} bytes for 8000 addresses"
    assert rss1 - rss0 < 8 * 1024 * 1024, f"Envoy's RSS grew by {rss1 - rss0} bytes for 8000 addresses"

    # the client throttled before the flood is still throttled, with a valid key too
    assert_auth_throttled(flood_guard.get("/", xff(target, keys.alice)))
    assert_auth_throttled(flood_guard.get("/", xff(target, keys.stranger)))


# ---------------------------------------------------------------------------------------------
# configuration errors fail closed

DIGEST = "0" * 63 + "1"


def rl_base(*, key: dict | None = None, rate_limits: dict | None = None, failed_auth: dict | None = None,
            routes: list | None = None, drop: tuple[str, ...] = ()) -> dict:
    cfg = {
        "credentials": "api_key",
        "api_keys": {"keys": [{"sha256": DIGEST, "consumer": "alice", **(key or {})}]},
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
        "routes": routes if routes is not None else [{"prefix": "/search", "cost": 2}],
        "rate_limits": {
            "plans": {"free": {"rate": 10, "per": "second", "burst": 20},
                      "gold": {"rate": 600, "per": "minute", "burst": 100}},
            "default_plan": "free",
            "consumers": {"alice": "gold"},
            **(rate_limits or {}),
        },
        "failed_auth_limit": {"rate": 10, "per": "minute", "burst": 20, "client_address": "connection",
                              **(failed_auth or {})},
    }
    for name in drop:
        cfg.pop(name)
    return cfg


def plan(**fields) -> dict:
    return {"plans": {"free": {"rate": 10, "per": "second", "burst": 20, **fields}}, "consumers": {}}


# (id, configuration, acceptable field paths, text the line must mention)
CONFIG_CASES = [
    ("unknown-default-plan", rl_base(rate_limits={"default_plan": "platinum"}),
     {"rate_limits.default_plan"}, None),
    ("unknown-consumer-plan", rl_base(rate_limits={"consumers": {"alice": "platinum"}}),
     {"rate_limits.consumers.alice", "rate_limits.consumers"}, None),
    ("unknown-key-plan", rl_base(key={"plan": "platinum"}), {"api_keys.keys[0].plan"}, None),
    ("key-plan-without-rate-limits", rl_base(key={"plan": "free"}, routes=[], drop=("rate_limits",)),
     {"api_keys.keys[0].plan"}, None),
    ("bad-per", rl_base(rate_limits=plan(per="fortnight")), {"rate_limits.plans.free.per"}, None),
    ("rate-zero", rl_base(rate_limits=plan(rate=0)), {"rate_limits.plans.free.rate"}, None),
    ("burst-zero", rl_base(rate_limits=plan(burst=0)), {"rate_limits.plans.free.burst"}, None),
    ("rate-not-integer", rl_base(rate_limits=plan(rate=1.5)), {"rate_limits.plans.free.rate"}, None),
    ("unknown-field-in-plan", rl_base(rate_limits=plan(brust=5)),
     {"rate_limits.plans.free", "rate_limits.plans.free.brust"}, "brust"),
    ("bad-bucket-by", rl_base(rate_limits={"bucket_by": "ip"}), {"rate_limits.bucket_by"}, None),
    ("cost-zero", rl_base(routes=[{"prefix": "/search", "cost": 0}]), {"routes[0].cost"}, None),
    ("bad-client-address", rl_base(failed_auth={"client_address": "x-real-ip"}),
     {"failed_auth_limit.client_address"}, None),
    ("failed-auth-rate-zero", rl_base(failed_auth={"rate": 0}), {"failed_auth_limit.rate"}, None),
    ("failed-auth-bad-per", rl_base(failed_auth={"per": "week"}), {"failed_auth_limit.per"}, None),
]

VALID_CASES = [
    ("issue-example", {
        "credentials": "api_key",
        "api_keys": {"keys": [{"sha256": DIGEST, "consumer": "alice", "plan": "gold"},
                              {"sha256": "ab" * 32, "consumer": "bob"}]},
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
        "routes": [{"prefix": "/search", "cost": 2}, {"prefix": "/admin", "credentials": "api_key", "cost": 3}],
        "rate_limits": {
            "plans": {"free": {"rate": 10, "per": "second", "burst": 20},
                      "gold": {"rate": 600, "per": "minute", "burst": 100}},
            "default_plan": "free", "consumers": {"alice": "gold"}, "plan_claim": "plan",
            "bucket_by": "consumer", "on_store_contention": "deny", "response_headers": True,
        },
        "failed_auth_limit": {"rate": 10, "per": "minute", "burst": 20, "client_address": "connection",
                              "trusted_hops": 0, "max_tracked_clients": 65536},
    }),
    ("x-forwarded-for-hours-and-days", rl_base(
        rate_limits={"plans": {"free": {"rate": 1, "per": "day", "burst": 1},
                               "gold": {"rate": 5, "per": "hour", "burst": 5}}, "bucket_by": "key"},
        failed_auth={"client_address": "x_forwarded_for", "trusted_hops": 2, "max_tracked_clients": 64})),
]

CONFIGS = {f"invalid/{i}": c for i, c, _, _ in CONFIG_CASES} | {f"valid/{i}": c for i, c in VALID_CASES}


@pytest.fixture(scope="module")
def outcomes(request, wasm_path):
    return launch_selected(request, CONFIGS, wasm_path)


@pytest.mark.parametrize("case, paths, mention",
                         [pytest.param(f"invalid/{i}", p, m, id=i) for i, _, p, m in CONFIG_CASES])
def test_invalid_rate_limit_configuration_fails_closed(outcomes, case, paths, mention):
    assert_failed_closed(outcomes[case], paths, mention)


@pytest.mark.parametrize("case", [pytest.param(f"valid/{i}", id=i) for i, _ in VALID_CASES])
def test_valid_rate_limit_configuration_loads(outcomes, case):
    assert_loaded(outcomes[case])


def test_connection_mode_behind_envoys_default_warns_that_the_address_is_forwarded(new_guard, keys, signer):
    # Envoy's default connection manager (use_remote_address: false) takes the downstream address
    # from x-forwarded-for: the plugin cannot see the TCP peer then, and says so once per VM.
    guard = new_guard(auth_config(keys, signer), extra_clusters={"idp": free_port()}, concurrency=WORKERS)
    try:
        for i in range(20):
            resp = guard.get("/", {**key_header(keys.alice), "x-forwarded-for": f"198.51.100.{i}"})
            assert resp.status == 200, resp
        warning = "failed_auth_limit.client_address is connection, but Envoy takes the downstream address"
        lines = wait_until(lambda: [l for l in guard.envoy.log().splitlines() if warning in l] or None,
                           5, "the warning")
        # once per VM at most, however many such requests
        for _ in range(20):
            assert guard.get("/", {**key_header(keys.alice), "x-forwarded-for": "192.0.2.1"}).status == 200
        lines = [l for l in guard.envoy.log().splitlines() if warning in l]
        assert 1 <= len(lines) <= WORKERS + 1, lines
    finally:
        guard.stop()

"""Global quotas end to end: two Envoy processes (two "replicas", two workers each) ask one
rate-limit service over Envoy's `envoy.service.ratelimit.v3.RateLimitService` protocol (gRPC on an
HTTP/2 cluster), which counts in a real Redis; the local per-proxy bucket runs first.

The service (support/ratelimit_service.py) limits each consumer to GLOBAL_LIMIT requests per hour
and answers with the headers a test asks for; it can be made slow, made to answer errors, or
stopped. Every test uses a consumer of its own, so tests never share a counter.
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from support.failclosed import assert_failed_closed, assert_loaded, launch_selected
from support.harness import wait_until
from support.problems import assert_problem
from support.ratelimit_service import RateLimitService, Redis, Rule

GLOBAL_LIMIT = 10
DOMAIN = "apiguard"

ALLOWED = "wasmcustom.apiguard_allowed_total"
RATE_LIMITED = "wasmcustom.apiguard_denied_rate_limited_total"
UNAVAILABLE = "wasmcustom.apiguard_denied_rate_limit_unavailable_total"
SERVICE_FAILURES = "wasmcustom.apiguard_rate_limit_service_failures_total"
HEADERS_DROPPED = "wasmcustom.apiguard_rate_limit_service_headers_dropped_total"
RO_RATE_LIMITED = "wasmcustom.apiguard_report_only_rate_limited_total"

CONSUMERS = ["gl-shared", "gl-local", "gl-desc", "gl-report", "gl-fail", "gl-slow", "gl-headers"]


def stat(guard, name: str) -> int:
    return guard.envoy.stat(name) or 0


def wait_stat(guard, name: str, expected: int):
    wait_until(lambda: stat(guard, name) >= expected, 5, f"{name} = {expected}")
    assert stat(guard, name) == expected, f"{name} = {stat(guard, name)}, expected {expected}"


@pytest.fixture(scope="module")
def gk(keygen):
    return {c: keygen(c) for c in CONSUMERS}


@pytest.fixture(scope="module")
def redis_server():
    server = Redis().start()
    yield server
    server.stop()


def service(redis_server, **kw) -> RateLimitService:
    return RateLimitService(redis_server, DOMAIN, [
        Rule([("consumer", None)], GLOBAL_LIMIT, "HOUR", name="per-consumer"),
    ], **kw).start()


@pytest.fixture(scope="module")
def rls(redis_server):
    """The service the replicas share. It asks for a request header (and for one it may not set:
    the consumer header) and for a response header."""
    svc = service(redis_server,
                  response_headers=[("x-ratelimit-limit", str(GLOBAL_LIMIT))],
                  request_headers=[("x-quota-class", "standard"), ("x-apiguard-consumer", "admin")])
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def flaky(redis_server):
    """A service the failure tests make slow, make answer errors, or stop."""
    svc = service(redis_server)
    yield svc
    svc.stop()


def plugin_config(gk, *, timeout_ms: int = 1000, failure_mode: str = "deny", report_only: bool = False,
                  descriptors=None) -> dict:
    return {
        "api_keys": {"keys": [gk[c].config_entry(plan="tight" if c == "gl-local" else None) for c in CONSUMERS]},
        "https": {"required": False},
        "routes": [{"prefix": "/payments", "cost": 3}],
        "rate_limits": {"plans": {"roomy": {"rate": 1, "per": "hour", "burst": 1000},
                                  "tight": {"rate": 1, "per": "hour", "burst": 3}},
                        "default_plan": "roomy", "response_headers": False},
        "report_only": report_only,
        "global_rate_limit": {
            "cluster": "ratelimit", "domain": DOMAIN, "timeout_ms": timeout_ms, "failure_mode": failure_mode,
            "descriptors": descriptors or [["consumer"], ["consumer", "route"], ["header:x-tenant"]],
        },
    }


def _clean(config: dict) -> dict:
    """Drops the `plan: None` the helper leaves on keys without a plan."""
    config["api_keys"]["keys"] = [{k: v for k, v in e.items() if v is not None} for e in config["api_keys"]["keys"]]
    return config


@pytest.fixture(scope="module")
def replicas(new_guard, gk, rls):
    """Two Envoy processes with the same configuration and the same rate-limit service."""
    config = _clean(plugin_config(gk))
    started = []
    try:
        for _ in range(2):
            started.append(new_guard(config, grpc_clusters={"ratelimit": rls.port}))
        yield started
    finally:
        for g in started:
            g.stop()


def guard_on(new_guard, gk, svc, request, **kw):
    g = new_guard(_clean(plugin_config(gk, **kw)), grpc_clusters={"ratelimit": svc.port})
    request.addfinalizer(g.stop)
    return g


def key(gk, consumer: str) -> dict:
    return {"x-api-key": gk[consumer].key}


def asked_for(svc: RateLimitService, consumer: str):
    return [r for r in svc.asked(DOMAIN) if [("consumer", consumer)] in r.descriptors]


def fire(targets, n: int, headers: dict, threads: int = 16) -> list:
    """n requests at once from `threads` threads, request i to targets[i % len(targets)]."""
    barrier = threading.Barrier(threads)
    results: list = [None] * n
    errors: list = []

    def worker(first: int):
        barrier.wait()
        for i in range(first, n, threads):
            try:
                results[i] = targets[i % len(targets)].get("/v1", headers)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors[:3]
    return results


# ---------------------------------------------------------------------------------------------


def test_two_replicas_together_admit_exactly_the_global_quota(replicas, rls, gk):
    n = 3 * GLOBAL_LIMIT
    resps = fire(replicas, n, key(gk, "gl-shared"))
    admitted = [r for r in resps if r.status == 200]
    refused = [r for r in resps if r.status != 200]
    assert len(admitted) == GLOBAL_LIMIT, [r.status for r in resps]
    assert len(asked_for(rls, "gl-shared")) == n, "every request asked the service once"
    for r in refused:
        assert_problem(r, 429, "rate_limited", secrets=(gk["gl-shared"].key,))
        retry = int(r.header("retry-after"))
        assert 1 <= retry <= 3600
        assert r.header("ratelimit-policy") == f'"per-consumer";q={GLOBAL_LIMIT};w=3600'
        state = r.header("ratelimit")
        assert state.startswith('"per-consumer";r=0;t='), state
        assert 1 <= int(state.rsplit("=", 1)[1]) <= 3600
        # The service's response header comes with the refusal too.
        assert r.header("x-ratelimit-limit") == str(GLOBAL_LIMIT)
    # Both replicas served, and together they admitted the quota, counted per proxy.
    # (Counted in memory, added to Envoy's counter on the root's next tick.)
    def per_replica():
        counts = [stat(g, ALLOWED) for g in replicas]
        return counts if sum(counts) >= GLOBAL_LIMIT and all(c > 0 for c in counts) else None
    wait_until(per_replica, 5, f"{GLOBAL_LIMIT} admissions counted, on both replicas")
    wait_until(lambda: sum(stat(g, RATE_LIMITED) for g in replicas) >= len(refused), 5, "denials counted")
    # One more on either replica is refused: the count lives in Redis, not in a proxy.
    for g in replicas:
        assert g.get("/v1", key(gk, "gl-shared")).status == 429


def test_admitted_requests_carry_the_services_headers_but_never_its_identity(replicas, gk):
    resp = replicas[0].get("/v1", key(gk, "gl-headers"))
    seen = resp.upstream_saw["headers"]
    assert seen.get("x-quota-class") == ["standard"]
    assert seen.get("x-apiguard-consumer") == ["gl-headers"], "the service cannot set the identity"
    assert "x-api-key" not in seen
    assert resp.header("x-ratelimit-limit") == str(GLOBAL_LIMIT)
    assert stat(replicas[0], HEADERS_DROPPED) >= 1


def test_the_local_bucket_refuses_first_and_costs_no_call(replicas, rls, gk):
    # gl-local's plan holds 3 tokens per proxy; the global quota is 10.
    statuses = [replicas[0].get("/v1", key(gk, "gl-local")).status for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    refused = replicas[0].get("/v1", key(gk, "gl-local"))
    assert_problem(refused, 429, "rate_limited")
    assert refused.header("ratelimit-policy") == '"tight";q=3;w=10800', "the local plan refused it"
    assert len(asked_for(rls, "gl-local")) == 3, "only the requests the local bucket admitted asked"
    # Requests refused before any quota (no credential) never ask either.
    before = len(rls.asked(DOMAIN))
    assert replicas[0].get("/v1").status == 401
    assert len(rls.asked(DOMAIN)) == before


def test_descriptors_and_hits_addend_are_as_configured(replicas, rls, gk):
    rls.forget()
    resp = replicas[1].get("/payments/7?x=1", {**key(gk, "gl-desc"), "x-tenant": "t-42"})
    assert resp.status == 200
    resp = replicas[1].get("/v1", key(gk, "gl-desc"))
    assert resp.status == 200
    first, second = asked_for(rls, "gl-desc")
    assert first.domain == DOMAIN
    assert first.descriptors == [
        [("consumer", "gl-desc")],
        [("consumer", "gl-desc"), ("route", "/payments")],
        [("x-tenant", "t-42")],
    ]
    assert first.hits_addend == 3, "the route's cost"
    # No x-tenant header: that descriptor is not sent; no route matched: "/".
    assert second.descriptors == [[("consumer", "gl-desc")], [("consumer", "gl-desc"), ("route", "/")]]
    assert second.hits_addend == 1
    # The key itself never reaches the service.
    for asked in (first, second):
        assert gk["gl-desc"].key not in repr(asked)


def test_report_only_reports_rate_limited_and_forwards(new_guard, gk, rls, request):
    g = guard_on(new_guard, gk, rls, request, report_only=True)
    resps = [g.get("/v1", key(gk, "gl-report")) for _ in range(GLOBAL_LIMIT + 2)]
    assert [r.status for r in resps] == [200] * (GLOBAL_LIMIT + 2)
    would_deny = [r.upstream_saw["headers"].get("x-apiguard-would-deny") for r in resps]
    assert would_deny == [None] * GLOBAL_LIMIT + [["rate_limited"]] * 2
    assert resps[-1].upstream_saw["headers"].get("x-apiguard-consumer") is None, "no identity in report-only"
    wait_stat(g, RO_RATE_LIMITED, 2)


# ---------------------------------------------------------------------------------------------
# the service slow, failing or down: failure_mode within timeout_ms

TIMEOUT_MS = 200


@pytest.fixture(scope="module")
def failing(new_guard, gk, flaky):
    """failure_mode deny and allow, both with a short timeout, on the flaky service."""
    guards = {}
    try:
        for mode in ("deny", "allow"):
            guards[mode] = new_guard(_clean(plugin_config(gk, timeout_ms=TIMEOUT_MS, failure_mode=mode)),
                                     grpc_clusters={"ratelimit": flaky.port})
        yield guards
    finally:
        for g in guards.values():
            g.stop()


def timed_get(g, headers):
    start = time.monotonic()
    resp = g.get("/v1", headers)
    return resp, time.monotonic() - start


def assert_failure_mode(failing, gk, what: str, *, slowest: float):
    deny_failures = stat(failing["deny"], SERVICE_FAILURES)
    allow_failures = stat(failing["allow"], SERVICE_FAILURES)
    resp, took = timed_get(failing["deny"], key(gk, "gl-fail"))
    assert_problem(resp, 503, "rate_limit_unavailable")
    assert resp.header("retry-after") is not None
    assert took < slowest, f"{what}: denied after {took:.3f}s"
    resp, took = timed_get(failing["allow"], key(gk, "gl-fail"))
    assert resp.status == 200, f"{what}: {resp}"
    assert resp.upstream_saw["headers"].get("x-apiguard-consumer") == ["gl-fail"]
    assert took < slowest, f"{what}: allowed after {took:.3f}s"
    wait_stat(failing["deny"], SERVICE_FAILURES, deny_failures + 1)
    wait_stat(failing["allow"], SERVICE_FAILURES, allow_failures + 1)


def test_a_slow_service_meets_failure_mode_within_timeout_ms(failing, flaky, gk):
    flaky.delay = 2.0
    try:
        # Within the timeout (200 ms) plus the machine's own latency, well before the service.
        assert_failure_mode(failing, gk, "slow", slowest=TIMEOUT_MS / 1000 + 0.6)
        _, took = timed_get(failing["deny"], key(gk, "gl-fail"))
        assert took >= TIMEOUT_MS / 1000 * 0.9, f"denied after {took:.3f}s, before the timeout"
    finally:
        flaky.delay = 0.0


def test_a_service_error_meets_failure_mode(failing, flaky, gk):
    flaky.error = grpc.StatusCode.RESOURCE_EXHAUSTED
    try:
        assert_failure_mode(failing, gk, "error", slowest=TIMEOUT_MS / 1000 + 0.6)
    finally:
        flaky.error = None


def test_a_service_that_is_down_meets_failure_mode(failing, flaky, gk):
    flaky.stop()
    try:
        assert_failure_mode(failing, gk, "down", slowest=TIMEOUT_MS / 1000 + 0.6)
    finally:
        flaky.start()
    # Back up: answered again.
    wait_until(lambda: failing["deny"].get("/v1", key(gk, "gl-fail")).status in (200, 429), 10,
               "the deny proxy reaching the restarted service")


def test_requests_in_flight_wait_on_their_own_calls_at_once(new_guard, gk, flaky, request):
    g = guard_on(new_guard, gk, flaky, request, timeout_ms=5000, descriptors=[["consumer"], ["method"]])
    delay, n = 0.4, 16
    flaky.delay = delay
    try:
        flaky.forget()
        start = time.monotonic()
        resps = fire([g], n, key(gk, "gl-slow"), threads=n)
        took = time.monotonic() - start
    finally:
        flaky.delay = 0.0
    statuses = sorted(r.status for r in resps)
    assert statuses == [200] * GLOBAL_LIMIT + [429] * (n - GLOBAL_LIMIT)
    # One after another they would take n × delay (6.4 s), per worker half that.
    assert took < 4 * delay, f"{n} requests took {took:.2f}s with a service taking {delay}s each"
    arrivals = sorted(r.at for r in flaky.asked(DOMAIN))
    assert len(arrivals) == n
    assert arrivals[-1] - arrivals[0] < delay, "every call was made before the first answer came"


# ---------------------------------------------------------------------------------------------
# configurations that must keep the plugin from starting, and the documented example

EXAMPLE = {"cluster": "ratelimit", "domain": "apiguard", "timeout_ms": 50, "failure_mode": "deny",
           "descriptors": [["consumer"], ["consumer", "route"]]}


def with_global(**changes) -> dict:
    return {"api_keys": {"keys": [{"sha256": "ab" * 32, "consumer": "alice"}]},
            "exempt_paths": ["/healthz"], "https": {"required": False},
            "global_rate_limit": {**EXAMPLE, **changes}}


CONFIG_CASES = [
    ("no-descriptors", with_global(descriptors=[]), {"global_rate_limit.descriptors"}, None),
    ("unknown-entry", with_global(descriptors=[["consumer"], ["tenant"]]),
     {"global_rate_limit.descriptors[1][0]"}, None),
    ("credential-header", with_global(descriptors=[["header:x-api-key"]]),
     {"global_rate_limit.descriptors[0][0]"}, "credential"),
    ("authorization-header", with_global(descriptors=[["consumer", "header:authorization"]]),
     {"global_rate_limit.descriptors[0][1]"}, "credential"),
    ("bad-failure-mode", with_global(failure_mode="open"), {"global_rate_limit.failure_mode"}, None),
    ("timeout-zero", with_global(timeout_ms=0), {"global_rate_limit.timeout_ms"}, None),
    ("no-domain", {**with_global(), "global_rate_limit": {"cluster": "ratelimit", "descriptors": [["consumer"]]}},
     {"global_rate_limit"}, "domain"),
    ("unknown-field", with_global(hits_addend=2), {"global_rate_limit", "global_rate_limit.hits_addend"},
     "hits_addend"),
]

VALID_CASES = [("issue-example", with_global())]

CONFIGS = {f"invalid/{i}": c for i, c, _, _ in CONFIG_CASES} | {f"valid/{i}": c for i, c in VALID_CASES}


@pytest.fixture(scope="module")
def outcomes(request, wasm_path):
    return launch_selected(request, CONFIGS, wasm_path)


@pytest.mark.parametrize("case, paths, mention",
                         [pytest.param(f"invalid/{i}", p, m, id=i) for i, _, p, m in CONFIG_CASES])
def test_invalid_global_rate_limit_configuration_fails_closed(outcomes, case, paths, mention):
    assert_failed_closed(outcomes[case], paths, mention)


@pytest.mark.parametrize("case", [pytest.param(f"valid/{i}", id=i) for i, _ in VALID_CASES])
def test_the_documented_configuration_loads(outcomes, case):
    assert_loaded(outcomes[case])

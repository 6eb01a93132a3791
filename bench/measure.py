"""Measuring: builds what the run needs (the no-op filter, an API key, a signed token), starts every
configuration's Envoy, loads them round by round with wrk, samples them with perf, measures memory
with one worker and with many keys, times the pure pipeline natively, and returns it all as Results.

Nothing here writes the report: see report.py.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from configs import (AUDIENCE, BENCH_PATH, CONFIGS, CONTROL_CLUSTER, ISSUER, KID, LIVE_RUNTIME, RS256_KID,
                     TOKEN_LIFETIME,
                     Config, Ctx, Unavailable, apiguard_everything, apiguard_keys_only, apiguard_live_keys,
                     live_document)
from machine import machine_info, perf_jit_share, proc_rss_kib
from proxies import Running, check_config, direct_response_upstream, pin, start_proxy, stop
from results import ConfigResult, Results, ScalePoint
from support.harness import Envoy, StaticServer, request, wasm_filter
from support.jwt import ec_key, rsa_key
from wrk import Load, wrk_script

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NOOP_DIR = BENCH / "noop-filter"
NOOP_TARGET = ROOT / "target" / "noop"
NOOP_WASM = NOOP_TARGET / "wasm32-wasip1" / "release" / "apiguard_noop.wasm"
PIPELINE_DIR = BENCH / "pipeline"
PIPELINE_TARGET = ROOT / "target" / "bench-pipeline"
OUT_DIR = BENCH / "out"

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


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
    # Without the response body and trailer callbacks, as `make build` leaves apiguard's module: the same
    # VM entries per request.
    run_checked([sys.executable, str(ROOT / "tools" / "wasm_exports.py"), "trim", str(NOOP_WASM)],
                "dropping the no-op filter's response body callbacks")
    return NOOP_WASM


def generate_key() -> dict:
    out = run_checked(["cargo", "run", "--quiet", "--release", "--bin", "apiguard-keygen", "--",
                       "--consumer", "bench", "--json"], "apiguard-keygen")
    doc = json.loads(out.strip().splitlines()[-1])
    if not (isinstance(doc.get("key"), str) and isinstance(doc.get("entry"), dict)):
        raise Unavailable(f"apiguard-keygen printed an unexpected document: keys {sorted(doc)}")
    return doc


def es256_claims() -> dict:
    now = int(time.time())
    return {"sub": "bench-user", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + TOKEN_LIFETIME}


def es256_token() -> tuple[dict, str, int]:
    """A fresh P-256 key: (public JWK with kid, signed access token, its exp)."""
    key = ec_key(KID)
    claims = es256_claims()
    return {**key.jwk, "alg": "ES256"}, key.sign(claims), claims["exp"]


def forged_es256_token() -> str:
    """A forged token: the same header (ES256, kid) and valid claims as es256_token()'s, signed by
    another fresh P-256 key whose public half no configuration knows."""
    return ec_key(KID).sign(es256_claims())


def rs256_token() -> tuple[dict, str]:
    """A fresh 2048-bit RSA key (e = 65537): (public JWK with kid, signed access token)."""
    key = rsa_key(RS256_KID)
    now = int(time.time())
    claims = {"sub": "bench-user", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + TOKEN_LIFETIME}
    return {**key.jwk, "alg": "RS256"}, key.sign(claims)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Outcome:
    """One configuration during the run: how it is built, its Envoy while it is measured, and what
    was measured (the part that goes into the results file)."""
    cfg: Config
    result: ConfigResult
    run: Running | None = None
    servers: dict | None = None
    # The configuration's own context and load when its request or expected answer differs (the
    # RS256 and forged-token rows).
    ctx: Ctx | None = None
    load: Load | None = None

    def stop(self) -> None:
        if self.run:
            stop(self.run.envoy)
            self.run = None
        for server in (self.servers or {}).values():
            server.stop()
        self.servers = None


def wait_answering(ctx: Ctx, run: Running, timeout: float = 30.0, expect: int = 200) -> None:
    """Until the benchmark request gets `expect` (a configuration whose data comes from a server)."""
    t = time.monotonic()
    while request(run.envoy.port, path=BENCH_PATH, headers=ctx.load_headers())[0] != expect:
        if time.monotonic() - t > timeout:
            return  # check_config says what it gets
        time.sleep(0.05)


def measure_main(ctx: Ctx, args, upstream: Envoy, load: Load, configs: list[Config]) -> list[Outcome]:
    outcomes = []
    for cfg in configs:
        o = Outcome(cfg, ConfigResult(cfg.key, cfg.title, cfg.detail, apiguard=cfg.apiguard,
                                      expect_status=cfg.expect_status))
        outcomes.append(o)
        try:
            o.ctx = cctx = ctx.for_config(cfg)
            own = cctx is not ctx or cfg.expect_status != 200
            o.load = replace(load, script=wrk_script(cctx, OUT_DIR, cfg.key, cfg.expect_status)) if own else load
            filters = cfg.filters(cctx)
            o.servers = cfg.servers(cctx) if cfg.servers else {}
            clusters = cfg.grpc_clusters(cctx) if cfg.grpc_clusters else None
            o.run = start_proxy(cctx, filters, upstream.port, concurrency=ctx.concurrency, cpus=args.proxy_cpus,
                                extra_clusters={name: srv.port for name, srv in o.servers.items()},
                                grpc_clusters=clusters, runtime=cfg.runtime)
            if o.servers:
                wait_answering(cctx, o.run, expect=cfg.expect_status)
            o.result.verified = check_config(cctx, cfg, o.run)
            o.result.startup_s = o.run.startup_s
            say(f"({cfg.key}) {cfg.title}: ready in {o.run.startup_s:.2f}s; {'; '.join(o.result.verified)}")
        except Unavailable as e:
            o.result.unavailable = str(e)
            say(f"({cfg.key}) {cfg.title}: NOT MEASURED: {e}")
            o.stop()
    live = [o for o in outcomes if o.run]
    for o in live:
        say(f"({o.cfg.key}) warm-up {args.warmup}s")
        (o.load or load).run(o.run.envoy, args.warmup)
    for rnd in range(args.rounds):
        for o in live:
            r = (o.load or load).run(o.run.envoy, args.duration)
            o.result.series.rounds.append(r)
            say(f"round {rnd + 1}/{args.rounds} ({o.cfg.key}) {r['rps']:9.0f} req/s  p50 {r['p50_us']}µs  "
                f"p99 {r['p99_us']}µs  proxy {r['proxy_cpu_us_per_req']:.1f} µs CPU/req  errors {r['errors']}")
    for o in live:
        o.result.rss_kib = proc_rss_kib(o.run.envoy.proc.pid)
    if args.perf:
        for o in live:
            o_load = o.load or load
            r = perf_jit_share(o.run.envoy.proc.pid, args.duration, lambda: o_load.run(o.run.envoy, args.duration),
                               OUT_DIR / "perf.data")
            if r is None:
                say("perf: not available, skipping the wasm-code share")
                break
            o.result.jit_share = r[0]
            say(f"({o.cfg.key}) perf: {r[0] * 100:.1f}% of the proxy's CPU samples in V8-generated code")
    return outcomes


def measure_memory_one_worker(ctx: Ctx, args, upstream: Envoy, load: Load, outcomes: list[Outcome]):
    """RSS with --concurrency 1, after a little traffic, to separate per-worker from fixed cost."""
    for o in outcomes:
        if not o.run:
            continue
        cctx = o.ctx or ctx
        short = Load(1, 4, (o.load or load).script, load.cpus)
        try:
            clusters = o.cfg.grpc_clusters(cctx) if o.cfg.grpc_clusters else None
            run = start_proxy(cctx, o.cfg.filters(cctx), upstream.port, concurrency=1, cpus=args.proxy_cpus,
                              extra_clusters={name: srv.port for name, srv in (o.servers or {}).items()},
                              grpc_clusters=clusters, runtime=o.cfg.runtime)
            if o.servers:
                wait_answering(cctx, run, expect=o.cfg.expect_status)
        except Unavailable as e:
            say(f"({o.cfg.key}) --concurrency 1: {e}")
            continue
        try:
            short.run(run.envoy, 1)
            o.result.rss1_kib = proc_rss_kib(run.envoy.proc.pid)
            o.result.startup1_s = run.startup_s
        finally:
            stop(run.envoy)


def measure_scale(ctx: Ctx, args, upstream: Envoy, load: Load, base: Outcome | None) -> list[ScalePoint]:
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
            noop = [wasm_filter(plugin_config, ctx.noop_wasm, root_id="noop", vm_id="noop")]
            run = start_proxy(ctx, noop, upstream.port, concurrency=ctx.concurrency,
                              timeout=args.scale_timeout, cpus=args.proxy_cpus)
        except Unavailable as e:
            p.noop_unavailable = str(e)
            continue
        try:
            request(run.envoy.port, path=BENCH_PATH)
            p.noop_startup_s, p.noop_rss_kib = run.startup_s, proc_rss_kib(run.envoy.proc.pid)
            say(f"scale: {n} keys, no-op filter with the same configuration: ready in {p.noop_startup_s:.2f}s, "
                f"RSS {(p.noop_rss_kib or 0) / 1024:.0f} MiB")
        finally:
            stop(run.envoy)
    return points


def start_live(ctx: Ctx, args, upstream: Envoy, n: int) -> tuple[Running, StaticServer, float, int]:
    """(c) fed by a live policy document of n keys: the proxy, its control endpoint, the time from
    starting Envoy until the benchmark key passes (start-up, fetch, validation, publication) and
    the document's size."""
    body = live_document(ctx, n)
    server = StaticServer(body).start()
    try:
        t = time.monotonic()
        run = start_proxy(ctx, ctx.apiguard_filter(json.dumps(apiguard_live_keys(ctx))), upstream.port,
                          concurrency=ctx.concurrency, timeout=args.scale_timeout, cpus=args.proxy_cpus,
                          extra_clusters={CONTROL_CLUSTER: server.port}, runtime=LIVE_RUNTIME)
    except BaseException:
        server.stop()
        raise
    while True:
        status, _, answer = request(run.envoy.port, path=BENCH_PATH, headers=ctx.load_headers())
        if status == 200:
            return run, server, time.monotonic() - t, len(body)
        if time.monotonic() - t > args.scale_timeout:
            stop(run.envoy)
            server.stop()
            raise Unavailable(f"the document of {n:,} keys was not in force within {args.scale_timeout:.0f}s "
                              f"(last answer {status}: {answer[:200]!r})")
        time.sleep(0.05)


def measure_live_scale(ctx: Ctx, args, upstream: Envoy, load: Load) -> list[ScalePoint]:
    """(c) with its key in a live document of N keys, alternated with a live document of 1 key
    (`base`): load time, RSS and throughput. `startup_s` is the time until the key passes."""
    points: list[ScalePoint] = []
    try:
        base_run, base_server, base_ready, base_bytes = start_live(ctx, args, upstream, 1)
    except Unavailable as e:
        say(f"live scale: NOT MEASURED: {e}")
        return [ScalePoint(n, unavailable=str(e)) for n in [1, *args.live_scales]]
    try:
        one = ScalePoint(1, config_bytes=base_bytes, startup_s=base_ready,
                         rss_kib=proc_rss_kib(base_run.envoy.proc.pid))
        points.append(one)
        load.run(base_run.envoy, args.warmup)
        for n in args.live_scales:
            p = ScalePoint(n)
            points.append(p)
            say(f"live scale: {n} keys in the document")
            try:
                run, server, p.startup_s, p.config_bytes = start_live(ctx, args, upstream, n)
            except Unavailable as e:
                p.unavailable = str(e)
                say(f"live scale: {n} keys: NOT MEASURED: {e}")
                continue
            try:
                p.rss_kib = proc_rss_kib(run.envoy.proc.pid)
                say(f"live scale: {n} keys: document {p.config_bytes / 1e6:.1f} MB, key passing after "
                    f"{p.startup_s:.2f}s, RSS {p.rss_kib / 1024:.0f} MiB")
                load.run(run.envoy, args.warmup)
                for _ in range(args.scale_rounds):
                    p.base.rounds.append(load.run(base_run.envoy, args.scale_duration))
                    p.series.rounds.append(load.run(run.envoy, args.scale_duration))
                say(f"live scale: {n} keys: {p.series.median('rps'):.0f} req/s vs "
                    f"{p.base.median('rps'):.0f} with 1 key")
            except Unavailable as e:
                p.unavailable = str(e)
            finally:
                stop(run.envoy)
                server.stop()
    finally:
        stop(base_run.envoy)
        base_server.stop()
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


def measure(args, command: str) -> Results:
    """The whole run, as bench/run.py's options (`args`) ask; `command` is recorded as given."""
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
    rs_jwk, rs_token = rs256_token()
    ctx = Ctx(args.envoy, Path(args.wasm), noop_wasm, noop_error, key, key_error, jwk, token, exp, args.concurrency,
              rs_jwk, rs_token, forged_token=forged_es256_token(),
              baseline_wasm=Path(args.baseline_wasm) if args.baseline_wasm else None)
    sizes = {"apiguard.wasm": Path(args.wasm).stat().st_size if Path(args.wasm).is_file() else None,
             "apiguard_noop.wasm (bench/noop-filter)": noop_wasm.stat().st_size if noop_wasm else None}
    if args.baseline_wasm:
        sizes["baseline apiguard.wasm (--baseline-wasm)"] = Path(args.baseline_wasm).stat().st_size

    configs = [c for c in CONFIGS if args.baseline_wasm or not c.baseline]
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in configs if c.key in wanted]
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
            if o is not base:
                o.stop()
        scale = measure_scale(ctx, args, upstream, load, base)
        if base and base.run:
            stop(base.run.envoy)
            base.run = None
        live_scale = measure_live_scale(ctx, args, upstream, load) if args.live_scales else []
    finally:
        for o in outcomes:
            o.stop()
        stop(upstream)

    micro, micro_error = ([], "skipped (--no-micro)") if args.no_micro else run_micro(ctx, args)
    if micro_error:
        say(f"micro-benchmarks: {micro_error}")

    return Results(
        machine=info, args=argparse.Namespace(**vars(args)),
        request={"path": BENCH_PATH, "jwk_kid": KID, "token_lifetime_s": TOKEN_LIFETIME},
        sizes=sizes, configs=[o.result for o in outcomes],
        one_key_config_bytes=len(json.dumps(apiguard_keys_only(ctx, 1))) if ctx.key else None,
        scale=scale, live_scale=live_scale, micro=micro, micro_error=micro_error,
        command=command, elapsed_s=time.monotonic() - started,
    )

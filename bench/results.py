"""The results file between measuring and reporting: bench/run.py writes bench/out/results.json,
bench/report.py reads it. Everything the report says comes from this file, so a report can be
redrawn (or restyled) from a past run without measuring again.

Standard library only.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

# Bumped when a field changes meaning or disappears; the report refuses files of another version.
FORMAT = 1


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Series:
    """The wrk rounds of one configuration: one dict per round (rps, p50_us, p99_us,
    proxy_cpu_us_per_req, errors, machine_busy, foreign_cpu, ... see wrk.Load.run)."""
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


@dataclass
class ConfigResult:
    """What was measured for one configuration (a row of the results table)."""
    key: str
    title: str
    detail: str
    apiguard: bool = False
    unavailable: str | None = None   # why it was not measured
    verified: list[str] = field(default_factory=list)
    series: Series = field(default_factory=Series)
    startup_s: float | None = None
    rss_kib: int | None = None
    rss1_kib: int | None = None      # with --concurrency 1, for the per-worker slope
    startup1_s: float | None = None
    jit_share: float | None = None   # share of the proxy's CPU samples in V8-generated (wasm) code
    expect_status: int = 200         # the status of every answer to the benchmark request (401: forged token)

    def to_json(self) -> dict:
        return {"key": self.key, "title": self.title, "detail": self.detail, "apiguard": self.apiguard,
                "unavailable": self.unavailable, "verified": self.verified, "startup_s": self.startup_s,
                "rss_kib": self.rss_kib, "rss1_kib": self.rss1_kib, "startup1_s": self.startup1_s,
                "jit_share": self.jit_share, "expect_status": self.expect_status, "rounds": self.series.rounds}

    @classmethod
    def from_json(cls, doc: dict) -> ConfigResult:
        doc = dict(doc)
        series = Series(doc.pop("rounds"))
        return cls(**doc, series=series)


@dataclass
class ScalePoint:
    """Configuration (c) with n keys, alternated with (c) with 1 key (`base`)."""
    n: int
    config_bytes: int = 0
    startup_s: float | None = None
    rss_kib: int | None = None
    unavailable: str | None = None
    series: Series = field(default_factory=Series)
    base: Series = field(default_factory=Series)
    # The no-op filter handed the same configuration text: what Envoy itself pays to carry it.
    noop_startup_s: float | None = None
    noop_rss_kib: int | None = None
    noop_unavailable: str | None = None

    def to_json(self) -> dict:
        return {"n": self.n, "config_bytes": self.config_bytes, "startup_s": self.startup_s,
                "rss_kib": self.rss_kib, "unavailable": self.unavailable, "rounds": self.series.rounds,
                "base_rounds": self.base.rounds, "noop_startup_s": self.noop_startup_s,
                "noop_rss_kib": self.noop_rss_kib, "noop_unavailable": self.noop_unavailable}

    @classmethod
    def from_json(cls, doc: dict) -> ScalePoint:
        doc = dict(doc)
        series, base = Series(doc.pop("rounds")), Series(doc.pop("base_rounds"))
        return cls(**doc, series=series, base=base)


@dataclass
class Results:
    machine: dict                      # machine_info(), plus the load average at the start
    args: argparse.Namespace           # bench/run.py's options, defaults filled in
    request: dict                      # what every configuration was loaded with: path, jwk_kid, token_lifetime_s
    sizes: dict[str, int | None]       # file name -> bytes
    configs: list[ConfigResult]
    one_key_config_bytes: int | None   # the plugin configuration of (c), the scale table's first row
    scale: list[ScalePoint]
    # (c) with its key in a live policy document of n keys; `startup_s` is until the key passes.
    live_scale: list[ScalePoint]
    micro: list[dict]                  # bench/pipeline's lines: name, ns_per_op, iterations
    micro_error: str | None
    command: str                       # how the run was started, relative to the repository
    elapsed_s: float

    def save(self, path: Path) -> None:
        doc = {
            "format": FORMAT,
            "command": self.command, "elapsed_s": self.elapsed_s,
            "machine": self.machine, "args": vars(self.args), "request": self.request, "sizes": self.sizes,
            "configs": [c.to_json() for c in self.configs],
            "one_key_config_bytes": self.one_key_config_bytes,
            "scale": [p.to_json() for p in self.scale],
            "live_scale": [p.to_json() for p in self.live_scale],
            "micro": self.micro, "micro_error": self.micro_error,
        }
        path.write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: Path) -> Results:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path}: results format {doc.get('format')!r}, this report reads {FORMAT} "
                             "(measure again with bench/run.py)")
        return cls(
            machine=doc["machine"], args=argparse.Namespace(**doc["args"]), request=doc["request"],
            sizes=doc["sizes"],
            configs=[ConfigResult.from_json(c) for c in doc["configs"]],
            one_key_config_bytes=doc["one_key_config_bytes"],
            scale=[ScalePoint.from_json(p) for p in doc["scale"]],
            live_scale=[ScalePoint.from_json(p) for p in doc.get("live_scale", [])],
            micro=doc["micro"], micro_error=doc["micro_error"],
            command=doc["command"], elapsed_s=doc["elapsed_s"],
        )

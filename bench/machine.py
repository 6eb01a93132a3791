"""Facts about the machine and readings of running processes: CPU, memory and versions for the
report, RSS and CPU time from /proc, and perf samples that split wasm code from the rest of Envoy."""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable


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

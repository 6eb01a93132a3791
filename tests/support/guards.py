"""Envoys with apiguard loaded, as the tests use them: a Guard sends requests and returns Responses;
start_guard starts one; GuardPool shares them between tests with the same configuration.

Starting Envoy costs about a second, so every test that uses the same plugin configuration (and the
same listener shape: TLS or not, path normalisation or not) shares one Envoy. The pool keeps a few
instances alive and stops the least recently used one when it needs room; an evicted instance is
transparently restarted by the next get().
"""
from __future__ import annotations

import collections
import json
import uuid
from pathlib import Path

from support.harness import EchoUpstream, Envoy, bootstrap, free_port, request, wasm_filter
from support.problems import Response


class Guard:
    """One Envoy (two workers, V8) with apiguard loaded, in front of the shared echo upstream."""

    def __init__(self, envoy: Envoy, upstream: EchoUpstream, tls: bool):
        self.envoy = envoy
        self.upstream = upstream
        self.tls = tls

    @property
    def port(self) -> int:
        return self.envoy.port

    def request(self, method: str = "GET", path: str = "/", headers=None, *, body: bytes | None = None,
                request_id: str | None = None, source: str | None = None) -> Response:
        """Sends one request, on a new connection, with a fresh x-request-id (unless `headers`
        carries one); `source` is the client's address (see harness.request)."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        ids = [v for k, v in pairs if k.lower() == "x-request-id"]
        rid = ids[0] if ids else (request_id or f"test-{uuid.uuid4()}")
        if not ids:
            pairs.append(("x-request-id", rid))
        status, hdrs, data = request(self.port, method, path, headers=pairs, body=body, https=self.tls,
                                     source=source)
        return Response(status, hdrs, data, rid, self.upstream)

    def get(self, path: str = "/", headers=None, **kw) -> Response:
        return self.request("GET", path, headers, **kw)

    def stop(self):
        self.envoy.stop()


def start_guard(wasm: Path, upstream: EchoUpstream, config, *, tls_files: tuple[str, str] | None = None,
                normalize_path: bool = True, extra_clusters: dict[str, int] | None = None,
                concurrency: int = 2, use_remote_address: bool = False,
                grpc_clusters: dict[str, int] | None = None,
                allow_on_headers_stop_iteration: bool = False) -> Guard:
    """A new Envoy loading apiguard with `config` (a dict or raw text) in front of `upstream`; the
    caller stops it. `tls_files` terminates TLS on the listener; `extra_clusters` and `grpc_clusters`
    as in bootstrap(); `allow_on_headers_stop_iteration` as in wasm_filter()."""
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True)
    wasm_entry = wasm_filter(text, wasm, allow_on_headers_stop_iteration=allow_on_headers_stop_iteration)
    cfg = bootstrap(free_port(), free_port(), upstream.port, [wasm_entry], tls=tls_files,
                    normalize_path=normalize_path, extra_clusters=extra_clusters,
                    use_remote_address=use_remote_address, grpc_clusters=grpc_clusters)
    envoy = Envoy(cfg, concurrency=concurrency)
    try:
        envoy.start()
    except BaseException:
        envoy.stop()
        raise
    return Guard(envoy, upstream, tls=tls_files is not None)


class GuardPool:
    def __init__(self, wasm: Path, upstream: EchoUpstream, tls_files: tuple[str, str], max_live: int = 4):
        self.wasm = wasm
        self.upstream = upstream
        self.tls_files = tls_files
        self.max_live = max_live
        self.live: collections.OrderedDict[str, Guard] = collections.OrderedDict()

    def get(self, config, *, tls: bool = False, normalize_path: bool = True) -> Guard:
        text = config if isinstance(config, str) else json.dumps(config, sort_keys=True)
        key = json.dumps([text, tls, normalize_path])
        if key in self.live:
            self.live.move_to_end(key)
            guard = self.live[key]
            if guard.envoy.running():
                return guard
            del self.live[key]
        while len(self.live) >= self.max_live:
            _, old = self.live.popitem(last=False)
            old.stop()
        guard = start_guard(self.wasm, self.upstream, text, tls_files=self.tls_files if tls else None,
                            normalize_path=normalize_path)
        self.live[key] = guard
        return guard

    def close(self):
        while self.live:
            _, guard = self.live.popitem()
            guard.stop()

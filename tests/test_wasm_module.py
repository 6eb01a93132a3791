"""The module Envoy loads: it exports no response body or trailer callback (Envoy then never
enters the VM for them, and lets them through); bodies pass whole both ways, also for a request
that waited before it was decided, and a waiting request's body never goes upstream before the
decision, even when Envoy hands it to the plugin (`allow_on_headers_stop_iteration`)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.harness import StaticServer
from support.jwt import AUDIENCE, ISSUER, bearer, claims, ec_key, jwks
from support.keys import api_key_config

ROOT = Path(__file__).resolve().parent.parent

# What apiguard acts on: its configuration, its tick, requests' headers, body and trailers (held
# while the request waits) and the end of each request, answers to its calls, the response's
# headers; the network callbacks and memory come with the SDK.
EXPORTS = {
    "memory", "_initialize", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate",
    "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick", "proxy_on_foreign_function",
    "proxy_on_queue_ready", "proxy_on_context_create", "proxy_on_request_headers",
    "proxy_on_request_body", "proxy_on_request_trailers",
    "proxy_on_response_headers", "proxy_on_log", "proxy_on_done", "proxy_on_delete",
    "proxy_on_http_call_response", "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive", "proxy_on_grpc_receive_trailing_metadata", "proxy_on_grpc_close",
    "proxy_on_new_connection", "proxy_on_downstream_data", "proxy_on_downstream_connection_close",
    "proxy_on_upstream_data", "proxy_on_upstream_connection_close",
}


def module_exports(wasm: Path) -> set[str]:
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "wasm_exports.py"), "list", str(wasm)],
                         check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_the_module_exports_no_response_body_or_trailer_callback(wasm_path):
    assert module_exports(wasm_path) == EXPORTS


def test_the_export_tool_drops_only_what_it_is_told_and_is_idempotent(wasm_path, tmp_path):
    copy = tmp_path / "m.wasm"
    copy.write_bytes(Path(wasm_path).read_bytes())
    tool = [sys.executable, str(ROOT / "tools" / "wasm_exports.py")]
    for _ in range(2):
        subprocess.run(tool + ["drop", str(copy), "proxy_on_tick", "proxy_on_vm_start"], check=True)
        assert module_exports(copy) == EXPORTS - {"proxy_on_tick", "proxy_on_vm_start"}
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(Path(wasm_path).read_bytes()[:1000])
    failed = subprocess.run(tool + ["list", str(broken)], capture_output=True, text=True)
    assert failed.returncode == 1 and "runs past the end" in failed.stderr, failed.stderr


def test_large_bodies_pass_whole_both_ways(guards, keys):
    guard = guards.get(api_key_config(keys))
    body = bytes(range(256)) * 1024 + b"end"       # 256 KiB: many chunks each way
    resp = guard.request("POST", "/upload", {"x-api-key": keys.alice.key,
                                             "content-type": "application/octet-stream"}, body=body)
    assert resp.status == 200, resp
    seen = json.loads(resp.body)
    assert seen["body"] == body.decode("utf-8", "replace")
    assert seen["headers"]["x-apiguard-consumer"] == ["alice"]


def remote_jwks_config(**remote) -> dict:
    return {
        "credentials": "jwt",
        "https": {"required": False},
        "jwt": {"providers": [{
            "issuer": ISSUER, "audiences": [AUDIENCE],
            "remote_jwks": {"cluster": "idp", "path": "/jwks", "refresh_interval_seconds": 300,
                            "min_refetch_interval_seconds": 1, "timeout_ms": 2000, **remote},
        }]},
    }


@pytest.mark.parametrize("stop_iteration", [False, True], ids=["default", "allow_on_headers_stop_iteration"])
def test_a_request_that_waited_for_a_key_set_goes_on_with_its_whole_body(new_guard, stop_iteration):
    # The token's key is published only after the request arrives: it waits for the refetch,
    # its body held meanwhile (by Envoy, or with allow_on_headers_stop_iteration by the plugin's
    # body callback), then goes upstream whole.
    old, new = ec_key("old"), ec_key("rotated-in")
    idp = StaticServer(json.dumps(jwks(old)).encode()).start()
    guard = new_guard(remote_jwks_config(), extra_clusters={"idp": idp.port},
                      allow_on_headers_stop_iteration=stop_iteration)
    try:
        assert guard.get("/", bearer(old.sign(claims("warm")))).status == 200
        time.sleep(1.1)   # past min_refetch_interval_seconds since the start-up fetch
        idp.body = json.dumps(jwks(old, new)).encode()
        hits = idp.hits
        body = b"0123456789abcdef" * 8192   # 128 KiB
        resp = guard.request("PUT", "/held", bearer(new.sign(claims("held"))), body=body)
        assert resp.status == 200, resp
        assert idp.hits == hits + 1           # it did wait for the refetch
        seen = json.loads(resp.body)
        assert seen["method"] == "PUT" and seen["body"] == body.decode()
    finally:
        guard.stop()
        idp.stop()


@pytest.mark.parametrize("stop_iteration", [False, True], ids=["default", "allow_on_headers_stop_iteration"])
def test_a_request_refused_after_its_wait_never_reached_the_upstream(new_guard, upstream, stop_iteration):
    # An identity provider that never answers: the token waits unknown_kid_wait_ms, then gets
    # 503. Its body arrived meanwhile; with allow_on_headers_stop_iteration Envoy hands it to the
    # plugin's body callback, which must hold it, or the request would go upstream undecided.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    guard = new_guard(remote_jwks_config(unknown_kid_wait_ms=600),
                      extra_clusters={"idp": silent.getsockname()[1]},
                      allow_on_headers_stop_iteration=stop_iteration)
    try:
        path = f"/never-upstream-{stop_iteration}"
        for body in (b"x" * 100, b"y" * 300_000):
            resp = guard.request("POST", path, bearer(ec_key("k").sign(claims("held"))), body=body)
            assert resp.status == 503 and resp.json()["code"] == "no_verification_key", resp
        assert [r for r in upstream.requests if r["path"] == path] == []
    finally:
        guard.stop()
        silent.close()

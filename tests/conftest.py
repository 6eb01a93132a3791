"""Shared fixtures for the end-to-end suite: the built plugin, real keys from apiguard-keygen, one echo
upstream, and a pool of Envoy instances keyed by plugin configuration.

Starting Envoy costs about a second, so every test that uses the same plugin configuration (and the
same listener shape: TLS or not, path normalisation or not) shares one Envoy. The pool keeps a few
instances alive and stops the least recently used one when it needs room; all of them are stopped at
the end of the session. Test modules declare function-scoped `guard` fixtures that call
`guards.get(config)`: a cache hit costs nothing, and an evicted instance is transparently restarted.
Tests that need an Envoy of their own for a whole module (the JWT suites: one Envoy's log and
caches, an "idp" cluster) start it with `new_guard(config, extra_clusters=...)` and stop it.
"""
from __future__ import annotations

import collections
import functools
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    DEFAULT_WASM,
    ROOT,
    EchoUpstream,
    Envoy,
    bootstrap,
    free_port,
    request,
    self_signed_cert,
    wasm_filter,
)

KEY_RE = re.compile(r"^agk_[0-9A-Za-z]{43}[0-9A-Za-z]{6}$")
PROBLEM_TYPE_PREFIX = "urn:apiguard:problem:"
DEFAULT_CHALLENGE = 'ApiKey realm="apiguard", header="x-api-key"'
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# --------------------------------------------------------------------------------------------
# the plugin and the key generator
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def wasm_path() -> Path:
    path = Path(os.environ.get("APIGUARD_WASM") or DEFAULT_WASM)
    if not path.is_file():
        pytest.fail(f"apiguard.wasm not found at {path}: run `make build` first", pytrace=False)
    return path


@pytest.fixture(scope="session")
def keygen_bin() -> Path:
    path = Path(os.environ.get("APIGUARD_KEYGEN") or ROOT / "target" / "release" / "apiguard-keygen")
    if not path.is_file():
        build = subprocess.run(["cargo", "build", "--release", "--bin", "apiguard-keygen"], cwd=ROOT,
                               capture_output=True, text=True)
        if build.returncode != 0 or not path.is_file():
            pytest.fail(f"cannot build apiguard-keygen:\n{build.stderr[-3000:]}", pytrace=False)
    return path


@dataclass
class Key:
    key: str
    entry: dict

    def config_entry(self, **overrides) -> dict:
        return {**self.entry, **overrides}


def run_keygen(keygen_bin: Path, consumer: str, expires_at: str | None = None) -> Key:
    args = [str(keygen_bin), "--consumer", consumer, "--json"]
    if expires_at:
        args += ["--expires-at", expires_at]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"apiguard-keygen failed ({out.returncode}): {out.stderr}"
    doc = json.loads(out.stdout)
    entry = {k: v for k, v in doc["entry"].items() if v is not None}
    return Key(key=doc["key"], entry=entry)


@pytest.fixture(scope="session")
def keygen(keygen_bin):
    """keygen(consumer, expires_at=None) -> Key, straight from the real generator."""
    return lambda consumer, expires_at=None: run_keygen(keygen_bin, consumer, expires_at)


@dataclass
class Keys:
    alice: Key       # valid, no expiry
    bob: Key         # revoked
    carol: Key       # expired (expires_at in the past)
    dave: Key        # expires in the future
    stranger: Key    # valid format and checksum, never configured

    def entries(self) -> list[dict]:
        return [
            self.alice.entry,
            self.bob.config_entry(revoked=True),
            self.carol.config_entry(expires_at="2020-01-01T00:00:00Z"),
            self.dave.entry,
        ]


@pytest.fixture(scope="session")
def keys(keygen) -> Keys:
    return Keys(
        alice=keygen("alice"),
        bob=keygen("bob"),
        carol=keygen("carol"),
        dave=keygen("dave", "2099-01-01T00:00:00Z"),
        stranger=keygen("stranger"),
    )


def flip_char(key: str, index: int) -> str:
    """The key with one base62 character replaced by another base62 character (a typo)."""
    old = key[index]
    new = BASE62[(BASE62.index(old) + 1) % len(BASE62)]
    return key[:index] + new + key[index + 1:]


def api_key_config(keys: Keys, **top) -> dict:
    """The demo configuration shape, with all test keys and plain HTTP allowed; `top` overrides."""
    api_keys = {"header": "x-api-key", "keys": keys.entries()}
    api_keys.update(top.pop("api_keys", {}))
    cfg = {
        "credentials": "api_key",
        "api_keys": api_keys,
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
    }
    cfg.update(top)
    return cfg


# --------------------------------------------------------------------------------------------
# responses and the upstream's view
# --------------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    request_id: str
    upstream: "EchoUpstream"

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times: {values}"
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self):
        return json.loads(self.body)

    @property
    def seen_upstream(self) -> list[dict]:
        """Every request the echo upstream received that carries this response's x-request-id."""
        return [r for r in self.upstream.requests
                if self.request_id in r["headers"].get("x-request-id", [])]

    @property
    def upstream_saw(self) -> dict:
        """What the upstream received, from the echo body (and cross-checked with its own record)."""
        assert self.status == 200, f"expected the upstream's 200, got {self.status}: {self.body[:500]!r}"
        echo = self.json()
        assert self.seen_upstream == [echo], "echo body does not match what the upstream recorded"
        return echo

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:400]!r}>"


def assert_problem(resp: Response, status: int, code: str, *, secrets: tuple[str, ...] = ()):
    """A denial as the spec describes it, that never reached the upstream and leaks no secret."""
    assert resp.status == status, f"expected {status} {code}, got {resp!r}"
    ctype = resp.header("content-type") or ""
    assert ctype.split(";")[0].strip() == "application/problem+json", resp
    doc = resp.json()
    assert doc.get("type") == PROBLEM_TYPE_PREFIX + code, doc
    assert isinstance(doc.get("title"), str) and doc["title"], doc
    assert doc.get("status") == status, doc
    assert doc.get("code") == code, doc
    assert doc.get("request_id") == resp.request_id, doc
    assert resp.seen_upstream == [], f"upstream received a denied request: {resp.seen_upstream}"
    assert_no_secret(resp, secrets)
    return doc


def assert_no_secret(resp: Response, secrets: tuple[str, ...]):
    for secret in secrets:
        if not secret:
            continue
        assert secret.encode() not in resp.body, f"response body contains the credential {secret!r}"
        for name, value in resp.headers:
            assert secret not in value, f"response header {name} contains the credential"


def assert_challenges(resp: Response, expected) -> list[str]:
    """The WWW-Authenticate values are exactly `expected` (each once; in any order)."""
    got = resp.header_all("www-authenticate")
    assert sorted(got) == sorted(expected), f"WWW-Authenticate {got}, expected {list(expected)}"
    return got


def assert_401(resp: Response, code: str, *, challenge: str = DEFAULT_CHALLENGE,
               secrets: tuple[str, ...] = ()):
    doc = assert_problem(resp, 401, code, secrets=secrets)
    assert_challenges(resp, [challenge])
    return doc


def assert_missing(resp: Response, challenges) -> dict:
    """401 missing_credential offering exactly `challenges`, none of them carrying an error."""
    doc = assert_problem(resp, 401, "missing_credential")
    for value in assert_challenges(resp, challenges):
        assert "error=" not in value, value
    return doc


def apiguard_headers(seen: dict) -> dict[str, list[str]]:
    return {k: v for k, v in seen["headers"].items() if k.startswith("x-apiguard-")}


# --------------------------------------------------------------------------------------------
# Envoy instances
# --------------------------------------------------------------------------------------------

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
                request_id: str | None = None) -> Response:
        """Sends one request with a fresh x-request-id (unless `headers` carries one)."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        ids = [v for k, v in pairs if k.lower() == "x-request-id"]
        rid = ids[0] if ids else (request_id or f"test-{uuid.uuid4()}")
        if not ids:
            pairs.append(("x-request-id", rid))
        status, hdrs, data = request(self.port, method, path, headers=pairs, body=body, https=self.tls)
        return Response(status, hdrs, data, rid, self.upstream)

    def get(self, path: str = "/", headers=None, **kw) -> Response:
        return self.request("GET", path, headers, **kw)

    def stop(self):
        self.envoy.stop()


def start_guard(wasm: Path, upstream: EchoUpstream, config, *, tls_files: tuple[str, str] | None = None,
                normalize_path: bool = True, extra_clusters: dict[str, int] | None = None) -> Guard:
    """A new Envoy loading apiguard with `config` (a dict or raw text) in front of `upstream`; the
    caller stops it. `tls_files` terminates TLS on the listener; `extra_clusters` as in bootstrap()."""
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True)
    cfg = bootstrap(free_port(), free_port(), upstream.port, [wasm_filter(text, wasm)], tls=tls_files,
                    normalize_path=normalize_path, extra_clusters=extra_clusters)
    envoy = Envoy(cfg)
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


@pytest.fixture(scope="session")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def guards(wasm_path, upstream, tls_files, request):
    pool = GuardPool(wasm_path, upstream, tls_files)
    request.addfinalizer(pool.close)
    return pool


@pytest.fixture(scope="session")
def new_guard(wasm_path, upstream):
    """new_guard(config, **start_guard_kw) -> Guard: an Envoy of its own, outside the pool, for
    tests that need one for a whole module (its log, its caches) or extra clusters; the caller
    stops it."""
    return functools.partial(start_guard, wasm_path, upstream)

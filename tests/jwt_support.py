"""Helpers for the JWT end-to-end tests (test_jwt.py, test_jwt_remote.py): signing keys made at test
time, their public JWKs, tokens signed with PyJWT or hand-crafted (for the attacks PyJWT refuses to
produce), one Envoy per plugin configuration, and the checks every JWT denial must pass.

Kept apart from conftest.py on purpose: these tests depend only on harness.py.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from harness import (DEFAULT_WASM, ROOT, EchoUpstream, Envoy, StaticServer, bootstrap, free_port, request,
                     wasm_filter)

ISSUER = "https://idp.apiguard.test/"
AUDIENCE = "orders-api"
REALM = "apiguard"
PROBLEM_TYPE_PREFIX = "urn:apiguard:problem:"
MISSING_CHALLENGE = f'Bearer realm="{REALM}"'


# ------------------------------------------------------------------------------ encoding

def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_json(obj) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def _int_b64u(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


# ------------------------------------------------------------------------------ keys

@dataclass
class SigningKey:
    """A private key for signing and the public JWK the plugin is given."""
    kid: str
    alg: str
    private: object          # what PyJWT signs with
    jwk: dict                # public JWK (no private members)
    public_pem: bytes | None = None

    def sign(self, claims: dict, *, alg: str | None = None, headers: dict | None = None,
             kid: str | None | bool = True) -> str:
        hdr = dict(headers or {})
        if kid is True:
            hdr["kid"] = self.kid
        elif isinstance(kid, str):
            hdr["kid"] = kid
        return pyjwt.encode(claims, self.private, algorithm=alg or self.alg, headers=hdr or None)


def ec_key(kid: str) -> SigningKey:
    priv = ec.generate_private_key(ec.SECP256R1())
    nums = priv.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
           "x": b64u(nums.x.to_bytes(32, "big")), "y": b64u(nums.y.to_bytes(32, "big"))}
    return SigningKey(kid, "ES256", priv, jwk)


def rsa_key(kid: str, alg: str = "RS256") -> SigningKey:
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = priv.public_key()
    nums = pub.public_numbers()
    jwk = {"kty": "RSA", "kid": kid, "n": _int_b64u(nums.n), "e": _int_b64u(nums.e)}
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(kid, alg, priv, jwk, pem)


def ed25519_key(kid: str) -> SigningKey:
    priv = ed25519.Ed25519PrivateKey.generate()
    raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64u(raw)}
    return SigningKey(kid, "EdDSA", priv, jwk)


def hmac_key(kid: str, size: int = 32) -> SigningKey:
    secret = os.urandom(size)
    jwk = {"kty": "oct", "kid": kid, "k": b64u(secret)}
    return SigningKey(kid, "HS256", secret, jwk)


def jwks(*keys: SigningKey) -> dict:
    return {"keys": [k.jwk for k in keys]}


# ------------------------------------------------------------------------------ tokens

def claims(sub: str = "user-1", *, lifetime: int = 600, **extra) -> dict:
    """Good access-token claims for ISSUER/AUDIENCE; `extra` overrides (None removes a claim)."""
    now = int(time.time())
    out = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + lifetime,
           "jti": uuid.uuid4().hex}
    for name, value in extra.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def craft(header: dict, payload: dict, signature: bytes = b"") -> str:
    """A token assembled by hand (alg none, crit, …): no library checks anything."""
    return f"{b64u_json(header)}.{b64u_json(payload)}.{b64u(signature)}"


def hs256_with_secret(header: dict, payload: dict, secret: bytes) -> str:
    signing_input = f"{b64u_json(header)}.{b64u_json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(mac)}"


def flip_signature_bit(token: str) -> str:
    """The token with one bit of its signature flipped (the encoding stays canonical base64url)."""
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    flipped = f"{head}.{body}.{b64u(bytes(raw))}"
    assert flipped != token
    return flipped


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------ api keys

@dataclass
class ApiKey:
    key: str
    entry: dict


def keygen(consumer: str) -> ApiKey:
    path = Path(os.environ.get("APIGUARD_KEYGEN") or ROOT / "target" / "release" / "apiguard-keygen")
    if not path.is_file():
        build = subprocess.run(["cargo", "build", "--release", "--bin", "apiguard-keygen"], cwd=ROOT,
                               capture_output=True, text=True)
        if build.returncode != 0 or not path.is_file():
            pytest.fail(f"cannot build apiguard-keygen:\n{build.stderr[-3000:]}", pytrace=False)
    out = subprocess.run([str(path), "--consumer", consumer, "--json"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, f"apiguard-keygen failed: {out.stderr}"
    doc = json.loads(out.stdout)
    return ApiKey(doc["key"], {k: v for k, v in doc["entry"].items() if v is not None})


# ------------------------------------------------------------------------------ JWKS server

class JwksServer(StaticServer):
    """harness.StaticServer whose stop() really takes it down.

    StaticServer.stop() closes the listening socket, but the keep-alive connection Envoy pooled to
    the "idp" cluster stays open and its handler thread goes on answering: a "stopped" server
    still serves every later fetch. This one also shuts the open connections down.
    """

    def __init__(self, body: bytes = b"{}", status: int = 200):
        super().__init__(body, status)
        self.connections: set[socket.socket] = set()
        owner = self
        base = self.server.RequestHandlerClass

        class Tracking(base):
            def setup(self):
                super().setup()
                owner.connections.add(self.connection)

            def finish(self):
                owner.connections.discard(self.connection)
                super().finish()

        self.server.RequestHandlerClass = Tracking

    def stop(self):
        super().stop()
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ------------------------------------------------------------------------------ Envoy

def wasm_path() -> Path:
    path = Path(os.environ.get("APIGUARD_WASM") or DEFAULT_WASM)
    if not path.is_file():
        pytest.fail(f"apiguard.wasm not found at {path}: run `make build` first", pytrace=False)
    return path


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    request_id: str
    upstream: EchoUpstream

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times: {values}"
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    @property
    def seen_upstream(self) -> list[dict]:
        return [r for r in self.upstream.requests
                if self.request_id in r["headers"].get("x-request-id", [])]

    @property
    def upstream_saw(self) -> dict:
        assert self.status == 200, f"expected the upstream's 200, got {self!r}"
        echo = self.json()
        assert self.seen_upstream == [echo], "echo body does not match what the upstream recorded"
        return echo

    def __repr__(self):
        return f"<Resp {self.status} {self.headers} {self.body[:400]!r}>"


@dataclass
class Guard:
    """One Envoy (two workers, V8) with apiguard, in front of an echo upstream."""
    envoy: Envoy
    upstream: EchoUpstream
    servers: list = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.envoy.port

    def get(self, path: str = "/", headers=None, *, method: str = "GET") -> Resp:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        rid = f"jwt-{uuid.uuid4()}"
        pairs.append(("x-request-id", rid))
        # harness.request opens a fresh connection each time: requests spread over both workers.
        status, hdrs, data = request(self.port, method, path, headers=pairs)
        return Resp(status, hdrs, data, rid, self.upstream)

    def stop(self):
        self.envoy.stop()
        self.upstream.stop()
        for s in self.servers:
            s.stop()


def start_guard(plugin_config: dict, *, extra_clusters: dict[str, int] | None = None) -> Guard:
    upstream = EchoUpstream().start()
    cfg = bootstrap(free_port(), free_port(), upstream.port,
                    [wasm_filter(plugin_config, wasm_path())], extra_clusters=extra_clusters)
    envoy = Envoy(cfg, concurrency=2)
    try:
        envoy.start()
    except BaseException:
        envoy.stop()
        upstream.stop()
        raise
    return Guard(envoy, upstream)


# ------------------------------------------------------------------------------ assertions

def assert_no_secret(resp: Resp, secrets) -> None:
    for secret in secrets:
        if not secret:
            continue
        assert secret.encode() not in resp.body, "the response body contains the credential"
        for name, value in resp.headers:
            assert secret not in value, f"response header {name} contains the credential"


def assert_problem(resp: Resp, status: int, code: str, *, secrets=()) -> dict:
    assert resp.status == status, f"expected {status} {code}, got {resp!r}"
    ctype = (resp.header("content-type") or "").split(";")[0].strip()
    assert ctype == "application/problem+json", resp
    doc = resp.json()
    assert doc.get("type") == PROBLEM_TYPE_PREFIX + code, doc
    assert doc.get("code") == code, doc
    assert doc.get("status") == status, doc
    assert isinstance(doc.get("title"), str) and doc["title"], doc
    assert doc.get("request_id") == resp.request_id, doc
    assert resp.seen_upstream == [], f"the upstream received a denied request: {resp.seen_upstream}"
    assert_no_secret(resp, secrets)
    return doc


_DESCRIPTION_OK = re.compile(r'[\x20-\x7e]+')


def token_secrets(token: str) -> tuple[str, ...]:
    """The token and, when it has them, its segments long enough to identify it."""
    parts = [p for p in token.split(".") if len(p) >= 16]
    return (token, *parts)


def assert_token_refused(resp: Resp, code: str, token: str, *, other_challenges=()) -> dict:
    """401 `code`, problem+json, RFC 6750 §3.1 challenge whose description is the detail."""
    doc = assert_problem(resp, 401, code, secrets=token_secrets(token))
    detail = doc.get("detail")
    assert isinstance(detail, str) and detail, doc
    assert _DESCRIPTION_OK.fullmatch(detail) and '"' not in detail and "\\" not in detail, detail
    expected = f'Bearer realm="{REALM}", error="invalid_token", error_description="{detail}"'
    got = resp.header_all("www-authenticate")
    assert sorted(got) == sorted([expected, *other_challenges]), \
        f"WWW-Authenticate {got}, expected {[expected, *other_challenges]}"
    return doc


def assert_missing(resp: Resp, challenges=(MISSING_CHALLENGE,)) -> dict:
    doc = assert_problem(resp, 401, "missing_credential")
    got = resp.header_all("www-authenticate")
    assert sorted(got) == sorted(challenges), f"WWW-Authenticate {got}, expected {list(challenges)}"
    for value in got:
        assert "error=" not in value, value
    return doc


# ------------------------------------------------------------------------------ Envoy log

LOG_THREAD = re.compile(r"^\[[^\]]+\]\[(\d+)\]")


def log_lines(envoy: Envoy, needle: str) -> list[str]:
    return [line for line in envoy.log().splitlines() if needle in line]


def threads_logging(envoy: Envoy, needle: str, after: int = 0) -> set[str]:
    """Thread ids of the log lines containing `needle`, skipping the first `after` such lines."""
    out = set()
    for line in log_lines(envoy, needle)[after:]:
        m = LOG_THREAD.match(line)
        out.add(m.group(1) if m else line)
    return out

"""Responses as the tests see them, and the checks every denial must pass: an RFC 9457
problem+json body with apiguard's code, the WWW-Authenticate challenges, no credential echoed back
and nothing forwarded to the upstream."""
from __future__ import annotations

import json
from dataclasses import dataclass

from support.harness import EchoUpstream

PROBLEM_TYPE_PREFIX = "urn:apiguard:problem:"
DEFAULT_CHALLENGE = 'ApiKey realm="apiguard", header="x-api-key"'


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    request_id: str
    upstream: EchoUpstream

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

"""Report-only rollout: every would-be denial passes, announced to the upstream in
`x-apiguard-would-deny`; credentials are still stripped and no identity is asserted."""
from __future__ import annotations

import pytest

from support.keys import api_key_config, flip_char
from support.problems import apiguard_headers


@pytest.fixture
def guard(guards, keys):
    return guards.get(api_key_config(keys, report_only=True))


def assert_passed_with_would_deny(resp, code: str, *secrets: str):
    seen = resp.upstream_saw
    assert apiguard_headers(seen) == {"x-apiguard-would-deny": [code]}, seen["headers"]
    assert "x-api-key" not in seen["headers"], "credential must be stripped in report-only mode too"
    assert "authorization" not in seen["headers"]
    for secret in secrets:
        assert secret not in resp.body.decode(), "the upstream received the credential"
    assert resp.header("www-authenticate") is None
    return seen


def test_missing_credential_passes_with_would_deny(guard):
    assert_passed_with_would_deny(guard.get("/orders"), "missing_credential")


@pytest.mark.parametrize("who, code", [
    ("stranger", "unknown_api_key"),
    ("bob", "revoked_api_key"),
    ("carol", "expired_api_key"),
])
def test_refused_keys_pass_with_would_deny(guard, keys, who, code):
    key = getattr(keys, who).key
    assert_passed_with_would_deny(guard.get("/orders", {"x-api-key": key}), code, key)


def test_malformed_key_passes_with_would_deny(guard, keys):
    bad = flip_char(keys.alice.key, 15)
    assert_passed_with_would_deny(guard.get("/orders", {"x-api-key": bad}), "malformed_api_key", bad)


def test_multiple_credentials_passes_with_would_deny(guard, keys):
    resp = guard.get("/orders", [("x-api-key", keys.alice.key), ("x-api-key", keys.dave.key)])
    assert_passed_with_would_deny(resp, "multiple_credentials", keys.alice.key, keys.dave.key)


def test_credential_in_query_passes_with_would_deny_but_never_reaches_the_upstream(guard, keys):
    resp = guard.get("/orders?api_key=abc", {"x-api-key": keys.alice.key})
    seen = assert_passed_with_would_deny(resp, "credential_in_query", keys.alice.key)
    assert seen["path"] == "/orders"
    # only the credential pairs leave the URL, in every spelling and by value
    resp = guard.get(f"/orders?page=2;Api-Key[]=abc&q={keys.alice.key}&sort=id", {"x-api-key": keys.alice.key})
    seen = assert_passed_with_would_deny(resp, "credential_in_query", keys.alice.key)
    assert seen["path"] == "/orders?page=2&sort=id"


def test_valid_key_passes_as_consumer_without_would_deny(guard, keys):
    resp = guard.get("/orders", {"x-api-key": keys.alice.key})
    seen = resp.upstream_saw
    assert apiguard_headers(seen) == {"x-apiguard-consumer": ["alice"]}
    assert "x-api-key" not in seen["headers"]


def test_client_cannot_forge_would_deny_or_consumer(guard, keys):
    resp = guard.get("/orders", {"x-api-key": keys.stranger.key, "x-apiguard-would-deny": "none",
                                 "x-apiguard-consumer": "admin"})
    assert_passed_with_would_deny(resp, "unknown_api_key", keys.stranger.key)
    resp = guard.get("/orders", {"x-api-key": keys.alice.key, "x-apiguard-would-deny": "none"})
    assert apiguard_headers(resp.upstream_saw) == {"x-apiguard-consumer": ["alice"]}


def test_exempt_path_has_no_would_deny(guard):
    resp = guard.get("/healthz")
    assert apiguard_headers(resp.upstream_saw) == {}


class TestReportOnlyHttps:
    @pytest.fixture
    def guard(self, guards, keys):
        cfg = api_key_config(keys, report_only=True)
        cfg["https"] = {"required": True}
        return guards.get(cfg)

    def test_plain_http_passes_with_would_deny(self, guard, keys):
        resp = guard.get("/orders", {"x-api-key": keys.alice.key})
        seen = resp.upstream_saw
        assert seen["headers"]["x-apiguard-would-deny"] == ["https_required"]
        assert "x-apiguard-consumer" not in seen["headers"]
        assert "x-api-key" not in seen["headers"]

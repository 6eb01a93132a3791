"""HTTPS only, redirects and HSTS: over a real TLS listener (`:scheme` https) and behind a trusted
hop that sets `x-forwarded-proto`."""
from __future__ import annotations

import pytest

from support.keys import api_key_config
from support.problems import assert_401, assert_no_secret, assert_problem

DEFAULT_HSTS = {"max-age=31536000", "includesubdomains"}


def hsts_directives(resp) -> set[str] | None:
    value = resp.header("strict-transport-security")
    if value is None:
        return None
    return {d.strip().lower() for d in value.split(";") if d.strip()}


def https_config(keys, **https):
    cfg = api_key_config(keys)
    cfg["https"] = https
    return cfg


# ---------------------------------------------------------------------------- HTTPS required, plain listener

class TestRequiredOverPlainHttp:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(https_config(keys))  # the defaults: required, no redirect, no XFP trust

    @pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "DELETE"])
    def test_plain_http_with_valid_key_is_403(self, guard, keys, method):
        resp = guard.request(method, "/orders", {"x-api-key": keys.alice.key})
        if method == "HEAD":
            assert resp.status == 403 and resp.seen_upstream == [], resp
        else:
            assert_problem(resp, 403, "https_required", secrets=(keys.alice.key,))
        assert hsts_directives(resp) is None, "HSTS must not be sent over plain HTTP"

    def test_https_checked_before_credentials(self, guard):
        assert_problem(guard.get("/orders"), 403, "https_required")

    def test_forwarded_proto_is_not_trusted_by_default(self, guard, keys):
        resp = guard.get("/orders", {"x-api-key": keys.alice.key, "x-forwarded-proto": "https"})
        assert_problem(resp, 403, "https_required", secrets=(keys.alice.key,))
        assert hsts_directives(resp) is None

    def test_exempt_path_needs_no_https(self, guard):
        resp = guard.get("/healthz")
        assert resp.status == 200 and resp.seen_upstream, resp


# ---------------------------------------------------------------------------- real TLS listener

class TestRequiredOverTls:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(https_config(keys), tls=True)

    def test_https_request_passes_with_hsts(self, guard, keys):
        resp = guard.get("/orders", {"x-api-key": keys.alice.key})
        seen = resp.upstream_saw
        assert seen["headers"]["x-apiguard-consumer"] == ["alice"]
        assert "x-api-key" not in seen["headers"]
        assert hsts_directives(resp) == DEFAULT_HSTS

    def test_denial_over_https_also_carries_hsts(self, guard, keys):
        resp = guard.get("/orders", {"x-api-key": keys.stranger.key})
        assert_401(resp, "unknown_api_key", secrets=(keys.stranger.key,))
        assert hsts_directives(resp) == DEFAULT_HSTS

    def test_scheme_decides_when_forwarded_proto_is_untrusted(self, guard, keys):
        resp = guard.get("/orders", {"x-api-key": keys.alice.key, "x-forwarded-proto": "http"})
        assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]
        assert hsts_directives(resp) == DEFAULT_HSTS


@pytest.mark.parametrize("https, expected", [
    pytest.param({"hsts_max_age_seconds": 0}, None, id="max-age-0-sends-none"),
    pytest.param({"hsts_max_age_seconds": 600, "hsts_include_subdomains": False}, {"max-age=600"},
                 id="custom-age-no-subdomains"),
    pytest.param({"hsts_max_age_seconds": 63072000, "hsts_preload": True},
                 {"max-age=63072000", "includesubdomains", "preload"}, id="preload"),
])
def test_hsts_options_over_tls(guards, keys, https, expected):
    guard = guards.get(https_config(keys, **https), tls=True)
    resp = guard.get("/", {"x-api-key": keys.alice.key})
    assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]
    assert hsts_directives(resp) == expected


# ---------------------------------------------------------------------------- trusted x-forwarded-proto

class TestTrustedForwardedProto:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(https_config(keys, trust_x_forwarded_proto=True))

    @pytest.mark.parametrize("xfp", ["https", "http, https"])
    def test_forwarded_https_passes_with_hsts(self, guard, keys, xfp):
        resp = guard.get("/orders", {"x-api-key": keys.alice.key, "x-forwarded-proto": xfp})
        assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]
        assert hsts_directives(resp) == DEFAULT_HSTS

    @pytest.mark.parametrize("xfp", [None, "http", "https, http"])
    def test_forwarded_http_is_403(self, guard, keys, xfp):
        headers = {"x-api-key": keys.alice.key}
        if xfp:
            headers["x-forwarded-proto"] = xfp
        resp = guard.get("/orders", headers)
        assert_problem(resp, 403, "https_required", secrets=(keys.alice.key,))
        assert hsts_directives(resp) is None


class TestNotRequiredButForwardedHttps:
    """HSTS depends on the request being HTTPS, not on `required`."""

    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(https_config(keys, required=False, trust_x_forwarded_proto=True))

    def test_https_request_gets_hsts(self, guard, keys):
        resp = guard.get("/", {"x-api-key": keys.alice.key, "x-forwarded-proto": "https"})
        assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]
        assert hsts_directives(resp) == DEFAULT_HSTS

    def test_plain_request_passes_without_hsts(self, guard, keys):
        resp = guard.get("/", {"x-api-key": keys.alice.key})
        assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]
        assert hsts_directives(resp) is None


# ---------------------------------------------------------------------------- redirect

class TestRedirect:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(https_config(keys, redirect=True))

    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    @pytest.mark.parametrize("path", ["/orders", "/orders/42/items", "/orders?page=2&sort=asc"])
    def test_safe_methods_are_redirected(self, guard, keys, method, path):
        resp = guard.request(method, path, {"host": "api.example.com", "x-api-key": keys.alice.key})
        assert resp.status == 308, resp
        assert resp.header("location") == f"https://api.example.com{path}"
        assert resp.seen_upstream == []
        assert_no_secret(resp, (keys.alice.key,))

    def test_redirect_comes_before_credentials(self, guard):
        resp = guard.get("/orders", {"host": "api.example.com"})
        assert resp.status == 308, resp
        assert resp.header("location") == "https://api.example.com/orders"
        assert resp.seen_upstream == []

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    def test_unsafe_methods_are_403(self, guard, keys, method):
        resp = guard.request(method, "/orders", {"host": "api.example.com", "x-api-key": keys.alice.key},
                             body=b"{}")
        assert_problem(resp, 403, "https_required", secrets=(keys.alice.key,))
        assert resp.header("location") is None

    def test_query_credential_is_refused_not_redirected(self, guard):
        # A redirect would copy the credential into Location and make the client send it again.
        resp = guard.get("/orders?api_key=agk_secretSecretSecret", {"host": "api.example.com"})
        assert_problem(resp, 400, "credential_in_query", secrets=("agk_secretSecretSecret",))
        assert resp.header("location") is None

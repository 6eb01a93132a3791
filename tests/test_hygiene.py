"""Credential hygiene and what passes without a credential: credentials in query strings, exempt
paths (segment-wise, never for non-canonical paths) and CORS preflights (OPTIONS with Origin and
Access-Control-Request-Method)."""
from __future__ import annotations

import json
import pytest

from support.keys import api_key_config
from support.problems import apiguard_headers, assert_401, assert_missing, assert_problem


@pytest.fixture
def guard(guards, keys):
    return guards.get(api_key_config(keys))


# ---------------------------------------------------------------------------- credentials in the query

SECRET = "agk_LeakedInAQueryString0000000000000000000000000000"

DEFAULT_PARAMS = ["api_key", "apikey", "key", "access_token", "token"]


@pytest.mark.parametrize("name", DEFAULT_PARAMS)
def test_default_query_params_are_refused_even_with_a_valid_header(guard, keys, name):
    resp = guard.get(f"/orders?{name}={SECRET}", {"x-api-key": keys.alice.key})
    assert_problem(resp, 400, "credential_in_query", secrets=(SECRET, keys.alice.key))


@pytest.mark.parametrize("name", DEFAULT_PARAMS)
def test_default_query_params_are_refused_without_a_header(guard, name):
    resp = guard.get(f"/orders?{name}={SECRET}")
    assert_problem(resp, 400, "credential_in_query", secrets=(SECRET,))


@pytest.mark.parametrize("query", [
    "API_KEY=x", "Api_Key=x", "ApiKey=x", "KEY=x", "Access_Token=x", "TOKEN=x",
    "%61pi_key=x", "%41PI%5FKEY=x", "api%5fkey=x", "access%5Ftoken=x", "%74oken=x", "%6B%65%79=x",
    "page=2&token=x", "a=1&b=2&apikey=x&c=3", "token=", "key=x&key=y",
])
def test_query_param_variants_are_refused(guard, keys, query):
    resp = guard.get(f"/orders?{query}", {"x-api-key": keys.alice.key})
    assert_problem(resp, 400, "credential_in_query", secrets=(keys.alice.key,))


@pytest.mark.parametrize("query", [
    "keyboard=1", "monkey=1", "my_token=x", "tokens=x", "api_keys=x", "q=token", "q=api_key%3Dx",
    "sort=key",
])
def test_similar_query_params_are_not_credentials(guard, keys, query):
    resp = guard.get(f"/search?{query}", {"x-api-key": keys.alice.key})
    seen = resp.upstream_saw
    assert seen["path"] == f"/search?{query}"
    assert seen["headers"]["x-apiguard-consumer"] == ["alice"]


class TestCustomQueryParams:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(api_key_config(keys, query_credential_params=["sig", "X-Secret"]))

    @pytest.mark.parametrize("query", ["sig=abc", "SIG=abc", "x-secret=abc", "X-SECRET=abc",
                                       "%73ig=abc", "a=1&x-secret="])
    def test_configured_params_are_refused(self, guard, keys, query):
        resp = guard.get(f"/orders?{query}", {"x-api-key": keys.alice.key})
        assert_problem(resp, 400, "credential_in_query", secrets=(keys.alice.key,))

    @pytest.mark.parametrize("name", DEFAULT_PARAMS)
    def test_configured_list_replaces_the_default(self, guard, keys, name):
        resp = guard.get(f"/orders?{name}=value", {"x-api-key": keys.alice.key})
        seen = resp.upstream_saw
        assert seen["path"] == f"/orders?{name}=value"
        assert seen["headers"]["x-apiguard-consumer"] == ["alice"]


# ---------------------------------------------------------------------------- exempt paths

@pytest.mark.parametrize("path", ["/healthz", "/healthz/live", "/healthz/ready/deep", "/healthz?x=1",
                                  "/healthz/"])
def test_exempt_paths_pass_without_credentials(guard, path):
    resp = guard.get(path)
    seen = resp.upstream_saw
    assert seen["path"] == path
    assert "x-apiguard-consumer" not in seen["headers"]


@pytest.mark.parametrize("path", ["/healthzz", "/healthz-live", "/healthz.json", "/health", "/",
                                  "/api/healthz", "/x/healthz/live"])
def test_non_exempt_paths_need_credentials(guard, path):
    assert_401(guard.get(path), "missing_credential")


class TestNonCanonicalPathsAreRefused:
    """Without Envoy's normalize_path the plugin sees the raw path. A path an upstream could read
    differently than the exemption/route match did is refused outright, credential or not."""

    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(api_key_config(keys), normalize_path=False)

    @pytest.mark.parametrize("path", [
        "/healthz/../admin", "/healthz/./live", "/healthz/..", "/healthz/%2e%2e/admin",
        "/healthz/%2E%2E/admin", "/healthz/.%2e/admin", "/healthz%2F..%2Fadmin", "/healthz%2fadmin",
        "/healthz/..%2Fadmin", "/healthz%5C..%5Cadmin", "/healthz\\..\\admin", "/healthz\\live",
        # Tomcat/Spring read ..; as .. and drop ;params; frameworks decode %68 to h.
        "/healthz/..;/admin", "/healthz;x=1", "/%68ealthz", "/healthz%00",
    ])
    def test_paths_an_upstream_could_resolve_elsewhere_are_refused(self, guard, path):
        assert_problem(guard.get(path), 400, "non_canonical_path")

    def test_canonical_exempt_path_still_exempt(self, guard):
        resp = guard.get("/healthz/live")
        assert resp.upstream_saw["path"] == "/healthz/live"

    def test_a_valid_credential_does_not_make_the_path_acceptable(self, guard, keys):
        resp = guard.get("/healthz/../admin", {"x-api-key": keys.alice.key})
        assert_problem(resp, 400, "non_canonical_path", secrets=(keys.alice.key,))

    def test_reserved_characters_may_stay_encoded(self, guard, keys):
        resp = guard.get("/files/a%20b%3F", {"x-api-key": keys.alice.key})
        assert resp.upstream_saw["path"] == "/files/a%20b%3F"


class TestRoutesIgnoreCase:
    """/PAYMENTS must not dodge the /payments rule on an upstream that routes regardless of case."""

    JWT = {"providers": [{"issuer": "https://idp.test",
                          "jwks": {"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk"}]}}]}

    @pytest.fixture
    def guard(self, guards, keys):
        cfg = api_key_config(keys, jwt=self.JWT, routes=[{"prefix": "/payments", "credentials": "jwt"}])
        return guards.get(cfg, normalize_path=False)

    def test_case_variants_of_a_route_prefix_fall_under_the_route(self, guard, keys):
        resp = guard.get("/PAYMENTS/1", {"x-api-key": keys.alice.key})
        assert_missing(resp, ['Bearer realm="apiguard"'])

    def test_other_paths_keep_the_default_policy(self, guard, keys):
        assert guard.get("/orders/1", {"x-api-key": keys.alice.key}).upstream_saw["path"] == "/orders/1"

    def test_exemptions_do_not_ignore_case(self, guard):
        assert_401(guard.get("/HEALTHZ"), "missing_credential")


def test_credentials_are_stripped_on_exempt_paths(guard, keys):
    resp = guard.get("/healthz", {"x-api-key": keys.alice.key, "authorization": "ApiKey\t" + keys.alice.key})
    seen = resp.upstream_saw
    assert "x-api-key" not in seen["headers"] and "authorization" not in seen["headers"], seen
    assert keys.alice.key not in json.dumps(seen)


def test_normalized_dot_segments_land_outside_the_exempt_prefix(guard):
    # With normalize_path on (the default here), Envoy resolves /healthz/../admin to /admin first.
    assert_401(guard.get("/healthz/../admin"), "missing_credential")


# ---------------------------------------------------------------------------- CORS preflight

PREFLIGHT = {"origin": "https://app.example.com", "access-control-request-method": "POST",
             "access-control-request-headers": "x-api-key, content-type"}


def test_preflight_passes_without_credentials(guard):
    resp = guard.request("OPTIONS", "/orders", PREFLIGHT)
    seen = resp.upstream_saw
    assert seen["method"] == "OPTIONS"
    assert seen["headers"]["access-control-request-method"] == ["POST"]
    assert apiguard_headers(seen) == {}


def test_preflight_with_a_body_is_a_request_and_needs_credentials(guard):
    # A body means a real request dressed as a preflight, for upstreams that route OPTIONS.
    assert_401(guard.request("OPTIONS", "/orders", PREFLIGHT, body=b'{"amount": 1}'), "missing_credential")


def test_options_without_request_method_needs_credentials(guard):
    headers = {k: v for k, v in PREFLIGHT.items() if k != "access-control-request-method"}
    assert_401(guard.request("OPTIONS", "/orders", headers), "missing_credential")


def test_options_without_origin_is_not_a_preflight(guard):
    # docs: a preflight is OPTIONS with both Origin and Access-Control-Request-Method
    headers = {k: v for k, v in PREFLIGHT.items() if k != "origin"}
    assert_401(guard.request("OPTIONS", "/orders", headers), "missing_credential")


def test_options_without_request_method_with_key_passes(guard, keys):
    resp = guard.request("OPTIONS", "/orders", {"x-api-key": keys.alice.key})
    assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]


def test_get_with_request_method_header_is_not_a_preflight(guard):
    assert_401(guard.get("/orders", PREFLIGHT), "missing_credential")


def test_preflight_cannot_smuggle_identity(guard):
    resp = guard.request("OPTIONS", "/orders", {**PREFLIGHT, "x-apiguard-consumer": "admin"})
    assert apiguard_headers(resp.upstream_saw) == {}


class TestPreflightDisabled:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(api_key_config(keys, allow_cors_preflight=False))

    def test_preflight_needs_credentials(self, guard):
        assert_401(guard.request("OPTIONS", "/orders", PREFLIGHT), "missing_credential")

    def test_preflight_with_key_passes(self, guard, keys):
        resp = guard.request("OPTIONS", "/orders", {**PREFLIGHT, "x-api-key": keys.alice.key})
        assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]

"""Findings of a security review, tried in real Envoy as an attacker would, each as a class of
spellings: route suffix variants, query credentials by name and by value (exempt paths and
report-only included), underscore identity headers, invalid UTF-8 escapes, preflights with a method
override, keys under the wrong Authorization scheme, and configurations that switch enforcement off.
"""
from __future__ import annotations

import pytest

import json

from support.failclosed import assert_failed_closed, launch
from support.jwt import AUDIENCE, ISSUER, bearer, claims, ec_key
from support.keys import api_key_config
from support.problems import apiguard_headers, assert_problem

SIGNER = ec_key("hardening")


def route_config(keys) -> dict:
    # /payments needs a JWT; everything else an API key.
    return api_key_config(keys, jwt={"providers": [{"issuer": ISSUER, "audiences": [AUDIENCE],
                                                    "jwks": {"keys": [SIGNER.jwk]}}]},
                          routes=[{"prefix": "/payments", "credentials": "jwt"}])


@pytest.fixture
def guard(guards, keys):
    return guards.get(route_config(keys))


@pytest.fixture
def report_only(guards, keys):
    return guards.get(api_key_config(keys, report_only=True))


# ---------------------------------------------------------------- 1. route suffix variants

@pytest.mark.parametrize("path", [
    "/payments.json", "/payments.xml", "/PAYMENTS.JSON", "/payments.", "/payments.json/123",
    "/payments:batchGet", "/Payments/1.json",
])
def test_a_route_governs_its_format_suffixes_and_custom_methods(guard, keys, path):
    # an API key does not satisfy the JWT route, in any spelling of it
    resp = guard.get(path, {"x-api-key": keys.alice.key})
    assert_problem(resp, 401, "missing_credential", secrets=(keys.alice.key,))
    resp = guard.get(path, bearer(SIGNER.sign(claims("route-user"))))
    assert resp.upstream_saw["headers"]["x-apiguard-subject"] == ["route-user"]


@pytest.mark.parametrize("path", ["/paymentsx.json", "/payment.json", "/other/payments.json"])
def test_other_paths_keep_the_default_policy(guard, keys, path):
    resp = guard.get(path, {"x-api-key": keys.alice.key})
    assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]


# ---------------------------------------------------------------- 2. query credentials

@pytest.mark.parametrize("query", [
    "a=1;api_key=x", "api_key[]=x", "api_key[0]=x", "api.key=x", "api+key=x", "api%20key=x",
    "API-KEY=x", "api-key=x", "apiKey=x", "access-token=x", "access.token=x", "x-api-key=x",
    "X_API_KEY=x", "authorization=x", "Authorization=Bearer%20x", "api%5Bkey=x",
])
def test_query_credential_names_in_every_spelling_are_refused(guard, keys, query):
    resp = guard.get(f"/orders?{query}", {"x-api-key": keys.alice.key})
    assert_problem(resp, 400, "credential_in_query", secrets=(keys.alice.key,))


def test_query_values_shaped_like_a_key_or_a_token_are_refused_whatever_the_name(guard, keys):
    token = SIGNER.sign(claims("in-query"))
    for query in (f"q={keys.alice.key}", f"state={token}", f"cb=1;x={keys.dave.key}", keys.alice.key,
                  f"next=%20{keys.alice.key}"):
        resp = guard.get(f"/orders?{query}", {"x-api-key": keys.alice.key})
        assert_problem(resp, 400, "credential_in_query", secrets=(keys.alice.key, keys.dave.key, token))
    # look-alikes are not credentials
    for query in ("v=1.2.3", "q=agk_short", f"q={keys.alice.key[:-1]}"):
        resp = guard.get(f"/orders?{query}", {"x-api-key": keys.alice.key})
        assert resp.status == 200, (query, resp)


def test_exempt_paths_do_not_skip_the_query_check(guard, keys):
    resp = guard.get(f"/healthz?key={keys.alice.key}")
    assert_problem(resp, 400, "credential_in_query", secrets=(keys.alice.key,))
    resp = guard.get(f"/healthz/live?q={keys.alice.key}")
    assert_problem(resp, 400, "credential_in_query", secrets=(keys.alice.key,))
    assert guard.get("/healthz?verbose=1").status == 200


def test_report_only_reports_query_credentials_and_never_forwards_them(report_only, keys):
    for path in (f"/healthz?q={keys.alice.key}", f"/orders?Api_Key[]=x&page=2"):
        resp = report_only.get(path, {"x-api-key": keys.alice.key})
        seen = resp.upstream_saw
        assert seen["headers"]["x-apiguard-would-deny"] == ["credential_in_query"]
        assert keys.alice.key not in seen["path"] and "Api_Key" not in seen["path"], seen["path"]


# ---------------------------------------------------------------- 3. underscore identity headers

@pytest.mark.parametrize("spoof", [
    "x_apiguard_consumer", "X_APIGUARD_CONSUMER", "x-apiguard_consumer", "x_apiguard-subject",
    "x_apiguard_would_deny",
])
def test_identity_headers_with_underscores_never_reach_the_upstream(guard, keys, spoof):
    resp = guard.get("/orders", [("x-api-key", keys.alice.key), (spoof, "admin")])
    seen = resp.upstream_saw
    sent = {name.lower().replace("_", "-") for name in seen["headers"]}
    assert sent & {"x-apiguard-subject", "x-apiguard-would-deny"} == set(), seen["headers"]
    assert seen["headers"].get("x-apiguard-consumer") == ["alice"], seen["headers"]
    assert not any("_" in name for name in seen["headers"] if "apiguard" in name), seen["headers"]


def test_forwarded_claim_headers_with_underscores_are_removed(guards, keys):
    config = route_config(keys)
    config["jwt"]["providers"][0]["forward_claims"] = {"tenant": "x-tenant-id"}
    guard = guards.get(config)
    token = SIGNER.sign(claims("claims-user", tenant="t-1"))
    resp = guard.get("/payments", [*bearer(token).items(), ("x_tenant_id", "t-evil"), ("X_TENANT_ID", "t-evil")])
    seen = resp.upstream_saw
    assert seen["headers"]["x-tenant-id"] == ["t-1"]
    assert not [n for n in seen["headers"] if n.lower().replace("_", "-") == "x-tenant-id" and n != "x-tenant-id"]


# ---------------------------------------------------------------- 4. invalid UTF-8 escapes

@pytest.mark.parametrize("path", [
    "/%C0%AE%C0%AE/admin", "/healthz/%C0%AE%C0%AE/x", "/a%80", "/x%E2%82", "/%ED%A0%80", "/orders%C0%AF",
])
def test_invalid_utf8_escapes_make_a_path_non_canonical(guards, keys, path):
    guard = guards.get(route_config(keys), normalize_path=False)
    resp = guard.get(path, {"x-api-key": keys.alice.key})
    assert_problem(resp, 400, "non_canonical_path", secrets=(keys.alice.key,))


def test_valid_utf8_escapes_pass(guards, keys):
    guard = guards.get(route_config(keys), normalize_path=False)
    resp = guard.get("/caf%C3%A9/%E2%82%AC", {"x-api-key": keys.alice.key})
    assert resp.status == 200, resp


# ---------------------------------------------------------------- 5. preflights with a method override

@pytest.mark.parametrize("override", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
def test_an_options_with_a_method_override_needs_credentials(guard, override):
    headers = {"origin": "https://app.test", "access-control-request-method": "POST", override: "DELETE"}
    resp = guard.request("OPTIONS", "/orders", headers)
    assert_problem(resp, 401, "missing_credential")
    # the same preflight without the override passes
    headers.pop(override)
    assert guard.request("OPTIONS", "/orders", headers).status == 200


# ---------------------------------------------------------------- 6. a key in the wrong header

@pytest.mark.parametrize("scheme", ["Bearer ", "Basic ", "Token ", "", "bearer  "])
def test_a_key_under_any_authorization_scheme_is_stripped_everywhere(guards, keys, scheme):
    value = f"{scheme}{keys.alice.key}"
    jwt_only = {"credentials": "jwt", "https": {"required": False}, "exempt_paths": ["/healthz"],
                "jwt": {"providers": [{"issuer": ISSUER, "jwks": {"keys": [SIGNER.jwk]}}]}}
    for config, path in ((api_key_config(keys), "/healthz"), (api_key_config(keys, report_only=True), "/orders"),
                         (jwt_only, "/healthz")):
        resp = guards.get(config).get(path, {"authorization": value})
        seen = resp.upstream_saw
        assert "authorization" not in seen["headers"], (config, seen["headers"])
        assert keys.alice.key not in repr(seen)


# ---------------------------------------------------------------- 7. configurations that switch enforcement off

@pytest.mark.parametrize("top, field", [
    ({"exempt_paths": ["/"]}, "exempt_paths[0]"),
    ({"exempt_paths": ["/api"], "routes": [{"prefix": "/api/admin", "credentials": "api_key"}]}, "exempt_paths[0]"),
    ({"exempt_paths": ["/API"], "routes": [{"prefix": "/api", "credentials": "api_key"}]}, "exempt_paths[0]"),
    ({"routes": [{"prefix": "/"}]}, "routes[0]"),
], ids=["exempt-root", "exempt-covers-route", "exempt-covers-route-by-case", "empty-root-route"])
def test_configurations_that_switch_enforcement_off_fail_closed(wasm_path, keys, top, field):
    config = api_key_config(keys, **top)
    assert_failed_closed(launch(json.dumps(config), wasm_path), {field})

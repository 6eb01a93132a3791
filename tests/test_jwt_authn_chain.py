"""`"verified_by": "envoy_jwt_authn"` end to end: Envoy's own jwt_authn filter (local JWKS,
`payload_in_metadata`, `forward: true`) checks the signature, apiguard after it in the same chain
takes the verified payload from the request's dynamic metadata and applies its own rules.

One Envoy runs the chain; a second one runs apiguard alone (the jwt_authn filter missing), where
the same good token must be refused: apiguard never trusts a token nobody verified.
"""
from __future__ import annotations

import json

import pytest

from support.guards import Guard
from support.harness import Envoy, bootstrap, free_port, wasm_filter
from support.jwt import AUDIENCE, ISSUER, assert_token_refused, bearer, claims, ec_key, jwks
from support.problems import apiguard_headers as identity
from support.schema import assert_valid_config

JWT_AUTHN = "envoy.filters.http.jwt_authn"


@pytest.fixture(scope="module")
def idp_key():
    return ec_key("mesh1")


@pytest.fixture(scope="module")
def other_key():
    return ec_key("mesh1")  # the same kid, another key: what a forger would sign with


def apiguard_config() -> dict:
    config = {
        "credentials": "jwt",
        "https": {"required": False},
        "jwt": {"providers": [{
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "verified_by": "envoy_jwt_authn",
            "max_lifetime_seconds": 3600,
            "forward_claims": {"tenant": "x-tenant-id"},
        }]},
    }
    assert_valid_config(config, "the test's plugin configuration")
    return config


def jwt_authn_filter(key, from_header: str | None = None) -> dict:
    """jwt_authn as Istio's RequestAuthentication sets it up: the payload keyed by issuer, the
    token forwarded. `/optional` lets requests through whatever their token (allow_missing_or_failed).
    `from_header`: jwt_authn reads the token from this header instead of Authorization."""
    sources = {"from_headers": [{"name": from_header}]} if from_header else {}
    return {
        "name": JWT_AUTHN,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"idp": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "local_jwks": {"inline_string": json.dumps(jwks(key))},
                "forward": True,
                "payload_in_metadata": ISSUER,
                **sources,
            }},
            "rules": [
                {"match": {"prefix": "/optional"}, "requires": {"allow_missing_or_failed": {}}},
                {"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}},
            ],
        },
    }


def start_chain(wasm_path, upstream, filters: list[dict]) -> Guard:
    envoy = Envoy(bootstrap(free_port(), free_port(), upstream.port, filters))
    try:
        envoy.start()
    except BaseException:
        envoy.stop()
        raise
    return Guard(envoy, upstream, tls=False)


@pytest.fixture(scope="module")
def chain(wasm_path, upstream, idp_key):
    g = start_chain(wasm_path, upstream,
                    [jwt_authn_filter(idp_key), wasm_filter(json.dumps(apiguard_config()), wasm_path)])
    yield g
    g.stop()


@pytest.fixture(scope="module")
def two_headers(wasm_path, upstream, idp_key):
    """jwt_authn reads x-mesh-token, apiguard reads Authorization: two tokens can differ."""
    g = start_chain(wasm_path, upstream, [jwt_authn_filter(idp_key, from_header="x-mesh-token"),
                                          wasm_filter(json.dumps(apiguard_config()), wasm_path)])
    yield g
    g.stop()


@pytest.fixture(scope="module")
def alone(wasm_path, upstream):
    g = start_chain(wasm_path, upstream, [wasm_filter(json.dumps(apiguard_config()), wasm_path)])
    yield g
    g.stop()


def test_a_token_jwt_authn_verified_passes_with_apiguards_identity_headers(chain, idp_key):
    token = idp_key.sign(claims("mesh-user", tenant="acme"))
    resp = chain.get("/orders/1", bearer(token))
    seen = resp.upstream_saw
    assert identity(seen) == {"x-apiguard-subject": ["mesh-user"],
                              "x-apiguard-consumer": ["mesh-user"]}
    assert seen["headers"].get("x-tenant-id") == ["acme"]
    assert "authorization" not in seen["headers"], "apiguard strips the token jwt_authn forwarded"


def test_an_expired_token_is_refused_by_jwt_authn(chain, idp_key):
    token = idp_key.sign(claims("late", iat=1_600_000_000, exp=1_600_000_600))
    resp = chain.get("/orders/1", bearer(token))
    assert resp.status == 401, resp
    assert resp.seen_upstream == []
    # jwt_authn's own answer, not apiguard's problem document.
    assert not (resp.header("content-type") or "").startswith("application/problem+json"), resp


@pytest.mark.parametrize("case, extra, code", [
    ("lifetime over apiguard's cap", {"lifetime": 7200}, "token_lifetime_too_long"),
    ("a refresh token", {"token_use": "refresh"}, "refresh_token_not_allowed"),
    ("an unforwardable claim", {"tenant": {"nested": True}}, "unforwardable_claim"),
])
def test_apiguards_rules_refuse_tokens_jwt_authn_accepts(chain, idp_key, case, extra, code):
    lifetime = extra.pop("lifetime", 600)
    token = idp_key.sign(claims("rules", lifetime=lifetime, **extra))
    assert_token_refused(chain.get("/orders/1", bearer(token)), code, token)


def test_a_token_jwt_authn_let_through_unverified_is_refused(chain, idp_key, other_key):
    # allow_missing_or_failed: jwt_authn forwards the forged token without metadata.
    forged = other_key.sign(claims("admin"))
    assert_token_refused(chain.get("/optional/x", bearer(forged)), "not_verified_by_jwt_authn", forged)
    # The same route with a good token: jwt_authn verified it, so its payload is there.
    token = idp_key.sign(claims("optional-user"))
    assert identity(chain.get("/optional/x", bearer(token)).upstream_saw)["x-apiguard-subject"] == \
        ["optional-user"]


def test_without_jwt_authn_in_the_chain_a_good_token_is_refused(alone, idp_key):
    token = idp_key.sign(claims("nobody-checked"))
    assert_token_refused(alone.get("/orders/1", bearer(token)), "not_verified_by_jwt_authn", token)


def test_the_metadata_must_be_the_presented_tokens(two_headers, idp_key, other_key):
    vouched = idp_key.sign(claims("alice"))
    # A forged token in apiguard's header, a genuine one where jwt_authn looks.
    forged = other_key.sign(claims("admin"))
    resp = two_headers.get("/orders/1", {"x-mesh-token": vouched, **bearer(forged)})
    assert_token_refused(resp, "jwt_authn_payload_mismatch", forged)
    # The same token in both places is the one jwt_authn verified.
    resp = two_headers.get("/orders/1", {"x-mesh-token": vouched, **bearer(vouched)})
    assert identity(resp.upstream_saw)["x-apiguard-subject"] == ["alice"]

"""API key outcomes end to end: the real key generator's keys, checked by the plugin inside Envoy."""
from __future__ import annotations

import json
import re

import pytest

from support.harness import request
from support.keys import api_key_config, flip_char
from support.problems import apiguard_headers, assert_401, assert_no_secret, assert_problem


@pytest.fixture
def guard(guards, keys):
    return guards.get(api_key_config(keys))


# ---------------------------------------------------------------------------- accepted keys

def test_valid_key_reaches_upstream_as_consumer_without_the_key(guard, keys):
    resp = guard.get("/orders/42", {"x-api-key": keys.alice.key})
    seen = resp.upstream_saw
    assert seen["method"] == "GET"
    assert seen["path"] == "/orders/42"
    assert seen["headers"]["x-apiguard-consumer"] == ["alice"]
    assert "x-api-key" not in seen["headers"], "credential header must be stripped before upstream"
    assert keys.alice.key not in resp.body.decode(), "the key reached the upstream"
    assert seen["headers"]["x-request-id"] == [resp.request_id]
    assert resp.header("www-authenticate") is None


def test_post_with_body_is_forwarded(guard, keys):
    resp = guard.request("POST", "/orders", {"x-api-key": keys.alice.key,
                                              "content-type": "application/json"},
                         body=b'{"item": 1}')
    seen = resp.upstream_saw
    assert seen["method"] == "POST"
    assert seen["body"] == '{"item": 1}'
    assert seen["headers"]["x-apiguard-consumer"] == ["alice"]


def test_key_with_future_expiry_is_accepted(guard, keys):
    resp = guard.get("/", {"x-api-key": keys.dave.key})
    seen = resp.upstream_saw
    assert seen["headers"]["x-apiguard-consumer"] == ["dave"]
    assert "x-api-key" not in seen["headers"]


def test_each_request_is_checked_on_both_workers(guard, keys):
    # --concurrency 2: new connections land on either worker's VM; every one must agree.
    for _ in range(12):
        ok = guard.get("/", {"x-api-key": keys.alice.key})
        assert ok.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]
        denied = guard.get("/", {"x-api-key": keys.stranger.key})
        assert_401(denied, "unknown_api_key", secrets=(keys.stranger.key,))


# ---------------------------------------------------------------------------- refused keys

def test_missing_key_is_401_with_challenge(guard):
    resp = guard.get("/orders")
    doc = assert_401(resp, "missing_credential")
    assert doc["status"] == 401


def test_request_id_is_envoys_x_request_id(guard):
    resp = guard.get("/orders", {"x-request-id": "rid-4242-custom"})
    doc = assert_401(resp, "missing_credential")
    assert doc["request_id"] == "rid-4242-custom"


def test_request_id_is_generated_by_envoy_when_absent(guard):
    status, headers, body = request(guard.port, "GET", "/orders")
    assert status == 401
    doc = json.loads(body)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", doc["request_id"]), doc
    assert doc["code"] == "missing_credential"


@pytest.mark.parametrize("mangle", [
    pytest.param(lambda k: flip_char(k, 10), id="typo-in-random-part"),
    pytest.param(lambda k: flip_char(k, len(k) - 1), id="typo-in-checksum"),
    pytest.param(lambda k: flip_char(k, 4), id="typo-first-char-after-prefix"),
    pytest.param(lambda k: k[:-1], id="truncated"),
    pytest.param(lambda k: k + "A", id="one-char-too-long"),
    pytest.param(lambda k: "agx_" + k[4:], id="wrong-prefix"),
    pytest.param(lambda k: k[:20] + "-" + k[21:], id="non-base62-char"),
    pytest.param(lambda k: "hunter2", id="garbage"),
    pytest.param(lambda k: k[4:], id="no-prefix"),
])
def test_malformed_key_is_refused_before_lookup(guard, keys, mangle):
    bad = mangle(keys.alice.key)
    assert bad != keys.alice.key
    resp = guard.get("/", {"x-api-key": bad})
    assert_401(resp, "malformed_api_key", secrets=(bad, keys.alice.key))


def test_unknown_key_is_401(guard, keys):
    resp = guard.get("/", {"x-api-key": keys.stranger.key})
    assert_401(resp, "unknown_api_key", secrets=(keys.stranger.key,))


def test_revoked_key_is_401(guard, keys):
    resp = guard.get("/", {"x-api-key": keys.bob.key})
    assert_401(resp, "revoked_api_key", secrets=(keys.bob.key,))


def test_expired_key_is_401(guard, keys):
    resp = guard.get("/", {"x-api-key": keys.carol.key})
    assert_401(resp, "expired_api_key", secrets=(keys.carol.key,))


@pytest.mark.parametrize("second", ["same", "other"])
def test_repeated_key_header_is_400_multiple_credentials(guard, keys, second):
    other = keys.alice.key if second == "same" else keys.dave.key
    resp = guard.get("/", [("x-api-key", keys.alice.key), ("x-api-key", other)])
    assert_problem(resp, 400, "multiple_credentials", secrets=(keys.alice.key, other))


def test_authorization_apikey_is_ignored_when_not_allowed(guard, keys):
    resp = guard.get("/", {"authorization": f"ApiKey {keys.alice.key}"})
    assert_401(resp, "missing_credential", secrets=(keys.alice.key,))


# ---------------------------------------------------------------------------- identity headers

def test_spoofed_identity_headers_are_replaced(guard, keys):
    resp = guard.get("/", {
        "x-api-key": keys.alice.key,
        "x-apiguard-consumer": "admin",
        "X-Apiguard-Subject": "root",
        "x-apiguard-would-deny": "nothing",
        "x-apiguard-anything": "spoofed",
    })
    seen = resp.upstream_saw
    assert apiguard_headers(seen) == {"x-apiguard-consumer": ["alice"]}


def test_spoofed_consumer_is_removed_on_exempt_path(guard):
    # "Every request header whose name starts with x-apiguard- is removed from the client's request
    # first": an exempt path must not let a client hand the upstream a forged identity.
    resp = guard.get("/healthz", {"x-apiguard-consumer": "admin", "x-apiguard-subject": "root"})
    assert apiguard_headers(resp.upstream_saw) == {}


def test_denial_does_not_echo_the_offered_key_anywhere(guard, keys):
    for offered in (keys.stranger.key, keys.bob.key, keys.carol.key, flip_char(keys.alice.key, 12)):
        resp = guard.get("/", {"x-api-key": offered})
        assert resp.status == 401, resp
        assert_no_secret(resp, (offered,))


# ---------------------------------------------------------------------------- api_keys options

class TestAuthorizationHeaderAllowed:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(api_key_config(keys, api_keys={"allow_authorization_header": True}))

    def test_authorization_apikey_is_accepted_and_stripped(self, guard, keys):
        resp = guard.get("/", {"authorization": f"ApiKey {keys.alice.key}"})
        seen = resp.upstream_saw
        assert seen["headers"]["x-apiguard-consumer"] == ["alice"]
        assert "authorization" not in seen["headers"]
        assert keys.alice.key not in resp.body.decode()

    def test_authorization_apikey_unknown_key_is_401(self, guard, keys):
        resp = guard.get("/", {"authorization": f"ApiKey {keys.stranger.key}"})
        assert_401(resp, "unknown_api_key", secrets=(keys.stranger.key,))

    def test_authorization_apikey_malformed_is_401(self, guard, keys):
        bad = flip_char(keys.alice.key, 30)
        resp = guard.get("/", {"authorization": f"ApiKey {bad}"})
        assert_401(resp, "malformed_api_key", secrets=(bad,))

    def test_header_key_still_works(self, guard, keys):
        resp = guard.get("/", {"x-api-key": keys.alice.key})
        assert resp.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]

    def test_missing_still_401(self, guard):
        assert_401(guard.get("/"), "missing_credential")


class TestStripCredentialFalse:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(api_key_config(
            keys, api_keys={"strip_credential": False, "allow_authorization_header": True}))

    def test_key_header_is_kept_for_upstream(self, guard, keys):
        seen = guard.get("/", {"x-api-key": keys.alice.key}).upstream_saw
        assert seen["headers"]["x-api-key"] == [keys.alice.key]
        assert seen["headers"]["x-apiguard-consumer"] == ["alice"]

    def test_authorization_header_is_kept_for_upstream(self, guard, keys):
        seen = guard.get("/", {"authorization": f"ApiKey {keys.alice.key}"}).upstream_saw
        assert seen["headers"]["authorization"] == [f"ApiKey {keys.alice.key}"]
        assert seen["headers"]["x-apiguard-consumer"] == ["alice"]

    def test_denials_still_leak_nothing(self, guard, keys):
        assert_401(guard.get("/", {"x-api-key": keys.bob.key}), "revoked_api_key",
                   secrets=(keys.bob.key,))


class TestCustomHeaderAndRealm:
    @pytest.fixture
    def guard(self, guards, keys):
        return guards.get(api_key_config(keys, realm="payments", api_keys={"header": "x-client-key"}))

    def test_custom_header_carries_the_key_and_is_stripped(self, guard, keys):
        seen = guard.get("/", {"x-client-key": keys.alice.key}).upstream_saw
        assert seen["headers"]["x-apiguard-consumer"] == ["alice"]
        assert "x-client-key" not in seen["headers"]

    def test_default_header_is_not_a_credential_any_more(self, guard, keys):
        resp = guard.get("/", {"x-api-key": keys.alice.key})
        assert_401(resp, "missing_credential",
                   challenge='ApiKey realm="payments", header="x-client-key"',
                   secrets=(keys.alice.key,))

    def test_challenge_names_realm_and_header(self, guard, keys):
        resp = guard.get("/", {"x-client-key": keys.stranger.key})
        assert_401(resp, "unknown_api_key", challenge='ApiKey realm="payments", header="x-client-key"',
                   secrets=(keys.stranger.key,))

    def test_repeated_custom_header_is_400(self, guard, keys):
        resp = guard.get("/", [("x-client-key", keys.alice.key), ("x-client-key", keys.dave.key)])
        assert_problem(resp, 400, "multiple_credentials", secrets=(keys.alice.key, keys.dave.key))

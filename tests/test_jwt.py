"""JWT access tokens end to end, with inline keys: real Envoy (two workers, V8) loading the built
plugin, tokens signed at test time with PyJWT / cryptography, or crafted by hand for the attacks.

One Envoy serves the main configuration (four providers, routes with the "both"/"either"/bound
policies); a second one checks `strip_token: false`.
"""
from __future__ import annotations

import time

import pytest

from support.harness import wait_until
from support.jwt import (
    AUDIENCE,
    ISSUER,
    MISSING_CHALLENGE,
    assert_token_refused,
    b64u,
    b64u_json,
    claims,
    craft,
    ec_key,
    ed25519_key,
    flip_signature_bit,
    hmac_key,
    hs256_with_secret,
    jwks,
    rsa_key,
    token_secrets,
)
from support.problems import DEFAULT_CHALLENGE as APIKEY_CHALLENGE
from support.problems import apiguard_headers as identity
from support.problems import assert_missing, assert_no_secret, assert_problem

RSA_ONLY = "https://rsa-only.apiguard.test/"     # one RSA key, no kid needed
STRICT = "https://strict.apiguard.test/"         # clock_skew_seconds 0
PS_ONLY = "https://ps-only.apiguard.test/"       # algorithms: [PS256]
PINNED = "https://pinned.apiguard.test/"         # RSA key with JWK alg RS256
MAX_TOKEN_BYTES = 8192


class Keys:
    def __init__(self, keygen):
        self.ec = ec_key("ec1")
        self.rsa = rsa_key("rsa1")
        self.ed = ed25519_key("ed1")
        self.hs = hmac_key("hs1")
        self.strict = ec_key("strict1")
        self.other_ec = ec_key("ec1")          # same kid as self.ec, different key: bad signature
        self.alice = keygen("alice")
        self.stranger = keygen("stranger")     # well-formed, never configured


@pytest.fixture(scope="module")
def k(keygen) -> Keys:
    return Keys(keygen)


def main_config(k: Keys, **jwt_top) -> dict:
    return {
        "credentials": "jwt",
        "https": {"required": False},
        "api_keys": {"keys": [k.alice.entry]},
        "routes": [
            {"prefix": "/bound", "credentials": "both", "bind_claim": "azp"},
            {"prefix": "/both", "credentials": "both"},
            {"prefix": "/either", "credentials": "either"},
        ],
        "jwt": {
            "providers": [
                {"issuer": ISSUER, "audiences": [AUDIENCE],
                 "jwks": jwks(k.ec, k.rsa, k.ed, k.hs),
                 "forward_claims": {"tenant": "x-tenant-id", "scope": "x-scope"}},
                {"issuer": RSA_ONLY, "jwks": jwks(k.rsa)},
                {"issuer": STRICT, "clock_skew_seconds": 0, "jwks": jwks(k.strict)},
                {"issuer": PS_ONLY, "algorithms": ["PS256"], "jwks": jwks(k.rsa)},
                # the same RSA key, pinned by its JWK `alg` to RS256
                {"issuer": PINNED, "jwks": {"keys": [{**k.rsa.jwk, "kid": "pinned", "alg": "RS256"}]}},
            ],
            **jwt_top,
        },
    }


SENT_TOKENS: list[str] = []


@pytest.fixture(scope="module")
def guard(new_guard, k):
    g = new_guard(main_config(k))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def keep_guard(new_guard, k):
    g = new_guard(main_config(k, strip_token=False))
    yield g
    g.stop()


def send(guard, token: str, path: str = "/orders/1", extra: dict | None = None, scheme: str = "Bearer"):
    SENT_TOKENS.append(token)
    headers = {"authorization": f"{scheme} {token}", **(extra or {})}
    return guard.get(path, headers)


# ------------------------------------------------------------------------------ accepted tokens

ALGS = {
    "ES256": lambda k: (k.ec, "ES256"),
    "RS256": lambda k: (k.rsa, "RS256"),
    "PS256": lambda k: (k.rsa, "PS256"),
    "EdDSA": lambda k: (k.ed, "EdDSA"),
    "HS256": lambda k: (k.hs, "HS256"),
}


@pytest.mark.parametrize("alg", list(ALGS))
def test_good_token_passes_with_each_algorithm(guard, k, alg):
    key, name = ALGS[alg](k)
    token = key.sign(claims(f"user-{alg}"), alg=name)
    resp = send(guard, token)
    seen = resp.upstream_saw
    assert identity(seen) == {"x-apiguard-subject": [f"user-{alg}"],
                              "x-apiguard-consumer": [f"user-{alg}"]}
    assert "authorization" not in seen["headers"], "the token header must be stripped by default"
    assert_no_secret(resp, token_secrets(token))
    assert resp.header("www-authenticate") is None


def test_token_without_kid_is_tried_against_matching_keys(guard, k):
    token = k.ed.sign(claims("no-kid"), kid=None)
    assert identity(send(guard, token).upstream_saw)["x-apiguard-subject"] == ["no-kid"]


def test_bearer_scheme_is_case_insensitive_and_aud_may_be_a_list(guard, k):
    token = k.ec.sign(claims("casey", aud=["other-api", AUDIENCE]))
    resp = send(guard, token, scheme="bEaReR")
    assert identity(resp.upstream_saw)["x-apiguard-subject"] == ["casey"]


def test_same_token_passes_on_both_workers_repeatedly(guard, k):
    # fresh connection each time: both workers' VMs (and their verified-token caches) are exercised
    token = k.rsa.sign(claims("repeat"))
    for _ in range(12):
        assert identity(send(guard, token).upstream_saw)["x-apiguard-subject"] == ["repeat"]


def test_client_sent_identity_headers_are_replaced(guard, k):
    token = k.ec.sign(claims("real-user"))
    resp = send(guard, token, extra={"x-apiguard-subject": "admin", "x-apiguard-consumer": "admin",
                                     "x-apiguard-would-deny": "nothing"})
    assert identity(resp.upstream_saw) == {"x-apiguard-subject": ["real-user"],
                                           "x-apiguard-consumer": ["real-user"]}


def test_forward_claims_set_headers_and_drop_client_copies(guard, k):
    token = k.ec.sign(claims("tenant-user", tenant="acme", scope=["orders:read", "orders:write"]))
    resp = send(guard, token, extra={"x-tenant-id": "evil-corp", "x-scope": "admin"})
    headers = resp.upstream_saw["headers"]
    assert headers["x-tenant-id"] == ["acme"]
    assert headers["x-scope"] == ["orders:read,orders:write"]


def test_missing_forwarded_claim_sends_no_header_and_removes_clients_copy(guard, k):
    token = k.ec.sign(claims("no-tenant"))
    resp = send(guard, token, extra={"x-tenant-id": "evil-corp", "x-scope": "admin"})
    headers = resp.upstream_saw["headers"]
    assert "x-tenant-id" not in headers
    assert "x-scope" not in headers


def test_numeric_and_boolean_claims_are_forwarded_as_is(guard, k):
    token = k.ec.sign(claims("n", tenant=42, scope=True))
    headers = send(guard, token).upstream_saw["headers"]
    assert headers["x-tenant-id"] == ["42"]
    assert headers["x-scope"] == ["true"]


@pytest.mark.parametrize("case", ["exp_within_skew", "nbf_within_skew", "lifetime_exactly_max",
                                  "iat_within_skew", "no_iat"])
def test_boundaries_that_still_pass(guard, k, case):
    now = _now()
    extra = {
        "exp_within_skew": dict(iat=now - 600, exp=now - 20),
        "nbf_within_skew": dict(nbf=now + 20),
        "lifetime_exactly_max": dict(iat=now, exp=now + 3600),
        "iat_within_skew": dict(iat=now + 20, exp=now + 600),
        "no_iat": dict(iat=None, exp=now + 600),
    }[case]
    token = k.ec.sign(claims(f"edge-{case}", **extra))
    assert identity(send(guard, token).upstream_saw)["x-apiguard-subject"] == [f"edge-{case}"]


def test_pinned_key_verifies_its_own_algorithm(guard, k):
    token = k.rsa.sign(claims("pinned", iss=PINNED), alg="RS256", kid="pinned")
    assert identity(send(guard, token).upstream_saw)["x-apiguard-subject"] == ["pinned"]


def test_any_x_apiguard_header_from_the_client_is_removed(guard, k):
    token = k.ec.sign(claims("clean"))
    seen = send(guard, token, extra={"x-apiguard-role": "admin", "X-ApiGuard-Tenant": "x"}).upstream_saw
    assert identity(seen) == {"x-apiguard-subject": ["clean"], "x-apiguard-consumer": ["clean"]}


def test_token_header_kept_with_strip_token_false(keep_guard, k):
    token = k.ec.sign(claims("keeper"))
    resp = send(keep_guard, token)
    seen = resp.upstream_saw
    assert seen["headers"]["authorization"] == [f"Bearer {token}"]
    assert identity(seen)["x-apiguard-subject"] == ["keeper"]


def test_cached_token_is_rechecked_for_expiry(guard, k):
    # STRICT has no clock skew: a token valid for 2-3 s passes, then is refused as expired even
    # though each worker has it in its verified-token cache.
    now = int(time.time())
    token = k.strict.sign({"iss": STRICT, "sub": "short", "iat": now, "exp": now + 3})
    first = send(guard, token)
    assert identity(first.upstream_saw)["x-apiguard-subject"] == ["short"]
    for _ in range(4):
        send(guard, token)  # warm both workers' caches (pass or, near exp, already expired)

    expired = wait_until(lambda: (r := send(guard, token)).status == 401 and r, 6, "token expiry")
    assert_token_refused(expired, "token_expired", token)
    for _ in range(6):
        assert_token_refused(send(guard, token), "token_expired", token)


# ------------------------------------------------------------------------------ missing token

def test_missing_token_gets_bare_bearer_challenge(guard):
    resp = guard.get("/orders/1")
    assert_missing(resp, [MISSING_CHALLENGE])


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz"])
def test_authorization_without_a_bearer_token_is_missing(guard, value):
    resp = guard.get("/orders/1", {"authorization": value})
    assert_missing(resp, [MISSING_CHALLENGE])


# ------------------------------------------------------------------------------ refused tokens

def _now() -> int:
    return int(time.time())


def _oversized(k: Keys) -> str:
    token = k.ec.sign(claims("big", pad="x" * 9000))
    assert MAX_TOKEN_BYTES < len(token) < 60 * 1024 - 2048, len(token)
    return token


REFUSALS = {
    "expired": ("token_expired", lambda k: k.ec.sign(claims(iat=_now() - 700, exp=_now() - 120))),
    "not_yet_valid": ("token_not_yet_valid", lambda k: k.ec.sign(claims(nbf=_now() + 300))),
    "issued_in_future": ("token_issued_in_future",
                         lambda k: k.ec.sign(claims(iat=_now() + 300, exp=_now() + 600))),
    "lifetime_too_long": ("token_lifetime_too_long", lambda k: k.ec.sign(claims(lifetime=7200))),
    "lifetime_too_long_no_iat": ("token_lifetime_too_long",
                                 lambda k: k.ec.sign(claims(lifetime=7200, iat=None))),
    "missing_exp": ("missing_exp", lambda k: k.ec.sign(claims(exp=None))),
    "wrong_issuer": ("unknown_issuer", lambda k: k.ec.sign(claims(iss="https://evil.example/"))),
    "missing_issuer": ("unknown_issuer", lambda k: k.ec.sign(claims(iss=None))),
    "wrong_audience": ("audience_mismatch", lambda k: k.ec.sign(claims(aud="billing-api"))),
    "missing_audience": ("audience_mismatch", lambda k: k.ec.sign(claims(aud=None))),
    "refresh_token_use": ("refresh_token_not_allowed",
                          lambda k: k.ec.sign(claims(token_use="refresh"))),
    "refresh_typ_claim": ("refresh_token_not_allowed", lambda k: k.ec.sign(claims(typ="Refresh_Token"))),
    "refresh_header_typ": ("refresh_token_not_allowed",
                           lambda k: k.ec.sign(claims(), headers={"typ": "application/refresh+jwt"})),
    "alg_none": ("alg_none", lambda k: craft({"alg": "none", "typ": "JWT"}, claims())),
    "alg_None_case": ("alg_none", lambda k: craft({"alg": "None", "kid": "ec1"}, claims())),
    "hs256_with_rsa_public_key_by_kid": (
        "algorithm_confusion",
        lambda k: hs256_with_secret({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, claims(), k.rsa.public_pem)),
    "hs256_with_rsa_public_key_no_kid": (
        "algorithm_confusion",
        lambda k: hs256_with_secret({"alg": "HS256", "typ": "JWT"}, claims(iss=RSA_ONLY), k.rsa.public_pem)),
    "alg_not_allowed": ("alg_not_allowed", lambda k: k.rsa.sign(claims(iss=PS_ONLY), alg="RS256")),
    "unknown_alg": ("alg_not_allowed",
                    lambda k: craft({"alg": "ES256K", "kid": "ec1"}, claims(), b"\x01" * 64)),
    # ES512 is supported, but ec1 is a P-256 key: the curve decides, not the header.
    "wrong_curve": ("key_type_mismatch",
                    lambda k: craft({"alg": "ES512", "kid": "ec1"}, claims(), b"\x01" * 132)),
    "key_type_mismatch": ("key_type_mismatch", lambda k: k.ec.sign(claims(), kid="rsa1")),
    "unknown_kid": ("unknown_kid", lambda k: k.ec.sign(claims(), kid="no-such-kid")),
    "crit_header": ("unsupported_crit_header",
                    lambda k: k.ec.sign(claims(), headers={"crit": ["exp"], "exp": 1})),
    "malformed_base64": ("malformed_token",
                         lambda k: "eyJhbGciOiJFUzI1NiJ9!!.e30.c2lnbmF0dXJlc2lnbmF0dXJl"),
    "padded_base64": ("malformed_token",
                      lambda k: (lambda t: t.split(".")[0] + "==." + ".".join(t.split(".")[1:]))(
                          k.ec.sign(claims()))),
    "two_segments": ("malformed_token", lambda k: ".".join(k.ec.sign(claims()).split(".")[:2])),
    "claims_not_json": ("malformed_token",
                        lambda k: f"{b64u_json({'alg': 'ES256', 'kid': 'ec1'})}.bm90IGpzb24.c2lnbmF0dXJl"),
    "oversized": ("token_too_large", _oversized),
    "bad_signature_bit_flip": ("invalid_signature", lambda k: flip_signature_bit(k.ec.sign(claims()))),
    "bad_signature_rsa_bit_flip": ("invalid_signature",
                                   lambda k: flip_signature_bit(k.rsa.sign(claims(), alg="PS256"))),
    "signed_by_other_key_same_kid": ("invalid_signature", lambda k: k.other_ec.sign(claims())),
    "hs256_wrong_secret": ("invalid_signature",
                           lambda k: hs256_with_secret({"alg": "HS256", "kid": "hs1"}, claims(), b"s" * 32)),
    "hs384_with_32_byte_key": ("key_type_mismatch", lambda k: k.hs.sign(claims(), alg="HS384")),
    "jwk_alg_pins_the_key": ("key_type_mismatch", lambda k: k.rsa.sign(claims(iss=PINNED), alg="PS256",
                                                                       kid="pinned")),
    "exp_is_a_string": ("malformed_token", lambda k: k.ec.sign(claims(exp=str(_now() + 600)))),
    "header_not_json": ("malformed_token", lambda k: f"{b64u(b'not json at all')}.{b64u_json(claims())}.c2lnbmF0dXJl"),
    "missing_sub": ("missing_sub", lambda k: k.ec.sign(claims(sub=None))),
    "numeric_sub": ("missing_sub", lambda k: k.ec.sign(claims(sub=12345))),
    "sub_too_long": ("invalid_sub", lambda k: k.ec.sign(claims(sub="u" * 257))),
    "sub_non_ascii": ("invalid_sub", lambda k: k.ec.sign(claims(sub="j\u00fcrgen"))),
    "claim_with_comma_in_array": ("unforwardable_claim",
                                  lambda k: k.ec.sign(claims(scope=["a,b", "c"]))),
    "claim_non_ascii": ("unforwardable_claim", lambda k: k.ec.sign(claims(tenant="caf\u00e9"))),
    "claim_null": ("unforwardable_claim", lambda k: k.ec.sign(claims(tenant=None) | {"tenant": None})),
    "empty_sub": ("missing_sub", lambda k: k.ec.sign(claims(sub=""))),
    "sub_with_spaces": ("invalid_sub", lambda k: k.ec.sign(claims(sub=" admin "))),
    "unforwardable_claim": ("unforwardable_claim", lambda k: k.ec.sign(claims(tenant={"id": 1}))),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_token_is_refused_with_its_code(guard, k, case):
    code, make = REFUSALS[case]
    token = make(k)
    resp = send(guard, token)
    doc = assert_token_refused(resp, code, token)
    assert token not in doc["detail"]


def test_oversized_token_description_names_the_sizes(guard, k):
    token = _oversized(k)
    doc = assert_token_refused(send(guard, token), "token_too_large", token)
    assert str(len(token)) in doc["detail"] and str(MAX_TOKEN_BYTES) in doc["detail"], doc["detail"]


def test_expired_description_says_how_long_ago(guard, k):
    token = k.ec.sign(claims(iat=_now() - 700, exp=_now() - 120))
    doc = assert_token_refused(send(guard, token), "token_expired", token)
    assert "expired" in doc["detail"], doc["detail"]


def test_refusals_are_the_same_on_both_workers(guard, k):
    good = k.ec.sign(claims("w"))
    bad = flip_signature_bit(good)
    for _ in range(8):
        assert_token_refused(send(guard, bad), "invalid_signature", bad)
        assert identity(send(guard, good).upstream_saw)["x-apiguard-subject"] == ["w"]


def test_refused_token_is_not_cached_as_good_after_a_good_one(guard, k):
    # The good token is cached; a token with the same header and claims but a broken signature is a
    # different token and must still be refused.
    good = k.ec.sign(claims("cache"))
    for _ in range(4):
        assert send(guard, good).status == 200
    bad = flip_signature_bit(good)
    for _ in range(4):
        assert_token_refused(send(guard, bad), "invalid_signature", bad)


def test_two_authorization_headers_are_refused(guard, k):
    # docs/configuration.md, Denials: 400 multiple_credentials when "the credential header appears
    # more than once". Envoy folds a repeated Authorization header (an inline header) into one value
    # joined by ",", so the plugin must recognise "Bearer a,Bearer b" (a JWT never holds a comma).
    a, b = k.ec.sign(claims("a")), k.ec.sign(claims("b"))
    SENT_TOKENS.extend([a, b])
    resp = guard.get("/orders/1", [("authorization", f"Bearer {a}"), ("authorization", f"Bearer {b}")])
    assert_problem(resp, 400, "multiple_credentials", secrets=(*token_secrets(a), *token_secrets(b)))


def test_token_in_query_string_is_refused(guard, k):
    token = k.ec.sign(claims("q"))
    SENT_TOKENS.append(token)
    resp = guard.get(f"/orders/1?access_token={token}")
    assert_problem(resp, 400, "credential_in_query", secrets=token_secrets(token))


# ------------------------------------------------------------------------------ credential policies

def test_both_with_key_and_token_passes(guard, k):
    token = k.ec.sign(claims("token-sub"))
    resp = send(guard, token, "/both/x", {"x-api-key": k.alice.key})
    seen = resp.upstream_saw
    assert identity(seen) == {"x-apiguard-consumer": ["alice"], "x-apiguard-subject": ["token-sub"]}
    assert "authorization" not in seen["headers"]
    assert "x-api-key" not in seen["headers"]
    assert_no_secret(resp, (*token_secrets(token), k.alice.key))


def test_both_with_token_only_is_missing_credential(guard, k):
    token = k.ec.sign(claims("token-sub"))
    resp = send(guard, token, "/both/x")
    assert_missing(resp, [APIKEY_CHALLENGE, MISSING_CHALLENGE])
    assert_no_secret(resp, token_secrets(token))


def test_both_with_key_only_is_missing_credential(guard, k):
    resp = guard.get("/both/x", {"x-api-key": k.alice.key})
    assert_missing(resp, [APIKEY_CHALLENGE, MISSING_CHALLENGE])
    assert_no_secret(resp, (k.alice.key,))


def test_both_with_key_and_bad_token_is_refused_for_the_token(guard, k):
    token = k.ec.sign(claims(exp=_now() - 300, iat=_now() - 600))
    resp = send(guard, token, "/both/x", {"x-api-key": k.alice.key})
    assert_token_refused(resp, "token_expired", token, other_challenges=[APIKEY_CHALLENGE])
    assert_no_secret(resp, (k.alice.key,))


def test_both_with_bad_key_and_good_token_is_refused_for_the_key(guard, k):
    token = k.ec.sign(claims("token-sub"))
    resp = send(guard, token, "/both/x", {"x-api-key": k.stranger.key})
    assert_problem(resp, 401, "unknown_api_key", secrets=(*token_secrets(token), k.stranger.key))


def test_bound_route_passes_when_azp_is_the_keys_consumer(guard, k):
    token = k.ec.sign(claims("someone", azp="alice"))
    resp = send(guard, token, "/bound/orders", {"x-api-key": k.alice.key})
    assert identity(resp.upstream_saw) == {"x-apiguard-consumer": ["alice"],
                                           "x-apiguard-subject": ["someone"]}


@pytest.mark.parametrize("azp", ["mallory", "Alice", None], ids=["other", "case-differs", "missing"])
def test_bound_route_refuses_a_token_bound_to_someone_else(guard, k, azp):
    token = k.ec.sign(claims("someone", azp=azp))
    resp = send(guard, token, "/bound/orders", {"x-api-key": k.alice.key})
    assert_problem(resp, 401, "credential_binding_mismatch", secrets=(*token_secrets(token), k.alice.key))
    assert resp.header_all("www-authenticate"), "a 401 must carry a challenge"


def test_binding_applies_only_to_the_bound_route(guard, k):
    token = k.ec.sign(claims("someone", azp="mallory"))
    resp = send(guard, token, "/both/orders", {"x-api-key": k.alice.key})
    assert identity(resp.upstream_saw)["x-apiguard-consumer"] == ["alice"]


def test_either_with_key_only_passes(guard, k):
    resp = guard.get("/either/x", {"x-api-key": k.alice.key})
    seen = resp.upstream_saw
    assert identity(seen) == {"x-apiguard-consumer": ["alice"]}
    assert "x-api-key" not in seen["headers"]


def test_either_with_token_only_passes(guard, k):
    token = k.ed.sign(claims("either-user"))
    seen = send(guard, token, "/either/x").upstream_saw
    assert identity(seen)["x-apiguard-subject"] == ["either-user"]
    assert "authorization" not in seen["headers"]


def test_either_with_both_valid_passes_with_both_identities(guard, k):
    token = k.ed.sign(claims("either-user"))
    seen = send(guard, token, "/either/x", {"x-api-key": k.alice.key}).upstream_saw
    assert identity(seen) == {"x-apiguard-consumer": ["alice"], "x-apiguard-subject": ["either-user"]}


def test_either_with_neither_is_missing_with_both_challenges(guard):
    resp = guard.get("/either/x")
    assert_missing(resp, [APIKEY_CHALLENGE, MISSING_CHALLENGE])


def test_either_with_good_key_and_bad_token_is_refused(guard, k):
    token = k.ec.sign(claims(token_use="refresh"))
    resp = send(guard, token, "/either/x", {"x-api-key": k.alice.key})
    assert_token_refused(resp, "refresh_token_not_allowed", token, other_challenges=[APIKEY_CHALLENGE])


def test_either_with_bad_key_and_good_token_is_refused(guard, k):
    token = k.ec.sign(claims("either-user"))
    resp = send(guard, token, "/either/x", {"x-api-key": k.stranger.key})
    assert_problem(resp, 401, "unknown_api_key", secrets=(*token_secrets(token), k.stranger.key))


# ------------------------------------------------------------------------------ no leaks

def test_no_token_ever_appears_in_the_envoy_log(guard, keep_guard):
    assert SENT_TOKENS, "runs after the other tests of this module"
    for g in (guard, keep_guard):
        log = g.envoy.log()
        for token in SENT_TOKENS:
            for secret in token_secrets(token):
                assert secret not in log, f"a token (or part of one) is in {g.envoy.log_path}"

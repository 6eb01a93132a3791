"""ES384 (P-384) and ES512 (P-521) end to end in real Envoy: tokens signed at test time with
PyJWT / cryptography, verified with inline keys and with a remote JWKS; a token aimed at a key of
another curve is refused with `key_type_mismatch`; an inline JWKS that mixes usable keys with keys
of other types, curves and uses loads (those are skipped).
"""
from __future__ import annotations

import json

import pytest

from support.failclosed import assert_failed_closed, launch
from support.harness import StaticServer, wait_until
from support.jwt import (
    AUDIENCE,
    ISSUER,
    assert_token_refused,
    b64u,
    bearer,
    claims,
    ec_key,
    flip_signature_bit,
    jwks,
)

MIXED = "https://mixed.apiguard.test/"          # inline JWKS with skipped neighbours
ONLY_384 = "https://es384-only.apiguard.test/"  # algorithms: [ES384]
REMOTE = "https://remote-ec.apiguard.test/"     # remote JWKS with P-384 / P-521 keys


class Keys:
    def __init__(self):
        self.p256 = ec_key("p256")
        self.p384 = ec_key("p384", "P-384")
        self.p521 = ec_key("p521", "P-521")
        self.other384 = ec_key("p384", "P-384")   # same kid, another key: bad signature
        self.mixed384 = ec_key("m384", "P-384")
        self.r384 = ec_key("r384", "P-384")
        self.r521 = ec_key("r521", "P-521")


def skipped_neighbours() -> list[dict]:
    """Keys the plugin does not verify with: an encryption key, X25519, secp256k1, an unknown kty."""
    return [
        {"kty": "RSA", "use": "enc", "kid": "enc1", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "crv": "X25519", "kid": "x1", "x": b64u(bytes(32))},
        {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": b64u(bytes(32)), "y": b64u(bytes(32))},
        {"kty": "AKP", "kid": "pq1", "alg": "ML-DSA-44", "pub": "AA"},
    ]


@pytest.fixture(scope="module")
def k() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def jwks_server(k):
    body = json.dumps({"keys": [k.r384.jwk, *skipped_neighbours(), k.r521.jwk]}).encode()
    server = StaticServer(body, 200).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guard(new_guard, k, jwks_server):
    config = {
        "credentials": "jwt",
        "https": {"required": False},
        "jwt": {"providers": [
            {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": jwks(k.p256, k.p384, k.p521)},
            {"issuer": MIXED, "jwks": {"keys": [
                *skipped_neighbours()[:2], k.mixed384.jwk, *skipped_neighbours()[2:]]}},
            {"issuer": ONLY_384, "algorithms": ["ES384"], "jwks": jwks(k.p384, k.p521)},
            {"issuer": REMOTE, "remote_jwks": {"cluster": "idp", "path": "/jwks",
                                               "min_refetch_interval_seconds": 1}},
        ]},
    }
    g = new_guard(config, extra_clusters={"idp": jwks_server.port})
    yield g
    g.stop()


def passes(guard, token: str, sub: str):
    resp = guard.get("/", bearer(token))
    assert resp.status == 200, resp.body
    assert resp.upstream_saw["headers"]["x-apiguard-subject"] == [sub]


def test_es384_and_es512_tokens_pass_with_inline_keys(guard, k):
    passes(guard, k.p384.sign(claims("es384")), "es384")
    passes(guard, k.p521.sign(claims("es512")), "es512")
    passes(guard, k.p256.sign(claims("es256")), "es256")
    # Without kid: found by the algorithm's curve.
    passes(guard, k.p521.sign(claims("es512-nokid"), kid=False), "es512-nokid")


def test_bad_signatures_are_refused(guard, k):
    for token in (k.other384.sign(claims()), flip_signature_bit(k.p521.sign(claims()))):
        assert_token_refused(guard.get("/", bearer(token)), "invalid_signature", token)


def test_wrong_curve_for_the_kid_is_refused(guard, k):
    # Signed with the P-521 key (ES512) but naming the P-384 key, and the reverse.
    cases = [k.p521.sign(claims(), kid="p384"), k.p384.sign(claims(), kid="p521"),
             k.p384.sign(claims(), kid="p256")]
    for token in cases:
        assert_token_refused(guard.get("/", bearer(token)), "key_type_mismatch", token)


def test_allow_list_with_es384_only(guard, k):
    passes(guard, k.p384.sign(claims("only384", iss=ONLY_384)), "only384")
    token = k.p521.sign(claims(iss=ONLY_384))
    assert_token_refused(guard.get("/", bearer(token)), "alg_not_allowed", token)


def test_mixed_inline_jwks_loads_and_verifies(guard, k):
    passes(guard, k.mixed384.sign(claims("mixed", iss=MIXED)), "mixed")
    # A kid naming a skipped key is unknown: skipped keys are not kept.
    token = k.mixed384.sign(claims(iss=MIXED), kid="x1")
    assert_token_refused(guard.get("/", bearer(token)), "unknown_kid", token)


def test_remote_jwks_with_p384_and_p521_keys(guard, k):
    t384 = k.r384.sign(claims("remote384", iss=REMOTE))
    t521 = k.r521.sign(claims("remote521", iss=REMOTE))
    # Every worker loads the set at start-up; wait until both tokens pass on fresh connections.
    wait_until(lambda: all(guard.get("/", bearer(t)).status == 200 for t in (t384, t521) for _ in range(6)),
               10, "remote P-384 / P-521 keys verifying on every worker")
    passes(guard, t384, "remote384")
    passes(guard, t521, "remote521")
    wrong = k.r384.sign(claims(iss=REMOTE), kid="r521")
    assert_token_refused(guard.get("/", bearer(wrong)), "key_type_mismatch", wrong)


def test_a_malformed_p384_key_in_a_mixed_inline_jwks_fails_closed(wasm_path):
    """Skipped neighbours are fine, but a key that claims P-384 with a bad `x` refuses the
    configuration, naming its path and never its value."""
    p384 = ec_key("bad", "P-384").jwk
    bad_x = b64u(b"\x07s3cretMark" + bytes(20))        # 32 bytes: not a P-384 coordinate
    config = {
        "credentials": "jwt",
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
        "jwt": {"providers": [{"issuer": MIXED, "jwks": {"keys": [
            *skipped_neighbours()[:2], {**p384, "x": bad_x}]}}]},
    }
    out = launch(config, wasm_path)
    assert_failed_closed(out, paths={"jwt.providers[0].jwks.keys[2].x"}, mention="P-384",
                         never_logged=(bad_x,))

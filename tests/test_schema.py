"""The configuration's JSON Schema (schema/apiguard-config.schema.json): generated from the Rust
configuration types and kept in sync with them, accepted by every configuration the documentation
shows and the suites run (the suites' Envoys are checked as they start, in conftest.py; the
fail-closed suites' valid controls here), and refusing what the plugin refuses for its shape:
unknown fields, wrong types, unknown enum values, missing required fields.

Value rules (ranges, digests, plan names, ...) stay the plugin's to judge at start-up; the schema
does not repeat them (docs/mesh.md).
"""
from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.harness import ROOT
from support.schema import SCHEMA_PATH, SchemaMismatch, config_errors, schema

DOCS = [ROOT / "README.md", ROOT / "docs" / "configuration.md", ROOT / "docs" / "mesh.md",
        ROOT / "docs" / "global-quotas.md"]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def schema_bin() -> Path:
    """apiguard-schema, built with the `schema` feature (`make test-e2e` builds it first)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    path = Path(os.environ.get("APIGUARD_SCHEMA_BIN") or target / "debug" / "apiguard-schema")
    if not path.is_file():
        build = subprocess.run(["cargo", "build", "--quiet", "--features", "schema", "--bin", "apiguard-schema"],
                               cwd=ROOT, capture_output=True, text=True)
        if build.returncode != 0 or not path.is_file():
            pytest.fail(f"cannot build apiguard-schema:\n{build.stderr[-3000:]}", pytrace=False)
    return path


def test_checked_in_schema_is_what_the_types_generate(schema_bin):
    out = subprocess.run([str(schema_bin)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == SCHEMA_PATH.read_text(), \
        f"{SCHEMA_PATH.relative_to(ROOT)} is stale: the configuration types changed; run `make schema`"


def test_schema_is_draft_7_and_strict():
    doc = schema()
    assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
    objects = [doc] + [d for d in doc["definitions"].values() if d.get("type") == "object"]
    assert all(d["additionalProperties"] is False for d in objects), "an object accepts unknown fields"


# --------------------------------------------------------------------------------------------
# every example and every configuration the suites use
# --------------------------------------------------------------------------------------------

def json_examples() -> list[tuple[str, object]]:
    """(where, configuration) for every ```json block of the docs that is a configuration or a
    fragment of one (`"jwt": {...}` is read as the object holding it). A block that is not JSON
    at all fails the test; problem+json bodies (denials) are the only blocks that are not
    configurations."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in re.finditer(r"```json\n(.*?)```", text, re.S):
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 2}"
            block = m.group(1)
            try:
                doc = json.loads(block)
            except ValueError:
                try:
                    doc = json.loads("{" + block + "}")
                except ValueError as e:
                    found.append((where, f"not JSON: {e}"))
                    continue
            if isinstance(doc, dict) and str(doc.get("type", "")).startswith("urn:apiguard:problem:"):
                continue
            found.append((where, doc))
    return found


EXAMPLES = json_examples()


def test_the_docs_have_configuration_examples():
    assert len(EXAMPLES) >= 5, EXAMPLES


def is_policy_document(doc) -> bool:
    """The live policy document (data_source), not a configuration."""
    return isinstance(doc, dict) and "version" in doc and set(doc) <= {"version", "api_keys", "acl"}


@pytest.mark.parametrize("where, config", [pytest.param(w, c, id=w) for w, c in EXAMPLES])
def test_docs_example_validates(where, config, keygen_bin, tmp_path):
    assert isinstance(config, dict), f"{where}: {config}"
    if is_policy_document(config):
        # checked with the plugin's own document rules
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(config))
        out = subprocess.run([str(keygen_bin), "--check", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, f"{where}: {out.stderr}"
        return
    assert config_errors(config) == []


def suites_with_launched_configurations() -> list[tuple[str, str, object]]:
    """(module, name, configuration) for the `valid/...` entries of every test module's `CONFIGS`:
    the configurations the fail-closed launcher (support.failclosed) starts as controls. Its
    `invalid/...` entries are meant to be refused and are not checked."""
    out = []
    for path in sorted(TESTS.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        configs = getattr(module, "CONFIGS", None)
        if isinstance(configs, dict):
            out += [(path.stem, name, cfg) for name, cfg in configs.items() if name.startswith("valid/")]
    return out


def test_the_suites_envoys_start_only_with_configurations_that_validate(guards, new_guard):
    """conftest.py checks every configuration before an Envoy starts with it (none starts here)."""
    with pytest.raises(SchemaMismatch, match="credentails"):
        guards.get({"credentails": "api_key"})
    with pytest.raises(SchemaMismatch, match=r"api_keys.keys\[0\]: 'sha256' is a required property"):
        new_guard({"api_keys": {"keys": [{"consumer": "alice"}]}})


def test_fail_closed_controls_validate():
    found = suites_with_launched_configurations()
    assert any(m == "test_config_fail_closed" for m, _, _ in found)
    problems = {f"{m} {n}": config_errors(c) for m, n, c in found if config_errors(c)}
    assert problems == {}


# --------------------------------------------------------------------------------------------
# what the schema refuses
# --------------------------------------------------------------------------------------------

# test_config_fail_closed's cases whose problem is the configuration's shape: the plugin refuses
# them in Envoy (that suite proves it), and so must the schema, at one of the field paths the
# plugin's own error line may name.
SHAPE_CASES = [
    "invalid-json-truncated", "invalid-json-garbage", "not-an-object", "unknown-top-level",
    "unknown-in-api-keys", "unknown-in-key-entry", "unknown-in-https", "wrong-type-bool",
    "wrong-type-array", "wrong-type-keys", "wrong-type-int", "negative-max-age", "wrong-type-consumer",
    "wrong-type-query-param", "digest-missing", "credentials-unknown",
]


def fail_closed_cases() -> dict:
    module = importlib.import_module("test_config_fail_closed")
    return {case_id: (config, paths) for case_id, config, paths, _ in module.CASES}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_schema_refuses_what_the_plugin_refuses_for_its_shape(case):
    config, paths = fail_closed_cases()[case]
    problems = config_errors(config)
    assert problems, f"{case}: the plugin refuses it, the schema accepts it"
    if paths is not None:
        named = {p.split(": ", 1)[0] for p in problems}
        assert named & set(paths), f"{case}: schema names {named}, the plugin {sorted(paths)}"


DIGEST = "ab" * 32


@pytest.mark.parametrize("config, where", [
    ({"rate_limits": {"plans": {"free": {"rate": 1, "per": "fortnight", "burst": 2}}}}, "rate_limits.plans.free.per"),
    ({"rate_limits": {"plans": {"free": {"rate": 1.5, "per": "second", "burst": 2}}}}, "rate_limits.plans.free.rate"),
    ({"rate_limits": {"plans": {"free": {"rate": 1, "per": "second"}}}}, "rate_limits.plans.free"),
    ({"rate_limits": {"plans": {}, "bucket_by": "ip"}}, "rate_limits.bucket_by"),
    ({"failed_auth_limit": {"rate": 1, "per": "minute", "burst": 1, "client_address": "x-real-ip"}},
     "failed_auth_limit.client_address"),
    ({"routes": [{"prefix": "/a", "cost": -1}]}, "routes[0].cost"),
    ({"routes": [{"credentials": "jwt"}]}, "routes[0]"),
    ({"jwt": {"providers": [{"issuer": "i", "remote_jwks": {"path": "/jwks"}}]}}, "jwt.providers[0].remote_jwks"),
    ({"jwt": {"providers": [{"issuer": "i", "jwks": 5}]}}, "jwt.providers[0].jwks"),
    ({"jwt": {"providers": [{"issuer": "i", "jwks": {"keys": []}}]}}, "jwt.providers[0].jwks"),
    ({"jwt": {"providers": [{"issuer": "i", "jwks": {"kty": "EC"}}]}}, "jwt.providers[0].jwks"),
    ({"jwt": {"providers": [{"issuer": "i", "forward_claims": {"tenant": 7}}]}}, "jwt.providers[0].forward_claims.tenant"),
    ({"jwt": {}}, "jwt"),
    ({"api_keys": {"keys": [{"sha256": DIGEST, "consumer": "a", "plan": 3}]}}, "api_keys.keys[0].plan"),
])
def test_schema_refuses_other_shapes(config, where):
    named = {p.split(": ", 1)[0] for p in config_errors(config)}
    assert where in named, named


@pytest.mark.parametrize("jwks", [
    {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]},
    {"keys": [{"kty": "oct", "k": "k"}], "other-member": True},
    '{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "x"}]}',
    None,
], ids=["object", "object-with-other-members", "json-text", "null"])
def test_inline_jwks_is_an_object_or_its_text(jwks):
    """What `jwt.providers[].jwks` takes: a JWKS object or a string holding one (null: absent)."""
    assert config_errors({"jwt": {"providers": [{"issuer": "i", "jwks": jwks}]}}) == []


# --------------------------------------------------------------------------------------------
# the CI check docs/mesh.md gives
# --------------------------------------------------------------------------------------------

def test_the_ci_snippet_in_the_docs_checks_wasmplugins(tmp_path):
    text = (ROOT / "docs" / "mesh.md").read_text()
    snippet = re.search(r"```python\n(# check_wasmplugins\.py.*?)```", text, re.S)
    assert snippet, "docs/mesh.md lost its CI snippet"
    script = tmp_path / "check_wasmplugins.py"
    script.write_text(snippet.group(1))
    examples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "envoy").glob("istio-*.yaml"))
    ok = subprocess.run([sys.executable, str(script), *examples], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "envoy" / "istio-wasmplugin.yaml").read_text().replace("    report_only: true",
                                                                                      "    reportOnly: true"))
    bad = subprocess.run([sys.executable, str(script), str(broken)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "'reportOnly' was unexpected" in bad.stdout, bad.stdout

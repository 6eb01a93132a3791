"""The plugin configuration's JSON Schema (schema/apiguard-config.schema.json, generated from the
Rust configuration types by `make schema`) as the tests use it: every configuration a test starts
Envoy with is checked against it (tests/conftest.py), and so are the documentation's examples and
the Istio examples' `pluginConfig` (test_schema.py, test_mesh.py).
"""
from __future__ import annotations

import functools
import json

import jsonschema

from support.harness import ROOT

SCHEMA_PATH = ROOT / "schema" / "apiguard-config.schema.json"


@functools.cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@functools.cache
def validator() -> jsonschema.Draft7Validator:
    doc = schema()
    jsonschema.Draft7Validator.check_schema(doc)
    return jsonschema.Draft7Validator(doc)


def _where(path) -> str:
    """A location as the plugin names field paths: `api_keys.keys[0].sha256`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level"


def config_errors(config) -> list[str]:
    """What the schema finds wrong with `config` (a dict, or JSON text), one line per problem."""
    if isinstance(config, (str, bytes)):
        try:
            config = json.loads(config)
        except ValueError as e:
            return [f"the top level: not JSON ({e})"]
    found = [f for e in validator().iter_errors(config) for f in _explain(e)]
    return [f"{_where(path)}: {message}" for path, message in sorted(found, key=lambda f: list(map(str, f[0])))]


def _explain(error: jsonschema.ValidationError) -> list[tuple[list, str]]:
    """[(path, message)] of the errors that matter. An optional field is `anyOf: [its schema,
    null]`: report what is wrong inside its schema (an unknown field, a wrong type further down),
    not "is not valid under any of the given schemas"; a choice of constants (an enum whose values
    have descriptions) is reported as the choice."""
    if not error.context:
        return [(list(error.absolute_path), error.message)]
    by_branch: dict = {}
    for e in error.context:
        if not (e.validator == "type" and e.validator_value == "null"):
            by_branch.setdefault(e.schema_path[0], []).append(e)
    branches = [errs for errs in by_branch.values()]
    if branches and all(len(errs) == 1 and errs[0].validator == "const" for errs in branches):
        allowed = [errs[0].validator_value for errs in branches]
        return [(list(error.absolute_path), f"{error.instance!r} is not one of {allowed}")]
    if len(branches) == 1:
        return [f for e in branches[0] for f in _explain(e)]
    return [(list(error.absolute_path), error.message)]


class SchemaMismatch(AssertionError):
    pass


def assert_valid_config(config, what: str = "configuration") -> None:
    """Raises with every problem when `config` does not validate against the checked-in schema."""
    problems = config_errors(config)
    if problems:
        shown = "\n  ".join(problems[:20])
        raise SchemaMismatch(
            f"{what} does not validate against {SCHEMA_PATH.relative_to(ROOT)}:\n  {shown}\n"
            "(a configuration the plugin accepts must validate: if the plugin changed, run `make schema`)")

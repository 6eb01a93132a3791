"""The end-to-end suite's fixtures: the built plugin, real keys from apiguard-keygen, one echo
upstream, and a pool of Envoy instances keyed by plugin configuration. Everything they are made of
lives in the `support` package (tests/support/).

Test modules declare function-scoped `guard` fixtures that call `guards.get(config)`: Envoys with
the same configuration are shared (support/guards.py), and all of them are stopped at the end of
the session. Tests that need an Envoy of their own for a whole module (the JWT suites: one Envoy's
log and caches, an "idp" cluster) start it with `new_guard(config, extra_clusters=...)` and stop it.

Every configuration started through `guards` or `new_guard` is first checked against the
configuration's JSON Schema (schema/apiguard-config.schema.json): what the suites run in Envoy is
what editors and CI accept. Deliberately invalid configurations go through support.failclosed's
own launcher instead, and are not checked.
"""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest

from support.guards import GuardPool, start_guard
from support.harness import DEFAULT_WASM, ROOT, EchoUpstream, self_signed_cert
from support.keys import Keys, run_keygen
from support.schema import assert_valid_config


# --------------------------------------------------------------------------------------------
# the plugin and the key generator
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def wasm_path() -> Path:
    path = Path(os.environ.get("APIGUARD_WASM") or DEFAULT_WASM)
    if not path.is_file():
        pytest.fail(f"apiguard.wasm not found at {path}: run `make build` first", pytrace=False)
    return path


@pytest.fixture(scope="session")
def keygen_bin() -> Path:
    path = Path(os.environ.get("APIGUARD_KEYGEN") or ROOT / "target" / "release" / "apiguard-keygen")
    if not path.is_file():
        build = subprocess.run(["cargo", "build", "--release", "--bin", "apiguard-keygen"], cwd=ROOT,
                               capture_output=True, text=True)
        if build.returncode != 0 or not path.is_file():
            pytest.fail(f"cannot build apiguard-keygen:\n{build.stderr[-3000:]}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def keygen(keygen_bin):
    """keygen(consumer, expires_at=None) -> Key, straight from the real generator."""
    return lambda consumer, expires_at=None: run_keygen(keygen_bin, consumer, expires_at)


@pytest.fixture(scope="session")
def keys(keygen) -> Keys:
    return Keys(
        alice=keygen("alice"),
        bob=keygen("bob"),
        carol=keygen("carol"),
        dave=keygen("dave", "2099-01-01T00:00:00Z"),
        stranger=keygen("stranger"),
    )


# --------------------------------------------------------------------------------------------
# Envoy instances
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


class SchemaCheckedPool(GuardPool):
    """The pool, refusing a configuration that does not validate against the schema."""

    def get(self, config, **kw):
        assert_valid_config(config, "the test's plugin configuration")
        return super().get(config, **kw)


@pytest.fixture(scope="session")
def guards(wasm_path, upstream, tls_files, request):
    pool = SchemaCheckedPool(wasm_path, upstream, tls_files)
    request.addfinalizer(pool.close)
    return pool


@pytest.fixture(scope="session")
def new_guard(wasm_path, upstream):
    """new_guard(config, **start_guard_kw) -> Guard: an Envoy of its own, outside the pool, for
    tests that need one for a whole module (its log, its caches) or extra clusters; the caller
    stops it."""
    start = functools.partial(start_guard, wasm_path, upstream)

    def checked(config, **kw):
        assert_valid_config(config, "the test's plugin configuration")
        return start(config, **kw)

    return checked

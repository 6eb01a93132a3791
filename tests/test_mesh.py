"""Rolled out through the mesh, end to end with real parts (docs/mesh.md):

- the OCI image `make image` builds (tools/wasm_image.py): Istio's "compat" variant, reproducible;
- pushed with skopeo to a real registry (Debian's docker-registry) on 127.0.0.1, pulled back by
  digest, `plugin.wasm` extracted as Istio's agent does, and the extracted plugin run in Envoy;
- Envoy loading the plugin by URL (envoy/envoy-remote.yaml): the right digest runs it, a wrong one
  is refused and nothing reaches the upstream (and what `fail_open` would have done instead);
- the Istio examples (envoy/istio-*.yaml) validated against Istio's WasmPlugin CRD
  (../shared/istio/wasmplugin-crd.yaml) and their `pluginConfig` against apiguard's schema, their
  outbound clusters named after their ServiceEntries, and each WasmPlugin's `pluginConfig` run in
  Envoy as Istio hands it over, with the JWKS fetched through the cluster named the Istio way.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
import time
from pathlib import Path
from string import Template

import pytest
import yaml

from support.guards import start_guard
from support.harness import ROOT, EchoUpstream, Envoy, StaticServer, free_port, request
from support.jwt import bearer, ec_key, jwks
from support.keys import api_key_config
from support.mesh import (CRD_PATH, ISTIO_EXAMPLES, OCI_LAYER, Layout, Registry, build_image,
                          extract_plugin_wasm, istio_cluster_name, load_yaml_documents, skopeo,
                          wasm_from_image, wasmplugin_crd, wasmplugin_errors)
from support.problems import assert_problem
from support.schema import assert_valid_config

REPO = "security/apiguard"
REMOTE_EXAMPLE = ROOT / "envoy" / "envoy-remote.yaml"


# --------------------------------------------------------------------------------------------
# the OCI image
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(wasm_path, tmp_path_factory):
    """The image built twice from the same .wasm, into two layouts."""
    first, second = tmp_path_factory.mktemp("image-a") / "layout", tmp_path_factory.mktemp("image-b") / "layout"
    return {"summary": build_image(wasm_path, first, sys.executable), "layout": Layout(first),
            "again": build_image(wasm_path, second, sys.executable), "layout_again": Layout(second)}


def test_image_is_reproducible(image):
    assert image["summary"]["manifest_digest"] == image["again"]["manifest_digest"]

    def tree(root: Path) -> dict[str, bytes]:
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}

    first, second = tree(image["layout"].path), tree(image["layout_again"].path)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == [], "the two layouts differ"
    assert len(first) == 5  # oci-layout, index.json, and the manifest, config and layer blobs


def test_image_is_the_compat_variant_istio_reads(image, wasm_path):
    layout, summary = image["layout"], image["summary"]
    wasm = wasm_path.read_bytes()
    assert layout.json("oci-layout") == {"imageLayoutVersion": "1.0.0"}
    manifest_bytes, entry = layout.manifest_bytes(summary["tag"])
    assert entry["digest"] == summary["manifest_digest"] == f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}"
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(layout.blob(manifest["config"]["digest"]))
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")

    # One tar+gzip layer with one file, plugin.wasm, whose metadata does not depend on the build.
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER]
    layer = layout.blob(manifest["layers"][0]["digest"])
    assert layer[:2] == b"\x1f\x8b" and layer[4:8] == b"\0\0\0\0", "gzip header carries a time"
    assert not layer[3] & 0x08, "gzip header carries a file name"
    tar_bytes = gzip.decompress(layer)
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
    assert [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime) for m in members] == \
        [("plugin.wasm", tarfile.REGTYPE, 0o644, 0, 0, 0)]
    assert extract_plugin_wasm(layer) == wasm

    # Istio's agent, reading this image, loads exactly the built plugin.
    assert wasm_from_image(manifest_bytes, summary["manifest_digest"].removeprefix("sha256:"), layout.blob) == wasm
    assert summary["wasm_sha256"] == hashlib.sha256(wasm).hexdigest()


# --------------------------------------------------------------------------------------------
# a real registry: push, pull by digest, extract, run
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry():
    try:
        reg = Registry()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    reg.start()
    yield reg
    reg.stop()


def test_push_pull_by_digest_and_run_in_envoy(image, registry, wasm_path, tmp_path, upstream, keys):
    summary = image["summary"]
    digest, tag = summary["manifest_digest"], summary["tag"]
    manifest_bytes, _ = image["layout"].manifest_bytes(tag)

    skopeo("copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
           f"oci:{image['layout'].path}:{tag}", f"docker://{registry.host}/{REPO}:{tag}", workdir=tmp_path)
    # The tag now names our manifest, byte for byte: the digest a WasmPlugin pins is the one built.
    assert registry.manifest(REPO, tag) == manifest_bytes

    # Pulled back by digest with skopeo, into a layout of its own.
    skopeo("copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
           f"docker://{registry.host}/{REPO}@{digest}", f"oci:{tmp_path / 'pulled'}:pulled", workdir=tmp_path)
    pulled = Layout(tmp_path / "pulled")
    pulled_manifest, entry = pulled.manifest_bytes("pulled")
    assert entry["digest"] == digest and pulled_manifest == manifest_bytes
    sha_hex = digest.removeprefix("sha256:")
    extracted = wasm_from_image(pulled_manifest, sha_hex, pulled.blob)
    assert extracted == wasm_path.read_bytes()

    # The same straight from the registry's API, as Istio's agent fetches an oci:// WasmPlugin: the
    # manifest's digest is checked against the WasmPlugin's sha256, then the last layer is read.
    from_registry = wasm_from_image(registry.manifest(REPO, digest), sha_hex, lambda d: registry.blob(REPO, d))
    assert from_registry == extracted
    with pytest.raises(ValueError, match="does not match"):
        wasm_from_image(registry.manifest(REPO, tag), "0" * 64, lambda d: registry.blob(REPO, d))

    # The extracted plugin, run in Envoy.
    plugin = tmp_path / "plugin.wasm"
    plugin.write_bytes(extracted)
    config = api_key_config(keys)
    assert_valid_config(config)
    guard = start_guard(plugin, upstream, config)
    try:
        ok = guard.get("/orders", {"x-api-key": keys.alice.key})
        assert ok.upstream_saw["headers"]["x-apiguard-consumer"] == ["alice"]
        assert_problem(guard.get("/orders"), 401, "missing_credential")
    finally:
        guard.stop()


# --------------------------------------------------------------------------------------------
# Envoy loading the plugin by URL and digest (envoy/envoy-remote.yaml)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wasm_server(wasm_path):
    server = StaticServer(wasm_path.read_bytes()).start()
    yield server
    server.stop()


def remote_envoy(sha256: str, plugin_config: dict, wasm_server, upstream, tls_files, *,
                 fail_open: bool | None = None) -> Envoy:
    """Envoy started from envoy/envoy-remote.yaml with its placeholders filled in."""
    assert_valid_config(plugin_config)
    cert, key = tls_files
    text = Template(REMOTE_EXAMPLE.read_text()).substitute(
        ADMIN_PORT=free_port(), LISTEN_PORT=free_port(), UPSTREAM_PORT=upstream.port,
        WASM_SERVER_PORT=wasm_server.port, WASM_SHA256=sha256, CERT=cert, KEY=key,
        PLUGIN_CONFIG=json.dumps(plugin_config).replace("'", "''"))
    config = yaml.safe_load(text)
    if fail_open is not None:
        wasm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        wasm["http_filters"][0]["typed_config"]["config"]["fail_open"] = fail_open
    envoy = Envoy(config)
    try:
        envoy.start()
    except BaseException:
        envoy.stop()
        raise
    return envoy


def remote_config(keys) -> dict:
    return {"credentials": "api_key", "api_keys": {"keys": keys.entries()}, "exempt_paths": ["/healthz"]}


def test_envoy_loads_the_plugin_by_url_with_the_right_digest(wasm_server, wasm_path, upstream, tls_files, keys):
    hits = wasm_server.hits
    envoy = remote_envoy(hashlib.sha256(wasm_path.read_bytes()).hexdigest(), remote_config(keys),
                         wasm_server, upstream, tls_files)
    try:
        status, _, body = request(envoy.port, "GET", "/orders", {"x-api-key": keys.alice.key}, https=True)
        assert status == 200, body
        assert json.loads(body)["headers"]["x-apiguard-consumer"] == ["alice"]
        status, headers, body = request(envoy.port, "GET", "/orders", https=True)
        assert status == 401 and json.loads(body)["code"] == "missing_credential", body
        assert envoy.stat("wasm.remote_load_fetch_successes") == 1
        assert wasm_server.hits == hits + 1
    finally:
        envoy.stop()


@pytest.fixture(scope="module")
def wrong_digest(wasm_path) -> str:
    """The digest of another file: what a tampered, truncated or swapped download would have."""
    return hashlib.sha256(wasm_path.read_bytes() + b"\0").hexdigest()


def test_envoy_refuses_the_plugin_with_a_wrong_digest_fail_closed(wasm_server, wrong_digest, tls_files, keys):
    """Observed with Envoy 1.40: the static listener still comes up (remote code is fetched during
    initialisation and a fetch that fails does not stop the server), the plugin does not load
    ("Plugin configured to fail closed failed to load") and every request, even on an exempt path
    or with a valid key, is answered 503 by Envoy; the upstream never sees one."""
    own_upstream = EchoUpstream().start()
    envoy = remote_envoy(wrong_digest, remote_config(keys), wasm_server, own_upstream, tls_files)
    try:
        statuses = [request(envoy.port, "GET", path, headers, https=True)[0]
                    for path, headers in [("/orders", {"x-api-key": keys.alice.key}), ("/healthz", {}),
                                          ("/orders", {})]]
        assert statuses == [503, 503, 503]
        assert own_upstream.requests == [], "a request reached the upstream unchecked"
        log = envoy.log()
        assert "Plugin apiguard failed to load" in log, log[-3000:]
        assert "Plugin configured to fail closed failed to load" in log
        assert envoy.stat("wasm.remote_load_fetch_failures") >= 1
        assert envoy.stat("wasm.remote_load_fetch_successes") == 0
    finally:
        envoy.stop()
        own_upstream.stop()


def test_fail_open_would_serve_unchecked_traffic(wasm_server, wrong_digest, tls_files, keys):
    """Why every example sets fail_open: false / FAIL_CLOSE: with fail_open the same refused
    download leaves the route without apiguard, and a request without any credential gets through."""
    own_upstream = EchoUpstream().start()
    envoy = remote_envoy(wrong_digest, remote_config(keys), wasm_server, own_upstream, tls_files, fail_open=True)
    try:
        status, _, _ = request(envoy.port, "GET", "/orders", https=True)
        assert status == 200 and len(own_upstream.requests) == 1
    finally:
        envoy.stop()
        own_upstream.stop()


# --------------------------------------------------------------------------------------------
# Istio YAML
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crd():
    try:
        return wasmplugin_crd()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


def documents(kind: str) -> list[tuple[str, dict]]:
    return [(p.name, d) for p in ISTIO_EXAMPLES for d in load_yaml_documents(p) if d.get("kind") == kind]


WASMPLUGINS = documents("WasmPlugin")


def test_there_are_istio_examples():
    names = {name for name, _ in WASMPLUGINS}
    assert {"istio-wasmplugin.yaml", "istio-wasmplugin-gateway.yaml"} <= names, names
    assert documents("ServiceEntry"), "no ServiceEntry example"


@pytest.mark.parametrize("name, doc", [pytest.param(n, d, id=n) for n, d in WASMPLUGINS])
def test_wasmplugin_example_validates(crd, name, doc):
    assert wasmplugin_errors(doc) == []
    spec = doc["spec"]
    # The rollout settings docs/mesh.md relies on.
    assert spec["phase"] == "AUTHN"
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["url"].startswith("oci://") and re.fullmatch(r"[0-9a-f]{64}", spec["sha256"])
    assert ("selector" in spec) != ("targetRefs" in spec), "one service (selector) or one gateway (targetRefs)"
    if "selector" in spec:
        assert spec.get("match") == [{"mode": "SERVER"}], "a sidecar plugin belongs on the inbound side"


@pytest.mark.parametrize("mistake, change, expected", [
    ("misspelt field", lambda s: s.update(failstrategy="FAIL_OPEN"), "'failstrategy' was unexpected"),
    ("unquoted zero digest", lambda s: s.update(sha256=0), "spec.sha256: 0 is not of type 'string'"),
    ("digest in upper case", lambda s: s.update(sha256="AB" * 32), "does not match"),
    ("digest with its prefix", lambda s: s.update(sha256="sha256:" + "ab" * 32), "does not match"),
    ("unknown phase", lambda s: s.update(phase="AUTHENTICATION"), "spec.phase"),
    ("unknown fail strategy", lambda s: s.update(failStrategy="FAIL_CLOSED"), "spec.failStrategy"),
    ("selector and targetRefs", lambda s: s.update(targetRefs=[{"kind": "Service", "name": "x"}]),
     "only one of targetRefs or selector"),
    ("url scheme", lambda s: s.update(url="ftp://registry.example.com/apiguard.wasm"), "url must have schema"),
    ("plugin config typo", lambda s: s["pluginConfig"]["api_keys"].update(hedaer="x"),
     "spec.pluginConfig.api_keys: Additional properties are not allowed ('hedaer' was unexpected)"),
    ("plugin config type", lambda s: s["pluginConfig"].update(report_only="yes"),
     "spec.pluginConfig.report_only: 'yes' is not of type 'boolean'"),
    ("plugin config enum", lambda s: s["pluginConfig"].update(credentials="apikey"),
     "spec.pluginConfig.credentials: 'apikey' is not one of"),
])
def test_mistakes_in_istio_yaml_are_caught(crd, mistake, change, expected):
    doc = copy.deepcopy(dict(WASMPLUGINS)["istio-wasmplugin.yaml"])
    change(doc["spec"])
    problems = wasmplugin_errors(doc)
    assert any(expected in p for p in problems), f"{mistake}: {problems}"


def test_outbound_clusters_are_service_entries():
    """Every cluster a pluginConfig names is one Istio makes from a ServiceEntry of the examples
    (`outbound|<port>||<host>`), and the plugin's plain-HTTP calls get TLS from a DestinationRule."""
    made = {istio_cluster_name(host, port["number"]): host
            for _, se in documents("ServiceEntry") for host in se["spec"]["hosts"] for port in se["spec"]["ports"]}
    tls_hosts = {dr["spec"]["host"] for _, dr in documents("DestinationRule")
                 if dr["spec"].get("trafficPolicy", {}).get("tls", {}).get("mode") == "SIMPLE"}
    named = [(name, p["remote_jwks"]) for name, doc in WASMPLUGINS
             for p in (doc["spec"]["pluginConfig"].get("jwt") or {}).get("providers", []) if "remote_jwks" in p]
    assert named, "no example fetches a remote JWKS"
    for name, remote in named:
        assert remote["cluster"] in made, f"{name}: no ServiceEntry makes cluster {remote['cluster']}"
        host = made[remote["cluster"]]
        assert remote.get("authority") == host, f"{name}: authority should be {host}"
        assert host in tls_hosts, f"{name}: no DestinationRule originates TLS to {host}"
    assert istio_cluster_name("idp.example.com", 443) == "outbound|443||idp.example.com"


@pytest.fixture(scope="module")
def idp():
    """The identity provider the examples name (https://idp.example.com/), as a JWKS server."""
    key = ec_key("idp-1")
    server = StaticServer(json.dumps(jwks(key)).encode()).start()
    yield key, server
    server.stop()


def idp_token(key, audience: str) -> str:
    now = int(time.time())
    return key.sign({"iss": "https://idp.example.com/", "aud": audience, "sub": "user-7",
                     "iat": now, "exp": now + 300})


@pytest.mark.parametrize("name, doc", [pytest.param(n, d, id=n) for n, d in WASMPLUGINS])
def test_wasmplugin_config_runs_in_envoy(name, doc, idp, new_guard, tls_files):
    """Each example's pluginConfig, handed to the plugin as Istio does (the JSON text of the
    object), in real Envoy; its remote JWKS is fetched through a cluster named the Istio way."""
    key, server = idp
    plugin_config = doc["spec"]["pluginConfig"]
    clusters = {p["remote_jwks"]["cluster"]: server.port
                for p in plugin_config["jwt"]["providers"] if "remote_jwks" in p}
    gateway = "targetRefs" in doc["spec"]
    guard = new_guard(json.dumps(plugin_config), extra_clusters=clusters, tls_files=tls_files if gateway else None)
    try:
        token = bearer(idp_token(key, plugin_config["jwt"]["providers"][0]["audiences"][0]))
        if gateway:
            # Enforcing, HTTPS from the gateway's own TLS connection.
            assert_problem(guard.get("/orders"), 401, "missing_credential")
            seen = guard.get("/me", token).upstream_saw
            assert seen["headers"]["x-apiguard-subject"] == ["user-7"]
        else:
            # Report-only behind the ingress gateway: nothing refused, what would be is announced.
            xfp = {"x-forwarded-proto": "https"}
            seen = guard.get("/orders", xfp).upstream_saw
            assert seen["headers"]["x-apiguard-would-deny"] == ["missing_credential"]
            seen = guard.get("/me", {**xfp, **token}).upstream_saw
            assert seen["headers"]["x-apiguard-subject"] == ["user-7"]
            assert "x-apiguard-would-deny" not in seen["headers"]
        assert server.hits >= 1
    finally:
        guard.stop()


def yaml_blocks(path: Path) -> list[tuple[str, object]]:
    text = path.read_text()
    return [(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 2}", doc)
            for m in re.finditer(r"```yaml\n(.*?)```", text, re.S)
            for doc in yaml.safe_load_all(m.group(1)) if doc is not None]


DOC_BLOCKS = yaml_blocks(ROOT / "docs" / "mesh.md")


def test_docs_mesh_yaml_examples_are_right(crd):
    """docs/mesh.md's YAML: the WasmPlugin validates like the example files, the remote_jwks
    fragment validates in a provider, and its cluster is the one the ServiceEntry makes."""
    kinds = [doc.get("kind") for _, doc in DOC_BLOCKS if isinstance(doc, dict)]
    assert {"WasmPlugin", "ServiceEntry", "DestinationRule"} <= set(kinds), kinds
    for where, doc in DOC_BLOCKS:
        if doc.get("kind") == "WasmPlugin":
            assert wasmplugin_errors(doc) == [], where
        if "remote_jwks" in doc:
            provider = {"issuer": "https://idp.example.com/", **doc}
            assert_valid_config({"jwt": {"providers": [provider]}})
            se = next(d for _, d in DOC_BLOCKS if d.get("kind") == "ServiceEntry")
            port = se["spec"]["ports"][0]["number"]
            assert doc["remote_jwks"]["cluster"] == istio_cluster_name(se["spec"]["hosts"][0], port)


def test_crd_is_the_shared_copy(crd):
    assert crd["spec"]["names"]["kind"] == "WasmPlugin", CRD_PATH

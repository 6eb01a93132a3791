"""Rolling apiguard out through a mesh, with real parts: the OCI image (tools/wasm_image.py), a
real registry (Debian's `docker-registry`, the CNCF distribution server) on 127.0.0.1, skopeo,
the image fetch Istio's agent does, and Istio's WasmPlugin CRD schema for the YAML examples.

The registry and skopeo come from Debian's packages (`make setup-mesh` installs them); the CRD is
the shared test data `../shared/istio/wasmplugin-crd.yaml` beside the repository.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
from pathlib import Path

import jsonschema
import yaml

from support.harness import ROOT, GaveUp, free_port, stop_process, wait_until
from support.schema import config_errors

IMAGE_TOOL = ROOT / "tools" / "wasm_image.py"
CRD_PATH = ROOT.parent / "shared" / "istio" / "wasmplugin-crd.yaml"
ISTIO_EXAMPLES = sorted((ROOT / "envoy").glob("istio-*.yaml"))

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
WASM_MAGIC = b"\0asm"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# the image
# --------------------------------------------------------------------------------------------

def build_image(wasm: Path, out: Path, python: str, tag: str | None = None) -> dict:
    """Runs the image tool as `make image` does; returns its summary (digests, tag, layout)."""
    args = [python, str(IMAGE_TOOL), "--wasm", str(wasm), "--out", str(out), "--json"]
    if tag:
        args += ["--tag", tag]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"wasm_image.py failed ({run.returncode}):\n{run.stderr}"
    return json.loads(run.stdout)


class Layout:
    """An OCI image layout directory, read as a registry client would read the same image."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text())

    def blob(self, digest: str) -> bytes:
        algo, _, hexpart = digest.partition(":")
        assert algo == "sha256", digest
        data = (self.path / "blobs" / "sha256" / hexpart).read_bytes()
        assert sha256(data) == hexpart, f"blob {digest} does not match its digest"
        return data

    def manifest_bytes(self, ref_name: str) -> tuple[bytes, dict]:
        """The manifest's exact bytes and its index entry, for the image tagged `ref_name`."""
        for entry in self.json("index.json")["manifests"]:
            if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name:
                return self.blob(entry["digest"]), entry
        raise KeyError(f"no image {ref_name!r} in {self.path}/index.json")


def extract_plugin_wasm(layer: bytes) -> bytes:
    """What Istio's fetcher does with a compat image's last layer: gunzip, untar, and return the
    first entry whose base name is `plugin.wasm`."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                f = tar.extractfile(member)
                assert f is not None, "plugin.wasm is not a regular file"
                return f.read()
    raise LookupError("plugin.wasm not found in the archive")


def wasm_from_image(manifest: bytes, expected_sha256: str | None, read_blob) -> bytes:
    """Istio's agent on an `oci://` WasmPlugin (pkg/wasm: cache.go and imagefetcher.go): the
    manifest digest must equal the WasmPlugin's `sha256` when one is given; the image's last layer
    must be a tar+gzip layer; the module is its `plugin.wasm`, which must start with the Wasm magic.
    `read_blob(digest)` returns a blob's bytes. Raises ValueError where Istio refuses."""
    digest = sha256(manifest)
    if expected_sha256 and digest != expected_sha256:
        raise ValueError(f"module has checksum {digest}, which does not match: {expected_sha256}")
    doc = json.loads(manifest)
    layers = doc.get("layers") or []
    if not layers:
        raise ValueError("number of layers must be greater than zero")
    last = layers[-1]
    expected_type = DOCKER_LAYER if doc.get("mediaType") == DOCKER_MANIFEST else OCI_LAYER
    if last["mediaType"] != expected_type:
        raise ValueError(f"invalid media type {last['mediaType']} (expect {expected_type})")
    wasm = extract_plugin_wasm(read_blob(last["digest"]))
    if len(wasm) < 8 or wasm[:4] != WASM_MAGIC:
        raise ValueError("fetched Wasm binary is invalid")
    return wasm


# --------------------------------------------------------------------------------------------
# a real registry and skopeo
# --------------------------------------------------------------------------------------------

def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise FileNotFoundError(f"`{name}` is not installed: `make setup-mesh` installs it from Debian's packages")
    return path


class Registry:
    """Debian's docker-registry (distribution 2.8) on 127.0.0.1, plain HTTP, storage in a temp dir."""

    def __init__(self):
        self.binary = require_tool("docker-registry")
        self.dir = Path(tempfile.mkdtemp(prefix="apiguard-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.config = self.dir / "config.yml"
        self.config.write_text(yaml.safe_dump({
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "apiguard-test-only"},
        }))

    def start(self) -> "Registry":
        self._log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen([self.binary, "serve", str(self.config)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_until(self._ready, 15, f"docker-registry (log: {self.dir / 'registry.log'})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise GaveUp(f"docker-registry exited with {self.proc.returncode}: {self.log()[-2000:]}")
        status, _, _ = self.get("/v2/")
        return status == 200

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path, headers={"Accept": accept} if accept else {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def manifest(self, repo: str, reference: str) -> bytes:
        """GET /v2/<repo>/manifests/<tag or digest>, accepting what Istio's fetcher accepts."""
        status, _, body = self.get(f"/v2/{repo}/manifests/{urllib.parse.quote(reference)}",
                                   accept=f"{OCI_MANIFEST}, {DOCKER_MANIFEST}")
        assert status == 200, f"manifest {repo}:{reference}: HTTP {status} {body[:300]!r}"
        return body

    def blob(self, repo: str, digest: str) -> bytes:
        status, _, body = self.get(f"/v2/{repo}/blobs/{digest}")
        assert status == 200, f"blob {digest}: HTTP {status}"
        assert f"sha256:{sha256(body)}" == digest, f"blob {digest} does not match its digest"
        return body

    def log(self) -> str:
        try:
            return (self.dir / "registry.log").read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def skopeo(*args: str, workdir: Path) -> subprocess.CompletedProcess:
    """skopeo with a policy of its own (accept anything: a test registry, no signatures) so it does
    not depend on the machine's /etc/containers; TLS verification is turned off per command by the
    caller for the plain-HTTP registry on 127.0.0.1."""
    binary = require_tool("skopeo")
    policy = workdir / "policy.json"
    if not policy.exists():
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    env = {**os.environ, "TMPDIR": str(workdir)}
    run = subprocess.run([binary, "--policy", str(policy), *args], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, f"skopeo {' '.join(args)} failed ({run.returncode}):\n{run.stderr}"
    return run


# --------------------------------------------------------------------------------------------
# Istio YAML
# --------------------------------------------------------------------------------------------

def load_yaml_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _strict(node):
    """kubectl's strict field validation: an object schema with `properties` and without
    `x-kubernetes-preserve-unknown-fields` refuses fields it does not name (a typo such as
    `failstrategy` must not pass silently)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def wasmplugin_crd() -> dict:
    if not CRD_PATH.is_file():
        raise FileNotFoundError(
            f"Istio's WasmPlugin CRD is missing: expected {CRD_PATH} (the shared directory `../shared` "
            "beside the repository, file istio/wasmplugin-crd.yaml)")
    return yaml.safe_load(CRD_PATH.read_text())


def wasmplugin_validator() -> tuple[str, jsonschema.Draft7Validator]:
    """(apiVersion, validator of the whole object) from the CRD's served, stored version."""
    crd = wasmplugin_crd()
    group = crd["spec"]["group"]
    version = next(v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage"))
    root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # Every Kubernetes object also has these; the CRD leaves them implicit.
    root.setdefault("properties", {}).update({
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1},
                                                          "namespace": {"type": "string"}}},
    })
    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return f"{group}/{version['name']}", jsonschema.Draft7Validator(_strict(root))


def _cel_rules(spec: dict) -> list[str]:
    """The CRD's x-kubernetes-validations (CEL), written out for the fields the examples use."""
    problems = []
    if sum(k in spec for k in ("selector", "targetRef", "targetRefs")) > 1:
        problems.append("spec: only one of targetRefs or selector can be set")
    url = spec.get("url", "")
    scheme = urllib.parse.urlparse(url if "://" in url else f"http://{url}").scheme
    if scheme not in ("", "http", "https", "oci", "file"):
        problems.append("spec.url: url must have schema one of [http, https, file, oci]")
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    for key, value in labels.items():
        if not key or "*" in key or "*" in str(value):
            problems.append(f"spec.selector.matchLabels: wildcard or empty key not allowed ({key!r})")
    refs = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if "targetRef" in spec else [])
    for ref in refs:
        if ref.get("namespace"):
            problems.append("spec.targetRefs: cross namespace referencing is not currently supported")
    return problems


def wasmplugin_errors(doc: dict) -> list[str]:
    """Everything wrong with one WasmPlugin object: the CRD's schema (strict), its CEL rules, and
    its `pluginConfig` against apiguard's own configuration schema."""
    api_version, validator = wasmplugin_validator()
    problems = []
    if doc.get("apiVersion") != api_version:
        problems.append(f"apiVersion: {doc.get('apiVersion')!r}, expected {api_version!r}")
    if doc.get("kind") != "WasmPlugin":
        problems.append(f"kind: {doc.get('kind')!r}, expected 'WasmPlugin'")
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(f"{'.'.join(map(str, e.absolute_path)) or 'the top level'}: {e.message}")
    spec = doc.get("spec") or {}
    problems += _cel_rules(spec)
    if "pluginConfig" in spec:
        problems += [f"spec.pluginConfig.{p}" for p in config_errors(spec["pluginConfig"])]
    return problems


def istio_cluster_name(host: str, port: int, subset: str = "", direction: str = "outbound") -> str:
    """The Envoy cluster Istio makes for a service port: `outbound|443||idp.example.com`."""
    return f"{direction}|{port}|{subset}|{host}"

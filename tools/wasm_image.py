"""Packages apiguard.wasm as an OCI image that Istio's Wasm image fetcher accepts, as an OCI image
layout directory (`make image` writes target/image/).

The image is the Wasm image specification's "compat" variant: one `tar+gzip` layer
(application/vnd.oci.image.layer.v1.tar+gzip) holding one file, `plugin.wasm`; the manifest is
annotated `module.wasm.image/variant=compat`. Istio takes the image's last layer, gunzips and
untars it and loads the file named `plugin.wasm`; a WasmPlugin's `sha256` for an `oci://` URL is
the digest of this image's manifest.

Reproducible: the tar entry has a fixed name, mode, owner and time (0), the gzip stream has no
name and no time, every JSON document is written with sorted keys and no spaces, and nothing
depends on the clock or the machine. The same .wasm (and tag) gives the same manifest digest.

Push the layout with skopeo, for example
  skopeo copy --preserve-digests oci:target/image:0.1.0 docker://registry.example.com/security/apiguard:0.1.0
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_FILE = "plugin.wasm"
VARIANT_ANNOTATION = "module.wasm.image/variant"


def canonical_json(doc) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes) -> bytes:
    """An uncompressed tar with one regular file, `plugin.wasm`, whose metadata is fixed."""
    info = tarfile.TarInfo(WASM_FILE)
    info.size = len(wasm)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(wasm))
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip without a file name and with time 0 in the header, so equal input gives equal output."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def descriptor(media_type: str, blob: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{sha256(blob)}", "size": len(blob), **extra}


def build(wasm: bytes, tag: str, version: str) -> dict:
    """The image's blobs and descriptors: {"blobs": {hex: bytes}, "manifest": bytes, ...}."""
    tar = layer_tar(wasm)
    layer = gzip_bytes(tar)
    config = canonical_json({
        # GOARCH/GOOS names of what the one file is: a WebAssembly module for WASI preview 1.
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, config),
        "layers": [descriptor(LAYER_TYPE, layer)],
        "annotations": {
            VARIANT_ANNOTATION: "compat",
            "org.opencontainers.image.title": "apiguard",
            "org.opencontainers.image.description":
                "apiguard proxy-wasm HTTP filter (root id apiguard) for Envoy and Istio",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    })
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [descriptor(MANIFEST_TYPE, manifest,
                                 annotations={"org.opencontainers.image.ref.name": tag})],
    })
    return {
        "blobs": {sha256(b): b for b in (layer, config, manifest)},
        "index": index,
        "manifest_digest": f"sha256:{sha256(manifest)}",
        "layer_digest": f"sha256:{sha256(layer)}",
        "wasm_sha256": sha256(wasm),
    }


def write_layout(image: dict, out: Path) -> None:
    """Writes the OCI image layout into `out`, replacing an earlier layout there (never anything else)."""
    if out.exists():
        if not (out / "oci-layout").is_file() and any(out.iterdir()):
            raise SystemExit(f"{out} exists and is not an OCI image layout; not overwriting it")
        shutil.rmtree(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for digest, blob in sorted(image["blobs"].items()):
        (blobs / digest).write_bytes(blob)
    (out / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(image["index"])


def cargo_version() -> str:
    """The crate's version: `version` in Cargo.toml's [package] table."""
    package = re.search(r"^\[package\]\n(.*?)(?=^\[)", (ROOT / "Cargo.toml").read_text(), re.S | re.M)
    found = package and re.search(r'^version\s*=\s*"([^"]+)"', package.group(1), re.M)
    if not found:
        raise SystemExit("no version in Cargo.toml's [package] table")
    return found.group(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasm", type=Path, default=ROOT / "target" / "wasm32-wasip1" / "release" / "apiguard.wasm")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "image")
    ap.add_argument("--tag", help="the image's tag in the layout (default: the crate version)")
    ap.add_argument("--json", action="store_true", help="print the digests as one JSON object")
    args = ap.parse_args(argv)

    wasm = args.wasm.read_bytes()
    if wasm[:4] != b"\0asm":
        raise SystemExit(f"{args.wasm} is not a WebAssembly module")
    version = cargo_version()
    tag = args.tag or version
    image = build(wasm, tag, version)
    write_layout(image, args.out)

    summary = {"layout": str(args.out), "tag": tag, "manifest_digest": image["manifest_digest"],
               "layer_digest": image["layer_digest"], "wasm_sha256": image["wasm_sha256"]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"OCI image layout {args.out} (tag {tag}, variant compat)")
        print(f"  manifest  {image['manifest_digest']}   <- WasmPlugin sha256 (hex part) for oci:// URLs")
        print(f"  plugin.wasm sha256:{image['wasm_sha256']}   <- vm_config.code.remote.sha256 / http URLs")
        print(f"push: skopeo copy --preserve-digests oci:{args.out}:{tag} docker://REGISTRY/apiguard:{tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lists a .wasm module's exports, or removes some of them (`make build` removes the proxy-wasm
callbacks apiguard never acts on: the response's body and trailers).

Why: Envoy enters the VM for a proxy-wasm callback only when the module exports it; for a
missing one it does what the callback's default would (the stream goes on). The Rust SDK exports
every callback, so without this each response body chunk and the response trailers would
enter the VM for nothing. Only the export entries go: the code stays, unreachable.

  python3 tools/wasm_exports.py list MODULE.wasm
  python3 tools/wasm_exports.py drop MODULE.wasm NAME...   (rewrites MODULE.wasm in place)
  python3 tools/wasm_exports.py trim MODULE.wasm           (drops UNUSED_CALLBACKS)

`drop` passes over a name the module does not export (it may have been dropped already: `make
build` runs it after every cargo build, fresh or not); the end-to-end tests check the exact list.
"""
from __future__ import annotations

import os
import sys
import tempfile

MAGIC = b"\0asm\x01\0\0\0"
# The callbacks apiguard never acts on (it never pauses a response): the stream goes on without
# entering the VM.
UNUSED_CALLBACKS = ("proxy_on_response_body", "proxy_on_response_trailers")
EXPORT_SECTION = 7


class WasmError(ValueError):
    pass


def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WasmError("truncated LEB128 number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise WasmError("LEB128 number too long for a u32")


def write_uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(data: bytes) -> list[tuple[int, bytes]]:
    """The module's sections as (id, payload), in order."""
    if not data.startswith(MAGIC):
        raise WasmError("not a WebAssembly 1.0 binary module")
    out = []
    pos = len(MAGIC)
    while pos < len(data):
        section_id = data[pos]
        size, pos = read_uleb(data, pos + 1)
        if pos + size > len(data):
            raise WasmError(f"section {section_id} runs past the end of the file")
        out.append((section_id, data[pos:pos + size]))
        pos += size
    return out


def parse_exports(payload: bytes) -> list[tuple[str, bytes]]:
    """Each export's name and its encoded entry (name, kind and index, as in the file)."""
    count, pos = read_uleb(payload, 0)
    entries = []
    for _ in range(count):
        start = pos
        length, pos = read_uleb(payload, pos)
        name = payload[pos:pos + length].decode("utf-8")
        pos += length + 1          # the kind byte
        _, pos = read_uleb(payload, pos)   # the index
        entries.append((name, payload[start:pos]))
    if pos != len(payload):
        raise WasmError("export section has trailing bytes")
    return entries


def exports(data: bytes) -> list[str]:
    return [name for sid, payload in sections(data) if sid == EXPORT_SECTION
            for name, _ in parse_exports(payload)]


def drop_exports(data: bytes, names: set[str]) -> bytes:
    out = bytearray(MAGIC)
    for section_id, payload in sections(data):
        if section_id == EXPORT_SECTION:
            kept = [entry for name, entry in parse_exports(payload) if name not in names]
            payload = write_uleb(len(kept)) + b"".join(kept)
        out += bytes([section_id]) + write_uleb(len(payload)) + payload
    return bytes(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["trim"] and len(argv) == 2:
        argv = ["drop", argv[1], *UNUSED_CALLBACKS]
    if len(argv) < 2 or argv[0] not in ("list", "drop") or (argv[0] == "drop" and len(argv) < 3):
        print(__doc__.strip().split("\n\n")[2], file=sys.stderr)
        return 2
    path = argv[1]
    try:
        with open(path, "rb") as f:
            data = f.read()
        present = exports(data)
        if argv[0] == "list":
            print("\n".join(present))
            return 0
        to_drop = set(argv[2:]) & set(present)
        if to_drop:
            rewritten = drop_exports(data, to_drop)
            if set(exports(rewritten)) != set(present) - to_drop:
                raise WasmError("rewriting the export section went wrong")
            # A new file, not a rewrite in place: cargo's own copy (a hard link) stays as built.
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)))
            with os.fdopen(fd, "wb") as f:
                f.write(rewritten)
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
    except (OSError, UnicodeDecodeError, WasmError) as e:
        print(f"wasm_exports: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

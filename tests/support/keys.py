"""API keys from the real key generator (target/.../apiguard-keygen), the test cast that uses them
and the plugin configuration the API-key tests share."""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY_RE = re.compile(r"^agk_[0-9A-Za-z]{43}[0-9A-Za-z]{6}$")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass
class Key:
    key: str
    entry: dict

    def config_entry(self, **overrides) -> dict:
        return {**self.entry, **overrides}


def run_keygen(keygen_bin: Path, consumer: str, expires_at: str | None = None) -> Key:
    args = [str(keygen_bin), "--consumer", consumer, "--json"]
    if expires_at:
        args += ["--expires-at", expires_at]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"apiguard-keygen failed ({out.returncode}): {out.stderr}"
    doc = json.loads(out.stdout)
    entry = {k: v for k, v in doc["entry"].items() if v is not None}
    return Key(key=doc["key"], entry=entry)


@dataclass
class Keys:
    alice: Key       # valid, no expiry
    bob: Key         # revoked
    carol: Key       # expired (expires_at in the past)
    dave: Key        # expires in the future
    stranger: Key    # valid format and checksum, never configured

    def entries(self) -> list[dict]:
        return [
            self.alice.entry,
            self.bob.config_entry(revoked=True),
            self.carol.config_entry(expires_at="2020-01-01T00:00:00Z"),
            self.dave.entry,
        ]


def flip_char(key: str, index: int) -> str:
    """The key with one base62 character replaced by another base62 character (a typo)."""
    old = key[index]
    new = BASE62[(BASE62.index(old) + 1) % len(BASE62)]
    return key[:index] + new + key[index + 1:]


def api_key_config(keys: Keys, **top) -> dict:
    """The demo configuration shape, with all test keys and plain HTTP allowed; `top` overrides."""
    api_keys = {"header": "x-api-key", "keys": keys.entries()}
    api_keys.update(top.pop("api_keys", {}))
    cfg = {
        "credentials": "api_key",
        "api_keys": api_keys,
        "https": {"required": False},
        "exempt_paths": ["/healthz"],
    }
    cfg.update(top)
    return cfg

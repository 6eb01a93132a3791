"""The key generator the operators use: its keys and entries are what the plugin is configured with."""
from __future__ import annotations

import hashlib
import json
import subprocess

from support.keys import KEY_RE


def test_key_shape_and_entry(keygen):
    k = keygen("alice")
    assert KEY_RE.match(k.key), k.key
    assert k.entry["sha256"] == hashlib.sha256(k.key.encode()).hexdigest()
    assert k.entry["consumer"] == "alice"
    assert k.entry.get("expires_at") is None
    assert set(k.entry) <= {"sha256", "consumer", "expires_at"}


def test_expiry_is_carried_into_the_entry(keygen):
    k = keygen("bob", "2030-01-01T00:00:00Z")
    assert k.entry["expires_at"] == "2030-01-01T00:00:00Z"
    assert k.entry["sha256"] == hashlib.sha256(k.key.encode()).hexdigest()


def test_keys_are_unique(keygen):
    generated = {keygen("alice").key for _ in range(5)}
    assert len(generated) == 5


def test_json_output_is_one_object(keygen_bin):
    out = subprocess.run([str(keygen_bin), "--consumer", "carol", "--json"], capture_output=True,
                         text=True, check=True)
    doc = json.loads(out.stdout)
    assert set(doc) == {"key", "entry"}
    assert doc["key"] not in out.stderr


def test_bad_arguments_are_refused_before_any_key_is_made(keygen_bin):
    for args in (["--consumer", "has space"], ["--consumer", ""], ["--consumer", "a", "--expires-at", "soon"], []):
        out = subprocess.run([str(keygen_bin), *args, "--json"], capture_output=True, text=True)
        assert out.returncode == 2, (args, out)
        assert out.stdout == "", (args, out.stdout)

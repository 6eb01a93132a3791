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
    assert set(doc) == {"key", "entry", "fingerprint"}
    assert doc["fingerprint"] == doc["entry"]["sha256"][:16]
    assert doc["key"] not in out.stderr


def test_bad_arguments_are_refused_before_any_key_is_made(keygen_bin):
    for args in (["--consumer", "has space"], ["--consumer", ""], ["--consumer", "a", "--expires-at", "soon"], []):
        out = subprocess.run([str(keygen_bin), *args, "--json"], capture_output=True, text=True)
        assert out.returncode == 2, (args, out)
        assert out.stdout == "", (args, out.stdout)


def keygen_into(keygen_bin, path, *args):
    out = subprocess.run([str(keygen_bin), *args, "--into", str(path), "--json"], capture_output=True,
                         text=True)
    return out


def test_into_writes_the_entry_into_a_policy_document_and_bumps_its_version(keygen_bin, tmp_path):
    path = tmp_path / "policy.json"
    first = keygen_into(keygen_bin, path, "--consumer", "alice", "--plan", "gold")
    assert first.returncode == 0, first.stderr
    issued = json.loads(first.stdout)
    doc = json.loads(path.read_text())
    assert doc["api_keys"] == [{"sha256": hashlib.sha256(issued["key"].encode()).hexdigest(),
                                "consumer": "alice", "plan": "gold"}]
    assert doc["version"].endswith("#1"), doc["version"]
    assert issued["key"] not in path.read_text()
    second = json.loads(keygen_into(keygen_bin, path, "--consumer", "bob").stdout)
    doc = json.loads(path.read_text())
    assert [e["consumer"] for e in doc["api_keys"]] == ["alice", "bob"]
    assert doc["version"].endswith("#2"), doc["version"]
    assert second["fingerprint"] == doc["api_keys"][1]["sha256"][:16]


def test_revoke_by_fingerprint_or_consumer_keeps_the_file_valid(keygen_bin, tmp_path):
    path = tmp_path / "policy.json"
    a = json.loads(keygen_into(keygen_bin, path, "--consumer", "alice").stdout)
    keygen_into(keygen_bin, path, "--consumer", "bob")
    keygen_into(keygen_bin, path, "--consumer", "bob")
    out = keygen_into(keygen_bin, path, "--revoke", a["fingerprint"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"revoked": [a["fingerprint"]]}
    out = keygen_into(keygen_bin, path, "--revoke", "bob")
    assert len(json.loads(out.stdout)["revoked"]) == 2
    doc = json.loads(path.read_text())
    assert [e.get("revoked") for e in doc["api_keys"]] == [True, True, True]
    assert doc["version"].endswith("#5"), doc["version"]
    before = path.read_bytes()
    for selector in ("nobody", "abc"):
        out = keygen_into(keygen_bin, path, "--revoke", selector)
        assert out.returncode == 1 and out.stdout == "", out
    assert path.read_bytes() == before, "a failed revocation left the file as it was"


def test_a_file_that_is_not_a_policy_document_costs_no_key(keygen_bin, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text("[1, 2]")
    out = keygen_into(keygen_bin, path, "--consumer", "alice")
    assert out.returncode == 1 and out.stdout == "", out
    assert path.read_text() == "[1, 2]"

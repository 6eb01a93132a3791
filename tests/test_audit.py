"""The audit log end to end: Envoy with apiguard ships one OTLP/HTTP JSON log record per request to
a collector on 127.0.0.1, which parses every body with the OTLP message types (the
`opentelemetry-proto` package and protobuf's JSON parser). The collected streams pass
apiguard-audit-verify, and tampered copies fail it; a collector that is down costs the requests
nothing, its records arrive after recovery, and drops beyond the buffer show as declared gaps.
Envoy's own access log prints the consumer, decision and code; the metrics are in /stats/prometheus.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from support.harness import ROOT, Envoy, bootstrap, free_port, request, wasm_filter, wait_until
from support.keys import api_key_config
from support.schema import assert_valid_config


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_jwk() -> tuple[dict, dict]:
    """A fresh Ed25519 key: (private JWK for the plugin, public JWK for the verifier)."""
    key = Ed25519PrivateKey.generate()
    d = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                          serialization.NoEncryption())
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = {"kty": "OKP", "crv": "Ed25519", "x": b64url(x), "kid": "audit-test"}
    return {**public, "d": b64url(d)}, public


class Collector:
    """An OTLP/HTTP JSON logs receiver on 127.0.0.1: every body must parse as an
    ExportLogsServiceRequest; `stop()` takes it down (connections refused), `start()` brings it
    back on the same port."""

    def __init__(self):
        self.port = free_port()
        self.bodies: list[bytes] = []
        self.invalid: list[str] = []
        self.lock = threading.Lock()
        self.server = None

    def start(self) -> "Collector":
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = 200
                try:
                    assert self.path == "/v1/logs", self.path
                    assert self.headers.get("content-type") == "application/json"
                    json_format.Parse(body, ExportLogsServiceRequest())
                except Exception as e:  # noqa: BLE001 - recorded and answered 400
                    with collector.lock:
                        collector.invalid.append(f"{e}: {body[:200]!r}")
                    status = 400
                else:
                    with collector.lock:
                        collector.bodies.append(body)
                reply = b"{}"
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def records(self) -> list[dict]:
        with self.lock:
            bodies = list(self.bodies)
        out = []
        for body in bodies:
            doc = json.loads(body)
            for rl in doc["resourceLogs"]:
                for sl in rl["scopeLogs"]:
                    for rec in sl.get("logRecords", []):
                        attrs = {}
                        for a in rec["attributes"]:
                            v = a["value"]
                            attrs[a["key"]] = v.get("stringValue", v.get("intValue"))
                        out.append({"body": rec["body"]["stringValue"], **attrs})
        return out

    def requests_by_id(self) -> dict[str, list[dict]]:
        by_id: dict[str, list[dict]] = {}
        for r in self.records():
            if r["body"] == "apiguard.request":
                by_id.setdefault(r.get("apiguard.request_id"), []).append(r)
        return by_id


ACCESS_FORMAT = ("consumer=%FILTER_STATE(wasm.apiguard_consumer:PLAIN)% "
                 "decision=%FILTER_STATE(wasm.apiguard_decision:PLAIN)% "
                 "code=%FILTER_STATE(wasm.apiguard_code:PLAIN)% "
                 "status=%RESPONSE_CODE% id=%REQ(X-REQUEST-ID)%\n")


def start_envoy(wasm_path, upstream, collector, config, tmp_path, concurrency=2) -> tuple[Envoy, Path]:
    assert_valid_config(config, "the test's plugin configuration")
    access_log = tmp_path / f"access-{uuid.uuid4().hex}.log"
    cfg = bootstrap(free_port(), free_port(), upstream.port, [wasm_filter(config, wasm_path)],
                    extra_clusters={"otel-collector": collector.port})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(access_log),
            "log_format": {"text_format_source": {"inline_string": ACCESS_FORMAT}},
        },
    }]
    envoy = Envoy(cfg, concurrency=concurrency)
    try:
        envoy.start()
    except BaseException:
        envoy.stop()
        raise
    return envoy, access_log


def audit_config(keys, private_jwk, **otlp) -> dict:
    return api_key_config(keys, audit={
        "otlp": {"cluster": "otel-collector", "path": "/v1/logs", "authority": "otel-collector",
                 "batch_max_records": 512, "batch_max_age_ms": 200, "buffer_max_records": 65536,
                 "timeout_ms": 3000, "retry_max_backoff_ms": 1000, **otlp},
        "signing_key": private_jwk,
        "envoy_log": "off",
    })


def verifier() -> Path:
    """The verifier `make test-e2e` built (APIGUARD_AUDIT_VERIFY), else a debug build of it (its
    dependencies are the unit tests' already)."""
    given = os.environ.get("APIGUARD_AUDIT_VERIFY")
    if given:
        return Path(given)
    build = subprocess.run(["cargo", "build", "--bin", "apiguard-audit-verify"], cwd=ROOT,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    return ROOT / "target" / "debug" / "apiguard-audit-verify"


def verify(tmp_path: Path, public_jwk: dict, bodies: list[bytes]) -> subprocess.CompletedProcess:
    d = tmp_path / f"bodies-{uuid.uuid4().hex}"
    d.mkdir()
    key = d / "key.jwk"
    key.write_text(json.dumps(public_jwk))
    files = []
    for i, body in enumerate(bodies):
        f = d / f"{i:04d}.json"
        f.write_bytes(body)
        files.append(str(f))
    return subprocess.run([str(verifier()), "--public-key", str(key), *files],
                          capture_output=True, text=True, timeout=60)


def send(envoy: Envoy, path: str, headers: dict) -> tuple[str, int]:
    rid = f"audit-{uuid.uuid4()}"
    status, _, _ = request(envoy.port, "GET", path, headers={**headers, "x-request-id": rid})
    return rid, status


def prometheus(envoy: Envoy) -> dict[str, float]:
    status, text = envoy.admin("/stats/prometheus")
    assert status == 200
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        values[name] = values.get(name, 0.0) + float(value)
    return values


def metric(values: dict[str, float], name: str) -> float:
    """The value of a plugin metric; Envoy prints the `wasmcustom` namespace without a prefix."""
    return sum(v for k, v in values.items() if k.split("{")[0] == name)


@pytest.fixture(scope="module")
def collector():
    c = Collector().start()
    yield c
    c.stop()


def test_every_request_is_recorded_once_with_its_caller_and_the_streams_verify(
        wasm_path, upstream, keys, collector, tmp_path):
    private, public = signing_jwk()
    envoy, access_log = start_envoy(wasm_path, upstream, collector, audit_config(keys, private), tmp_path)
    try:
        sent = []  # (request id, status, expected consumer, decision, code)
        for _ in range(5):
            rid, status = send(envoy, "/orders/1", {"x-api-key": keys.alice.key})
            sent.append((rid, status, "alice", "allowed", None))
        rid, status = send(envoy, "/orders/2", {"x-api-key": keys.stranger.key})
        sent.append((rid, status, None, "denied", "unknown_api_key"))
        rid, status = send(envoy, "/orders/3", {"x-api-key": keys.bob.key})
        sent.append((rid, status, None, "denied", "revoked_api_key"))
        rid, status = send(envoy, "/orders/4", {})
        sent.append((rid, status, None, "denied", "missing_credential"))
        rid, status = send(envoy, f"/orders/5?page=2&api_key={keys.alice.key}", {})
        sent.append((rid, status, None, "denied", "credential_in_query"))
        assert [s[1] for s in sent] == [200] * 5 + [401, 401, 401, 400]

        ids = {s[0] for s in sent}
        wait_until(lambda: ids <= set(collector.requests_by_id()), 15, "every record at the collector")
        assert collector.invalid == []
        by_id = collector.requests_by_id()
        for rid, status, consumer, decision, code in sent:
            [rec] = by_id[rid]
            assert rec["http.response.status_code"] == str(status)
            assert rec.get("apiguard.consumer") == consumer
            assert rec["apiguard.decision"] == decision
            assert rec.get("apiguard.code") == code
            assert rec["http.request.method"] == "GET"
            assert rec["client.address"] == "127.0.0.1" and int(rec["client.port"]) > 0
            assert rec["apiguard.config_digest"] and rec["apiguard.version"]
        alice = by_id[sent[0][0]][0]
        assert alice["apiguard.key_fingerprint"] == keys.alice.entry["sha256"][:16].lower()
        assert alice["url.path"] == "/orders/1"
        leaked = by_id[sent[-1][0]][0]
        assert leaked["url.query"] == "page=2&api_key=REDACTED"

        # No credential anywhere in what left the proxy.
        everything = b"".join(collector.bodies)
        for secret in (keys.alice.key, keys.stranger.key, keys.bob.key, private["d"]):
            assert secret.encode() not in everything

        # The verifier passes on the collected streams...
        bodies = list(collector.bodies)
        ok = verify(tmp_path, public, bodies)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "0 findings" in ok.stdout

        # ...and fails on tampered copies, naming what happened.
        def tampered(edit) -> str:
            docs = [json.loads(b) for b in bodies]
            edit(docs)
            run = verify(tmp_path, public, [json.dumps(d).encode() for d in docs])
            assert run.returncode == 1, run.stdout
            return run.stdout

        def records(docs):
            # The body with the most request records, and its list of records.
            doc = max(docs, key=lambda d: len(d["resourceLogs"][0]["scopeLogs"][0]["logRecords"]))
            return doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]

        def delete(docs):
            del records(docs)[1]

        def change(docs):
            rec = records(docs)[0]
            for a in rec["attributes"]:
                if a["key"] == "http.response.status_code":
                    a["value"] = {"intValue": "201"}

        def swap(docs):
            r = records(docs)
            r[0], r[1] = r[1], r[0]

        def forge(docs):
            cp = records(docs)[-1]
            for a in cp["attributes"]:
                if a["key"] == "apiguard.audit.signature":
                    s = a["value"]["stringValue"]
                    a["value"]["stringValue"] = ("1" if s[0] == "0" else "0") + s[1:]

        assert len(records([json.loads(b) for b in bodies])) >= 3, "a batch of at least two records"
        assert "deleted" in tampered(delete)
        assert "modified" in tampered(change)
        assert "reordered" in tampered(swap)
        assert "forged checkpoint" in tampered(forge)

        # Envoy's access log names the caller, the decision and the code.
        def access_lines():
            return access_log.read_text().splitlines() if access_log.exists() else []
        wait_until(lambda: len(access_lines()) >= len(sent), 10, "access log lines")
        lines = {line.rsplit("id=", 1)[1]: line for line in access_lines()}
        assert lines[sent[0][0]].startswith("consumer=alice decision=allowed code=- status=200")
        assert lines[sent[5][0]].startswith("consumer=- decision=denied code=unknown_api_key status=401")

        # Metrics in Prometheus form.
        def shipped():
            values = prometheus(envoy)
            return metric(values, "apiguard_audit_records_shipped_total") >= len(sent) \
                and metric(values, "apiguard_allowed_total") >= 5 and values
        values = wait_until(shipped, 10, "shipped records in /stats/prometheus")
        assert metric(values, "apiguard_allowed_total") >= 5
        assert metric(values, "apiguard_denied_unknown_api_key_total") >= 1
        assert metric(values, "apiguard_audit_records_dropped_total") == 0
        assert metric(values, "apiguard_audit_records_buffered") == 0
    finally:
        envoy.stop()


TIMEOUT_S = 2


def test_a_collector_that_is_down_costs_nothing_records_arrive_after_recovery_and_drops_are_declared(
        wasm_path, upstream, keys, tmp_path):
    collector = Collector()  # down: nothing listens on its port yet
    private, public = signing_jwk()
    config = audit_config(keys, private, batch_max_records=5, buffer_max_records=20,
                          batch_max_age_ms=100, retry_max_backoff_ms=500, timeout_ms=TIMEOUT_S * 1000)
    envoy, _ = start_envoy(wasm_path, upstream, collector, config, tmp_path, concurrency=1)
    try:
        # Normal speed: no request comes near an export's time-out (the request path never
        # touches the export; a refused connection fails the export at once, and retries back off).
        sent, latencies = [], []
        for _ in range(30):
            started = time.monotonic()
            rid, status = send(envoy, "/x", {"x-api-key": keys.alice.key})
            latencies.append(time.monotonic() - started)
            assert status == 200
            sent.append(rid)
        assert max(latencies) < 0.5 * TIMEOUT_S, f"slowest request {max(latencies):.3f}s"

        def retried():
            return metric(prometheus(envoy), "apiguard_audit_exports_retried_total") >= 2
        wait_until(retried, 10, "export retries")
        values = prometheus(envoy)
        assert metric(values, "apiguard_audit_records_dropped_total") == 10
        assert metric(values, "apiguard_audit_records_buffered") == 20
        assert collector.bodies == []

        collector.start()
        try:
            def arrived():
                recs = collector.records()
                return any(r["body"] == "apiguard.gap" for r in recs) and \
                    sum(r["body"] == "apiguard.request" for r in recs) >= 20
            wait_until(arrived, 15, "records after recovery")
            assert collector.invalid == []
            recs = collector.records()
            requests = [r for r in recs if r["body"] == "apiguard.request"]
            assert sorted(r["apiguard.request_id"] for r in requests) == sorted(sent[:20])
            [gap] = [r for r in recs if r["body"] == "apiguard.gap"]
            assert gap["apiguard.audit.dropped_records"] == "10"
            # The verifier sees exactly what is missing: the declared gap, nothing else.
            run = verify(tmp_path, public, list(collector.bodies))
            assert run.returncode == 1
            findings = [l for l in run.stdout.splitlines() if ": " in l and "findings" not in l]
            assert len(findings) == 1 and "gap declared by the plugin" in findings[0], run.stdout
            assert "10 records dropped before seq 20" in findings[0]
        finally:
            collector.stop()
    finally:
        envoy.stop()


def test_envoy_log_lines_and_the_export_started_at_shutdown(wasm_path, upstream, keys, collector, tmp_path):
    # Batches are due only after a minute: nothing is exported before the shutdown.
    private, public = signing_jwk()
    config = audit_config(keys, private, batch_max_age_ms=60_000)
    config["audit"]["envoy_log"] = "info"
    envoy, _ = start_envoy(wasm_path, upstream, collector, config, tmp_path, concurrency=1)
    try:
        sent = [send(envoy, "/flush", {"x-api-key": keys.alice.key})[0] for _ in range(3)]
        # envoy_log: each record is also a line in Envoy's log.
        for rid in sent:
            envoy.wait_for_log(rid)
        assert not set(sent) & set(collector.requests_by_id())
    finally:
        envoy.stop()
    log = envoy.log()
    line = next(l for l in log.splitlines() if sent[0] in l)
    assert '"apiguard.consumer"' in line and keys.alice.key not in log
    # On SIGTERM Envoy 1.40 calls the root's on_done, and the plugin starts the export of what
    # is pending; but Envoy destroys the VM at once instead of waiting for it (documented).
    assert "stopping: exporting the pending audit records" in log


def test_the_verifier_refuses_a_key_that_is_not_ed25519_and_unreadable_bodies(tmp_path):
    rsa = tmp_path / "rsa.jwk"
    rsa.write_text(json.dumps({"kty": "RSA", "n": "AQAB", "e": "AQAB"}))
    body = tmp_path / "body.json"
    body.write_text('{"resourceLogs": []}')
    run = subprocess.run([str(verifier()), "--public-key", str(rsa), str(body)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "Ed25519" in run.stderr
    _, public = signing_jwk()
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    key = tmp_path / "key.jwk"
    key.write_text(json.dumps(public))
    run = subprocess.run([str(verifier()), "--public-key", str(key), str(junk)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1 and "unreadable" in run.stdout


# --------------------------------------------------------------------------------------------
# configuration: refused with one line naming the field, never the key

from support.failclosed import assert_failed_closed, assert_loaded, launch_selected  # noqa: E402

_PRIVATE, _ = signing_jwk()
_OTHER, _ = signing_jwk()


def _cfg(audit: dict) -> dict:
    return {"credentials": "api_key", "api_keys": {"keys": []}, "https": {"required": False},
            "exempt_paths": ["/healthz"], "audit": audit}


AUDIT_CASES = [
    ("nowhere-to-go", _cfg({}), {"audit"}, None),
    ("zero-batch", _cfg({"otlp": {"cluster": "c", "batch_max_records": 0}}),
     {"audit.otlp.batch_max_records"}, None),
    ("batch-over-buffer", _cfg({"otlp": {"cluster": "c", "batch_max_records": 10, "buffer_max_records": 5}}),
     {"audit.otlp.batch_max_records"}, None),
    ("relative-path", _cfg({"otlp": {"cluster": "c", "path": "v1/logs"}}), {"audit.otlp.path"}, None),
    ("unknown-envoy-log", _cfg({"otlp": {"cluster": "c"}, "envoy_log": "yes"}), {"audit.envoy_log"}, None),
    ("wrong-curve", _cfg({"otlp": {"cluster": "c"}, "signing_key": {**_PRIVATE, "crv": "X25519"}}),
     {"audit.signing_key.crv"}, None),
    ("x-not-of-d", _cfg({"otlp": {"cluster": "c"}, "signing_key": {**_PRIVATE, "x": _OTHER["x"]}}),
     {"audit.signing_key.x"}, None),
    ("short-d", _cfg({"otlp": {"cluster": "c"}, "signing_key": {**_PRIVATE, "d": _PRIVATE["d"][:20]}}),
     {"audit.signing_key.d"}, None),
]

AUDIT_VALID = [
    ("issue-example", _cfg({
        "otlp": {"cluster": "otel-collector", "path": "/v1/logs", "authority": "otel-collector",
                 "batch_max_records": 512, "batch_max_age_ms": 1000, "buffer_max_records": 65536,
                 "timeout_ms": 3000, "retry_max_backoff_ms": 30000},
        "signing_key": {**_PRIVATE, "kid": "audit-2026-11"},
        "envoy_log": "off"})),
    ("envoy-log-only", _cfg({"envoy_log": "info"})),
]

CONFIGS = {f"invalid/{i}": c for i, c, _, _ in AUDIT_CASES} | {f"valid/{i}": c for i, c in AUDIT_VALID}


@pytest.fixture(scope="module")
def outcomes(request, wasm_path):
    return launch_selected(request, CONFIGS, wasm_path)


@pytest.mark.parametrize("case, paths, mention",
                         [pytest.param(f"invalid/{i}", p, m, id=i) for i, _, p, m in AUDIT_CASES])
def test_invalid_audit_configuration_fails_closed(outcomes, case, paths, mention):
    assert_failed_closed(outcomes[case], paths, mention, never_logged=(_PRIVATE["d"], _PRIVATE["d"][:20]))


@pytest.mark.parametrize("case", [pytest.param(f"valid/{i}", id=i) for i, _ in AUDIT_VALID])
def test_valid_audit_configuration_loads(outcomes, case):
    assert_loaded(outcomes[case])


def test_records_pending_when_the_plugin_is_replaced_are_flushed(wasm_path, upstream, keys, collector,
                                                                  tmp_path):
    # The filter's configuration comes from a file (ECDS): replacing it stops the old plugin while
    # the VM lives on. Batches are due only after a minute, so what arrives, arrives by the flush.
    private, public = signing_jwk()
    ecds = tmp_path / "ecds.json"

    def publish(config: dict):
        filt = wasm_filter(config, wasm_path)
        doc = {"resources": [{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                              "name": "apiguard", "typed_config": filt["typed_config"]}]}
        tmp = tmp_path / f"ecds-{uuid.uuid4().hex}.json"
        tmp.write_text(json.dumps(doc))
        tmp.rename(ecds)  # Envoy watches the path for moves

    first = audit_config(keys, private, batch_max_age_ms=60_000)
    publish(first)
    cfg = bootstrap(free_port(), free_port(), upstream.port, [{
        "name": "apiguard",
        "config_discovery": {
            "config_source": {"path_config_source": {"path": str(ecds)}},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
        },
    }], extra_clusters={"otel-collector": collector.port})
    cfg["node"] = {"id": "audit-test", "cluster": "audit-test"}  # xDS needs a node
    envoy = Envoy(cfg, concurrency=1)
    try:
        envoy.start()
        wait_until(lambda: send(envoy, "/ready", {"x-api-key": keys.alice.key})[1] == 200, 20,
                   "the filter from ECDS")
        sent = [send(envoy, "/replaced", {"x-api-key": keys.alice.key})[0] for _ in range(3)]
        assert not set(sent) & set(collector.requests_by_id())
        second = audit_config(keys, private, batch_max_age_ms=60_000)
        second["audit"]["envoy_log"] = "info"
        publish(second)
        wait_until(lambda: set(sent) <= set(collector.requests_by_id()), 20,
                   "the replaced plugin's records at the collector")
        assert "stopping: exporting the pending audit records" in envoy.log()
    finally:
        envoy.stop()

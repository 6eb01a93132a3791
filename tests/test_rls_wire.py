"""apiguard encodes RateLimitRequest and decodes RateLimitResponse by hand (src/ratelimit/rls.rs);
its unit tests check both against tests/data/rls_wire_vectors.json. This test makes every vector
again with the published message classes (the `envoy-data-plane` package, generated from Envoy's
rls.proto) and checks that the file says what they say: the bytes, and what apiguard must read
from each response."""
from __future__ import annotations

import json

import pytest

from support import rls_wire


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(rls_wire.VECTORS.read_text("utf-8"))


def test_the_stored_vectors_are_what_the_message_classes_make(stored):
    fresh = rls_wire.build()
    assert [c["name"] for c in stored["requests"]] == [c["name"] for c in fresh["requests"]]
    assert [c["name"] for c in stored["responses"]] == [c["name"] for c in fresh["responses"]]
    for old, new in zip(stored["requests"] + stored["responses"], fresh["requests"] + fresh["responses"]):
        assert old == new, f"{old['name']}: run `python -m support.rls_wire --write` and review the diff"
    assert stored["source"] == fresh["source"]


def test_requests_read_back_as_sent(stored):
    Request = rls_wire.messages()["Request"]
    for case in stored["requests"]:
        msg = Request.FromString(bytes.fromhex(case["hex"]))
        want = case["apiguard"]
        assert msg.domain == want["domain"]
        assert [[[e.key, e.value] for e in d.entries] for d in msg.descriptors] == want["descriptors"]
        assert msg.hits_addend == want["hits_addend"]


def test_the_vectors_cover_what_apiguard_reads(stored):
    """Every code, every unit, headers of both kinds, a raw header value, fields to skip."""
    views = [c["apiguard"] for c in stored["responses"]]
    statuses = [s for v in views for s in v["statuses"]]
    assert {v["overall_code"] for v in views} == {"OK", "OVER_LIMIT", "UNKNOWN"}
    units = {s["current_limit"]["unit"] for s in statuses if s["current_limit"]}
    assert units == {"UNKNOWN", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"}
    assert any(v["response_headers_to_add"] for v in views) and any(v["request_headers_to_add"] for v in views)
    skipped = {"rawBody", "dynamicMetadata", "quota"}
    assert any(skipped <= set(c["message"]) for c in stored["responses"])

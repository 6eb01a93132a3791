"""Wire vectors for apiguard's hand-written encoding of Envoy's rate-limit service protocol
(src/ratelimit/rls.rs): RateLimitRequest and RateLimitResponse bytes made by the published message
classes of the `envoy-data-plane` PyPI package (generated from envoy/service/ratelimit/v3/rls.proto
and the files it imports; pinned in tests/requirements.txt).

tests/data/rls_wire_vectors.json holds, for each case, what apiguard is given or must read
(`apiguard`), the message as its classes describe it (`message`, proto3 JSON, responses only) and
the bytes (`hex`). The Rust unit tests encode and decode against `hex`; tests/test_rls_wire.py makes
every `hex` again from the classes and checks that `apiguard` says what the message says.

    python -m support.rls_wire --write    # rewrite the file from the cases below
"""
from __future__ import annotations

import argparse
import datetime
import json
import warnings
from pathlib import Path

from support.harness import ROOT

VECTORS = ROOT / "tests" / "data" / "rls_wire_vectors.json"

SOURCE = ("bytes(message) of the envoy-data-plane {version} classes (betterproto2 {bp}) for "
          "envoy.service.ratelimit.v3.RateLimitRequest / RateLimitResponse; made by "
          "`python -m support.rls_wire --write` (tests/support/rls_wire.py), checked by "
          "tests/test_rls_wire.py")


def messages() -> dict:
    """The message classes by short name (imported late: the package takes a moment to import;
    its generated code trips a deprecation warning of newer pydantic releases, silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from envoy_data_plane.envoy.config.core.v3 import HeaderValue
        from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
            RateLimitDescriptor, RateLimitDescriptorEntry)
        from envoy_data_plane.envoy.service.ratelimit.v3 import (
            RateLimitRequest, RateLimitResponse, RateLimitResponseCode, RateLimitResponseDescriptorStatus,
            RateLimitResponseRateLimit, RateLimitResponseRateLimitUnit)
    return {
        "HeaderValue": HeaderValue, "Descriptor": RateLimitDescriptor, "Entry": RateLimitDescriptorEntry,
        "Request": RateLimitRequest, "Response": RateLimitResponse, "Code": RateLimitResponseCode,
        "Status": RateLimitResponseDescriptorStatus, "Limit": RateLimitResponseRateLimit,
        "Unit": RateLimitResponseRateLimitUnit,
    }


# ---------------------------------------------------------------------------------------------
# requests: what apiguard sends

REQUESTS = [
    {"name": "one descriptor, one entry", "domain": "apiguard",
     "descriptors": [[["consumer", "alice"]]], "hits_addend": 1},
    {"name": "the documented example: consumer, then consumer and route; cost 3", "domain": "apiguard",
     "descriptors": [[["consumer", "alice"]], [["consumer", "alice"], ["route", "/payments"]]],
     "hits_addend": 3},
    {"name": "every entry kind, an empty header value, a long and a non-ASCII value", "domain": "shop-eu",
     "descriptors": [[["plan", "gold"], ["method", "POST"]], [["client_address", "2001:db8::7"]],
                     [["x-tenant", ""]], [["x-tenant", "t" * 200]], [["x-region", "zürich-π"]]],
     "hits_addend": 1},
    {"name": "hits_addend 0 is left out", "domain": "d", "descriptors": [[["k", "v"]]], "hits_addend": 0},
    {"name": "the largest hits_addend", "domain": "apiguard",
     "descriptors": [[["consumer", "c"]]], "hits_addend": 4294967295},
    {"name": "no descriptors", "domain": "apiguard", "descriptors": [], "hits_addend": 2},
]


def request_bytes(case: dict) -> bytes:
    m = messages()
    msg = m["Request"](
        domain=case["domain"],
        descriptors=[m["Descriptor"](entries=[m["Entry"](key=k, value=v) for k, v in d])
                     for d in case["descriptors"]],
        hits_addend=case["hits_addend"])
    return bytes(msg)


# ---------------------------------------------------------------------------------------------
# responses: what apiguard reads (proto3 JSON, as the classes' to_dict()/from_dict() write it)

RESPONSES = [
    {"name": "OK with two statuses", "message": {
        "overallCode": "OK",
        "statuses": [
            {"code": "OK", "currentLimit": {"requestsPerUnit": 100, "unit": "MINUTE"},
             "limitRemaining": 97, "durationUntilReset": "42s"},
            {"code": "OK", "currentLimit": {"name": "per-route", "requestsPerUnit": 10, "unit": "SECOND"},
             "limitRemaining": 9, "durationUntilReset": "0.250s"},
        ]}},
    {"name": "OVER_LIMIT with headers, a raw header value, and fields apiguard skips", "message": {
        "overallCode": "OVER_LIMIT",
        "statuses": [
            {"code": "OK"},
            {"code": "OVER_LIMIT", "currentLimit": {"name": "gold", "requestsPerUnit": 1000, "unit": "HOUR"},
             "durationUntilReset": "1799.000001s",
             "quota": {"requests": 5, "id": "q"}},
        ],
        "responseHeadersToAdd": [{"key": "x-ratelimit-limit", "value": "1000"},
                                 {"key": "x-ratelimit-raw", "rawValue": "cmF3"}],
        "requestHeadersToAdd": [{"key": "x-quota-hit", "value": "gold"}],
        "rawBody": "b3ZlciBsaW1pdA==",
        "dynamicMetadata": {"why": "test", "n": 1.5},
        "quota": {"requests": 3, "validUntil": "2030-01-01T00:00:00Z"},
    }},
    {"name": "only an overall code", "message": {"overallCode": "OK"}},
    {"name": "every unit, the largest remaining, long durations", "message": {
        "overallCode": "OVER_LIMIT",
        "statuses": [
            {"code": "OVER_LIMIT", "currentLimit": {"requestsPerUnit": 1, "unit": unit},
             "limitRemaining": 4294967295 if unit == "YEAR" else 0,
             "durationUntilReset": f"{seconds}s"}
            for unit, seconds in [("UNKNOWN", 0), ("SECOND", 1), ("MINUTE", 60), ("HOUR", 3600), ("DAY", 86400),
                                  ("WEEK", 604800), ("MONTH", 2592000), ("YEAR", 31536000)]
        ]}},
    {"name": "an unknown overall code, a status without anything", "message": {
        "overallCode": "UNKNOWN", "statuses": [{}]}},
]


def response_bytes(case: dict) -> bytes:
    return bytes(messages()["Response"].from_dict(case["message"]))


def _ns(delta: datetime.timedelta | None) -> int | None:
    if delta is None:
        return None
    return max(0, (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000)


def apiguard_view(case: dict) -> dict:
    """What apiguard's decoder must make of the message (as the classes read it back from its
    bytes): codes and units by name, durations in nanoseconds, headers as (key, value) with
    raw_value standing in for an empty value."""
    m = messages()
    msg = m["Response"].FromString(response_bytes(case))

    def header(h):
        value = h.value
        if not value and h.raw_value:
            value = h.raw_value.decode()
        return [h.key, value]

    return {
        "overall_code": msg.overall_code.name,
        "statuses": [{
            "code": s.code.name,
            "current_limit": None if s.current_limit is None else {
                "name": s.current_limit.name, "requests_per_unit": s.current_limit.requests_per_unit,
                "unit": s.current_limit.unit.name},
            "limit_remaining": s.limit_remaining,
            # The classes hold a Duration as a timedelta (microseconds): the cases stay within it.
            "duration_until_reset_ns": _ns(s.duration_until_reset),
        } for s in msg.statuses],
        "response_headers_to_add": [header(h) for h in msg.response_headers_to_add],
        "request_headers_to_add": [header(h) for h in msg.request_headers_to_add],
    }


def build() -> dict:
    from importlib.metadata import version
    return {
        "source": SOURCE.format(version=version("envoy-data-plane"), bp=version("betterproto2")),
        "requests": [{
            "name": c["name"],
            "apiguard": {"domain": c["domain"], "descriptors": c["descriptors"], "hits_addend": c["hits_addend"]},
            "hex": request_bytes(c).hex(),
        } for c in REQUESTS],
        "responses": [{
            "name": c["name"], "message": c["message"], "apiguard": apiguard_view(c),
            "hex": response_bytes(c).hex(),
        } for c in RESPONSES],
    }


def dumps(vectors: dict) -> str:
    """One case a line."""
    def cases(key):
        return ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in vectors[key])
    return (f'{{\n "source": {json.dumps(vectors["source"])},\n'
            f' "requests": [\n{cases("requests")}\n ],\n'
            f' "responses": [\n{cases("responses")}\n ]\n}}\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {VECTORS.relative_to(ROOT)}")
    args = parser.parse_args()
    text = dumps(build())
    if args.write:
        Path(VECTORS).write_text(text, encoding="utf-8")
        print(f"wrote {VECTORS}")
    else:
        print(text)


if __name__ == "__main__":
    main()

"""What the benchmark measures: the configurations (a), (b), ... side by side, the plugin
configurations they load, the one request every configuration is loaded with, and the checks each
must pass before it is measured. New configurations are added to CONFIGS.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from support.harness import StaticServer, wasm_filter

ISSUER = "https://issuer.bench"
AUDIENCE = "bench"
KID = "bench-es256"
RS256_KID = "bench-rs256"
TOKEN_LIFETIME = 3000  # seconds; the providers allow at most 3600
BENCH_PATH = "/bench/items/42"
# What the forged rows' 401 must say (searched in the body): a refused signature, not a missing,
# malformed, expired or unknown-kid token (jwt_authn says "Jwt verification fails" only when the
# signature does not verify).
FORGED_APIGUARD_BODY = r'"code":"invalid_signature"'
FORGED_NATIVE_BODY = r"^Jwt verification fails$"


class Unavailable(Exception):
    """A configuration that cannot be measured in this run; the message says why."""


# --------------------------------------------------------------------------------------------
# What every configuration shares


@dataclass
class Ctx:
    envoy_bin: str
    wasm: Path
    noop_wasm: Path | None
    noop_error: str | None
    key: dict | None           # {"key", "entry"} from apiguard-keygen
    key_error: str | None
    jwk: dict
    token: str
    token_exp: int
    concurrency: int
    # The RS256 rows' key and token (2048-bit RSA, e = 65537): `for_config` swaps them in.
    rs256_jwk: dict | None = None
    rs256_token: str | None = None
    # The forged rows' token: the ES256 token's header (kid) and claims signed by another P-256
    # key. `for_config` swaps it in and keeps the genuine token in `genuine_token`.
    forged_token: str | None = None
    genuine_token: str | None = None
    # Another build of apiguard.wasm (`--baseline-wasm`): row (d0) runs (d) with it, in the same
    # rounds, so that a change's cost or gain is measured side by side.
    baseline_wasm: Path | None = None

    def for_config(self, cfg: "Config") -> "Ctx":
        """The context a configuration is built, checked and loaded with: its token and its key."""
        if cfg.baseline:
            if self.baseline_wasm is None:
                raise Unavailable("no baseline module (--baseline-wasm)")
            return replace(self, wasm=self.baseline_wasm)
        if cfg.forged:
            if self.forged_token is None:
                raise Unavailable("no forged token")
            return replace(self, token=self.forged_token, genuine_token=self.token)
        if not cfg.rs256:
            return self
        if self.rs256_jwk is None or self.rs256_token is None:
            raise Unavailable("no RS256 key")
        return replace(self, jwk=self.rs256_jwk, token=self.rs256_token)

    def api_key(self) -> str:
        if self.key is None:
            raise Unavailable(f"no API key: {self.key_error}")
        return self.key["key"]

    def key_entries(self, n: int) -> list[dict]:
        """The real key's entry plus n-1 distinct random digests (they only need to be distinct)."""
        self.api_key()
        entries = [dict(self.key["entry"])]  # type: ignore[index]
        seen = {entries[0]["sha256"].lower()}
        i = 1
        while len(entries) < n:
            digest = secrets.token_hex(32)
            if digest in seen:
                continue
            seen.add(digest)
            entries.append({"sha256": digest, "consumer": f"c{i}"})
            i += 1
        return entries

    def load_headers(self) -> dict[str, str]:
        """The one request every configuration is measured with: all credentials, HTTPS by XFP."""
        return {
            "x-api-key": self.key["key"] if self.key else "missing",
            "authorization": f"Bearer {self.token}",
            "x-forwarded-proto": "https",
        }

    def apiguard_filter(self, plugin_config: dict | str) -> list[dict]:
        if not self.wasm.is_file():
            raise Unavailable(f"{self.wasm} does not exist (run `make build`)")
        return [wasm_filter(plugin_config, self.wasm)]


def jwt_block(ctx: Ctx, cache_max_entries: int) -> dict:
    return {"header": "authorization",
            "providers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": {"keys": [ctx.jwk]},
                           "max_lifetime_seconds": 3600}],
            "cache_max_entries": cache_max_entries}


def apiguard_keys_only(ctx: Ctx, n_keys: int = 1) -> dict:
    return {"credentials": "api_key", "api_keys": {"keys": ctx.key_entries(n_keys)},
            "https": {"required": False}}


# The live policy document's control endpoint in the scale runs (a static server on 127.0.0.1).
CONTROL_CLUSTER = "apiguard-control"
# Envoy buffers an outbound call's answer up to http.async_response_buffer_limit (32 MiB by
# default); a million keys make a ~100 MB document.
LIVE_RUNTIME = {"http.async_response_buffer_limit": 512 * 1024 * 1024}


def apiguard_live_keys(ctx: Ctx) -> dict:
    """(c) with no configured key: the benchmark key comes from the live policy document."""
    cfg = apiguard_keys_only(ctx, 1)
    cfg["api_keys"]["keys"] = []
    cfg["data_source"] = {"cluster": CONTROL_CLUSTER, "path": "/v1/policy.json",
                          "refresh_interval_seconds": 3600, "timeout_ms": 60000,
                          "max_document_bytes": 512 * 1024 * 1024}
    return cfg


def live_document(ctx: Ctx, n_keys: int) -> bytes:
    return json.dumps({"version": f"bench-{n_keys}", "api_keys": ctx.key_entries(n_keys)}).encode()


def apiguard_everything(ctx: Ctx, cache_max_entries: int = 4096) -> dict:
    return {"credentials": "both",
            "api_keys": {"keys": ctx.key_entries(1)},
            "jwt": jwt_block(ctx, cache_max_entries),
            "https": {"required": True, "trust_x_forwarded_proto": True}}


# A plan no benchmark run can exhaust (wrk reaches ~10^4 req/s here): every request takes a token
# from the key's bucket in Envoy's shared data (a read and a compare-and-swap write) and none is
# refused, so the row shows what the bucket costs per request.
RATE_LIMIT_PLAN = "bench"
RATE_LIMIT_TOKENS = 1_000_000


def apiguard_rate_limited(ctx: Ctx) -> dict:
    """(d) with a `rate_limits` plan on the benchmark key and the RateLimit fields on responses."""
    cfg = apiguard_everything(ctx)
    cfg["api_keys"]["keys"][0]["plan"] = RATE_LIMIT_PLAN
    cfg["rate_limits"] = {
        "plans": {RATE_LIMIT_PLAN: {"rate": RATE_LIMIT_TOKENS, "per": "second", "burst": RATE_LIMIT_TOKENS}},
        "bucket_by": "consumer",
        "response_headers": True,
    }
    return cfg


# (d4): a global limit no run can exhaust, kept by the tests' rate-limit service (grpcio, Redis)
# on 127.0.0.1, started once for the whole run by the first configuration that needs it.
GLOBAL_DOMAIN = "bench"
_rate_limit_service = None


def rate_limit_service_port(ctx: Ctx) -> int:
    global _rate_limit_service
    if _rate_limit_service is None:
        import atexit

        try:
            from support.ratelimit_service import RateLimitService, Redis, Rule
            redis_server = Redis().start()
        except (ImportError, RuntimeError, TimeoutError) as e:
            raise Unavailable(f"no rate-limit service: {e}") from None
        atexit.register(redis_server.stop)
        service = RateLimitService(redis_server, GLOBAL_DOMAIN,
                                   [Rule([("consumer", None)], 4_000_000_000, "SECOND", name="bench")]).start()
        atexit.register(service.stop)
        _rate_limit_service = service
    return _rate_limit_service.port


def apiguard_global(ctx: Ctx) -> dict:
    """(d) with a `global_rate_limit` on the consumer: every request asks the service once."""
    cfg = apiguard_everything(ctx)
    cfg["global_rate_limit"] = {"cluster": "ratelimit", "domain": GLOBAL_DOMAIN, "timeout_ms": 1000,
                                "failure_mode": "deny", "descriptors": [["consumer"]]}
    return cfg


def audit_signing_jwk() -> dict:
    """A fresh Ed25519 private JWK for the audit checkpoints."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    d = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    x = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(x), "d": b64(d), "kid": "bench"}


def apiguard_audited(ctx: Ctx) -> dict:
    """(d) with the audit log on: a record per request, chained, exported in signed batches to the
    benchmark's upstream (a direct-response Envoy that answers the exports 200)."""
    cfg = apiguard_everything(ctx)
    cfg["audit"] = {
        "otlp": {"cluster": "upstream", "path": "/v1/logs", "authority": "otel-collector"},
        "signing_key": audit_signing_jwk(),
    }
    return cfg


def apiguard_acl(ctx: Ctx) -> dict:
    """(d) with an ACL: one rule on the benchmark path whose object check looks the item up in
    `acl.owners` (the benchmark key's consumer owns it through a group), so every request matches a
    template, reads its consumer's groups and one ownership entry."""
    cfg = apiguard_everything(ctx)
    consumer = cfg["api_keys"]["keys"][0]["consumer"]
    item = BENCH_PATH.rsplit("/", 1)[1]
    cfg["acl"] = {
        "groups": {"bench-owners": [consumer]},
        "rules": [{"path": "/bench/items/{item}", "methods": ["GET"], "allow": ["any"],
                   "owner": {"param": "item", "type": "item"}}],
        "owners": {"item": {item: ["group:bench-owners"]}},
    }
    return cfg


def apiguard_acl_guarded(ctx: Ctx) -> dict:
    """(d6) with the enumeration guard on: each request also reads its consumer's slot in shared
    data (the consumer is never refused, so never counted)."""
    cfg = apiguard_acl(ctx)
    cfg["acl"]["enumeration_guard"] = {"max_distinct_denied": 20, "window_seconds": 60, "block_seconds": 300}
    return cfg


def jwt_authn_filter(ctx: Ctx, jwt_cache: bool, *, for_apiguard: bool = False) -> dict:
    """Envoy's jwt_authn checking the benchmark token (ES256, inline JWKS). `for_apiguard`: set up
    for apiguard's `verified_by: envoy_jwt_authn` (the token forwarded, the payload in dynamic
    metadata under the issuer, as Istio's RequestAuthentication does) instead of (e)'s identity
    header."""
    provider = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": json.dumps({"keys": [ctx.jwk]})},
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "forward": for_apiguard,
        "max_lifetime": "3600s",
        **({"jwt_cache_config": {"jwt_cache_size": 4096}} if jwt_cache else {}),
    }
    if for_apiguard:
        provider["payload_in_metadata"] = ISSUER
    else:
        provider["claim_to_headers"] = [{"header_name": "x-apiguard-subject", "claim_name": "sub"}]
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def apiguard_forged(ctx: Ctx) -> dict:
    """(f) without `failed_auth_limit` (if it has one): every forged token costs a signature check
    and nothing else refuses the client first."""
    cfg = apiguard_everything(ctx, cache_max_entries=0)
    cfg.pop("failed_auth_limit", None)
    return cfg


def apiguard_after_jwt_authn(ctx: Ctx) -> list[dict]:
    """(f) with the signature checked by jwt_authn (no JWT cache) before apiguard, which takes the
    verified payload from dynamic metadata (`verified_by: envoy_jwt_authn`) and applies the rest."""
    cfg = apiguard_everything(ctx, cache_max_entries=0)
    provider = cfg["jwt"]["providers"][0]
    del provider["jwks"]
    provider["verified_by"] = "envoy_jwt_authn"
    return [jwt_authn_filter(ctx, jwt_cache=False, for_apiguard=True), *ctx.apiguard_filter(cfg)]


def native_everything(ctx: Ctx, jwt_cache: bool = True) -> list[dict]:
    """Envoy's own filters doing (d)'s checks: HTTPS via RBAC on x-forwarded-proto, API key via
    api_key_auth (plaintext keys in its config), JWT ES256 via jwt_authn with an inline JWKS."""
    https_only = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"https-only": {
                "permissions": [{"header": {"name": "x-forwarded-proto", "string_match": {"exact": "https"}}}],
                "principals": [{"any": True}]}}},
        },
    }
    api_key = {
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": ctx.api_key(), "client": "bench"}],
            "key_sources": [{"header": "x-api-key"}],
            "forwarding": {"header": "x-apiguard-consumer", "hide_credentials": True},
        },
    }
    return [https_only, api_key, jwt_authn_filter(ctx, jwt_cache)]


# --------------------------------------------------------------------------------------------
# The configurations. Later issues (rate limit, ACL, audit) append entries here.

Check = tuple[str, dict, int]  # (what, headers, expected status)


def credential_checks(ctx: Ctx) -> list[Check]:
    return [("no credentials", {"x-forwarded-proto": "https"}, 401)]


def full_checks(ctx: Ctx) -> list[Check]:
    h = ctx.load_headers()
    return credential_checks(ctx) + [
        ("API key without token", {"x-api-key": h["x-api-key"], "x-forwarded-proto": "https"}, 401),
        ("token without API key", {"authorization": h["authorization"], "x-forwarded-proto": "https"}, 401),
        ("all credentials over plain HTTP", {**h, "x-forwarded-proto": "http"}, 403),
    ]


def forged_checks(ctx: Ctx) -> list[Check]:
    """(f)'s checks with the forged token, plus the same request with the genuine token → 200: the
    configuration accepts a good signature, so the forged token's 401 is its signature's."""
    h = ctx.load_headers()
    if ctx.genuine_token is None:
        raise Unavailable("no genuine token to compare the forged one with")
    return full_checks(ctx) + [
        ("the same request with the genuine token", {**h, "authorization": f"Bearer {ctx.genuine_token}"}, 200),
    ]


@dataclass
class Config:
    key: str
    title: str
    detail: str
    filters: Callable[[Ctx], list[dict]]
    checks: Callable[[Ctx], list[Check]] = lambda ctx: []
    apiguard: bool = False
    # response header (lower-case) -> regular expression its value must match in the answer to
    # the benchmark request: evidence that the feature under test is really in the path
    response_fields: dict[str, str] | None = None
    # gRPC (HTTP/2) clusters the proxy needs: name -> port of a server the configuration starts
    grpc_clusters: Callable[[Ctx], dict[str, int]] | None = None
    # Servers the configuration talks to (cluster name -> a started server with .port and
    # .stop()), started before its Envoy and stopped with it.
    servers: Callable[[Ctx], dict] | None = None
    # Runtime values for the bootstrap's static layer.
    runtime: dict | None = None
    # Signed with RS256 instead of ES256: the token and key of Ctx.for_config.
    rs256: bool = False
    # Loaded with the forged ES256 token of Ctx.for_config instead of the genuine one.
    forged: bool = False
    # The status the benchmark request must get: checked before measuring, and the status every
    # measured answer is expected to have (any other is an error in the report).
    expect_status: int = 200
    # A regular expression the benchmark answer's body must contain (`re.search`), if any.
    expect_body: str | None = None
    # Loaded with the baseline module of Ctx.for_config (measured only with --baseline-wasm).
    baseline: bool = False


def live_control_server(ctx: Ctx) -> dict:
    return {CONTROL_CLUSTER: StaticServer(live_document(ctx, 1)).start()}


def apiguard_everything_live(ctx: Ctx) -> dict:
    """(d) with the benchmark key in the live policy document instead of the configuration."""
    cfg = apiguard_everything(ctx)
    cfg["api_keys"]["keys"] = []
    cfg["data_source"] = apiguard_live_keys(ctx)["data_source"]
    return cfg


def _noop_filters(ctx: Ctx, configuration: str = "") -> list[dict]:
    if ctx.noop_wasm is None:
        raise Unavailable(f"no-op filter: {ctx.noop_error}")
    return [wasm_filter(configuration, ctx.noop_wasm, root_id="noop", vm_id="noop")]


CONFIGS: list[Config] = [
    Config("a", "no filter", "router only", lambda ctx: []),
    Config("b", "no-op wasm", "Rust proxy-wasm filter that returns Continue (bench/noop-filter), without "
           "the response body and trailer callbacks among its exports, as `make build` leaves apiguard's",
           _noop_filters),
    Config("b2", "no-op wasm + host calls", "the no-op filter configured with `hostcalls`: per request it "
           "makes the host calls apiguard makes for (c) (read all request headers, read the clock, remove "
           "a header, add one, set two filter-state properties for the access log) and nothing else: the "
           "ABI floor of (c)",
           lambda ctx: _noop_filters(ctx, "hostcalls")),
    Config("c", "apiguard: API key", "`credentials: api_key`, 1 key, HTTPS not required",
           lambda ctx: ctx.apiguard_filter(apiguard_keys_only(ctx)), credential_checks, apiguard=True),
    Config("d", "apiguard: everything", "`credentials: both` (API key + JWT ES256, inline JWKS, "
           "token cache 4096), HTTPS via trusted x-forwarded-proto",
           lambda ctx: ctx.apiguard_filter(apiguard_everything(ctx)), full_checks, apiguard=True),
    Config("d0", "apiguard: everything, baseline .wasm", "(d) with the module given as `--baseline-wasm` "
           "(another build, e.g. the previous commit's), measured in the same rounds as (d)",
           lambda ctx: ctx.apiguard_filter(apiguard_everything(ctx)), full_checks, apiguard=True,
           baseline=True),
    Config("d2", "apiguard: everything + rate limit", "(d) with a `rate_limits` plan on the benchmark "
           f"key ({RATE_LIMIT_TOKENS:,} tokens a second, burst {RATE_LIMIT_TOKENS:,}: every request takes a "
           "token from the consumer's bucket in Envoy's shared data, none is refused) and "
           "`response_headers: true` (RateLimit and RateLimit-Policy on every response)",
           lambda ctx: ctx.apiguard_filter(apiguard_rate_limited(ctx)), full_checks, apiguard=True,
           response_fields={"ratelimit-policy": rf'"{RATE_LIMIT_PLAN}";q={RATE_LIMIT_TOKENS};w=1',
                            "ratelimit": rf'"{RATE_LIMIT_PLAN}";r=\d+;t=\d+'}),
    Config("d3", "apiguard: everything, key from the live document", "(d) with no configured key: "
           "the benchmark key is looked up in the live policy document (`data_source`) in shared data, "
           "one shard read per request", lambda ctx: ctx.apiguard_filter(apiguard_everything_live(ctx)),
           full_checks, apiguard=True, servers=live_control_server),
    Config("d4", "apiguard: everything + global limit", "(d) with a `global_rate_limit` on the consumer "
           "(`timeout_ms: 1000`, `failure_mode: deny`): every request waits for one gRPC call to a rate-limit "
           "service on 127.0.0.1 (the tests' Python one, grpcio, counting in Redis; its limit is never reached). "
           "The service's own CPU shares the machine with the proxy and wrk, and its throughput (a few hundred "
           "calls a second here) bounds the row's: read its latency and proxy CPU per request, not its rate",
           lambda ctx: ctx.apiguard_filter(apiguard_global(ctx)), full_checks, apiguard=True,
           grpc_clusters=lambda ctx: {"ratelimit": rate_limit_service_port(ctx)}),
    Config("d5", "apiguard: everything + audit", "(d) with `audit` on: one OTLP log record per request, "
           "hash-chained, exported in batches (512 records or 1 s) with an Ed25519-signed checkpoint to the "
           "benchmark's upstream", lambda ctx: ctx.apiguard_filter(apiguard_audited(ctx)), full_checks,
           apiguard=True),
    Config("d6", "apiguard: everything + ACL", "(d) with an `acl` rule on the benchmark path "
           "(`/bench/items/{item}`) whose object check looks the item up in `acl.owners`: per request a "
           "template match, the consumer's groups and one ownership entry",
           lambda ctx: ctx.apiguard_filter(apiguard_acl(ctx)), full_checks, apiguard=True),
    Config("d7", "apiguard: everything + ACL + enumeration guard", "(d6) with `acl.enumeration_guard` "
           "(20 distinct denied objects in 60 s block for 300 s): per request one more shared-data read, "
           "the consumer's guard slot",
           lambda ctx: ctx.apiguard_filter(apiguard_acl_guarded(ctx)), full_checks, apiguard=True),
    Config("e", "Envoy native", "rbac (x-forwarded-proto = https) + api_key_auth + jwt_authn "
           "(ES256, local_jwks inline, jwt_cache_size 4096)", native_everything, full_checks),
    Config("f", "apiguard: everything, no cache", "(d) with `jwt.cache_max_entries: 0`",
           lambda ctx: ctx.apiguard_filter(apiguard_everything(ctx, cache_max_entries=0)), full_checks,
           apiguard=True),
    Config("g", "Envoy native, no JWT cache", "(e) without `jwt_cache_config`: the baseline for (f)",
           lambda ctx: native_everything(ctx, jwt_cache=False), full_checks),
    Config("h", "jwt_authn + apiguard (verified_by)", "jwt_authn (ES256, inline JWKS, no JWT cache, "
           "`forward: true`, `payload_in_metadata`) then apiguard as (f) with `verified_by: envoy_jwt_authn`: "
           "the signature is checked once, natively; apiguard reads the payload from dynamic metadata and "
           "applies its own checks (HTTPS, API key, lifetime, claims)", apiguard_after_jwt_authn, full_checks,
           apiguard=True),
    Config("f2", "apiguard: everything, no cache, RS256", "(f) with an RS256 token (2048-bit RSA key, "
           "e = 65537) instead of ES256", lambda ctx: ctx.apiguard_filter(apiguard_everything(ctx, cache_max_entries=0)),
           full_checks, apiguard=True, rs256=True),
    Config("g2", "Envoy native, no JWT cache, RS256", "(g) with the RS256 token and key of (f2): the baseline "
           "for (f2)", lambda ctx: native_everything(ctx, jwt_cache=False), full_checks, rs256=True),
    Config("f3", "apiguard: forged ES256 token", "(f) (cache off, no `failed_auth_limit`) loaded with a forged "
           "token: the benchmark token's header (kid) and claims signed by another P-256 key, so every request "
           "fails the signature check and is refused 401",
           lambda ctx: ctx.apiguard_filter(apiguard_forged(ctx)), forged_checks, apiguard=True, forged=True,
           expect_status=401, expect_body=FORGED_APIGUARD_BODY),
    Config("g3", "Envoy native, forged ES256 token", "(g) loaded with the forged token of (f3): the baseline "
           "for (f3)", lambda ctx: native_everything(ctx, jwt_cache=False), forged_checks, forged=True,
           expect_status=401, expect_body=FORGED_NATIVE_BODY),
]

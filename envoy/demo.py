"""`make run`: generate demo keys, render envoy/envoy.yaml, start the echo upstream and Envoy with
the built apiguard.wasm, print curl lines that work as printed, and serve until Ctrl-C."""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from string import Template

from support.harness import EchoUpstream, self_signed_cert, wait_until
from support.jwt import SigningKey, ec_key

ROOT = Path(__file__).resolve().parent.parent


def keygen(consumer: str, expires_at: str | None = None) -> dict:
    """A fresh key from the real generator: {"key": ..., "entry": {...}}."""
    cmd = ["cargo", "run", "--quiet", "--release", "--bin", "apiguard-keygen", "--",
           "--consumer", consumer, "--json"]
    if expires_at:
        cmd += ["--expires-at", expires_at]
    return json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout)


def token(signing: SigningKey, lifetime: int, **extra) -> str:
    now = int(time.time())
    claims = {"iss": "https://idp.demo", "aud": "demo-api", "sub": "user-42", "iat": now,
              "exp": now + lifetime, **extra}
    return signing.sign(claims)


def port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True)
    args = ap.parse_args()

    work = ROOT / ".cache" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_cert(work)

    alice = keygen("alice")
    stranger = keygen("stranger")  # well-formed, never configured
    revoked = keygen("mallory")
    expired = keygen("old-batch-job", "2020-01-01T00:00:00Z")
    revoked["entry"]["revoked"] = True
    # A key on a small plan, to see the rate limit.
    metered = keygen("metered")
    metered["entry"]["plan"] = "demo"
    # A fresh P-256 key: it signs the demo tokens, its public JWK goes inline.
    signing = ec_key("demo-1")
    public_jwk = {**signing.jwk, "alg": "ES256"}
    plugin = {
        "credentials": "api_key",
        "api_keys": {"header": "x-api-key",
                     "keys": [alice["entry"], revoked["entry"], expired["entry"], metered["entry"]]},
        "rate_limits": {"plans": {"demo": {"rate": 3, "per": "minute", "burst": 3}}},
        "https": {"required": True, "hsts_max_age_seconds": 31536000},
        "exempt_paths": ["/healthz"],
        "report_only": False,
        "jwt": {"providers": [{"issuer": "https://idp.demo", "audiences": ["demo-api"],
                               "jwks": {"keys": [public_jwk]}, "max_lifetime_seconds": 3600}]},
        # /me takes a JWT access token instead of an API key.
        "routes": [{"prefix": "/me", "credentials": "jwt"}],
    }

    upstream = EchoUpstream().start()
    ports = {"HTTPS_PORT": port_or_free(10443), "HTTP_PORT": port_or_free(10080),
             "ADMIN_PORT": port_or_free(9901)}
    rendered = Template((ROOT / "envoy" / "envoy.yaml").read_text()).substitute(
        **{k: str(v) for k, v in ports.items()},
        UPSTREAM_PORT=str(upstream.port), CERT=cert, KEY=key, WASM=args.wasm,
        PLUGIN_CONFIG=json.dumps(plugin).replace("'", "''"))
    config_path = work / "envoy.yaml"
    config_path.write_text(rendered)

    envoy = subprocess.Popen([args.envoy, "-c", str(config_path), "--concurrency", "2",
                              "--disable-hot-restart", "-l", "warn"])

    def ready():
        if envoy.poll() is not None:
            raise RuntimeError(f"envoy exited with {envoy.returncode}")
        with socket.create_connection(("127.0.0.1", ports["HTTPS_PORT"]), timeout=0.5):
            return True

    try:
        wait_until(ready, 30, "envoy")
    except Exception as e:  # noqa: BLE001
        print(f"demo failed to start: {e}", file=sys.stderr)
        envoy.kill()
        return 1

    base = f"https://127.0.0.1:{ports['HTTPS_PORT']}"
    q = shlex.quote
    lines = [
        ("allowed (200; the upstream echoes x-apiguard-consumer: alice, and no x-api-key)",
         f"curl -sk -i {base}/hello -H {q('x-api-key: ' + alice['key'])}"),
        ("exempt health check (200, no key)", f"curl -sk -i {base}/healthz"),
        ("missing key (401 missing_credential)", f"curl -sk -i {base}/hello"),
        ("mistyped key (401 malformed_api_key)",
         f"curl -sk -i {base}/hello -H {q('x-api-key: ' + alice['key'][:-1] + ('A' if alice['key'][-1] != 'A' else 'B'))}"),
        ("unknown key (401 unknown_api_key)", f"curl -sk -i {base}/hello -H {q('x-api-key: ' + stranger['key'])}"),
        ("revoked key (401 revoked_api_key)", f"curl -sk -i {base}/hello -H {q('x-api-key: ' + revoked['key'])}"),
        ("expired key (401 expired_api_key)", f"curl -sk -i {base}/hello -H {q('x-api-key: ' + expired['key'])}"),
        ("key in the query string (400 credential_in_query)", f"curl -sk -i {q(base + '/hello?api_key=' + alice['key'])}"),
        ("key sent twice (400 multiple_credentials)",
         f"curl -sk -i {base}/hello -H {q('x-api-key: ' + alice['key'])} -H {q('x-api-key: ' + stranger['key'])}"),
        ("JWT access token on /me (200; the upstream sees x-apiguard-subject: user-42; valid for one hour)",
         f"curl -sk -i {base}/me -H {q('authorization: Bearer ' + token(signing, 3600))}"),
        ("token that lives too long (401 token_lifetime_too_long)",
         f"curl -sk -i {base}/me -H {q('authorization: Bearer ' + token(signing, 86400))}"),
        ("refresh token used as an access token (401 refresh_token_not_allowed)",
         f"curl -sk -i {base}/me -H {q('authorization: Bearer ' + token(signing, 3600, token_use='refresh'))}"),
        ("no token on /me (401, WWW-Authenticate: Bearer)", f"curl -sk -i {base}/me"),
        ("a key on a plan of 3 requests a minute: the fourth in a row is 429 rate_limited "
         "(Retry-After, RateLimit-Policy, RateLimit)",
         f"for i in 1 2 3 4; do curl -sk -o /dev/null -D - {base}/hello -H {q('x-api-key: ' + metered['key'])} "
         "| grep -Ei '^(HTTP|retry-after|ratelimit)'; done"),
        ("plain HTTP (403 https_required)",
         f"curl -s -i http://127.0.0.1:{ports['HTTP_PORT']}/hello -H {q('x-api-key: ' + alice['key'])}"),
    ]
    print(f"\napiguard demo: Envoy {base} (HTTPS, self-signed) and http://127.0.0.1:{ports['HTTP_PORT']} "
          f"(plain), admin http://127.0.0.1:{ports['ADMIN_PORT']}, upstream 127.0.0.1:{upstream.port}\n")
    for what, line in lines:
        print(f"# {what}\n{line}\n")
    print("Ctrl-C stops the demo.", flush=True)

    stop = lambda *_: envoy.terminate()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    try:
        envoy.wait()
    except KeyboardInterrupt:
        envoy.terminate()
        envoy.wait()
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers for the JWT end-to-end tests (test_jwt.py, test_jwt_remote.py), whose signing keys also
sign the demo's and the benchmark's tokens: signing keys made at run time, their public JWKs,
tokens signed with PyJWT or hand-crafted (for the attacks PyJWT refuses to produce), and the checks
specific to JWT refusals. Responses and the general problem+json /
challenge checks are in support.problems, Envoys in support.guards and conftest.py (`new_guard`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
import uuid
from dataclasses import dataclass

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from support.harness import Envoy
from support.problems import Response, assert_challenges, assert_problem

ISSUER = "https://idp.apiguard.test/"
AUDIENCE = "orders-api"
REALM = "apiguard"
MISSING_CHALLENGE = f'Bearer realm="{REALM}"'


# ------------------------------------------------------------------------------ encoding

def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_json(obj) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def _int_b64u(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


# ------------------------------------------------------------------------------ keys

@dataclass
class SigningKey:
    """A private key for signing and the public JWK the plugin is given."""
    kid: str
    alg: str
    private: object          # what PyJWT signs with
    jwk: dict                # public JWK (no private members)
    public_pem: bytes | None = None

    def sign(self, claims: dict, *, alg: str | None = None, headers: dict | None = None,
             kid: str | None | bool = True) -> str:
        hdr = dict(headers or {})
        if kid is True:
            hdr["kid"] = self.kid
        elif isinstance(kid, str):
            hdr["kid"] = kid
        return pyjwt.encode(claims, self.private, algorithm=alg or self.alg, headers=hdr or None)


# JWK crv -> (cryptography curve, coordinate bytes, JWS alg) (RFC 7518 sections 3.4 and 6.2.1.2).
EC_CURVES = {
    "P-256": (ec.SECP256R1, 32, "ES256"),
    "P-384": (ec.SECP384R1, 48, "ES384"),
    "P-521": (ec.SECP521R1, 66, "ES512"),
}


def ec_key(kid: str, curve: str = "P-256") -> SigningKey:
    """An EC key on `curve` ("P-256", "P-384" or "P-521"); signs with its ES algorithm."""
    cls, size, alg = EC_CURVES[curve]
    priv = ec.generate_private_key(cls())
    nums = priv.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": curve, "kid": kid, "use": "sig",
           "x": b64u(nums.x.to_bytes(size, "big")), "y": b64u(nums.y.to_bytes(size, "big"))}
    return SigningKey(kid, alg, priv, jwk)


def rsa_key(kid: str, alg: str = "RS256") -> SigningKey:
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = priv.public_key()
    nums = pub.public_numbers()
    jwk = {"kty": "RSA", "kid": kid, "n": _int_b64u(nums.n), "e": _int_b64u(nums.e)}
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(kid, alg, priv, jwk, pem)


def ed25519_key(kid: str) -> SigningKey:
    priv = ed25519.Ed25519PrivateKey.generate()
    raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64u(raw)}
    return SigningKey(kid, "EdDSA", priv, jwk)


def hmac_key(kid: str, size: int = 32) -> SigningKey:
    secret = os.urandom(size)
    jwk = {"kty": "oct", "kid": kid, "k": b64u(secret)}
    return SigningKey(kid, "HS256", secret, jwk)


def jwks(*keys: SigningKey) -> dict:
    return {"keys": [k.jwk for k in keys]}


# ------------------------------------------------------------------------------ tokens

def claims(sub: str = "user-1", *, lifetime: int = 600, **extra) -> dict:
    """Good access-token claims for ISSUER/AUDIENCE; `extra` overrides (None removes a claim)."""
    now = int(time.time())
    out = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + lifetime,
           "jti": uuid.uuid4().hex}
    for name, value in extra.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def craft(header: dict, payload: dict, signature: bytes = b"") -> str:
    """A token assembled by hand (alg none, crit, …): no library checks anything."""
    return f"{b64u_json(header)}.{b64u_json(payload)}.{b64u(signature)}"


def hs256_with_secret(header: dict, payload: dict, secret: bytes) -> str:
    signing_input = f"{b64u_json(header)}.{b64u_json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(mac)}"


def flip_signature_bit(token: str) -> str:
    """The token with one bit of its signature flipped (the encoding stays canonical base64url)."""
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    flipped = f"{head}.{body}.{b64u(bytes(raw))}"
    assert flipped != token
    return flipped


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------ assertions

_DESCRIPTION_OK = re.compile(r'[\x20-\x7e]+')


def token_secrets(token: str) -> tuple[str, ...]:
    """The token and, when it has them, its segments long enough to identify it."""
    parts = [p for p in token.split(".") if len(p) >= 16]
    return (token, *parts)


def assert_token_refused(resp: Response, code: str, token: str, *, other_challenges=()) -> dict:
    """401 `code`, problem+json, RFC 6750 §3.1 challenge whose description is the detail."""
    doc = assert_problem(resp, 401, code, secrets=token_secrets(token))
    detail = doc.get("detail")
    assert isinstance(detail, str) and detail, doc
    assert _DESCRIPTION_OK.fullmatch(detail) and '"' not in detail and "\\" not in detail, detail
    expected = f'Bearer realm="{REALM}", error="invalid_token", error_description="{detail}"'
    assert_challenges(resp, [expected, *other_challenges])
    return doc


# ------------------------------------------------------------------------------ Envoy log

LOG_THREAD = re.compile(r"^\[[^\]]+\]\[(\d+)\]")


def log_lines(envoy: Envoy, needle: str) -> list[str]:
    return [line for line in envoy.log().splitlines() if needle in line]


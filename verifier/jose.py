"""Compact JWS with ES256 (RFC 7515, RFC 7518 3.4), the JWKs that verify them (RFC 7517)
and their thumbprints (RFC 7638): what signed results and asset tags are made of.

Only ES256 is signed or accepted: an `alg` header is read, never obeyed (`none`, HS256
with a public key as secret, or any other algorithm is refused before a signature is
checked).  The kid is the key's RFC 7638 thumbprint, so a verifier that holds a JWKS
picks the one key a token names.  Pure: no I/O; keys are handed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from lightgate.errors import Refusal

ALG: Final = "ES256"
_ECDSA: Final = ec.ECDSA(hashes.SHA256())
_COORDINATE: Final = 32
#: A token larger than this is refused unread (a result is about 1 KB).
MAX_TOKEN_BYTES: Final = 64 * 1024


class JwsInvalid(Refusal):
    """A token that is malformed, signed with another algorithm or key, or forged."""

    check = "signature"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A P-256 private key and its kid (RFC 7638 thumbprint)."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.of(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def of(cls, private_key: ec.EllipticCurvePrivateKey) -> SigningKey:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise JwsInvalid(f"ES256 needs a P-256 key, not {private_key.curve.name}")
        return cls(thumbprint(private_key.public_key()), private_key)

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise JwsInvalid(f"not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise JwsInvalid(f"ES256 needs an EC P-256 key, not {type(key).__name__}")
        return cls.of(key)

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or any(c in text for c in "=+/ \n"):
        raise JwsInvalid("not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwsInvalid("not base64url") from None


def _coordinates(key: ec.EllipticCurvePublicKey) -> tuple[str, str]:
    numbers = key.public_numbers()
    return (
        b64url(numbers.x.to_bytes(_COORDINATE, "big")),
        b64url(numbers.y.to_bytes(_COORDINATE, "big")),
    )


def thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no spaces."""
    x, y = _coordinates(key)
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


def jwk_of(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    x, y = _coordinates(key)
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": thumbprint(key),
        "alg": ALG,
        "use": "sig",
    }


def jwks_document(keys: list[ec.EllipticCurvePublicKey]) -> dict[str, list[dict[str, str]]]:
    return {"keys": [jwk_of(key) for key in keys]}


def public_key_of(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey:
    """The P-256 key of one JWK; anything else is refused."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise JwsInvalid(f"JWK {jwk.get('kid')!r} is not an EC P-256 key")
    if jwk.get("alg", ALG) != ALG:
        raise JwsInvalid(f"JWK {jwk.get('kid')!r} is for {jwk.get('alg')!r}, not {ALG}")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise JwsInvalid(f"JWK {jwk.get('kid')!r} lacks x or y")
    xb, yb = b64url_decode(x), b64url_decode(y)
    if len(xb) != _COORDINATE or len(yb) != _COORDINATE:
        raise JwsInvalid(f"JWK {jwk.get('kid')!r}: coordinates must be 32 bytes")
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(xb, "big"), int.from_bytes(yb, "big"), ec.SECP256R1()
        )
        return numbers.public_key()
    except ValueError:
        raise JwsInvalid(f"JWK {jwk.get('kid')!r} is not a point on P-256") from None


def keys_of_jwks(document: object) -> dict[str, ec.EllipticCurvePublicKey]:
    """kid → key for every usable key of a JWKS document (RFC 7517, 5); the kid is
    recomputed from the key, so a JWKS cannot bind a key to another key's name."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwsInvalid('a JWKS is an object with a "keys" list')
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "EC" or jwk.get("use", "sig") != "sig":
            continue  # RFC 7517, 5: members of other kinds are ignored, not fatal
        key = public_key_of(jwk)
        kid = thumbprint(key)
        if jwk.get("kid", kid) != kid:
            raise JwsInvalid(f"JWK kid {jwk.get('kid')!r} is not its key's thumbprint {kid}")
        keys[kid] = key
    if not keys:
        raise JwsInvalid("the JWKS holds no EC P-256 signing key")
    return keys


def sign_jws(payload: bytes, key: SigningKey, typ: str) -> str:
    """A compact JWS over `payload` with header {alg: ES256, kid, typ}."""
    header = json.dumps({"alg": ALG, "kid": key.kid, "typ": typ}, separators=(",", ":"))
    signing_input = f"{b64url(header.encode())}.{b64url(payload)}"
    der = key.private_key.sign(signing_input.encode("ascii"), _ECDSA)
    r, s = decode_dss_signature(der)
    # RFC 7518, 3.4: R || S, each 32 bytes big-endian, never DER.
    raw = r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")
    return f"{signing_input}.{b64url(raw)}"


@dataclass(frozen=True, slots=True)
class VerifiedJws:
    header: Mapping[str, object]
    payload: bytes
    kid: str


def verify_jws(
    token: str, keys: Mapping[str, ec.EllipticCurvePublicKey], typ: str | None = None
) -> VerifiedJws:
    """Check a compact JWS against the keys by kid; returns the verified payload.
    Raises JwsInvalid for anything else: bad shape, another alg, an unknown kid, a
    wrong `typ`, a signature that does not verify."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise JwsInvalid(f"a token is a string of at most {MAX_TOKEN_BYTES} bytes")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwsInvalid(f"a compact JWS has 3 parts, this has {len(parts)}")
    header_part, payload_part, signature_part = parts
    header = _json_object(b64url_decode(header_part), "header")
    if header.get("alg") != ALG:
        raise JwsInvalid(f"alg {header.get('alg')!r} is not accepted; only {ALG}")
    if "crit" in header:
        raise JwsInvalid("critical header parameters are not understood")  # RFC 7515, 4.1.11
    if typ is not None and header.get("typ") != typ:
        raise JwsInvalid(f"typ {header.get('typ')!r} is not {typ!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        known = ", ".join(sorted(keys)) or "none"
        raise JwsInvalid(f"signed by key {kid!r}, which is not trusted (trusted: {known})")
    raw = b64url_decode(signature_part)
    if len(raw) != 2 * _COORDINATE:
        raise JwsInvalid(f"an ES256 signature is 64 bytes, this is {len(raw)}")
    der = encode_dss_signature(
        int.from_bytes(raw[:_COORDINATE], "big"), int.from_bytes(raw[_COORDINATE:], "big")
    )
    try:
        keys[kid].verify(der, f"{header_part}.{payload_part}".encode("ascii"), _ECDSA)
    except InvalidSignature:
        raise JwsInvalid(f"the signature does not verify under key {kid}") from None
    return VerifiedJws(header, b64url_decode(payload_part), kid)


def _json_object(data: bytes, what: str) -> dict[str, object]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise JwsInvalid(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise JwsInvalid(f"the {what} is not a JSON object")
    return value

"""COSE keys and algorithms for signed CoRIMs: which keys, which algorithms, and signatures.

The algorithms are ES256 (-7), ES384 (-35) and EdDSA (-8) over Ed25519 (RFC 9053, 2.1 and
2.2; labels from the IANA "COSE Algorithms" registry); `Alg.matches` pins each to its one
curve, so a key decides its algorithm and an algorithm the keys that may verify it.  Keys
load from PEM (`load_signing_key`, `load_trusted_key`) and are named by `key_id_of`, the
kid (RFC 9052, 3.1) Lightgate puts in a protected header.  `sign` and `verifies` work on
the bytes to be signed (the Sig_structure of RFC 9052, 4.4, which the caller builds) and
carry an ECDSA signature as r || s, each of the curve's size, never DER (RFC 9053, 2.1).

Refusals are CoseKeyInvalid; `corim` reports them as its own.  Pure: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from lightgate.errors import Refusal

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
TrustedKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class CoseKeyInvalid(Refusal):
    """A key (or a key with an algorithm) that Lightgate does not sign or verify with."""

    check = "cose-key"


@dataclass(frozen=True, slots=True)
class Alg:
    cose: int
    name: str
    curve: str | None  # None: EdDSA over Ed25519
    ecdsa: ec.ECDSA | None
    size: int  # bytes of r and of s

    def matches(self, key: object) -> bool:
        if isinstance(key, ed25519.Ed25519PublicKey):
            return self.curve is None
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == self.curve


_ES256: Final = Alg(-7, "ES256", "secp256r1", ec.ECDSA(hashes.SHA256()), 32)
_ES384: Final = Alg(-35, "ES384", "secp384r1", ec.ECDSA(hashes.SHA384()), 48)
_EDDSA: Final = Alg(-8, "EdDSA", None, None, 32)
ALGS: Final = {alg.cose: alg for alg in (_ES256, _ES384, _EDDSA)}


def alg_for(key: object) -> Alg:
    """The algorithm Lightgate uses with a public key."""
    for alg in ALGS.values():
        if alg.matches(key):
            return alg
    raise CoseKeyInvalid(f"unsupported key: {_describe_key(key)} (P-256, P-384 or Ed25519)")


def key_id_of(key: TrustedKey) -> bytes:
    """The kid Lightgate uses for a key: SHA-256 of its DER SubjectPublicKeyInfo."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def load_signing_key(pem: bytes) -> SigningKey:
    """A PEM private key (unencrypted): P-256, P-384 or Ed25519."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CoseKeyInvalid(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise CoseKeyInvalid(f"unsupported key: {_describe_key(key)} (P-256, P-384 or Ed25519)")
    alg_for(key.public_key())
    return key


def load_trusted_key(pem: bytes) -> TrustedKey:
    """A PEM public key, or the key of a PEM X.509 certificate: P-256, P-384 or Ed25519.

    A private key is refused: a verifier's trust list holds no signing material."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: object = x509.load_pem_x509_certificate(pem).public_key()
        elif b"PRIVATE KEY-----" in pem:
            raise CoseKeyInvalid(
                "a trusted key is a public key or a certificate, not a private key"
            )
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CoseKeyInvalid(f"not a PEM public key or certificate: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise CoseKeyInvalid(f"unsupported key: {_describe_key(key)} (P-256, P-384 or Ed25519)")
    alg_for(key)
    return key


def _describe_key(key: object) -> str:
    curve = getattr(key, "curve", None)
    return f"{type(key).__name__} {curve.name}" if curve is not None else type(key).__name__


def sign(key: SigningKey, alg: Alg, to_be_signed: bytes) -> bytes:
    """The COSE signature of `to_be_signed`: Ed25519's own, or ECDSA as r || s."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(to_be_signed)
    if alg.ecdsa is None:
        raise CoseKeyInvalid(f"{alg.name} is not an ECDSA algorithm")
    return _raw_signature(key.sign(to_be_signed, alg.ecdsa), alg.size)


def verifies(key: TrustedKey, alg: Alg, to_be_signed: bytes, signature: bytes) -> bool:
    """Whether `signature` is `key`'s COSE signature of `to_be_signed` under `alg`."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, to_be_signed)
            return True
        # RFC 9053, 2.1: r and s, each of the curve's size; not DER.
        if len(signature) != 2 * alg.size or alg.ecdsa is None:
            return False
        key.verify(_der_signature(signature, alg.size), to_be_signed, alg.ecdsa)
    except InvalidSignature:
        return False
    return True


def _raw_signature(der: bytes, size: int) -> bytes:
    """A DER ECDSA signature (what `cryptography` makes) as COSE's r || s (RFC 9053, 2.1)."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _der_signature(raw: bytes, size: int) -> bytes:
    """COSE's r || s, `size` bytes each (RFC 9053, 2.1), as the DER `cryptography` checks."""
    r = int.from_bytes(raw[:size], "big")
    s = int.from_bytes(raw[size:], "big")
    return encode_dss_signature(r, s)

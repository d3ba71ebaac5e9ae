"""Deterministic X.509 certificates for the fixtures' Secure Boot databases.

A certificate named in a boot description must be real, parseable DER (the verifier's
claims read PK, KEK, db and shim's certificates as a real log's), yet every build must
give the same bytes.  So everything is derived from the certificate's name:

- the Ed25519 private key's seed is sha256(b"lightgate-fixture:" + name);
- the serial number is a hash of the name; validity is fixed (2024-01-01 .. 2049-12-31);
- the subject is CN=name, the issuer CN=<issuer's name>, signed with the issuer's key
  (derived the same way), or self-signed when there is no issuer.

Ed25519 signatures are deterministic (RFC 8032, 5.1.6), so the DER is stable.  These keys
are public by construction: the certificates prove nothing and exist only to be parsed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

KEY_SEED_PREFIX: Final = b"lightgate-fixture:"
_SERIAL_PREFIX: Final = b"lightgate-fixture-serial:"
NOT_BEFORE: Final = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER: Final = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)  # UTCTime ends in 2049


def fixture_key(name: str) -> Ed25519PrivateKey:
    """The private key of the fixture certificate `name` (public to anyone who reads this)."""
    seed = hashlib.sha256(KEY_SEED_PREFIX + name.encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def fixture_serial(name: str) -> int:
    """A positive serial number of at most 128 bits (RFC 5280, 4.1.2.2)."""
    digest = hashlib.sha256(_SERIAL_PREFIX + name.encode()).digest()
    return int.from_bytes(digest[:16], "big") >> 1 | 1


def fixture_certificate(name: str, issuer: str | None = None) -> bytes:
    """DER of the CA certificate CN=name, issued by CN=issuer (self-signed when None)."""
    key = fixture_key(name)
    signer = fixture_key(issuer) if issuer is not None else key
    issuer_name = issuer if issuer is not None else name
    builder = (
        x509.CertificateBuilder()
        .subject_name(_common_name(name))
        .issuer_name(_common_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(fixture_serial(name))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    # Ed25519 takes no separate hash algorithm (RFC 8410).
    certificate = builder.sign(signer, None)
    return certificate.public_bytes(serialization.Encoding.DER)


def _common_name(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )

"""Who signs the credentials the gate issues: the interfaces, and the built-in issuers.

The credential gate (`gate.py`) decides *whether* a node gets a certificate or a token;
an issuer only makes it.  Both sit behind a small interface so an external CA (an
enterprise PKI, Vault, step-ca) or identity provider can replace the built-in ones:

- `CertificateAuthority.issue(order)` makes a certificate for exactly what the order
  says (key, subject, SAN, lifetime, the attestation extension) and returns its DER;
  `crl(revoked, now)` makes the CRL for the revoked serials; `chain` is the issuing
  chain (DER, issuer first).  An external CA must honour `not_after` (the gate never asks
  beyond the node's trust) and the serial it is given (the gate records it to revoke).
- `TokenIssuer.issue(claims)` signs a JWT access token with exactly those claims;
  `jwks()` publishes the keys it signs with; `issuer` is its `iss`.

The built-in CA is one P-256 key and a self-signed certificate, created once per
deployment and shared by replicas through the store (as a verifier secret); the
built-in token issuer signs with the verifier's result-signing keys (the JWKS already
published), with `typ: at+jwt` (RFC 9068) so a token is never mistaken for an EAR.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lightgate.config import AdmissionConfig
from verifier.jose import SigningKey, sign_jws

#: The attestation extension: which attestation result vouched for the node when the
#: certificate was issued.  An OID under 2.25 (ITU-T X.667: a UUID as an integer), so it
#: needs no registration: 2.25.<UUID 6f1c2a4e-5b0d-4c8e-9a57-3d2f8e41b6c9>.
ATTESTATION_EXTENSION_OID: Final = x509.ObjectIdentifier(
    "2.25.147690549913343880008506748741611534025"
)
CA_SECRET: Final = "credential-ca-p256"  # noqa: S105 (the name of a stored secret)
CA_LIFETIME: Final = timedelta(days=3650)
CRL_LIFETIME: Final = timedelta(minutes=10)
_BACKDATE: Final = timedelta(minutes=1)  # clock skew between the verifier and relying parties

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True)
class CertificateOrder:
    """What the gate decided a certificate must say."""

    serial: int
    node_id: str
    public_key: PublicKey
    not_before: datetime
    not_after: datetime
    ear_digest: bytes  # SHA-256 of the EAR JWT that vouched for the node
    trust_status: str  # its ear.status (affirming)
    crl_url: str | None = None


class CertificateAuthority(Protocol):
    @property
    def chain(self) -> tuple[bytes, ...]: ...

    def issue(self, order: CertificateOrder) -> bytes: ...

    def crl(self, revoked: Sequence[tuple[int, datetime]], now: datetime) -> bytes: ...


class TokenIssuer(Protocol):
    @property
    def issuer(self) -> str: ...

    def issue(self, claims: Mapping[str, object]) -> str: ...

    def jwks(self) -> Mapping[str, object]: ...


# --- the attestation extension ---------------------------------------------------------


def attestation_extension(ear_digest: bytes, status: str) -> bytes:
    """DER of `LightgateAttestation ::= SEQUENCE { earDigest OCTET STRING (SHA-256 of
    the EAR JWT), status UTF8String (ear.status) }`."""
    return _der(0x30, _der(0x04, ear_digest) + _der(0x0C, status.encode()))


def read_attestation_extension(value: bytes) -> tuple[bytes, str]:
    """(ear digest, status) from the extension's DER; ValueError when malformed."""
    tag, body, rest = _tlv(value)
    if tag != 0x30 or rest:
        raise ValueError("not a SEQUENCE")
    tag, digest, body = _tlv(body)
    if tag != 0x04:
        raise ValueError("earDigest is not an OCTET STRING")
    tag, status, body = _tlv(body)
    if tag != 0x0C or body:
        raise ValueError("status is not a UTF8String")
    return digest, status.decode()


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _tlv(data: bytes) -> tuple[int, bytes, bytes]:
    if len(data) < 2:
        raise ValueError("truncated")
    tag, first = data[0], data[1]
    offset = 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if not 0 < count <= 4 or len(data) < 2 + count:
            raise ValueError("bad length")
        size = int.from_bytes(data[2 : 2 + count], "big")
        offset += count
    if len(data) < offset + size:
        raise ValueError("truncated")
    return tag, data[offset : offset + size], data[offset + size :]


# --- the built-in CA -------------------------------------------------------------------


class LocalCertificateAuthority:
    """A P-256 CA key and its self-signed certificate."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self._certificate = certificate
        self._chain = (certificate.public_bytes(serialization.Encoding.DER),)

    @classmethod
    def shared(
        cls,
        secret: Callable[[str, Callable[[], bytes]], bytes],
        common_name: str,
        now: datetime,
    ) -> LocalCertificateAuthority:
        """The deployment's CA: made by whichever replica asks first (`secret` is the
        store's shared secret), the same for every replica."""

        def make() -> bytes:
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = _self_signed(key, common_name, now)
            return json.dumps(
                {
                    "key": key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                    "certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
                }
            ).encode()

        document = json.loads(secret(CA_SECRET, make))
        key = serialization.load_pem_private_key(document["key"].encode(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the stored CA key is not an EC key")
        certificate = x509.load_pem_x509_certificate(document["certificate"].encode())
        return cls(key, certificate)

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def chain(self) -> tuple[bytes, ...]:
        return self._chain

    def issue(self, order: CertificateOrder) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, order.node_id)])
        # Only the node URI: a node chooses its own id at enrollment, so a DNS name (or
        # server authentication) in its certificate would let it claim any host.
        alternatives: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(node_uri(order.node_id))
        ]
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self._certificate.subject)
            .public_key(order.public_key)
            .serial_number(order.serial)
            .not_valid_before(order.not_before)
            .not_valid_after(order.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(order.public_key), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.UnrecognizedExtension(
                    ATTESTATION_EXTENSION_OID,
                    attestation_extension(order.ear_digest, order.trust_status),
                ),
                critical=False,
            )
        )
        if order.crl_url:
            point = x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(order.crl_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.DER)

    def crl(self, revoked: Sequence[tuple[int, datetime]], now: datetime) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._certificate.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + CRL_LIFETIME)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        )
        for serial, at in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(at)
                .add_extension(
                    # The node lost the trust the certificate stood for.
                    x509.CRLReason(x509.ReasonFlags.privilege_withdrawn),
                    critical=False,
                )
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.DER)


def _self_signed(
    key: ec.EllipticCurvePrivateKey, common_name: str, now: datetime
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def new_serial() -> int:
    """A positive 159-bit serial (RFC 5280 4.1.2.2: at most 20 octets), from the OS's
    random source, so serials are unpredictable."""
    return int.from_bytes(os.urandom(20), "big") >> 1 or 1


def node_uri(node_id: str) -> str:
    """The SAN URI that names a node (RFC 8141 URN syntax; node ids are URN-safe)."""
    return f"urn:lightgate:node:{node_id}"


# --- token audiences ------------------------------------------------------------------


def audience_refusal(audience: Sequence[str], allowed: Collection[str]) -> str | None:
    """Why a token may not be issued for `audience` (the `aud` a node asks for), or None
    when it may: at least one audience, each 1-512 characters and one of `allowed`
    (`AdmissionConfig.token_audiences`), compared exactly.  Nothing is allowed when
    `allowed` is empty, and "*" is an audience like any other: a token a relying party
    did not ask for must not be usable there (RFC 9068, section 4; RFC 8707)."""
    if not audience:
        return "a token needs an audience"
    limit = AdmissionConfig.MAX_AUDIENCE_CHARS
    for entry in audience:
        if not 0 < len(entry) <= limit:
            return f"a token audience must be 1-{limit} characters, not {len(entry)}"
    unknown = sorted(set(audience) - set(allowed))
    if not unknown:
        return None
    named = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    return f"no token is issued for audience {named}" + (
        "" if allowed else " (admission.token_audiences lists none)"
    )


# --- the built-in token issuer --------------------------------------------------------


class LocalTokenIssuer:
    """Signs access tokens with the verifier's active result-signing key."""

    def __init__(
        self,
        issuer: Callable[[], str],
        active_key: Callable[[], SigningKey],
        jwks: Callable[[], Mapping[str, object]],
    ) -> None:
        self._issuer = issuer  # called: the HTTPS listener's URL is known once it binds
        self._active_key = active_key
        self._jwks = jwks

    @property
    def issuer(self) -> str:
        return self._issuer()

    def issue(self, claims: Mapping[str, object]) -> str:
        payload = json.dumps(dict(claims), separators=(",", ":"), sort_keys=True).encode()
        return sign_jws(payload, self._active_key(), "at+jwt")

    def jwks(self) -> Mapping[str, object]:
        return self._jwks()


def openid_configuration(issuer: str) -> dict[str, object]:
    """The discovery document (OpenID Connect Discovery 1.0, section 3) of the built-in
    issuer: where its keys are and what it signs with."""
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "cnf"],
    }

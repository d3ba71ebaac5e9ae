"""Enrollment checks: EK certificate chain, EK/certificate match, allow-list, AK attributes.

Pure functions over certificates and TPM public areas; the trust store is read once at
start-up by `TrustStore.from_dir` and passed in.  The enrollment flow that uses them
(with the store and MakeCredential) is `verifier.service.Verifier.enroll`.

EK certificates are not web PKI certificates (no SAN host names, often a critical SAN
naming the TPM vendor, RSA-PSS or long validity), so the chain is built here rather than
with a TLS path validator: issuer name match, signature, validity, and CA constraints on
every issuer, up to a self-signed root the operator put in the trust store.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lightgate.config import EnrollmentConfig
from verifier.errors import (
    AkInvalid,
    EkCertificateMalformed,
    EkCertificateUntrusted,
    EkNotAllowed,
    EkPublicMismatch,
)
from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.keys import ak_problems, public_key, spki_der
from verifier.evidence.tpm_public import PublicArea
from verifier.store.records import NodeRecord

MAX_CHAIN_DEPTH = 8


@dataclass(frozen=True)
class TrustStore:
    """Roots (self-signed) and intermediates the operator trusts for EK certificates."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    _by_subject: dict[bytes, list[x509.Certificate]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_certificates(cls, certificates: list[x509.Certificate]) -> TrustStore:
        roots = tuple(c for c in certificates if c.issuer == c.subject)
        intermediates = tuple(c for c in certificates if c.issuer != c.subject)
        return cls(roots, intermediates)

    @classmethod
    def from_dir(cls, directory: Path) -> TrustStore:
        """Every PEM or DER certificate in `directory` (*.pem, *.crt, *.cer, *.der)."""
        certificates: list[x509.Certificate] = []
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() not in (".pem", ".crt", ".cer", ".der"):
                continue
            blob = path.read_bytes()
            try:
                if b"-----BEGIN CERTIFICATE-----" in blob:
                    certificates.extend(x509.load_pem_x509_certificates(blob))
                else:
                    certificates.append(x509.load_der_x509_certificate(blob))
            except ValueError as exc:
                raise ValueError(f"trust store {path}: {exc}") from None
        return cls.from_certificates(certificates)


def load_ek_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise EkCertificateMalformed(f"cannot parse EK certificate: {exc}") from None


def verify_ek_chain(
    leaf: x509.Certificate,
    presented_intermediates: list[x509.Certificate],
    trust: TrustStore,
    now: datetime,
) -> list[x509.Certificate]:
    """The path from `leaf` to a trusted root, or EkCertificateUntrusted saying why not."""
    if not trust.roots:
        raise EkCertificateUntrusted("the trust store has no root certificates")
    roots = _index(trust.roots)
    intermediates = _index([*trust.intermediates, *presented_intermediates])
    path = [leaf]
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH):
        _check_validity(current, now)
        for root in roots.get(current.issuer.public_bytes(), []):
            if _issued_by(current, root):
                _check_validity(root, now)
                return [*path, root]
        issuer = next(
            (
                c
                for c in intermediates.get(current.issuer.public_bytes(), [])
                if c not in path and _issued_by(current, c) and _is_ca(c)
            ),
            None,
        )
        if issuer is None:
            raise EkCertificateUntrusted(
                f"no trusted issuer for {current.subject.rfc4514_string() or '(empty subject)'} "
                f"(issuer {current.issuer.rfc4514_string()})"
            )
        path.append(issuer)
        current = issuer
    raise EkCertificateUntrusted(f"chain longer than {MAX_CHAIN_DEPTH} certificates")


def _index(
    certificates: list[x509.Certificate] | tuple[x509.Certificate, ...],
) -> dict[bytes, list[x509.Certificate]]:
    index: dict[bytes, list[x509.Certificate]] = defaultdict(list)
    for certificate in certificates:
        index[certificate.subject.public_bytes()].append(certificate)
    return index


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        return False  # not provably a CA: it issues nothing we trust
    return constraints.value.ca


def _check_validity(certificate: x509.Certificate, now: datetime) -> None:
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise EkCertificateUntrusted(
            f"{certificate.subject.rfc4514_string() or 'EK certificate'} is valid from "
            f"{certificate.not_valid_before_utc.isoformat()} to "
            f"{certificate.not_valid_after_utc.isoformat()}, not at {now.isoformat()}"
        )


def check_ek_matches_certificate(ek: PublicArea, certificate: x509.Certificate) -> None:
    try:
        presented = spki_der(public_key(ek))
    except TpmStructureMalformed as exc:
        raise EkPublicMismatch(f"EK public area: {exc.message}") from None
    try:
        certified_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EkCertificateMalformed(f"the EK certificate's key cannot be read: {exc}") from None
    if not isinstance(certified_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise EkCertificateMalformed("the EK certificate's key is neither RSA nor ECC")
    certified = spki_der(certified_key)
    if presented != certified:
        raise EkPublicMismatch(
            f"EK public key {hashlib.sha256(presented).hexdigest()[:16]}… is not the certified "
            f"key {hashlib.sha256(certified).hexdigest()[:16]}…"
        )


def ek_fingerprint(ek: PublicArea) -> str:
    """SHA-256 of the EK's SubjectPublicKeyInfo: what allow-lists and the store use."""
    return hashlib.sha256(spki_der(public_key(ek))).hexdigest()


def check_allowlist(
    ek: PublicArea, certificate_der: bytes | None, config: EnrollmentConfig
) -> None:
    allowed = set(config.allowlist)
    candidates = {ek_fingerprint(ek)}
    if certificate_der:
        candidates.add(hashlib.sha256(certificate_der).hexdigest())
    if not candidates & allowed:
        raise EkNotAllowed(f"EK {ek_fingerprint(ek)} is not on the allow-list")


def check_ak(ak: PublicArea) -> None:
    problems = ak_problems(ak)
    if problems:
        raise AkInvalid("AK " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Endorsement:
    """What a node's enrollment proves of its TPM, for policy (`input.node.hardware`)."""

    ek_chain_verified: bool  # its EK certificate chains to a trusted root
    ek_pinned: bool  # its EK (or EK certificate) is on the allow-list


def endorsement_of(node: NodeRecord, trust: TrustStore, config: EnrollmentConfig) -> Endorsement:
    """The endorsement of an enrolled node, from the EK and certificate it enrolled with,
    against the trust store and allow-list in force.  The chain is checked as of the
    enrollment (a certificate valid then stays valid for the node's life, as TPM EK
    certificates often outlive their notAfter); any failure is simply False."""
    chained = False
    if node.ek_certificate:
        moment = node.enrolled_at or node.created_at
        try:
            verify_ek_chain(load_ek_certificate(node.ek_certificate), [], trust, moment)
            chained = True
        except (EkCertificateUntrusted, EkCertificateMalformed):
            chained = False
    allowed = set(config.allowlist)
    candidates = {node.ek_fingerprint}
    if node.ek_certificate:
        candidates.add(hashlib.sha256(node.ek_certificate).hexdigest())
    return Endorsement(ek_chain_verified=chained, ek_pinned=bool(candidates & allowed))

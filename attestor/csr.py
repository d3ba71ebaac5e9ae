"""A PKCS#10 certificate request (RFC 2986) for a TPM key, written in DER by hand.

The request the agent sends for its bound key always has one shape: subject CN = node
id, an extensionRequest with one URI subject alternative name, an ECDSA P-256 key,
signed with ECDSA-SHA256 by the TPM.  Encoding that shape is a few dozen lines; loading
pyca/cryptography's X.509 builder for it would cost the agent about 10 MB of memory on
every node.  The verifier parses the result with cryptography (`verify_csr`), which the
tests use as the reference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

from verifier.evidence.tpm_public import EccCurve, PublicArea
from verifier.evidence.tpm_structures import Alg

_OID_COMMON_NAME: Final = "2.5.4.3"
_OID_EC_PUBLIC_KEY: Final = "1.2.840.10045.2.1"
_OID_PRIME256V1: Final = "1.2.840.10045.3.1.7"
_OID_ECDSA_SHA256: Final = "1.2.840.10045.4.3.2"
_OID_EXTENSION_REQUEST: Final = "1.2.840.113549.1.9.14"
_OID_SUBJECT_ALT_NAME: Final = "2.5.29.17"


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    return bytes([tag]) + _length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        rest = arc >> 7
        chunk = [arc & 0x7F]
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def integer(value: bytes) -> bytes:
    """A non-negative INTEGER from big-endian magnitude bytes (minimal, sign-safe)."""
    stripped = value.lstrip(b"\x00") or b"\x00"
    if stripped[0] & 0x80:
        stripped = b"\x00" + stripped
    return tlv(0x02, stripped)


def ecdsa_signature_der(r: bytes, s: bytes) -> bytes:
    """ECDSA-Sig-Value (RFC 3279, 2.2.3): SEQUENCE { r INTEGER, s INTEGER }."""
    return sequence(integer(r), integer(s))


def p256_subject_public_key_info(public: PublicArea) -> bytes:
    """SubjectPublicKeyInfo of a TPM ECC NIST P-256 key (uncompressed point)."""
    if public.type != Alg.ECC or public.curve != EccCurve.NIST_P256:
        raise ValueError("the key is not an ECC NIST P-256 key")
    if len(public.x) > 32 or len(public.y) > 32:
        raise ValueError("the key's point does not fit P-256")
    point = b"\x04" + public.x.rjust(32, b"\x00") + public.y.rjust(32, b"\x00")
    algorithm = sequence(oid(_OID_EC_PUBLIC_KEY), oid(_OID_PRIME256V1))
    return sequence(algorithm, tlv(0x03, b"\x00" + point))


def certification_request_info(common_name: str, uri: str, public: PublicArea) -> bytes:
    """CertificationRequestInfo: version 0, the subject, the key, and an
    extensionRequest holding one non-critical URI subjectAltName."""
    subject = sequence(
        tlv(0x31, sequence(oid(_OID_COMMON_NAME), tlv(0x0C, common_name.encode("utf-8"))))
    )
    general_names = sequence(tlv(0x86, uri.encode("ascii")))
    extensions = sequence(sequence(oid(_OID_SUBJECT_ALT_NAME), tlv(0x04, general_names)))
    attributes = tlv(0xA0, sequence(oid(_OID_EXTENSION_REQUEST), tlv(0x31, extensions)))
    return sequence(integer(b"\x00"), subject, p256_subject_public_key_info(public), attributes)


def build_csr(
    common_name: str,
    uri: str,
    public: PublicArea,
    sign_digest: Callable[[bytes], tuple[bytes, bytes]],
) -> bytes:
    """The DER request, signed by `sign_digest(sha256(info)) -> (r, s)` (the TPM)."""
    info = certification_request_info(common_name, uri, public)
    r, s = sign_digest(hashlib.sha256(info).digest())
    signature = ecdsa_signature_der(r, s)
    return sequence(info, sequence(oid(_OID_ECDSA_SHA256)), tlv(0x03, b"\x00" + signature))

"""UEFI signature databases in measured-boot events: EFI_SIGNATURE_LIST and
EFI_SIGNATURE_DATA (UEFI 2.10, 32.4.1) and what an EV_EFI_VARIABLE_AUTHORITY names.

PK, KEK, db and dbx (and shim's MokList) are concatenations of EFI_SIGNATURE_LIST,
measured as EV_EFI_VARIABLE_DRIVER_CONFIG; the db (or MokList, vendor_db) entry that
authorised an image is measured as EV_EFI_VARIABLE_AUTHORITY (PFP 1.05, 3.3.4.8).  The
UEFI_VARIABLE_DATA around them, and which bytes their digests cover, are `event_data`'s.

The parsers keep `event_data`'s contract: they return frozen values or raise
`EventDataMalformed` naming the structure and the byte offset, nothing else; GUIDs are
mixed-endian (UEFI 2.10, Appendix A).  `parse_authority` never raises.  Certificates are
parsed only on request, and one that pyca/cryptography cannot read yields None.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from cryptography import x509

from verifier.evidence.event_data import UefiVariable
from verifier.evidence.uefi_device_path import LeReader

# --- EFI_SIGNATURE_LIST SignatureType GUIDs (UEFI 2.10, 32.4.1) ------------------------

EFI_CERT_SHA1_GUID = uuid.UUID("826ca512-cf10-4ac9-b187-be01496631bd")
EFI_CERT_SHA224_GUID = uuid.UUID("0b6e5233-a65c-44c9-9407-d9ab83bfc8bd")
EFI_CERT_SHA256_GUID = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")
EFI_CERT_SHA384_GUID = uuid.UUID("ff3e5307-9fd0-48c9-85f1-8ad56c701e01")
EFI_CERT_SHA512_GUID = uuid.UUID("093e0fae-a6c4-4f50-9f1b-d41e2b89c19a")
EFI_CERT_RSA2048_GUID = uuid.UUID("3c5766e8-269c-4e34-aa14-ed776e85b3b6")
EFI_CERT_RSA2048_SHA256_GUID = uuid.UUID("e2b36190-879b-4a3d-ad8d-f2e7bba32784")
EFI_CERT_RSA2048_SHA1_GUID = uuid.UUID("67f8444f-8743-48f1-a328-1eaab8736080")
EFI_CERT_X509_GUID = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_X509_SHA256_GUID = uuid.UUID("3bd2a492-96c0-4079-b420-fcf98ef103ed")
EFI_CERT_X509_SHA384_GUID = uuid.UUID("7076876e-80c2-4ee6-aad2-28b349a6865b")
EFI_CERT_X509_SHA512_GUID = uuid.UUID("446dbf63-2502-4cda-bcfa-2465d2b0fe9d")

SIGNATURE_TYPES: dict[uuid.UUID, str] = {
    EFI_CERT_X509_GUID: "x509",
    EFI_CERT_SHA1_GUID: "sha1",
    EFI_CERT_SHA224_GUID: "sha224",
    EFI_CERT_SHA256_GUID: "sha256",
    EFI_CERT_SHA384_GUID: "sha384",
    EFI_CERT_SHA512_GUID: "sha512",
    EFI_CERT_RSA2048_GUID: "rsa2048",
    EFI_CERT_RSA2048_SHA256_GUID: "rsa2048-sha256",
    EFI_CERT_RSA2048_SHA1_GUID: "rsa2048-sha1",
    EFI_CERT_X509_SHA256_GUID: "x509-sha256",
    EFI_CERT_X509_SHA384_GUID: "x509-sha384",
    EFI_CERT_X509_SHA512_GUID: "x509-sha512",
}
_HASH_TYPES = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})
# EFI_CERT_X509_SHA*: ToBeSignedHash then EFI_TIME TimeOfRevocation (UEFI 2.10, 32.4.1).
_TBS_HASH_SIZES = {"x509-sha256": 32, "x509-sha384": 48, "x509-sha512": 64}
# What pyca/cryptography raises on a malformed certificate or name (found by fuzzing it
# with mutated real certificates; InvalidVersion is no ValueError, bad names raise TypeError).
_CERTIFICATE_ERRORS = (ValueError, TypeError, x509.InvalidVersion)
_SIGNATURE_LIST_HEADER = 28  # SignatureType GUID + 3 x UINT32
_SIGNATURE_OWNER = 16


def signature_type_name(signature_type: uuid.UUID) -> str:
    """`x509`, `sha256`, ... for a known EFI_SIGNATURE_LIST type, else `unknown:<guid>`."""
    return SIGNATURE_TYPES.get(signature_type) or f"unknown:{signature_type}"


# --- EFI_SIGNATURE_LIST / EFI_SIGNATURE_DATA (UEFI 2.10, 32.4.1) ----------------------


@dataclass(frozen=True, slots=True)
class CertificateNames:
    """Subject and issuer of an X.509 certificate, as RFC 4514 strings."""

    subject: str
    issuer: str


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One signature-database entry: a DER certificate, a hash, or (`raw`) unrecognised bytes.

    `owner` is the SignatureOwner GUID, or None where the event carried no
    EFI_SIGNATURE_DATA around the value (shim's bare vendor certificate, `raw` entries).
    """

    signature_type: str
    owner: uuid.UUID | None
    value: bytes

    @property
    def fingerprint_sha256(self) -> str:
        """Hex SHA-256 of the value for certificates, keys and raw bytes.  For hash entries,
        the stored hash itself (so a `sha1` entry yields its SHA-1); for `x509-sha*` entries
        the stored ToBeSigned hash, without the revocation time."""
        if self.signature_type in _HASH_TYPES:
            return self.value.hex()
        if self.signature_type in _TBS_HASH_SIZES:
            return self.value[: _TBS_HASH_SIZES[self.signature_type]].hex()
        return hashlib.sha256(self.value).hexdigest()

    def certificate(self) -> x509.Certificate | None:
        """The value as an X.509 certificate, or None when it does not parse as one."""
        try:
            return x509.load_der_x509_certificate(self.value)
        except _CERTIFICATE_ERRORS:
            return None

    @property
    def certificate_names(self) -> CertificateNames | None:
        """Subject and issuer when the value is a parseable certificate; None otherwise."""
        certificate = self.certificate()
        if certificate is None:
            return None
        try:
            return CertificateNames(
                certificate.subject.rfc4514_string(), certificate.issuer.rfc4514_string()
            )
        except _CERTIFICATE_ERRORS:  # names are parsed lazily; a bad one surfaces here
            return None


def parse_signature_lists(data: bytes) -> tuple[SignatureEntry, ...]:
    """A concatenation of EFI_SIGNATURE_LIST: the contents of PK, KEK, db, dbx (measured as
    EV_EFI_VARIABLE_DRIVER_CONFIG, PFP 1.05 3.3.4.8) and of shim's MokList.  Empty → ()."""
    reader = LeReader(data, "EFI_SIGNATURE_LIST")
    entries: list[SignatureEntry] = []
    while reader.remaining:
        entries.extend(_read_signature_list(reader))
    return tuple(entries)


def _read_signature_list(reader: LeReader) -> list[SignatureEntry]:
    signature_type = signature_type_name(reader.guid("SignatureType"))
    list_size = reader.u32("SignatureListSize")
    header_size = reader.u32("SignatureHeaderSize")
    signature_size = reader.u32("SignatureSize")
    if list_size < _SIGNATURE_LIST_HEADER + header_size:
        raise reader.fail(f"SignatureListSize {list_size} < 28 + SignatureHeaderSize {header_size}")
    if list_size - _SIGNATURE_LIST_HEADER > reader.remaining:
        raise reader.fail(
            f"SignatureListSize {list_size} overruns the {reader.remaining} bytes left"
        )
    if signature_size < _SIGNATURE_OWNER:
        raise reader.fail(f"SignatureSize {signature_size} < 16 (the SignatureOwner GUID)")
    body = list_size - _SIGNATURE_LIST_HEADER - header_size
    if body % signature_size:
        raise reader.fail(
            f"{body} bytes of signatures is not a multiple of SignatureSize {signature_size}"
        )
    reader.take(header_size, "SignatureHeader")
    entries = []
    for _ in range(body // signature_size):
        owner = reader.guid("SignatureOwner")
        value = reader.take(signature_size - _SIGNATURE_OWNER, "SignatureData")
        entries.append(SignatureEntry(signature_type, owner, value))
    return entries


def parse_signature_data(data: bytes, signature_type: str = "x509") -> SignatureEntry:
    """One EFI_SIGNATURE_DATA (owner GUID, then the value): the VariableData of
    EV_EFI_VARIABLE_AUTHORITY, i.e. the db (or, from shim, MokList/vendor_db) entry that
    authorised an image (PFP 1.05, 3.3.4.8).  The type is not in the structure; pass it."""
    reader = LeReader(data, "EFI_SIGNATURE_DATA")
    owner = reader.guid("SignatureOwner")
    return SignatureEntry(signature_type, owner, reader.rest())


def parse_authority(variable: UefiVariable) -> tuple[SignatureEntry, ...]:
    """What an EV_EFI_VARIABLE_AUTHORITY names, whatever its shape; never raises.

    In order: EFI_SIGNATURE_DATA holding exactly one DER certificate (firmware db entries,
    shim MokList entries); a bare DER certificate (shim's "Shim" vendor certificate, which
    has no owner GUID); otherwise one `raw` entry (shim's MokListTrusted byte, SbatLevel
    text, or a hash entry whose type the event does not say).
    """
    value = variable.data
    if _der_sequence_length(value[_SIGNATURE_OWNER:]) == len(value) - _SIGNATURE_OWNER:
        return (parse_signature_data(value, "x509"),)
    if _der_sequence_length(value) == len(value):
        return (SignatureEntry("x509", None, value),)
    return (SignatureEntry("raw", None, value),)


def _der_sequence_length(data: bytes) -> int | None:
    """Total length (tag + length + content) of a DER SEQUENCE at the start, or None."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:  # indefinite or absurd lengths
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")

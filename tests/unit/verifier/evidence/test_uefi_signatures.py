"""Signature-database parsers: EFI_SIGNATURE_LIST, EFI_SIGNATURE_DATA and the shapes of
EV_EFI_VARIABLE_AUTHORITY, from hand-built vectors and fuzzing.

The parsers keep event_data's contract: any bytes either parse or raise
EventDataMalformed; `parse_authority` and the certificate accessors never raise.
Vectors are built here by small encoders that follow UEFI 2.10, 32.4.1 independently of
the parsers; the certificate (`der`, conftest.py) is generated with `cryptography` for
each run.  The real-log tests that also run these parsers are in test_event_data.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import given
from hypothesis import strategies as st

from verifier.evidence.errors import EventDataMalformed
from verifier.evidence.event_data import EFI_IMAGE_SECURITY_DATABASE, SHIM_LOCK_GUID, UefiVariable
from verifier.evidence.uefi_signatures import (
    EFI_CERT_SHA256_GUID,
    EFI_CERT_X509_GUID,
    EFI_CERT_X509_SHA256_GUID,
    SignatureEntry,
    parse_authority,
    parse_signature_data,
    parse_signature_lists,
)

OWNER = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b")  # Microsoft's owner GUID

# --- encoders (UEFI 2.10, 32.4.1, written from the spec) -------------------------------


def u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def signature_list(kind: uuid.UUID, values: list[bytes], header: bytes = b"") -> bytes:
    """One EFI_SIGNATURE_LIST of equal-size EFI_SIGNATURE_DATA (UEFI 2.10, 32.4.1)."""
    size = 16 + len(values[0])
    body = b"".join(OWNER.bytes_le + value for value in values)
    return (
        kind.bytes_le
        + u32(28 + len(header) + len(body))
        + u32(len(header))
        + u32(size)
        + header
        + body
    )


def each_truncation(data: bytes) -> Iterator[bytes]:
    for n in range(len(data)):
        yield data[:n]


def only_malformed(parse: Callable[[bytes], object], data: bytes) -> None:
    """`parse(data)` returns or raises EventDataMalformed; anything else fails the test."""
    with contextlib.suppress(EventDataMalformed):
        parse(data)


# --- EFI_SIGNATURE_LIST ------------------------------------------------------------


def test_signature_lists_known_answer(certificate: x509.Certificate, der: bytes) -> None:
    hashes_ = [bytes([i]) * 32 for i in range(3)]
    data = signature_list(EFI_CERT_X509_GUID, [der]) + signature_list(EFI_CERT_SHA256_GUID, hashes_)
    entries = parse_signature_lists(data)
    assert [e.signature_type for e in entries] == ["x509", "sha256", "sha256", "sha256"]
    assert {e.owner for e in entries} == {OWNER}
    cert = entries[0]
    assert cert.value == der
    assert cert.fingerprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex()
    assert cert.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    names_ = cert.certificate_names
    assert names_ is not None
    assert names_.subject == certificate.subject.rfc4514_string()
    assert names_.subject == "O=Lightgate\\, Test,CN=Lightgate Test db"
    assert names_.issuer == names_.subject
    assert [e.fingerprint_sha256 for e in entries[1:]] == [h.hex() for h in hashes_]
    assert entries[1].certificate_names is None


def test_signature_list_header_is_skipped() -> None:
    data = signature_list(EFI_CERT_SHA256_GUID, [bytes(32)], header=b"HDR!")
    assert parse_signature_lists(data) == (SignatureEntry("sha256", OWNER, bytes(32)),)


def test_signature_list_types() -> None:
    unknown = uuid.UUID("11111111-2222-3333-4444-555555555555")
    tbs = bytes(range(32)) + bytes(16)  # ToBeSignedHash + EFI_TIME
    data = signature_list(unknown, [b"x"]) + signature_list(EFI_CERT_X509_SHA256_GUID, [tbs])
    entries = parse_signature_lists(data)
    assert entries[0].signature_type == f"unknown:{unknown}"
    assert entries[1].signature_type == "x509-sha256"
    assert entries[1].fingerprint_sha256 == bytes(range(32)).hex()


def test_empty_signature_lists() -> None:
    assert parse_signature_lists(b"") == ()


def test_signature_lists_truncated_anywhere_are_malformed(der: bytes) -> None:
    encoded = signature_list(EFI_CERT_X509_GUID, [der]) + signature_list(
        EFI_CERT_SHA256_GUID, [bytes(32)]
    )
    boundary = len(signature_list(EFI_CERT_X509_GUID, [der]))
    for prefix in each_truncation(encoded):
        if len(prefix) in (0, boundary):
            continue  # a whole number of lists is well formed
        with pytest.raises(EventDataMalformed):
            parse_signature_lists(prefix)


def header(list_size: int, header_size: int, signature_size: int) -> bytes:
    return EFI_CERT_SHA256_GUID.bytes_le + u32(list_size) + u32(header_size) + u32(signature_size)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (header(27, 0, 48), "< 28"),
        (header(28 + 3, 4, 16) + bytes(3), "< 28 \\+ SignatureHeaderSize 4"),
        (header(28 + 48, 0, 15) + bytes(48), "SignatureSize 15 < 16"),
        (header(28 + 48, 0, 0) + bytes(48), "SignatureSize 0 < 16"),
        (header(28 + 50, 0, 48) + bytes(50), "not a multiple"),
        (header(28 + 96, 0, 48) + bytes(48), "overruns"),
        (header(2**32 - 1, 2**32 - 29, 16), "overruns"),
    ],
)
def test_signature_list_inconsistent_sizes(data: bytes, detail: str) -> None:
    with pytest.raises(EventDataMalformed, match=detail):
        parse_signature_lists(data)


def test_signature_data(der: bytes) -> None:
    entry = parse_signature_data(OWNER.bytes_le + der)
    assert entry == SignatureEntry("x509", OWNER, der)
    assert (
        parse_signature_data(OWNER.bytes_le + bytes(32), "sha256").fingerprint_sha256 == "00" * 32
    )
    with pytest.raises(EventDataMalformed):
        parse_signature_data(bytes(15))


# --- EV_EFI_VARIABLE_AUTHORITY shapes ------------------------------------------------


def test_authority_signature_data_from_firmware_db(der: bytes) -> None:
    variable_ = UefiVariable(EFI_IMAGE_SECURITY_DATABASE, "db", OWNER.bytes_le + der)
    assert parse_authority(variable_) == (SignatureEntry("x509", OWNER, der),)


def test_authority_bare_certificate_from_shim(der: bytes) -> None:
    variable_ = UefiVariable(SHIM_LOCK_GUID, "Shim", der)
    (entry,) = parse_authority(variable_)
    assert entry == SignatureEntry("x509", None, der)
    assert entry.certificate_names is not None


@pytest.mark.parametrize(
    "value",
    [b"\x01", b"sbat,1,2021030218\n", b"", OWNER.bytes_le + bytes(32), b"\x30\x82\xff\xff"],
    ids=["MokListTrusted", "SbatLevel", "empty", "hash", "short-DER"],
)
def test_authority_anything_else_is_raw(value: bytes) -> None:
    (entry,) = parse_authority(UefiVariable(SHIM_LOCK_GUID, "MokListTrusted", value))
    assert entry == SignatureEntry("raw", None, value)
    assert entry.fingerprint_sha256 == hashlib.sha256(value).hexdigest()
    assert entry.certificate_names is None


def test_authority_owner_guid_then_der_plus_junk_is_raw(der: bytes) -> None:
    value = OWNER.bytes_le + der + b"\x00"
    assert parse_authority(UefiVariable(SHIM_LOCK_GUID, "Shim", value))[0].signature_type == "raw"


def test_certificate_with_an_x509_version_cryptography_refuses(der: bytes) -> None:
    v3, v2 = b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x01"  # [0] INTEGER version
    entry = SignatureEntry("x509", None, der.replace(v3, v2, 1))
    assert entry.certificate() is None  # cryptography raises InvalidVersion, not ValueError
    assert entry.certificate_names is None


@given(data=st.data())
def test_certificate_names_of_a_mutated_certificate_never_raise(
    der: bytes, data: st.DataObject
) -> None:
    value = bytearray(der)
    for _ in range(data.draw(st.integers(1, 4))):
        value[data.draw(st.integers(0, len(value) - 1))] = data.draw(st.integers(0, 255))
    names_ = SignatureEntry("x509", None, bytes(value)).certificate_names
    assert names_ is None or isinstance(names_.subject, str)


def test_certificate_names_of_a_sequence_that_is_no_certificate() -> None:
    entry = SignatureEntry("x509", None, b"\x30\x03\x02\x01\x01")
    assert entry.certificate() is None
    assert entry.certificate_names is None


# --- fuzzing: the parsers raise only EventDataMalformed, parse_authority nothing ----------

PARSERS: dict[str, Callable[[bytes], object]] = {
    "signature_lists": parse_signature_lists,
    "signature_data": parse_signature_data,
}


def valid_samples() -> list[bytes]:
    return [
        signature_list(EFI_CERT_SHA256_GUID, [bytes(32), bytes(32)]),
        OWNER.bytes_le + bytes(32),  # one EFI_SIGNATURE_DATA holding a SHA-256
    ]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid structure with a few bytes overwritten, cut or extended."""
    data = bytearray(draw(st.sampled_from(valid_samples())))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


fuzz_inputs = st.one_of(st.binary(max_size=400), mutated())


@pytest.mark.parametrize("name", sorted(PARSERS))
@given(data=fuzz_inputs)
def test_parsers_raise_only_event_data_malformed(name: str, data: bytes) -> None:
    only_malformed(PARSERS[name], data)


@given(
    guid=st.uuids(), data=st.one_of(fuzz_inputs, st.binary(max_size=40).map(lambda b: b"\x30" + b))
)
def test_authority_never_raises(guid: uuid.UUID, data: bytes) -> None:
    for entry in parse_authority(UefiVariable(guid, "db", data)):
        assert isinstance(entry.fingerprint_sha256, str)
        _ = entry.certificate_names  # must not raise

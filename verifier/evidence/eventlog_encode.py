"""Event logs written from records: the inverse of `eventlog.parse_event_log`.

For the fixture builder (`lightgate.sim.firmware`) and round-trip tests; the verifier
never writes a log.  Crypto-agile logs get the Spec ID Event03 header (TCG PC Client PFP
1.05, 10.4.5.1) and one TCG_PCR_EVENT2 per record; legacy logs one TCG_PCR_EVENT each.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    SPEC_ID_FIXED,
    SPEC_ID_SIGNATURE,
    TCG_PCR_EVENT,
    TCG_PCR_EVENT2_HEAD,
)
from verifier.evidence.tpm_structures import HashAlg


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event to encode: the log's own fields, without number or offset."""

    pcr: int
    event_type: int
    digests: Mapping[HashAlg, bytes]
    data: bytes


def encode_crypto_agile(
    banks: Sequence[HashAlg],
    records: Iterable[EventRecord],
    *,
    uintn_size: int = 8,
    vendor_info: bytes = b"",
    spec_version: tuple[int, int, int] = (2, 0, 0),
) -> bytes:
    """A crypto-agile log: the Spec ID header, then one TCG_PCR_EVENT2 per record."""
    major, minor, errata = spec_version
    header = bytearray(
        SPEC_ID_FIXED.pack(
            SPEC_ID_SIGNATURE, 0, minor, major, errata, 1 if uintn_size == 4 else 2, len(banks)
        )
    )
    for bank in banks:
        header += struct.pack("<HH", int(bank), bank.digest_size)
    header += bytes([len(vendor_info)]) + vendor_info
    out = bytearray(
        TCG_PCR_EVENT.pack(0, EventType.EV_NO_ACTION, bytes(HashAlg.SHA1.digest_size), len(header))
    )
    out += header
    for record in records:
        out += TCG_PCR_EVENT2_HEAD.pack(record.pcr, record.event_type, len(banks))
        for bank in banks:
            out += struct.pack("<H", int(bank)) + record.digests[bank]
        out += struct.pack("<I", len(record.data)) + record.data
    return bytes(out)


def encode_legacy(records: Iterable[EventRecord]) -> bytes:
    """A legacy SHA-1 log: one TCG_PCR_EVENT per record."""
    out = bytearray()
    for record in records:
        digest = record.digests[HashAlg.SHA1]
        out += TCG_PCR_EVENT.pack(record.pcr, record.event_type, digest, len(record.data))
        out += record.data
    return bytes(out)

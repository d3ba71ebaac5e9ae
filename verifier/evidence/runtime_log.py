"""Lightgate's runtime event log: what the agent measures after boot, checked against the
quote.  Pure: no I/O.

The log has the boot log's format, so one parser reads both (`eventlog.parse_event_log`,
`eventlog_encode.encode_crypto_agile`): a crypto-agile TCG event log (TCG PC Client PFP
1.05 rev 23, 10.4.5.1 Spec ID header, 10.2.2 TCG_PCR_EVENT2) whose every record is an
EV_EVENT_TAG (PFP 10.4.1, Table 9) in one PCR, the runtime PCR (`location.runtime_pcr`,
13 by default).  Its event data is a TCG_PCClientTaggedEvent (PFP 10.2.6):

    UINT32 taggedEventID; UINT32 taggedEventDataSize; BYTE taggedEventData[size]

little-endian like every integer of the log (PFP 10.2), and each digest is H_bank(event
data), the whole structure: the TPM extended exactly these bytes' hash, so the data is
bound to what the quote proves.  Lightgate's taggedEventIDs are "LG" (0x4C47) then a
number: 0x4C470001 is an asset tag (the data is the verifier-signed tag, a compact JWS
in ASCII), 0x4C470002 a container image (`evidence.images`: canonical JSON naming the
image, its manifest digest and the runtime it was read from).

`verify_runtime_log` is the only way to a `VerifiedRuntimeLog`.  It refuses, each with
its own check: a log that does not parse or holds anything else (`runtime-log`), an
event whose digest is not its data's hash (`runtime-log-digest`), a quoted bank the log
has no digests for (`runtime-log-bank`), a replay that differs from the quoted runtime
PCR in any quoted bank (`runtime-log-replay`), and a quote that does not cover the
runtime PCR at all (`runtime-log-pcr`).  No log is a log with no events: it is accepted
only while the runtime PCR still holds its reset value, all zeros.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from verifier.evidence.errors import (
    EventLogMalformed,
    RuntimeLogBankMissing,
    RuntimeLogDigestMismatch,
    RuntimeLogMalformed,
    RuntimeLogReplayMismatch,
    RuntimePcrNotQuoted,
)
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    REPLAYABLE_BANKS,
    Event,
    EventLog,
    LogFormat,
    parse_event_log,
    replay,
)
from verifier.evidence.eventlog_encode import EventRecord, encode_crypto_agile
from verifier.evidence.images import ImageEventInvalid, ImageRecord, parse_image_event
from verifier.evidence.tpm_structures import HashAlg

TAGGED_EVENT_ASSET_TAG: Final = 0x4C470001
TAGGED_EVENT_IMAGE: Final = 0x4C470002
#: The taggedEventIDs Lightgate defines; any other is refused (closed by default).
TAGGED_EVENT_NAMES: Final = {TAGGED_EVENT_ASSET_TAG: "asset-tag", TAGGED_EVENT_IMAGE: "image"}

#: taggedEventID, taggedEventDataSize (PFP 10.2.6), little-endian.
TAGGED_EVENT_HEAD: Final = struct.Struct("<II")

#: The verifier's default limit (config `location.max_runtime_log_bytes`): an asset tag
#: is ~600 bytes, an image event ~150; a megabyte is thousands of events.
MAX_RUNTIME_LOG_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class TaggedEvent:
    """One runtime-log event: which PCR, which taggedEventID, the taggedEventData."""

    pcr: int
    tag_id: int
    data: bytes

    @property
    def event_data(self) -> bytes:
        """The TCG_PCClientTaggedEvent as logged (and hashed into the PCR)."""
        return tagged_event_data(self.tag_id, self.data)

    def digest(self, bank: HashAlg) -> bytes:
        return bank.digest(self.event_data)


@dataclass(frozen=True, slots=True)
class VerifiedRuntimeLog:
    """A runtime log whose replay equals the quoted runtime PCR in every quoted bank.

    `present` is False when the node sent no log (and the runtime PCR was untouched).
    `asset_tags` are the asset-tag tokens in the order the agent measured them; the
    last is the node's current tag.  The tokens are only what the TPM measured: their
    signature and subject are checked by `verifier.location.verify_asset_tag`.
    """

    pcr: int
    present: bool
    events: tuple[TaggedEvent, ...]
    banks: tuple[HashAlg, ...]  # the quoted banks the replay was compared in
    sha256: bytes | None  # of the raw log; None when there was none
    #: The images measured this boot, in the order measured (parsed once, when verified).
    images: tuple[ImageRecord, ...] = ()

    @property
    def asset_tags(self) -> tuple[str, ...]:
        return tuple(
            e.data.decode("ascii") for e in self.events if e.tag_id == TAGGED_EVENT_ASSET_TAG
        )

    @property
    def current_asset_tag(self) -> str | None:
        tags = self.asset_tags
        return tags[-1] if tags else None


def tagged_event_data(tag_id: int, data: bytes) -> bytes:
    """A TCG_PCClientTaggedEvent (PFP 10.2.6) around `data`."""
    if not 0 <= tag_id <= 0xFFFFFFFF:
        raise ValueError(f"taggedEventID {tag_id} is not a UINT32")
    return TAGGED_EVENT_HEAD.pack(tag_id, len(data)) + data


def parse_tagged_event_data(event: Event) -> TaggedEvent:
    """The TCG_PCClientTaggedEvent of one EV_EVENT_TAG record; its size must account for
    every byte of the event data, and the ID must be one Lightgate defines.  An image
    event's data is read by `parse_image_data`."""
    raw = event.data
    if len(raw) < TAGGED_EVENT_HEAD.size:
        raise RuntimeLogMalformed(
            event.offset, event.number, f"TCG_PCClientTaggedEvent is {len(raw)} bytes, under 8"
        )
    tag_id, size = TAGGED_EVENT_HEAD.unpack_from(raw)
    if size != len(raw) - TAGGED_EVENT_HEAD.size:
        raise RuntimeLogMalformed(
            event.offset,
            event.number,
            f"taggedEventDataSize {size}, but {len(raw) - TAGGED_EVENT_HEAD.size} bytes follow",
        )
    if tag_id not in TAGGED_EVENT_NAMES:
        raise RuntimeLogMalformed(
            event.offset, event.number, f"taggedEventID 0x{tag_id:08x} is not one Lightgate defines"
        )
    data = raw[TAGGED_EVENT_HEAD.size :]
    if tag_id == TAGGED_EVENT_ASSET_TAG and not (data.isascii() and data.decode().isprintable()):
        raise RuntimeLogMalformed(
            event.offset, event.number, "an asset tag must be a compact JWS in printable ASCII"
        )
    return TaggedEvent(event.pcr, tag_id, data)


def parse_image_data(event: Event, tagged: TaggedEvent) -> ImageRecord:
    """The image record an image event holds (`evidence.images`), or RuntimeLogMalformed."""
    try:
        return parse_image_event(tagged.data)
    except ImageEventInvalid as exc:
        raise RuntimeLogMalformed(event.offset, event.number, str(exc)) from None


def encode_runtime_log(records: Iterable[TaggedEvent], banks: Sequence[HashAlg]) -> bytes:
    """The runtime log of `records`, with a digest per bank of each one's event data."""
    return encode_crypto_agile(
        banks,
        (
            EventRecord(
                record.pcr,
                EventType.EV_EVENT_TAG,
                {bank: record.digest(bank) for bank in banks},
                record.event_data,
            )
            for record in records
        ),
    )


def expected_pcr(records: Iterable[TaggedEvent], bank: HashAlg) -> bytes:
    """The runtime PCR's value after extending `records` from reset (all zeros)."""
    value = bytes(bank.digest_size)
    for record in records:
        value = bank.digest(value + record.digest(bank))
    return value


def verify_runtime_log(
    raw: bytes,
    quoted: Mapping[HashAlg, Mapping[int, bytes]],
    runtime_pcr: int,
    *,
    node_id: str | None = None,
    max_bytes: int = MAX_RUNTIME_LOG_BYTES,
) -> VerifiedRuntimeLog:
    """Parse the runtime log, check every event, replay it and compare with the runtime
    PCR in every quoted bank that covers it.  `quoted` are the PCR values of a verified
    quote (`PcrValues.banks`).  Raises the errors the module docstring lists."""
    banks = tuple(bank for bank, values in quoted.items() if runtime_pcr in values)
    if not banks:
        raise RuntimePcrNotQuoted(
            f"the quote does not cover the runtime PCR {runtime_pcr} in any bank", node_id=node_id
        )
    if not raw:
        # No log is the empty log, which replays to the reset value.
        _compare(runtime_pcr, {bank: bytes(bank.digest_size) for bank in banks}, quoted, node_id)
        return VerifiedRuntimeLog(runtime_pcr, False, (), banks, None)
    log = _parse(raw, max_bytes, node_id)
    missing = [bank for bank in banks if bank not in log.banks]
    if missing:
        have = ", ".join(b.bank_name for b in log.banks) or "none"
        raise RuntimeLogBankMissing(
            f"the quote covers PCR{runtime_pcr} in {', '.join(b.bank_name for b in missing)}; "
            f"the runtime log has digests for {have} only",
            node_id=node_id,
        )
    checked = [_checked_event(event, log, runtime_pcr, node_id) for event in log.events[1:]]
    events = tuple(tagged for tagged, _ in checked)
    images = tuple(image for _, image in checked if image is not None)
    replayed = replay(log).pcrs
    values = {
        bank: replayed.get(bank, {}).get(runtime_pcr, bytes(bank.digest_size)) for bank in banks
    }
    _compare(runtime_pcr, values, quoted, node_id)
    return VerifiedRuntimeLog(
        runtime_pcr, True, events, banks, hashlib.sha256(raw).digest(), images
    )


def _parse(raw: bytes, max_bytes: int, node_id: str | None) -> EventLog:
    try:
        log = parse_event_log(raw, max_size=max_bytes)
    except EventLogMalformed as exc:
        # The boot log's check name would point an operator at the wrong log.
        raise RuntimeLogMalformed(exc.offset, exc.event, exc.detail, node_id=node_id) from None
    if log.format is not LogFormat.CRYPTO_AGILE:
        raise RuntimeLogMalformed(
            0, 0, "not a crypto-agile log (no Spec ID Event03 header)", node_id=node_id
        )
    return log


def _checked_event(
    event: Event, log: EventLog, pcr: int, node_id: str | None
) -> tuple[TaggedEvent, ImageRecord | None]:
    where = (event.offset, event.number)
    if event.event_type != EventType.EV_EVENT_TAG:
        raise RuntimeLogMalformed(
            *where,
            f"{event.type_name} is not EV_EVENT_TAG, the only runtime event",
            node_id=node_id,
        )
    if event.pcr != pcr:
        raise RuntimeLogMalformed(
            *where, f"event in PCR{event.pcr}, not the runtime PCR {pcr}", node_id=node_id
        )
    try:
        tagged = parse_tagged_event_data(event)
        image = parse_image_data(event, tagged) if tagged.tag_id == TAGGED_EVENT_IMAGE else None
    except RuntimeLogMalformed as exc:
        raise RuntimeLogMalformed(exc.offset, exc.event, exc.detail, node_id=node_id) from None
    for alg, digest in event.digests:
        if alg not in REPLAYABLE_BANKS or alg not in log.banks:
            continue  # a bank this verifier cannot hash is not replayed either
        bank = HashAlg(alg)
        if digest != bank.digest(event.data):
            raise RuntimeLogDigestMismatch(
                f"runtime log event {event.number}: {bank.bank_name} digest {digest.hex()} is "
                f"not the hash of its event data ({bank.digest(event.data).hex()})",
                node_id=node_id,
            )
    return tagged, image


def _compare(
    pcr: int,
    replayed: Mapping[HashAlg, bytes],
    quoted: Mapping[HashAlg, Mapping[int, bytes]],
    node_id: str | None,
) -> None:
    mismatches = {
        bank.bank_name: (value, quoted[bank][pcr])
        for bank, value in replayed.items()
        if value != quoted[bank][pcr]
    }
    if mismatches:
        raise RuntimeLogReplayMismatch(pcr, mismatches, node_id=node_id)

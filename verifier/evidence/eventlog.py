"""The UEFI measured-boot event log: parse, replay, encode.

Pure functions over bytes (no I/O), following the TCG PC Client Platform Firmware
Profile (PFP) 1.05 rev 23, section 10:

- Two formats.  The legacy SHA-1 format (TCG_PCR_EVENT records only, 10.2.1) and the
  crypto-agile format: a first TCG_PCR_EVENT whose data is TCG_EfiSpecIDEventStruct
  with signature "Spec ID Event03" (10.4.5.1), then TCG_PCR_EVENT2 records whose
  TPML_DIGEST_VALUES hold one digest per bank the header declares (10.2.2).
- EV_NO_ACTION events are never extended (10.4.5): they carry the Spec ID header,
  StartupLocality, SP800-155 reference manifests and vendor data.
- PCR0's initial value is set by the StartupLocality EV_NO_ACTION event (10.4.5.3):
  0, 3 (TPM2_Startup at locality 3) or 4 (an H-CRTM sequence; TPM 2.0 Part 1, 34.3),
  in the last byte of an otherwise zero PCR.  The event must come before any PCR0
  extend.
- Records with PCR index 0xFFFFFFFF (Windows' trust-point records) are never extended.
- Replay extends the *logged* digest, never a hash of the event data: real firmware logs
  data that does not hash to its digest (an S-CRTM version string, grub's strings).
  Whether data matches its digest is a separate finding (`claims.py`), not a parse error.

Anything that does not hold to the format raises `EventLogMalformed` with the byte offset
and the number of the record that failed; nothing else escapes.  A size limit bounds the
work a hostile log can cause.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NamedTuple

from verifier.evidence.errors import EventLogMalformed
from verifier.evidence.event_types import EventType, event_type_name
from verifier.evidence.tpm_structures import HashAlg

#: Largest log the verifier accepts.  Firmware logs seen in the field are 2-300 KiB;
#: the limit keeps a hostile 1 GiB "log" from costing more than a refusal.
MAX_EVENT_LOG_BYTES: Final = 4 * 1024 * 1024

#: Most records a log may hold.  Real firmware logs hold 15-1,500; the limit keeps a
#: hostile log of empty records (131,072 fit in 4 MiB) from costing 40 MiB of objects.
MAX_EVENTS: Final = 16384

#: PCR index of records that are never extended (PFP 10.4.5; Windows trust points).
NO_PCR: Final = 0xFFFFFFFF

#: PCRs a TPM can have (TPML_PCR_SELECTION's sizeofSelect is at most 4 bytes).
MAX_PCRS: Final = 32

SPEC_ID_SIGNATURE: Final = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE: Final = b"StartupLocality\x00"
#: Localities PFP 10.4.5.3 allows for the StartupLocality event: 0 and 3 for
#: TPM2_Startup, 4 for an H-CRTM event sequence.
STARTUP_LOCALITIES: Final = frozenset({0, 3, 4})

_SHA1_SIZE: Final = 20
TCG_PCR_EVENT = struct.Struct("<II20sI")  # pcrIndex, eventType, digest, eventSize
TCG_PCR_EVENT2_HEAD = struct.Struct("<III")  # pcrIndex, eventType, TPML_DIGEST_VALUES.count
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
SPEC_ID_FIXED = struct.Struct("<16sIBBBBI")

_HASH_CONSTRUCTORS: dict[HashAlg, Callable[[bytes], hashlib._Hash]] = {
    HashAlg.SHA1: hashlib.sha1,
    HashAlg.SHA256: hashlib.sha256,
    HashAlg.SHA384: hashlib.sha384,
    HashAlg.SHA512: hashlib.sha512,
}
if "sm3" in hashlib.algorithms_available:  # OpenSSL builds may leave SM3 out
    _HASH_CONSTRUCTORS[HashAlg.SM3_256] = functools.partial(hashlib.new, "sm3")

#: The banks this verifier can hash, so replay, check and extend.
REPLAYABLE_BANKS: Final = frozenset(_HASH_CONSTRUCTORS)


class LogFormat(StrEnum):
    LEGACY_SHA1 = "legacy-sha1"
    CRYPTO_AGILE = "crypto-agile"


@dataclass(frozen=True, slots=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEventStruct (PFP 10.4.5.1): the crypto-agile log's header."""

    platform_class: int
    spec_version: tuple[int, int, int]  # major, minor, errata
    uintn_size: int  # bytes of a UEFI UINTN in this firmware: 4 or 8
    algorithms: tuple[tuple[int, int], ...]  # (TPM_ALG_ID, digest size) as declared
    vendor_info: bytes


class Event(NamedTuple):
    """One record of the log.  `number` counts every record from 0, header included.

    A NamedTuple rather than a frozen dataclass: a log has hundreds of events and a
    tuple is built three times faster, which is a third of the parse (benchmarks/eventlog.py).
    Immutable all the same.
    """

    number: int
    offset: int
    pcr: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]  # (TPM_ALG_ID, digest) in logged order
    data: bytes

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    @property
    def extends(self) -> bool:
        """Whether replay extends this event into its PCR."""
        return self.event_type != EventType.EV_NO_ACTION and self.pcr != NO_PCR

    def digest(self, bank: HashAlg) -> bytes | None:
        for alg, value in self.digests:
            if alg == bank:
                return value
        return None


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed event log.  `events` holds every record, the Spec ID header included."""

    format: LogFormat
    spec_id: SpecIdEvent | None
    events: tuple[Event, ...]
    banks: tuple[HashAlg, ...]  # banks replay can compute, in the header's order
    startup_locality: int | None
    sha256: bytes  # of the raw bytes: the cache key and the stored evidence's name
    size: int

    @property
    def uintn_size(self) -> int | None:
        return self.spec_id.uintn_size if self.spec_id else None

    def initial_value(self, bank: HashAlg, pcr: int) -> bytes:
        """A PCR's value before the first extend (PFP 10.4.5.3 for PCR0)."""
        size = bank.digest_size
        if pcr == 0 and self.startup_locality:
            return bytes(size - 1) + bytes([self.startup_locality])
        return bytes(size)


@dataclass(frozen=True, slots=True)
class Replay:
    """PCR values the log's events produce, per bank, for every PCR the log extends."""

    pcrs: Mapping[HashAlg, Mapping[int, bytes]] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, dict[str, str]]]:
        return {
            "banks": {
                bank.bank_name: {str(pcr): value.hex() for pcr, value in sorted(values.items())}
                for bank, values in self.pcrs.items()
            }
        }


def parse_event_log(raw: bytes, *, max_size: int = MAX_EVENT_LOG_BYTES) -> EventLog:
    """Parse a TCG PC Client event log in either format.  Raises only EventLogMalformed."""
    if len(raw) > max_size:
        raise EventLogMalformed(0, 0, f"log is {len(raw)} bytes; the limit is {max_size}")
    if len(raw) < TCG_PCR_EVENT.size:
        raise EventLogMalformed(0, 0, f"log is {len(raw)} bytes, shorter than one record")
    first = _read_legacy_record(raw, 0, 0)
    if first.event_type == EventType.EV_NO_ACTION and first.data.startswith(SPEC_ID_SIGNATURE):
        spec_id = _parse_spec_id(first)
        events = [first]
        _read_agile_records(raw, first.offset + _record_size(first), spec_id, events)
        log_format = LogFormat.CRYPTO_AGILE
        banks = tuple(HashAlg(alg) for alg, _ in spec_id.algorithms if alg in _HASH_CONSTRUCTORS)
    else:
        spec_id = None
        events = _read_legacy_records(raw)
        log_format = LogFormat.LEGACY_SHA1
        banks = (HashAlg.SHA1,)
    return EventLog(
        format=log_format,
        spec_id=spec_id,
        events=tuple(events),
        banks=banks,
        startup_locality=_startup_locality(events),
        sha256=hashlib.sha256(raw).digest(),
        size=len(raw),
    )


def _record_size(event: Event) -> int:
    return TCG_PCR_EVENT.size + len(event.data)


def _read_legacy_record(raw: bytes, offset: int, number: int) -> Event:
    if offset + TCG_PCR_EVENT.size > len(raw):
        left = len(raw) - offset
        raise EventLogMalformed(offset, number, f"TCG_PCR_EVENT needs 32 bytes, {left} left")
    pcr, event_type, digest, size = TCG_PCR_EVENT.unpack_from(raw, offset)
    start = offset + TCG_PCR_EVENT.size
    if size > len(raw) - start:
        raise EventLogMalformed(
            offset, number, f"eventSize {size} overruns the log ({len(raw) - start} bytes left)"
        )
    _check_pcr_index(pcr, event_type, offset, number)
    data = raw[start : start + size]
    return Event(number, offset, pcr, event_type, ((HashAlg.SHA1, digest),), data)


def _read_legacy_records(raw: bytes) -> list[Event]:
    events: list[Event] = []
    append = events.append
    unpack = TCG_PCR_EVENT.unpack_from
    head = TCG_PCR_EVENT.size
    sha1 = int(HashAlg.SHA1)
    end = len(raw)
    offset = 0
    while offset < end:
        if len(events) >= MAX_EVENTS:
            raise EventLogMalformed(offset, len(events), f"more than {MAX_EVENTS} events")
        if offset + head > end or offset + head + unpack(raw, offset)[3] > end:
            append(_read_legacy_record(raw, offset, len(events)))  # raises, saying why
        pcr, event_type, digest, size = unpack(raw, offset)
        if pcr >= MAX_PCRS:
            _check_pcr_index(pcr, event_type, offset, len(events))
        start = offset + head
        append(
            Event(
                len(events), offset, pcr, event_type, ((sha1, digest),), raw[start : start + size]
            )
        )
        offset = start + size
    return events


def _parse_spec_id(header: Event) -> SpecIdEvent:
    """TCG_EfiSpecIDEventStruct; the header record itself must be PCR0 with a zero digest."""
    where = (header.offset, header.number)
    if header.pcr != 0 or header.digests[0][1] != bytes(_SHA1_SIZE):
        raise EventLogMalformed(*where, "Spec ID event must be in PCR0 with a zero digest")
    data = header.data
    if len(data) < SPEC_ID_FIXED.size:
        raise EventLogMalformed(*where, f"Spec ID event data is {len(data)} bytes, too short")
    _sig, platform_class, minor, major, errata, uintn, count = SPEC_ID_FIXED.unpack_from(data)
    if major != 2:  # PFP 10.4.5.1: "Spec ID Event03" is specVersionMajor 2
        raise EventLogMalformed(*where, f"Spec ID specVersionMajor {major}, not 2")
    if uintn not in (1, 2):
        raise EventLogMalformed(*where, f"Spec ID uintnSize {uintn} is neither 1 nor 2")
    if count == 0 or count > 16:
        raise EventLogMalformed(*where, f"Spec ID numberOfAlgorithms {count} is not 1..16")
    position = SPEC_ID_FIXED.size
    if position + 4 * count + 1 > len(data):
        raise EventLogMalformed(*where, f"Spec ID declares {count} algorithms beyond its data")
    algorithms: list[tuple[int, int]] = []
    for _ in range(count):
        alg, size = struct.unpack_from("<HH", data, position)
        position += 4
        _check_declared_algorithm(alg, size, algorithms, where)
        algorithms.append((alg, size))
    vendor_size = data[position]
    position += 1
    if position + vendor_size != len(data):
        raise EventLogMalformed(
            *where, f"Spec ID vendorInfoSize {vendor_size} does not end the event data"
        )
    return SpecIdEvent(
        platform_class=platform_class,
        spec_version=(major, minor, errata),
        uintn_size=4 if uintn == 1 else 8,
        algorithms=tuple(algorithms),
        vendor_info=data[position:],
    )


def _check_declared_algorithm(
    alg: int, size: int, seen: list[tuple[int, int]], where: tuple[int, int]
) -> None:
    if any(alg == known for known, _ in seen):
        raise EventLogMalformed(*where, f"Spec ID declares algorithm 0x{alg:04x} twice")
    try:
        expected = HashAlg(alg).digest_size
    except ValueError:
        # An algorithm Lightgate does not know (SHA3, say): its digests are carried with
        # the size the header declares, and that bank is not replayed.
        if not 1 <= size <= 64:
            raise EventLogMalformed(*where, f"algorithm 0x{alg:04x} digestSize {size}") from None
        return
    if size != expected:
        raise EventLogMalformed(
            *where, f"{HashAlg(alg).bank_name} digestSize {size}, the algorithm's is {expected}"
        )


FixedPart = tuple[int, int, tuple[tuple[int, bytes], ...], int]


def _read_agile_records(raw: bytes, offset: int, spec_id: SpecIdEvent, out: list[Event]) -> None:
    sizes = dict(spec_id.algorithms)
    declared = len(spec_id.algorithms)
    read_fixed, fixed_size = _fixed_part_reader(spec_id)
    end = len(raw)
    append = out.append
    number = len(out)
    while offset < end:
        if number >= MAX_EVENTS:
            raise EventLogMalformed(offset, number, f"more than {MAX_EVENTS} events")
        fixed = read_fixed(raw, offset) if offset + fixed_size <= end else None
        if fixed is not None:
            pcr, event_type, digests, data_size = fixed
            position = offset + fixed_size
        else:
            pcr, event_type, digests, data_size, position = _read_unordered(
                raw, offset, number, declared, sizes
            )
        if pcr >= MAX_PCRS:
            _check_pcr_index(pcr, event_type, offset, number)
        if data_size > end - position:
            raise EventLogMalformed(
                offset,
                number,
                f"eventSize {data_size} overruns the log ({end - position} bytes left)",
            )
        append(
            Event(number, offset, pcr, event_type, digests, raw[position : position + data_size])
        )
        number += 1
        offset = position + data_size


def _fixed_part_reader(
    spec_id: SpecIdEvent,
) -> tuple[Callable[[bytes, int], FixedPart | None], int]:
    """A reader of a TCG_PCR_EVENT2's fixed part (header, digests, eventSize) when the
    digests follow the Spec ID header's order, as firmware writes them: one struct read,
    then the count and algorithm ids checked.  None means "not in that order": the
    caller takes the general path.  The two layouts firmware ships most (sha256 alone;
    sha1 and sha256) get readers of their own: this is most of a parse's time."""
    algs = tuple(alg for alg, _ in spec_id.algorithms)
    layout = struct.Struct("<III" + "".join(f"H{size}s" for _, size in spec_id.algorithms) + "I")
    unpack = layout.unpack_from
    if len(algs) == 1:
        (a0,) = algs

        def one(raw: bytes, offset: int) -> FixedPart | None:
            pcr, event_type, count, x0, d0, size = unpack(raw, offset)
            if count != 1 or x0 != a0:
                return None
            return pcr, event_type, ((a0, d0),), size

        return one, layout.size
    if len(algs) == 2:
        a0, a1 = algs

        def two(raw: bytes, offset: int) -> FixedPart | None:
            pcr, event_type, count, x0, d0, x1, d1, size = unpack(raw, offset)
            if count != 2 or x0 != a0 or x1 != a1:
                return None
            return pcr, event_type, ((a0, d0), (a1, d1)), size

        return two, layout.size
    declared = len(algs)

    def many(raw: bytes, offset: int) -> FixedPart | None:
        fields = unpack(raw, offset)
        if fields[2] != declared or fields[3:-1:2] != algs:
            return None
        return fields[0], fields[1], tuple(zip(algs, fields[4:-1:2], strict=True)), fields[-1]

    return many, layout.size


def _read_unordered(
    raw: bytes, offset: int, number: int, declared: int, sizes: dict[int, int]
) -> tuple[int, int, tuple[tuple[int, bytes], ...], int, int]:
    """A TCG_PCR_EVENT2's fixed part, the general way: (pcr, type, digests, eventSize,
    offset of the event data); raises EventLogMalformed where the other path says None."""
    end = len(raw)
    if offset + TCG_PCR_EVENT2_HEAD.size > end:
        raise EventLogMalformed(
            offset, number, f"TCG_PCR_EVENT2 header needs 12 bytes, {end - offset} left"
        )
    pcr, event_type, count = TCG_PCR_EVENT2_HEAD.unpack_from(raw, offset)
    if count != declared:
        raise EventLogMalformed(
            offset,
            number,
            f"TPML_DIGEST_VALUES.count {count}; the Spec ID header declares {declared} banks",
        )
    digests, position = _read_digests(
        raw, offset + TCG_PCR_EVENT2_HEAD.size, count, sizes, offset, number
    )
    if position + 4 > end:
        raise EventLogMalformed(offset, number, "eventSize overruns the log")
    (data_size,) = _U32.unpack_from(raw, position)
    return pcr, event_type, digests, data_size, position + 4


def _read_digests(
    raw: bytes, position: int, count: int, sizes: dict[int, int], offset: int, number: int
) -> tuple[tuple[tuple[int, bytes], ...], int]:
    """TPML_DIGEST_VALUES in any order: each algorithm declared, none twice."""
    end = len(raw)
    digests: list[tuple[int, bytes]] = []
    for _ in range(count):
        if position + 2 > end:
            raise EventLogMalformed(offset, number, "digest algorithm id overruns the log")
        (alg,) = _U16.unpack_from(raw, position)
        size = sizes.get(alg)
        if size is None:
            raise EventLogMalformed(
                offset, number, f"digest algorithm 0x{alg:04x} is not declared in the header"
            )
        if any(alg == seen for seen, _ in digests):
            raise EventLogMalformed(offset, number, f"digest algorithm 0x{alg:04x} twice")
        position += 2
        if position + size > end:
            raise EventLogMalformed(offset, number, f"0x{alg:04x} digest overruns the log")
        digests.append((alg, raw[position : position + size]))
        position += size
    return tuple(digests), position


def _check_pcr_index(pcr: int, event_type: int, offset: int, number: int) -> None:
    # EV_NO_ACTION records are not extended, so their index is informational; any other
    # record must name a PCR a TPM can have, or 0xFFFFFFFF (never extended).
    if pcr >= MAX_PCRS and pcr != NO_PCR and event_type != EventType.EV_NO_ACTION:
        raise EventLogMalformed(
            offset, number, f"PCR index {pcr} for {event_type_name(event_type)} is out of range"
        )


def _startup_locality(events: Sequence[Event]) -> int | None:
    """The locality of the StartupLocality event, which must precede any PCR0 extend."""
    locality: int | None = None
    pcr0_extended = False
    no_action = EventType.EV_NO_ACTION
    for event in events:
        if event.pcr != 0:
            continue
        if event.event_type != no_action:
            pcr0_extended = True
            continue
        if not event.data.startswith(STARTUP_LOCALITY_SIGNATURE):
            continue
        where = (event.offset, event.number)
        if locality is not None:
            raise EventLogMalformed(*where, "second StartupLocality event")
        if pcr0_extended:
            raise EventLogMalformed(*where, "StartupLocality event after PCR0 was extended")
        if len(event.data) != len(STARTUP_LOCALITY_SIGNATURE) + 1:
            raise EventLogMalformed(*where, f"StartupLocality event is {len(event.data)} bytes")
        locality = event.data[-1]
        if locality not in STARTUP_LOCALITIES:
            raise EventLogMalformed(*where, f"StartupLocality {locality} is not 0, 3 or 4")
    return locality


def replay(log: EventLog, extra: Iterable[Event] = ()) -> Replay:
    """Extend every extendable event's logged digest, per bank, from each PCR's initial
    value.  `extra` appends events (the workarounds use it on a copy).  One pass over
    the events for all banks: this is the verifier's hot path."""
    # Per bank: the hash, its PCR values, a zero PCR and PCR0's initial value.
    state: dict[int, tuple[Callable[[bytes], hashlib._Hash], dict[int, bytes], bytes, bytes]]
    state = {
        int(bank): (
            _HASH_CONSTRUCTORS[bank],
            {},
            log.initial_value(bank, 1),
            log.initial_value(bank, 0),
        )
        for bank in log.banks
    }
    no_action = EventType.EV_NO_ACTION
    for event in (*log.events, *extra) if extra else log.events:
        pcr = event[2]
        if event[3] == no_action or pcr == NO_PCR:
            continue
        for alg, digest in event[4]:
            bank = state.get(alg)
            if bank is None:
                continue
            constructor, values, zero, pcr0 = bank
            current = values.get(pcr)
            if current is None:
                current = pcr0 if pcr == 0 else zero
            values[pcr] = constructor(current + digest).digest()
    pcrs = {alg: bank[1] for alg, bank in state.items()}
    return Replay({HashAlg(alg): values for alg, values in pcrs.items()})

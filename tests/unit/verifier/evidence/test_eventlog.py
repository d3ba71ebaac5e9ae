"""The event-log parser and replay on hand-built logs (TCG PC Client PFP 1.05 rev 23, 10).

Logs are built with the module's own encoders (`encode_crypto_agile`, `encode_legacy`)
for round trips, and byte by byte with the helpers below (independent of the encoders)
wherever a test needs a log the encoders cannot or must not produce: a wrong digest
count, an undeclared algorithm, a header with a wrong digest size.  Replay is checked
against `reference_replay`, a PCR extend written here from the spec, not from the code.

Real firmware logs are in `test_eventlog_real_logs.py`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.evidence.errors import EventLogMalformed
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    MAX_EVENT_LOG_BYTES,
    NO_PCR,
    SPEC_ID_SIGNATURE,
    STARTUP_LOCALITY_SIGNATURE,
    EventLog,
    LogFormat,
    parse_event_log,
    replay,
)
from verifier.evidence.eventlog_encode import EventRecord, encode_crypto_agile, encode_legacy
from verifier.evidence.tpm_structures import HashAlg

BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)
SHA3_256 = 0x0027  # TCG Algorithm Registry: TPM_ALG_SHA3_256, unknown to Lightgate
EV_NO_ACTION = int(EventType.EV_NO_ACTION)


# --- building logs byte by byte (independent of the encoders) -------------------------


def legacy_event(pcr: int, event_type: int, digest: bytes, data: bytes) -> bytes:
    """TCG_PCR_EVENT (PFP 10.2.1): pcrIndex, eventType, SHA-1 digest, eventSize, event."""
    return struct.pack("<II20sI", pcr, event_type, digest, len(data)) + data


def spec_id_header(
    algorithms: Sequence[tuple[int, int]],
    *,
    vendor_info: bytes = b"",
    vendor_size: int | None = None,
    uintn: int = 2,
    pcr: int = 0,
    digest: bytes = bytes(20),
) -> bytes:
    """The Spec ID Event03 header record (PFP 10.4.5.1) declaring (TPM_ALG_ID, size)s;
    `vendor_size` overrides vendorInfoSize, the other keywords the record's own fields."""
    body = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, uintn, len(algorithms))
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms)
    size = len(vendor_info) if vendor_size is None else vendor_size
    body += bytes([size]) + vendor_info
    return legacy_event(pcr, EV_NO_ACTION, digest, body)


def event2(
    pcr: int,
    event_type: int,
    digests: Sequence[tuple[int, bytes]],
    data: bytes,
    *,
    count: int | None = None,
) -> bytes:
    """TCG_PCR_EVENT2 (PFP 10.2.2); `count` overrides TPML_DIGEST_VALUES.count."""
    out = struct.pack("<III", pcr, event_type, len(digests) if count is None else count)
    out += b"".join(struct.pack("<H", alg) + digest for alg, digest in digests)
    return out + struct.pack("<I", len(data)) + data


def standard_header(banks: Sequence[HashAlg]) -> bytes:
    return spec_id_header([(int(bank), bank.digest_size) for bank in banks])


def measurement(bank: HashAlg, text: str) -> bytes:
    return bank.digest(text.encode())


def record(
    pcr: int, event_type: int, text: str, banks: Sequence[HashAlg] = BANKS[:2]
) -> EventRecord:
    """An event whose digests are the hash of `text` in each bank."""
    return EventRecord(pcr, event_type, {b: measurement(b, text) for b in banks}, text.encode())


def locality_record(locality: int, banks: Sequence[HashAlg] = BANKS[:2]) -> EventRecord:
    """TCG_EfiStartupLocalityEvent (PFP 10.4.5.3): an EV_NO_ACTION in PCR0, zero digests."""
    data = STARTUP_LOCALITY_SIGNATURE + bytes([locality])
    return EventRecord(0, EV_NO_ACTION, {b: bytes(b.digest_size) for b in banks}, data)


# --- an independent replay ------------------------------------------------------------


def reference_replay(
    banks: Sequence[HashAlg], records: Sequence[EventRecord], locality: int = 0
) -> dict[HashAlg, dict[int, bytes]]:
    """PCR[n] = H(PCR[n] || digest) for every record the spec extends: not EV_NO_ACTION
    (PFP 10.4.5) and not PCR 0xFFFFFFFF; PCR0 starts at 00..0L (PFP 10.4.5.3)."""
    out: dict[HashAlg, dict[int, bytes]] = {}
    for bank in banks:
        values: dict[int, bytes] = {}
        for rec in records:
            if rec.event_type == EV_NO_ACTION or rec.pcr == 0xFFFFFFFF:
                continue
            start = values.get(rec.pcr)
            if start is None:
                start = bytes(bank.digest_size)
                if rec.pcr == 0:
                    start = start[:-1] + bytes([locality])
            values[rec.pcr] = hashlib.new(bank.name.lower(), start + rec.digests[bank]).digest()
        out[bank] = values
    return out


def as_dict(pcrs: Mapping[HashAlg, Mapping[int, bytes]]) -> dict[HashAlg, dict[int, bytes]]:
    return {bank: dict(values) for bank, values in pcrs.items()}


def assert_malformed(raw: bytes, *, event: int | None = None, offset: int | None = None) -> str:
    """Parse `raw`, expect EventLogMalformed at the given record; return its detail."""
    with pytest.raises(EventLogMalformed) as caught:
        parse_event_log(raw)
    if event is not None:
        assert caught.value.event == event, caught.value.reason
    if offset is not None:
        assert caught.value.offset == offset, caught.value.reason
    return caught.value.detail


# --- Hypothesis strategies ------------------------------------------------------------

bank_subsets = st.lists(st.sampled_from(BANKS), min_size=1, max_size=len(BANKS), unique=True)
event_types = st.one_of(st.sampled_from([int(t) for t in EventType]), st.integers(0, 0xFFFFFFFF))


def _plain_data(data: bytes) -> bool:
    # Data that would make a record a StartupLocality event or (first in a legacy log) a
    # Spec ID header changes the log's meaning; those have their own named tests.
    return not data.startswith((STARTUP_LOCALITY_SIGNATURE, SPEC_ID_SIGNATURE))


@st.composite
def event_records(draw: st.DrawFn, banks: Sequence[HashAlg]) -> EventRecord:
    event_type = draw(event_types)
    if event_type == EV_NO_ACTION:
        pcr = draw(st.one_of(st.integers(0, 31), st.integers(0, 0xFFFFFFFF)))
    else:
        pcr = draw(st.one_of(st.integers(0, 31), st.just(NO_PCR)))
    digests = {
        bank: draw(st.binary(min_size=bank.digest_size, max_size=bank.digest_size))
        for bank in banks
    }
    data = draw(st.binary(max_size=48).filter(_plain_data))
    return EventRecord(pcr, event_type, digests, data)


@st.composite
def agile_logs(
    draw: st.DrawFn,
) -> tuple[list[HashAlg], list[EventRecord], int | None, bytes]:
    """(banks, records, startup locality, encoded log); records exclude the header.
    Digests are drawn in `banks` order, the order the encoder writes them."""
    banks = draw(bank_subsets)
    records = draw(st.lists(event_records(banks), max_size=10))
    locality = draw(st.sampled_from([None, 0, 3, 4]))
    if locality is not None:
        records = [locality_record(locality, banks), *records]
    return banks, records, locality, encode_crypto_agile(banks, records)


@st.composite
def legacy_logs(draw: st.DrawFn) -> tuple[list[EventRecord], int | None, bytes]:
    records = draw(st.lists(event_records([HashAlg.SHA1]), min_size=1, max_size=10))
    locality = draw(st.sampled_from([None, 0, 3, 4]))
    if locality is not None:
        records = [locality_record(locality, [HashAlg.SHA1]), *records]
    return records, locality, encode_legacy(records)


def assert_events_match(log: EventLog, records: Sequence[EventRecord], first: int) -> None:
    """events[first:] are `records` in order, numbered and placed without gaps."""
    events = log.events[first:]
    assert len(events) == len(records)
    for index, (event, rec) in enumerate(zip(events, records, strict=True)):
        assert event.number == first + index
        assert event.pcr == rec.pcr
        assert event.event_type == rec.event_type
        assert event.digests == tuple((int(b), d) for b, d in rec.digests.items())
        assert event.data == rec.data
        assert event.extends == (rec.event_type != EV_NO_ACTION and rec.pcr != NO_PCR)
    offsets = [e.offset for e in log.events]
    assert offsets == sorted(offsets) and offsets[0] == 0


# --- round trips ----------------------------------------------------------------------


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(agile_logs())
def test_crypto_agile_round_trip_and_replay(
    case: tuple[list[HashAlg], list[EventRecord], int | None, bytes],
) -> None:
    banks, records, locality, raw = case
    log = parse_event_log(raw)
    assert log.format is LogFormat.CRYPTO_AGILE
    assert log.banks == tuple(banks)
    assert log.spec_id is not None
    assert log.spec_id.algorithms == tuple((int(b), b.digest_size) for b in banks)
    assert log.size == len(raw) and log.sha256 == hashlib.sha256(raw).digest()
    assert log.events[0].event_type == EV_NO_ACTION and not log.events[0].extends
    assert_events_match(log, records, first=1)
    assert log.startup_locality == locality
    assert as_dict(replay(log).pcrs) == reference_replay(banks, records, locality or 0)


@settings(max_examples=60)
@given(legacy_logs())
def test_legacy_round_trip_and_replay(case: tuple[list[EventRecord], int | None, bytes]) -> None:
    records, locality, raw = case
    log = parse_event_log(raw)
    assert log.format is LogFormat.LEGACY_SHA1
    assert log.spec_id is None and log.uintn_size is None
    assert log.banks == (HashAlg.SHA1,)
    assert log.startup_locality == locality
    assert_events_match(log, records, first=0)
    expected = reference_replay([HashAlg.SHA1], records, locality or 0)
    assert as_dict(replay(log).pcrs) == expected


def test_spec_id_fields_round_trip() -> None:
    raw = encode_crypto_agile(
        [HashAlg.SHA256], [], uintn_size=4, vendor_info=b"vendor", spec_version=(2, 0, 1)
    )
    log = parse_event_log(raw)
    assert log.spec_id is not None
    assert log.spec_id.spec_version == (2, 0, 1)
    assert log.spec_id.vendor_info == b"vendor"
    assert log.uintn_size == 4
    assert len(log.events) == 1
    assert as_dict(replay(log).pcrs) == {HashAlg.SHA256: {}}


def test_encoders_agree_with_hand_built_bytes() -> None:
    banks = [HashAlg.SHA1, HashAlg.SHA256]
    rec = record(4, EventType.EV_SEPARATOR, "sep", banks)
    built = standard_header(banks) + event2(
        4, EventType.EV_SEPARATOR, [(int(b), rec.digests[b]) for b in banks], b"sep"
    )
    assert encode_crypto_agile(banks, [rec]) == built
    assert encode_legacy([rec]) == legacy_event(
        4, EventType.EV_SEPARATOR, rec.digests[HashAlg.SHA1], b"sep"
    )


# --- truncation, random bytes, mutations: only EventLogMalformed ----------------------


def _sample_agile_log() -> bytes:
    banks = [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384]
    records = [
        locality_record(3, banks),
        record(0, EventType.EV_S_CRTM_VERSION, "crtm", banks),
        record(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, "SecureBoot", banks),
        EventRecord(0, EV_NO_ACTION, {b: bytes(b.digest_size) for b in banks}, b""),
        record(4, EventType.EV_SEPARATOR, "", banks),
        record(NO_PCR, EventType.EV_EVENT_TAG, "trust point", banks),
    ]
    return encode_crypto_agile(banks, records, vendor_info=b"\x01\x02")


def _sample_legacy_log() -> bytes:
    sha1 = [HashAlg.SHA1]
    return encode_legacy(
        [
            record(0, EventType.EV_S_CRTM_VERSION, "crtm", sha1),
            record(5, EventType.EV_EFI_ACTION, "Calling EFI Application", sha1),
            record(4, EventType.EV_SEPARATOR, "", sha1),
        ]
    )


@pytest.mark.parametrize(
    "raw", [_sample_agile_log(), _sample_legacy_log()], ids=["agile", "legacy"]
)
def test_every_truncation_parses_at_a_record_boundary_or_is_malformed(raw: bytes) -> None:
    full = parse_event_log(raw)
    # A prefix that ends where record k starts holds records 0..k-1 (at least one).
    boundaries = {e.offset: i for i, e in enumerate(full.events) if i > 0}
    boundaries[len(raw)] = len(full.events)
    for length in range(len(raw) + 1):
        prefix = raw[:length]
        if length in boundaries:
            log = parse_event_log(prefix)
            assert log.events == full.events[: boundaries[length]], length
            assert log.format is full.format
        else:
            with pytest.raises(EventLogMalformed):
                parse_event_log(prefix)


def _parse_and_replay_or_malformed(raw: bytes) -> None:
    """Parse and replay `raw`; EventLogMalformed is the only exception allowed."""
    try:
        log = parse_event_log(raw)
    except EventLogMalformed as error:
        assert isinstance(error.offset, int) and 0 <= error.offset <= len(raw)
        assert isinstance(error.event, int) and error.event >= 0
        return
    assert log.size == len(raw)
    result = replay(log)
    for bank, values in result.pcrs.items():
        assert bank in log.banks
        assert all(len(v) == bank.digest_size for v in values.values())
        assert set(values) <= {e.pcr for e in log.events if e.extends}


@settings(max_examples=150)
@given(st.binary(max_size=400))
def test_random_bytes_parse_or_raise_malformed(raw: bytes) -> None:
    _parse_and_replay_or_malformed(raw)


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_random_bytes_behind_a_valid_header_parse_or_raise_malformed(tail: bytes) -> None:
    _parse_and_replay_or_malformed(standard_header([HashAlg.SHA1, HashAlg.SHA256]) + tail)


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


def _mutate(raw: bytes, operations: Sequence[tuple[str, int, int]]) -> bytes:
    out = bytearray(raw)
    for operation, position, value in operations:
        index = position % (len(out) + 1)
        if operation == "insert":
            out.insert(index, value)
        elif out:
            index %= len(out)
            if operation == "flip":
                out[index] ^= value or 0x80
            else:
                del out[index]
    return bytes(out)


@settings(max_examples=200)
@given(st.sampled_from([_sample_agile_log(), _sample_legacy_log()]), mutations)
def test_mutated_logs_parse_or_raise_malformed(
    raw: bytes, operations: list[tuple[str, int, int]]
) -> None:
    _parse_and_replay_or_malformed(_mutate(raw, operations))


def test_empty_and_short_logs_are_malformed() -> None:
    assert "shorter than one record" in assert_malformed(b"", event=0, offset=0)
    assert "shorter than one record" in assert_malformed(bytes(31), event=0, offset=0)


# --- EV_NO_ACTION, StartupLocality, PCR indices ----------------------------------------


def test_ev_no_action_is_never_extended() -> None:
    banks = [HashAlg.SHA1, HashAlg.SHA256]
    measured = record(1, EventType.EV_EFI_VARIABLE_BOOT, "BootOrder", banks)
    # Non-zero digests, in a PCR that is extended and in one that is not.
    noise = [
        EventRecord(1, EV_NO_ACTION, {b: measurement(b, "x") for b in banks}, b"vendor"),
        EventRecord(2, EV_NO_ACTION, {b: measurement(b, "y") for b in banks}, b"SP800-155"),
    ]
    plain = replay(parse_event_log(encode_crypto_agile(banks, [measured])))
    noisy = parse_event_log(encode_crypto_agile(banks, [noise[0], measured, noise[1]]))
    assert not any(e.extends for e in noisy.events if e.event_type == EV_NO_ACTION)
    assert as_dict(replay(noisy).pcrs) == as_dict(plain.pcrs)
    assert 2 not in replay(noisy).pcrs[HashAlg.SHA256]
    legacy = parse_event_log(encode_legacy([noise[0], measured, noise[1]]))
    assert as_dict(replay(legacy).pcrs) == {HashAlg.SHA1: dict(plain.pcrs[HashAlg.SHA1])}


@pytest.mark.parametrize("locality", [3, 4])
@pytest.mark.parametrize("legacy", [False, True], ids=["agile", "legacy"])
def test_startup_locality_sets_pcr0_last_byte(locality: int, legacy: bool) -> None:
    banks = [HashAlg.SHA1] if legacy else [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384]
    crtm = record(0, EventType.EV_S_CRTM_VERSION, "crtm", banks)
    other = record(1, EventType.EV_EFI_HANDOFF_TABLES, "tables", banks)
    records = [locality_record(locality, banks), crtm, other]
    raw = encode_legacy(records) if legacy else encode_crypto_agile(banks, records)
    log = parse_event_log(raw)
    assert log.startup_locality == locality
    result = replay(log)
    for bank in banks:
        start = bytes(bank.digest_size - 1) + bytes([locality])
        assert log.initial_value(bank, 0) == start
        assert log.initial_value(bank, 1) == bytes(bank.digest_size)  # PCR0 only
        assert result.pcrs[bank][0] == bank.digest(start + crtm.digests[bank])
        assert result.pcrs[bank][1] == bank.digest(bytes(bank.digest_size) + other.digests[bank])


def test_startup_locality_zero_leaves_pcr0_at_zero() -> None:
    banks = [HashAlg.SHA256]
    crtm = record(0, EventType.EV_S_CRTM_VERSION, "crtm", banks)
    log = parse_event_log(encode_crypto_agile(banks, [locality_record(0, banks), crtm]))
    assert log.startup_locality == 0
    assert replay(log).pcrs[HashAlg.SHA256][0] == HashAlg.SHA256.digest(
        bytes(32) + crtm.digests[HashAlg.SHA256]
    )


def _locality_log(records: Sequence[EventRecord]) -> bytes:
    return encode_crypto_agile(BANKS[:2], records)


def test_startup_locality_after_a_pcr0_extend_is_malformed() -> None:
    crtm = record(0, EventType.EV_S_CRTM_VERSION, "crtm")
    raw = _locality_log([crtm, locality_record(3)])
    detail = assert_malformed(raw, event=2, offset=parse_event_log(_locality_log([crtm])).size)
    assert "after PCR0" in detail


def test_startup_locality_after_other_pcrs_is_accepted() -> None:
    # Only a PCR0 extend must precede it (PFP 10.4.5.3): PCR1 events may come first.
    log = parse_event_log(
        _locality_log([record(1, EventType.EV_EFI_HANDOFF_TABLES, "t"), locality_record(3)])
    )
    assert log.startup_locality == 3


def test_two_startup_locality_events_are_malformed() -> None:
    raw = _locality_log([locality_record(3), locality_record(3)])
    assert "second StartupLocality" in assert_malformed(raw, event=2)


@pytest.mark.parametrize("locality", [1, 2, 5, 255])
def test_startup_locality_outside_0_3_4_is_malformed(locality: int) -> None:
    raw = _locality_log([locality_record(locality)])
    assert "not 0, 3 or 4" in assert_malformed(raw, event=1)


@pytest.mark.parametrize(
    "data",
    [STARTUP_LOCALITY_SIGNATURE, STARTUP_LOCALITY_SIGNATURE + b"\x03\x00"],
    ids=["16-bytes", "18-bytes"],
)
def test_startup_locality_of_wrong_length_is_malformed(data: bytes) -> None:
    event = EventRecord(0, EV_NO_ACTION, {b: bytes(b.digest_size) for b in BANKS[:2]}, data)
    assert "StartupLocality event is" in assert_malformed(_locality_log([event]), event=1)


@pytest.mark.parametrize("event_type", [EventType.EV_EVENT_TAG, EventType.EV_NO_ACTION])
def test_pcr_index_ffffffff_is_not_extended(event_type: EventType) -> None:
    banks = [HashAlg.SHA256]
    trust_point = record(NO_PCR, event_type, "WBCL trust point", banks)
    separator = record(4, EventType.EV_SEPARATOR, "", banks)
    log = parse_event_log(encode_crypto_agile(banks, [separator, trust_point]))
    assert log.events[-1].pcr == NO_PCR and not log.events[-1].extends
    assert as_dict(replay(log).pcrs) == reference_replay(banks, [separator])
    legacy = parse_event_log(encode_legacy([record(NO_PCR, event_type, "tp", [HashAlg.SHA1])]))
    assert as_dict(replay(legacy).pcrs) == {HashAlg.SHA1: {}}


@pytest.mark.parametrize("pcr", [32, 40, 0xFFFFFFFE])
def test_pcr_index_out_of_range_on_an_extending_event_is_malformed(pcr: int) -> None:
    good = record(4, EventType.EV_SEPARATOR, "")
    bad = record(pcr, EventType.EV_SEPARATOR, "")
    prefix = encode_crypto_agile(BANKS[:2], [good])
    raw = encode_crypto_agile(BANKS[:2], [good, bad])
    detail = assert_malformed(raw, event=2, offset=len(prefix))
    assert f"PCR index {pcr}" in detail and "EV_SEPARATOR" in detail
    sha1 = [HashAlg.SHA1]
    legacy = encode_legacy(
        [record(4, EventType.EV_SEPARATOR, "", sha1), record(pcr, EventType.EV_SEPARATOR, "", sha1)]
    )
    assert_malformed(legacy, event=1, offset=32)


def test_pcr_index_40_on_ev_no_action_is_accepted() -> None:
    vendor = EventRecord(40, EV_NO_ACTION, {b: bytes(b.digest_size) for b in BANKS[:2]}, b"v")
    log = parse_event_log(encode_crypto_agile(BANKS[:2], [vendor]))
    assert log.events[1].pcr == 40 and not log.events[1].extends
    assert as_dict(replay(log).pcrs) == {HashAlg.SHA1: {}, HashAlg.SHA256: {}}
    legacy_vendor = EventRecord(40, EV_NO_ACTION, {HashAlg.SHA1: bytes(20)}, b"v")
    legacy = parse_event_log(encode_legacy([legacy_vendor]))
    assert legacy.events[0].pcr == 40


# --- TPML_DIGEST_VALUES against the header --------------------------------------------


def _two_bank_log(*events: bytes) -> bytes:
    return standard_header([HashAlg.SHA1, HashAlg.SHA256]) + b"".join(events)


SHA1_D = (int(HashAlg.SHA1), bytes(range(20)))
SHA256_D = (int(HashAlg.SHA256), bytes(range(32)))


def test_hand_built_two_bank_log_parses() -> None:
    raw = _two_bank_log(event2(4, EventType.EV_SEPARATOR, [SHA1_D, SHA256_D], b""))
    log = parse_event_log(raw)
    assert log.events[1].digests == (SHA1_D, SHA256_D)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_digest_count_other_than_declared_banks_is_malformed(count: int) -> None:
    digests = [SHA1_D, SHA256_D, SHA1_D][:count]
    raw = _two_bank_log(event2(4, EventType.EV_SEPARATOR, digests, b""))
    detail = assert_malformed(raw, event=1, offset=len(standard_header(BANKS[:2])))
    assert f"count {count}" in detail and "declares 2" in detail


def test_count_field_lying_about_the_digests_is_malformed() -> None:
    # Two digests present, count says one: the sha256 digest is read as eventSize + data.
    raw = _two_bank_log(event2(4, EventType.EV_SEPARATOR, [SHA1_D, SHA256_D], b"", count=1))
    assert_malformed(raw, event=1)


def test_undeclared_digest_algorithm_is_malformed() -> None:
    sha384 = (int(HashAlg.SHA384), bytes(48))
    raw = _two_bank_log(event2(4, EventType.EV_SEPARATOR, [SHA1_D, sha384], b""))
    assert "0x000c is not declared" in assert_malformed(raw, event=1)


def test_duplicate_digest_algorithm_is_malformed() -> None:
    raw = _two_bank_log(event2(4, EventType.EV_SEPARATOR, [SHA256_D, SHA256_D], b""))
    assert "0x000b twice" in assert_malformed(raw, event=1)


def test_second_record_is_reported_at_its_own_offset() -> None:
    good = event2(4, EventType.EV_SEPARATOR, [SHA1_D, SHA256_D], b"")
    bad = event2(5, EventType.EV_SEPARATOR, [SHA256_D, SHA256_D], b"")
    header = standard_header(BANKS[:2])
    assert_malformed(_two_bank_log(good, bad), event=2, offset=len(header) + len(good))


@pytest.mark.parametrize("size", [20, 31, 33, 48])
def test_declared_digest_size_wrong_for_sha256_is_malformed(size: int) -> None:
    raw = spec_id_header([(int(HashAlg.SHA1), 20), (int(HashAlg.SHA256), size)])
    assert f"sha256 digestSize {size}" in assert_malformed(raw, event=0, offset=0)


def test_algorithm_declared_twice_is_malformed() -> None:
    raw = spec_id_header([(int(HashAlg.SHA256), 32), (int(HashAlg.SHA256), 32)])
    assert "twice" in assert_malformed(raw, event=0, offset=0)


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (spec_id_header([(4, 20)], pcr=1), "PCR0 with a zero digest"),
        (spec_id_header([(4, 20)], digest=b"\x01" * 20), "PCR0 with a zero digest"),
        (spec_id_header([]), "numberOfAlgorithms 0"),
        (spec_id_header([(4, 20)], uintn=3), "uintnSize 3"),
        (spec_id_header([(4, 20)], vendor_info=b"ab", vendor_size=3), "vendorInfoSize 3"),
        (spec_id_header([(4, 20)], vendor_info=b"ab", vendor_size=1), "vendorInfoSize 1"),
        (spec_id_header([(SHA3_256, 0)]), "digestSize 0"),
        (spec_id_header([(SHA3_256, 65)]), "digestSize 65"),
    ],
    ids=[
        "not-pcr0",
        "non-zero-digest",
        "no-algorithms",
        "uintn-3",
        "vendor-info-short",
        "vendor-info-long",
        "unknown-alg-size-0",
        "unknown-alg-size-65",
    ],
)
def test_malformed_spec_id_headers(header: bytes, detail: str) -> None:
    assert detail in assert_malformed(header, event=0, offset=0)


def test_spec_id_header_cut_inside_its_algorithms_is_malformed() -> None:
    header = spec_id_header([(4, 20), (11, 32)])
    body = header[32:-5]  # numberOfAlgorithms says 2; only one (and a half) follow
    assert "beyond its data" in assert_malformed(legacy_event(0, EV_NO_ACTION, bytes(20), body))


def test_unknown_header_algorithm_parses_and_its_bank_is_not_replayed() -> None:
    sha3 = (SHA3_256, bytes(range(32)))
    header = spec_id_header([(int(HashAlg.SHA256), 32), (SHA3_256, 32)])
    sha256 = (int(HashAlg.SHA256), HashAlg.SHA256.digest(b"sep"))
    raw = header + event2(4, EventType.EV_SEPARATOR, [sha256, sha3], b"sep")
    log = parse_event_log(raw)
    assert log.spec_id is not None
    assert log.spec_id.algorithms == ((int(HashAlg.SHA256), 32), (SHA3_256, 32))
    assert log.banks == (HashAlg.SHA256,)
    assert log.events[1].digests == (sha256, sha3)
    result = replay(log)
    assert list(result.pcrs) == [HashAlg.SHA256]
    assert result.pcrs[HashAlg.SHA256][4] == HashAlg.SHA256.digest(bytes(32) + sha256[1])


def test_only_unknown_header_algorithms_give_no_banks() -> None:
    raw = spec_id_header([(SHA3_256, 32)]) + event2(4, 4, [(SHA3_256, bytes(32))], b"")
    log = parse_event_log(raw)
    assert log.banks == ()
    assert as_dict(replay(log).pcrs) == {}


# --- size limit, digests ---------------------------------------------------------------


class _HugeLog(bytes):
    """Claims to be 5 GiB.  Its content is a valid log, so any error other than the size
    refusal would show the parser read it before checking the size."""

    def __len__(self) -> int:
        return 5 * 1024**3


def test_oversize_log_is_refused_before_it_is_read() -> None:
    huge = _HugeLog(_sample_legacy_log())
    detail = assert_malformed(huge, event=0, offset=0)
    assert f"{5 * 1024**3} bytes; the limit is {MAX_EVENT_LOG_BYTES}" in detail


def test_log_over_max_size_is_malformed() -> None:
    raw = _sample_agile_log()
    assert parse_event_log(raw, max_size=len(raw)).size == len(raw)
    detail = assert_malformed_with_limit(raw, len(raw) - 1)
    assert f"log is {len(raw)} bytes; the limit is {len(raw) - 1}" in detail
    with pytest.raises(EventLogMalformed, match="the limit is"):
        parse_event_log(bytes(MAX_EVENT_LOG_BYTES + 1))


def assert_malformed_with_limit(raw: bytes, max_size: int) -> str:
    with pytest.raises(EventLogMalformed) as caught:
        parse_event_log(raw, max_size=max_size)
    assert (caught.value.offset, caught.value.event) == (0, 0)
    return caught.value.detail


def test_logged_digest_is_extended_not_the_hash_of_data() -> None:
    # Real firmware logs data that does not hash to its digest (gdc-host's S-CRTM
    # version, grub strings): replay must extend what the TPM was given.
    banks = [HashAlg.SHA1, HashAlg.SHA256]
    logged = {b: measurement(b, "what the firmware extended") for b in banks}
    event = EventRecord(0, EventType.EV_S_CRTM_VERSION, logged, b"a different string")
    result = replay(parse_event_log(encode_crypto_agile(banks, [event])))
    for bank in banks:
        size = bank.digest_size
        assert result.pcrs[bank][0] == bank.digest(bytes(size) + logged[bank])
        assert result.pcrs[bank][0] != bank.digest(bytes(size) + bank.digest(event.data))


def test_replay_appends_extra_events_without_changing_the_log() -> None:
    banks = [HashAlg.SHA256]
    first = record(5, EventType.EV_EFI_ACTION, "a", banks)
    second = record(5, EventType.EV_EFI_ACTION, "b", banks)
    log = parse_event_log(encode_crypto_agile(banks, [first]))
    extra = parse_event_log(encode_crypto_agile(banks, [second])).events[1:]
    assert as_dict(replay(log, extra).pcrs) == reference_replay(banks, [first, second])
    assert as_dict(replay(log).pcrs) == reference_replay(banks, [first])
    assert len(log.events) == 2


def test_event_type_names() -> None:
    log = parse_event_log(encode_crypto_agile(BANKS[:2], [record(0, 0x0000040E, "vendor")]))
    assert log.events[0].type_name == "EV_NO_ACTION"
    assert log.events[1].type_name == "EV_0x0000040E"


def test_replay_to_json() -> None:
    banks = [HashAlg.SHA256]
    log = parse_event_log(encode_crypto_agile(banks, [record(4, EventType.EV_SEPARATOR, "")]))
    document = replay(log).to_json()
    assert document == {"banks": {"sha256": {"4": replay(log).pcrs[HashAlg.SHA256][4].hex()}}}

"""Lightgate's runtime event log checked against quoted PCRs: `verify_runtime_log`.

Logs are built with `encode_runtime_log` (or by hand with `encode_crypto_agile` where a
test needs a log the agent would never write); "quoted" values are what a TPM holds
after extending the events the test describes, computed with a plain extend.  One test
per way to refuse, and per attack.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.evidence.errors import (
    RuntimeLogBankMissing,
    RuntimeLogDigestMismatch,
    RuntimeLogMalformed,
    RuntimeLogReplayMismatch,
    RuntimePcrNotQuoted,
)
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog_encode import EventRecord, encode_crypto_agile, encode_legacy
from verifier.evidence.images import ImageRecord, encode_image_event
from verifier.evidence.runtime_log import (
    TAGGED_EVENT_ASSET_TAG,
    TAGGED_EVENT_IMAGE,
    TaggedEvent,
    encode_runtime_log,
    expected_pcr,
    tagged_event_data,
    verify_runtime_log,
)
from verifier.evidence.tpm_structures import HashAlg

SHA1, SHA256, SHA384 = HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384
PCR = 13
TAG_1 = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2RlLTEifQ.c2lnbmF0dXJl"
TAG_2 = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2RlLTIifQ.c2lnbmF0dXJl"

Quoted = dict[HashAlg, dict[int, bytes]]


def tag(token: str, pcr: int = PCR) -> TaggedEvent:
    return TaggedEvent(pcr, TAGGED_EVENT_ASSET_TAG, token.encode("ascii"))


def quoted_after(events: Sequence[TaggedEvent], banks: Sequence[HashAlg]) -> Quoted:
    """PCR 0 and the runtime PCR, as a TPM that extended `events` would quote them."""
    return {bank: {0: bytes(bank.digest_size), PCR: expected_pcr(events, bank)} for bank in banks}


def test_tagged_event_data_is_the_pfp_structure_little_endian() -> None:
    # PFP 1.05, 10.2.6: UINT32 taggedEventID, UINT32 taggedEventDataSize, data.
    assert tagged_event_data(0x4C470001, b"abc") == b"\x01\x00\x47\x4c\x03\x00\x00\x00abc"


WEB = ImageRecord("registry.example/web:1.4", "sha256:" + "ab" * 32, "containerd")


def image(record: ImageRecord) -> TaggedEvent:
    return TaggedEvent(PCR, TAGGED_EVENT_IMAGE, encode_image_event(record))


def test_round_trip_returns_events_and_the_current_tag() -> None:
    events = [tag(TAG_1), image(WEB), tag(TAG_2)]
    raw = encode_runtime_log(events, (SHA256,))
    verified = verify_runtime_log(raw, quoted_after(events, (SHA256,)), PCR, node_id="n1")
    assert verified.present
    assert verified.events == tuple(events)
    assert verified.asset_tags == (TAG_1, TAG_2)
    assert verified.current_asset_tag == TAG_2
    assert verified.images == (WEB,)
    assert verified.banks == (SHA256,)


@given(st.lists(st.binary(max_size=64).map(lambda b: b.hex()), max_size=8))
def test_any_sequence_of_tags_round_trips(tokens: list[str]) -> None:
    events = [tag(token or "x") for token in tokens]
    raw = encode_runtime_log(events, (SHA1, SHA256))
    verified = verify_runtime_log(raw, quoted_after(events, (SHA1, SHA256)), PCR)
    assert verified.events == tuple(events)


def test_multiple_banks_are_all_compared() -> None:
    events = [tag(TAG_1)]
    raw = encode_runtime_log(events, (SHA1, SHA256, SHA384))
    quoted = quoted_after(events, (SHA1, SHA256, SHA384))
    assert verify_runtime_log(raw, quoted, PCR).banks == (SHA1, SHA256, SHA384)
    quoted[SHA1][PCR] = bytes(20)  # only the SHA-1 bank disagrees
    with pytest.raises(RuntimeLogReplayMismatch) as refused:
        verify_runtime_log(raw, quoted, PCR)
    assert set(refused.value.mismatches) == {"sha1"}


def test_replay_mismatch_names_pcr_bank_expected_and_actual() -> None:
    logged = [tag(TAG_1)]
    measured = [tag(TAG_2)]  # the TPM saw another tag than the log claims
    raw = encode_runtime_log(logged, (SHA256,))
    with pytest.raises(RuntimeLogReplayMismatch) as refused:
        verify_runtime_log(raw, quoted_after(measured, (SHA256,)), PCR, node_id="n1")
    error = refused.value
    assert error.check == "runtime-log-replay"
    assert error.pcr == PCR
    replayed, actual = error.mismatches["sha256"]
    assert replayed == expected_pcr(logged, SHA256)
    assert actual == expected_pcr(measured, SHA256)
    assert f"PCR{PCR}" in error.reason and actual.hex() in error.reason and "n1" in error.reason


def test_truncated_log_is_refused() -> None:
    """An agent that drops its last record (to hide a tag change) no longer replays."""
    events = [tag(TAG_1), tag(TAG_2)]
    raw = encode_runtime_log(events[:1], (SHA256,))
    with pytest.raises(RuntimeLogReplayMismatch):
        verify_runtime_log(raw, quoted_after(events, (SHA256,)), PCR)


def test_event_outside_the_runtime_pcr_is_refused() -> None:
    events = [tag(TAG_1, pcr=14)]
    raw = encode_runtime_log(events, (SHA256,))
    with pytest.raises(RuntimeLogMalformed, match="PCR14") as refused:
        verify_runtime_log(raw, quoted_after([], (SHA256,)), PCR)
    assert refused.value.check == "runtime-log" and refused.value.event == 1


def test_event_other_than_ev_event_tag_is_refused() -> None:
    data = tagged_event_data(TAGGED_EVENT_ASSET_TAG, TAG_1.encode())
    record = EventRecord(PCR, EventType.EV_IPL, {SHA256: SHA256.digest(data)}, data)
    raw = encode_crypto_agile((SHA256,), [record])
    with pytest.raises(RuntimeLogMalformed, match="EV_IPL"):
        verify_runtime_log(raw, quoted_after([tag(TAG_1)], (SHA256,)), PCR)


def test_no_action_event_after_the_header_is_refused() -> None:
    record = EventRecord(PCR, EventType.EV_NO_ACTION, {SHA256: bytes(32)}, b"vendor")
    raw = encode_crypto_agile((SHA256,), [record])
    with pytest.raises(RuntimeLogMalformed, match="EV_NO_ACTION"):
        verify_runtime_log(raw, quoted_after([], (SHA256,)), PCR)


def _raw_tag_record(data: bytes) -> bytes:
    record = EventRecord(PCR, EventType.EV_EVENT_TAG, {SHA256: SHA256.digest(data)}, data)
    return encode_crypto_agile((SHA256,), [record])


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"\x01\x00\x47", "under 8"),
        (struct.pack("<II", TAGGED_EVENT_ASSET_TAG, 10) + b"short", "taggedEventDataSize 10"),
        (struct.pack("<II", TAGGED_EVENT_ASSET_TAG, 1) + b"ab", "taggedEventDataSize 1"),
        (tagged_event_data(0x12345678, b"x"), "0x12345678"),
        (tagged_event_data(TAGGED_EVENT_ASSET_TAG, "r\u00e9gion".encode()), "printable ASCII"),
        (tagged_event_data(TAGGED_EVENT_ASSET_TAG, b"a\nb"), "printable ASCII"),
    ],
)
def test_malformed_tagged_event_data_is_refused(data: bytes, detail: str) -> None:
    raw = _raw_tag_record(data)
    quoted = {SHA256: {PCR: SHA256.digest(bytes(32) + SHA256.digest(data))}}
    with pytest.raises(RuntimeLogMalformed, match=detail):
        verify_runtime_log(raw, quoted, PCR)


def test_digest_not_of_the_event_data_is_refused() -> None:
    """The attack: keep the digest the TPM extended, swap the data for another tag.  The
    replay still matches; only the digest check notices."""
    measured = tagged_event_data(TAGGED_EVENT_ASSET_TAG, TAG_1.encode())
    claimed = tagged_event_data(TAGGED_EVENT_ASSET_TAG, TAG_2.encode())
    record = EventRecord(PCR, EventType.EV_EVENT_TAG, {SHA256: SHA256.digest(measured)}, claimed)
    raw = encode_crypto_agile((SHA256,), [record])
    with pytest.raises(RuntimeLogDigestMismatch) as refused:
        verify_runtime_log(raw, quoted_after([tag(TAG_1)], (SHA256,)), PCR)
    assert refused.value.check == "runtime-log-digest"


def test_runtime_pcr_not_quoted_is_refused() -> None:
    events = [tag(TAG_1)]
    raw = encode_runtime_log(events, (SHA256,))
    quoted = {SHA256: {0: bytes(32), 7: bytes(32)}}
    with pytest.raises(RuntimePcrNotQuoted) as refused:
        verify_runtime_log(raw, quoted, PCR)
    assert refused.value.check == "runtime-log-pcr"
    with pytest.raises(RuntimePcrNotQuoted):
        verify_runtime_log(b"", quoted, PCR)  # not even an absent log passes unquoted


def test_no_log_with_a_zero_pcr_is_accepted() -> None:
    verified = verify_runtime_log(b"", quoted_after([], (SHA1, SHA256)), PCR)
    assert not verified.present and verified.events == () and verified.current_asset_tag is None


def test_header_only_log_with_a_zero_pcr_is_accepted() -> None:
    raw = encode_runtime_log([], (SHA256,))
    verified = verify_runtime_log(raw, quoted_after([], (SHA256,)), PCR)
    assert verified.present and verified.events == ()


def test_no_log_with_a_non_zero_pcr_is_refused() -> None:
    """Something extended the runtime PCR and the node sends no record of it."""
    with pytest.raises(RuntimeLogReplayMismatch) as refused:
        verify_runtime_log(b"", quoted_after([tag(TAG_1)], (SHA256,)), PCR)
    assert refused.value.mismatches["sha256"][0] == bytes(32)


def test_quoted_bank_missing_from_the_log_is_refused() -> None:
    events = [tag(TAG_1)]
    raw = encode_runtime_log(events, (SHA256,))
    with pytest.raises(RuntimeLogBankMissing, match="sha1"):
        verify_runtime_log(raw, quoted_after(events, (SHA1, SHA256)), PCR)


def test_only_banks_that_cover_the_runtime_pcr_are_compared() -> None:
    events = [tag(TAG_1)]
    raw = encode_runtime_log(events, (SHA256,))
    quoted = quoted_after(events, (SHA256,)) | {SHA1: {0: bytes(20)}}
    assert verify_runtime_log(raw, quoted, PCR).banks == (SHA256,)


def test_legacy_format_is_refused() -> None:
    data = tagged_event_data(TAGGED_EVENT_ASSET_TAG, TAG_1.encode())
    raw = encode_legacy([EventRecord(PCR, EventType.EV_EVENT_TAG, {SHA1: SHA1.digest(data)}, data)])
    with pytest.raises(RuntimeLogMalformed, match="crypto-agile"):
        verify_runtime_log(raw, {SHA1: {PCR: bytes(20)}}, PCR)


def test_unparseable_log_is_refused_as_runtime_log() -> None:
    raw = encode_runtime_log([tag(TAG_1)], (SHA256,))[:-3]
    with pytest.raises(RuntimeLogMalformed) as refused:
        verify_runtime_log(raw, quoted_after([], (SHA256,)), PCR, node_id="n1")
    assert refused.value.check == "runtime-log" and refused.value.node_id == "n1"


def test_oversized_log_is_refused_unread() -> None:
    events = [tag("x" * 600) for _ in range(4)]
    raw = encode_runtime_log(events, (SHA256,))
    with pytest.raises(RuntimeLogMalformed, match="limit"):
        verify_runtime_log(raw, quoted_after(events, (SHA256,)), PCR, max_bytes=1024)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_runtime_log_errors(raw: bytes) -> None:
    refusals = (
        RuntimeLogMalformed,
        RuntimeLogReplayMismatch,
        RuntimeLogBankMissing,
        RuntimeLogDigestMismatch,
    )
    with contextlib.suppress(*refusals):
        verify_runtime_log(raw, quoted_after([], (SHA256,)), PCR)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"sha256:ab", "not UTF-8 JSON"),
        (b'{"digest":null,"name":"x"}', "exactly"),
        (b'{"digest":"sha256:ab","name":"x","runtime":"containerd"}', "sha256:<64 hex"),
        (b'{"digest":null,"name":"x","runtime":"cri-o"}', "runtime"),
        (b'{"name":"x","digest":null,"runtime":"docker"}', "canonical"),
        (b'{"digest":null,"name":7,"runtime":"docker"}', "strings"),
    ],
)
def test_an_image_event_that_is_not_the_canonical_record_is_refused(data: bytes, why: str) -> None:
    # Canonical form matters: two encodings of one image would be two PCR extends, and
    # a verifier that accepted loose JSON would read what the agent never measured.
    events = [TaggedEvent(PCR, TAGGED_EVENT_IMAGE, data)]
    raw = encode_runtime_log(events, (SHA256,))
    with pytest.raises(RuntimeLogMalformed, match=why) as refused:
        verify_runtime_log(raw, quoted_after(events, (SHA256,)), PCR, node_id="n1")
    assert refused.value.check == "runtime-log"


def test_an_image_hidden_from_the_log_fails_the_replay() -> None:
    # The node ran a miner and sends a log without it: the PCR still holds its extend.
    miner = ImageRecord("registry.example/miner:1", "sha256:" + "cd" * 32, "containerd")
    measured = [image(WEB), image(miner)]
    raw = encode_runtime_log(measured[:1], (SHA256,))
    with pytest.raises(RuntimeLogReplayMismatch):
        verify_runtime_log(raw, quoted_after(measured, (SHA256,)), PCR, node_id="n1")


def test_an_image_swapped_in_the_log_fails_the_replay() -> None:
    miner = ImageRecord("registry.example/miner:1", "sha256:" + "cd" * 32, "containerd")
    disguised = ImageRecord("registry.example/web:1.4", "sha256:" + "ab" * 32, "containerd")
    raw = encode_runtime_log([image(disguised)], (SHA256,))
    with pytest.raises(RuntimeLogReplayMismatch):
        verify_runtime_log(raw, quoted_after([image(miner)], (SHA256,)), PCR, node_id="n1")

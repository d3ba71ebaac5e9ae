"""An event log checked against quoted PCRs: `verify_event_log` and its workaround table.

Logs are hand-built with `encode_crypto_agile` / `encode_legacy`; "quoted" values are
what a TPM would hold after the boot the test describes, computed here with a plain
extend.  The one real log with a firmware quirk (go-attestation's
ebs_event_missing_eventlog) is checked in `test_eventlog_real_logs.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import pytest

from verifier.evidence.errors import EventLogBankMissing, EventLogReplayMismatch
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    STARTUP_LOCALITY_SIGNATURE,
    EventLog,
    parse_event_log,
)
from verifier.evidence.eventlog_encode import EventRecord, encode_crypto_agile, encode_legacy
from verifier.evidence.measured_boot import (
    DEFAULT_LOG_PCRS,
    WORKAROUNDS,
    PcrMismatch,
    verify_event_log,
)
from verifier.evidence.tpm_structures import HashAlg

SHA1, SHA256, SHA384 = HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384
TWO_BANKS = (SHA1, SHA256)
EBS_STRINGS = (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success")

Quoted = dict[HashAlg, dict[int, bytes]]


def measured(pcr: int, event_type: int, text: bytes, banks: Sequence[HashAlg]) -> EventRecord:
    return EventRecord(pcr, event_type, {b: b.digest(text) for b in banks}, text)


def boot(banks: Sequence[HashAlg] = TWO_BANKS) -> list[EventRecord]:
    """A small firmware boot: PCRs 0, 1, 2, 4, 5, 7 (PCRs 3 and 6 see only separators)."""
    events = [
        measured(0, EventType.EV_S_CRTM_VERSION, b"crtm 1.0", banks),
        measured(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, b"blob", banks),
        measured(1, EventType.EV_EFI_HANDOFF_TABLES, b"smbios", banks),
        measured(2, EventType.EV_EFI_BOOT_SERVICES_DRIVER, b"option rom", banks),
        measured(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, b"SecureBoot=1", banks),
    ]
    events += [measured(pcr, EventType.EV_SEPARATOR, b"\0\0\0\0", banks) for pcr in range(8)]
    events += [
        measured(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"shimx64.efi", banks),
        measured(5, EventType.EV_EFI_ACTION, b"Calling EFI Application", banks),
        measured(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"grubx64.efi", banks),
    ]
    return events


def ebs_events(banks: Sequence[HashAlg]) -> list[EventRecord]:
    return [measured(5, EventType.EV_EFI_ACTION, text, banks) for text in EBS_STRINGS]


def extend_all(
    banks: Sequence[HashAlg], records: Sequence[EventRecord], locality: int = 0
) -> Quoted:
    """What a TPM holds after `records` were extended (PCR0 from locality 00..0L)."""
    out: Quoted = {}
    for bank in banks:
        values: dict[int, bytes] = {}
        for rec in records:
            if rec.event_type == EventType.EV_NO_ACTION:
                continue
            start = values.get(rec.pcr)
            if start is None:
                start = bytes(bank.digest_size - 1) + bytes([locality if rec.pcr == 0 else 0])
            values[rec.pcr] = hashlib.new(bank.name.lower(), start + rec.digests[bank]).digest()
        out[bank] = values
    return out


def quote_of(
    values: Mapping[HashAlg, Mapping[int, bytes]], pcrs: Sequence[int] = tuple(range(24))
) -> Quoted:
    """A quote over `pcrs`: the given values, the reset value elsewhere (0, or all ones
    for PCRs 17-22, which TPM2_Startup sets to 0xFF.. on PC Client platforms)."""
    quoted: Quoted = {}
    for bank, given in values.items():
        size = bank.digest_size
        reset = {p: (b"\xff" * size if 17 <= p <= 22 else bytes(size)) for p in pcrs}
        quoted[bank] = {p: given.get(p, reset[p]) for p in pcrs}
    return quoted


def agile(records: Sequence[EventRecord], banks: Sequence[HashAlg] = TWO_BANKS) -> EventLog:
    return parse_event_log(encode_crypto_agile(banks, records))


def refusal(log: EventLog, quoted: Quoted, *, node_id: str | None = None) -> EventLogReplayMismatch:
    with pytest.raises(EventLogReplayMismatch) as caught:
        verify_event_log(log, quoted, node_id=node_id)
    return caught.value


# --- the plain path --------------------------------------------------------------------


def test_matching_log_verifies() -> None:
    records = boot()
    log = agile(records)
    quoted = quote_of(extend_all(TWO_BANKS, records))
    verified = verify_event_log(log, quoted)
    assert verified.log is log
    assert verified.verified_banks == TWO_BANKS
    assert verified.workarounds == ()
    # PCRs 0-9 are the log's (8, 9 checked to be still at their initial value).
    assert verified.verified_pcrs == {bank: frozenset(range(10)) for bank in TWO_BANKS}
    assert verified.claims_bank == SHA256 and verified.claims_pcrs == frozenset(range(10))
    for bank in TWO_BANKS:
        assert dict(verified.replay.pcrs[bank]) == extend_all(TWO_BANKS, records)[bank]
    assert verified.events() == tuple(e for e in log.events if e.pcr < 10)


def test_replay_mismatch_names_bank_pcr_and_both_values() -> None:
    records = boot()
    log = agile(records)
    quoted = quote_of(extend_all(TWO_BANKS, records))
    replayed = quoted[SHA256][4]
    quoted[SHA256][4] = SHA256.digest(b"another boot loader")
    error = refusal(log, quoted, node_id="node-7")
    assert error.check == "event-log-replay"
    message = str(error)
    assert f"sha256 PCR4: log replays to {replayed.hex()}, quoted {quoted[SHA256][4].hex()}" in (
        message
    )
    assert "sha1" not in message  # the sha1 bank agrees
    assert "(node node-7)" in error.reason


def test_every_mismatching_pcr_is_named() -> None:
    records = boot()
    quoted = quote_of(extend_all(TWO_BANKS, records))
    for bank, pcr in ((SHA1, 2), (SHA256, 7), (SHA256, 0)):
        quoted[bank][pcr] = bytes(bank.digest_size)
    message = str(refusal(agile(records), quoted))
    for name in ("sha1 PCR2", "sha256 PCR7", "sha256 PCR0"):
        assert name in message
    assert message.count("log replays to") == 3


def test_pcr_mismatch_describe() -> None:
    mismatch = PcrMismatch(SHA1, 3, b"\x01" * 20, b"\x02" * 20)
    assert mismatch.describe() == f"sha1 PCR3: log replays to {'01' * 20}, quoted {'02' * 20}"


@pytest.mark.parametrize("dropped", [1, 2, 3])
def test_truncated_log_is_refused_and_names_the_pcrs(dropped: int) -> None:
    # The last events (grub in PCR4, "Calling EFI Application" in PCR5, shim in PCR4)
    # are dropped from the log; the TPM measured them all.
    records = boot()
    quoted = quote_of(extend_all(TWO_BANKS, records))
    truncated = agile(records[:-dropped])
    message = str(refusal(truncated, quoted))
    changed = {rec.pcr for rec in records[-dropped:]}
    for bank in TWO_BANKS:
        for pcr in range(24):
            assert (f"{bank.bank_name} PCR{pcr}:" in message) == (pcr in changed), (bank, pcr)


def test_log_truncated_before_a_pcr_is_extended_is_refused() -> None:
    # PCR7's only measurements are dropped, so the log never extends PCR7 at all: it is
    # one of log_pcrs, so the quote must show its initial value, and it does not.
    records = [r for r in boot() if r.pcr != 7]
    quoted = quote_of(extend_all(TWO_BANKS, boot()))
    log = agile(records)
    assert all(e.pcr != 7 for e in log.events)
    message = str(refusal(log, quoted))
    assert f"sha256 PCR7: log replays to {bytes(32).hex()}" in message
    assert f"sha1 PCR7: log replays to {bytes(20).hex()}" in message


def test_pcr_owned_by_the_log_but_not_extended_must_be_initial() -> None:
    records = boot()
    quoted = quote_of(extend_all(TWO_BANKS, records))
    assert verify_event_log(agile(records), quoted).claims_pcrs >= {8, 9}
    quoted[SHA256][9] = SHA256.digest(b"kernel measured by grub, missing from the log")
    message = str(refusal(agile(records), quoted))
    assert f"sha256 PCR9: log replays to {bytes(32).hex()}" in message


def test_unextended_pcr0_must_hold_the_startup_locality() -> None:
    locality = EventRecord(
        0,
        EventType.EV_NO_ACTION,
        {b: bytes(b.digest_size) for b in TWO_BANKS},
        STARTUP_LOCALITY_SIGNATURE + b"\x03",
    )
    log = agile([locality])
    quoted = quote_of({bank: {0: bytes(bank.digest_size - 1) + b"\x03"} for bank in TWO_BANKS})
    assert 0 in verify_event_log(log, quoted).claims_pcrs
    quoted[SHA1][0] = bytes(20)
    assert "sha1 PCR0" in str(refusal(log, quoted))


def test_pcrs_outside_log_pcrs_and_not_extended_are_ignored() -> None:
    records = boot()
    quoted = quote_of(extend_all(TWO_BANKS, records))
    for bank in TWO_BANKS:
        quoted[bank][10] = bank.digest(b"IMA aggregate")  # IMA's log, not this one
        quoted[bank][14] = bank.digest(b"MokListTrusted")  # shim, after boot
        quoted[bank][16] = bank.digest(b"debug")
    verified = verify_event_log(agile(records), quoted)
    assert not verified.claims_pcrs & {10, 14, 16}
    assert all(e.pcr < 10 for e in verified.events())


def test_narrower_log_pcrs_ignores_unextended_pcrs_beyond_them() -> None:
    records = boot()
    quoted = quote_of(extend_all(TWO_BANKS, records))
    quoted[SHA256][9] = SHA256.digest(b"kernel")
    verified = verify_event_log(agile(records), quoted, log_pcrs=frozenset(range(8)))
    assert 9 not in verified.claims_pcrs


def test_pcr_outside_log_pcrs_that_the_log_extends_is_compared() -> None:
    records = [*boot(), measured(12, EventType.EV_IPL, b"systemd-stub cmdline", TWO_BANKS)]
    quoted = quote_of(extend_all(TWO_BANKS, records))
    verified = verify_event_log(agile(records), quoted)
    assert 12 in verified.claims_pcrs
    assert any(e.pcr == 12 for e in verified.events())
    quoted[SHA1][12] = bytes(20)
    assert "sha1 PCR12" in str(refusal(agile(records), quoted))


def test_only_quoted_pcrs_are_verified() -> None:
    # A quote over PCRs 0-7 does not vouch for the log's PCR8/9 events.
    records = [*boot(), measured(8, EventType.EV_IPL, b"grub_cmd: linux", TWO_BANKS)]
    quoted = quote_of(extend_all(TWO_BANKS, records), pcrs=range(8))
    verified = verify_event_log(agile(records), quoted)
    assert verified.claims_pcrs == frozenset(range(8))
    assert all(e.pcr != 8 for e in verified.events())


# --- banks -----------------------------------------------------------------------------


def test_quote_banks_absent_from_the_log_are_refused() -> None:
    legacy = parse_event_log(encode_legacy(boot([SHA1])))
    quoted = quote_of(extend_all([SHA256], boot([SHA256])))
    with pytest.raises(EventLogBankMissing) as caught:
        verify_event_log(legacy, quoted, node_id="node-3")
    assert caught.value.check == "event-log-bank"
    assert "the quote covers sha256; the log has digests for sha1" in str(caught.value)
    assert "node-3" in caught.value.reason
    sha256_log = agile(boot([SHA256]), [SHA256])
    with pytest.raises(EventLogBankMissing):
        verify_event_log(sha256_log, quote_of(extend_all([SHA1, SHA384], boot([SHA1, SHA384]))))


def test_empty_quote_is_refused_for_missing_banks() -> None:
    with pytest.raises(EventLogBankMissing):
        verify_event_log(agile(boot()), {})


def test_legacy_sha1_log_cannot_verify_a_sha256_quote() -> None:
    """A quoted bank the log has no digests for cannot be checked: refused, not skipped
    (DESIGN: missing bank -> refused)."""
    records = boot(TWO_BANKS)
    legacy = parse_event_log(encode_legacy(records))
    quoted = quote_of(extend_all(TWO_BANKS, records))
    with pytest.raises(EventLogBankMissing, match="sha256"):
        verify_event_log(legacy, quoted)
    only_sha1 = {SHA1: quoted[SHA1]}
    verified = verify_event_log(legacy, only_sha1)
    assert verified.verified_banks == (SHA1,) and list(verified.replay.pcrs) == [SHA1]
    only_sha1[SHA1][4] = bytes(20)
    assert "sha1 PCR4" in str(refusal(legacy, only_sha1))


def test_verified_pcrs_are_per_bank() -> None:
    """PCRs 4-9 quoted in sha1 only are not vouched for in sha256: claims use one bank
    (sha256 here) and only the PCRs that bank verified."""
    records = boot(TWO_BANKS)
    log = agile(records)
    values = extend_all(TWO_BANKS, records)
    sha256_low = {pcr: values[SHA256].get(pcr, bytes(32)) for pcr in range(4)}
    sha1_all = {pcr: values[SHA1].get(pcr, bytes(20)) for pcr in range(10)}
    verified = verify_event_log(log, {SHA1: sha1_all, SHA256: sha256_low})
    assert verified.verified_pcrs == {SHA1: frozenset(range(10)), SHA256: frozenset(range(4))}
    assert verified.claims_bank == SHA256
    assert verified.claims_pcrs == frozenset(range(4))
    assert all(e.pcr < 4 for e in verified.events())


def test_log_bank_the_quote_lacks_is_not_needed() -> None:
    records = boot((SHA1, SHA256, SHA384))
    log = agile(records, (SHA1, SHA256, SHA384))
    quoted = quote_of(extend_all([SHA256], records))
    verified = verify_event_log(log, quoted)
    assert verified.verified_banks == (SHA256,)


# --- workarounds -----------------------------------------------------------------------


def test_workaround_table_is_well_formed() -> None:
    names = [w.name for w in WORKAROUNDS]
    assert len(names) == len(set(names))
    for workaround in WORKAROUNDS:
        assert workaround.name and workaround.description and workaround.firmware
        assert 0 <= workaround.pcr < 24
        assert workaround.pcr in DEFAULT_LOG_PCRS


@pytest.mark.parametrize("banks", [(SHA1,), TWO_BANKS], ids=["legacy", "agile"])
def test_missing_exit_boot_services_events_are_worked_around(
    banks: tuple[HashAlg, ...],
) -> None:
    logged = boot(banks)
    measured_by_tpm = [*logged, *ebs_events(banks)]
    raw = encode_legacy(logged) if banks == (SHA1,) else encode_crypto_agile(banks, logged)
    log = parse_event_log(raw)
    quoted = quote_of(extend_all(banks, measured_by_tpm))
    verified = verify_event_log(log, quoted)
    assert verified.workarounds == ("ebs-events-missing",)
    for bank in banks:
        assert verified.replay.pcrs[bank][5] == quoted[bank][5]
    assert verified.log is log  # the log itself is not changed
    # The events the quote proves are kept apart, and claims see them.
    assert [e.data for e in verified.synthesized] == [
        b"Exit Boot Services Invocation",
        b"Exit Boot Services Returned with Success",
    ]
    assert verified.events() == (*log.events, *verified.synthesized)


def test_workaround_not_tried_when_plain_replay_matches() -> None:
    records = [*boot(), *ebs_events(TWO_BANKS)]  # a firmware that logged them
    verified = verify_event_log(agile(records), quote_of(extend_all(TWO_BANKS, records)))
    assert verified.workarounds == ()


def test_pcr5_mismatch_that_is_not_the_ebs_quirk_is_still_refused() -> None:
    logged = boot()
    # The TPM saw the two EBS events and one more PCR5 event the log does not have.
    hidden = measured(5, EventType.EV_EFI_ACTION, b"something else", TWO_BANKS)
    quoted = quote_of(extend_all(TWO_BANKS, [*logged, *ebs_events(TWO_BANKS), hidden]))
    message = str(refusal(agile(logged), quoted))
    # The refusal shows what the log itself replays to, not the patched copy's value.
    plain = extend_all(TWO_BANKS, logged)
    for bank in TWO_BANKS:
        assert f"{bank.bank_name} PCR5: log replays to {plain[bank][5].hex()}" in message


def test_ebs_events_in_the_wrong_order_are_refused() -> None:
    logged = boot()
    quoted = quote_of(extend_all(TWO_BANKS, [*logged, *reversed(ebs_events(TWO_BANKS))]))
    assert "PCR5" in str(refusal(agile(logged), quoted))


def test_workaround_fixing_pcr5_does_not_hide_another_mismatch() -> None:
    logged = boot()
    quoted = quote_of(extend_all(TWO_BANKS, [*logged, *ebs_events(TWO_BANKS)]))
    quoted[SHA256][4] = SHA256.digest(b"another boot loader")
    message = str(refusal(agile(logged), quoted))
    assert "sha256 PCR4" in message
    assert "PCR5" not in message  # the quirk explained PCR5; PCR4 refuses the log


def test_workaround_must_fix_every_bank() -> None:
    logged = boot()
    quoted = quote_of(extend_all(TWO_BANKS, [*logged, *ebs_events(TWO_BANKS)]))
    # sha1 PCR5 has the quirk; sha256 PCR5 is something else entirely.
    quoted[SHA256][5] = SHA256.digest(b"not the quirk")
    message = str(refusal(agile(logged), quoted))
    assert "sha256 PCR5" in message

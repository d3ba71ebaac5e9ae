"""Attacks on measured boot by a node that controls its log's bytes and, being root after
boot, can extend PCRs 0-15 — but cannot rewrite what firmware already measured.  Each
test builds the attack from the fixture boots and shows the appraiser refusing it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lightgate.sim.boot import fixture_path, golden_from_fixture
from verifier.appraisal import BootAppraiser
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    Event,
    EventLog,
    parse_event_log,
    replay,
)
from verifier.evidence.eventlog_encode import EventRecord, encode_crypto_agile
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.tpm_structures import HashAlg

GOLDEN = [golden_from_fixture("good")]


def _log(name: str) -> EventLog:
    return parse_event_log(fixture_path(name).read_bytes())


def _records(events: Iterable[Event]) -> list[EventRecord]:
    return [
        EventRecord(e.pcr, e.event_type, {HashAlg(a): d for a, d in e.digests}, e.data)
        for e in events
        if not e.data.startswith(b"Spec ID Event03")
    ]


def _encode(records: list[EventRecord]) -> bytes:
    return encode_crypto_agile((HashAlg.SHA1, HashAlg.SHA256), records)


def _quote_of(raw: bytes, banks: Iterable[HashAlg] = (HashAlg.SHA256,)) -> PcrValues:
    """What the TPM holds after measuring exactly `raw`'s digests (the node extended
    whatever it appended, so its quote matches its log)."""
    replayed = replay(parse_event_log(raw)).pcrs
    size = {bank: bank.digest_size for bank in banks}
    return PcrValues(
        {bank: {p: replayed[bank].get(p, bytes(size[bank])) for p in range(24)} for bank in banks}
    )


def _refused(raw: bytes, quoted: PcrValues, appraiser: BootAppraiser | None = None) -> list[str]:
    result = (appraiser or BootAppraiser()).appraise("attacker", raw, quoted, GOLDEN)
    return [f.check for f in result.failures]


def _pick(log: EventLog, test: Callable[[Event], bool]) -> list[Event]:
    return [e for e in log.events if test(e)]


def test_good_boot_passes_the_same_harness() -> None:
    raw = _encode(_records(_log("good").events))
    assert _refused(raw, _quote_of(raw)) == []


def test_event_data_rewritten_under_its_digests_is_refused() -> None:
    """Booted with init=/bin/sh, then sent the golden command line as the PCR8 events'
    data under the real digests: the data no longer hashes to its digest, so it claims
    nothing and the measured commands deviate."""
    bad, good = _log("cmdline-changed"), _log("good")
    good_pcr8 = [e.data for e in good.events if e.pcr == 8]
    forged = iter(good_pcr8)
    records = [
        EventRecord(r.pcr, r.event_type, r.digests, next(forged) if r.pcr == 8 else r.data)
        for r in _records(bad.events)
    ]
    raw = _encode(records)
    result = BootAppraiser().appraise("attacker", raw, _quote_of(raw), GOLDEN)
    assert [f.check for f in result.failures] == ["golden-values"]
    assert "kernel.cmdline" in result.failures[0].reason
    assert any(line.startswith("event-data-digest") for line in result.findings)


def test_secure_boot_events_appended_after_boot_are_refused() -> None:
    """Secure Boot was off; root appends (and extends) the golden boot's SecureBoot and
    authority events to PCR7.  Configuration after the PCR7 separator claims nothing."""
    good = _log("good")
    stolen = _pick(
        good,
        lambda e: (
            e.pcr == 7
            and e.event_type
            in (EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, EventType.EV_EFI_VARIABLE_AUTHORITY)
        ),
    )
    raw = _encode([*_records(_log("secure-boot-off").events), *_records(stolen)])
    result = BootAppraiser().appraise("attacker", raw, _quote_of(raw), GOLDEN)
    assert [f.check for f in result.failures] == ["golden-values"]
    assert "secure-boot.enabled: false" in result.failures[0].reason
    assert any("secure-boot-config-late" in line for line in result.findings)


def test_golden_command_line_appended_after_boot_is_refused() -> None:
    good = _log("good")
    stolen = _pick(good, lambda e: e.pcr == 8 and e.data.startswith(b"kernel_cmdline"))
    raw = _encode([*_records(_log("cmdline-changed").events), *_records(stolen)])
    checks = _refused(raw, _quote_of(raw))
    assert checks == ["golden-values"]


def test_extra_initrd_in_an_honest_log_is_refused() -> None:
    """An honest log of a boot that loaded one more initrd: the measured commands and
    files deviate, and the initrd claim is the last one grub loaded."""
    good = _records(_log("good").events)
    evil_cmd = b"grub_cmd: initrd /boot/evil.img\x00"
    extra = [
        EventRecord(
            8,
            EventType.EV_IPL,
            {
                b: b.digest(evil_cmd[len(b"grub_cmd: ") : -1])
                for b in (HashAlg.SHA1, HashAlg.SHA256)
            },
            evil_cmd,
        ),
        EventRecord(
            9,
            EventType.EV_IPL,
            {b: b.digest(b"evil") for b in (HashAlg.SHA1, HashAlg.SHA256)},
            b"/boot/evil.img\x00",
        ),
    ]
    raw = _encode([*good, *extra])
    result = BootAppraiser().appraise("attacker", raw, _quote_of(raw), GOLDEN)
    assert [f.check for f in result.failures] == ["golden-values"]
    assert result.claims is not None and result.claims.kernel.initrd == "/boot/evil.img"


def test_claims_from_pcrs_the_claims_bank_did_not_verify_are_not_made() -> None:
    """sha256 quoted for PCRs 0-7 only, sha1 for all: the kernel's PCRs are vouched for
    in sha1 alone, so sha256-named kernel claims are not made (and golden values refuse)."""
    raw = fixture_path("good").read_bytes()
    full = _quote_of(raw, (HashAlg.SHA1, HashAlg.SHA256))
    partial = PcrValues(
        {
            HashAlg.SHA1: full.banks[HashAlg.SHA1],
            HashAlg.SHA256: {p: v for p, v in full.banks[HashAlg.SHA256].items() if p < 8},
        }
    )
    result = BootAppraiser().appraise("attacker", raw, partial, GOLDEN)
    assert [f.check for f in result.failures] == ["golden-values"]
    assert result.claims is not None and result.claims.kernel.cmdline is None


def test_cached_claims_never_cross_banks() -> None:
    """Node A (sha256 quote) and node B (sha1-only quote) send the same log whose sha256
    bank names the golden kernel but whose sha1 bank is the tampered one: B's claims are
    not A's cached ones."""
    good, tampered = _log("good"), _log("tampered-kernel")
    records = [
        EventRecord(t.pcr, t.event_type, {HashAlg.SHA1: t_sha1, HashAlg.SHA256: g_sha256}, g.data)
        for g, t in zip(good.events[1:], tampered.events[1:], strict=True)
        for g_sha256 in [g.digest(HashAlg.SHA256) or b""]
        for t_sha1 in [t.digest(HashAlg.SHA1) or b""]
    ]
    raw = _encode(records)
    appraiser = BootAppraiser()
    assert _refused(raw, _quote_of(raw, (HashAlg.SHA256,)), appraiser) == []  # node A
    node_b = _refused(raw, _quote_of(raw, (HashAlg.SHA1,)), appraiser)
    assert node_b == ["golden-values"]  # sha1 names components: not the golden sha256 ones


def test_quoted_bank_missing_from_the_log_is_refused() -> None:
    raw = fixture_path("good").read_bytes()
    quoted = _quote_of(raw)
    quoted = PcrValues({**quoted.banks, HashAlg.SHA384: {0: bytes(48)}})
    assert _refused(raw, quoted) == ["event-log-bank"]


def _relabel_and_append(bad_name: str, relabel_as: int) -> bytes:
    """Relabel every event of the PCRs where the tampered boot differs from the golden
    one as `relabel_as` (digests kept, so replay and quote are the real boot's), then
    append the golden boot's events for those PCRs (root extends them after boot)."""
    good, bad = _log("good"), _log(bad_name)
    good_pcrs = replay(good).pcrs[HashAlg.SHA256]
    bad_pcrs = replay(bad).pcrs[HashAlg.SHA256]
    laundered = {p for p in set(good_pcrs) | set(bad_pcrs) if good_pcrs.get(p) != bad_pcrs.get(p)}
    hidden = [e._replace(event_type=relabel_as) for e in bad.events[1:] if e.pcr in laundered]
    kept = [e for e in bad.events[1:] if e.pcr not in laundered]
    golden_tail = [e for e in good.events[1:] if e.pcr in laundered]
    return _encode(_records([*hidden, *kept, *golden_tail]))


def test_events_relabelled_into_another_family_are_not_hidden() -> None:
    """A type whose family belongs to another PCR (handoff tables: PCR1; S-CRTM: PCR0)
    claims nothing elsewhere; the relabelled events stay judged in other-events."""
    for bad in ("tampered-kernel", "secure-boot-off", "cmdline-changed"):
        for label in (EventType.EV_EFI_HANDOFF_TABLES, EventType.EV_S_CRTM_VERSION):
            raw = _relabel_and_append(bad, label)
            checks = _refused(raw, _quote_of(raw))
            assert checks == ["golden-values"], (bad, label.name)


def test_no_event_appended_to_a_judged_pcr_goes_unnoticed() -> None:
    """Appending any extending event, of any type, to any PCR the claims cover changes
    the named claims: nothing can be added to a boot without golden values seeing it."""
    from verifier.evidence.claim_names import flatten
    from verifier.evidence.claims import extract_claims

    good = _log("good")
    base = flatten(extract_claims(good))
    records = _records(good.events)
    covered = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}
    for event_type in EventType:
        if event_type == EventType.EV_NO_ACTION:
            continue
        for pcr in covered:
            data = b"appended\x00"
            digests = {b: b.digest(data) for b in (HashAlg.SHA1, HashAlg.SHA256)}
            raw = _encode([*records, EventRecord(pcr, event_type, digests, data)])
            after = flatten(extract_claims(parse_event_log(raw)))
            assert after != base, (event_type.name, pcr)

"""The boot appraiser: closed by default, and a cache that makes a repeated boot free."""

from __future__ import annotations

from lightgate.sim.boot import fixture_path, golden_from_fixture
from verifier.appraisal import BootAppraiser
from verifier.evidence import eventlog
from verifier.evidence.eventlog import parse_event_log, replay
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.tpm_structures import HashAlg

GOOD = fixture_path("good").read_bytes()


def _quoted(raw: bytes) -> PcrValues:
    values = replay(parse_event_log(raw)).pcrs[HashAlg.SHA256]
    return PcrValues({HashAlg.SHA256: {pcr: values.get(pcr, bytes(32)) for pcr in range(24)}})


def test_good_boot_passes() -> None:
    result = BootAppraiser().appraise("n", GOOD, _quoted(GOOD), [golden_from_fixture()])
    assert result.passed and result.golden == "sim-good" and result.findings == ()


def test_missing_log_refused_unless_optional() -> None:
    refused = BootAppraiser().appraise("n", b"", _quoted(GOOD), [golden_from_fixture()])
    assert [f.check for f in refused.failures] == ["event-log-missing"]
    optional = BootAppraiser(require_event_log=False)
    assert optional.appraise("n", b"", _quoted(GOOD), []).passed


def test_no_golden_values_refused() -> None:
    result = BootAppraiser().appraise("n", GOOD, _quoted(GOOD), [])
    assert [f.check for f in result.failures] == ["golden-values-missing"]


def test_oversized_log_refused_before_parsing() -> None:
    appraiser = BootAppraiser(max_event_log_bytes=1024)
    result = appraiser.appraise("n", GOOD, _quoted(GOOD), [golden_from_fixture()])
    assert [f.check for f in result.failures] == ["event-log-malformed"]
    assert "limit" in result.failures[0].reason and "(node n)" in result.failures[0].reason


def test_same_boot_is_parsed_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls = []
    real = eventlog.parse_event_log

    def counting(raw: bytes, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(raw, **kwargs)

    monkeypatch.setattr("verifier.appraisal.parse_event_log", counting)
    appraiser = BootAppraiser()
    golden = [golden_from_fixture()]
    for _ in range(5):
        assert appraiser.appraise("n", GOOD, _quoted(GOOD), golden).passed
    assert len(calls) == 1
    bad = GOOD + b"\x00"
    for _ in range(3):  # a malformed log is remembered too: no re-parse per attempt
        assert not appraiser.appraise("n", bad, _quoted(GOOD), golden).passed
    assert len(calls) == 2


def test_cache_is_bounded() -> None:
    appraiser = BootAppraiser(cache_entries=2)
    golden = [golden_from_fixture()]
    for name in ("good", "tampered-kernel", "cmdline-changed"):
        raw = fixture_path(name).read_bytes()
        appraiser.appraise("n", raw, _quoted(raw), golden)
    assert len(appraiser._parsed) == 2


def test_expired_golden_values_vouch_for_nothing() -> None:
    from datetime import UTC, datetime

    from verifier.golden.values import GoldenValues

    good = golden_from_fixture()
    dated = GoldenValues(good.name, good.reference, {"valid-until": "2026-06-01T00:00:00+00:00"})
    before = datetime(2026, 5, 31, tzinfo=UTC)
    after = datetime(2026, 6, 1, tzinfo=UTC)
    appraiser = BootAppraiser()
    assert appraiser.appraise("n", GOOD, _quoted(GOOD), [dated], now=before).passed
    expired = appraiser.appraise("n", GOOD, _quoted(GOOD), [dated], now=after)
    assert [f.check for f in expired.failures] == ["golden-values-missing"]
    assert "expired" in expired.failures[0].reason


def test_values_learned_for_a_narrow_selection_accept_that_quote() -> None:
    """Learning from a file reads the log as a quote over the fleet's selection would:
    with sha256 PCRs 0-7 quoted, the kernel's PCRs are not claimed on either side."""
    from verifier.evidence.claims import extract_claims
    from verifier.golden.values import learn

    log = parse_event_log(GOOD)
    golden = learn([extract_claims(log, {HashAlg.SHA256: range(8)})], "narrow")
    quoted = PcrValues(
        {HashAlg.SHA256: {p: v for p, v in _quoted(GOOD).banks[HashAlg.SHA256].items() if p < 8}}
    )
    assert "kernel.commands" not in golden.reference
    assert BootAppraiser().appraise("n", GOOD, quoted, [golden]).passed


def test_grub_settings_are_their_own_claim() -> None:
    """grub's tests and assignments follow grubenv across boots: judged apart from the
    commands, so an operator can drop them without losing the commands."""
    from verifier.evidence.claim_names import flatten
    from verifier.evidence.claims import extract_claims

    named = flatten(extract_claims(parse_event_log(GOOD)))
    commands, settings = named["kernel.commands"], named["kernel.grub-settings"]
    assert isinstance(commands, tuple) and isinstance(settings, tuple)
    assert all(c.split(" ")[0] not in ("[", "set") for c in commands)
    assert any(c.startswith("linux ") for c in commands)


def test_the_same_values_under_another_name_are_matched_by_that_name() -> None:
    from dataclasses import replace

    appraiser = BootAppraiser()
    golden = golden_from_fixture()
    assert appraiser.appraise("n", GOOD, _quoted(GOOD), [golden]).golden == golden.name
    renamed = replace(golden, name="renamed")  # same reference, same digest
    assert renamed.digest == golden.digest
    assert appraiser.appraise("n", GOOD, _quoted(GOOD), [renamed]).golden == "renamed"

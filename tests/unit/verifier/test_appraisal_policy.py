"""The whole appraisal (boot claims + golden values + location → the default Rego policy)
over the fixture boots and over the real logs of ../shared/firmware-logs (skipped when
that folder is absent)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from lightgate.sim.boot import fixture_path, golden_from_fixture
from verifier.appraisal import (
    Appraisal,
    BootAppraiser,
    NodeFacts,
    decide,
    policy_input,
    refused_evidence,
    revoked_by_operator,
)
from verifier.evidence.claims import claims_of
from verifier.evidence.errors import EvidenceError
from verifier.evidence.eventlog import parse_event_log, replay
from verifier.evidence.images import ImageRecord, encode_image_event
from verifier.evidence.measured_boot import DEFAULT_LOG_PCRS, verify_event_log
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.runtime_log import (
    TAGGED_EVENT_IMAGE,
    TaggedEvent,
    encode_runtime_log,
    expected_pcr,
    verify_runtime_log,
)
from verifier.golden.images import allow_list, appraise_images
from verifier.golden.values import GoldenValues, learn
from verifier.location import AssetTag, ObservedLocation, Site, location_input
from verifier.policy import EmbeddedEngine, MemoisedEngine, default_policy_dir, load_bundle

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "firmware-logs"
REAL_LOGS = sorted(SHARED.glob("*.bin")) if SHARED.is_dir() else []
RUNTIME_PCR = 13
LAB = {"region": "eu-west", "dc": "ams1"}


@pytest.fixture(scope="module")
def engine() -> MemoisedEngine:
    return MemoisedEngine(EmbeddedEngine(load_bundle(default_policy_dir())))


def _quoted(raw: bytes) -> PcrValues:
    """What a TPM that measured this boot quotes (every bank the log has, all PCRs),
    with the runtime PCR as a node with no runtime events has it.  (Windows measures
    boot modules into PCR 13, which Lightgate's agent, on Linux, uses for runtime
    events; a Windows log's PCR 13 is not the runtime log's.)"""
    replayed = replay(parse_event_log(raw)).pcrs
    return PcrValues(
        {
            bank: {
                pcr: bytes(bank.digest_size)
                if pcr == RUNTIME_PCR
                else values.get(pcr, bytes(bank.digest_size))
                for pcr in range(24)
            }
            for bank, values in replayed.items()
        }
    )


def _appraise(
    engine: MemoisedEngine,
    raw: bytes,
    golden: list[GoldenValues],
    location: dict[str, object] | None = None,
    images: Sequence[ImageRecord] = (),
) -> Appraisal:
    quoted = _quoted(raw)
    runtime_log = b""
    if images:  # what an agent that started these containers measured
        events = [
            TaggedEvent(RUNTIME_PCR, TAGGED_EVENT_IMAGE, encode_image_event(i)) for i in images
        ]
        runtime_log = encode_runtime_log(events, list(quoted.banks))
        for bank, values in quoted.banks.items():
            values[RUNTIME_PCR] = expected_pcr(events, bank)
    boot = BootAppraiser().appraise("n", raw, quoted, golden)
    if boot.integrity_failures:
        return refused_evidence(boot.integrity_failures)
    runtime = verify_runtime_log(runtime_log, quoted.banks, RUNTIME_PCR)
    facts = NodeFacts("n", "ek-chain", ek_chain_verified=True, ek_pinned=False, rebooted=False)
    where = location or location_input(None, None, None, ObservedLocation(None, None))
    banks = [bank.bank_name for bank in quoted.banks]
    allowed = allow_list(golden)
    verdicts = appraise_images(runtime.images, allowed)
    partial = policy_input(facts, boot, runtime, where, banks, verdicts, allowed)
    return decide(engine, partial, boot, None)


def test_the_golden_boot_is_affirming(engine: MemoisedEngine) -> None:
    result = _appraise(engine, fixture_path("good").read_bytes(), [golden_from_fixture()])
    assert (result.status, result.failed_checks) == ("affirming", ())
    assert result.trust_vector["executables"] == 2 and result.trust_vector["hardware"] == 2
    assert result.claims is not None and result.claims["secure-boot.enabled"] is True


@pytest.mark.parametrize(
    ("boot", "checks", "claim", "named"),
    [
        ("tampered-kernel", ("golden-values",), "executables", "boot-chain.kernel"),
        ("secure-boot-off", ("golden-values", "secure-boot"), "configuration", "secure-boot"),
        ("cmdline-changed", ("golden-values",), "configuration", "kernel.cmdline"),
    ],
)
def test_each_fixture_deviation_is_refused_by_its_claim(
    engine: MemoisedEngine, boot: str, checks: tuple[str, ...], claim: str, named: str
) -> None:
    result = _appraise(engine, fixture_path(boot).read_bytes(), [golden_from_fixture()])
    assert result.status == "contraindicated"
    assert result.failed_checks == checks
    assert result.trust_vector[claim] == 96
    assert any(named in reason for reason in result.reasons[claim])


def test_location_mismatch_between_tag_and_network_is_refused(engine: MemoisedEngine) -> None:
    from datetime import UTC, datetime
    from ipaddress import ip_address

    tag = AssetTag("n", LAB, datetime(2026, 11, 1, tzinfo=UTC), 1, "token")
    fra = Site("fra1", {"region": "eu-central", "dc": "fra1"})
    seen_at_fra = ObservedLocation(ip_address("127.2.0.9"), fra)
    where = location_input(LAB, tag, None, seen_at_fra)
    good = fixture_path("good").read_bytes()
    result = _appraise(engine, good, [golden_from_fixture()], where)
    assert (result.status, result.failed_checks) == ("contraindicated", ("location",))
    assert result.trust_vector["sourced-data"] == 96
    seen_at_lab = ObservedLocation(ip_address("127.1.0.9"), Site("ams1", LAB))
    at_home = _appraise(
        engine, good, [golden_from_fixture()], location_input(LAB, tag, None, seen_at_lab)
    )
    assert (at_home.status, at_home.trust_vector["sourced-data"]) == ("affirming", 2)


def test_revocation_overrides_good_evidence(engine: MemoisedEngine) -> None:
    good = _appraise(engine, fixture_path("good").read_bytes(), [golden_from_fixture()])
    revoked = revoked_by_operator(good, "stolen")
    assert (revoked.status, revoked.failed_checks) == ("contraindicated", ("revoked",))
    assert revoked.reasons["instance-identity"] == ("revoked: stolen",)


def test_memoised_decisions_are_the_decisions(engine: MemoisedEngine) -> None:
    raw = fixture_path("tampered-kernel").read_bytes()
    first = _appraise(engine, raw, [golden_from_fixture()])
    hits = engine.hits
    again = _appraise(engine, raw, [golden_from_fixture()])
    assert engine.hits == hits + 1
    assert again == first


@pytest.mark.skipif(not REAL_LOGS, reason="../shared/firmware-logs is absent")
@pytest.mark.parametrize("path", REAL_LOGS, ids=lambda p: p.stem)
def test_real_logs_under_their_own_golden_values(engine: MemoisedEngine, path: Path) -> None:
    """Golden values learned from a real machine's log accept that log, and the policy
    still judges its configuration: Secure Boot off (or unstated) is refused as such."""
    raw = path.read_bytes()
    try:
        quoted = _quoted(raw)
        verified = verify_event_log(parse_event_log(raw), quoted.banks, log_pcrs=DEFAULT_LOG_PCRS)
    except EvidenceError:
        # Not a whole boot (SOURCES.md: a fragment, ASCII text, a log whose replay
        # needs what no quote here gives): refused before any policy, closed.
        refused = _appraise(engine, raw, [golden_from_fixture()]) if _parses(raw) else None
        assert refused is None or refused.status == "contraindicated"
        return
    golden = learn([claims_of(verified)], path.stem)
    result = _appraise(engine, raw, [golden])
    assert "golden-values" not in result.failed_checks, result.reason
    secure_boot = (result.claims or {}).get("secure-boot.enabled")
    if secure_boot is True:
        assert result.status == "affirming", result.reason
    else:
        assert result.failed_checks == ("secure-boot",), result.reason
        assert result.trust_vector["configuration"] == 96


@pytest.mark.skipif(len(REAL_LOGS) < 2, reason="../shared/firmware-logs is absent")
def test_real_log_under_another_machines_golden_values_is_refused(engine: MemoisedEngine) -> None:
    first, second = REAL_LOGS[0].read_bytes(), REAL_LOGS[1].read_bytes()
    verified = verify_event_log(
        parse_event_log(first), _quoted(first).banks, log_pcrs=DEFAULT_LOG_PCRS
    )
    result = _appraise(engine, second, [learn([claims_of(verified)], "first")])
    assert result.status == "contraindicated"
    assert "golden-values" in result.failed_checks


def _parses(raw: bytes) -> bool:
    try:
        parse_event_log(raw)
    except EvidenceError:
        return False
    return True


# --- container images ------------------------------------------------------------------

WEB = ImageRecord("registry.example/team/web:1.4", "sha256:" + "a1" * 32, "containerd")
MINER = ImageRecord("registry.example/miner:latest", "sha256:" + "cc" * 32, "containerd")


def _allowing_web() -> GoldenValues:
    entry = "images.repository.registry.example/team/web"
    return GoldenValues("good+web", {**golden_from_fixture().reference, entry: (WEB.digest or "",)})


def test_allowed_images_keep_the_node_affirming_and_are_recorded(engine: MemoisedEngine) -> None:
    result = _appraise(engine, fixture_path("good").read_bytes(), [_allowing_web()], images=[WEB])
    assert (result.status, result.failed_checks) == ("affirming", ())
    assert result.claims is not None
    assert result.claims["images"] == [{**WEB.to_json(), "allowed": True, "reason": None}]


def test_an_unknown_image_makes_the_node_not_affirming_naming_it(engine: MemoisedEngine) -> None:
    result = _appraise(
        engine, fixture_path("good").read_bytes(), [_allowing_web()], images=[WEB, MINER]
    )
    assert result.status == "warning"
    assert result.failed_checks == ("images",)
    assert result.trust_vector["executables"] == 32
    assert result.reason is not None
    assert "registry.example/miner:latest@sha256:cccc" in result.reason
    assert "team/web" not in result.reason  # the allowed image is not blamed


def test_images_with_no_allow_list_are_not_affirming(engine: MemoisedEngine) -> None:
    result = _appraise(
        engine, fixture_path("good").read_bytes(), [golden_from_fixture()], images=[WEB]
    )
    assert result.failed_checks == ("images",)
    assert "no golden values list allowed images" in (result.reason or "")


def test_an_images_only_document_does_not_vouch_for_the_boot(engine: MemoisedEngine) -> None:
    images_only = GoldenValues("prod-images", {"images.allowed": (WEB.digest or "",)})
    result = _appraise(engine, fixture_path("good").read_bytes(), [images_only], images=[WEB])
    assert result.status == "contraindicated"
    assert result.failed_checks == ("golden-values",)
    assert result.reason == "golden-values: no golden values apply to this node"

"""Measured boot end to end: swtpm PCRs from a fixture boot, the agent's event log, the
verifier's replay, claims and golden values.  One named test per attack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from lightgate.sim.boot import GOOD_BOOT, fixture_path
from lightgate.wire.v1 import attestation_pb2 as pb
from verifier.evidence.eventlog import parse_event_log
from verifier.golden.values import from_yaml

SwtpmFactory = VerifierFactory = AgentFactory = VerifierHandle = Any

AFFIRMING = pb.TRUST_STATUS_AFFIRMING
CONTRAINDICATED = pb.TRUST_STATUS_CONTRAINDICATED


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_good_boot_is_affirming_and_its_evidence_keeps_the_log(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = make_agent(make_swtpm(), verifier)
    agent.enroll()
    response = agent.attest_once()
    assert response.status == AFFIRMING, response.reason
    assert list(response.workarounds) == []
    store = verifier.running.store
    evidence = store.last_evidence(agent.node_id)
    assert evidence is not None
    assert evidence.event_log == fixture_path(GOOD_BOOT).read_bytes()
    assert evidence.claims is not None and evidence.claims["secure-boot.enabled"] is True


def test_missing_event_log_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = make_agent(make_swtpm(), verifier, event_log=None)
    agent.enroll()
    response = agent.attest_once()
    assert response.status == CONTRAINDICATED
    assert list(response.failed_checks) == ["event-log-missing"]


def test_tampered_kernel_is_refused_naming_the_kernel(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """The node really booted another kernel: log and PCRs agree, golden values do not."""
    swtpm = make_swtpm(boot="tampered-kernel")
    agent = make_agent(swtpm, verifier, event_log=fixture_path("tampered-kernel"))
    agent.enroll()
    response = agent.attest_once()
    assert list(response.failed_checks) == ["golden-values"]
    assert "boot-chain.kernel" in response.reason
    assert any(line.startswith("boot-chain.kernel:") for line in response.findings)


def test_secure_boot_off_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    swtpm = make_swtpm(boot="secure-boot-off")
    agent = make_agent(swtpm, verifier, event_log=fixture_path("secure-boot-off"))
    agent.enroll()
    response = agent.attest_once()
    # The golden values refuse it, and so does the policy's own Secure Boot rule.
    assert list(response.failed_checks) == ["golden-values", "secure-boot"]
    assert "secure-boot.enabled: false" in response.reason


def test_log_of_another_boot_is_refused_naming_the_pcrs(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """The node booted the tampered kernel but sends the golden boot's log (a lie)."""
    swtpm = make_swtpm(boot="tampered-kernel")
    agent = make_agent(swtpm, verifier)  # sends the good log
    agent.enroll()
    response = agent.attest_once()
    assert list(response.failed_checks) == ["event-log-replay"]
    assert "sha256 PCR4" in response.reason and "sha256 PCR9" in response.reason


def test_truncated_log_is_refused(
    tmp_path: Path, make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    raw = fixture_path(GOOD_BOOT).read_bytes()
    events = parse_event_log(raw).events
    cut = next(e for e in events if e.pcr == 8).offset  # nothing of grub's from here on
    agent = make_agent(make_swtpm(), verifier, event_log=_write(tmp_path, "cut.bin", raw[:cut]))
    agent.enroll()
    response = agent.attest_once()
    assert list(response.failed_checks) == ["event-log-replay"]
    assert "PCR8" in response.reason and "PCR9" in response.reason


def test_malformed_log_is_refused_with_offset(
    tmp_path: Path, make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    raw = bytearray(fixture_path(GOOD_BOOT).read_bytes())
    raw[-10:] = b"\xff" * 10  # the last event's size now overruns the log
    garbage = _write(tmp_path, "bad.bin", bytes(raw) + b"\x01\x02\x03")
    agent = make_agent(make_swtpm(), verifier, event_log=garbage)
    agent.enroll()
    response = agent.attest_once()
    assert list(response.failed_checks) == ["event-log-malformed"]
    assert "at byte" in response.reason


def test_no_golden_values_refuses_trust(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """Closed by default: with nothing to compare against, nobody is trusted."""
    store = verifier.running.store
    for row in store.golden_values():
        store.drop_golden_values(row.name)
    verifier.running.verifier.references.refresh()  # forget the cached copy now
    agent = make_agent(make_swtpm(), verifier)
    agent.enroll()
    response = agent.attest_once()
    assert response.status == pb.TRUST_STATUS_CONTRAINDICATED
    assert list(response.failed_checks) == ["golden-values"]
    assert "no golden values" in response.reason


def test_golden_values_learned_from_a_node_accept_it(
    tmp_path: Path,
    make_swtpm: SwtpmFactory,
    verifier: VerifierHandle,
    make_agent: AgentFactory,
) -> None:
    """`attest golden learn --node` reads the node's last affirming evidence from the
    store; the values equal those learned from the same boot's file."""
    agent = make_agent(make_swtpm(), verifier)
    agent.enroll()
    assert agent.attest_once().status == AFFIRMING
    config = tmp_path / "verifier.yaml"
    config.write_text(
        f"database_url: {verifier.running.config.database()}\n"
        f"state_dir: {verifier.running.config.state_dir}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTGATE_")}
    attest = [sys.executable, "-m", "lightgate"]
    from_node = subprocess.run(
        [*attest, "golden", "learn", "--name", "n", "--node", agent.node_id, "-c", str(config)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    from_file = subprocess.run(
        [*attest, "golden", "learn", "--name", "n", "--log", str(fixture_path(GOOD_BOOT))],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert from_yaml(from_node.stdout).reference == from_yaml(from_file.stdout).reference
    assert "node:" + agent.node_id in from_yaml(from_node.stdout).provenance["source"]

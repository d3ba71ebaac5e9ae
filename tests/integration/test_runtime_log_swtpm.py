"""The runtime log against a real swtpm: the agent measures an asset tag into the runtime
PCR, a real quote covers it, and the verifier's `verify_runtime_log` replays the log to
the quoted value.  Restarting the agent keeps the log; restarting the swtpm (a reboot:
TPM2_Startup CLEAR resets PCRs 0-15) starts a fresh one and the stored tag is measured
again.  The agent also reaches a real verifier from a source address of its own.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestor.agent import Agent, open_channel, run_agent
from attestor.collect.runtime_log import RUNTIME_LOG_FILE, RuntimeLog
from attestor.source_address import SourceAddressRelay
from attestor.tpm import AkBlobs, Tpm
from lightgate.config import DEFAULT_RUNTIME_PCR, AgentConfig
from lightgate.sim.boot import GOOD_BOOT, fixture_path
from lightgate.sim.swtpm import Swtpm
from lightgate.wire import convert
from lightgate.wire.channel import Channel
from lightgate.wire.clients import AttestationClient
from lightgate.wire.v1 import attestation_pb2 as pb
from verifier.evidence.errors import RuntimeLogReplayMismatch
from verifier.evidence.keys import AttestationKey
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.quote import Quote, verify_quote_offline
from verifier.evidence.runtime_log import (
    TAGGED_EVENT_ASSET_TAG,
    TaggedEvent,
    VerifiedRuntimeLog,
    verify_runtime_log,
)
from verifier.evidence.tpm_structures import HashAlg, PcrSelection
from verifier.jose import SigningKey
from verifier.location import issue_asset_tag, verify_asset_tag

SwtpmFactory = VerifierFactory = Any

PCR = DEFAULT_RUNTIME_PCR
NODE = "node-rt"
KEY = SigningKey.generate()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TAG_AMS = issue_asset_tag(NODE, {"region": "eu-west", "dc": "ams1"}, KEY, NOW, 1)
TAG_FRA = issue_asset_tag(NODE, {"region": "eu-central", "dc": "fra1"}, KEY, NOW, 2)
SELECTION = PcrSelection.of({HashAlg.SHA1: [0, 7, PCR], HashAlg.SHA256: [0, 7, PCR]})


def quote_and_verify(tpm: Tpm, ak: AkBlobs, runtime_log: bytes) -> VerifiedRuntimeLog:
    """What the verifier does: check a real quote, then replay the runtime log against it."""
    nonce = os.urandom(32)
    message, signature, pcrs = tpm.quote_with_pcrs(ak, SELECTION, nonce)
    pcr_values = PcrValues(pcrs)
    verify_quote_offline(
        AttestationKey.from_bytes(ak.tpmt_public),
        Quote.parse(message, signature),
        pcr_values,
        nonce,
    )
    return verify_runtime_log(runtime_log, pcr_values.banks, PCR, node_id=NODE)


def restart(swtpm: Swtpm) -> Swtpm:
    """A reboot: the swtpm restarts on its state (EK, NV) with TPM2_Startup(CLEAR)."""
    swtpm.stop()
    return swtpm.start()


def test_tag_measured_through_the_runtime_log_replays_against_a_real_quote(
    make_swtpm: SwtpmFactory, tmp_path: Path
) -> None:
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti) as tpm:
        ak = tpm.create_ak()
        runtime = RuntimeLog.resume(tpm, tmp_path, PCR)
        assert runtime.events == [] and set(runtime.banks) == {HashAlg.SHA1, HashAlg.SHA256}
        assert not quote_and_verify(tpm, ak, runtime.encoded()).present  # nothing yet

        runtime.append_asset_tag(tpm, TAG_AMS)
        verified = quote_and_verify(tpm, ak, runtime.encoded())
        assert verified.asset_tags == (TAG_AMS,)
        assert set(verified.banks) == {HashAlg.SHA1, HashAlg.SHA256}
        tag = verify_asset_tag(verified.current_asset_tag or "", {KEY.kid: KEY.public_key}, NODE)
        assert tag.attributes == {"region": "eu-west", "dc": "ams1"}

        runtime.append_asset_tag(tpm, TAG_FRA)
        assert quote_and_verify(tpm, ak, runtime.encoded()).current_asset_tag == TAG_FRA


def test_allocated_banks_are_read_from_the_tpm(make_swtpm: SwtpmFactory) -> None:
    with Tpm(make_swtpm().tcti) as tpm:
        banks = tpm.allocated_banks()
    assert set(banks) == {HashAlg.SHA1, HashAlg.SHA256}  # as lightgate.sim.swtpm provisions
    assert banks[HashAlg.SHA256] == frozenset(range(24))


def test_extend_without_a_record_is_refused_and_kept_refused(
    make_swtpm: SwtpmFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: something measures into the runtime PCR behind the agent's back (or
    a node hides an event).  The replay fails, and an agent restart does not launder it."""
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti) as tpm:
        ak = tpm.create_ak()
        runtime = RuntimeLog.resume(tpm, tmp_path, PCR)
        runtime.append_asset_tag(tpm, TAG_AMS)
        tpm.extend_pcr(PCR, {bank: bank.digest(b"unlogged") for bank in runtime.banks})
        with pytest.raises(RuntimeLogReplayMismatch) as refused:
            quote_and_verify(tpm, ak, runtime.encoded())
        assert set(refused.value.mismatches) == {"sha1", "sha256"}
    with Tpm(swtpm.tcti) as tpm, caplog.at_level(logging.WARNING, "lightgate.agent"):
        again = RuntimeLog.resume(tpm, tmp_path, PCR)
        assert again.events == runtime.events  # kept, not replaced by an empty log
        assert "without a record" in caplog.text
        with pytest.raises(RuntimeLogReplayMismatch):
            quote_and_verify(tpm, ak, again.encoded())


def test_agent_restart_without_reboot_keeps_the_log(
    make_swtpm: SwtpmFactory, tmp_path: Path
) -> None:
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti) as tpm:
        runtime = RuntimeLog.resume(tpm, tmp_path, PCR)
        runtime.append_asset_tag(tpm, TAG_AMS)
        before = runtime.read_pcr(tpm)
    with Tpm(swtpm.tcti) as tpm:  # the agent process starts again; the TPM did not
        ak = tpm.create_ak()
        resumed = RuntimeLog.resume(tpm, tmp_path, PCR)
        assert resumed.events == runtime.events
        assert resumed.read_pcr(tpm) == before  # nothing extended twice
        assert quote_and_verify(tpm, ak, resumed.encoded()).asset_tags == (TAG_AMS,)


def test_reboot_starts_a_fresh_log(make_swtpm: SwtpmFactory, tmp_path: Path) -> None:
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti) as tpm:
        ak = tpm.create_ak()
        RuntimeLog.resume(tpm, tmp_path, PCR).append_asset_tag(tpm, TAG_AMS)
    restart(swtpm)
    with Tpm(swtpm.tcti) as tpm:
        fresh = RuntimeLog.resume(tpm, tmp_path, PCR)
        assert fresh.events == [] and fresh.encoded() == b""
        assert not quote_and_verify(tpm, ak, fresh.encoded()).present
        # The log from before the reboot no longer replays: the PCR was reset.
        stale = RuntimeLog(tmp_path / "stale", PCR, fresh.banks, [_tag_event(TAG_AMS)])
        with pytest.raises(RuntimeLogReplayMismatch):
            quote_and_verify(tpm, ak, stale.encoded())


def _tag_event(token: str) -> TaggedEvent:
    return TaggedEvent(PCR, TAGGED_EVENT_ASSET_TAG, token.encode())


def test_record_saved_but_never_extended_is_dropped(
    make_swtpm: SwtpmFactory, tmp_path: Path
) -> None:
    """A crash between the write-ahead save and the extend leaves one record too many."""
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti) as tpm:
        ak = tpm.create_ak()
        runtime = RuntimeLog.resume(tpm, tmp_path, PCR)
        runtime.append_asset_tag(tpm, TAG_AMS)
        runtime.events.append(_tag_event(TAG_FRA))
        runtime.save()  # ... and the process dies before TPM2_PCR_Extend
    with Tpm(swtpm.tcti) as tpm:
        resumed = RuntimeLog.resume(tpm, tmp_path, PCR)
        assert resumed.last_asset_tag() == TAG_AMS
        assert quote_and_verify(tpm, ak, resumed.encoded()).asset_tags == (TAG_AMS,)


def test_corrupt_stored_log_after_reboot_starts_anew(
    make_swtpm: SwtpmFactory, tmp_path: Path
) -> None:
    (tmp_path / RUNTIME_LOG_FILE).write_bytes(b"\x00garbage")
    with Tpm(make_swtpm().tcti) as tpm:
        assert RuntimeLog.resume(tpm, tmp_path, PCR).events == []


# --- the agent -----------------------------------------------------------------------


def _agent(swtpm: Swtpm, tpm: Tpm, state_dir: Path) -> Agent:
    config = AgentConfig(
        node_id=NODE,
        tcti=swtpm.tcti,
        state_dir=state_dir,
        event_log=fixture_path(GOOD_BOOT),
        verifier="127.0.0.1:1",  # collect() never calls the verifier
    )
    return Agent(config, tpm, AttestationClient(Channel(config.verifier)))


def _challenge(asset_tag: str) -> pb.ChallengeResponse:
    return pb.ChallengeResponse(
        nonce=os.urandom(32),
        pcr_selection=convert.selection_to_wire(SELECTION),
        asset_tag=asset_tag,
    )


def _verify_request(ak: AkBlobs, request: pb.AttestRequest, nonce: bytes) -> VerifiedRuntimeLog:
    pcr_values = convert.pcr_values_from_wire(list(request.pcr_values))
    verify_quote_offline(
        AttestationKey.from_bytes(ak.tpmt_public),
        Quote.parse(request.quote_message, request.quote_signature),
        pcr_values,
        nonce,
    )
    return verify_runtime_log(request.runtime_log, pcr_values.banks, PCR, node_id=NODE)


def test_agent_measures_a_new_tag_before_quoting(make_swtpm: SwtpmFactory, tmp_path: Path) -> None:
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti) as tpm:
        agent = _agent(swtpm, tpm, tmp_path / "agent")
        challenge = _challenge(TAG_AMS)
        request = agent.collect(challenge)
        assert _verify_request(agent.ak, request, challenge.nonce).asset_tags == (TAG_AMS,)
        assert agent.state_dir.load_asset_tag() == TAG_AMS

        challenge = _challenge(TAG_AMS)  # the same tag again: measured once only
        request = agent.collect(challenge)
        assert _verify_request(agent.ak, request, challenge.nonce).asset_tags == (TAG_AMS,)

        challenge = _challenge(TAG_FRA)  # the operator moved the node
        request = agent.collect(challenge)
        verified = _verify_request(agent.ak, request, challenge.nonce)
        assert verified.asset_tags == (TAG_AMS, TAG_FRA)


def test_agent_after_reboot_measures_the_stored_tag_again(
    make_swtpm: SwtpmFactory, tmp_path: Path
) -> None:
    swtpm = make_swtpm()
    state_dir = tmp_path / "agent"
    with Tpm(swtpm.tcti) as tpm:
        agent = _agent(swtpm, tpm, state_dir)
        agent.collect(_challenge(TAG_AMS))
        ak = agent.ak
    with Tpm(swtpm.tcti) as tpm:  # restart without reboot: nothing measured twice
        agent = _agent(swtpm, tpm, state_dir)
        assert [e.data.decode() for e in agent.runtime_log.events] == [TAG_AMS]
    restart(swtpm)
    with Tpm(swtpm.tcti) as tpm:
        agent = _agent(swtpm, tpm, state_dir)
        # Before any challenge: the stored tag is back in the fresh log and the PCR.
        assert [e.data.decode() for e in agent.runtime_log.events] == [TAG_AMS]
        verified = quote_and_verify(tpm, ak, agent.runtime_log.encoded())
        assert verified.asset_tags == (TAG_AMS,)


def test_agent_forgets_a_removed_tag(make_swtpm: SwtpmFactory, tmp_path: Path) -> None:
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti) as tpm:
        agent = _agent(swtpm, tpm, tmp_path / "agent")
        agent.collect(_challenge(TAG_AMS))
        request = agent.collect(_challenge(""))
        assert agent.state_dir.load_asset_tag() is None
        # What was measured stays measured this boot; the log still says so.
        assert request.runtime_log == agent.runtime_log.encoded() != b""
    restart(swtpm)
    with Tpm(swtpm.tcti) as tpm:
        assert _agent(swtpm, tpm, tmp_path / "agent").runtime_log.events == []


# --- the source address, end to end --------------------------------------------------


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("tls", "server_name"), [(False, None), (True, None), (True, "verifier.lightgate.test")]
)
def test_agent_attests_from_its_source_address(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    tmp_path: Path,
    tls: bool,
    server_name: str | None,
) -> None:
    """Through the relay, TLS still checks the verifier's name (its IP SAN when no
    tls_server_name is set) and the verifier sees the node's own source address."""
    cert, key = _self_signed(tmp_path, "verifier.lightgate.test")
    handle = make_verifier(tls_cert=cert, tls_key=key) if tls else make_verifier()
    swtpm = make_swtpm()
    node = f"src-{tls}-{server_name is not None}".lower()
    config = AgentConfig(
        node_id=node,
        verifier=handle.address,
        tls_ca=cert if tls else None,
        tls_server_name=server_name,
        tcti=swtpm.tcti,
        state_dir=tmp_path / "agent",
        event_log=fixture_path(GOOD_BOOT),
        source_address="127.0.0.9",
    )
    assert config.source_address is not None
    with (
        Tpm(config.tcti) as tpm,
        SourceAddressRelay(config.verifier, config.source_address) as relay,
        open_channel(config, relay.address) as channel,
    ):
        agent = Agent(config, tpm, AttestationClient(channel))
        agent.enroll()
        assert agent.attest_once().status == pb.TRUST_STATUS_AFFIRMING
    stored = handle.running.store.get_node(node)
    assert stored is not None and (stored.last_peer or "").startswith("ipv4:127.0.0.9:")


def test_run_agent_leaves_from_the_source_address_and_stops_cleanly(
    make_swtpm: SwtpmFactory, make_verifier: VerifierFactory, tmp_path: Path
) -> None:
    """`attest agent run` as a process runs it: TPM, relay, channel, loop; then stop."""
    handle = make_verifier()
    config = AgentConfig(
        node_id="src-run",
        verifier=handle.address,
        tcti=make_swtpm().tcti,
        state_dir=tmp_path / "agent",
        event_log=fixture_path(GOOD_BOOT),
        source_address="127.0.0.10",
        interval_seconds=3600,
    )
    stop = threading.Event()
    runner = threading.Thread(target=run_agent, args=(config, stop))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        node = None
        while time.monotonic() < deadline:
            node = handle.running.store.get_node("src-run")
            if node is not None and node.last_peer:
                break
            time.sleep(0.1)
        assert node is not None and (node.last_peer or "").startswith("ipv4:127.0.0.10:")
        assert node.last_status == "affirming"
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "source-address-relay"]

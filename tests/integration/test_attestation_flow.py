"""Enrollment and attestation over real gRPC, real swtpm, SQLite and PostgreSQL.

One named test per attack: each shows the verifier refusing it, and for what reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from attestor.tpm import Tpm, TpmError
from lightgate.config import EnrollmentConfig
from lightgate.sim.boot import GOOD_BOOT, fixture_path, measure_boot
from lightgate.wire.channel import RpcError
from lightgate.wire.v1 import attestation_pb2 as pb
from verifier.evidence.keys import spki_der
from verifier.evidence.tpm_public import parse_public

SwtpmFactory = VerifierFactory = AgentFactory = VerifierHandle = Any

AFFIRMING = pb.TRUST_STATUS_AFFIRMING
CONTRAINDICATED = pb.TRUST_STATUS_CONTRAINDICATED


@dataclass(frozen=True)
class Failure:
    """A call's failure, from grpcio's stubs (the verifier's clients) or from the agent's
    own channel (`lightgate.wire.channel`), in grpcio's terms."""

    status: grpc.StatusCode
    text: str

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.text


def rpc_error(call: object) -> Failure:
    with pytest.raises((grpc.RpcError, RpcError)) as caught:
        call()  # type: ignore[operator]
    error = caught.value
    if isinstance(error, RpcError):
        return Failure(grpc.StatusCode[error.code.name], error.details)
    assert isinstance(error, grpc.Call)
    return Failure(error.code(), error.details() or "")


def test_good_node_enrolls_and_attests(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = make_agent(make_swtpm(), verifier)
    agent.enroll()
    first = agent.attest_once()
    second = agent.attest_once()
    assert first.status == AFFIRMING, first.reason
    assert second.status == AFFIRMING, second.reason
    assert second.result_id > first.result_id
    node = verifier.running.store.get_node(agent.node_id)
    assert node is not None and node.state == "enrolled" and node.last_status == "affirming"
    assert node.ak_public == agent.ak.tpmt_public


@pytest.mark.parametrize("ak_algorithm", ["ecc", "rsa"])
def test_rsa_and_ecc_attestation_keys(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory, ak_algorithm: str
) -> None:
    agent = make_agent(make_swtpm(), verifier, ak_algorithm=ak_algorithm)
    agent.enroll()
    assert agent.attest_once().status == AFFIRMING


def test_ecc_ek_without_certificate_enrolls_by_allowlist(
    make_swtpm: SwtpmFactory, make_verifier: VerifierFactory, make_agent: AgentFactory
) -> None:
    """An ECC P-256 EK from the default template (no certificate provisioned for it):
    MakeCredential's ECDH path against a real TPM, trust from the allow-list."""
    swtpm = make_swtpm()
    with Tpm(swtpm.tcti, "ecc") as tpm:
        ek = tpm.endorsement()
    assert ek.certificate is None
    fingerprint = hashlib.sha256(spki_der(_key(ek.public))).hexdigest()
    handle = make_verifier(enrollment=EnrollmentConfig(mode="allowlist", allowlist=[fingerprint]))
    agent = make_agent(swtpm, handle, ek_kind="ecc")
    agent.enroll()
    assert agent.attest_once().status == AFFIRMING


def _key(public: bytes):  # type: ignore[no-untyped-def]
    from verifier.evidence.keys import public_key

    return public_key(parse_public(public))


def test_allowlist_refuses_unlisted_ek(
    make_swtpm: SwtpmFactory, make_verifier: VerifierFactory, make_agent: AgentFactory
) -> None:
    handle = make_verifier(enrollment=EnrollmentConfig(mode="allowlist", allowlist=["0" * 64]))
    agent = make_agent(make_swtpm(), handle)
    error = rpc_error(agent.enroll)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details().startswith("ek-not-allowed:")


# --- attacks on enrollment -------------------------------------------------------------


def test_forged_ek_certificate_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory, rogue_ca: object
) -> None:
    agent = make_agent(make_swtpm(ca=rogue_ca), verifier)
    error = rpc_error(agent.enroll)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details().startswith("ek-certificate-untrusted:")
    assert verifier.running.store.get_node(agent.node_id) is None


def test_ek_public_not_matching_certificate_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """A genuine certificate presented with another TPM's EK public key."""
    victim = make_agent(make_swtpm(), verifier)
    attacker = make_agent(make_swtpm(), verifier)
    request = attacker.enroll_request()
    request.ek_certificate = victim.tpm.endorsement().certificate or b""
    error = rpc_error(lambda: verifier.stub.Enroll(request))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details().startswith("ek-public-mismatch:")


def test_foreign_ak_cannot_activate(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """This TPM's EK with an AK resident in another TPM: the credential sealed to the EK
    cannot be opened where the AK is, so no secret, so no enrollment."""
    agent = make_agent(make_swtpm(), verifier)
    other_swtpm = make_swtpm()
    with Tpm(other_swtpm.tcti) as other:
        foreign = other.create_ak("ecc")
        request = agent.enroll_request()
        request.ak_public = foreign.tpmt_public
        challenge = verifier.stub.Enroll(request)
        with pytest.raises(TpmError):
            other.activate_credential(
                foreign, challenge.credential_blob, challenge.encrypted_secret
            )
    with pytest.raises(TpmError):  # nor can this TPM load the other TPM's AK
        agent.tpm.activate_credential(
            foreign, challenge.credential_blob, challenge.encrypted_secret
        )
    error = rpc_error(
        lambda: verifier.stub.ActivateCredential(
            pb.ActivateCredentialRequest(node_id=agent.node_id, secret=os.urandom(32))
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details().startswith("credential-activation:")
    node = verifier.running.store.get_node(agent.node_id)
    assert node is not None and node.state != "enrolled"


def test_reenrolling_a_node_id_with_another_ek_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    honest = make_agent(make_swtpm(), verifier, node_id="web-1")
    honest.enroll()
    impostor = make_agent(
        make_swtpm(), verifier, node_id="web-1", state_dir=honest.config.state_dir.parent / "imp"
    )
    error = rpc_error(impostor.enroll)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details().startswith("ek-changed:")
    assert honest.attest_once().status == AFFIRMING


def test_ak_with_decrypt_attribute_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = make_agent(make_swtpm(), verifier)
    request = agent.enroll_request()
    request.ak_public = agent.tpm.endorsement().public  # the EK: decrypt, not sign
    error = rpc_error(lambda: verifier.stub.Enroll(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("ak-attributes:")


def test_join_token_is_single_use(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    trust_store: object,
) -> None:
    handle = make_verifier(enrollment=EnrollmentConfig(mode="join-token", trust_store=trust_store))
    without = make_agent(make_swtpm(), handle)
    error = rpc_error(without.enroll)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    from datetime import timedelta

    token = handle.running.verifier.create_join_token(timedelta(minutes=5))
    first = make_agent(make_swtpm(), handle, join_token=token)
    first.enroll()
    assert first.attest_once().status == AFFIRMING
    second = make_agent(make_swtpm(), handle, join_token=token)
    error = rpc_error(second.enroll)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details().startswith("join-token:")


# --- attacks on attestation ------------------------------------------------------------


def _enrolled(make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory):  # type: ignore[no-untyped-def]
    agent = make_agent(make_swtpm(), verifier)
    agent.enroll()
    return agent


def test_replayed_nonce_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = _enrolled(make_swtpm, verifier, make_agent)
    captured = agent.collect(agent.challenge())
    assert agent.submit(captured).status == AFFIRMING
    replay = agent.submit(captured)
    assert replay.status == CONTRAINDICATED
    assert list(replay.failed_checks) == ["nonce-replayed"]


def test_expired_nonce_is_refused(
    make_swtpm: SwtpmFactory, make_verifier: VerifierFactory, make_agent: AgentFactory
) -> None:
    handle = make_verifier(nonce_ttl_seconds=0.2)
    agent = _enrolled(make_swtpm, handle, make_agent)
    challenge = agent.challenge()
    import time

    time.sleep(0.4)
    response = agent.submit(agent.collect(challenge))
    assert response.status == CONTRAINDICATED
    assert list(response.failed_checks) == ["nonce-expired"]


def test_nonce_issued_to_another_node_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    alice = _enrolled(make_swtpm, verifier, make_agent)
    mallory = _enrolled(make_swtpm, verifier, make_agent)
    stolen = alice.challenge()
    response = mallory.submit(mallory.collect(stolen))
    assert list(response.failed_checks) == ["nonce-mismatch"]
    # Alice's nonce was not burnt by Mallory's attempt.
    assert alice.submit(alice.collect(stolen)).status == AFFIRMING


def test_nonce_not_issued_by_verifier_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = _enrolled(make_swtpm, verifier, make_agent)
    challenge = agent.challenge()
    forged = bytearray(challenge.nonce)
    forged[-1] ^= 0x01  # this node's tag and a fresh expiry, but not the verifier's MAC
    challenge.nonce = bytes(forged)
    response = agent.submit(agent.collect(challenge))
    assert list(response.failed_checks) == ["nonce-unknown"]
    # A plausible expiry, then another node's tag (here a random one) and MAC.
    challenge.nonce = bytes(forged[:9]) + os.urandom(23)
    response = agent.submit(agent.collect(challenge))
    assert list(response.failed_checks) == ["nonce-mismatch"]


def test_tampered_pcr_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = _enrolled(make_swtpm, verifier, make_agent)
    request = agent.collect(agent.challenge())
    request.pcr_values[0].values[7] = bytes(32)[:-1] + b"\x01"
    response = agent.submit(request)
    assert list(response.failed_checks) == ["pcr-digest"]
    assert "pcrDigest" in response.reason


def test_bad_signature_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = _enrolled(make_swtpm, verifier, make_agent)
    request = agent.collect(agent.challenge())
    signature = bytearray(request.quote_signature)
    signature[-3] ^= 0x40
    request.quote_signature = bytes(signature)
    response = agent.submit(request)
    assert list(response.failed_checks) == ["quote-signature"]


def test_quote_missing_requested_pcrs_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = _enrolled(make_swtpm, verifier, make_agent)
    challenge = agent.challenge()
    del challenge.pcr_selection[0].pcrs[8:]  # quote only PCRs 0-7
    response = agent.submit(agent.collect(challenge))
    assert list(response.failed_checks) == ["pcr-selection"]


def test_quote_from_unenrolled_ak_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """A second AK in the same, enrolled TPM: not the key the verifier activated."""
    agent = _enrolled(make_swtpm, verifier, make_agent)
    challenge = agent.challenge()
    enrolled_ak = agent.ak
    agent._ak = agent.tpm.create_ak("ecc")
    response = agent.submit(agent.collect(challenge))
    agent._ak = enrolled_ak
    assert list(response.failed_checks) == ["quote-signature"]


def test_tpm_state_rolled_back_is_refused(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """Restore an old copy of the TPM's state: its resetCount goes backwards."""
    swtpm = make_swtpm()
    agent = make_agent(swtpm, verifier)
    agent.enroll()
    assert agent.attest_once().status == AFFIRMING  # the verifier now knows resetCount N
    agent.tpm.close()
    swtpm.stop()
    snapshot = swtpm.state_dir.parent / "snapshot"
    shutil.copytree(swtpm.state_dir, snapshot)
    boot = fixture_path(GOOD_BOOT).read_bytes()
    for _ in range(2):  # two reboots: each TPM2_Startup(CLEAR) raises resetCount
        swtpm.start()
        with Tpm(swtpm.tcti) as tpm:
            measure_boot(tpm, boot)  # the firmware measures the boot again
            agent.tpm = tpm
            response = agent.attest_once()
        assert response.status == AFFIRMING and response.rebooted
        swtpm.stop()
    shutil.rmtree(swtpm.state_dir)
    shutil.copytree(snapshot, swtpm.state_dir)
    swtpm.start()
    with Tpm(swtpm.tcti) as tpm:
        measure_boot(tpm, boot)
        agent.tpm = tpm
        response = agent.attest_once()
    assert list(response.failed_checks) == ["clock-rollback"]
    assert "resetCount" in response.reason


# --- request errors and gRPC status codes ----------------------------------------------


def test_unknown_node_gets_not_found(verifier: VerifierHandle) -> None:
    error = rpc_error(lambda: verifier.stub.Challenge(pb.ChallengeRequest(node_id="nobody")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().startswith("unknown-node:")


def test_unenrolled_node_gets_failed_precondition(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = make_agent(make_swtpm(), verifier)
    verifier.stub.Enroll(agent.enroll_request())  # never activated
    error = rpc_error(agent.challenge)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_malformed_messages_get_invalid_argument(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = _enrolled(make_swtpm, verifier, make_agent)
    request = agent.collect(agent.challenge())
    request.quote_message = request.quote_message[:20]
    error = rpc_error(lambda: agent.submit(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "TPMS_ATTEST" in error.details()
    bad_id = rpc_error(lambda: verifier.stub.Challenge(pb.ChallengeRequest(node_id="../etc")))
    assert bad_id.code() == grpc.StatusCode.INVALID_ARGUMENT
    garbage = agent.enroll_request()
    garbage.ek_public = b"\x00\x01garbage"
    assert (
        rpc_error(lambda: verifier.stub.Enroll(garbage)).code() == grpc.StatusCode.INVALID_ARGUMENT
    )
    # The node still attests after all that.
    assert agent.attest_once().status == AFFIRMING


def test_oversized_message_is_refused(verifier: VerifierHandle) -> None:
    request = pb.EnrollRequest(node_id="big", ek_public=b"\x00" * (6 << 20))
    error = rpc_error(lambda: verifier.stub.Enroll(request))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_and_reflection(verifier: VerifierHandle) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(verifier.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service="lightgate.v1.Attestation"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(verifier.channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "lightgate.v1.Attestation" in names


# --- agent behaviour -------------------------------------------------------------------


def test_agent_reuses_its_ak_and_enrollment_across_restarts(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    swtpm = make_swtpm()
    first = make_agent(swtpm, verifier, node_id="db-7")
    first.enroll()
    ak = first.ak
    first.tpm.close()
    again = make_agent(swtpm, verifier, node_id="db-7")
    assert again.state.enrolled
    assert again.ak == ak
    assert again.attest_once().status == AFFIRMING


def test_agent_survives_verifier_outage(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    database_url: str,
) -> None:
    """The agent starts before the verifier exists, backs off, and enrolls and attests by
    itself once it appears; no crash loop, no help."""
    import socket
    import threading
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    swtpm = make_swtpm()

    class Later:  # the address the agent dials before any server listens there
        address = f"127.0.0.1:{port}"

    agent = make_agent(
        swtpm,
        Later,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.2,
        interval_seconds=0.1,
        rpc_timeout_seconds=1,
    )
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    time.sleep(0.5)  # a few failed attempts while nothing listens
    assert runner.is_alive() and not agent.state.enrolled
    handle = make_verifier(database_url, listen=Later.address)
    deadline = time.monotonic() + 60
    node = None
    while time.monotonic() < deadline:
        node = handle.running.store.get_node(agent.node_id)
        if node is not None and node.last_status == "affirming":
            break
        time.sleep(0.1)
    stop.set()
    runner.join(timeout=10)
    assert node is not None and node.last_status == "affirming"
    assert not runner.is_alive()


def test_agent_resumes_by_itself_after_the_verifier_stops_and_restarts(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    database_url: str | None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mid-run the verifier goes away: the agent keeps running (backing off, no crash),
    and attests again by itself once a verifier serves the same address and store."""
    import threading
    import time

    caplog.set_level("WARNING", logger="lightgate.agent")
    url = database_url or f"sqlite:///{tmp_path / 'shared.db'}"
    first = make_verifier(url)
    address = first.address
    agent = make_agent(
        make_swtpm(),
        first,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.2,
        interval_seconds=0.1,
        rpc_timeout_seconds=1,
    )
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()

    def newest_result(store: Any, above: int = 0) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            results = store.results_for(agent.node_id, limit=1)
            if results and results[0].status == "affirming" and results[0].id > above:
                return int(results[0].id)
            time.sleep(0.05)
        raise AssertionError("the agent never attested")

    before = newest_result(first.running.store)
    first.running.stop(grace=0)
    deadline = time.monotonic() + 60
    while not any(r.getMessage() == "verifier call failed" for r in caplog.records):
        assert time.monotonic() < deadline, "the agent never noticed the outage"
        time.sleep(0.05)
    assert runner.is_alive()  # backing off, not dead
    second = make_verifier(url, listen=address)
    newest_result(second.running.store, above=before)  # attested again, unaided
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive()


def test_wrong_answer_does_not_cancel_a_nodes_enrollment(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    """Anyone can send a guess for a node's challenge; a wrong guess is refused and the
    node's own answer still completes its enrollment."""
    agent = make_agent(make_swtpm(), verifier)
    challenge = verifier.stub.Enroll(agent.enroll_request())
    guess = pb.ActivateCredentialRequest(node_id=agent.node_id, secret=os.urandom(32))
    error = rpc_error(lambda: verifier.stub.ActivateCredential(guess))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    secret = agent.tpm.activate_credential(
        agent.ak, challenge.credential_blob, challenge.encrypted_secret
    )
    verifier.stub.ActivateCredential(
        pb.ActivateCredentialRequest(node_id=agent.node_id, secret=secret)
    )
    agent.state.enrolled = True
    assert agent.attest_once().status == AFFIRMING


def test_squatting_a_node_id_without_activating_is_harmless(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory, tmp_path: Path
) -> None:
    """An attacker starts enrolling "web-9" with some genuine (public) EK certificate and
    never activates; the real web-9 still enrolls."""
    decoy = make_agent(make_swtpm(), verifier, node_id="web-9", state_dir=tmp_path / "decoy")
    squat = decoy.enroll_request()
    verifier.stub.Enroll(squat)
    decoy.tpm.close()
    real = make_agent(make_swtpm(), verifier, node_id="web-9")
    real.enroll()
    assert real.attest_once().status == AFFIRMING


def test_a_forged_quote_changes_nothing_of_the_node(
    make_swtpm: SwtpmFactory, verifier: VerifierHandle, make_agent: AgentFactory
) -> None:
    agent = _enrolled(make_swtpm, verifier, make_agent)
    assert agent.attest_once().status == AFFIRMING
    before = verifier.running.store.get_node(agent.node_id)
    request = agent.collect(agent.challenge())
    request.quote_signature = request.quote_signature[:-1] + bytes(
        [request.quote_signature[-1] ^ 1]
    )
    response = agent.submit(request)
    assert list(response.failed_checks) == ["quote-signature"] and response.result_id == 0
    assert verifier.running.store.get_node(agent.node_id) == before
    assert len(verifier.running.store.results_for(agent.node_id)) == 1

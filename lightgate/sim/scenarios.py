"""Simulator scenarios: what one node does, honest or hostile, against a real verifier.

Each hostile scenario is an attack a real adversary can mount with what it holds (its
own TPM, a captured message, a CA it controls); none reaches into the verifier.  A
scenario returns the verifier's verdict as the node saw it; `expect` says which check
must refuse it (None: the node must be trusted).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from attestor.agent import Agent
from attestor.tpm import Tpm, TpmError
from lightgate.sim.admission import SimAdmission
from lightgate.sim.images import SimImages
from lightgate.wire import convert
from lightgate.wire.channel import RpcError
from lightgate.wire.v1 import attestation_pb2 as pb


@dataclass(frozen=True)
class Verdict:
    # affirming | warning | contraindicated | expired | none (never enrolled)
    status: str
    reason: str | None
    failed_checks: tuple[str, ...] = ()


class Operator(Protocol):
    """What an operator does to the fleet, through the verifier's Admin API."""

    def tag(self, node_id: str, attributes: dict[str, str]) -> None: ...

    def revoke(self, node_id: str, reason: str) -> None: ...

    def trust(self, node_id: str) -> tuple[str, str]:
        """The node's trust state now and its reason."""
        ...


#: The asset tag every simulated node is given, and the networks its site is at.
SIM_TAG = {"region": "eu-west", "dc": "ams1"}


@dataclass(frozen=True)
class Environment:
    """What a scenario may use besides its own agent."""

    nonce_ttl_seconds: float
    foreign_tpm: Callable[[], Tpm] | None = None
    operator: Operator | None = None
    trust_seconds: float = 0.0
    admission: SimAdmission | None = None
    images: SimImages | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    expect: str | None  # the check that must refuse it; None = must be affirming
    run: Callable[[Agent, Environment], Verdict]
    rogue_ca: bool = False  # the node's TPM carries an EK certificate from an untrusted CA
    needs_foreign_tpm: bool = False
    runs_containers: bool = False  # the fleet needs images (a containerd when available)
    boot: str = "good"  # the fixture boot replayed into the node's PCRs at start
    # What the agent sends as its event log, from the log of `boot` (None: that log).
    sent_log: Callable[[bytes], bytes] | None = None
    detail: str | None = None  # text the refusal's reason must name (the claim, the PCR)
    site: str = "ams1"  # the simulated site the node connects from (its source network)


def _verdict(response: pb.AttestResponse) -> Verdict:
    status = convert.STATUS_FROM_WIRE.get(response.status, "none")
    return Verdict(status, response.reason or None, tuple(response.failed_checks))


def _enroll(agent: Agent, env: Environment) -> None:
    """Enroll, then have the operator tag the node where it is supposed to be."""
    agent.enroll()
    if env.operator is not None:
        env.operator.tag(agent.node_id, SIM_TAG)


def _refused(exc: RpcError) -> Verdict:
    """A refused enrollment: the verifier makes no claim about the node (EAR "none")."""
    return Verdict("none", exc.details or exc.code.name)


def good(agent: Agent, env: Environment) -> Verdict:
    _enroll(agent, env)
    agent.attest_once()
    return _verdict(agent.attest_once())  # a second round: counters move forward


def forged_ek(agent: Agent, env: Environment) -> Verdict:
    try:
        agent.enroll()
    except RpcError as exc:
        return _refused(exc)
    return _verdict(agent.attest_once())


def foreign_ak(agent: Agent, env: Environment) -> Verdict:
    """Present this TPM's genuine EK with an AK that lives in another TPM."""
    assert env.foreign_tpm is not None
    with env.foreign_tpm() as other:
        foreign = other.create_ak("ecc")
        request = agent.enroll_request()
        request.ak_public = foreign.tpmt_public
        challenge = agent.stub.Enroll(request, timeout=agent.config.rpc_timeout_seconds)
        try:
            # The credential is sealed to this node's EK; the TPM holding the AK cannot
            # open it (integrity check fails), and this node's TPM cannot load the AK.
            secret = other.activate_credential(
                foreign, challenge.credential_blob, challenge.encrypted_secret
            )
        except TpmError:
            secret = os.urandom(32)  # all that is left to the attacker: a guess
    try:
        agent.stub.ActivateCredential(
            pb.ActivateCredentialRequest(node_id=agent.node_id, secret=secret),
            timeout=agent.config.rpc_timeout_seconds,
        )
    except RpcError as exc:
        return _refused(exc)
    return Verdict("none", "foreign AK was activated")


def replayed_nonce(agent: Agent, env: Environment) -> Verdict:
    """Replay a captured, once-accepted attestation."""
    _enroll(agent, env)
    captured = agent.collect(agent.challenge())
    agent.submit(captured)
    return _verdict(agent.submit(captured))


def expired_nonce(agent: Agent, env: Environment) -> Verdict:
    """Answer a challenge after its nonce expired (evidence prepared in advance)."""
    _enroll(agent, env)
    challenge = agent.challenge()
    time.sleep(env.nonce_ttl_seconds + 0.5)
    return _verdict(agent.submit(agent.collect(challenge)))


def tampered_pcr(agent: Agent, env: Environment) -> Verdict:
    """Report a PCR value other than the one the TPM quoted (hide a measurement)."""
    _enroll(agent, env)
    request = agent.collect(agent.challenge())
    bank = request.pcr_values[0]
    first = min(bank.values)
    bank.values[first] = hashlib.sha256(b"what the verifier wants to see").digest()[
        : len(bank.values[first])
    ]
    return _verdict(agent.submit(request))


def bad_signature(agent: Agent, env: Environment) -> Verdict:
    """Alter the signed quote's signature (a forged or corrupted quote)."""
    _enroll(agent, env)
    request = agent.collect(agent.challenge())
    signature = bytearray(request.quote_signature)
    signature[-1] ^= 0x01
    request.quote_signature = bytes(signature)
    return _verdict(agent.submit(request))


def expired(agent: Agent, env: Environment) -> Verdict:
    """Attest once, then stop (the agent dies, the node is cut off): trust lasts out."""
    assert env.operator is not None
    _enroll(agent, env)
    first = _verdict(agent.attest_once())
    if first.status != "affirming":
        return first
    deadline = time.monotonic() + env.trust_seconds + 5.0
    state, reason = env.operator.trust(agent.node_id)
    while state != "expired" and time.monotonic() < deadline:
        time.sleep(0.25)
        state, reason = env.operator.trust(agent.node_id)
    return Verdict(state, f"expired: {reason}" if state == "expired" else reason, (state,))


def revoked(agent: Agent, env: Environment) -> Verdict:
    """An operator revokes a trusted node (a stolen disk): its next attestation, however
    good its evidence, is not trusted."""
    assert env.operator is not None
    _enroll(agent, env)
    first = _verdict(agent.attest_once())
    if first.status != "affirming":
        return first
    if env.admission is not None:  # trusted so far: it holds a certificate
        env.admission.before_revocation(agent)
    env.operator.revoke(agent.node_id, "simulated: the node's disk was reported stolen")
    verdict = _verdict(agent.attest_once())
    if env.admission is not None:
        env.admission.after_revocation(agent.node_id)
    return verdict


def unknown_image(agent: Agent, env: Environment) -> Verdict:
    """Starts a container from the allowed image, then one from an image no golden
    values list: the second must be named in the refusal, the first not."""
    assert env.images is not None
    _enroll(agent, env)
    env.images.start(agent, "allowed")
    agent.attest_once()
    env.images.start(agent, "unknown")
    return _verdict(agent.attest_once())


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("good", "honest node: enrolls, attests twice", None, good),
        Scenario(
            "forged-ek",
            "EK certificate from a CA the verifier does not trust",
            "ek-certificate-untrusted",
            forged_ek,
            rogue_ca=True,
        ),
        Scenario(
            "foreign-ak",
            "AK from another TPM presented with this TPM's EK",
            "credential-activation",
            foreign_ak,
            needs_foreign_tpm=True,
        ),
        Scenario(
            "replayed-nonce",
            "a once-accepted attestation sent again",
            "nonce-replayed",
            replayed_nonce,
        ),
        Scenario(
            "expired-nonce", "evidence sent after the nonce expired", "nonce-expired", expired_nonce
        ),
        Scenario(
            "tampered-pcr",
            "PCR values that do not hash to the quoted digest",
            "pcr-digest",
            tampered_pcr,
        ),
        Scenario("bad-signature", "quote signature altered", "quote-signature", bad_signature),
    )
}


def truncate_log(raw: bytes) -> bytes:
    """The log without its last three events: what a node hiding its latest
    measurements (or a lossy transport) would send."""
    from verifier.evidence.eventlog import parse_event_log

    events = parse_event_log(raw).events
    return raw[: events[-3].offset]


_BOOT_SCENARIOS = (
    Scenario(
        "tampered-kernel",
        "boots a kernel other than the golden one (log and PCRs agree)",
        "golden-values",
        good,
        boot="tampered-kernel",
        detail="boot-chain.kernel",
    ),
    Scenario(
        "secure-boot-off",
        "boots the golden chain with Secure Boot disabled",
        "golden-values",
        good,
        boot="secure-boot-off",
        detail="secure-boot.enabled",
    ),
    Scenario(
        "cmdline-changed",
        "boots the golden kernel with another command line",
        "golden-values",
        good,
        boot="cmdline-changed",
        detail="kernel.cmdline",
    ),
    Scenario(
        "log-truncated",
        "sends its event log without the last events",
        "event-log-replay",
        good,
        sent_log=truncate_log,
        detail="PCR",
    ),
)
SCENARIOS.update({s.name: s for s in _BOOT_SCENARIOS})

_TRUST_SCENARIOS = (
    Scenario(
        "wrong-location",
        "tagged for ams1 (eu-west), attests from fra1's network",
        "location",
        good,
        site="fra1",
        detail="fra1",
    ),
    Scenario("expired", "attests once, then its agent stops", "expired", expired),
    Scenario("revoked", "revoked by an operator, then attests again", "revoked", revoked),
    Scenario(
        "unknown-image",
        "starts a container from an image that is not on the allow-list",
        "images",
        unknown_image,
        runs_containers=True,
        detail="registry.lightgate.sim/miner",
    ),
)
SCENARIOS.update({s.name: s for s in _TRUST_SCENARIOS})


def check_plan(plan: list[str]) -> None:
    unknown = [name for name in plan if name not in SCENARIOS]
    if unknown:
        raise ValueError(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )


DEMO_PLAN = ["good", "good", "good", *[name for name in SCENARIOS if name != "good"]]

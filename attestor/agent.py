"""The attestation agent: enroll once, then attest every interval, for as long as it runs.

State (in `state_dir`, mode 0700): `ak.pub` / `ak.priv` (TPM2B_PUBLIC / TPM2B_PRIVATE,
the private part wrapped by this TPM's EK and useless elsewhere), `node.json` (node
id, whether the verifier activated this AK), `asset-tag` (the signed asset tag the
verifier last handed out) and `runtime.log` (what this boot measured into the runtime
PCR, `attestor.collect.runtime_log`).  Restarts reuse them.

Location (issue 5, item 3): each challenge carries the node's current asset tag.  A new
one is stored, then measured into the runtime PCR and recorded in the runtime log
before the quote, so that very quote proves it; every attestation sends the runtime
log.  At start a stored tag the log lacks (a reboot reset the PCR) is measured again.
With `source_address` set, the channel leaves through `attestor.source_address`.

Verifier outages are expected: every failure to reach it backs off exponentially with
jitter and the loop resumes by itself; a verifier that forgot the node (NOT_FOUND,
FAILED_PRECONDITION) makes the agent enroll again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from attestor.collect.boot_log import read_boot_log
from attestor.collect.images import images_in_use
from attestor.collect.runtime import ContainerRuntimeError
from attestor.collect.runtime_log import AssetTagUnusable, RuntimeLog, asset_tag_bytes
from attestor.source_address import SourceAddressRelay, split_host_port
from attestor.state_files import write_atomic
from attestor.tpm import AkBlobs, Tpm, TpmError
from lightgate import sdnotify
from lightgate.agent_config import AgentConfig
from lightgate.wire import convert
from lightgate.wire.channel import Channel, RpcError, StatusCode
from lightgate.wire.clients import AttestationClient, CredentialsClient
from lightgate.wire.v1 import attestation_pb2 as pb
from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.pcr_values import PcrValues

if TYPE_CHECKING:
    from attestor.credentials import CredentialClient

log = logging.getLogger("lightgate.agent")

RETRYABLE = {
    StatusCode.UNAVAILABLE,
    StatusCode.DEADLINE_EXCEEDED,
    StatusCode.RESOURCE_EXHAUSTED,
    StatusCode.INTERNAL,
    StatusCode.UNKNOWN,
    StatusCode.ABORTED,
}
FORGOTTEN = {StatusCode.NOT_FOUND, StatusCode.FAILED_PRECONDITION}


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped."""
    ceiling = min(maximum, initial * float(2 ** min(attempt, 32)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class AgentState:
    node_id: str
    enrolled: bool = False


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def load_ak(self) -> AkBlobs | None:
        pub, priv = self.path / "ak.pub", self.path / "ak.priv"
        if not (pub.exists() and priv.exists()):
            return None
        return AkBlobs(pub.read_bytes(), priv.read_bytes())

    def save_ak(self, ak: AkBlobs) -> None:
        write_atomic(self.path / "ak.pub", ak.public)
        write_atomic(self.path / "ak.priv", ak.private)

    def load_state(self, default_node_id: str) -> AgentState:
        path = self.path / "node.json"
        if not path.exists():
            return AgentState(default_node_id)
        document = json.loads(path.read_text())
        return AgentState(str(document["node_id"]), bool(document.get("enrolled", False)))

    def save_state(self, state: AgentState) -> None:
        document = {"node_id": state.node_id, "enrolled": state.enrolled}
        write_atomic(self.path / "node.json", json.dumps(document, indent=2).encode())

    def load_asset_tag(self) -> str | None:
        try:
            raw = (self.path / "asset-tag").read_bytes()
        except FileNotFoundError:
            return None
        token = raw.decode("ascii", errors="replace")
        try:
            asset_tag_bytes(token)
        except AssetTagUnusable:
            # Not what save_asset_tag wrote; the verifier hands the tag out again.
            log.warning("stored asset tag unreadable; ignored", extra={"fields": {}})
            return None
        return token

    def save_asset_tag(self, token: str | None) -> None:
        """Keep the tag (None: the operator removed it, so a reboot measures none)."""
        if token is None:
            (self.path / "asset-tag").unlink(missing_ok=True)
        else:
            write_atomic(self.path / "asset-tag", asset_tag_bytes(token))


def open_channel(config: AgentConfig, target: str | None = None) -> Channel:
    """A channel to the verifier (`lightgate.wire.channel`: gRPC without grpcio, whose
    core would cost every node about 20 MB); `target` is where to dial instead (the
    source-address relay), while TLS still checks the verifier's own name."""
    # The relay only copies bytes: the :authority and, over TLS, the name checked
    # against the certificate are the verifier's, not 127.0.0.1's.
    authority = config.verifier if target is not None else None
    server_name = config.tls_server_name
    if server_name is None and target is not None:
        server_name = split_host_port(config.verifier)[0]
    tls_ca = None if config.tls_ca is None else config.tls_ca.read_bytes()
    return Channel(
        target or config.verifier, tls_ca=tls_ca, server_name=server_name, authority=authority
    )


class Agent:
    """One node's agent over one TPM and one verifier channel."""

    def __init__(
        self,
        config: AgentConfig,
        tpm: Tpm,
        stub: AttestationClient,
        credentials: CredentialsClient | None = None,
    ) -> None:
        self.config = config
        self.tpm = tpm
        self.stub = stub
        self.credentials_stub = credentials
        self.state_dir = StateDir(config.state_dir)
        self.state = self.state_dir.load_state(config.node_id)
        self._ak: AkBlobs | None = None
        self._runtime_log: RuntimeLog | None = None

    @property
    def node_id(self) -> str:
        return self.state.node_id

    @property
    def ak(self) -> AkBlobs:
        """The persisted AK, created (and saved) on first use."""
        if self._ak is None:
            self._ak = self.state_dir.load_ak()
        if self._ak is None:
            self._ak = self.tpm.create_ak(self.config.ak_algorithm)
            self.state_dir.save_ak(self._ak)
            # A new AK is unknown to the verifier, whatever node.json said before.
            self.state.enrolled = False
            self.state_dir.save_state(self.state)
            log.info(
                "created AK",
                extra={"fields": {"node": self.node_id, "algorithm": self.config.ak_algorithm}},
            )
        return self._ak

    @property
    def runtime_log(self) -> RuntimeLog:
        """This boot's runtime log, resumed on first use (and after a TPM error): the
        stored log reconciled with the runtime PCR, then the stored asset tag measured
        again if the log lacks it (after a reboot, the PCR and the log start empty)."""
        if self._runtime_log is None:
            runtime = RuntimeLog.resume(self.tpm, self.config.state_dir, self.config.runtime_pcr)
            stored = self.state_dir.load_asset_tag()
            if stored is not None and runtime.last_asset_tag() != stored:
                runtime.append_asset_tag(self.tpm, stored)
                self._log_tag_measured(runtime, "stored")
            self._runtime_log = runtime
        return self._runtime_log

    def measure_asset_tag(self, token: str) -> None:
        """Make `token` (the verifier's current tag for this node; empty: none) the stored
        tag and the last one in the runtime log, extending it if it is new."""
        if not token:
            if self.state_dir.load_asset_tag() is not None:
                self.state_dir.save_asset_tag(None)
                log.info("asset tag removed", extra={"fields": {"node": self.node_id}})
            return
        try:
            asset_tag_bytes(token)
        except AssetTagUnusable as exc:
            # Measure nothing rather than something unreadable: the verifier then sees
            # the tag it issued missing, which its policy reports.
            log.error(
                "verifier sent an unusable asset tag",
                extra={"fields": {"node": self.node_id, "detail": str(exc)}},
            )
            return
        if self.state_dir.load_asset_tag() != token:
            self.state_dir.save_asset_tag(token)
        if self.runtime_log.last_asset_tag() != token:
            self.runtime_log.append_asset_tag(self.tpm, token)
            self._log_tag_measured(self.runtime_log, "verifier")

    def measure_images(self) -> None:
        """Read every configured container runtime and measure each image a container
        uses that this boot's runtime log does not record yet.  A runtime that
        cannot be read fails the round (ContainerRuntimeError): an attestation that
        could not see the containers must not vouch for them."""
        if not self.config.containers:
            return
        runtime = self.runtime_log
        measured = runtime.measured_images()
        fresh = [
            record
            for source in self.config.containers
            for record in images_in_use(source, measured, self.config.container_timeout_seconds)
        ]
        for record in fresh:
            runtime.append_image(self.tpm, record)
        if fresh:
            log.info(
                "images measured",
                extra={
                    "fields": {
                        "runtime_pcr": runtime.pcr,
                        "images": [record.describe() for record in fresh],
                        "records": len(runtime.events),
                    }
                },
            )

    def _log_tag_measured(self, runtime: RuntimeLog, source: str) -> None:
        fields = {
            "node": self.node_id,
            "runtime_pcr": runtime.pcr,
            "from": source,
            "records": len(runtime.events),
        }
        log.info("asset tag measured", extra={"fields": fields})

    def _keep_certificate(self) -> None:
        """Renew the certificate when due; a refusal is logged, and attestation goes on
        at its interval (the gate refuses for reasons the next round may not have)."""
        try:
            self.credentials().keep_certificate()
        except RpcError as exc:
            log.warning(
                "certificate not renewed",
                extra={
                    "fields": {"node": self.node_id, "code": exc.code.name, "detail": exc.details}
                },
            )

    def credentials(self) -> CredentialClient:
        """This node's client of the verifier's credential gate.  Imported on first use:
        certificates bring pyca/cryptography (about 10 MB) into an agent that keeps one."""
        from attestor.credentials import CredentialClient

        if self.credentials_stub is None:
            raise RuntimeError("this agent was built without a Credentials stub")
        return CredentialClient(
            self.node_id,
            self.tpm,
            self.ak,
            self.config.state_dir,
            self.credentials_stub,
            self.config.rpc_timeout_seconds,
        )

    def enroll_request(self) -> pb.EnrollRequest:
        endorsement = self.tpm.endorsement()
        return pb.EnrollRequest(
            node_id=self.node_id,
            ek_certificate=endorsement.certificate or b"",
            ek_public=endorsement.public,
            ak_public=self.ak.tpmt_public,
            join_token=self.config.join_token or "",
        )

    def enroll(self) -> None:
        """Enroll and activate; afterwards the verifier trusts quotes by this AK."""
        timeout = self.config.rpc_timeout_seconds
        challenge = self.stub.Enroll(self.enroll_request(), timeout=timeout)
        secret = self.tpm.activate_credential(
            self.ak, challenge.credential_blob, challenge.encrypted_secret
        )
        self.stub.ActivateCredential(
            pb.ActivateCredentialRequest(node_id=self.node_id, secret=secret), timeout=timeout
        )
        self.state.enrolled = True
        self.state_dir.save_state(self.state)
        log.info("enrolled", extra={"fields": {"node": self.node_id}})

    def challenge(self) -> pb.ChallengeResponse:
        response: pb.ChallengeResponse = self.stub.Challenge(
            pb.ChallengeRequest(node_id=self.node_id), timeout=self.config.rpc_timeout_seconds
        )
        return response

    def collect(self, challenge: pb.ChallengeResponse) -> pb.AttestRequest:
        """Evidence for one challenge: a quote over its nonce and the PCRs it covers,
        the boot log and the runtime log."""
        selection = convert.selection_from_wire(list(challenge.pcr_selection))
        # Measure a new tag and new images before quoting, so this quote proves them.
        self.measure_asset_tag(challenge.asset_tag)
        self.measure_images()
        # Read the logs before quoting: the quote must cover at least what they say.
        event_log = b"" if self.config.event_log is None else read_boot_log(self.config.event_log)
        runtime_log = self.runtime_log.encoded()
        message, signature, pcrs = self.tpm.quote_with_pcrs(self.ak, selection, challenge.nonce)
        return pb.AttestRequest(
            node_id=self.node_id,
            quote_message=message,
            quote_signature=signature,
            pcr_values=convert.pcr_values_to_wire(PcrValues(pcrs)),
            event_log=event_log,
            runtime_log=runtime_log,
        )

    def submit(self, request: pb.AttestRequest) -> pb.AttestResponse:
        response: pb.AttestResponse = self.stub.Attest(
            request, timeout=self.config.rpc_timeout_seconds
        )
        return response

    def attest_once(self) -> pb.AttestResponse:
        response = self.submit(self.collect(self.challenge()))
        status = convert.STATUS_FROM_WIRE.get(response.status, "none")
        fields = {"node": self.node_id, "status": status, "result_id": response.result_id}
        if response.failed_checks:
            fields["checks"] = list(response.failed_checks)
            fields["reason"] = response.reason
        log.info("attested", extra={"fields": fields})
        return response

    def run(self, stop: threading.Event, rng: random.Random | None = None) -> None:
        """Enroll if needed, then attest every interval until `stop` is set."""
        rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        failures = 0
        ping_every = sdnotify.watchdog_seconds()
        while not stop.is_set():
            try:
                if not self.state.enrolled:
                    self.enroll()
                response = self.attest_once()
                if self.config.certificate and response.status == pb.TRUST_STATUS_AFFIRMING:
                    self._keep_certificate()
                failures = 0
                sdnotify.notify(
                    f"STATUS=last attestation: {convert.STATUS_FROM_WIRE.get(response.status)}"
                )
                sdnotify.rest(stop, self.config.interval_seconds, ping_every)
                continue
            except RpcError as exc:
                code = exc.code
                if code in FORGOTTEN and self.state.enrolled:
                    log.warning(
                        "verifier does not know this node; enrolling again",
                        extra={"fields": {"node": self.node_id, "code": code.name}},
                    )
                    self.state.enrolled = False
                    self.state_dir.save_state(self.state)
                    continue
                detail = exc.details
                level = logging.WARNING if code in RETRYABLE else logging.ERROR
                log.log(
                    level,
                    "verifier call failed",
                    extra={"fields": {"node": self.node_id, "code": code.name, "detail": detail}},
                )
            except TpmError as exc:
                log.error(
                    "TPM command failed",
                    extra={"fields": {"node": self.node_id, "detail": str(exc)}},
                )
                self.tpm.forget_handles()
                # The TPM may have been reset or may not have finished an extend: the
                # runtime log is reconciled with the PCR again next round.
                self._runtime_log = None
            except ContainerRuntimeError as exc:
                log.error(
                    "container runtime unreadable; not attesting until it answers",
                    extra={"fields": {"node": self.node_id, "detail": str(exc)}},
                )
            except TpmStructureMalformed as exc:  # a challenge this agent cannot answer
                log.error(
                    "verifier's challenge is malformed",
                    extra={"fields": {"node": self.node_id, "detail": exc.reason}},
                )
            except Exception:  # the agent outlives any one bad round: log, back off, retry
                log.exception("attestation round failed", extra={"fields": {"node": self.node_id}})
            delay = backoff_delay(
                failures, self.config.backoff_initial_seconds, self.config.backoff_max_seconds, rng
            )
            failures += 1
            sdnotify.notify(f"STATUS=retrying in {delay:.1f}s")
            sdnotify.rest(stop, delay, ping_every)


def run_agent(config: AgentConfig, stop: threading.Event) -> None:
    """The `attest agent run` process: open the TPM, the relay (when a source address is
    set) and the channel, then loop.  They close in reverse order."""
    with contextlib.ExitStack() as stack:
        tpm = stack.enter_context(Tpm(config.tcti, config.ek_kind))
        target = None
        if config.source_address is not None:
            relay = SourceAddressRelay(config.verifier, config.source_address)
            target = stack.enter_context(relay).address
        channel = stack.enter_context(open_channel(config, target))
        agent = Agent(config, tpm, AttestationClient(channel), CredentialsClient(channel))
        sdnotify.notify("READY=1")
        agent.run(stop)
        sdnotify.notify("STOPPING=1")

"""What the simulated fleet's scheduler and identity service see: after each node has
played its scenario, the Kubernetes scheduler extender is asked whether a workload may
run there, and the node asks the credential gate for a TPM-bound certificate.

The workload is `web`, which may run only in region eu-west (where ams1 is): honest
nodes are admitted and get a certificate; every refused node is filtered out and refused
a certificate, each for its reason.  A node revoked mid-run is shown before and after:
admitted with a certificate, then filtered out with that certificate on the CRL.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field

from cryptography import x509

from attestor.agent import Agent
from lightgate.wire.channel import RpcError

WORKLOAD_POD = {
    "metadata": {
        "name": "web-0",
        "namespace": "default",
        "annotations": {"lightgate.io/location.region": "eu-west"},
    },
    "spec": {"containers": [{"name": "web", "image": "registry.local/web:1"}]},
}
CRL_WAIT_SECONDS = 5.0


@dataclass
class AdmissionOutcome:
    """What the scheduler and the credential gate made of one node."""

    admitted: bool = False
    admission_reason: str = ""
    certificate: str | None = None  # the serial (hex) of the certificate issued
    certificate_reason: str = ""
    # Revoked mid-run: the serial issued before, and whether it then reached the CRL.
    revoked_serial: str | None = None
    revoked_on_crl: bool | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "extender": {"admitted": self.admitted, "reason": self.admission_reason},
            "certificate": {
                "issued": self.certificate is not None,
                "serial": self.certificate,
                "reason": self.certificate_reason,
            },
            "revoked_certificate_on_crl": self.revoked_on_crl,
        }


@dataclass
class SimAdmission:
    """The scheduler extender and the credential gate, as the simulator asks them."""

    https_url: str
    outcomes: dict[str, AdmissionOutcome] = field(default_factory=dict)

    def outcome(self, node_id: str) -> AdmissionOutcome:
        return self.outcomes.setdefault(node_id, AdmissionOutcome())

    def check(self, agent: Agent) -> AdmissionOutcome:
        """Ask the extender and the gate about the node as it is now."""
        outcome = self.outcome(agent.node_id)
        outcome.admitted, outcome.admission_reason = self.extender_admits(agent.node_id)
        outcome.certificate, outcome.certificate_reason = self.certificate(agent)
        return outcome

    def before_revocation(self, agent: Agent) -> None:
        """A trusted node about to be revoked: its certificate, to look for on the CRL."""
        serial, _ = self.certificate(agent)
        self.outcome(agent.node_id).revoked_serial = serial

    def after_revocation(self, node_id: str) -> None:
        outcome = self.outcome(node_id)
        if outcome.revoked_serial is not None:
            outcome.revoked_on_crl = self.on_crl(outcome.revoked_serial)

    def extender_admits(self, node_id: str) -> tuple[bool, str]:
        """The extender's `filter` verb (node-cache-capable mode) for this one node."""
        document = {"Pod": WORKLOAD_POD, "Nodes": None, "NodeNames": [node_id]}
        request = urllib.request.Request(  # noqa: S310 - the verifier's own URL
            f"{self.https_url}/scheduler/filter",
            json.dumps(document).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            answer = json.load(response)
        if answer.get("Error"):
            return False, str(answer["Error"])
        if node_id in (answer.get("NodeNames") or []):
            return True, "admitted for web (region eu-west)"
        failed = {
            **(answer.get("FailedNodes") or {}),
            **(answer.get("FailedAndUnresolvableNodes") or {}),
        }
        return False, str(failed.get(node_id, "filtered out"))

    def certificate(self, agent: Agent) -> tuple[str | None, str]:
        """Ask the gate for a certificate for the node's TPM-bound key."""
        try:
            issued = agent.credentials().request_certificate()
        except RpcError as exc:
            return None, exc.details or exc.code.name
        certificate = x509.load_der_x509_certificate(issued.certificate)
        until = certificate.not_valid_after_utc.strftime("%H:%M:%SZ")
        return issued.serial, f"serial {issued.serial[:12]}…, valid until {until}"

    def on_crl(self, serial: str) -> bool:
        """Whether the certificate shows on the CRL within a few seconds (revocation is
        processed off the request path)."""
        deadline = time.monotonic() + CRL_WAIT_SECONDS
        while True:
            with urllib.request.urlopen(f"{self.https_url}/ca/crl", timeout=10) as response:  # noqa: S310
                crl = x509.load_der_x509_crl(response.read())
            if crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

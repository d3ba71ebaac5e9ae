"""Credentials for this node from the verifier's credential gate, bound to a key in its
TPM: an X.509 certificate kept current in the state directory, and tokens on request.

Each request answers a fresh nonce from `Credentials.Challenge` with the bound key's
certification by the AK (`attestor.bound_key`).  The certificate is asked for again when
it is missing, unreadable, for another key, or past half of its life: since a
certificate never outlives the node's trust, a node that keeps attesting keeps a valid
certificate, and one that stops is left with none.

Files in the state directory: `certificate.pem` (the node's certificate) and `ca.pem`
(the chain that issued it), written atomically, readable by the agent's group so that
the workloads' TLS stack (or a sidecar) can use them with the TPM key.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestor.bound_key import BoundKey, load_or_create_bound_key
from attestor.state_files import write_atomic
from attestor.tpm import AkBlobs, Tpm
from lightgate.wire.clients import CredentialsClient
from lightgate.wire.v1 import admission_pb2 as pb
from verifier.evidence.keys import public_key
from verifier.evidence.tpm_public import parse_public

log = logging.getLogger("lightgate.agent")

CERTIFICATE_FILE = "certificate.pem"
CHAIN_FILE = "ca.pem"


class CredentialClient:
    """Asks the verifier's credential gate for this node's credentials."""

    def __init__(
        self,
        node_id: str,
        tpm: Tpm,
        ak: AkBlobs,
        state_dir: Path,
        stub: CredentialsClient,
        timeout: float = 10.0,
    ) -> None:
        self.node_id = node_id
        self._tpm = tpm
        self._ak = ak
        self._state_dir = state_dir
        self._stub = stub
        self._timeout = timeout
        self._key: BoundKey | None = None

    @property
    def key(self) -> BoundKey:
        if self._key is None:
            self._key = load_or_create_bound_key(self._tpm, self._state_dir, node_id=self.node_id)
        return self._key

    def proof(self) -> pb.KeyCertification:
        """The bound key's certification over a fresh nonce from the gate."""
        challenge = self._stub.Challenge(
            pb.CredentialChallengeRequest(node_id=self.node_id), timeout=self._timeout
        )
        c = self.key.certification(self._ak, challenge.nonce)
        return pb.KeyCertification(
            public_area=c.public_area,
            certify_info=c.certify_info,
            certify_signature=c.certify_signature,
            creation_data=c.creation_data,
            creation_info=c.creation_info,
            creation_signature=c.creation_signature,
            nonce=challenge.nonce,
        )

    def request_certificate(
        self, requirements: pb.WorkloadRequirements | None = None
    ) -> pb.IssueCertificateResponse:
        request = pb.IssueCertificateRequest(
            node_id=self.node_id,
            key=self.proof(),
            csr=self.key.csr(self.node_id),
            requirements=requirements,
        )
        response: pb.IssueCertificateResponse = self._stub.IssueCertificate(
            request, timeout=self._timeout
        )
        return response

    def request_token(
        self, audience: list[str], lifetime_seconds: int = 0
    ) -> pb.IssueTokenResponse:
        request = pb.IssueTokenRequest(
            node_id=self.node_id,
            key=self.proof(),
            audience=audience,
            lifetime_seconds=lifetime_seconds,
        )
        response: pb.IssueTokenResponse = self._stub.IssueToken(request, timeout=self._timeout)
        return response

    def keep_certificate(self, now: datetime | None = None) -> bool:
        """Renew the stored certificate when it is due; True when a new one was stored."""
        moment = now or datetime.now(UTC)
        key = public_key(parse_public(self.key.public_area))
        if not renewal_due(self._state_dir / CERTIFICATE_FILE, key, moment):
            return False
        issued = self.request_certificate()
        certificate = x509.load_der_x509_certificate(issued.certificate)
        chain = [x509.load_der_x509_certificate(der) for der in issued.chain]
        write_atomic(
            self._state_dir / CERTIFICATE_FILE,
            certificate.public_bytes(serialization.Encoding.PEM),
        )
        write_atomic(
            self._state_dir / CHAIN_FILE,
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        )
        log.info(
            "certificate stored",
            extra={
                "fields": {
                    "node": self.node_id,
                    "serial": issued.serial,
                    "until": certificate.not_valid_after_utc.isoformat(),
                }
            },
        )
        return True


def renewal_due(path: Path, public_key: object, now: datetime) -> bool:
    """A certificate at `path` must be asked for again: none, unreadable, for another
    key, or past half of its life."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return True
    if certificate.public_key() != public_key:
        return True
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return now >= start + (end - start) / 2

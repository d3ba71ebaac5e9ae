"""What the store hands in and out: frozen dataclasses, never ORM objects.

Every datetime is timezone-aware UTC, in and out.  Nonces come back as
`verifier.evidence.quote.NonceRecord` and clocks as `verifier.evidence.tpm_structures.ClockInfo`,
the types the quote checks already take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from verifier.evidence.tpm_structures import ClockInfo

# Node states: 'pending' until the first credential activation completes, then 'enrolled'.
NODE_PENDING = "pending"
NODE_ENROLLED = "enrolled"
NODE_STATES = (NODE_PENDING, NODE_ENROLLED)

# Key kinds and states.  A key is 'pending' only while a pending enrollment names it,
# 'active' once bound to the node (at most one active key of each kind per node), and
# 'retired' when a later enrollment replaced it.
KEY_EK = "ek"
KEY_AK = "ak"
KEY_KINDS = (KEY_EK, KEY_AK)
KEY_PENDING = "pending"
KEY_ACTIVE = "active"
KEY_RETIRED = "retired"
KEY_STATES = (KEY_PENDING, KEY_ACTIVE, KEY_RETIRED)

# EAR statuses (draft-ietf-rats-ear, ear.status).  Only 'affirming' moves a node's clock.
STATUS_AFFIRMING = "affirming"
RESULT_STATUSES = ("affirming", "warning", "contraindicated", "none")
CREDENTIAL_CERTIFICATE = "certificate"
CREDENTIAL_TOKEN = "token"  # noqa: S105 (a kind of credential, not a secret)
CREDENTIAL_KINDS = (CREDENTIAL_CERTIFICATE, CREDENTIAL_TOKEN)

# Trust states of an enrolled node: 'enrolled' until its first result, then the status
# of its newest result while that lasts, 'expired' when it lasted out, and 'revoked'
# from an operator's revoke until an operator restores the node.
TRUST_ENROLLED = "enrolled"
TRUST_AFFIRMING = "affirming"
TRUST_WARNING = "warning"
TRUST_CONTRAINDICATED = "contraindicated"
TRUST_EXPIRED = "expired"
TRUST_REVOKED = "revoked"
TRUST_STATES = (
    TRUST_ENROLLED,
    TRUST_AFFIRMING,
    TRUST_WARNING,
    TRUST_CONTRAINDICATED,
    TRUST_EXPIRED,
    TRUST_REVOKED,
)
#: States whose trust lasts only until trust_expires_at.
TRUST_LASTING = (TRUST_AFFIRMING, TRUST_WARNING)


def trust_after(previous: str, status: str) -> str:
    """A node's trust state after a result with `status`: revocation holds until an
    operator lifts it; a result that makes no claim ('none') trusts nothing."""
    if previous == TRUST_REVOKED:
        return TRUST_REVOKED
    if status in (TRUST_AFFIRMING, TRUST_WARNING):
        return status
    return TRUST_CONTRAINDICATED


@dataclass(frozen=True)
class NodeRecord:
    """A node as the store knows it: identity keys, enrollment and attestation state."""

    node_id: str
    state: str
    ek_certificate: bytes | None
    ek_public: bytes
    ek_fingerprint: str
    ak_public: bytes | None
    ak_name: bytes | None
    created_at: datetime
    enrolled_at: datetime | None
    last_clock: ClockInfo | None
    last_attested_at: datetime | None
    last_status: str | None
    reboots: int
    trust_state: str = "enrolled"
    trust_since: datetime | None = None
    trust_expires_at: datetime | None = None
    trust_reason: str | None = None
    last_peer: str | None = None
    last_site: str | None = None
    trust_version: int = 0  # `versions.py`

    def trust_at(self, now: datetime) -> str:
        """The node's trust state at `now`: a lasting state past its expiry reads as
        expired even before the verifier's sweep records the transition."""
        if (
            self.trust_state in TRUST_LASTING
            and self.trust_expires_at is not None
            and now >= self.trust_expires_at
        ):
            return TRUST_EXPIRED
        return self.trust_state

    def trust_reason_at(self, now: datetime) -> str | None:
        """Why the node is in `trust_at(now)`."""
        if self.trust_at(now) == TRUST_EXPIRED and self.trust_state != TRUST_EXPIRED:
            assert self.trust_expires_at is not None
            until = self.trust_expires_at.isoformat()
            return f"no attestation accepted in time; trust lasted until {until}"
        return self.trust_reason


@dataclass(frozen=True)
class PendingEnrollment:
    """A credential challenge sent to a node and not yet answered.

    `secret_digest` is SHA-256 of the credential secret: the store never holds the
    secret itself, so reading the database does not let anyone answer the challenge.
    """

    node_id: str
    ek_certificate: bytes | None
    ek_public: bytes
    ek_fingerprint: str
    ak_public: bytes
    ak_name: bytes
    secret_digest: bytes
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AttestationRecord:
    """One appraised quote: the evidence as received and the verdict on it.

    `clock` is the quote's TPMS_CLOCK_INFO, set when the quote was accepted; an
    'affirming' record must carry it, since it becomes the node's counter baseline.
    `event_log` is the boot event log as received (stored once per distinct log, under
    its SHA-256); `findings`, `workarounds` and `claims` are the verifier's account of
    it, kept with the result.
    """

    node_id: str
    received_at: datetime
    nonce: bytes
    quote_message: bytes
    quote_signature: bytes
    pcr_values: dict[str, dict[str, str]]
    peer: str
    status: str
    failed_checks: tuple[str, ...]
    reason: str | None
    clock: ClockInfo | None
    rebooted: bool
    event_log: bytes | None = None
    findings: tuple[str, ...] = ()
    workarounds: tuple[str, ...] = ()
    claims: dict[str, Any] | None = None
    runtime_log: bytes | None = None
    # The appraisal: vector and policy, the signed EAR, until when it vouches, the
    # digest of this evidence, the policy input without claims, the observed site.
    trust_vector: dict[str, int] | None = None
    policy_id: str | None = None
    ear: str | None = None
    expires_at: datetime | None = None
    evidence_digest: bytes | None = None
    appraisal_input: dict[str, Any] | None = None
    site: str | None = None


@dataclass(frozen=True)
class ResultRecord:
    """A stored verdict; `evidence_id` names the evidence it judged (for re-verification)."""

    id: int
    node_id: str
    evidence_id: int
    status: str
    failed_checks: tuple[str, ...]
    reason: str | None
    rebooted: bool
    created_at: datetime
    findings: tuple[str, ...] = ()
    workarounds: tuple[str, ...] = ()
    trust_vector: dict[str, int] | None = None
    policy_id: str | None = None
    ear: str | None = None
    expires_at: datetime | None = None
    evidence_digest: bytes | None = None
    # The node's trust right after this result: set only on the record the write
    # returns (for the trust index), so not part of what a result is.
    trust_state: str | None = field(default=None, compare=False)
    trust_since: datetime | None = field(default=None, compare=False)
    trust_reason: str | None = field(default=None, compare=False)
    trust_version: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EvidenceRecord:
    """Stored evidence with its boot event log and the verdict on it (`result_id`)."""

    evidence_id: int
    node_id: str
    received_at: datetime
    pcr_values: dict[str, dict[str, str]]
    event_log: bytes | None
    status: str
    claims: dict[str, Any] | None
    result_id: int


@dataclass(frozen=True)
class GoldenValuesRecord:
    """A named set of golden values as imported.

    `digest` is SHA-256 of the canonical document, computed by the importer; `source`
    says where the values came from ("file:good.yaml", "corim:<signer fingerprint>").
    """

    name: str
    document: dict[str, Any]
    digest: bytes
    source: str
    imported_at: datetime


@dataclass(frozen=True)
class TransitionRecord:
    """A change of a node's trust state; `actor` is "verifier" or an operator."""

    node_id: str
    at: datetime
    from_state: str
    to_state: str
    reason: str
    actor: str
    evidence_digest: bytes | None = None
    result_id: int | None = None


@dataclass(frozen=True)
class AssetTagRecord:
    node_id: str
    attributes: dict[str, str]
    token: str
    serial: int
    issued_at: datetime
    issued_by: str


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True)
class SigningKeyRecord:
    kid: str
    private_pem: bytes
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True)
class PolicyBundleRecord:
    id: int
    digest: str
    files: dict[str, str]
    set_at: datetime
    set_by: str


@dataclass(frozen=True)
class AppraisedEvidence:
    """Stored evidence with what `attest policy whatif` needs to appraise it again."""

    result_id: int
    node_id: str
    created_at: datetime
    status: str
    failed_checks: tuple[str, ...]
    policy_id: str | None
    claims: dict[str, Any] | None
    appraisal_input: dict[str, Any] | None


@dataclass(frozen=True)
class CredentialRecord:
    """A certificate or token issued to a node, and its revocation if any."""

    serial: str  # hex
    node_id: str
    kind: str  # certificate | token
    issued_at: datetime
    not_after: datetime
    subject: str
    ear_digest: bytes
    key_name: bytes
    revoked_at: datetime | None = None
    revoked_reason: str | None = None


@dataclass(frozen=True)
class TrustIndexRow:
    """A node as the admission trust index loads it: its trust, and of its newest
    result the status, the signed EAR and the location the node attested."""

    node_id: str
    trust_state: str
    trust_since: datetime | None
    trust_expires_at: datetime | None
    trust_reason: str | None
    last_site: str | None
    last_attested_at: datetime | None
    status: str | None
    ear: str | None
    appraisal_input: object  # the newest result's policy input
    trust_version: int  # `versions.py`

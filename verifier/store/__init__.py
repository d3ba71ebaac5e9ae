"""The verifier's persistent store (SQLAlchemy + Alembic; SQLite or PostgreSQL).

store = Store.open("sqlite:///var/lib/lightgate/verifier.db")  # migrates, then opens
"""

from verifier.store.attestations import AttestationTransaction
from verifier.store.errors import (
    ChallengeNotAnswered,
    EnrollmentNotPending,
    StoreError,
    StoreInconsistent,
    UnknownNode,
)
from verifier.store.records import (
    AppraisedEvidence,
    AssetTagRecord,
    AttestationRecord,
    AuditRecord,
    CredentialRecord,
    EvidenceRecord,
    GoldenValuesRecord,
    NodeRecord,
    PendingEnrollment,
    PolicyBundleRecord,
    ResultRecord,
    SigningKeyRecord,
    TransitionRecord,
    TrustIndexRow,
)
from verifier.store.store import Store

__all__ = [
    "AppraisedEvidence",
    "AssetTagRecord",
    "AttestationRecord",
    "AuditRecord",
    "CredentialRecord",
    "TrustIndexRow",
    "PolicyBundleRecord",
    "SigningKeyRecord",
    "TransitionRecord",
    "AttestationTransaction",
    "ChallengeNotAnswered",
    "EnrollmentNotPending",
    "EvidenceRecord",
    "GoldenValuesRecord",
    "NodeRecord",
    "PendingEnrollment",
    "ResultRecord",
    "Store",
    "StoreError",
    "StoreInconsistent",
    "UnknownNode",
]

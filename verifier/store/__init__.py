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
    EvidenceRecord,
    GoldenValuesRecord,
    NodeRecord,
    PendingEnrollment,
    PolicyBundleRecord,
    ResultRecord,
    SigningKeyRecord,
    TransitionRecord,
)
from verifier.store.store import Store

__all__ = [
    "AppraisedEvidence",
    "AssetTagRecord",
    "AttestationRecord",
    "AuditRecord",
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

"""The verifier's persistent store (SQLAlchemy + Alembic; SQLite or PostgreSQL).

store = Store.open("sqlite:///var/lib/lightgate/verifier.db")  # migrates, then opens
"""

from verifier.store.errors import (
    ChallengeNotAnswered,
    EnrollmentNotPending,
    StoreError,
    StoreInconsistent,
    UnknownNode,
)
from verifier.store.records import (
    AttestationRecord,
    EvidenceRecord,
    GoldenValuesRecord,
    NodeRecord,
    PendingEnrollment,
    ResultRecord,
)
from verifier.store.store import AttestationTransaction, Store

__all__ = [
    "AttestationRecord",
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

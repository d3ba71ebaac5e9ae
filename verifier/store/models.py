"""The verifier's tables, as typed declarative models.

The store reads and writes them with Core statements (`queries.py`); these classes exist
for the schema (Alembic compares them with `migrations/versions/`) and for typed columns.
Any change here needs a new migration: `tests/unit/verifier/store/test_store_migrations.py`
fails while models and migrations differ.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from verifier.store.records import (
    CREDENTIAL_KINDS,
    KEY_ACTIVE,
    KEY_KINDS,
    KEY_STATES,
    NODE_STATES,
    RESULT_STATUSES,
    TRUST_ENROLLED,
    TRUST_STATES,
)

# Deterministic constraint names, so that migrations name the same objects on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NODE_ID_LENGTH = 255
GOLDEN_VALUES_NAME_LENGTH = 128
_UINT64 = 1 << 64
_INT64_MAX = (1 << 63) - 1


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, stored as naive UTC (microseconds kept).

    Naive TIMESTAMP columns compare and sort identically on SQLite (fixed-width ISO text)
    and PostgreSQL, and no session time zone can shift them.  A naive datetime handed in
    is refused rather than guessed at.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the store; use UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Uint64(TypeDecorator[int]):
    """A UINT64 (TPMS_CLOCK_INFO.clock) in a signed BIGINT, by two's complement.

    The TPM owner can move the clock forward to any value (TPM2_ClockSet, Part 3, 29.2),
    so values past 2**63 - 1 are possible and must not fail the insert.  Ordinary values
    are stored unchanged; the SQL never compares these columns, Python does.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if not 0 <= value < _UINT64:
            raise ValueError(f"{value} is not a UINT64")
        return value - _UINT64 if value > _INT64_MAX else value

    def process_result_value(self, value: int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return value + _UINT64 if value < 0 else value


# BIGINT keys on PostgreSQL (evidence grows by ~10^8 rows a day at 10^5 nodes); SQLite
# assigns row ids only to a column declared exactly INTEGER PRIMARY KEY.
RowId = BigInteger().with_variant(Integer(), "sqlite")


# JSON columns with a server default are JSONB on PostgreSQL: json has no equality
# operator, and Alembic compares a default by asking the server whether the model's equals
# the database's (test_store_migrations.py).  DEFAULT '[]' means the same on both backends.
JSONWithDefault = JSON().with_variant(postgresql.JSONB(), "postgresql")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), bytes: LargeBinary()}


class Node(Base):
    """One node; its keys are rows of `keys`.  last_* come from the last accepted quote."""

    __tablename__ = "nodes"
    __table_args__ = (
        CheckConstraint(_one_of("state", NODE_STATES), name="state"),
        CheckConstraint(_one_of("trust_state", TRUST_STATES), name="trust_state"),
        # The expiry sweep (every second) finds trust that lasted out by this.
        Index(None, "trust_expires_at"),
        # Replicas' trust indexes read the changes after the ones they saw by this.
        Index(None, "change_seq"),
        # The clock baseline is one TPMS_CLOCK_INFO: all of it or none of it.
        CheckConstraint(
            "(last_clock IS NULL AND last_reset_count IS NULL"
            " AND last_restart_count IS NULL AND last_clock_safe IS NULL)"
            " OR (last_clock IS NOT NULL AND last_reset_count IS NOT NULL"
            " AND last_restart_count IS NOT NULL AND last_clock_safe IS NOT NULL)",
            name="last_clock_whole",
        ),
    )

    node_id: Mapped[str] = mapped_column(String(NODE_ID_LENGTH), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    enrolled_at: Mapped[datetime | None]
    last_clock: Mapped[int | None] = mapped_column(Uint64())
    last_reset_count: Mapped[int | None] = mapped_column(BigInteger)
    last_restart_count: Mapped[int | None] = mapped_column(BigInteger)
    last_clock_safe: Mapped[bool | None]
    last_attested_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(32))
    reboots: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Trust now (0004): what the last result, an expiry or an operator made of the node.
    trust_state: Mapped[str] = mapped_column(String(16), server_default=text(f"'{TRUST_ENROLLED}'"))
    trust_since: Mapped[datetime | None]
    trust_expires_at: Mapped[datetime | None]
    trust_reason: Mapped[str | None] = mapped_column(Text)
    last_peer: Mapped[str | None] = mapped_column(String(255))
    last_site: Mapped[str | None] = mapped_column(String(255))
    # Versions of trust (0006, `versions.py`): per node, and in replicas' reading order.
    trust_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    change_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_result_id: Mapped[int | None] = mapped_column(BigInteger)


class Key(Base):
    """An EK or AK public area of one node.

    `fingerprint` identifies the key within its node and kind: the caller's EK
    fingerprint for EKs, the hex TPM name for AKs.
    """

    __tablename__ = "keys"
    __table_args__ = (
        CheckConstraint(_one_of("kind", KEY_KINDS), name="kind"),
        CheckConstraint(_one_of("state", KEY_STATES), name="state"),
        UniqueConstraint("node_id", "kind", "fingerprint"),
        # At most one active key of each kind per node: the AK quotes are checked under.
        Index(
            "uq_keys_active",
            "node_id",
            "kind",
            unique=True,
            sqlite_where=text(f"state = '{KEY_ACTIVE}'"),
            postgresql_where=text(f"state = '{KEY_ACTIVE}'"),
        ),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"))
    kind: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(8))
    fingerprint: Mapped[str] = mapped_column(String(255))
    public: Mapped[bytes]
    name: Mapped[bytes | None]
    certificate: Mapped[bytes | None]
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]


class PendingEnrollmentRow(Base):
    """The open credential challenge of a node (at most one)."""

    __tablename__ = "pending_enrollments"

    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"), primary_key=True)
    ek_key_id: Mapped[int] = mapped_column(ForeignKey("keys.id"))
    ak_key_id: Mapped[int] = mapped_column(ForeignKey("keys.id"))
    secret_digest: Mapped[bytes]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class JoinToken(Base):
    """A one-time enrollment token, kept only as its digest."""

    __tablename__ = "join_tokens"

    token_digest: Mapped[bytes] = mapped_column(primary_key=True)
    note: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # No foreign key: the token is spent before the node it admits has a row.
    used_by: Mapped[str | None] = mapped_column(String(NODE_ID_LENGTH))
    used_at: Mapped[datetime | None]


class VerifierSecret(Base):
    """Keys every verifier replica shares, created once (e.g. the nonce MAC key)."""

    __tablename__ = "verifier_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class Nonce(Base):
    """A spent challenge nonce (nonces are self-authenticating and recorded when the
    attestation that answers them is; the primary key makes a second spend fail)."""

    __tablename__ = "nonces"

    value: Mapped[bytes] = mapped_column(primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"), index=True)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class EventLog(Base):
    """A boot event log as received, stored once under its SHA-256.

    A node sends the same log with every quote until it reboots, so evidence refers to
    logs by digest instead of holding a copy each (a log is tens of kilobytes; a node
    attests every few minutes).
    """

    __tablename__ = "event_logs"

    sha256: Mapped[bytes] = mapped_column(primary_key=True)
    content: Mapped[bytes]
    size: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[datetime]


class Evidence(Base):
    """A quote as received, kept so that an auditor can verify its result again."""

    __tablename__ = "evidence"
    __table_args__ = (Index(None, "node_id", "received_at"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"))
    received_at: Mapped[datetime]
    nonce: Mapped[bytes]
    quote_message: Mapped[bytes]
    quote_signature: Mapped[bytes]
    pcr_values: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON)
    peer: Mapped[str] = mapped_column(String(255))
    event_log_sha256: Mapped[bytes | None] = mapped_column(ForeignKey("event_logs.sha256"))
    # Lightgate's runtime event log (asset tags, images): small, kept with the quote.
    runtime_log: Mapped[bytes | None]


class Result(Base):
    """The verdict on one piece of evidence."""

    __tablename__ = "results"
    __table_args__ = (
        CheckConstraint(_one_of("status", RESULT_STATUSES), name="status"),
        Index(None, "node_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"))
    evidence_id: Mapped[int] = mapped_column(ForeignKey("evidence.id"), unique=True)
    status: Mapped[str] = mapped_column(String(32))
    failed_checks: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    rebooted: Mapped[bool]
    created_at: Mapped[datetime]
    # The default fills the rows written before these columns existed (0003); the store
    # always writes both.
    findings: Mapped[list[str]] = mapped_column(JSONWithDefault, server_default="[]")
    workarounds: Mapped[list[str]] = mapped_column(JSONWithDefault, server_default="[]")
    # SQL NULL rather than JSON 'null' when the verifier wrote no claims.
    claims: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The appraisal (0004): the policy's vector, the policy, the signed EAR, until when
    # it vouches, the digest of the evidence it judged, and the policy input without
    # the claims (kept above), so `attest policy whatif` can appraise it again.
    trust_vector: Mapped[dict[str, int] | None] = mapped_column(JSON(none_as_null=True))
    policy_id: Mapped[str | None] = mapped_column(Text)
    ear: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    evidence_digest: Mapped[bytes | None]
    appraisal_input: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class GoldenValuesRow(Base):
    """A named set of reference values, as imported (a file or a signed CoRIM).

    `digest` is the importer's SHA-256 of the canonical document, so a result can name
    exactly which golden values it was appraised against; `source` says where they came
    from ("file:good.yaml", "corim:<signer fingerprint>").
    """

    __tablename__ = "golden_values"

    name: Mapped[str] = mapped_column(String(GOLDEN_VALUES_NAME_LENGTH), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[bytes]
    source: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[datetime]


class TrustTransition(Base):
    """A change of a node's trust: by a result, by expiry, or by an operator."""

    __tablename__ = "trust_transitions"
    __table_args__ = (Index(None, "node_id", "at"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"))
    at: Mapped[datetime]
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    evidence_digest: Mapped[bytes | None]
    result_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(255))


class AssetTag(Base):
    """The asset tag an operator set for a node, as the verifier signed it."""

    __tablename__ = "asset_tags"

    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"), primary_key=True)
    attributes: Mapped[dict[str, str]] = mapped_column(JSON)
    token: Mapped[str] = mapped_column(Text)
    serial: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[datetime]
    issued_by: Mapped[str] = mapped_column(String(255))


class AuditEntry(Base):
    """One operator action: who, when, what, on what."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "at"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text)


class SigningKeyRow(Base):
    """A result-signing key (P-256, PEM); the newest unretired one signs."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_pem: Mapped[bytes]
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class PolicyBundleRow(Base):
    """An appraisal policy an operator set (Rego modules and data, by relative path);
    the newest is in force."""

    __tablename__ = "policy_bundles"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict[str, str]] = mapped_column(JSON)
    set_at: Mapped[datetime]
    set_by: Mapped[str] = mapped_column(String(255))


class IssuedCredential(Base):
    """A certificate or token the credential gate issued to a node (0005)."""

    __tablename__ = "credentials"
    __table_args__ = (
        CheckConstraint(_one_of("kind", CREDENTIAL_KINDS), name="kind"),
        Index(None, "node_id", "not_after"),
        Index(None, "revoked_at"),
    )

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # hex
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id"))
    kind: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime]
    not_after: Mapped[datetime]
    subject: Mapped[str] = mapped_column(Text)  # the certificate's subject, the token's audience
    ear_digest: Mapped[bytes]  # SHA-256 of the EAR that vouched for the node
    key_name: Mapped[bytes]  # the TPM Name of the key it is bound to
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(Text)


metadata = Base.metadata


def _table(model: type[Base]) -> Table:
    table = model.__table__
    if not isinstance(table, Table):  # declarative builds a Table for each model above
        raise TypeError(f"{model.__name__} is not mapped to a Table")
    return table


# The tables, for Core statements (queries.py).
NODES = _table(Node)
KEYS = _table(Key)
PENDING_ENROLLMENTS = _table(PendingEnrollmentRow)
JOIN_TOKENS = _table(JoinToken)
NONCES = _table(Nonce)
VERIFIER_SECRETS = _table(VerifierSecret)
EVENT_LOGS = _table(EventLog)
EVIDENCE = _table(Evidence)
RESULTS = _table(Result)
GOLDEN_VALUES = _table(GoldenValuesRow)
TRUST_TRANSITIONS = _table(TrustTransition)
ASSET_TAGS = _table(AssetTag)
AUDIT_LOG = _table(AuditEntry)
SIGNING_KEYS = _table(SigningKeyRow)
POLICY_BUNDLES = _table(PolicyBundleRow)
CREDENTIALS = _table(IssuedCredential)

"""Core statements over the store's tables, and rows turned into records.

Statements are built once here with bind parameters and executed with a parameter
dict: SQLAlchemy then reuses the compiled statement without re-deriving a cache key
from the values (with `.values(**literal)`, that derivation cost more than the SQL on
SQLite).  The attestation's own writes are DB-API statements (`driver.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    Executable,
    Integer,
    Table,
    and_,
    bindparam,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from verifier.evidence.tpm_structures import ClockInfo
from verifier.store.errors import StoreInconsistent
from verifier.store.models import (
    ASSET_TAGS,
    EVENT_LOGS,
    EVIDENCE,
    GOLDEN_VALUES,
    KEYS,
    NODES,
    PENDING_ENROLLMENTS,
    RESULTS,
    TRUST_TRANSITIONS,
    VERIFIER_SECRETS,
)
from verifier.store.records import (
    KEY_ACTIVE,
    KEY_AK,
    KEY_EK,
    EvidenceRecord,
    GoldenValuesRecord,
    NodeRecord,
    ResultRecord,
    TransitionRecord,
)

_active_ek = KEYS.alias("active_ek")
_active_ak = KEYS.alias("active_ak")
_pending_ek = KEYS.alias("pending_ek")
_pending_ak = KEYS.alias("pending_ak")

# A node with its active EK and AK (no AK before the first enrollment completes).
NODES_SELECT = select(
    NODES.c.node_id,
    NODES.c.state,
    _active_ek.c.certificate.label("ek_certificate"),
    _active_ek.c.public.label("ek_public"),
    _active_ek.c.fingerprint.label("ek_fingerprint"),
    _active_ak.c.public.label("ak_public"),
    _active_ak.c.name.label("ak_name"),
    NODES.c.created_at,
    NODES.c.enrolled_at,
    NODES.c.last_clock,
    NODES.c.last_reset_count,
    NODES.c.last_restart_count,
    NODES.c.last_clock_safe,
    NODES.c.last_attested_at,
    NODES.c.last_status,
    NODES.c.reboots,
    NODES.c.trust_state,
    NODES.c.trust_since,
    NODES.c.trust_expires_at,
    NODES.c.trust_reason,
    NODES.c.last_peer,
    NODES.c.last_site,
    NODES.c.trust_version,
).select_from(
    NODES.outerjoin(
        _active_ek,
        and_(
            _active_ek.c.node_id == NODES.c.node_id,
            _active_ek.c.kind == KEY_EK,
            _active_ek.c.state == KEY_ACTIVE,
        ),
    ).outerjoin(
        _active_ak,
        and_(
            _active_ak.c.node_id == NODES.c.node_id,
            _active_ak.c.kind == KEY_AK,
            _active_ak.c.state == KEY_ACTIVE,
        ),
    )
)
NODE_BY_ID = NODES_SELECT.where(NODES.c.node_id == bindparam("node_id"))
TRUST_BY_NODE = select(
    NODES.c.trust_state, NODES.c.trust_since, NODES.c.trust_reason, NODES.c.trust_expires_at
).where(NODES.c.node_id == bindparam("node_id"))
NODE_EXISTS = select(NODES.c.node_id).where(NODES.c.node_id == bindparam("node_id"))
# The node row locked for the rest of the transaction (PostgreSQL; SQLite's write
# transaction already excludes other writers): attestations of one node are serialised,
# so each compares its counters with the one before.
NODE_BY_ID_FOR_UPDATE = NODE_BY_ID.with_for_update(of=NODES)

PENDING_BY_NODE = (
    select(
        PENDING_ENROLLMENTS.c.node_id,
        _pending_ek.c.certificate.label("ek_certificate"),
        _pending_ek.c.public.label("ek_public"),
        _pending_ek.c.fingerprint.label("ek_fingerprint"),
        _pending_ak.c.public.label("ak_public"),
        _pending_ak.c.name.label("ak_name"),
        PENDING_ENROLLMENTS.c.secret_digest,
        PENDING_ENROLLMENTS.c.created_at,
        PENDING_ENROLLMENTS.c.expires_at,
    )
    .join(_pending_ek, _pending_ek.c.id == PENDING_ENROLLMENTS.c.ek_key_id)
    .join(_pending_ak, _pending_ak.c.id == PENDING_ENROLLMENTS.c.ak_key_id)
    .where(PENDING_ENROLLMENTS.c.node_id == bindparam("node_id"))
)

RESULTS_FOR_NODE = (
    select(
        RESULTS.c.id,
        RESULTS.c.node_id,
        RESULTS.c.evidence_id,
        RESULTS.c.status,
        RESULTS.c.failed_checks,
        RESULTS.c.reason,
        RESULTS.c.rebooted,
        RESULTS.c.created_at,
        RESULTS.c.findings,
        RESULTS.c.workarounds,
        RESULTS.c.trust_vector,
        RESULTS.c.policy_id,
        RESULTS.c.ear,
        RESULTS.c.expires_at,
        RESULTS.c.evidence_digest,
    )
    .where(RESULTS.c.node_id == bindparam("node_id"))
    .order_by(RESULTS.c.created_at.desc(), RESULTS.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
)

# A node's newest evidence, with the verdict on it and its event log.
LAST_EVIDENCE = (
    select(
        EVIDENCE.c.id.label("evidence_id"),
        EVIDENCE.c.node_id,
        EVIDENCE.c.received_at,
        EVIDENCE.c.pcr_values,
        EVENT_LOGS.c.content.label("event_log"),
        RESULTS.c.status,
        RESULTS.c.claims,
        RESULTS.c.id.label("result_id"),
    )
    .select_from(
        EVIDENCE.join(RESULTS, RESULTS.c.evidence_id == EVIDENCE.c.id).outerjoin(
            EVENT_LOGS, EVENT_LOGS.c.sha256 == EVIDENCE.c.event_log_sha256
        )
    )
    .where(EVIDENCE.c.node_id == bindparam("node_id"))
    .order_by(EVIDENCE.c.received_at.desc(), EVIDENCE.c.id.desc())
    .limit(1)
)
LAST_EVIDENCE_WITH_STATUS = LAST_EVIDENCE.where(RESULTS.c.status == bindparam("status"))

EVENT_LOG_BY_SHA256 = select(EVENT_LOGS.c.content).where(EVENT_LOGS.c.sha256 == bindparam("sha256"))

GOLDEN_VALUES_SELECT = select(
    GOLDEN_VALUES.c.name,
    GOLDEN_VALUES.c.document,
    GOLDEN_VALUES.c.digest,
    GOLDEN_VALUES.c.source,
    GOLDEN_VALUES.c.imported_at,
)
GOLDEN_VALUES_BY_NAME = GOLDEN_VALUES_SELECT.where(GOLDEN_VALUES.c.name == bindparam("name"))

SECRET_BY_NAME = select(VERIFIER_SECRETS.c.secret).where(
    VERIFIER_SECRETS.c.name == bindparam("name")
)


def _insert_on_conflict(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say what to do when the primary key exists (ON CONFLICT)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {dialect}")


def insert_ignoring_duplicates(dialect: str, table: Table) -> Executable:
    """INSERT that adds nothing when the primary key exists, without failing the
    transaction (ON CONFLICT DO NOTHING); it returns the key of a row it added and no
    row otherwise (psycopg reports no rowcount for it)."""
    key = list(table.primary_key.columns)
    return _insert_on_conflict(dialect, table).on_conflict_do_nothing().returning(*key)


def insert_or_replace(dialect: str, table: Table) -> Executable:
    """INSERT that overwrites every other column when the primary key exists (ON CONFLICT
    DO UPDATE): one statement, so concurrent writers of one key neither fail nor mix
    their rows; the last to commit wins."""
    statement = _insert_on_conflict(dialect, table)
    key = list(table.primary_key.columns)
    replaced = {c.name: statement.excluded[c.name] for c in table.columns if not c.primary_key}
    return statement.on_conflict_do_update(index_elements=key, set_=replaced)


# Built once per dialect, like the statements above (see the module docstring).
@cache
def put_golden_values(dialect: str) -> Executable:
    """Stores golden values under their name, replacing any stored under it."""
    return insert_or_replace(dialect, GOLDEN_VALUES)


@cache
def put_asset_tag(dialect: str) -> Executable:
    """Stores a node's asset tag, replacing the one it had."""
    return insert_or_replace(dialect, ASSET_TAGS)


INSERT_TRANSITION = insert(TRUST_TRANSITIONS)


def insert_transition(connection: Connection, transition: TransitionRecord) -> None:
    connection.execute(INSERT_TRANSITION, asdict(transition))


def node_record(row: RowMapping) -> NodeRecord:
    """A NODES_SELECT row as a NodeRecord."""
    if row["ek_public"] is None:
        raise StoreInconsistent(f"node {row['node_id']!r} has no active EK")
    last_clock = None
    if row["last_clock"] is not None:
        last_clock = ClockInfo(
            clock=row["last_clock"],
            reset_count=row["last_reset_count"],
            restart_count=row["last_restart_count"],
            safe=row["last_clock_safe"],
        )
    return NodeRecord(
        node_id=row["node_id"],
        state=row["state"],
        ek_certificate=row["ek_certificate"],
        ek_public=row["ek_public"],
        ek_fingerprint=row["ek_fingerprint"],
        ak_public=row["ak_public"],
        ak_name=row["ak_name"],
        created_at=row["created_at"],
        enrolled_at=row["enrolled_at"],
        last_clock=last_clock,
        last_attested_at=row["last_attested_at"],
        last_status=row["last_status"],
        reboots=row["reboots"],
        trust_state=row["trust_state"],
        trust_since=row["trust_since"],
        trust_expires_at=row["trust_expires_at"],
        trust_reason=row["trust_reason"],
        last_peer=row["last_peer"],
        last_site=row["last_site"],
        trust_version=row["trust_version"],
    )


def result_record(row: RowMapping) -> ResultRecord:
    """A RESULTS_FOR_NODE row as a ResultRecord."""
    fields: dict[str, Any] = dict(row)
    for name in ("failed_checks", "findings", "workarounds"):
        fields[name] = tuple(fields[name])
    if fields["evidence_digest"] is not None:
        fields["evidence_digest"] = bytes(fields["evidence_digest"])
    return ResultRecord(**fields)


def evidence_record(row: RowMapping) -> EvidenceRecord:
    """A LAST_EVIDENCE row as an EvidenceRecord."""
    fields: dict[str, Any] = dict(row)
    if fields["event_log"] is not None:
        fields["event_log"] = bytes(fields["event_log"])
    return EvidenceRecord(**fields)


def golden_values_record(row: RowMapping) -> GoldenValuesRecord:
    """A GOLDEN_VALUES_SELECT row as a GoldenValuesRecord."""
    fields: dict[str, Any] = dict(row)
    fields["digest"] = bytes(fields["digest"])
    return GoldenValuesRecord(**fields)


def insert_id(
    connection: Connection, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> int:
    """Run a one-row INSERT and return the row id the database assigned."""
    primary_key = connection.execute(statement, parameters).inserted_primary_key
    if primary_key is None:
        raise StoreInconsistent("INSERT returned no primary key")
    return int(primary_key[0])

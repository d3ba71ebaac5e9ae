"""Core statements over the store's tables, and rows turned into records.

The statements the attestation path runs (nonces, node state, evidence, results) are
built once here with bind parameters and executed with a parameter dict: SQLAlchemy then
reuses the compiled statement without re-deriving a cache key from the values (with
`.values(**literal)`, that derivation cost more than the SQL on SQLite).  Bind
parameters in WHERE clauses are prefixed `where_`, as SET/VALUES reserve column names.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from verifier.evidence.tpm_structures import ClockInfo
from verifier.store.errors import StoreInconsistent
from verifier.store.models import (
    EVIDENCE,
    KEYS,
    NODES,
    PENDING_ENROLLMENTS,
    RESULTS,
    VERIFIER_SECRETS,
)
from verifier.store.records import KEY_ACTIVE, KEY_AK, KEY_EK, NodeRecord, ResultRecord

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
    )
    .where(RESULTS.c.node_id == bindparam("node_id"))
    .order_by(RESULTS.c.created_at.desc(), RESULTS.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
)

SECRET_BY_NAME = select(VERIFIER_SECRETS.c.secret).where(
    VERIFIER_SECRETS.c.name == bindparam("name")
)


def insert_ignoring_duplicates(dialect: str, table: Table) -> Executable:
    """INSERT that adds nothing when the primary key exists, without failing the
    transaction (ON CONFLICT DO NOTHING); it returns the key of a row it added and no
    row otherwise (psycopg reports no rowcount for it)."""
    key = list(table.primary_key.columns)
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing().returning(*key)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing().returning(*key)
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {dialect}")


# The node after an attestation: an affirming one also moves the clock baseline.
_NODE_WHERE = NODES.c.node_id == bindparam("where_node_id")
NOTE_ATTESTATION = (
    update(NODES)
    .where(_NODE_WHERE)
    .values(last_attested_at=bindparam("last_attested_at"), last_status=bindparam("last_status"))
)
NOTE_AFFIRMING_ATTESTATION = (
    update(NODES)
    .where(_NODE_WHERE)
    .values(
        last_attested_at=bindparam("last_attested_at"),
        last_status=bindparam("last_status"),
        last_clock=bindparam("last_clock"),
        last_reset_count=bindparam("last_reset_count"),
        last_restart_count=bindparam("last_restart_count"),
        last_clock_safe=bindparam("last_clock_safe"),
        # Added in SQL, so concurrent attestations of one node each count.
        reboots=NODES.c.reboots + bindparam("reboots_added", type_=Integer),
    )
)
INSERT_EVIDENCE = insert(EVIDENCE)
INSERT_RESULT = insert(RESULTS)


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
    )


def result_record(row: RowMapping) -> ResultRecord:
    """A RESULTS_FOR_NODE row as a ResultRecord."""
    fields: dict[str, Any] = dict(row)
    fields["failed_checks"] = tuple(fields["failed_checks"])
    return ResultRecord(**fields)


def insert_id(
    connection: Connection, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> int:
    """Run a one-row INSERT and return the row id the database assigned."""
    primary_key = connection.execute(statement, parameters).inserted_primary_key
    if primary_key is None:
        raise StoreInconsistent("INSERT returned no primary key")
    return int(primary_key[0])

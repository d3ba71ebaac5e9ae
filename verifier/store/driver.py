"""The attestation's writes as DB-API statements: the verifier's hot path.

An attestation writes six rows (nonce, node, event log, evidence, result, and now and
then a trust transition).  Through SQLAlchemy Core each statement costs more Python
than the database spends on it (compiling the cache key, building parameters, type
processors, result objects: measured 800 µs of an attestation's 1.4 ms store time on
SQLite).  Here each statement is SQL text rendered once per dialect and run on the
transaction's own DB-API cursor, with the column types' conversions done by hand
exactly as the models' types do them (`models.py`: naive UTC datetimes, UINT64 in a
signed BIGINT, JSON text / psycopg Json, JSONB where the models say JSONB).  Reading
stays with Core.  The store's tests run every path on both backends and read back what
was written through the models, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection

from verifier.store.versions import next_change_seq_sql

_UINT64: Final = 1 << 64
_INT64_MAX: Final = (1 << 63) - 1

_STATEMENTS: Final = {
    "spend_nonce": (
        "INSERT INTO nonces (value, node_id, issued_at, expires_at, used_at)"
        " VALUES (:value, :node_id, :issued_at, :expires_at, :used_at)"
        " ON CONFLICT DO NOTHING RETURNING value"
    ),
    "note": (
        "UPDATE nodes SET last_attested_at = :last_attested_at, last_status = :last_status,"
        " trust_state = :trust_state, trust_since = :trust_since,"
        " trust_expires_at = :trust_expires_at, trust_reason = :trust_reason,"
        " last_peer = :last_peer, last_site = :last_site, last_result_id = :last_result_id,"
        # `versions.py`: every write of a node's trust moves its versions.
        " trust_version = trust_version + 1, change_seq = {next_change_seq}"
        " WHERE node_id = :where_node_id RETURNING trust_version"
    ),
    "note_affirming": (
        "UPDATE nodes SET last_attested_at = :last_attested_at, last_status = :last_status,"
        " trust_state = :trust_state, trust_since = :trust_since,"
        " trust_expires_at = :trust_expires_at, trust_reason = :trust_reason,"
        " last_peer = :last_peer, last_site = :last_site,"
        " last_clock = :last_clock, last_reset_count = :last_reset_count,"
        " last_restart_count = :last_restart_count, last_clock_safe = :last_clock_safe,"
        # Added in SQL, so concurrent attestations of one node each count.
        " reboots = reboots + :reboots_added, last_result_id = :last_result_id,"
        # `versions.py`: every write of a node's trust moves its versions.
        " trust_version = trust_version + 1, change_seq = {next_change_seq}"
        " WHERE node_id = :where_node_id RETURNING trust_version"
    ),
    "event_log": (
        "INSERT INTO event_logs (sha256, content, size, first_seen)"
        " VALUES (:sha256, :content, :size, :first_seen) ON CONFLICT DO NOTHING"
    ),
    "evidence": (
        "INSERT INTO evidence (node_id, received_at, nonce, quote_message, quote_signature,"
        " pcr_values, peer, event_log_sha256, runtime_log)"
        " VALUES (:node_id, :received_at, :nonce, :quote_message, :quote_signature,"
        " :pcr_values, :peer, :event_log_sha256, :runtime_log) RETURNING id"
    ),
    "result": (
        "INSERT INTO results (node_id, evidence_id, status, failed_checks, reason, rebooted,"
        " created_at, findings, workarounds, claims, trust_vector, policy_id, ear,"
        " expires_at, evidence_digest, appraisal_input)"
        " VALUES (:node_id, :evidence_id, :status, :failed_checks, :reason, :rebooted,"
        " :created_at, :findings, :workarounds, :claims, :trust_vector, :policy_id, :ear,"
        " :expires_at, :evidence_digest, :appraisal_input) RETURNING id"
    ),
    "transition": (
        "INSERT INTO trust_transitions (node_id, at, from_state, to_state, reason,"
        " evidence_digest, result_id, actor)"
        " VALUES (:node_id, :at, :from_state, :to_state, :reason, :evidence_digest,"
        " :result_id, :actor)"
    ),
}
_NAMED: Final = re.compile(r":([a-z_][a-z0-9_]*)")


class Writes:
    """The statements for one dialect ("sqlite" or "postgresql")."""

    def __init__(self, dialect: str) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {dialect}")
        self._sqlite = dialect == "sqlite"
        # sqlite3 takes :name as it is; psycopg takes %(name)s.
        next_seq = next_change_seq_sql(dialect)
        self._sql = {
            name: (sql if self._sqlite else _NAMED.sub(r"%(\1)s", sql)).replace(
                "{next_change_seq}", next_seq
            )
            for name, sql in _STATEMENTS.items()
        }
        if not self._sqlite:
            from psycopg.types.json import Json, Jsonb

            self._json_type, self._jsonb_type = Json, Jsonb

    def run(self, connection: Connection, name: str, parameters: Mapping[str, Any]) -> Any:
        """Run statement `name` in the connection's transaction; returns the cursor."""
        driver = connection.connection.driver_connection
        assert driver is not None  # a checked-out connection always has one
        cursor = driver.cursor()
        cursor.execute(self._sql[name], parameters)
        return cursor

    def first_column(self, connection: Connection, name: str, parameters: Mapping[str, Any]) -> Any:
        row = self.run(connection, name, parameters).fetchone()
        return None if row is None else row[0]

    # The column types' conversions (models.py)

    def time(self, value: datetime | None) -> Any:
        """UTCDateTime: aware UTC in, naive UTC stored; SQLite as SQLAlchemy's text."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the store; use UTC")
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if self._sqlite else naive

    def json(self, value: object) -> Any:
        """JSON (SQL NULL for None, as the models' none_as_null columns store it)."""
        if value is None:
            return None
        return json.dumps(value) if self._sqlite else self._json_type(value)

    def jsonb(self, value: object) -> Any:
        """JSONWithDefault: JSONB on PostgreSQL."""
        return json.dumps(value) if self._sqlite else self._jsonb_type(value)

    def boolean(self, value: bool | None) -> Any:
        if value is None:
            return None
        return int(value) if self._sqlite else value

    @staticmethod
    def uint64(value: int | None) -> int | None:
        """Uint64: two's complement in a signed BIGINT."""
        if value is None:
            return None
        if not 0 <= value < _UINT64:
            raise ValueError(f"{value} is not a UINT64")
        return value - _UINT64 if value > _INT64_MAX else value

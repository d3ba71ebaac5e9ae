"""Versions of nodes' trust, so that each replica's trust index reads exactly the
changes it has not seen yet.

Every write of a node's trust or newest result sets two columns of its row:
- `trust_version = trust_version + 1`: one node's writes are serialised by its row lock
  (SQLite: by the one writer), so of two entries of a node the higher version is newer,
  whichever replica or sync delivered it;
- `change_seq`: where the write falls in the order replicas read changes in.  A replica
  keeps a mark and reads the rows with `change_seq >= mark`; the mark must never pass a
  write that has not committed yet, or that write would be missed for good:
  - PostgreSQL: the writing transaction's id (`pg_current_xact_id()`), and the mark the
    oldest transaction id still running (`pg_snapshot_xmin` of the current snapshot),
    taken before the rows are read: every write below the mark has committed (or rolled
    back) and is visible to the read that follows;
  - SQLite: one more than the highest `change_seq`, computed inside the write
    transaction, which holds SQLite's one write lock until it commits; the mark is one
    more than the highest committed.
A row at or above the mark is read again at the next sync; the version makes that
harmless.  No write waits on another node's write for any of this.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import BigInteger, Connection, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from verifier.store.models import NODES

# MAX alone (no COALESCE around it) lets SQLite read it off the index; never NULL
# here, as the row being written is one of them.
_NEXT_SQLITE: Final = "((SELECT MAX(change_seq) FROM nodes) + 1)"
_NEXT_POSTGRESQL: Final = "CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT)"
_MARK_SQLITE: Final = "SELECT (SELECT MAX(change_seq) FROM nodes) + 1"
_MARK_POSTGRESQL: Final = (
    "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT)"
)


class next_change_seq(FunctionElement[int]):
    """The `change_seq` of a row written now (Core statements)."""

    type = BigInteger()
    inherit_cache = True


@compiles(next_change_seq)
def _next_sqlite(element: next_change_seq, compiler: Any, **kw: Any) -> str:
    return _NEXT_SQLITE


@compiles(next_change_seq, "postgresql")
def _next_postgresql(element: next_change_seq, compiler: Any, **kw: Any) -> str:
    return _NEXT_POSTGRESQL


def next_change_seq_sql(dialect: str) -> str:
    """The `change_seq` of a row written now (DB-API statements, `driver.py`)."""
    return _NEXT_SQLITE if dialect == "sqlite" else _NEXT_POSTGRESQL


def change_mark(connection: Connection) -> int:
    """Below this, every write has committed: read it before the rows it covers."""
    sql = _MARK_SQLITE if connection.dialect.name == "sqlite" else _MARK_POSTGRESQL
    mark = connection.execute(text(sql)).scalar_one()
    return 0 if mark is None else int(mark)  # None: no node yet


def bumped() -> dict[str, Any]:
    """The values a Core UPDATE of a node's trust sets besides the trust itself."""
    return {"trust_version": NODES.c.trust_version + 1, "change_seq": next_change_seq()}

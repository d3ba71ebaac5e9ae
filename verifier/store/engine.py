"""Engines for the store: SQLite tuned for many threads, any other URL as given.

SQLite notes (https://www.sqlite.org/wal.html, https://www.sqlite.org/lang_transaction.html):
- WAL lets readers run beside the one writer; synchronous=NORMAL is durable in WAL mode
  except for the last commits before a power loss, which costs a node one re-attestation.
- pysqlite's own transaction handling neither begins transactions for SELECT nor lets a
  transaction take the write lock up front.  A deferred transaction that read and then
  writes fails at once with SQLITE_BUSY when another writer committed in between
  (busy_timeout does not apply), so write transactions here BEGIN IMMEDIATE and wait
  for the lock instead (SQLAlchemy docs, "Transactions with SQLite and the sqlite3 driver").
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from verifier.store.errors import StoreError

# Execution option read by the BEGIN hook: "IMMEDIATE" for transactions that write.
BEGIN_MODE = "lightgate_sqlite_begin"
WRITE = {BEGIN_MODE: "IMMEDIATE"}
_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE"})

_BUSY_TIMEOUT_MS = 5000


def is_sqlite_memory(url: URL) -> bool:
    """True for a private in-memory SQLite database (one connection, shared by threads)."""
    if url.get_backend_name() != "sqlite":
        return False
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def create_store_engine(url: str | URL, pool_size: int = 5) -> Engine:
    """An engine for `url`, with the SQLite settings above when it is SQLite.

    `pool_size`: connections kept open to a server database; give it the number of
    threads that use the store at once, or connections are opened and closed under load.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No pool_pre_ping: it costs a round trip per call (~15% of record_attestation).
        # After a server restart the first call on a dead connection fails, and that
        # failure invalidates the whole pool, so the calls after it reconnect.
        return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size)
    if parsed.get_driver_name() != "pysqlite":
        raise StoreError(
            f"SQLite is supported through the sqlite3 module only, not {parsed.drivername}"
        )
    if is_sqlite_memory(parsed):
        # One connection for the whole process, or each thread would see its own empty DB;
        # the Store serialises its use (see Store._serial).
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        engine = create_engine(parsed, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})
    _take_over_sqlite_transactions(engine, wal=not is_sqlite_memory(parsed))
    return engine


def _take_over_sqlite_transactions(engine: Engine, *, wal: bool) -> None:
    def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            raise StoreError(f"expected a sqlite3 connection, got {type(dbapi_connection)}")
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_MODE, "DEFERRED")
        if mode not in _BEGIN_MODES:
            raise StoreError(f"unknown SQLite transaction mode {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)

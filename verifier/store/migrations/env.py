"""Alembic environment for the verifier store; configured by verifier.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from verifier.store.models import metadata

# Any 64-bit constant; replicas starting together take turns migrating (PostgreSQL).
_MIGRATION_LOCK = 0x4C47_5354_4F52_4531


def _run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _connection = context.config.attributes.get("connection")
    if not isinstance(_connection, Connection):
        raise RuntimeError("run migrations through verifier.store.migrate (no connection given)")
    _run_online(_connection)

"""Alembic, driven from code: no alembic.ini on disk.

The scripts live in this package (`migrations/`, shipped as package data), so an
installed verifier migrates its own database: `Store.open(url)` runs `upgrade head`.
A developer adding a table writes the model, then a migration, e.g.::

    from alembic import command
    from verifier.store.engine import create_store_engine
    from verifier.store.migrate import alembic_config
    with create_store_engine("sqlite:///scratch.db").connect() as connection:
        config = alembic_config(connection)
        command.upgrade(config, "head")
        command.revision(config, "what changed", autogenerate=True, rev_id="0002")

and checks it by hand; the migration test compares models and migrations on every backend.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine

from verifier.store.engine import WRITE

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Alembic keeps the running migration in module globals (`alembic.context`, `alembic.op`),
# so one process runs one migration at a time.  Between processes, the database orders
# them (env.py: an advisory lock on PostgreSQL; BEGIN IMMEDIATE on SQLite).
_ALEMBIC = threading.Lock()


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """A Config for our scripts, running on `connection` (online) or for `url` (offline SQL)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolates '%', which URL-encoded passwords contain.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind `engine` to `revision`, in one transaction."""
    with _ALEMBIC, engine.connect() as connection:
        connection.execution_options(**WRITE)
        command.upgrade(alembic_config(connection), revision)
        connection.commit()

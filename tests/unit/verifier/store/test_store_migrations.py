"""The migrations build exactly the schema the models describe, with no alembic.ini."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, inspect

from verifier.store import Store
from verifier.store.engine import create_store_engine
from verifier.store.migrate import alembic_config, upgrade
from verifier.store.models import metadata

HEAD = "0002"
TABLES = {
    "nodes", "keys", "pending_enrollments", "join_tokens", "nonces", "evidence", "results",
    "verifier_secrets",
}  # fmt: skip


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_open_upgrades_an_empty_database_to_head(
    database_url: str, db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini anywhere near
    assert set(inspect(db).get_table_names()) == set()

    Store.open(database_url).close()

    assert set(inspect(db).get_table_names()) == TABLES | {"alembic_version"}
    assert _revision(db) == HEAD


def test_models_match_the_migrations(store: Store, db: Engine) -> None:
    with db.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []


def test_check_constraints_and_partial_index_match_the_migrations(store: Store, db: Engine) -> None:
    # compare_metadata looks at neither CHECK constraints nor index predicates.
    inspector = inspect(db)
    for table in metadata.sorted_tables:
        expected = {
            str(c.name): str(c.sqltext) for c in table.constraints if isinstance(c, CheckConstraint)
        }
        found = {str(c["name"]): c["sqltext"] for c in inspector.get_check_constraints(table.name)}
        assert found.keys() == expected.keys(), table.name
        if db.dialect.name == "sqlite":  # PostgreSQL reflects its own rewriting of the text
            assert found == expected, table.name
    (active,) = [i for i in inspector.get_indexes("keys") if i["name"] == "uq_keys_active"]
    assert active["unique"]
    assert active["column_names"] == ["node_id", "kind"]
    predicate = active["dialect_options"][f"{db.dialect.name}_where"]
    assert str(predicate).replace("(", "").replace(")", "").replace("::text", "") == (
        "state = 'active'"
    )


def test_upgrade_is_idempotent_and_downgrade_empties(
    store: Store, database_url: str, db: Engine
) -> None:
    engine = create_store_engine(database_url)
    try:
        upgrade(engine)  # already at head: nothing to do
        assert _revision(db) == HEAD
        with engine.connect() as connection:
            command.downgrade(alembic_config(connection), "base")
            connection.commit()
        assert set(inspect(db).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        assert set(inspect(db).get_table_names()) == TABLES | {"alembic_version"}
    finally:
        engine.dispose()


def test_offline_mode_renders_postgresql_ddl(capsys: pytest.CaptureFixture[str]) -> None:
    config = alembic_config(url="postgresql+psycopg://verifier:p%40ss@db.example/lightgate")
    command.upgrade(config, "head", sql=True)
    ddl = capsys.readouterr().out
    assert "CREATE TABLE nodes" in ddl
    assert (
        "CREATE UNIQUE INDEX uq_keys_active ON keys (node_id, kind) WHERE state = 'active'" in ddl
    )


def test_replicas_starting_together_migrate_once(database_url: str, db: Engine) -> None:
    barrier = Barrier(4)

    def start(_: int) -> list[object]:
        barrier.wait()
        with Store.open(database_url) as store:
            return list(store.list_nodes())

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(start, range(4))) == [[]] * 4
    assert _revision(db) == HEAD

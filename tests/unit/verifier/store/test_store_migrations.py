"""The migrations build exactly the schema the models describe, with no alembic.ini."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from threading import Barrier

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, inspect, text

from verifier.store import AttestationRecord, Store
from verifier.store.engine import create_store_engine
from verifier.store.migrate import alembic_config, upgrade
from verifier.store.models import metadata

HEAD = "0006"
TABLES = {
    "nodes", "keys", "pending_enrollments", "join_tokens", "nonces", "evidence", "results",
    "verifier_secrets", "event_logs", "golden_values", "trust_transitions", "asset_tags",
    "audit_log", "signing_keys", "policy_bundles", "credentials",
}  # fmt: skip
ADDED_BY_0004 = {"trust_transitions", "asset_tags", "audit_log", "signing_keys", "policy_bundles"}
ADDED_BY_0005 = {"credentials"}


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


# Data written by an older revision: raw SQL, as the models describe only the newest.
_NODE_0002 = "INSERT INTO nodes (node_id, state, created_at) VALUES ('node-old', 'enrolled', :at)"
_EVIDENCE_0002 = (
    "INSERT INTO evidence (node_id, received_at, nonce, quote_message, quote_signature,"
    " pcr_values, peer) VALUES ('node-old', :at, :blob, :blob, :blob, :pcrs, 'ipv4:10.0.0.9:1')"
)
_RESULT_0002 = (
    "INSERT INTO results (node_id, evidence_id, status, failed_checks, reason, rebooted,"
    " created_at) SELECT 'node-old', id, 'contraindicated', :failed, 'pcr-digest', :no, :at"
    " FROM evidence"
)


def _write_0002_rows(engine: Engine) -> None:
    at = datetime(2026, 11, 1, 12, 0)  # naive UTC, as 0001 stores datetimes
    with engine.begin() as connection:
        connection.execute(text(_NODE_0002), {"at": at})
        connection.execute(
            text(_EVIDENCE_0002), {"at": at, "blob": b"\x01" * 32, "pcrs": '{"sha256": {}}'}
        )
        connection.execute(text(_RESULT_0002), {"at": at, "failed": '["pcr-digest"]', "no": False})


def _downgrade(engine: Engine, revision: str) -> None:
    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), revision)
        connection.commit()


def test_0003_and_0004_keep_results_written_before_them(database_url: str, db: Engine) -> None:
    engine = create_store_engine(database_url)
    try:
        upgrade(engine, "0002")
        _write_0002_rows(engine)

        upgrade(engine)
        with Store(database_url) as store:
            (old,) = store.results_for("node-old")
            assert (old.failed_checks, old.findings, old.workarounds) == (("pcr-digest",), (), ())
            assert (old.trust_vector, old.ear, old.expires_at) == (None, None, None)
            evidence = store.last_evidence("node-old", status=None)
            assert evidence is not None
            assert (evidence.event_log, evidence.claims) == (None, None)
    finally:
        engine.dispose()


def test_0003_and_0004_downgrade_with_logs_stored(database_url: str, db: Engine) -> None:
    engine = create_store_engine(database_url)
    try:
        upgrade(engine, "0002")
        _write_0002_rows(engine)
        upgrade(engine)
        with Store(database_url) as store:
            store.record_attestation(
                AttestationRecord(
                    node_id="node-old",
                    received_at=datetime.now(UTC),
                    nonce=b"\x02" * 32,
                    quote_message=b"\xffTCG",
                    quote_signature=b"sig",
                    pcr_values={"sha256": {}},
                    peer="ipv4:10.0.0.9:2",
                    status="warning",
                    failed_checks=(),
                    reason=None,
                    clock=None,
                    rebooted=False,
                    event_log=b"event log",
                    findings=("secure-boot-off",),
                    claims={"secure_boot": False},
                )
            )
            store.put_golden_values("good", {}, b"\x00" * 32, "file:good.yaml", datetime.now(UTC))

        _downgrade(engine, "0002")

        assert _revision(db) == "0002"
        inspector = inspect(db)
        assert set(inspector.get_table_names()) == TABLES - {
            "event_logs",
            "golden_values",
        } - ADDED_BY_0004 - ADDED_BY_0005 | {"alembic_version"}
        assert "event_log_sha256" not in {c["name"] for c in inspector.get_columns("evidence")}
        assert {c["name"] for c in inspector.get_columns("results")}.isdisjoint(
            {"findings", "workarounds", "claims"}
        )
        with db.connect() as connection:
            counts = connection.execute(
                text("SELECT (SELECT COUNT(*) FROM evidence), (SELECT COUNT(*) FROM results)")
            ).one()
        assert tuple(counts) == (2, 2)
        upgrade(engine)
        assert _revision(db) == HEAD
    finally:
        engine.dispose()

"""Datetimes, SQLite settings, in-memory databases and closing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import StatementError

from verifier.store import PendingEnrollment, Store, StoreError
from verifier.store.engine import create_store_engine


def _pending(node_id: str, created_at: datetime) -> PendingEnrollment:
    return PendingEnrollment(
        node_id=node_id,
        ek_certificate=None,
        ek_public=b"ek",
        ek_fingerprint="ee",
        ak_public=b"ak",
        ak_name=b"\x00\x0bak",
        secret_digest=b"\x01" * 32,
        created_at=created_at,
        expires_at=created_at + timedelta(minutes=5),
    )


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=UTC),  # past the 32-bit time_t
    ],
)
def test_datetimes_round_trip_to_the_microsecond(store: Store, moment: datetime) -> None:
    pending = _pending("node-a", moment)
    store.begin_enrollment(pending)
    node = store.complete_enrollment(
        "node-a", moment + timedelta(microseconds=1), pending.secret_digest
    )

    assert node.created_at == moment
    assert node.created_at.tzinfo is UTC
    assert node.enrolled_at == moment + timedelta(microseconds=1)
    pending_expiry = moment + timedelta(minutes=5)
    store.begin_enrollment(_pending("node-a", moment))
    pending = store.get_pending_enrollment("node-a")
    assert pending is not None and pending.expires_at == pending_expiry


def test_other_time_zones_are_stored_as_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    store.begin_enrollment(_pending("node-a", datetime(2026, 1, 1, 14, 0, tzinfo=plus_two)))
    node = store.get_node("node-a")
    assert node is not None
    assert node.created_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert node.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        store.begin_enrollment(_pending("node-a", datetime(2026, 1, 1, 12, 0)))
    assert store.get_node("node-a") is None  # nothing half-written


def test_sqlite_files_are_tuned_for_concurrency(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'v.db'}")
    try:
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 5000,
        "foreign_keys": 1,
    }


def test_other_sqlite_drivers_are_refused() -> None:
    with pytest.raises(StoreError, match="sqlite3 module"):
        create_store_engine("sqlite+pysqlcipher:///:memory:")


def test_an_in_memory_store_is_one_database_for_all_threads() -> None:
    with Store.open("sqlite:///:memory:") as store:
        now = datetime.now(UTC)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: store.begin_enrollment(_pending(f"node-{i}", now)), range(16)))
        assert [n.node_id for n in store.list_nodes()] == sorted(f"node-{i}" for i in range(16))


def test_store_without_migrating_sees_the_migrated_schema(database_url: str) -> None:
    Store.open(database_url).close()
    with Store(database_url) as store:
        assert store.list_nodes() == []

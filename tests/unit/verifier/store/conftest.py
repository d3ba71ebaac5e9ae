"""Store fixtures: every test runs on SQLite (a temp file) and, when the server on
127.0.0.1:5432 answers, on PostgreSQL (a database created for this session and dropped
after it; each test gets an empty public schema)."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from verifier.evidence.tpm_structures import ClockInfo
from verifier.store import AttestationRecord, NodeRecord, PendingEnrollment, Store

POSTGRES_HOST = ("127.0.0.1", 5432)
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _postgres_answers() -> bool:
    try:
        socket.create_connection(POSTGRES_HOST, timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named database for this session, dropped at its end."""
    if not _postgres_answers():
        pytest.skip("PostgreSQL does not accept connections on 127.0.0.1:5432")
    pytest.importorskip("psycopg")
    name = f"lightgate_store_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'verifier.db'}"
        return
    url: str = request.getfixturevalue("postgres_database")
    yield url
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    yield opened
    opened.close()


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """A plain engine on the same database, to look at rows the Store does not return."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


FIRST_CLOCK = ClockInfo(clock=1000, reset_count=1, restart_count=0, safe=True)

MakePending = Callable[..., PendingEnrollment]
Enroll = Callable[..., NodeRecord]
MakeAttestation = Callable[..., AttestationRecord]


def _ak_name(ak_public: bytes) -> bytes:
    """A stand-in TPM name (nameAlg sha256 || digest); the store only keeps it."""
    return b"\x00\x0b" + hashlib.sha256(ak_public).digest()


@pytest.fixture
def make_pending(now: datetime) -> MakePending:
    def make(
        node_id: str = "node-a",
        *,
        ak_public: bytes = b"ak-public-1",
        ek_public: bytes = b"ek-public-1",
        ek_fingerprint: str = "e1" * 32,
        ek_certificate: bytes | None = b"ek-cert-der",
        created_at: datetime | None = None,
    ) -> PendingEnrollment:
        created = created_at or now
        return PendingEnrollment(
            node_id=node_id,
            ek_certificate=ek_certificate,
            ek_public=ek_public,
            ek_fingerprint=ek_fingerprint,
            ak_public=ak_public,
            ak_name=_ak_name(ak_public),
            secret_digest=secrets.token_bytes(32),
            created_at=created,
            expires_at=created + timedelta(minutes=5),
        )

    return make


@pytest.fixture
def enroll(store: Store, make_pending: MakePending, now: datetime) -> Enroll:
    """Enroll a node end to end (begin + complete) and return it."""

    def run(node_id: str = "node-a", **pending: object) -> NodeRecord:
        challenge = make_pending(node_id, **pending)
        store.begin_enrollment(challenge)
        return store.complete_enrollment(node_id, now, challenge.secret_digest)

    return run


@pytest.fixture
def make_attestation(now: datetime) -> MakeAttestation:
    def make(
        node_id: str = "node-a",
        *,
        status: str = "affirming",
        clock: ClockInfo | None = FIRST_CLOCK,
        rebooted: bool = False,
        failed_checks: tuple[str, ...] = (),
        reason: str | None = None,
        received_at: datetime | None = None,
        event_log: bytes | None = None,
        findings: tuple[str, ...] = (),
        workarounds: tuple[str, ...] = (),
        claims: dict[str, Any] | None = None,
    ) -> AttestationRecord:
        return AttestationRecord(
            node_id=node_id,
            received_at=received_at or now,
            nonce=secrets.token_bytes(32),
            quote_message=b"\xffTCG" + secrets.token_bytes(60),
            quote_signature=secrets.token_bytes(64),
            pcr_values={"sha256": {"0": "00" * 32, "7": "ab" * 32}},
            peer="ipv4:10.0.0.7:50512",
            status=status,
            failed_checks=failed_checks,
            reason=reason,
            clock=clock,
            rebooted=rebooted,
            event_log=event_log,
            findings=findings,
            workarounds=workarounds,
            claims=claims,
        )

    return make

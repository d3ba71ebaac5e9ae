"""The verifier's persistent store: one `Store` per process, shared by all worker threads.

Every call checks a connection out of the engine's pool, runs one short transaction and
gives the connection back; nothing is cached between calls and no ORM Session exists,
so the methods are safe to call from many threads at once.  All statements are Core
(`queries.py`, `enrollment.py`); the models only describe the tables.

Single use is decided by the database, never by a read followed by a write in Python:
a join token is spent by a conditional UPDATE (the caller whose UPDATE changed the row
spent it), a nonce by an INSERT that ignores duplicates (the caller whose INSERT added
the row spent it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError

from verifier.store import enrollment, queries
from verifier.store.admission import AdmissionRecords
from verifier.store.attestations import (
    AttestationTransaction,
    KnownDigests,
    record_attestation,
)
from verifier.store.driver import Writes
from verifier.store.engine import WRITE, create_store_engine, is_sqlite_memory
from verifier.store.errors import StoreInconsistent, UnknownNode
from verifier.store.migrate import upgrade
from verifier.store.models import (
    AUDIT_LOG,
    GOLDEN_VALUES,
    GOLDEN_VALUES_NAME_LENGTH,
    JOIN_TOKENS,
    NODES,
    NONCES,
    VERIFIER_SECRETS,
)
from verifier.store.records import (
    RESULT_STATUSES,
    STATUS_AFFIRMING,
    AttestationRecord,
    AuditRecord,
    EvidenceRecord,
    GoldenValuesRecord,
    NodeRecord,
    PendingEnrollment,
    ResultRecord,
)
from verifier.store.trust import TrustRecords

STORED_LOGS_REMEMBERED = 65536


class Store(TrustRecords, AdmissionRecords):
    """Nodes, their keys and enrollments, join tokens, nonces, evidence and results,
    boot event logs, and golden values.

    `Store(url)` opens the database as it is; `Store.open(url)` migrates it to the
    current schema first, which is what the verifier does at start.
    """

    def __init__(self, url: str | URL, pool_size: int = 5) -> None:
        self._engine = create_store_engine(url, pool_size)
        self._writes = Writes(self._engine.dialect.name)
        # SHA-256 of event logs this process saw committed: rows of event_logs are never
        # deleted, so a node re-sending its boot's log costs no INSERT of its bytes.
        self._stored_logs = KnownDigests(STORED_LOGS_REMEMBERED)
        # A private in-memory SQLite database is one connection shared by every thread;
        # transactions on it must not interleave.
        self._serial: AbstractContextManager[object] = (
            threading.RLock() if is_sqlite_memory(make_url(url)) else nullcontext()
        )

    @classmethod
    def open(cls, url: str | URL, pool_size: int = 5) -> Store:
        """Migrate the database at `url` to the newest schema (`upgrade head`), then open it."""
        store = cls(url, pool_size)
        with ExitStack() as on_failure:
            on_failure.callback(store.close)
            with store._serial:
                upgrade(store._engine)
            on_failure.pop_all()
        return store

    def close(self) -> None:
        """Close every pooled connection.  The Store is not usable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._serial, self._engine.connect() as connection:
            yield connection

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._serial, self._engine.connect() as connection:
            connection.execution_options(**WRITE)
            with connection.begin():
                yield connection

    # Nodes

    def get_node(self, node_id: str) -> NodeRecord | None:
        with self._read() as connection:
            return _get_node(connection, node_id)

    def list_nodes(self) -> list[NodeRecord]:
        """Every node, ordered by node id."""
        with self._read() as connection:
            rows = connection.execute(queries.NODES_SELECT.order_by(NODES.c.node_id))
            return [queries.node_record(row._mapping) for row in rows]

    # Enrollment

    def begin_enrollment(self, pending: PendingEnrollment) -> None:
        """Record the node (if new), its EK (if new) and this challenge, replacing any other.

        The caller decides whether the node may enroll with this EK.  An EK the node
        has never had becomes active at once when the node has no active EK yet, and
        otherwise only when this enrollment completes.
        """
        for attempt in range(2):
            try:
                with self._write() as connection:
                    enrollment.begin(connection, pending)
                return
            except IntegrityError:
                # First enrollments of one node raced to INSERT it (PostgreSQL reports the
                # losers then); the node now exists, and its row lock orders the retries.
                if attempt:
                    raise

    def get_pending_enrollment(self, node_id: str) -> PendingEnrollment | None:
        with self._read() as connection:
            row = connection.execute(queries.PENDING_BY_NODE, {"node_id": node_id}).first()
        return None if row is None else PendingEnrollment(**row._mapping)

    def drop_pending_enrollment(self, node_id: str) -> None:
        """Forget the node's open challenge and the keys only it named."""
        with self._write() as connection:
            enrollment.drop(connection, node_id)

    def complete_enrollment(self, node_id: str, now: datetime, secret_digest: bytes) -> NodeRecord:
        """Bind the pending AK (and EK) to the node, in one transaction.

        The keys the challenge named become active and the keys they replace are
        retired; the node is 'enrolled' from `now` and its clock baseline is cleared,
        since counters are compared only between quotes of one AK.
        Raises EnrollmentNotPending (a LookupError) when there is no open challenge, and
        ChallengeNotAnswered when `secret_digest` is not its answer or it expired.
        """
        with self._write() as connection:
            enrollment.complete(connection, node_id, now, secret_digest)
            record = _get_node(connection, node_id)
        if record is None:  # the challenge's foreign key makes this impossible
            raise StoreInconsistent(f"node {node_id!r} vanished while completing enrollment")
        return record

    # Join tokens

    def add_join_token(
        self, token_digest: bytes, created_at: datetime, expires_at: datetime, note: str = ""
    ) -> None:
        with self._write() as connection:
            connection.execute(
                JOIN_TOKENS.insert().values(
                    token_digest=token_digest,
                    note=note,
                    created_at=created_at,
                    expires_at=expires_at,
                )
            )

    def consume_join_token(self, token_digest: bytes, node_id: str, now: datetime) -> bool:
        """Spend the token for `node_id`; True for the one node that spent it.  The node
        that spent it may present it again until it expires (an enrollment that failed
        before activation, or a verifier that forgot the node, must not lock it out);
        every other node is refused."""
        with self._write() as connection:
            spent = connection.execute(
                update(JOIN_TOKENS)
                .where(
                    JOIN_TOKENS.c.token_digest == token_digest,
                    or_(JOIN_TOKENS.c.used_at.is_(None), JOIN_TOKENS.c.used_by == node_id),
                    JOIN_TOKENS.c.expires_at > now,
                )
                .values(used_by=node_id, used_at=func.coalesce(JOIN_TOKENS.c.used_at, now))
            )
            return spent.rowcount == 1

    # Nonces

    def shared_secret(self, name: str, make: Callable[[], bytes], now: datetime) -> bytes:
        """The secret called `name`, created with `make()` by whichever replica asks
        first; every replica gets the same bytes."""
        with self._write() as connection:
            row = connection.execute(queries.SECRET_BY_NAME, {"name": name}).first()
            if row is None:
                connection.execute(
                    queries.insert_ignoring_duplicates(self._engine.dialect.name, VERIFIER_SECRETS),
                    {"name": name, "secret": make(), "created_at": now},
                )
                row = connection.execute(queries.SECRET_BY_NAME, {"name": name}).one()
            return bytes(row.secret)

    def purge_nonces(self, before: datetime) -> int:
        """Delete nonces that expired before `before`; returns how many."""
        with self._write() as connection:
            return connection.execute(delete(NONCES).where(NONCES.c.expires_at < before)).rowcount

    # Evidence and results

    def record_attestation(self, attestation: AttestationRecord) -> ResultRecord:
        """Store evidence and result, and move the node's state, in one transaction.

        Only an 'affirming' result moves the clock baseline and counts a reboot; any
        other status records when and how the node last attested, nothing more.  The
        event log is stored once however many attestations send it (keyed by SHA-256).
        Raises UnknownNode for a node not stored, ValueError for an affirming
        attestation without the quote's clock.
        """
        with self._write() as connection:
            return record_attestation(connection, self._writes, attestation)

    @contextmanager
    def attestation(self, node_id: str) -> Iterator[AttestationTransaction]:
        """One transaction for one attestation: read the node (locked), spend the
        nonce, record the result.  The verifier decides in between; nothing is written
        unless the block completes."""
        with self._write() as connection:
            row = connection.execute(queries.NODE_BY_ID_FOR_UPDATE, {"node_id": node_id}).first()
            node = None if row is None else queries.node_record(row._mapping)
            transaction = AttestationTransaction(connection, node, self._writes, self._stored_logs)
            yield transaction
        # Committed: from now on this process need not send that log's bytes again.
        self._stored_logs.update(transaction.logs_written)

    def results_for(self, node_id: str, limit: int = 50) -> list[ResultRecord]:
        """The node's newest `limit` results, newest first."""
        with self._read() as connection:
            rows = connection.execute(
                queries.RESULTS_FOR_NODE, {"node_id": node_id, "limit": limit}
            )
            return [queries.result_record(row._mapping) for row in rows]

    def last_evidence(
        self, node_id: str, status: str | None = STATUS_AFFIRMING
    ) -> EvidenceRecord | None:
        """The node's newest evidence whose result has `status` (any result when None),
        with its event log; None when it has none.

        Raises UnknownNode for a node not stored, ValueError for a status no result has
        (a misspelt status would otherwise find nothing, forever).
        """
        if status is not None and status not in RESULT_STATUSES:
            raise ValueError(f"{status!r} is not a result status {RESULT_STATUSES}")
        with self._read() as connection:
            if status is None:
                row = connection.execute(queries.LAST_EVIDENCE, {"node_id": node_id}).first()
            else:
                row = connection.execute(
                    queries.LAST_EVIDENCE_WITH_STATUS, {"node_id": node_id, "status": status}
                ).first()
            if row is None:
                if connection.execute(queries.NODE_EXISTS, {"node_id": node_id}).first() is None:
                    raise UnknownNode(node_id)
                return None
        return queries.evidence_record(row._mapping)

    def event_log(self, sha256: bytes) -> bytes | None:
        """The event log whose SHA-256 is `sha256`, as received; None if none is stored."""
        with self._read() as connection:
            content = connection.execute(queries.EVENT_LOG_BY_SHA256, {"sha256": sha256}).scalar()
        return None if content is None else bytes(content)

    # Golden values

    def put_golden_values(
        self,
        name: str,
        document: dict[str, Any],
        digest: bytes,
        source: str,
        now: datetime,
        audit: AuditRecord | None = None,
    ) -> GoldenValuesRecord:
        """Store `document` as the golden values called `name`, replacing any stored under
        that name, in one statement.  `digest` is the caller's SHA-256 of the canonical
        document; `source` says where it came from."""
        if not 0 < len(name) <= GOLDEN_VALUES_NAME_LENGTH:
            # PostgreSQL would refuse a longer name and SQLite keep it: refuse on both.
            raise ValueError(
                f"golden values name must be 1 to {GOLDEN_VALUES_NAME_LENGTH} characters,"
                f" not {len(name)}"
            )
        record = GoldenValuesRecord(
            name=name, document=document, digest=digest, source=source, imported_at=now
        )
        with self._write() as connection:
            connection.execute(queries.put_golden_values(connection.dialect.name), asdict(record))
            if audit is not None:
                connection.execute(insert(AUDIT_LOG), asdict(audit))
        return record

    def golden_values(self) -> list[GoldenValuesRecord]:
        """Every stored set of golden values, ordered by name."""
        with self._read() as connection:
            rows = connection.execute(queries.GOLDEN_VALUES_SELECT.order_by(GOLDEN_VALUES.c.name))
            return [queries.golden_values_record(row._mapping) for row in rows]

    def get_golden_values(self, name: str) -> GoldenValuesRecord | None:
        with self._read() as connection:
            row = connection.execute(queries.GOLDEN_VALUES_BY_NAME, {"name": name}).first()
        return None if row is None else queries.golden_values_record(row._mapping)

    def drop_golden_values(self, name: str, audit: AuditRecord | None = None) -> bool:
        """Forget the golden values called `name`; False when none were stored."""
        with self._write() as connection:
            dropped = connection.execute(delete(GOLDEN_VALUES).where(GOLDEN_VALUES.c.name == name))
            if dropped.rowcount == 1 and audit is not None:
                connection.execute(insert(AUDIT_LOG), asdict(audit))
            return dropped.rowcount == 1


def _get_node(connection: Connection, node_id: str) -> NodeRecord | None:
    row = connection.execute(queries.NODE_BY_ID, {"node_id": node_id}).first()
    return None if row is None else queries.node_record(row._mapping)

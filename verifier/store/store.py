"""The verifier's persistent store: one `Store` per process, shared by all worker threads.

Every call checks a connection out of the engine's pool, runs one short transaction and
gives the connection back; nothing is cached between calls and no ORM Session exists,
so the methods are safe to call from many threads at once.  All statements are Core
(`queries.py`, `enrollment.py`); the models only describe the tables.

Single use is decided by the database, never by a read followed by a write in Python:
join tokens and nonces are spent by a conditional UPDATE, and the caller whose UPDATE
changed the row is the one that spent it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Update, delete, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError

from verifier.evidence.quote import NonceRecord
from verifier.store import enrollment, queries
from verifier.store.engine import WRITE, create_store_engine, is_sqlite_memory
from verifier.store.errors import StoreInconsistent, UnknownNode
from verifier.store.migrate import upgrade
from verifier.store.models import JOIN_TOKENS, NODES, NONCES
from verifier.store.records import (
    STATUS_AFFIRMING,
    AttestationRecord,
    NodeRecord,
    PendingEnrollment,
    ResultRecord,
)


class Store:
    """Nodes, their keys and enrollments, join tokens, nonces, evidence and results.

    `Store(url)` opens the database as it is; `Store.open(url)` migrates it to the
    current schema first, which is what the verifier does at start.
    """

    def __init__(self, url: str | URL) -> None:
        self._engine = create_store_engine(url)
        # A private in-memory SQLite database is one connection shared by every thread;
        # transactions on it must not interleave.
        self._serial: AbstractContextManager[object] = (
            threading.RLock() if is_sqlite_memory(make_url(url)) else nullcontext()
        )

    @classmethod
    def open(cls, url: str | URL) -> Store:
        """Migrate the database at `url` to the newest schema (`upgrade head`), then open it."""
        store = cls(url)
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

    def complete_enrollment(self, node_id: str, now: datetime) -> NodeRecord:
        """Bind the pending AK (and EK) to the node, in one transaction.

        The keys the challenge named become active and the keys they replace are
        retired; the node is 'enrolled' from `now` and its clock baseline is cleared,
        since counters are compared only between quotes of one AK.
        Raises EnrollmentNotPending (a LookupError) when there is no open challenge.
        """
        with self._write() as connection:
            enrollment.complete(connection, node_id, now)
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
        """Spend the token for `node_id`; True for the one caller that spent it."""
        with self._write() as connection:
            spent = connection.execute(
                update(JOIN_TOKENS)
                .where(
                    JOIN_TOKENS.c.token_digest == token_digest,
                    JOIN_TOKENS.c.used_at.is_(None),
                    JOIN_TOKENS.c.expires_at > now,
                )
                .values(used_by=node_id, used_at=now)
            )
            return spent.rowcount == 1

    # Nonces

    def add_nonce(
        self, value: bytes, node_id: str, issued_at: datetime, expires_at: datetime
    ) -> None:
        """Record a nonce issued to `node_id`.  Raises UnknownNode for a node not stored."""
        nonce = {"value": value, "node_id": node_id, "issued_at": issued_at}
        try:
            with self._write() as connection:
                connection.execute(queries.INSERT_NONCE, nonce | {"expires_at": expires_at})
        except IntegrityError:
            if self.get_node(node_id) is None:
                raise UnknownNode(node_id) from None
            raise

    def consume_nonce(self, value: bytes, node_id: str, now: datetime) -> NonceRecord | None:
        """The nonce as it was before this call, spending it if `node_id` may.

        None when the nonce was never issued.  The nonce is marked used only when it
        was issued to `node_id` and unused; of concurrent callers, exactly one sees
        used=False.  A nonce issued to another node comes back unchanged, for the
        caller to refuse, and stays usable by its own node.  Expiry is the caller's
        check: the record carries expires_at.
        """
        with self._write() as connection:
            row = connection.execute(queries.NONCE_BY_VALUE, {"value": value}).first()
            if row is None:
                return None
            issued = NonceRecord(value, row.node_id, row.expires_at, row.used_at is not None)
            if issued.used or issued.node_id != node_id:
                return issued
            spent = connection.execute(
                queries.SPEND_NONCE,
                {"where_value": value, "where_node_id": node_id, "used_at": now},
            )
            # On PostgreSQL a concurrent caller can spend it between our SELECT and UPDATE;
            # the UPDATE then re-reads the row, matches nothing, and we report it used.
            return NonceRecord(value, node_id, issued.expires_at, used=spent.rowcount != 1)

    def purge_nonces(self, before: datetime) -> int:
        """Delete nonces that expired before `before`; returns how many."""
        with self._write() as connection:
            return connection.execute(delete(NONCES).where(NONCES.c.expires_at < before)).rowcount

    # Evidence and results

    def record_attestation(self, attestation: AttestationRecord) -> ResultRecord:
        """Store evidence and result, and move the node's state, in one transaction.

        Only an 'affirming' result moves the clock baseline and counts a reboot; any
        other status records when and how the node last attested, nothing more.
        Raises UnknownNode for a node not stored, ValueError for an affirming
        attestation without the quote's clock.
        """
        node_update, node_values = _node_update(attestation)
        with self._write() as connection:
            if connection.execute(node_update, node_values).rowcount != 1:
                raise UnknownNode(attestation.node_id)
            evidence_id = queries.insert_id(
                connection,
                queries.INSERT_EVIDENCE,
                {
                    "node_id": attestation.node_id,
                    "received_at": attestation.received_at,
                    "nonce": attestation.nonce,
                    "quote_message": attestation.quote_message,
                    "quote_signature": attestation.quote_signature,
                    "pcr_values": attestation.pcr_values,
                    "peer": attestation.peer,
                },
            )
            result_id = queries.insert_id(
                connection,
                queries.INSERT_RESULT,
                {
                    "node_id": attestation.node_id,
                    "evidence_id": evidence_id,
                    "status": attestation.status,
                    "failed_checks": list(attestation.failed_checks),
                    "reason": attestation.reason,
                    "rebooted": attestation.rebooted,
                    "created_at": attestation.received_at,
                },
            )
        return ResultRecord(
            id=result_id,
            node_id=attestation.node_id,
            evidence_id=evidence_id,
            status=attestation.status,
            failed_checks=tuple(attestation.failed_checks),
            reason=attestation.reason,
            rebooted=attestation.rebooted,
            created_at=attestation.received_at,
        )

    def results_for(self, node_id: str, limit: int = 50) -> list[ResultRecord]:
        """The node's newest `limit` results, newest first."""
        with self._read() as connection:
            rows = connection.execute(
                queries.RESULTS_FOR_NODE, {"node_id": node_id, "limit": limit}
            )
            return [queries.result_record(row._mapping) for row in rows]


def _get_node(connection: Connection, node_id: str) -> NodeRecord | None:
    row = connection.execute(queries.NODE_BY_ID, {"node_id": node_id}).first()
    return None if row is None else queries.node_record(row._mapping)


def _node_update(attestation: AttestationRecord) -> tuple[Update, dict[str, Any]]:
    """The UPDATE of the node after `attestation`, and its parameters."""
    values: dict[str, Any] = {
        "where_node_id": attestation.node_id,
        "last_attested_at": attestation.received_at,
        "last_status": attestation.status,
    }
    if attestation.status != STATUS_AFFIRMING:
        return queries.NOTE_ATTESTATION, values
    clock = attestation.clock
    if clock is None:
        raise ValueError(f"affirming attestation of node {attestation.node_id!r} has no clock")
    values |= {
        "last_clock": clock.clock,
        "last_reset_count": clock.reset_count,
        "last_restart_count": clock.restart_count,
        "last_clock_safe": clock.safe,
        "reboots_added": int(attestation.rebooted),
    }
    return queries.NOTE_AFFIRMING_ATTESTATION, values

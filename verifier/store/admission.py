"""The store's records for admission: what the trust index loads, and the credentials
the gate issued (for revocation and the CRL).

A mixin of `Store` (store.py), apart by concern.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, RowMapping, and_, func, insert, select, update

from verifier.evidence.quote import NonceRecord
from verifier.store.models import CREDENTIALS, NODES, NONCES, RESULTS
from verifier.store.queries import insert_ignoring_duplicates
from verifier.store.records import NODE_ENROLLED, CredentialRecord, TrustIndexRow
from verifier.store.versions import change_mark

_INDEX = (
    select(
        NODES.c.node_id,
        NODES.c.trust_state,
        NODES.c.trust_since,
        NODES.c.trust_expires_at,
        NODES.c.trust_reason,
        NODES.c.last_site,
        NODES.c.last_attested_at,
        NODES.c.trust_version,
        RESULTS.c.status,
        RESULTS.c.ear,
        RESULTS.c.appraisal_input,
    )
    .select_from(NODES)
    .outerjoin(RESULTS, RESULTS.c.id == NODES.c.last_result_id)
    .where(NODES.c.state == NODE_ENROLLED)
)


class AdmissionRecords:
    """Methods of `Store` for admission."""

    if TYPE_CHECKING:

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

    def trust_index(self, node_id: str | None = None) -> list[TrustIndexRow]:
        """Every enrolled node (or only `node_id`) with its trust and newest result."""
        query = _INDEX if node_id is None else _INDEX.where(NODES.c.node_id == node_id)
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [_index_row(row._mapping) for row in rows]

    def trust_changes(self, mark: int | None = None) -> tuple[list[TrustIndexRow], int]:
        """The enrolled nodes whose trust or newest result was written at or after
        `mark` (every node when None), and the mark to read from next time
        (`versions.py`): nothing committed later is missed."""
        with self._read() as connection, connection.begin():
            next_mark = change_mark(connection)
            query = _INDEX if mark is None else _INDEX.where(NODES.c.change_seq >= mark)
            rows = connection.execute(query).all()
        return [_index_row(row._mapping) for row in rows], next_mark

    def spend_nonce(self, nonce: NonceRecord, issued_at: datetime, now: datetime) -> bool:
        """Record a nonce (issued to `nonce.node_id`) as spent outside an attestation;
        False when it was spent before.  Decided by the nonces primary key."""
        if nonce.node_id is None:
            raise ValueError("only a nonce issued to the node can be spent by it")
        with self._write() as connection:
            statement = insert_ignoring_duplicates(connection.dialect.name, NONCES)
            inserted = connection.execute(
                statement,
                {
                    "value": nonce.value,
                    "node_id": nonce.node_id,
                    "issued_at": issued_at,
                    "expires_at": nonce.expires_at,
                    "used_at": now,
                },
            )
            return inserted.first() is not None  # RETURNING: a row only when it was added

    def record_credential(self, credential: CredentialRecord) -> None:
        with self._write() as connection:
            connection.execute(insert(CREDENTIALS), asdict(credential))

    def revoke_credentials(
        self, node_id: str, reason: str, at: datetime, serial: str | None = None
    ) -> list[str]:
        """Revoke every credential of the node (or only `serial`) that is still live at
        `at`; returns their serials (none when there were none, or they were revoked
        already)."""
        live = and_(
            CREDENTIALS.c.node_id == node_id,
            CREDENTIALS.c.revoked_at.is_(None),
            CREDENTIALS.c.not_after > at,
        )
        if serial is not None:
            live = and_(live, CREDENTIALS.c.serial == serial)
        with self._write() as connection:
            serials = [
                row.serial for row in connection.execute(select(CREDENTIALS.c.serial).where(live))
            ]
            if serials:
                connection.execute(
                    update(CREDENTIALS)
                    .where(and_(live, CREDENTIALS.c.serial.in_(serials)))
                    .values(revoked_at=at, revoked_reason=reason)
                )
        return serials

    def nodes_with_live_credentials(self, now: datetime) -> list[str]:
        """Nodes holding a credential that is neither revoked nor expired at `now`."""
        query = (
            select(CREDENTIALS.c.node_id)
            .where(and_(CREDENTIALS.c.revoked_at.is_(None), CREDENTIALS.c.not_after > now))
            .distinct()
            .order_by(CREDENTIALS.c.node_id)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())

    def revocation_state(self, kind: str) -> tuple[int, datetime | None]:
        """How many credentials of `kind` were ever revoked, and the latest revocation:
        changes whenever any replica revokes one (a CRL cache's key)."""
        query = select(func.count(), func.max(CREDENTIALS.c.revoked_at)).where(
            and_(CREDENTIALS.c.kind == kind, CREDENTIALS.c.revoked_at.is_not(None))
        )
        with self._read() as connection:
            count, latest = connection.execute(query).one()
        return int(count), latest

    def revoked_credentials(self, now: datetime, kind: str) -> list[CredentialRecord]:
        """Credentials of `kind` revoked and not yet expired at `now` (a CRL's entries)."""
        query = (
            select(CREDENTIALS)
            .where(
                and_(
                    CREDENTIALS.c.kind == kind,
                    CREDENTIALS.c.revoked_at.is_not(None),
                    CREDENTIALS.c.not_after > now,
                )
            )
            .order_by(CREDENTIALS.c.revoked_at, CREDENTIALS.c.serial)
        )
        with self._read() as connection:
            return [_credential(row._mapping) for row in connection.execute(query)]

    def credentials_of(self, node_id: str) -> list[CredentialRecord]:
        query = (
            select(CREDENTIALS)
            .where(CREDENTIALS.c.node_id == node_id)
            .order_by(CREDENTIALS.c.issued_at, CREDENTIALS.c.serial)
        )
        with self._read() as connection:
            return [_credential(row._mapping) for row in connection.execute(query)]


def _credential(row: RowMapping) -> CredentialRecord:
    fields = dict(row)
    fields["ear_digest"] = bytes(fields["ear_digest"])
    fields["key_name"] = bytes(fields["key_name"])
    return CredentialRecord(**fields)


def _index_row(row: RowMapping) -> TrustIndexRow:
    return TrustIndexRow(
        node_id=row["node_id"],
        trust_state=row["trust_state"],
        trust_since=row["trust_since"],
        trust_expires_at=row["trust_expires_at"],
        trust_reason=row["trust_reason"],
        last_site=row["last_site"],
        last_attested_at=row["last_attested_at"],
        status=row["status"],
        ear=row["ear"],
        appraisal_input=row["appraisal_input"],
        trust_version=row["trust_version"],
    )

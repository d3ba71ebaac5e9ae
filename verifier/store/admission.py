"""The store's records for admission: what the trust index loads, and the credentials
the gate issued (for revocation and the CRL).

A mixin of `Store` (store.py), apart by concern.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, RowMapping, and_, func, insert, or_, select, update

from verifier.evidence.quote import NonceRecord
from verifier.store.models import CREDENTIALS, NODES, NONCES, RESULTS
from verifier.store.queries import insert_ignoring_duplicates
from verifier.store.records import NODE_ENROLLED, CredentialRecord, TrustIndexRow

_NEWEST_RESULT = (
    select(RESULTS.c.node_id, func.max(RESULTS.c.id).label("result_id"))
    .group_by(RESULTS.c.node_id)
    .subquery("newest")
)
_INDEX = (
    select(
        NODES.c.node_id,
        NODES.c.trust_state,
        NODES.c.trust_since,
        NODES.c.trust_expires_at,
        NODES.c.trust_reason,
        NODES.c.last_site,
        NODES.c.last_attested_at,
        RESULTS.c.status,
        RESULTS.c.ear,
        RESULTS.c.appraisal_input,
    )
    .select_from(NODES)
    .outerjoin(_NEWEST_RESULT, _NEWEST_RESULT.c.node_id == NODES.c.node_id)
    .outerjoin(RESULTS, RESULTS.c.id == _NEWEST_RESULT.c.result_id)
    .where(NODES.c.state == NODE_ENROLLED)
)


class AdmissionRecords:
    """Methods of `Store` for admission."""

    if TYPE_CHECKING:

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

    def trust_index(
        self, changed_since: datetime | None = None, node_id: str | None = None
    ) -> list[TrustIndexRow]:
        """Every enrolled node with its trust and newest result; with `changed_since`,
        only those whose trust changed or that attested since then; with `node_id`,
        only that node."""
        query = _INDEX
        if node_id is not None:
            query = query.where(NODES.c.node_id == node_id)
        if changed_since is not None:
            query = query.where(
                or_(
                    NODES.c.trust_since >= changed_since,
                    NODES.c.last_attested_at >= changed_since,
                )
            )
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [_index_row(row._mapping) for row in rows]

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

    def revoke_credentials(self, node_id: str, reason: str, at: datetime) -> list[str]:
        """Revoke every credential of the node that is still live at `at`; returns their
        serials (none when there were none, or they were revoked already)."""
        live = and_(
            CREDENTIALS.c.node_id == node_id,
            CREDENTIALS.c.revoked_at.is_(None),
            CREDENTIALS.c.not_after > at,
        )
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
        location=attested_location(row["appraisal_input"]),
    )


def attested_location(appraisal_input: object) -> dict[str, str]:
    """The attributes of the asset tag an appraisal found attested (verified, this
    node's), from its policy input; {} when there was none."""
    if not isinstance(appraisal_input, Mapping):
        return {}
    location = appraisal_input.get("location")
    attested = location.get("attested") if isinstance(location, Mapping) else None
    attributes = attested.get("attributes") if isinstance(attested, Mapping) else None
    if not isinstance(attributes, Mapping):
        return {}
    return {str(k): str(v) for k, v in attributes.items() if isinstance(v, str)}

"""The store's records of trust over time and of operators' acts: trust transitions and
expiry, revocation, asset tags, the audit log, result-signing keys, policy bundles, and
stored appraisals for `attest policy whatif`.

A mixin of `Store` (store.py), apart by concern.  Every operator act is written in the
same transaction as its audit entry, so there is no act without its record.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from verifier.store import queries
from verifier.store.errors import UnknownNode
from verifier.store.models import (
    ASSET_TAGS,
    AUDIT_LOG,
    NODES,
    POLICY_BUNDLES,
    RESULTS,
    SIGNING_KEYS,
    TRUST_TRANSITIONS,
)
from verifier.store.records import (
    TRUST_ENROLLED,
    TRUST_EXPIRED,
    TRUST_LASTING,
    TRUST_REVOKED,
    AppraisedEvidence,
    AssetTagRecord,
    AuditRecord,
    PolicyBundleRecord,
    SigningKeyRecord,
    TransitionRecord,
)
from verifier.store.versions import bumped

_SET_TRUST = (
    update(NODES)
    .where(NODES.c.node_id == bindparam("where_node_id"))
    .values(
        trust_state=bindparam("trust_state"),
        trust_since=bindparam("trust_since"),
        trust_expires_at=bindparam("trust_expires_at"),
        trust_reason=bindparam("trust_reason"),
        **bumped(),
    )
)
_LASTED_OUT = (
    select(NODES.c.node_id, NODES.c.trust_state, NODES.c.trust_expires_at)
    .where(
        and_(
            NODES.c.trust_state.in_(TRUST_LASTING),
            NODES.c.trust_expires_at <= bindparam("now"),
        )
    )
    .with_for_update(of=NODES)
)
_LASTED_OUT_ANY = (
    select(NODES.c.node_id)
    .where(
        and_(
            NODES.c.trust_state.in_(TRUST_LASTING),
            NODES.c.trust_expires_at <= bindparam("now"),
        )
    )
    .limit(1)
)
_TRUST_OF = select(NODES.c.trust_state).where(NODES.c.node_id == bindparam("node_id"))


class TrustRecords:
    """Methods of `Store` over trust and operator records."""

    if TYPE_CHECKING:

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

    # Trust over time

    def expire_trust(self, now: datetime) -> list[TransitionRecord]:
        """Move every node whose trust lasted out to 'expired', with a transition each;
        returns the transitions.  Nodes locked while they move, so an attestation that
        commits first keeps its node trusted."""
        expired: list[TransitionRecord] = []
        # Looked for first without a write transaction: the sweep runs every second,
        # and on SQLite a write transaction would hold the database's one write lock.
        with self._read() as connection:
            if connection.execute(_LASTED_OUT_ANY, {"now": now}).first() is None:
                return expired
        with self._write() as connection:
            for row in connection.execute(_LASTED_OUT, {"now": now}).all():
                until = row.trust_expires_at.isoformat()
                reason = f"no attestation accepted in time; trust lasted until {until}"
                connection.execute(
                    _SET_TRUST,
                    {
                        "where_node_id": row.node_id,
                        "trust_state": TRUST_EXPIRED,
                        "trust_since": row.trust_expires_at,
                        "trust_expires_at": None,
                        "trust_reason": reason,
                    },
                )
                transition = TransitionRecord(
                    node_id=row.node_id,
                    at=row.trust_expires_at,
                    from_state=row.trust_state,
                    to_state=TRUST_EXPIRED,
                    reason=reason,
                    actor="verifier",
                )
                queries.insert_transition(connection, transition)
                expired.append(transition)
        return expired

    def revoke(self, node_id: str, reason: str, actor: str, now: datetime) -> TransitionRecord:
        """Withdraw a node's trust until `restore`; attestations do not lift it."""
        return self._operator_sets_trust(node_id, TRUST_REVOKED, reason, actor, now, "revoke")

    def restore(self, node_id: str, reason: str, actor: str, now: datetime) -> TransitionRecord:
        """Lift a revocation: the node is 'enrolled' again and must attest to be trusted."""
        return self._operator_sets_trust(node_id, TRUST_ENROLLED, reason, actor, now, "restore")

    def _operator_sets_trust(
        self, node_id: str, state: str, reason: str, actor: str, now: datetime, action: str
    ) -> TransitionRecord:
        with self._write() as connection:
            previous = connection.execute(
                _TRUST_OF.with_for_update(of=NODES), {"node_id": node_id}
            ).scalar()
            if previous is None:
                raise UnknownNode(node_id)
            connection.execute(
                _SET_TRUST,
                {
                    "where_node_id": node_id,
                    "trust_state": state,
                    "trust_since": now,
                    "trust_expires_at": None,
                    "trust_reason": reason,
                },
            )
            transition = TransitionRecord(node_id, now, previous, state, reason, actor)
            queries.insert_transition(connection, transition)
            _audit(connection, AuditRecord(now, actor, action, node_id, reason))
        return transition

    def transitions(
        self, node_id: str, since: datetime | None = None, limit: int = 1000
    ) -> list[TransitionRecord]:
        """The node's trust transitions, oldest first (the newest `limit`)."""
        query = select(*_TRANSITION_COLUMNS).where(TRUST_TRANSITIONS.c.node_id == node_id)
        if since is not None:
            query = query.where(TRUST_TRANSITIONS.c.at >= since)
        query = query.order_by(TRUST_TRANSITIONS.c.at.desc(), TRUST_TRANSITIONS.c.id.desc())
        with self._read() as connection:
            if connection.execute(_TRUST_OF, {"node_id": node_id}).first() is None:
                raise UnknownNode(node_id)
            rows = connection.execute(query.limit(limit)).all()
        return [_transition(row._mapping) for row in reversed(rows)]

    # Asset tags

    def put_asset_tag(
        self,
        node_id: str,
        attributes: dict[str, str],
        sign: Callable[[int], str],
        actor: str,
        now: datetime,
    ) -> AssetTagRecord:
        """Set a node's asset tag: `sign(serial)` makes the signed token for the next
        serial; stored with its audit entry in one transaction."""
        with self._write() as connection:
            if connection.execute(_TRUST_OF, {"node_id": node_id}).first() is None:
                raise UnknownNode(node_id)
            previous = connection.execute(
                select(ASSET_TAGS.c.serial).where(ASSET_TAGS.c.node_id == node_id)
            ).scalar()
            serial = 1 if previous is None else previous + 1
            record = AssetTagRecord(node_id, attributes, sign(serial), serial, now, actor)
            connection.execute(queries.put_asset_tag(connection.dialect.name), asdict(record))
            detail = " ".join(f"{k}={v}" for k, v in sorted(attributes.items()))
            _audit(connection, AuditRecord(now, actor, "tag", node_id, detail))
        return record

    def asset_tag(self, node_id: str) -> AssetTagRecord | None:
        with self._read() as connection:
            row = connection.execute(
                select(ASSET_TAGS).where(ASSET_TAGS.c.node_id == node_id)
            ).first()
        return None if row is None else AssetTagRecord(**row._mapping)

    def asset_tags(self) -> dict[str, AssetTagRecord]:
        with self._read() as connection:
            rows = connection.execute(select(ASSET_TAGS)).all()
        return {row.node_id: AssetTagRecord(**row._mapping) for row in rows}

    # The audit log

    def audit(self, entry: AuditRecord) -> None:
        with self._write() as connection:
            _audit(connection, entry)

    def audit_log(self, since: datetime | None = None, limit: int = 1000) -> list[AuditRecord]:
        """Operator actions, oldest first (the newest `limit`)."""
        query = select(
            AUDIT_LOG.c.at, AUDIT_LOG.c.actor, AUDIT_LOG.c.action, AUDIT_LOG.c.target,
            AUDIT_LOG.c.detail,
        )  # fmt: skip
        if since is not None:
            query = query.where(AUDIT_LOG.c.at >= since)
        query = query.order_by(AUDIT_LOG.c.at.desc(), AUDIT_LOG.c.id.desc()).limit(limit)
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [AuditRecord(**row._mapping) for row in reversed(rows)]

    # Result-signing keys

    def signing_keys(self) -> list[SigningKeyRecord]:
        """Every result-signing key, oldest first."""
        with self._read() as connection:
            rows = connection.execute(select(SIGNING_KEYS).order_by(SIGNING_KEYS.c.created_at))
            return [
                SigningKeyRecord(row.kid, bytes(row.private_pem), row.created_at, row.retired_at)
                for row in rows
            ]

    def add_signing_key(self, key: SigningKeyRecord, audit: AuditRecord | None = None) -> bool:
        """Store a key; False when a key with its kid is stored already."""
        try:
            with self._write() as connection:
                connection.execute(insert(SIGNING_KEYS), asdict(key))
                if audit is not None:
                    _audit(connection, audit)
        except IntegrityError:
            return False
        return True

    def retire_signing_keys(self, except_kid: str, at: datetime) -> int:
        """Retire every unretired key but `except_kid`; returns how many."""
        with self._write() as connection:
            return connection.execute(
                update(SIGNING_KEYS)
                .where(and_(SIGNING_KEYS.c.kid != except_kid, SIGNING_KEYS.c.retired_at.is_(None)))
                .values(retired_at=at)
            ).rowcount

    # Policy bundles

    def put_policy_bundle(
        self, digest: str, files: dict[str, str], actor: str, now: datetime
    ) -> PolicyBundleRecord:
        """Put a policy bundle in force (the newest is), with its audit entry."""
        with self._write() as connection:
            bundle_id = queries.insert_id(
                connection,
                insert(POLICY_BUNDLES),
                {"digest": digest, "files": files, "set_at": now, "set_by": actor},
            )
            detail = f"sha256:{digest} ({len(files)} files)"
            _audit(connection, AuditRecord(now, actor, "set-policy", "policy", detail))
        return PolicyBundleRecord(bundle_id, digest, files, now, actor)

    def policy_bundle(self) -> PolicyBundleRecord | None:
        """The policy bundle in force; None when an operator never set one."""
        with self._read() as connection:
            row = connection.execute(
                select(POLICY_BUNDLES).order_by(POLICY_BUNDLES.c.id.desc()).limit(1)
            ).first()
        return None if row is None else PolicyBundleRecord(**row._mapping)

    # Stored appraisals

    def appraised_evidence(self, since: datetime) -> list[AppraisedEvidence]:
        """Each node's newest appraised result since `since` (those with a policy input)."""
        query = (
            select(
                RESULTS.c.id.label("result_id"),
                RESULTS.c.node_id,
                RESULTS.c.created_at,
                RESULTS.c.status,
                RESULTS.c.failed_checks,
                RESULTS.c.policy_id,
                RESULTS.c.claims,
                RESULTS.c.appraisal_input,
            )
            .where(and_(RESULTS.c.created_at >= since, RESULTS.c.appraisal_input.is_not(None)))
            .order_by(RESULTS.c.node_id, RESULTS.c.created_at.desc(), RESULTS.c.id.desc())
        )
        newest: dict[str, AppraisedEvidence] = {}
        with self._read() as connection:
            for row in connection.execute(query):
                if row.node_id in newest:
                    continue
                fields: dict[str, Any] = dict(row._mapping)
                fields["failed_checks"] = tuple(fields["failed_checks"])
                newest[row.node_id] = AppraisedEvidence(**fields)
        return list(newest.values())


_TRANSITION_COLUMNS = (
    TRUST_TRANSITIONS.c.node_id,
    TRUST_TRANSITIONS.c.at,
    TRUST_TRANSITIONS.c.from_state,
    TRUST_TRANSITIONS.c.to_state,
    TRUST_TRANSITIONS.c.reason,
    TRUST_TRANSITIONS.c.actor,
    TRUST_TRANSITIONS.c.evidence_digest,
    TRUST_TRANSITIONS.c.result_id,
)


def _transition(row: Any) -> TransitionRecord:
    fields = dict(row)
    if fields["evidence_digest"] is not None:
        fields["evidence_digest"] = bytes(fields["evidence_digest"])
    return TransitionRecord(**fields)


def _audit(connection: Connection, entry: AuditRecord) -> None:
    connection.execute(insert(AUDIT_LOG), asdict(entry))

"""The enrollment transactions: each function runs inside the caller's transaction.

Keys: an EK or AK is 'pending' only while the node's open challenge names it, 'active'
once bound to the node, 'retired' once a later enrollment replaced it.  Every change to
a node's enrollment first locks the node's row, so that on PostgreSQL concurrent
enrollments of one node run one after the other and always lock rows in the same order
(node, then challenge and keys); SQLite's BEGIN IMMEDIATE already serialises writers
and ignores FOR UPDATE.
"""

from __future__ import annotations

import hmac
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from verifier.store.errors import ChallengeNotAnswered, EnrollmentNotPending
from verifier.store.models import KEYS, NODES, PENDING_ENROLLMENTS
from verifier.store.queries import insert_id, insert_transition
from verifier.store.records import (
    KEY_ACTIVE,
    KEY_AK,
    KEY_EK,
    KEY_PENDING,
    KEY_RETIRED,
    NODE_ENROLLED,
    NODE_PENDING,
    TRUST_ENROLLED,
    TRUST_REVOKED,
    PendingEnrollment,
    TransitionRecord,
)
from verifier.store.versions import bumped


def lock_node(connection: Connection, node_id: str) -> bool:
    """Lock the node's row until commit; False when there is no such node."""
    query = select(NODES.c.node_id).where(NODES.c.node_id == node_id).with_for_update()
    return connection.execute(query).first() is not None


def begin(connection: Connection, pending: PendingEnrollment) -> None:
    """Record the node (if new), its EK and AK (if new) and this challenge, replacing any other.

    An EK the node never had is active at once when the node has no active EK (its
    first enrollment), otherwise only once this enrollment completes.
    """
    node_id = pending.node_id
    if not lock_node(connection, node_id):
        connection.execute(
            insert(NODES).values(node_id=node_id, state=NODE_PENDING, created_at=pending.created_at)
        )
    ek_key_id = _key_id(connection, node_id, KEY_EK, fingerprint=pending.ek_fingerprint)
    if ek_key_id is None:
        first_ek = _key_id(connection, node_id, KEY_EK, state=KEY_ACTIVE) is None
        ek_key_id = insert_id(
            connection,
            insert(KEYS).values(
                node_id=node_id,
                kind=KEY_EK,
                state=KEY_ACTIVE if first_ek else KEY_PENDING,
                fingerprint=pending.ek_fingerprint,
                public=pending.ek_public,
                certificate=pending.ek_certificate,
                created_at=pending.created_at,
                activated_at=pending.created_at if first_ek else None,
            ),
        )
    # An AK is known by its TPM name, nameAlg || H(TPMT_PUBLIC) (TPM 2.0 Part 1, 16).
    ak_fingerprint = pending.ak_name.hex()
    ak_key_id = _key_id(connection, node_id, KEY_AK, fingerprint=ak_fingerprint)
    if ak_key_id is None:
        ak_key_id = insert_id(
            connection,
            insert(KEYS).values(
                node_id=node_id,
                kind=KEY_AK,
                state=KEY_PENDING,
                fingerprint=ak_fingerprint,
                public=pending.ak_public,
                name=pending.ak_name,
                created_at=pending.created_at,
            ),
        )
    connection.execute(delete(PENDING_ENROLLMENTS).where(PENDING_ENROLLMENTS.c.node_id == node_id))
    connection.execute(
        insert(PENDING_ENROLLMENTS).values(
            node_id=node_id,
            ek_key_id=ek_key_id,
            ak_key_id=ak_key_id,
            secret_digest=pending.secret_digest,
            created_at=pending.created_at,
            expires_at=pending.expires_at,
        )
    )
    # Keys that only a replaced challenge named were never bound to the node.
    connection.execute(
        delete(KEYS).where(
            KEYS.c.node_id == node_id,
            KEYS.c.state == KEY_PENDING,
            KEYS.c.id.not_in([ek_key_id, ak_key_id]),
        )
    )


def drop(connection: Connection, node_id: str) -> None:
    """Forget the node's open challenge and the keys only it named."""
    lock_node(connection, node_id)
    connection.execute(delete(PENDING_ENROLLMENTS).where(PENDING_ENROLLMENTS.c.node_id == node_id))
    connection.execute(delete(KEYS).where(KEYS.c.node_id == node_id, KEYS.c.state == KEY_PENDING))


def complete(connection: Connection, node_id: str, now: datetime, secret_digest: bytes) -> None:
    """Bind the challenge's keys to the node, if `secret_digest` answers that very
    challenge (read under the node's lock, so a challenge that replaced the one the node
    answered cannot be completed by its answer).  Raises EnrollmentNotPending without a
    challenge, ChallengeNotAnswered for a wrong answer or an expired challenge."""
    lock_node(connection, node_id)
    pending = connection.execute(
        select(
            PENDING_ENROLLMENTS.c.ek_key_id,
            PENDING_ENROLLMENTS.c.ak_key_id,
            PENDING_ENROLLMENTS.c.secret_digest,
            PENDING_ENROLLMENTS.c.expires_at,
        ).where(PENDING_ENROLLMENTS.c.node_id == node_id)
    ).first()
    if pending is None:
        raise EnrollmentNotPending(node_id)
    if not hmac.compare_digest(pending.secret_digest, secret_digest):
        raise ChallengeNotAnswered(node_id, "the secret is not the one sealed for this challenge")
    if now >= pending.expires_at:
        raise ChallengeNotAnswered(
            node_id, f"the challenge expired at {pending.expires_at.isoformat()}", expired=True
        )
    _activate_key(connection, node_id, KEY_EK, pending.ek_key_id, now)
    _activate_key(connection, node_id, KEY_AK, pending.ak_key_id, now)
    previous, enrolled_before = connection.execute(
        select(NODES.c.trust_state, NODES.c.enrolled_at).where(NODES.c.node_id == node_id)
    ).one()
    # Nothing an AK vouched for before carries over an enrollment: the node must attest
    # with the AK enrolled now before it is trusted again.  A revocation stays (only an
    # operator lifts it).
    trust = previous if previous == TRUST_REVOKED else TRUST_ENROLLED
    reason = None if enrolled_before is None else ENROLLED_AGAIN
    connection.execute(
        update(NODES)
        .where(NODES.c.node_id == node_id)
        .values(
            state=NODE_ENROLLED,
            enrolled_at=now,
            # Counters are compared only between quotes of one AK: start over.
            last_clock=None,
            last_reset_count=None,
            last_restart_count=None,
            last_clock_safe=None,
            **_reset_trust(trust, now, reason),
            **bumped(),
        )
    )
    if previous != trust:
        transition = TransitionRecord(node_id, now, previous, trust, ENROLLED_AGAIN, "verifier")
        insert_transition(connection, transition)
    connection.execute(delete(PENDING_ENROLLMENTS).where(PENDING_ENROLLMENTS.c.node_id == node_id))


ENROLLED_AGAIN = "enrolled again: trust must be earned by attesting with the AK enrolled now"


def _reset_trust(trust: str, now: datetime, reason: str | None) -> dict[str, object]:
    if trust == TRUST_REVOKED:
        return {}
    return {
        "trust_state": TRUST_ENROLLED,
        "trust_since": now,
        "trust_expires_at": None,
        "trust_reason": reason,
    }


def _key_id(
    connection: Connection,
    node_id: str,
    kind: str,
    *,
    fingerprint: str | None = None,
    state: str | None = None,
) -> int | None:
    query = select(KEYS.c.id).where(KEYS.c.node_id == node_id, KEYS.c.kind == kind)
    if fingerprint is not None:
        query = query.where(KEYS.c.fingerprint == fingerprint)
    if state is not None:
        query = query.where(KEYS.c.state == state)
    key_id: int | None = connection.execute(query).scalar_one_or_none()
    return key_id


def _activate_key(
    connection: Connection, node_id: str, kind: str, key_id: int, now: datetime
) -> None:
    # Retire first: the partial unique index allows one active key per node and kind.
    connection.execute(
        update(KEYS)
        .where(
            KEYS.c.node_id == node_id,
            KEYS.c.kind == kind,
            KEYS.c.state == KEY_ACTIVE,
            KEYS.c.id != key_id,
        )
        .values(state=KEY_RETIRED, retired_at=now)
    )
    connection.execute(
        update(KEYS)
        .where(KEYS.c.id == key_id, KEYS.c.state != KEY_ACTIVE)
        .values(state=KEY_ACTIVE, activated_at=now, retired_at=None)
    )

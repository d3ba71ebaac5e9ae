"""One attestation's writes: evidence, result, the node's new state and its trust
transition, in the transaction `Store.attestation` (or `record_attestation`) opened.

Apart from store.py by concern: this is the verifier's hot path, written as DB-API
statements (`driver.py` says why and how).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Container, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection

from verifier.evidence.quote import NonceRecord
from verifier.store import queries
from verifier.store.driver import Writes
from verifier.store.errors import StoreInconsistent, UnknownNode
from verifier.store.records import (
    STATUS_AFFIRMING,
    TRUST_EXPIRED,
    TRUST_LASTING,
    TRUST_REVOKED,
    AttestationRecord,
    NodeRecord,
    ResultRecord,
    trust_after,
)


class AttestationTransaction:
    """The store's side of one attestation, inside `Store.attestation`."""

    def __init__(
        self,
        connection: Connection,
        node: NodeRecord | None,
        writes: Writes,
        stored_logs: Container[bytes] = frozenset(),
    ) -> None:
        self._connection = connection
        self._writes = writes
        self._stored_logs = stored_logs
        self.node = node
        self.logs_written: list[bytes] = []

    def spend_nonce(self, nonce: NonceRecord, issued_at: datetime, now: datetime) -> bool:
        """Record `nonce` (issued to this transaction's node) as spent; False when an
        earlier attestation already spent it.  Decided by the nonces primary key, so of
        concurrent spenders exactly one gets True."""
        if nonce.node_id is None:
            raise ValueError("only a nonce issued to this node can be spent by it")
        w = self._writes
        spent = w.first_column(
            self._connection,
            "spend_nonce",
            {
                "value": nonce.value,
                "node_id": nonce.node_id,
                "issued_at": w.time(issued_at),
                "expires_at": w.time(nonce.expires_at),
                "used_at": w.time(now),
            },
        )
        return spent is not None

    def record(self, attestation: AttestationRecord) -> ResultRecord:
        return record_attestation(
            self._connection,
            self._writes,
            attestation,
            self.node,
            self._stored_logs,
            self.logs_written,
        )


def record_attestation(
    connection: Connection,
    writes: Writes,
    attestation: AttestationRecord,
    node: NodeRecord | None = None,
    stored_logs: Container[bytes] = frozenset(),
    logs_written: list[bytes] | None = None,
) -> ResultRecord:
    """Evidence, result, the node's new state and, when its trust changed, the
    transition, in the caller's transaction.  `node` is the node as read in it."""
    if node is None:
        row = connection.execute(queries.TRUST_BY_NODE, {"node_id": attestation.node_id}).first()
        if row is None:
            raise UnknownNode(attestation.node_id)
        before = _Trust(row.trust_state, row.trust_since, row.trust_reason, row.trust_expires_at)
    else:
        before = _Trust(
            node.trust_state, node.trust_since, node.trust_reason, node.trust_expires_at
        )
    w = writes
    lapsed = _lapsed(before, attestation.received_at)
    if lapsed is not None:
        # The sweep had not recorded it yet: the node's trust ran out before this
        # evidence arrived, and its history says so before what this evidence earns.
        w.run(
            connection,
            "transition",
            {
                "node_id": attestation.node_id,
                "at": w.time(lapsed.since),
                "from_state": before.state,
                "to_state": TRUST_EXPIRED,
                "reason": lapsed.reason,
                "evidence_digest": None,
                "result_id": None,
                "actor": "verifier",
            },
        )
        before = lapsed
    trust = trust_after(before.state, attestation.status)
    after = _Trust(
        trust,
        attestation.received_at if trust != before.state else before.since,
        # A revoked node keeps the reason it was revoked for.
        before.reason if trust == TRUST_REVOKED else attestation.reason,
        attestation.expires_at if trust in TRUST_LASTING else None,
    )
    event_log_sha256 = _store_event_log(connection, writes, attestation, stored_logs)
    if event_log_sha256 is not None and logs_written is not None:
        logs_written.append(event_log_sha256)
    received_at = writes.time(attestation.received_at)
    evidence_id = w.first_column(
        connection,
        "evidence",
        {
            "node_id": attestation.node_id,
            "received_at": received_at,
            "nonce": attestation.nonce,
            "quote_message": attestation.quote_message,
            "quote_signature": attestation.quote_signature,
            "pcr_values": w.json(attestation.pcr_values),
            "peer": attestation.peer,
            "event_log_sha256": event_log_sha256,
            "runtime_log": attestation.runtime_log,
        },
    )
    result_id = w.first_column(
        connection,
        "result",
        {
            "node_id": attestation.node_id,
            "evidence_id": evidence_id,
            "status": attestation.status,
            "failed_checks": w.json(list(attestation.failed_checks)),
            "reason": attestation.reason,
            "rebooted": w.boolean(attestation.rebooted),
            "created_at": received_at,
            "findings": w.jsonb(list(attestation.findings)),
            "workarounds": w.jsonb(list(attestation.workarounds)),
            "claims": w.json(attestation.claims),
            "trust_vector": w.json(attestation.trust_vector),
            "policy_id": attestation.policy_id,
            "ear": attestation.ear,
            "expires_at": w.time(attestation.expires_at),
            "evidence_digest": attestation.evidence_digest,
            "appraisal_input": w.json(attestation.appraisal_input),
        },
    )
    if evidence_id is None or result_id is None:
        raise StoreInconsistent("INSERT returned no primary key")
    # The node last: its row names the result, and its versions move (`versions.py`).
    statement, node_values = _node_update(writes, attestation, after, result_id)
    trust_version = writes.first_column(connection, statement, node_values)
    if trust_version is None:
        raise UnknownNode(attestation.node_id)
    if trust != before.state:
        w.run(
            connection,
            "transition",
            {
                "node_id": attestation.node_id,
                "at": received_at,
                "from_state": before.state,
                "to_state": trust,
                "reason": attestation.reason or attestation.status,
                "evidence_digest": attestation.evidence_digest,
                "result_id": result_id,
                "actor": "verifier",
            },
        )
    return ResultRecord(
        id=int(result_id),
        node_id=attestation.node_id,
        evidence_id=int(evidence_id),
        status=attestation.status,
        failed_checks=tuple(attestation.failed_checks),
        reason=attestation.reason,
        rebooted=attestation.rebooted,
        created_at=attestation.received_at,
        findings=tuple(attestation.findings),
        workarounds=tuple(attestation.workarounds),
        trust_vector=attestation.trust_vector,
        policy_id=attestation.policy_id,
        ear=attestation.ear,
        expires_at=attestation.expires_at,
        evidence_digest=attestation.evidence_digest,
        trust_state=after.state,
        trust_since=after.since,
        trust_reason=after.reason,
        trust_version=int(trust_version),
    )


def _store_event_log(
    connection: Connection,
    writes: Writes,
    attestation: AttestationRecord,
    stored: Container[bytes],
) -> bytes | None:
    """Store the attestation's event log unless a node sent the same log before (a node
    re-attesting within one boot sends the same bytes); returns its SHA-256."""
    if attestation.event_log is None:
        return None
    sha256 = hashlib.sha256(attestation.event_log).digest()
    if sha256 in stored:
        return sha256
    writes.run(
        connection,
        "event_log",
        {
            "sha256": sha256,
            "content": attestation.event_log,
            "size": len(attestation.event_log),
            "first_seen": writes.time(attestation.received_at),
        },
    )
    return sha256


class KnownDigests:
    """A bounded, thread-safe set of digests (forgets them all when full)."""

    def __init__(self, most: int) -> None:
        self._most = most
        self._digests: set[bytes] = set()
        self._lock = threading.Lock()

    def __contains__(self, digest: object) -> bool:
        return digest in self._digests

    def update(self, digests: Iterable[bytes]) -> None:
        with self._lock:
            if len(self._digests) >= self._most:
                self._digests.clear()
            self._digests.update(digests)


class _Trust(NamedTuple):
    state: str
    since: datetime | None
    reason: str | None
    expires_at: datetime | None = None


def _lapsed(before: _Trust, at: datetime) -> _Trust | None:
    """The expired state a lasting trust fell into before `at`, or None if it holds."""
    expires = before.expires_at
    if before.state not in TRUST_LASTING or expires is None:
        return None
    if expires.tzinfo is None:  # SQLite hands back naive UTC
        expires = expires.replace(tzinfo=UTC)
    if at < expires:
        return None
    reason = f"no attestation accepted in time; trust lasted until {expires.isoformat()}"
    return _Trust(TRUST_EXPIRED, expires, reason, None)


def _node_update(
    writes: Writes, attestation: AttestationRecord, after: _Trust, result_id: int
) -> tuple[str, dict[str, Any]]:
    """The UPDATE of the node after `attestation` (its name), and its parameters."""
    w = writes
    values: dict[str, Any] = {
        "where_node_id": attestation.node_id,
        "last_attested_at": w.time(attestation.received_at),
        "last_status": attestation.status,
        "trust_state": after.state,
        "trust_since": w.time(after.since),
        "trust_reason": after.reason,
        "trust_expires_at": w.time(after.expires_at),
        "last_peer": attestation.peer[:255],
        "last_site": attestation.site,
        "last_result_id": result_id,
    }
    if attestation.status != STATUS_AFFIRMING:
        return "note", values
    clock = attestation.clock
    if clock is None:
        raise ValueError(f"affirming attestation of node {attestation.node_id!r} has no clock")
    values |= {
        "last_clock": w.uint64(clock.clock),
        "last_reset_count": clock.reset_count,
        "last_restart_count": clock.restart_count,
        "last_clock_safe": w.boolean(clock.safe),
        "reboots_added": int(attestation.rebooted),
    }
    return "note_affirming", values

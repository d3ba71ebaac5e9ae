"""The trust index: every enrolled node's trust, in memory, kept current by the
verifier's own state changes, and the changes pushed to watchers.

Filter, Get, the Kubernetes extender and webhook and the credential gate read it and
never the database: a lookup is a dict read.  It is fed by
- this verifier's attestations (`update`, right after each commits) and operators' acts
  (revoke, restore), so a change made here is seen at once;
- the store (`sync`): changes committed by other replicas, read every fraction of a
  second (`AdmissionConfig.sync_seconds`) from where the last read ended
  (`verifier/store/versions.py`); an entry whose version is not above the one held is
  ignored, so a slow read never undoes a newer change;
- the clock (`expire_due`): a lasting trust that reaches its expiry reads as expired at
  that instant (`NodeTrust.state_at`), and watchers are told when the expiry timer
  fires, without waiting for the store's sweep.

Watchers each have a bounded queue; one that falls behind by more than its queue is
closed (its stream ends with the reason) rather than slowing the verifier or growing
without bound.  Listeners (the credential gate) are called synchronously with every
change, after the index itself is updated, and must be quick.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from verifier.admission.decide import AFFIRMING, EXPIRED, REVOKED, NodeTrust
from verifier.store.records import NodeRecord, TrustIndexRow

log = logging.getLogger("lightgate.verifier.admission")

ChangeKind = Literal["current", "gained", "lost", "expired", "revoked", "updated"]
#: What a watcher receives when it was too slow and its stream is ended.
_CLOSED: Final = object()


@dataclass(frozen=True, slots=True)
class TrustChange:
    node_id: str
    kind: ChangeKind
    state: str
    reason: str
    at: datetime
    sequence: int
    expires_at: datetime | None = None


def entry_of(row: TrustIndexRow) -> NodeTrust:
    """The index entry of a node as the store holds it."""
    return NodeTrust(
        node_id=row.node_id,
        state=row.trust_state,
        since=row.trust_since,
        expires_at=row.trust_expires_at,
        reason=row.trust_reason,
        status=row.status,
        ear=row.ear,
        location=attested_location(row.appraisal_input),
        site=row.last_site,
        attested_at=row.last_attested_at,
        version=row.trust_version,
    )


def entry_of_node(node: NodeRecord) -> NodeTrust:
    """The index entry of a node just enrolled (or enrolled again): its trust as the
    store holds it, and no result yet to vouch for it."""
    return NodeTrust(
        node_id=node.node_id,
        state=node.trust_state,
        since=node.trust_since or node.enrolled_at,
        expires_at=node.trust_expires_at,
        reason=node.trust_reason,
        status=node.last_status,
        site=node.last_site,
        attested_at=node.last_attested_at,
        version=node.trust_version,
    )


def entry_after_attestation(
    node_id: str,
    state: str,
    since: datetime | None,
    expires_at: datetime | None,
    reason: str | None,
    status: str,
    ear: str | None,
    appraisal_input: object,
    site: str | None,
    attested_at: datetime,
    version: int,
) -> NodeTrust:
    """The index entry of a node right after one of its attestations committed."""
    return NodeTrust(
        node_id=node_id,
        state=state,
        since=since,
        expires_at=expires_at,
        reason=reason,
        status=status,
        ear=ear,
        location=attested_location(appraisal_input),
        site=site,
        attested_at=attested_at,
        version=version,
    )


def change_kind(before: NodeTrust | None, after: NodeTrust, now: datetime) -> ChangeKind | None:
    """What a watcher is told when `before` becomes `after` (None: nothing it cares
    about changed; a new expiry alone, at every re-attestation, is not a change)."""
    old = None if before is None else before.state_at(now)
    new = after.state_at(now)
    if new == old:
        if before is not None and (
            before.status != after.status or dict(before.location) != dict(after.location)
        ):
            return "updated"
        return None
    if new == REVOKED:
        return "revoked"
    if new == EXPIRED:
        return "expired"
    if new == AFFIRMING:
        return "gained"
    if old == AFFIRMING:
        return "lost"
    return "updated"


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


class Watcher:
    """One watch: the changes of the nodes it asked for, in order, from a bounded queue."""

    def __init__(self, index: TrustIndex, nodes: frozenset[str] | None, size: int) -> None:
        self._index = index
        self.nodes = nodes
        self._queue: queue.Queue[TrustChange | object] = queue.Queue(size)
        self.closed_because: str | None = None

    def wants(self, node_id: str) -> bool:
        return self.nodes is None or node_id in self.nodes

    def offer(self, change: TrustChange) -> bool:
        """Queue a change; False (and the watcher closed) when its queue is full."""
        try:
            self._queue.put_nowait(change)
            return True
        except queue.Full:
            self.closed_because = "the watcher fell too far behind; watch again"
            self._close_queue()
            return False

    def _close_queue(self) -> None:
        while True:  # make room for the end marker
            try:
                self._queue.put_nowait(_CLOSED)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:  # pragma: no cover - raced with the reader
                    continue

    def next(self, timeout: float) -> TrustChange | None:
        """The next change, or None after `timeout` seconds without one.  Raises
        WatchClosed when the watch ended (too slow, or closed)."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            raise WatchClosed(self.closed_because or "the watch was closed")
        assert isinstance(item, TrustChange)
        return item

    def close(self) -> None:
        self._index._forget(self)
        if self.closed_because is None:
            self.closed_because = "the watch was closed"
        self._close_queue()


class WatchClosed(Exception):
    """The watch ended; the message says why."""


class TrustIndex:
    """Safe to share between threads: reads take no lock; writers serialise."""

    def __init__(self, watch_queue: int = 4096) -> None:
        self._entries: dict[str, NodeTrust] = {}
        self._lock = threading.Lock()
        self._watchers: list[Watcher] = []
        self._listeners: list[Callable[[TrustChange], None]] = []
        self._expiries: list[tuple[datetime, str]] = []
        self._sequence = 0
        self._watch_queue = watch_queue
        self._mark: int | None = None

    # --- reads ---------------------------------------------------------------------

    def get(self, node_id: str) -> NodeTrust | None:
        return self._entries.get(node_id)

    def __len__(self) -> int:
        return len(self._entries)

    def node_ids(self) -> list[str]:
        return list(self._entries)

    def next_expiry(self) -> datetime | None:
        with self._lock:
            return self._expiries[0][0] if self._expiries else None

    # --- writes --------------------------------------------------------------------

    @property
    def mark(self) -> int | None:
        """Where the next read of the store's changes starts (`Store.trust_changes`)."""
        return self._mark

    def load(self, entries: Iterable[NodeTrust], mark: int | None = None) -> None:
        """Replace the whole index (at start), read from the store up to `mark`;
        nobody is told."""
        with self._lock:
            self._mark = mark
            self._entries = {entry.node_id: entry for entry in entries}
            self._expiries = [
                (e.expires_at, e.node_id) for e in self._entries.values() if e.expires_at
            ]
            heapq.heapify(self._expiries)

    def update(self, entry: NodeTrust, now: datetime) -> TrustChange | None:
        """Put a node's newest entry; tell watchers and listeners what changed."""
        with self._lock:
            before = self._entries.get(entry.node_id)
            if before is not None and entry.version <= before.version:
                return None  # what is held already (a sync read it again), or older
            self._entries[entry.node_id] = entry
            moved = before is None or before.expires_at != entry.expires_at
            if moved and entry.expires_at is not None and entry.state_at(now) != EXPIRED:
                heapq.heappush(self._expiries, (entry.expires_at, entry.node_id))
            kind = change_kind(before, entry, now)
            if kind is None:
                return None
            change = self._change(entry, kind, now)
            self._publish(change)
        return change

    def sync(self, rows: Iterable[TrustIndexRow], mark: int, now: datetime) -> int:
        """Apply the store's changes read up to `mark` (those of other replicas; this
        one's were applied as they committed); how many changed anything."""
        changed = sum(self.update(entry_of(row), now) is not None for row in rows)
        self._mark = mark
        return changed

    def expire_due(self, now: datetime) -> list[TrustChange]:
        """Tell watchers of every trust that lasted out by `now`."""
        changes = []
        with self._lock:
            while self._expiries and self._expiries[0][0] <= now:
                expires_at, node_id = heapq.heappop(self._expiries)
                entry = self._entries.get(node_id)
                # Only if the entry still ends then (a re-attestation moved it on).
                if entry is None or entry.expires_at != expires_at:
                    continue
                if entry.state_at(now) != EXPIRED:
                    continue
                change = self._change(entry, "expired", expires_at)
                self._publish(change)
                changes.append(change)
        return changes

    # --- watchers and listeners ----------------------------------------------------

    def watch(
        self,
        node_ids: Iterable[str] = (),
        include_current: bool = False,
        now: datetime | None = None,
    ) -> Watcher:
        """A new watch of `node_ids` (none: every node); with `include_current`, each
        watched node's state now comes first (kind "current")."""
        wanted = frozenset(node_ids) or None
        watcher = Watcher(self, wanted, self._watch_queue)
        with self._lock:
            if include_current:
                assert now is not None, "include_current needs the time"
                ids = sorted(self._entries) if wanted is None else sorted(wanted)
                for node_id in ids:
                    entry = self._entries.get(node_id)
                    if entry is None:
                        continue
                    current = TrustChange(
                        node_id,
                        "current",
                        entry.state_at(now),
                        entry.reason_at(now),
                        now,
                        self._sequence,
                        entry.expires_at,
                    )
                    if not watcher.offer(current):
                        break
            self._watchers.append(watcher)
        return watcher

    def add_listener(self, listener: Callable[[TrustChange], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _forget(self, watcher: Watcher) -> None:
        with self._lock:
            self._drop(watcher)

    def _drop(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def _change(self, entry: NodeTrust, kind: ChangeKind, at: datetime) -> TrustChange:
        self._sequence += 1
        return TrustChange(
            entry.node_id,
            kind,
            entry.state_at(at),
            entry.reason_at(at),
            at,
            self._sequence,
            entry.expires_at,
        )

    def _publish(self, change: TrustChange) -> None:
        """Under the lock, so every watcher sees changes in sequence order; offering
        never blocks, and listeners must not either."""
        for watcher in list(self._watchers):
            if watcher.wants(change.node_id) and not watcher.offer(change):
                self._drop(watcher)
                log.warning(
                    "slow trust watcher dropped", extra={"fields": {"sequence": change.sequence}}
                )
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # one listener's failure must not stop the others
                log.exception("trust change listener failed")


def entries_from_rows(rows: Iterable[TrustIndexRow]) -> list[NodeTrust]:
    return [entry_of(row) for row in rows]

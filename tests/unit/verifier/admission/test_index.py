"""The trust index: what watchers are told, when, in what order; slow watchers; syncs
that must not undo newer changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from verifier.admission.decide import NodeTrust
from verifier.admission.index import TrustChange, TrustIndex, WatchClosed, change_kind, entry_of
from verifier.store.records import TrustIndexRow

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def affirming(
    node_id: str = "n1", at: datetime = NOW, lasts: float = 60, version: int = 1
) -> NodeTrust:
    return NodeTrust(
        node_id,
        "affirming",
        since=at,
        expires_at=at + timedelta(seconds=lasts),
        status="affirming",
        ear="jwt",
        location={"region": "eu-west"},
        attested_at=at,
        version=version,
    )


def drain(watcher: object) -> list[TrustChange]:
    changes = []
    while True:
        change = watcher.next(0.01)  # type: ignore[attr-defined]
        if change is None:
            return changes
        changes.append(change)


def test_changes_are_named_by_what_they_mean() -> None:
    good = affirming()
    assert change_kind(None, good, NOW) == "gained"
    assert change_kind(good, replace(good, expires_at=NOW + timedelta(minutes=5)), NOW) is None
    assert change_kind(good, replace(good, state="warning", status="warning"), NOW) == "lost"
    assert change_kind(good, replace(good, state="revoked", expires_at=None), NOW) == "revoked"
    assert change_kind(good, replace(good, state="expired", expires_at=None), NOW) == "expired"
    moved = replace(good, location={"region": "us-east"})
    assert change_kind(good, moved, NOW) == "updated"
    warned = replace(good, state="warning", status="warning")
    assert change_kind(warned, replace(warned, state="contraindicated"), NOW) == "updated"


def test_watchers_see_changes_in_order_and_only_their_nodes() -> None:
    index = TrustIndex()
    everything = index.watch()
    only_b = index.watch(["b"])
    index.update(affirming("a"), NOW)
    index.update(affirming("b"), NOW)
    index.update(replace(affirming("a"), state="revoked", version=2), NOW)
    seen = drain(everything)
    assert [(c.node_id, c.kind) for c in seen] == [
        ("a", "gained"),
        ("b", "gained"),
        ("a", "revoked"),
    ]
    assert [c.sequence for c in seen] == [1, 2, 3]
    assert [(c.node_id, c.kind) for c in drain(only_b)] == [("b", "gained")]


def test_include_current_sends_the_state_first() -> None:
    index = TrustIndex()
    index.load([affirming("a"), replace(affirming("b"), state="revoked", reason="stolen")])
    watcher = index.watch(include_current=True, now=NOW)
    assert [(c.node_id, c.kind, c.state) for c in drain(watcher)] == [
        ("a", "current", "affirming"),
        ("b", "current", "revoked"),
    ]


def test_expiry_is_told_when_it_happens_unless_the_node_attested_again() -> None:
    index = TrustIndex()
    watcher = index.watch()
    index.update(affirming("a", lasts=60), NOW)
    index.update(affirming("b", lasts=60), NOW)
    index.update(
        affirming("b", at=NOW + timedelta(seconds=30), lasts=60, version=2),
        NOW + timedelta(seconds=30),
    )
    drain(watcher)
    assert index.next_expiry() == NOW + timedelta(seconds=60)
    assert index.expire_due(NOW + timedelta(seconds=59)) == []
    (expired,) = index.expire_due(NOW + timedelta(seconds=60))
    assert (expired.node_id, expired.kind, expired.at) == (
        "a",
        "expired",
        NOW + timedelta(seconds=60),
    )
    assert [c.kind for c in drain(watcher)] == ["expired"]
    assert [c.node_id for c in index.expire_due(NOW + timedelta(seconds=90))] == ["b"]


def test_an_older_entry_never_replaces_a_newer_one() -> None:
    index = TrustIndex()
    newer = replace(affirming(), state="revoked", reason="stolen", version=5)
    index.update(newer, NOW)
    # A later attestation time does not make an entry newer: only its version does.
    stale = TrustIndexRow(
        "n1", "affirming", NOW + timedelta(seconds=9), NOW + timedelta(minutes=1), None, None,
        NOW + timedelta(seconds=9), "affirming", "jwt", None, 4,
    )  # fmt: skip
    assert index.sync([stale], 17, NOW) == 0
    assert index.get("n1") == newer
    assert index.mark == 17
    assert entry_of(stale).state == "affirming"
    same = replace(newer, reason="read again")  # the same version read again: ignored
    assert index.update(same, NOW) is None
    assert index.get("n1") == newer


def test_an_entry_carries_the_location_its_appraisal_found_attested() -> None:
    row = TrustIndexRow(
        "n1", "affirming", NOW, NOW + timedelta(minutes=1), None, "ams1", NOW, "affirming",
        "jwt", {"location": {"attested": {"attributes": {"region": "eu-west", "n": 3}}}}, 1,
    )  # fmt: skip
    assert dict(entry_of(row).location) == {"region": "eu-west"}
    assert dict(entry_of(replace(row, appraisal_input={"location": []})).location) == {}


def test_a_slow_watcher_is_closed_not_waited_for() -> None:
    index = TrustIndex(watch_queue=16)
    slow = index.watch()
    for i in range(40):
        index.update(affirming(f"n{i}"), NOW)
    assert index.watchers == 0
    with pytest.raises(WatchClosed, match="fell too far behind"):
        while True:
            slow.next(0.01)


def test_listeners_hear_every_change_and_one_failing_listener_stops_nothing() -> None:
    index = TrustIndex()
    heard: list[str] = []

    def broken(change: TrustChange) -> None:
        raise RuntimeError("boom")

    index.add_listener(broken)
    index.add_listener(lambda change: heard.append(change.kind))
    index.update(affirming(), NOW)
    index.update(replace(affirming(), state="revoked", version=2), NOW)
    assert heard == ["gained", "revoked"]


def test_closing_a_watch_ends_it() -> None:
    index = TrustIndex()
    watcher = index.watch()
    watcher.close()
    assert index.watchers == 0
    with pytest.raises(WatchClosed):
        watcher.next(0.01)


def test_the_same_entry_read_again_is_told_expired_once() -> None:
    index = TrustIndex()
    watcher = index.watch()
    for _ in range(3):  # a sync reading the same row again
        index.update(affirming("a", lasts=60), NOW)
    drain(watcher)
    assert len(index.expire_due(NOW + timedelta(seconds=60))) == 1

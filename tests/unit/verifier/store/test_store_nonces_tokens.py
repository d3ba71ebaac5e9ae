"""Single use of nonces and join tokens, including under concurrent callers."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from threading import Barrier
from typing import TypeVar

import pytest
from sqlalchemy import Engine, text

from verifier.evidence.quote import NonceRecord
from verifier.store import NodeRecord, Store, UnknownNode

Enroll = Callable[..., NodeRecord]
RACERS = 8
T = TypeVar("T")


def _race(call: Callable[[str], T], node_ids: list[str]) -> list[T]:
    """Call `call(node_id)` for each node id, in as many threads, released together."""
    barrier = Barrier(len(node_ids))

    def run(node_id: str) -> T:
        barrier.wait()
        return call(node_id)

    with ThreadPoolExecutor(len(node_ids)) as pool:
        return list(pool.map(run, node_ids))


@pytest.fixture
def nodes(enroll: Enroll) -> None:
    enroll("node-a")
    enroll("node-b")


# Nonces


@pytest.mark.usefixtures("nodes")
def test_a_nonce_is_used_once(store: Store, now: datetime) -> None:
    nonce = secrets.token_bytes(32)
    expires = now + timedelta(seconds=60)
    store.add_nonce(nonce, "node-a", now, expires)

    first = store.consume_nonce(nonce, "node-a", now)
    second = store.consume_nonce(nonce, "node-a", now)

    assert first == NonceRecord(nonce, "node-a", expires, used=False)
    assert second == NonceRecord(nonce, "node-a", expires, used=True)


@pytest.mark.usefixtures("nodes")
def test_a_nonce_never_issued(store: Store, now: datetime) -> None:
    assert store.consume_nonce(secrets.token_bytes(32), "node-a", now) is None


@pytest.mark.usefixtures("nodes")
def test_a_nonce_of_another_node_is_not_consumed(store: Store, now: datetime) -> None:
    nonce = secrets.token_bytes(32)
    expires = now + timedelta(seconds=60)
    store.add_nonce(nonce, "node-a", now, expires)

    stolen = store.consume_nonce(nonce, "node-b", now)

    assert stolen == NonceRecord(nonce, "node-a", expires, used=False)  # caller refuses it
    assert store.consume_nonce(nonce, "node-a", now) == NonceRecord(
        nonce, "node-a", expires, used=False
    )


@pytest.mark.usefixtures("nodes")
def test_an_expired_nonce_is_returned_with_its_expiry(store: Store, now: datetime) -> None:
    nonce = secrets.token_bytes(32)
    expired = now - timedelta(seconds=1)
    store.add_nonce(nonce, "node-a", now - timedelta(seconds=61), expired)
    record = store.consume_nonce(nonce, "node-a", now)
    assert record is not None and record.expires_at == expired  # expiry is the caller's check


@pytest.mark.usefixtures("nodes")
def test_concurrent_consumers_of_one_nonce(store: Store, now: datetime) -> None:
    nonce = secrets.token_bytes(32)
    store.add_nonce(nonce, "node-a", now, now + timedelta(seconds=60))

    records = _race(lambda node_id: store.consume_nonce(nonce, node_id, now), ["node-a"] * RACERS)

    assert sorted(r.used for r in records if r is not None) == [False] + [True] * (RACERS - 1)


@pytest.mark.usefixtures("nodes")
def test_concurrent_consumers_from_two_nodes(store: Store, now: datetime) -> None:
    nonce = secrets.token_bytes(32)
    store.add_nonce(nonce, "node-a", now, now + timedelta(seconds=60))

    def consume(node_id: str) -> tuple[str, NonceRecord | None]:
        return node_id, store.consume_nonce(nonce, node_id, now)

    outcomes = _race(consume, ["node-a", "node-b"] * (RACERS // 2))
    won = [node for node, record in outcomes if record is not None and not record.used]
    # node-b's callers see the nonce unused but not theirs; node-a spends it exactly once.
    assert won.count("node-a") == 1
    assert all(record is not None and record.node_id == "node-a" for _, record in outcomes)


def test_add_nonce_for_an_unknown_node(store: Store, now: datetime) -> None:
    with pytest.raises(UnknownNode):
        store.add_nonce(b"n" * 32, "nobody", now, now + timedelta(seconds=60))


@pytest.mark.usefixtures("nodes")
def test_purge_nonces_deletes_only_expired_ones(store: Store, now: datetime) -> None:
    old, edge, fresh = (secrets.token_bytes(32) for _ in range(3))
    store.add_nonce(old, "node-a", now - timedelta(minutes=2), now - timedelta(minutes=1))
    store.add_nonce(edge, "node-a", now - timedelta(minutes=1), now)
    store.add_nonce(fresh, "node-b", now, now + timedelta(minutes=1))

    assert store.purge_nonces(now) == 1

    assert store.consume_nonce(old, "node-a", now) is None
    assert store.consume_nonce(edge, "node-a", now) is not None
    assert store.consume_nonce(fresh, "node-b", now) is not None
    assert store.purge_nonces(now) == 0


# Join tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def test_a_join_token_is_used_once(store: Store, now: datetime, db: Engine) -> None:
    digest = _digest("tok-1")
    store.add_join_token(digest, now, now + timedelta(hours=1), note="rack 12")

    assert store.consume_join_token(digest, "node-a", now) is True
    assert store.consume_join_token(digest, "node-b", now) is False

    with db.connect() as connection:
        row = connection.execute(
            text("SELECT used_by, note FROM join_tokens WHERE token_digest = :d"), {"d": digest}
        ).one()
    assert (row.used_by, row.note) == ("node-a", "rack 12")


def test_an_expired_or_unknown_join_token_is_refused(store: Store, now: datetime) -> None:
    digest = _digest("tok-2")
    expires = now + timedelta(minutes=10)
    store.add_join_token(digest, now, expires)

    assert store.consume_join_token(digest, "node-a", expires) is False  # expiry is exclusive
    assert store.consume_join_token(digest, "node-a", expires + timedelta(seconds=1)) is False
    assert store.consume_join_token(_digest("never-issued"), "node-a", now) is False
    assert store.consume_join_token(digest, "node-a", expires - timedelta(microseconds=1)) is True


def test_concurrent_consumers_of_one_join_token(store: Store, now: datetime) -> None:
    digest = _digest("tok-3")
    store.add_join_token(digest, now, now + timedelta(hours=1))

    spent = _race(
        lambda node_id: store.consume_join_token(digest, node_id, now), ["node-a"] * RACERS
    )

    assert sorted(spent) == [False] * (RACERS - 1) + [True]

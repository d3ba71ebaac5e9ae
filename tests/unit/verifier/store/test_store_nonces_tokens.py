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
from verifier.store import NodeRecord, Store

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


# Nonces: spent inside the attestation's transaction; the primary key decides.


def _nonce(value: bytes, node_id: str, now: datetime) -> NonceRecord:
    return NonceRecord(value, node_id, now + timedelta(seconds=60), used=False)


def _spend(store: Store, nonce: NonceRecord, now: datetime) -> bool:
    assert nonce.node_id is not None
    with store.attestation(nonce.node_id) as transaction:
        return transaction.spend_nonce(nonce, now - timedelta(seconds=1), now)


@pytest.mark.usefixtures("nodes")
def test_a_nonce_is_spent_once(store: Store, now: datetime, db: Engine) -> None:
    nonce = _nonce(secrets.token_bytes(32), "node-a", now)
    assert _spend(store, nonce, now) is True
    assert _spend(store, nonce, now) is False
    with db.connect() as connection:
        rows = connection.execute(text("SELECT node_id, used_at FROM nonces")).all()
    assert len(rows) == 1 and rows[0].node_id == "node-a" and rows[0].used_at is not None


@pytest.mark.usefixtures("nodes")
def test_a_spend_rolled_back_with_its_attestation_leaves_the_nonce_unspent(
    store: Store, now: datetime
) -> None:
    nonce = _nonce(secrets.token_bytes(32), "node-a", now)
    with pytest.raises(RuntimeError), store.attestation("node-a") as transaction:
        assert transaction.spend_nonce(nonce, now, now) is True
        raise RuntimeError("the verifier failed before recording a result")
    assert _spend(store, nonce, now) is True


@pytest.mark.usefixtures("nodes")
def test_only_a_nonce_issued_to_the_node_is_spent(store: Store, now: datetime) -> None:
    foreign = NonceRecord(secrets.token_bytes(32), None, now, used=False)
    with store.attestation("node-a") as transaction, pytest.raises(ValueError):
        transaction.spend_nonce(foreign, now, now)


@pytest.mark.usefixtures("nodes")
def test_concurrent_spenders_of_one_nonce(store: Store, now: datetime) -> None:
    nonce = _nonce(secrets.token_bytes(32), "node-a", now)
    spent = _race(lambda _node: _spend(store, nonce, now), ["node-a"] * RACERS)
    assert sorted(spent) == [False] * (RACERS - 1) + [True]


def test_attestation_transaction_of_an_unknown_node_has_no_node(store: Store) -> None:
    with store.attestation("nobody") as transaction:
        assert transaction.node is None


@pytest.mark.usefixtures("nodes")
def test_purge_nonces_deletes_only_expired_ones(store: Store, now: datetime) -> None:
    old = NonceRecord(b"o" * 32, "node-a", now - timedelta(minutes=1), used=False)
    edge = NonceRecord(b"e" * 32, "node-a", now, used=False)
    fresh = NonceRecord(b"f" * 32, "node-a", now + timedelta(minutes=1), used=False)
    for nonce in (old, edge, fresh):
        assert _spend(store, nonce, now) is True
    assert store.purge_nonces(now) == 1
    assert [_spend(store, n, now) for n in (old, edge, fresh)] == [True, False, False]


def test_shared_secret_is_created_once(store: Store, now: datetime) -> None:
    made: list[bytes] = []

    def make() -> bytes:
        made.append(secrets.token_bytes(32))
        return made[-1]

    secrets_seen = _race(lambda _n: store.shared_secret("k", make, now), ["x"] * RACERS)
    assert len(set(secrets_seen)) == 1 and secrets_seen[0] in made
    assert store.shared_secret("k", make, now) == secrets_seen[0]
    assert store.shared_secret("other", make, now) != secrets_seen[0]


# Join tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def test_a_join_token_is_used_once(store: Store, now: datetime, db: Engine) -> None:
    digest = _digest("tok-1")
    store.add_join_token(digest, now, now + timedelta(hours=1), note="rack 12")

    assert store.consume_join_token(digest, "node-a", now) is True
    assert store.consume_join_token(digest, "node-b", now) is False
    # The node that spent it may present it again (its enrollment failed before
    # activation, or the verifier forgot it), until it expires.
    later = now + timedelta(minutes=5)
    assert store.consume_join_token(digest, "node-a", later) is True

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

    racers = [f"node-{i}" for i in range(RACERS)]
    spent = _race(lambda node_id: store.consume_join_token(digest, node_id, now), racers)

    assert sorted(spent) == [False] * (RACERS - 1) + [True]
    winner = racers[spent.index(True)]
    assert store.consume_join_token(digest, winner, now) is True
    assert not any(store.consume_join_token(digest, n, now) for n in racers if n != winner)

"""Result-signing key rotation: the first key, rotation publishing old and new, the grace
period, and replicas racing for the first key."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from verifier.jose import SigningKey, keys_of_jwks
from verifier.keyring import (
    KeyRing,
    KeyRingInvalid,
    SigningKeyExists,
    StoredSigningKey,
    ensure_key,
    load,
    rotate,
)
from verifier.results import (
    AttestationResult,
    ResultKeyUnknown,
    evidence_digest,
    sign_result,
    verify_result,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
GRACE = timedelta(days=7)


class MemoryKeyStore:
    """The KeyStore protocol over a dict, as the SQL store implements it: a duplicate
    kid is refused."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredSigningKey] = {}

    def signing_keys(self) -> list[StoredSigningKey]:
        return list(self.keys.values())

    def add_signing_key(self, key: StoredSigningKey) -> None:
        if key.kid in self.keys:
            raise SigningKeyExists(key.kid)
        self.keys[key.kid] = key

    def retire_signing_keys(self, except_kid: str, at: datetime) -> None:
        for kid, key in self.keys.items():
            if kid != except_kid and key.retired_at is None:
                self.keys[kid] = replace(key, retired_at=at)


def result_at(issued: datetime) -> AttestationResult:
    return AttestationResult(
        node_id="node-1",
        status="affirming",
        trust_vector={"hardware": 2, "executables": 2},
        policy_id="default",
        nonce=b"\x01" * 32,
        issued_at=issued,
        expires_at=issued + timedelta(minutes=1),
        evidence_digest=evidence_digest(b"evidence"),
        reasons={},
        verifier_id="lightgate",
        failed_checks=(),
    )


def test_first_key_is_created_once() -> None:
    store = MemoryKeyStore()
    ring = ensure_key(store, T0)
    assert len(store.keys) == 1
    assert ring.active.kid in store.keys
    assert ring.kids == (ring.active.kid,)
    again = ensure_key(store, T0 + timedelta(hours=1))
    assert again.active.kid == ring.active.kid and len(store.keys) == 1


def test_jwks_publishes_the_active_key_under_its_thumbprint() -> None:
    ring = ensure_key(MemoryKeyStore(), T0)
    assert list(keys_of_jwks(ring.jwks())) == [ring.active.kid]
    assert list(ring.verification_keys()) == [ring.active.kid]


def test_rotation_publishes_old_and_new_and_signs_with_new() -> None:
    store = MemoryKeyStore()
    old = ensure_key(store, T0).active.kid
    ring = rotate(store, T0 + timedelta(days=30))
    assert ring.active.kid != old
    assert ring.kids == (ring.active.kid, old)
    assert set(keys_of_jwks(ring.jwks())) == {ring.active.kid, old}
    assert store.keys[old].retired_at == T0 + timedelta(days=30)
    assert store.keys[ring.active.kid].retired_at is None


def test_result_signed_before_rotation_verifies_within_grace() -> None:
    store = MemoryKeyStore()
    before = ensure_key(store, T0)
    issued = T0 + timedelta(days=30)
    token = sign_result(result_at(issued), before.active)
    after = rotate(store, issued + timedelta(seconds=5))
    verified = verify_result(token, after.verification_keys(), issued + timedelta(seconds=10))
    assert verified.node_id == "node-1"


def test_key_retired_beyond_grace_is_dropped() -> None:
    store = MemoryKeyStore()
    old = ensure_key(store, T0)
    rotated_at = T0 + timedelta(days=30)
    rotate(store, rotated_at)
    still = load(store, rotated_at + GRACE, GRACE)
    assert old.active.kid in still.kids
    later = load(store, rotated_at + GRACE + timedelta(seconds=1), GRACE)
    assert old.active.kid not in later.kids
    assert old.active.kid not in keys_of_jwks(later.jwks())
    # A result that old key signs now is refused: nothing trusts it any more.
    now = rotated_at + GRACE + timedelta(seconds=2)
    token = sign_result(result_at(now), old.active)
    with pytest.raises(ResultKeyUnknown):
        verify_result(token, later.verification_keys(), now)


def test_all_retired_makes_a_new_key() -> None:
    store = MemoryKeyStore()
    first = ensure_key(store, T0).active.kid
    store.retire_signing_keys("", T0 + timedelta(days=1))
    ring = ensure_key(store, T0 + timedelta(days=2))
    assert ring.active.kid != first
    assert first in ring.kids  # still within grace


def test_racing_replicas_converge_on_one_active_key() -> None:
    """Two replicas both find no key and both add one: both keys are published, and
    every later read picks the same active key."""
    store = MemoryKeyStore()
    a, b = SigningKey.generate(), SigningKey.generate()
    store.add_signing_key(StoredSigningKey.of(a, T0))
    store.add_signing_key(StoredSigningKey.of(b, T0))
    first, second = load(store, T0), load(store, T0 + timedelta(seconds=1))
    assert first.active.kid == second.active.kid == max(a.kid, b.kid)
    assert set(first.kids) == {a.kid, b.kid}


def test_losing_a_duplicate_kid_race_rereads_the_winner(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refuses a kid it already holds; ensure_key then uses what is stored."""
    store = MemoryKeyStore()
    winner = SigningKey.generate()
    monkeypatch.setattr(SigningKey, "generate", classmethod(lambda cls: winner))

    class Racing(MemoryKeyStore):
        def signing_keys(self) -> list[StoredSigningKey]:
            keys = super().signing_keys()
            if not keys:  # the other replica stores the same key right after our read
                store.add_signing_key(StoredSigningKey.of(winner, T0))
            return keys

    racing = Racing()
    racing.keys = store.keys
    ring = ensure_key(racing, T0)
    assert ring.active.kid == winner.kid
    assert len(store.keys) == 1


def test_stored_kid_that_is_not_its_key_is_refused() -> None:
    real, other = SigningKey.generate(), SigningKey.generate()
    stored = StoredSigningKey(other.kid, real.to_pem(), T0, None)
    with pytest.raises(KeyRingInvalid, match="is in fact key"):
        KeyRing.of([stored], T0)


def test_no_active_key_is_refused() -> None:
    with pytest.raises(KeyRingInvalid, match="no unretired"):
        KeyRing.of([], T0)


def test_garbage_pem_is_refused() -> None:
    with pytest.raises(KeyRingInvalid):
        KeyRing.of([StoredSigningKey("kid", b"not a pem", T0, None)], T0)

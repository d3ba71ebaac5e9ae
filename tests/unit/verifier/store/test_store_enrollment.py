"""Nodes, their keys and the credential challenge."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from threading import Barrier

import pytest
from sqlalchemy import Engine, text

from verifier.store import (
    AttestationRecord,
    ChallengeNotAnswered,
    EnrollmentNotPending,
    NodeRecord,
    PendingEnrollment,
    Store,
)

# The factory fixtures of conftest.py.
MakePending = Callable[..., PendingEnrollment]
Enroll = Callable[..., NodeRecord]
MakeAttestation = Callable[..., AttestationRecord]


def _keys(db: Engine, node_id: str) -> list[tuple[str, str, bytes]]:
    with db.connect() as connection:
        rows = connection.execute(
            text("SELECT kind, state, public FROM keys WHERE node_id = :n ORDER BY id"),
            {"n": node_id},
        )
        return [(row.kind, row.state, bytes(row.public)) for row in rows]


def test_unknown_node(store: Store) -> None:
    assert store.get_node("nobody") is None
    assert store.get_pending_enrollment("nobody") is None
    assert store.list_nodes() == []


def test_begin_enrollment_creates_a_pending_node(
    store: Store, make_pending: MakePending, now: datetime
) -> None:
    pending = make_pending("node-a")
    store.begin_enrollment(pending)

    node = store.get_node("node-a")
    assert node is not None
    assert node.state == "pending"
    assert (node.ek_public, node.ek_fingerprint, node.ek_certificate) == (
        pending.ek_public,
        pending.ek_fingerprint,
        pending.ek_certificate,
    )
    assert (node.ak_public, node.ak_name, node.enrolled_at) == (None, None, None)
    assert node.created_at == now
    assert (node.last_clock, node.last_attested_at, node.last_status, node.reboots) == (
        None,
        None,
        None,
        0,
    )
    assert store.get_pending_enrollment("node-a") == pending


def test_begin_enrollment_replaces_the_pending_challenge(
    store: Store, make_pending: MakePending, db: Engine
) -> None:
    store.begin_enrollment(make_pending(ak_public=b"ak-abandoned"))
    second = make_pending(ak_public=b"ak-retry")
    store.begin_enrollment(second)

    assert store.get_pending_enrollment("node-a") == second
    # The abandoned AK was never bound to the node: it is gone, not retired.
    assert _keys(db, "node-a") == [("ek", "active", b"ek-public-1"), ("ak", "pending", b"ak-retry")]


def test_begin_enrollment_again_with_the_same_ak(store: Store, make_pending: MakePending) -> None:
    store.begin_enrollment(make_pending())
    again = make_pending()  # same keys, new secret
    store.begin_enrollment(again)
    assert store.get_pending_enrollment("node-a") == again


def test_drop_pending_enrollment(store: Store, make_pending: MakePending, db: Engine) -> None:
    store.begin_enrollment(make_pending())
    store.drop_pending_enrollment("node-a")
    store.drop_pending_enrollment("node-a")  # nothing left to drop: no error

    assert store.get_pending_enrollment("node-a") is None
    node = store.get_node("node-a")
    assert node is not None and node.state == "pending" and node.ak_public is None
    assert _keys(db, "node-a") == [("ek", "active", b"ek-public-1")]


def test_complete_enrollment(store: Store, make_pending: MakePending, now: datetime) -> None:
    pending = make_pending()
    store.begin_enrollment(pending)
    later = now + timedelta(seconds=3)

    node = store.complete_enrollment("node-a", later, pending.secret_digest)

    assert node.state == "enrolled"
    assert node.enrolled_at == later
    assert (node.ak_public, node.ak_name) == (pending.ak_public, pending.ak_name)
    assert node.ek_public == pending.ek_public
    assert store.get_pending_enrollment("node-a") is None
    assert store.get_node("node-a") == node


def test_complete_enrollment_without_a_challenge(
    store: Store, enroll: Enroll, now: datetime
) -> None:
    with pytest.raises(LookupError):
        store.complete_enrollment("nobody", now, b"answer")
    enroll("node-a")
    with pytest.raises(EnrollmentNotPending):  # already completed
        store.complete_enrollment("node-a", now, b"answer")


def test_complete_enrollment_needs_this_challenges_answer(
    store: Store, make_pending: MakePending, now: datetime
) -> None:
    """The answer is checked against the challenge pending in the completing
    transaction: an answer to a challenge that was since replaced completes nothing."""
    answered = make_pending()
    store.begin_enrollment(answered)
    replacement = make_pending(ak_public=b"someone else's AK")
    store.begin_enrollment(replacement)
    with pytest.raises(ChallengeNotAnswered, match="not the one sealed"):
        store.complete_enrollment("node-a", now, answered.secret_digest)
    assert store.get_pending_enrollment("node-a") == replacement  # still pending
    node = store.complete_enrollment("node-a", now, replacement.secret_digest)
    assert node.ak_public == b"someone else's AK"


def test_complete_enrollment_after_expiry_is_refused(
    store: Store, make_pending: MakePending, now: datetime
) -> None:
    pending = make_pending()
    store.begin_enrollment(pending)
    with pytest.raises(ChallengeNotAnswered, match="expired"):
        store.complete_enrollment("node-a", pending.expires_at, pending.secret_digest)


def test_complete_enrollment_retires_the_old_ak(
    store: Store, enroll: Enroll, db: Engine, make_pending: MakePending
) -> None:
    first = enroll("node-a", ak_public=b"ak-old")
    assert first.ak_public == b"ak-old"

    second = enroll("node-a", ak_public=b"ak-new")

    assert second.ak_public == b"ak-new"
    assert second.ak_name == make_pending(ak_public=b"ak-new").ak_name
    assert _keys(db, "node-a") == [
        ("ek", "active", b"ek-public-1"),
        ("ak", "retired", b"ak-old"),
        ("ak", "active", b"ak-new"),
    ]


def test_re_enrolling_keeps_the_ak_until_completion(
    store: Store, enroll: Enroll, make_pending: MakePending
) -> None:
    enroll("node-a", ak_public=b"ak-old")
    store.begin_enrollment(make_pending(ak_public=b"ak-new"))

    node = store.get_node("node-a")
    assert node is not None
    assert (node.state, node.ak_public) == ("enrolled", b"ak-old")


def test_re_enrolling_with_the_active_ak_keeps_it_active(
    store: Store, enroll: Enroll, db: Engine
) -> None:
    enroll("node-a", ak_public=b"ak-1")
    node = enroll("node-a", ak_public=b"ak-1")
    assert node.ak_public == b"ak-1"
    assert _keys(db, "node-a") == [("ek", "active", b"ek-public-1"), ("ak", "active", b"ak-1")]


def test_complete_enrollment_resets_the_clock_baseline(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation
) -> None:
    enroll("node-a", ak_public=b"ak-old")
    store.record_attestation(make_attestation("node-a"))
    before = store.get_node("node-a")
    assert before is not None and before.last_clock is not None

    after = enroll("node-a", ak_public=b"ak-new")

    assert after.last_clock is None
    assert after.last_status == before.last_status  # history of the node is kept


def test_enrolling_again_withdraws_the_trust_the_old_ak_earned(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    """Trust earned with one AK does not carry over to the next: re-enrolled, the
    node is `enrolled` until it attests with the new AK, and the transition says so."""
    enroll("node-a", ak_public=b"ak-old")
    store.record_attestation(
        replace(make_attestation("node-a"), expires_at=now + timedelta(minutes=5))
    )
    trusted = store.get_node("node-a")
    assert trusted is not None and trusted.trust_state == "affirming"

    again = enroll("node-a", ak_public=b"ak-new")

    assert (again.trust_state, again.trust_expires_at) == ("enrolled", None)
    assert again.trust_version > trusted.trust_version
    last = store.transitions("node-a")[-1]
    assert (last.from_state, last.to_state, last.actor) == ("affirming", "enrolled", "verifier")
    assert "enrolled again" in last.reason


def test_enrolling_again_does_not_lift_a_revocation(
    store: Store, enroll: Enroll, now: datetime
) -> None:
    enroll("node-a", ak_public=b"ak-old")
    store.revoke("node-a", "stolen", "ops", now)
    again = enroll("node-a", ak_public=b"ak-new")
    assert (again.trust_state, again.trust_reason) == ("revoked", "stolen")


def test_an_ek_change_the_caller_allowed_takes_effect_on_completion(
    store: Store, enroll: Enroll, make_pending: MakePending, db: Engine, now: datetime
) -> None:
    enroll("node-a", ek_public=b"ek-old", ek_fingerprint="aa")
    store.begin_enrollment(
        make_pending(ek_public=b"ek-new", ek_fingerprint="bb", ak_public=b"ak-2")
    )

    during = store.get_node("node-a")
    assert during is not None and during.ek_fingerprint == "aa"
    pending = store.get_pending_enrollment("node-a")
    assert pending is not None and pending.ek_fingerprint == "bb"

    after = store.complete_enrollment("node-a", now, pending.secret_digest)
    assert (after.ek_public, after.ek_fingerprint) == (b"ek-new", "bb")
    assert [k[:2] for k in _keys(db, "node-a")] == [
        ("ek", "retired"),
        ("ak", "retired"),
        ("ek", "active"),
        ("ak", "active"),
    ]


def test_list_nodes_is_ordered_by_node_id(
    store: Store, enroll: Enroll, make_pending: MakePending
) -> None:
    enroll("node-c")
    store.begin_enrollment(make_pending("node-a"))
    enroll("node-b")
    nodes = store.list_nodes()
    assert [n.node_id for n in nodes] == ["node-a", "node-b", "node-c"]
    assert [n.state for n in nodes] == ["pending", "enrolled", "enrolled"]
    assert nodes[1] == store.get_node("node-b")


def test_concurrent_completion_enrolls_once(
    store: Store, make_pending: MakePending, now: datetime
) -> None:
    pending = make_pending()
    store.begin_enrollment(pending)
    barrier = Barrier(4)

    def complete() -> str:
        barrier.wait()
        try:
            store.complete_enrollment("node-a", now, pending.secret_digest)
        except EnrollmentNotPending:
            return "refused"
        return "enrolled"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(lambda _: complete(), range(4)))
    assert outcomes == ["enrolled", "refused", "refused", "refused"]


def test_concurrent_first_enrollments_of_one_node(store: Store, make_pending: MakePending) -> None:
    challenges = [make_pending(ak_public=b"ak-%d" % i) for i in range(4)]
    barrier = Barrier(4)

    def begin(i: int) -> None:
        barrier.wait()
        store.begin_enrollment(challenges[i])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(begin, range(4)))
    assert store.get_pending_enrollment("node-a") in challenges

"""Trust over time in the store: transitions, expiry, revocation, tags, audit, keys,
policy bundles and stored appraisals, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.unit.verifier.store.conftest import Enroll, MakeAttestation
from verifier.store import AuditRecord, SigningKeyRecord, Store, UnknownNode


def _attest(
    store: Store,
    make_attestation: MakeAttestation,
    at: datetime,
    status: str = "affirming",
    lasts: timedelta = timedelta(minutes=1),
) -> None:
    record = make_attestation(
        status=status,
        received_at=at,
        clock=None if status != "affirming" else make_attestation().clock,
        reason=None if status == "affirming" else f"{status}: because",
    )
    store.record_attestation(
        replace(record, expires_at=at + lasts, evidence_digest=b"\x01" * 32, site="ams1")
    )


def test_results_move_trust_and_each_change_is_a_transition(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll()
    _attest(store, make_attestation, now)
    _attest(store, make_attestation, now + timedelta(seconds=10))  # no change, no transition
    _attest(store, make_attestation, now + timedelta(seconds=20), status="warning")
    _attest(store, make_attestation, now + timedelta(seconds=30), status="contraindicated")
    _attest(store, make_attestation, now + timedelta(seconds=40), status="none")

    moves = [(t.from_state, t.to_state) for t in store.transitions("node-a")]
    assert moves == [
        ("enrolled", "affirming"),
        ("affirming", "warning"),
        ("warning", "contraindicated"),
    ]
    first = store.transitions("node-a")[0]
    assert (first.actor, first.evidence_digest, first.at) == ("verifier", b"\x01" * 32, now)
    node = store.get_node("node-a")
    assert node is not None
    assert (node.trust_state, node.trust_expires_at, node.last_site) == (
        "contraindicated",
        None,
        "ams1",
    )
    assert node.trust_since == now + timedelta(seconds=30)


def test_trust_expires_when_it_lasts_out(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll()
    enroll("node-b", ek_public=b"ek-2", ak_public=b"ak-2", ek_fingerprint="e2" * 32)
    _attest(store, make_attestation, now, lasts=timedelta(seconds=60))

    node = store.get_node("node-a")
    assert node is not None
    assert node.trust_at(now + timedelta(seconds=59)) == "affirming"
    assert node.trust_at(now + timedelta(seconds=60)) == "expired"  # before any sweep
    assert store.expire_trust(now + timedelta(seconds=59)) == []

    (expired,) = store.expire_trust(now + timedelta(seconds=61))
    assert (expired.node_id, expired.from_state, expired.to_state) == (
        "node-a",
        "affirming",
        "expired",
    )
    assert expired.at == now + timedelta(seconds=60)
    assert store.expire_trust(now + timedelta(seconds=120)) == []  # once only
    node = store.get_node("node-a")
    assert node is not None and node.trust_state == "expired"

    _attest(store, make_attestation, now + timedelta(seconds=200))
    assert [t.to_state for t in store.transitions("node-a")] == [
        "affirming",
        "expired",
        "affirming",
    ]


def test_a_node_attesting_after_its_trust_lasted_out_records_the_expiry_first(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll()
    _attest(store, make_attestation, now, lasts=timedelta(seconds=60))
    # No sweep ran: the next attestation comes after the trust ran out.
    _attest(store, make_attestation, now + timedelta(seconds=90))

    moves = [(t.from_state, t.to_state, t.at) for t in store.transitions("node-a")]
    assert moves == [
        ("enrolled", "affirming", now),
        ("affirming", "expired", now + timedelta(seconds=60)),
        ("expired", "affirming", now + timedelta(seconds=90)),
    ]
    lapse = store.transitions("node-a")[1]
    assert lapse.evidence_digest is None and "lasted until" in lapse.reason
    node = store.get_node("node-a")
    assert node is not None and node.trust_since == now + timedelta(seconds=90)


def test_revocation_holds_through_attestations_until_restored(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll()
    _attest(store, make_attestation, now)
    store.revoke("node-a", "stolen disk", "alice", now + timedelta(seconds=1))
    _attest(store, make_attestation, now + timedelta(seconds=2))

    node = store.get_node("node-a")
    assert node is not None
    assert (node.trust_state, node.trust_reason) == ("revoked", "stolen disk")
    assert node.trust_at(now + timedelta(days=1)) == "revoked"  # revocation never expires

    store.restore("node-a", "disk recovered", "bob", now + timedelta(seconds=3))
    _attest(store, make_attestation, now + timedelta(seconds=4))
    assert [(t.to_state, t.actor) for t in store.transitions("node-a")] == [
        ("affirming", "verifier"),
        ("revoked", "alice"),
        ("enrolled", "bob"),
        ("affirming", "verifier"),
    ]
    assert [(a.actor, a.action, a.target) for a in store.audit_log()] == [
        ("alice", "revoke", "node-a"),
        ("bob", "restore", "node-a"),
    ]


def test_unknown_nodes_are_refused(store: Store, now: datetime) -> None:
    with pytest.raises(UnknownNode):
        store.revoke("ghost", "x", "alice", now)
    with pytest.raises(UnknownNode):
        store.transitions("ghost")
    with pytest.raises(UnknownNode):
        store.put_asset_tag("ghost", {"region": "eu"}, lambda serial: "t", "alice", now)


def test_asset_tags_count_serials_and_are_audited(
    store: Store, enroll: Enroll, now: datetime
) -> None:
    enroll()
    first = store.put_asset_tag("node-a", {"region": "eu"}, lambda s: f"tag-{s}", "alice", now)
    second = store.put_asset_tag(
        "node-a", {"region": "us", "dc": "x1"}, lambda s: f"tag-{s}", "bob", now
    )
    assert (first.serial, second.serial, second.token) == (1, 2, "tag-2")
    stored = store.asset_tag("node-a")
    assert stored is not None and stored.attributes == {"region": "us", "dc": "x1"}
    assert store.asset_tag("node-b") is None
    assert [a.detail for a in store.audit_log()] == ["region=eu", "dc=x1 region=us"]


def test_signing_keys_and_policy_bundles(store: Store, now: datetime) -> None:
    key = SigningKeyRecord("kid-1", b"pem", now, None)
    audit = AuditRecord(now, "alice", "rotate-key", "kid-1", "")
    assert store.add_signing_key(key, audit)
    assert not store.add_signing_key(key)  # another replica got there first
    assert store.add_signing_key(SigningKeyRecord("kid-2", b"pem2", now + timedelta(1), None))
    assert store.retire_signing_keys("kid-2", now + timedelta(2)) == 1
    assert [(k.kid, k.retired_at is None) for k in store.signing_keys()] == [
        ("kid-1", False),
        ("kid-2", True),
    ]

    assert store.policy_bundle() is None
    store.put_policy_bundle("aa" * 32, {"a.rego": "package a"}, "alice", now)
    store.put_policy_bundle("bb" * 32, {"b.rego": "package b"}, "bob", now)
    bundle = store.policy_bundle()
    assert bundle is not None and (bundle.digest, bundle.set_by) == ("bb" * 32, "bob")
    assert [a.action for a in store.audit_log()] == ["rotate-key", "set-policy", "set-policy"]


def test_appraised_evidence_is_each_nodes_newest(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll()
    for seconds, status in ((0, "affirming"), (10, "warning")):
        record = make_attestation(
            status=status,
            received_at=now + timedelta(seconds=seconds),
            clock=make_attestation().clock if status == "affirming" else None,
            claims={"secure-boot.enabled": True},
        )
        store.record_attestation(replace(record, appraisal_input={"node": {"id": "node-a"}}))
    store.record_attestation(make_attestation(received_at=now + timedelta(seconds=20)))

    (newest,) = store.appraised_evidence(now - timedelta(hours=1))
    assert (newest.status, newest.appraisal_input) == ("warning", {"node": {"id": "node-a"}})
    assert newest.claims == {"secure-boot.enabled": True}
    assert store.appraised_evidence(now + timedelta(seconds=11)) == []

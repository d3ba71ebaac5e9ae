"""Evidence and results, and what an attestation moves on the node."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from verifier.evidence.tpm_structures import ClockInfo
from verifier.store import AttestationRecord, NodeRecord, ResultRecord, Store, UnknownNode

Enroll = Callable[..., NodeRecord]
MakeAttestation = Callable[..., AttestationRecord]


@pytest.fixture(autouse=True)
def node_a(enroll: Enroll) -> NodeRecord:
    return enroll("node-a")


def _node(store: Store, node_id: str = "node-a") -> NodeRecord:
    node = store.get_node(node_id)
    assert node is not None
    return node


def test_affirming_moves_the_clock_and_counts_reboots(
    store: Store, make_attestation: MakeAttestation, now: datetime
) -> None:
    booted = ClockInfo(clock=50, reset_count=2, restart_count=0, safe=True)
    attestation = make_attestation(clock=booted, rebooted=True, received_at=now)

    result = store.record_attestation(attestation)

    assert result == ResultRecord(
        id=result.id,
        node_id="node-a",
        evidence_id=result.evidence_id,
        status="affirming",
        failed_checks=(),
        reason=None,
        rebooted=True,
        created_at=now,
    )
    assert (result.trust_state, result.trust_since) == ("affirming", now)
    node = _node(store)
    assert (node.last_clock, node.last_attested_at, node.last_status, node.reboots) == (
        booted,
        now,
        "affirming",
        1,
    )


def test_contraindicated_never_moves_the_clock(
    store: Store, make_attestation: MakeAttestation, now: datetime
) -> None:
    accepted = ClockInfo(clock=1000, reset_count=1, restart_count=0, safe=True)
    store.record_attestation(make_attestation(clock=accepted))
    later = now + timedelta(seconds=30)

    store.record_attestation(
        make_attestation(
            status="contraindicated",
            clock=ClockInfo(clock=5, reset_count=9, restart_count=9, safe=False),
            rebooted=True,
            failed_checks=("pcr-digest", "clock-rollback"),
            reason="pcr-digest: PCR 7 differs",
            received_at=later,
        )
    )

    node = _node(store)
    assert node.last_clock == accepted
    assert (node.last_status, node.last_attested_at, node.reboots) == ("contraindicated", later, 0)
    newest = store.results_for("node-a", limit=1)[0]
    assert newest.failed_checks == ("pcr-digest", "clock-rollback")
    assert (newest.reason, newest.rebooted) == ("pcr-digest: PCR 7 differs", True)


def test_affirming_without_a_clock_is_refused(
    store: Store, make_attestation: MakeAttestation
) -> None:
    with pytest.raises(ValueError, match="no clock"):
        store.record_attestation(make_attestation(clock=None))
    assert store.results_for("node-a") == []


def test_attestation_of_an_unknown_node(store: Store, make_attestation: MakeAttestation) -> None:
    with pytest.raises(UnknownNode):
        store.record_attestation(make_attestation("nobody"))
    assert store.results_for("nobody") == []


def test_evidence_is_kept_as_received(
    store: Store, make_attestation: MakeAttestation, db: Engine
) -> None:
    attestation = make_attestation()
    result = store.record_attestation(attestation)

    with db.connect() as connection:
        row = connection.execute(
            text("SELECT * FROM evidence WHERE id = :id"), {"id": result.evidence_id}
        ).one()
    assert bytes(row.nonce) == attestation.nonce
    assert bytes(row.quote_message) == attestation.quote_message
    assert bytes(row.quote_signature) == attestation.quote_signature
    assert row.peer == attestation.peer
    pcr_values = row.pcr_values
    if isinstance(pcr_values, str):  # SQLite hands JSON back as text to a raw query
        pcr_values = json.loads(pcr_values)
    assert pcr_values == attestation.pcr_values


def test_results_for_is_newest_first_and_limited(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll("node-b")
    recorded = [
        store.record_attestation(make_attestation(received_at=now + timedelta(seconds=i)))
        for i in range(5)
    ]
    store.record_attestation(make_attestation("node-b"))

    assert store.results_for("node-a") == recorded[::-1]
    assert store.results_for("node-a", limit=2) == recorded[::-1][:2]
    assert [r.node_id for r in store.results_for("node-b")] == ["node-b"]
    assert store.results_for("node-c") == []


def test_a_uint64_clock_round_trips(store: Store, make_attestation: MakeAttestation) -> None:
    # TPM2_ClockSet lets the owner move the clock anywhere below 2**64.
    for clock in (2**63 - 1, 2**63, 2**64 - 1):
        info = ClockInfo(clock=clock, reset_count=2**32 - 1, restart_count=2**32 - 1, safe=False)
        store.record_attestation(make_attestation(clock=info))
        assert _node(store).last_clock == info


def test_concurrent_attestations_count_every_reboot(
    store: Store, make_attestation: MakeAttestation
) -> None:
    attestations = [make_attestation(rebooted=True) for _ in range(40)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(store.record_attestation, attestations))

    assert len({r.id for r in results}) == len({r.evidence_id for r in results}) == 40
    assert _node(store).reboots == 40
    assert len(store.results_for("node-a", limit=100)) == 40

"""Boot event logs (stored once per distinct log), the verifier's findings and claims on
results, and the node's last evidence."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from verifier.store import (
    AttestationRecord,
    EvidenceRecord,
    NodeRecord,
    ResultRecord,
    Store,
    UnknownNode,
)
from verifier.store.models import EVENT_LOGS

Enroll = Callable[..., NodeRecord]
MakeAttestation = Callable[..., AttestationRecord]

# The store keeps logs as opaque bytes; a real log is tens of kilobytes.
BOOT_1 = b"\x00\x00\x00\x00\x03\x00\x00\x00" + secrets.token_bytes(40_000)
BOOT_2 = b"\x00\x00\x00\x00\x03\x00\x00\x00" + secrets.token_bytes(30_000)
CLAIMS: dict[str, Any] = {
    "secure_boot": {"enabled": True, "db": ["a1" * 32]},
    "kernel": {"cmdline": "ro quiet", "sha256": "bb" * 32},
    "pcrs_replayed": [0, 2, 4, 7],
}


@pytest.fixture(autouse=True)
def node_a(enroll: Enroll) -> NodeRecord:
    return enroll("node-a")


def _sha256(log: bytes) -> bytes:
    return hashlib.sha256(log).digest()


def _rows(db: Engine, sql: str, **parameters: object) -> list[Any]:
    with db.connect() as connection:
        return list(connection.execute(text(sql), parameters))


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value  # SQLite hands back text


def test_a_log_is_stored_once_for_every_attestation_of_one_boot(
    store: Store, make_attestation: MakeAttestation, db: Engine, now: datetime
) -> None:
    first = store.record_attestation(make_attestation(event_log=BOOT_1, received_at=now))
    with store.attestation("node-a") as transaction:
        second = transaction.record(
            make_attestation(event_log=BOOT_1, received_at=now + timedelta(minutes=5))
        )

    with db.connect() as connection:
        (log,) = connection.execute(select(EVENT_LOGS)).all()
    assert (log.sha256, log.size, log.first_seen) == (_sha256(BOOT_1), len(BOOT_1), now)
    linked = _rows(db, "SELECT id, event_log_sha256 FROM evidence ORDER BY id")
    assert [(row.id, bytes(row.event_log_sha256)) for row in linked] == [
        (first.evidence_id, _sha256(BOOT_1)),
        (second.evidence_id, _sha256(BOOT_1)),
    ]
    stored = store.event_log(_sha256(BOOT_1))
    assert type(stored) is bytes
    assert stored == BOOT_1


def test_another_boot_adds_its_log_and_no_log_links_nothing(
    store: Store, make_attestation: MakeAttestation, db: Engine
) -> None:
    store.record_attestation(make_attestation(event_log=BOOT_1))
    store.record_attestation(make_attestation(event_log=BOOT_2))
    without = store.record_attestation(make_attestation())

    stored = {bytes(row.sha256) for row in _rows(db, "SELECT sha256 FROM event_logs")}
    assert stored == {_sha256(BOOT_1), _sha256(BOOT_2)}
    (row,) = _rows(
        db, "SELECT event_log_sha256 FROM evidence WHERE id = :id", id=without.evidence_id
    )
    assert row.event_log_sha256 is None
    assert store.event_log(_sha256(BOOT_2)) == BOOT_2
    assert store.event_log(_sha256(b"never sent")) is None


def test_concurrent_attestations_of_one_boot_store_its_log_once(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, db: Engine
) -> None:
    # Nodes booted from one image can send byte-identical logs at the same moment.
    node_ids = [f"node-{i}" for i in range(8)]
    for node_id in node_ids:
        enroll(node_id)
    attestations = [make_attestation(node_id, event_log=BOOT_1) for node_id in node_ids * 3]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(store.record_attestation, attestations))

    assert len(results) == 24
    assert _rows(db, "SELECT COUNT(*) AS n FROM event_logs")[0].n == 1
    linked = _rows(db, "SELECT COUNT(*) AS n FROM evidence WHERE event_log_sha256 IS NOT NULL")
    assert linked[0].n == 24


def test_a_log_is_not_kept_when_its_attestation_is_not(
    store: Store, make_attestation: MakeAttestation, db: Engine
) -> None:
    with pytest.raises(UnknownNode):
        store.record_attestation(make_attestation("nobody", event_log=BOOT_1))
    with pytest.raises(RuntimeError), store.attestation("node-a") as transaction:
        transaction.record(make_attestation(event_log=BOOT_2))
        raise RuntimeError("the verifier failed after recording")

    assert _rows(db, "SELECT sha256 FROM event_logs") == []
    assert store.results_for("node-a") == []


def test_findings_workarounds_and_claims_round_trip(
    store: Store, make_attestation: MakeAttestation, db: Engine
) -> None:
    attestation = make_attestation(
        status="warning",
        event_log=BOOT_1,
        failed_checks=("pcr-4-unexpected",),
        findings=("pcr-4-unexpected: shim 15.7 not in golden values", "secure-boot-off"),
        workarounds=("ebs-missing-pcr5",),
        claims=CLAIMS,
    )

    recorded = store.record_attestation(attestation)

    assert (recorded.findings, recorded.workarounds) == (
        ("pcr-4-unexpected: shim 15.7 not in golden values", "secure-boot-off"),
        ("ebs-missing-pcr5",),
    )
    assert store.results_for("node-a") == [recorded]
    evidence = store.last_evidence("node-a", status="warning")
    assert evidence is not None
    assert evidence.claims == CLAIMS


def test_no_findings_store_empty_lists_and_no_claims_store_null(
    store: Store, make_attestation: MakeAttestation, db: Engine
) -> None:
    recorded = store.record_attestation(make_attestation())

    assert (recorded.findings, recorded.workarounds) == ((), ())
    (row,) = _rows(
        db,
        "SELECT findings, workarounds, claims IS NULL AS no_claims FROM results WHERE id = :id",
        id=recorded.id,
    )
    assert (_json(row.findings), _json(row.workarounds), bool(row.no_claims)) == ([], [], True)


def test_last_evidence_is_the_newest_with_the_status_asked(
    store: Store, make_attestation: MakeAttestation, now: datetime
) -> None:
    def record(seconds: int, status: str, log: bytes | None) -> ResultRecord:
        return store.record_attestation(
            make_attestation(
                status=status,
                event_log=log,
                received_at=now + timedelta(seconds=seconds),
                claims={"boot": seconds},
            )
        )

    record(0, "affirming", BOOT_1)
    affirmed = record(60, "affirming", BOOT_2)
    refused = record(120, "contraindicated", BOOT_1)
    unlogged = record(180, "warning", None)

    assert store.last_evidence("node-a") == EvidenceRecord(
        evidence_id=affirmed.evidence_id,
        node_id="node-a",
        received_at=now + timedelta(seconds=60),
        pcr_values={"sha256": {"0": "00" * 32, "7": "ab" * 32}},
        event_log=BOOT_2,
        status="affirming",
        claims={"boot": 60},
        result_id=affirmed.id,
    )
    contraindicated = store.last_evidence("node-a", status="contraindicated")
    assert contraindicated is not None
    assert (contraindicated.result_id, contraindicated.event_log) == (refused.id, BOOT_1)
    newest = store.last_evidence("node-a", status=None)
    assert newest is not None
    assert (newest.result_id, newest.status, newest.event_log) == (unlogged.id, "warning", None)
    assert store.last_evidence("node-a", status="none") is None


def test_last_evidence_breaks_a_tie_in_time_by_arrival(
    store: Store, make_attestation: MakeAttestation, now: datetime
) -> None:
    store.record_attestation(make_attestation(received_at=now, event_log=BOOT_1))
    later = store.record_attestation(make_attestation(received_at=now, event_log=BOOT_2))

    evidence = store.last_evidence("node-a")
    assert evidence is not None
    assert (evidence.evidence_id, evidence.event_log) == (later.evidence_id, BOOT_2)


def test_last_evidence_of_nodes_without_it(store: Store, enroll: Enroll) -> None:
    assert store.last_evidence("node-a") is None
    assert store.last_evidence("node-a", status=None) is None
    with pytest.raises(UnknownNode):
        store.last_evidence("nobody")
    with pytest.raises(UnknownNode):
        store.last_evidence("nobody", status=None)


def test_last_evidence_refuses_a_status_no_result_has(store: Store) -> None:
    with pytest.raises(ValueError, match="affirmed"):
        store.last_evidence("node-a", status="affirmed")

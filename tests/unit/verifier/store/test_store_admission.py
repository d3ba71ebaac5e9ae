"""The store's admission records: what the trust index loads, issued credentials and
their revocation, credential nonces, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from tests.unit.verifier.store.conftest import Enroll, MakeAttestation
from verifier.evidence.quote import NonceRecord
from verifier.store import CredentialRecord, Store

LOCATION = {"location": {"attested": {"attributes": {"region": "eu-west"}}}}


def _credential(
    serial: str, node: str, now: datetime, lasts: float = 600, kind: str = "certificate"
) -> CredentialRecord:
    return CredentialRecord(
        serial=serial,
        node_id=node,
        kind=kind,
        issued_at=now,
        not_after=now + timedelta(seconds=lasts),
        subject=node,
        ear_digest=b"\x01" * 32,
        key_name=b"\x00\x0b" + b"\x02" * 32,
    )


def test_the_index_rows_carry_trust_newest_result_and_attested_location(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll()
    enroll("node-b", ek_public=b"ek-2", ak_public=b"ak-2", ek_fingerprint="e2" * 32)
    record = make_attestation(received_at=now)
    store.record_attestation(
        replace(
            record,
            expires_at=now + timedelta(minutes=1),
            ear="jwt",
            appraisal_input=LOCATION,
            site="ams1",
        )
    )
    rows = {row.node_id: row for row in store.trust_index()}
    assert set(rows) == {"node-a", "node-b"}
    a = rows["node-a"]
    assert (a.trust_state, a.status, a.ear, a.appraisal_input, a.last_site) == (
        "affirming",
        "affirming",
        "jwt",
        LOCATION,
        "ams1",
    )
    assert a.trust_expires_at == now + timedelta(minutes=1)
    assert (rows["node-b"].trust_state, rows["node-b"].status, rows["node-b"].ear) == (
        "enrolled",
        None,
        None,
    )
    assert [r.node_id for r in store.trust_index(node_id="node-b")] == ["node-b"]


def test_every_write_of_a_nodes_trust_moves_its_version(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    def version() -> int:
        (row,) = store.trust_index(node_id="node-a")
        return row.trust_version

    seen = [enroll().trust_version, version()]
    result = store.record_attestation(
        replace(make_attestation(received_at=now), expires_at=now + timedelta(seconds=30))
    )
    seen += [result.trust_version or 0, version()]
    store.expire_trust(now + timedelta(minutes=1))
    seen.append(version())
    store.revoke("node-a", "stolen", "ops", now + timedelta(minutes=2))
    seen.append(version())
    store.restore("node-a", "found", "ops", now + timedelta(minutes=3))
    seen.append(version())
    # enrolled, attested (returned and stored), expired, revoked, restored
    assert seen == [1, 1, 2, 2, 3, 4, 5]


def test_trust_changes_reads_from_the_mark_exactly_what_was_written_after_it(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    enroll()
    enroll("node-b", ek_public=b"ek-2", ak_public=b"ak-2", ek_fingerprint="e2" * 32)
    everything, mark = store.trust_changes()
    seen = {r.node_id: r.trust_version for r in everything}
    assert set(seen) == {"node-a", "node-b"}
    store.record_attestation(make_attestation("node-b", received_at=now))
    changed, mark = store.trust_changes(mark)
    # node-b's change is read; a row may be read again (on PostgreSQL, while any other
    # transaction on the server runs, the mark stays behind it), which its unchanged
    # version makes harmless, but never a change missed.
    versions = {r.node_id: r.trust_version for r in changed}
    assert versions["node-b"] == seen["node-b"] + 1
    assert all(versions[n] == seen[n] for n in versions if n != "node-b")


def test_a_write_in_flight_when_the_mark_is_taken_is_read_at_the_next_sync(
    store: Store, enroll: Enroll, make_attestation: MakeAttestation, now: datetime
) -> None:
    """The replica-sync race: a transaction that has written but not committed when
    another replica reads its changes must be read by that replica's next read."""
    enrolled = enroll().trust_version
    _, mark = store.trust_changes()
    with store.attestation("node-a") as transaction:
        transaction.record(make_attestation(received_at=now))
        during, mark = store.trust_changes(mark)  # another connection: not committed yet
        assert all(r.trust_version == enrolled for r in during)  # at most read again
    after, _ = store.trust_changes(mark)
    assert [(r.node_id, r.trust_state, r.trust_version) for r in after] == [
        ("node-a", "affirming", enrolled + 1)
    ]


def test_losing_trust_revokes_only_live_credentials_once(
    store: Store, enroll: Enroll, now: datetime
) -> None:
    enroll()
    store.record_credential(_credential("aa", "node-a", now))
    store.record_credential(_credential("bb", "node-a", now, lasts=-1))  # already expired
    store.record_credential(_credential("cc", "node-a", now, kind="token"))
    assert sorted(store.revoke_credentials("node-a", "revoked: stolen", now)) == ["aa", "cc"]
    assert store.revoke_credentials("node-a", "again", now) == []  # revoked already
    (on_crl,) = store.revoked_credentials(now, "certificate")
    assert (on_crl.serial, on_crl.revoked_reason, on_crl.revoked_at) == (
        "aa",
        "revoked: stolen",
        now,
    )
    # once the certificate has expired it leaves the CRL
    assert store.revoked_credentials(now + timedelta(seconds=601), "certificate") == []
    assert [c.serial for c in store.credentials_of("node-a")] == ["aa", "bb", "cc"]


def test_a_credential_nonce_is_spent_once(store: Store, enroll: Enroll, now: datetime) -> None:
    enroll()
    nonce = NonceRecord(b"\x07" * 32, "node-a", now + timedelta(minutes=1), used=False)
    assert store.spend_nonce(nonce, now, now) is True
    assert store.spend_nonce(nonce, now, now) is False

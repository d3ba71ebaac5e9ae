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
    assert (a.trust_state, a.status, a.ear, a.location, a.last_site) == (
        "affirming",
        "affirming",
        "jwt",
        {"region": "eu-west"},
        "ams1",
    )
    assert a.trust_expires_at == now + timedelta(minutes=1)
    assert (rows["node-b"].trust_state, rows["node-b"].status, rows["node-b"].location) == (
        "enrolled",
        None,
        {},
    )
    assert [r.node_id for r in store.trust_index(node_id="node-b")] == ["node-b"]
    assert [r.node_id for r in store.trust_index(changed_since=now - timedelta(seconds=1))] == [
        "node-a"
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

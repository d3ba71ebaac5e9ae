"""The credential gate, where a software TPM's freedom is needed (clockInfo values a
swtpm will not sign without a reboot) and around its revocation worker: a TPM reset or
a clock rollback since the vouching quote, re-enrollment, token audiences, failed
revocations tried again, reconciliation, and a CRL that follows other replicas.  Over a
real store (SQLite), the real trust index and the built-in CA and token issuer; the
clock is the test's.  test_gate.py holds every other rule, against swtpm as well.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from lightgate.config import AdmissionConfig
from tests.unit.verifier.evidence.test_certify import (
    AK_ATTRIBUTES,
    CLOCK,
    SoftwareKey,
    certify,
)
from verifier.admission.ca import LocalCertificateAuthority, LocalTokenIssuer
from verifier.admission.decide import Requirements
from verifier.admission.gate import (
    CredentialGate,
    CredentialProofInvalid,
    CredentialRefused,
    IssuedCertificate,
    IssuedToken,
)
from verifier.admission.index import TrustIndex, entries_from_rows, entry_of
from verifier.evidence.certify import KeyCertification
from verifier.evidence.tpm_structures import ClockInfo
from verifier.jose import SigningKey, jwks_document
from verifier.store import Store
from verifier.store.records import AttestationRecord, PendingEnrollment

NODE = "node-a"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TRUST = timedelta(minutes=10)
ANY = Requirements(workload="web")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FlakyStore(Store):
    """The real store, whose revocations fail while `down` (the database away)."""

    down = False

    def revoke_credentials(
        self, node_id: str, reason: str, at: datetime, serial: str | None = None
    ) -> list[str]:
        if self.down:
            raise ConnectionError("the database is away")
        return super().revoke_credentials(node_id, reason, at, serial)


@dataclass
class World:
    store: FlakyStore
    index: TrustIndex
    gate: CredentialGate
    clock: Clock
    ak: SoftwareKey

    def attest(
        self, node_id: str = NODE, status: str = "affirming", clock: ClockInfo = CLOCK
    ) -> None:
        """What the verifier does after an attestation: store it, tell the index."""
        self.store.record_attestation(
            AttestationRecord(
                node_id=node_id, received_at=self.clock.now, nonce=secrets.token_bytes(32),
                quote_message=b"\xffTCG" + secrets.token_bytes(60),
                quote_signature=secrets.token_bytes(64), pcr_values={}, peer="ipv4:127.0.0.1:1",
                status=status, failed_checks=() if status == "affirming" else ("policy",),
                reason=None if status == "affirming" else "policy said so", clock=clock,
                rebooted=False, expires_at=self.clock.now + TRUST, ear=f"ear-{status}",
            )
        )  # fmt: skip
        self.reload(node_id)

    def reload(self, node_id: str = NODE) -> None:
        for row in self.store.trust_index(node_id=node_id):
            self.index.update(entry_of(row), self.clock.now)

    def proof(
        self, key: SoftwareKey, nonce: bytes | None = None, **changes: object
    ) -> tuple[KeyCertification, bytes]:
        nonce = nonce if nonce is not None else self.gate.challenge(NODE)[0]
        return certify(self.ak, key.public, nonce, **changes), nonce  # type: ignore[arg-type]

    def certificate(
        self, key: SoftwareKey | None = None, csr_key: SoftwareKey | None = None
    ) -> IssuedCertificate:
        key = key or SoftwareKey.generate()
        certification, nonce = self.proof(key)
        return self.gate.issue_certificate(NODE, certification, nonce, csr(csr_key or key), ANY)

    def token(self, audience: str = "payments", **requirements: object) -> IssuedToken:
        key = SoftwareKey.generate()
        certification, nonce = self.proof(key)
        wanted = replace(ANY, **requirements)  # type: ignore[arg-type]
        return self.gate.issue_token(NODE, certification, nonce, [audience], wanted)


def csr(key: SoftwareKey) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return request.sign(key.private_key, hashes.SHA256()).public_bytes(Encoding.DER)


def _enroll(store: Store, node_id: str, ak: SoftwareKey, now: datetime) -> None:
    answer = secrets.token_bytes(32)
    store.begin_enrollment(
        PendingEnrollment(
            node_id=node_id, ek_certificate=None, ek_public=b"ek-" + node_id.encode(),
            ek_fingerprint=secrets.token_hex(32), ak_public=ak.public.raw,
            ak_name=ak.public.name, secret_digest=answer, created_at=now,
            expires_at=now + timedelta(minutes=5),
        )
    )  # fmt: skip
    store.complete_enrollment(node_id, now, answer)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = FlakyStore.open(f"sqlite:///{tmp_path / 'verifier.db'}")
    assert isinstance(store, FlakyStore)
    clock = Clock()
    ak = SoftwareKey.generate(AK_ATTRIBUTES)
    _enroll(store, NODE, ak, T0)
    _enroll(store, "node-b", SoftwareKey.generate(AK_ATTRIBUTES), T0)
    index = TrustIndex()
    rows, mark = store.trust_changes()
    index.load(entries_from_rows(rows), mark)
    shared: dict[str, bytes] = {}

    def secret(name: str, make: object) -> bytes:
        return shared.setdefault(name, make())  # type: ignore[operator]

    signing = SigningKey.generate()
    gate = CredentialGate(
        store=store,
        index=index,
        ca=LocalCertificateAuthority.shared(secret, "Test CA", T0),
        tokens=LocalTokenIssuer(
            lambda: "https://verifier.test",
            lambda: signing,
            lambda: jwks_document([signing.public_key]),
        ),
        config=AdmissionConfig(
            certificate_lifetime_seconds=3600,
            token_lifetime_seconds=600,
            min_credential_seconds=5,
            challenge_ttl_seconds=60,
            token_audiences=("payments",),
        ),
        nonce_key=b"k" * 32,
        node_of=store.get_node,
        clock=clock,
        crl_url=lambda: "https://verifier.test/ca/crl",
    )
    built = World(store, index, gate, clock, ak)
    built.attest()
    yield built
    store.close()


def _crl_serials(world: World) -> set[int]:
    return {entry.serial_number for entry in x509.load_der_x509_crl(world.gate.crl())}


# --- the TPM, since the vouching quote -----------------------------------------------


def test_a_certification_by_another_nodes_ak_is_refused(world: World) -> None:
    key = SoftwareKey.generate()
    nonce, _ = world.gate.challenge(NODE)
    other = certify(SoftwareKey.generate(AK_ATTRIBUTES), key.public, nonce)
    with pytest.raises(CredentialProofInvalid, match="signature"):
        world.gate.issue_certificate(NODE, other, nonce, csr(key), ANY)


def test_a_tpm_reset_since_the_vouching_quote_is_refused(world: World) -> None:
    """The node rebooted after the quote that earned its trust: anything may have
    started since, so it must attest again first."""
    key = SoftwareKey.generate()
    rebooted = ClockInfo(1000, CLOCK.reset_count + 1, 0, True)
    certification, nonce = world.proof(key, clock=rebooted)
    with pytest.raises(CredentialRefused, match="reset"):
        world.gate.issue_certificate(NODE, certification, nonce, csr(key), ANY)
    world.attest(clock=rebooted)  # attested after the reboot: trusted again
    certification, nonce = world.proof(key, clock=rebooted)
    world.gate.issue_certificate(NODE, certification, nonce, csr(key), ANY)


def test_a_clock_older_than_the_vouching_quote_is_refused(world: World) -> None:
    """A TPM whose state was rolled back (or a replayed certification)."""
    key = SoftwareKey.generate()
    rolled_back = replace(CLOCK, clock=CLOCK.clock - 1)
    certification, nonce = world.proof(key, clock=rolled_back)
    with pytest.raises(CredentialProofInvalid, match="clock"):
        world.gate.issue_certificate(NODE, certification, nonce, csr(key), ANY)


# --- enrollment and audiences --------------------------------------------------------


def test_a_node_enrolled_again_gets_nothing_until_it_attests_with_the_new_ak(
    world: World,
) -> None:
    new_ak = SoftwareKey.generate(AK_ATTRIBUTES)
    _enroll(world.store, NODE, new_ak, T0)
    world.reload()
    world.ak = new_ak
    entry = world.index.get(NODE)
    assert entry is not None and entry.state == "enrolled"
    with pytest.raises(CredentialRefused, match="must attest"):
        world.certificate()
    world.attest()
    world.certificate()


def test_a_token_is_issued_only_for_the_audiences_configured(world: World) -> None:
    key = SoftwareKey.generate()
    certification, nonce = world.proof(key)
    with pytest.raises(CredentialRefused, match="audience elsewhere"):
        world.gate.issue_token(NODE, certification, nonce, ["elsewhere"], ANY)
    # refused before the proof was looked at: the nonce is still the node's
    world.gate.issue_token(NODE, certification, nonce, ["payments"], ANY)


# --- revocation ----------------------------------------------------------------------------


def test_a_failed_revocation_is_tried_again_until_it_holds(world: World) -> None:
    issued = world.certificate()
    world.store.down = True
    world.attest(status="contraindicated")  # lost: queued for revocation
    assert world.gate.revoke_pending() == 0
    assert world.gate.failed_revocations == 1
    assert world.gate.revoke_pending() == 0  # still away: kept
    world.store.down = False
    assert world.gate.revoke_pending() == 1
    assert world.gate.failed_revocations == 0
    assert issued.serial in _crl_serials(world)


def test_reconciliation_revokes_what_no_event_did(world: World) -> None:
    """A loss the gate never heard of (another replica's, or one whose event was lost)
    is found by comparing live credentials with the index."""
    issued = world.certificate()
    world.store.revoke(NODE, "stolen", "ops", world.clock.now)
    world.index.load(entries_from_rows(world.store.trust_index()))  # nobody is told
    assert world.gate.revoke_pending() == 0  # no event reached the gate
    assert world.gate.reconcile() == [NODE]
    assert issued.serial in _crl_serials(world)
    assert world.gate.reconcile() == []  # nothing live is left to revoke


def test_the_crl_follows_revocations_made_by_another_replica(world: World) -> None:
    issued = world.certificate()
    assert issued.serial not in _crl_serials(world)  # cached now
    world.store.revoke_credentials(NODE, "revoked: by another replica", world.clock.now)
    assert issued.serial in _crl_serials(world)

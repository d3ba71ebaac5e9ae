"""CredentialGate (verifier/admission/gate.py): one named test per refused attack or
rule, through the gate's public calls only (challenge, issue_certificate, issue_token,
revoke_pending, crl).

Everything the gate talks to is real: a SQLite store (a file, as replicas share one
database), the trust index, the built-in CA and token issuer, the credential nonce key
and the CA key read from the store as `verifier/server.py` reads them, and for its
attestation nonces the verifier's own attestation service (`verifier.service.Verifier`).
Each test runs against two TPMs:

- `swtpm`: a fresh swtpm whose AK certifies its bound key (TPM2_Certify and
  TPM2_CertifyCreation through `attestor.bound_key`, as the agent does), with the CSR
  signed in the TPM; the node's counter baseline is the clock of a real TPM2_Quote
  (skipped without swtpm);
- `software`: the software TPM of tests/unit/verifier/evidence/test_certify.py, the same
  TPM 2.0 structures signed by a P-256 AK held in software.

The clock is the test's (`Clock`): nothing sleeps, nothing reads the wall clock.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from attestor.bound_key import BoundKey, csr_builder, load_or_create_bound_key
from attestor.tpm import AkBlobs, Tpm
from lightgate.config import AdmissionConfig, VerifierConfig
from tests.unit.verifier.evidence.test_certify import (
    AK_ATTRIBUTES,
    CLOCK,
    SoftwareKey,
    certify,
    skip_without_swtpm,
)
from verifier.admission.ca import LocalCertificateAuthority, LocalTokenIssuer
from verifier.admission.decide import Requirements, judge
from verifier.admission.gate import (
    NONCE_SECRET,
    CredentialGate,
    CredentialProofInvalid,
    CredentialRefused,
    IssuedCertificate,
    IssuedToken,
)
from verifier.admission.index import TrustIndex, entries_from_rows, entry_of
from verifier.enrollment import TrustStore
from verifier.errors import UnknownNode, VerifierError
from verifier.evidence.certify import KeyCertification
from verifier.evidence.nonce import read_nonce
from verifier.evidence.tpm_public import parse_public
from verifier.evidence.tpm_structures import ClockInfo, HashAlg, PcrSelection, parse_attest
from verifier.jose import SigningKey, jwks_document, keys_of_jwks, verify_jws
from verifier.service import NONCE_KEY, Verifier
from verifier.store import CredentialRecord, Store
from verifier.store.records import AttestationRecord, PendingEnrollment

NODE = "node-a"
OTHER_NODE = "node-b"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TRUST = timedelta(minutes=10)
ANY = Requirements(workload="web")
CONFIG = AdmissionConfig(
    certificate_lifetime_seconds=3600,
    token_lifetime_seconds=600,
    min_credential_seconds=5,
    challenge_ttl_seconds=60,
    token_audiences=("payments",),
)


# --- the node's TPM ---------------------------------------------------------------------


class Prover(Protocol):
    """A node's TPM as the gate sees it: an enrolled AK that certifies a bound key."""

    @property
    def ak_public(self) -> bytes:
        """The AK's TPMT_PUBLIC, as enrolled."""

    @property
    def quote_clock(self) -> ClockInfo:
        """The TPM's clock in the quote that earned the node its trust."""

    def certify(self, nonce: bytes) -> KeyCertification:
        """TPM2_Certify and TPM2_CertifyCreation of the bound key by the AK over `nonce`."""

    def csr(self) -> bytes:
        """A DER PKCS#10 request for the bound key, signed by it."""


@dataclass(frozen=True)
class SoftwareProver:
    ak: SoftwareKey
    key: SoftwareKey

    @property
    def ak_public(self) -> bytes:
        return self.ak.public.raw

    @property
    def quote_clock(self) -> ClockInfo:
        return CLOCK  # the clock test_certify's software TPM certifies with

    def certify(self, nonce: bytes) -> KeyCertification:
        return certify(self.ak, self.key.public, nonce)

    def csr(self) -> bytes:
        return csr_of(self.key.private_key)


@dataclass(frozen=True)
class SwtpmProver:
    ak: AkBlobs
    key: BoundKey
    quote_clock: ClockInfo

    @property
    def ak_public(self) -> bytes:
        return self.ak.tpmt_public

    def certify(self, nonce: bytes) -> KeyCertification:
        return self.key.certification(self.ak, nonce)

    def csr(self) -> bytes:
        return self.key.csr(NODE)


def csr_of(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The agent's CSR for NODE (attestor.bound_key.csr_builder), signed by `private_key`."""
    return csr_builder(NODE).sign(private_key, hashes.SHA256()).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def swtpm_prover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmProver]:
    """One swtpm for the module: an ECC AK, a bound key, and a quote's clock."""
    from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision

    root = tmp_path_factory.mktemp("gate-swtpm")
    provision(root / "tpm", SimulatorCA(root / "ca"))
    with Swtpm(root / "tpm").start() as simulator, Tpm(simulator.tcti) as tpm:
        ak = tpm.create_ak("ecc")
        bound = load_or_create_bound_key(tpm, root / "state", node_id=NODE)
        message, _ = tpm.quote(ak, PcrSelection.of({HashAlg.SHA256: [0]}), os.urandom(32))
        yield SwtpmProver(ak, bound, parse_attest(message).clock_info)


@pytest.fixture(
    params=[
        pytest.param("swtpm", marks=[pytest.mark.swtpm, skip_without_swtpm]),
        "software",
    ]
)
def prover(request: pytest.FixtureRequest) -> Prover:
    if request.param == "swtpm":
        found: SwtpmProver = request.getfixturevalue("swtpm_prover")
        return found
    return SoftwareProver(SoftwareKey.generate(AK_ATTRIBUTES), SoftwareKey.generate())


# --- the verifier around the gate -------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


Window = Literal["before the record", "after the record"]


class RacingStore(Store):
    """The real store, where a trust loss made on another thread (an operator revoking
    the node, a failed attestation, time running out) can land in the window between
    the gate's trust check and its record of the credential, or between that record
    and the gate's check after it."""

    race: tuple[Window, Callable[[], object]] | None = None

    def record_credential(self, credential: CredentialRecord) -> None:
        race, self.race = self.race, None
        if race is not None and race[0] == "before the record":
            _on_another_thread(race[1])
        super().record_credential(credential)
        if race is not None and race[0] == "after the record":
            _on_another_thread(race[1])


def _on_another_thread(action: Callable[[], object]) -> None:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # handed to the test's thread below
            failures.append(exc)

    racer = threading.Thread(target=run, name="trust-loss")
    racer.start()
    racer.join(timeout=30)
    assert not racer.is_alive(), "the racing trust loss did not finish"
    if failures:
        raise failures[0]


@dataclass
class World:
    store: RacingStore
    index: TrustIndex
    gate: CredentialGate
    clock: Clock
    tpm: Prover
    signing: SigningKey
    tmp_path: Path

    def attest(
        self,
        status: str = "affirming",
        trust: timedelta = TRUST,
        location: dict[str, str] | None = None,
    ) -> datetime:
        """What the verifier does after an accepted quote: store the result, update the
        index (and so tell the gate).  Returns when the node's trust ends."""
        expires_at = self.clock.now + trust
        self.store.record_attestation(
            AttestationRecord(
                node_id=NODE, received_at=self.clock.now, nonce=secrets.token_bytes(32),
                quote_message=b"\xffTCG" + secrets.token_bytes(60),
                quote_signature=secrets.token_bytes(64), pcr_values={}, peer="ipv4:127.0.0.1:1",
                status=status, failed_checks=() if status == "affirming" else ("policy",),
                reason=None if status == "affirming" else "policy found a problem",
                clock=self.tpm.quote_clock, rebooted=False, expires_at=expires_at,
                ear=f"ear-{status}-{secrets.token_hex(4)}",
                appraisal_input=None if location is None
                else {"location": {"attested": {"attributes": location}}},
            )
        )  # fmt: skip
        self.reload()
        return expires_at

    def reload(self) -> None:
        for row in self.store.trust_index(node_id=NODE):
            self.index.update(entry_of(row), self.clock.now)

    def revoke(self) -> None:
        """An operator's RevokeNode: the store, then this replica's index."""
        self.store.revoke(NODE, "the node was stolen", "operator", self.clock.now)
        self.reload()

    def proof(self, nonce: bytes | None = None) -> tuple[KeyCertification, bytes]:
        nonce = self.gate.challenge(NODE)[0] if nonce is None else nonce
        return self.tpm.certify(nonce), nonce

    def certificate(self, requirements: Requirements = ANY) -> IssuedCertificate:
        certification, nonce = self.proof()
        return self.gate.issue_certificate(NODE, certification, nonce, self.tpm.csr(), requirements)

    def token(self, requirements: Requirements = ANY, lifetime_seconds: float = 0.0) -> IssuedToken:
        certification, nonce = self.proof()
        return self.gate.issue_token(
            NODE, certification, nonce, ["payments"], requirements, lifetime_seconds
        )

    def claims(self, token: IssuedToken) -> dict[str, object]:
        verified = verify_jws(token.token, keys_of_jwks(self.jwks()), "at+jwt")
        claims: dict[str, object] = json.loads(verified.payload)
        return claims

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return jwks_document([self.signing.public_key])

    def crl(self) -> x509.CertificateRevocationList:
        crl = x509.load_der_x509_crl(self.gate.crl())
        ca = x509.load_der_x509_certificate(self.gate.ca_chain[0])
        public_key = ca.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert crl.is_signature_valid(public_key)
        return crl

    def crl_serials(self) -> set[int]:
        return {revoked.serial_number for revoked in self.crl()}


def enroll(store: Store, node_id: str, ak_public: bytes) -> None:
    """A node whose AK the verifier activated (the EK side is not the gate's concern)."""
    answer = secrets.token_bytes(32)
    store.begin_enrollment(
        PendingEnrollment(
            node_id=node_id, ek_certificate=None, ek_public=b"ek-" + node_id.encode(),
            ek_fingerprint=secrets.token_hex(32), ak_public=ak_public,
            ak_name=parse_public(ak_public).name, secret_digest=answer, created_at=T0,
            expires_at=T0 + timedelta(minutes=5),
        )
    )  # fmt: skip
    store.complete_enrollment(node_id, T0, answer)


@pytest.fixture
def world(prover: Prover, tmp_path: Path) -> Iterator[World]:
    """NODE enrolled with the prover's AK and affirming until T0 + TRUST; OTHER_NODE
    enrolled (another TPM) and never attested."""
    store = RacingStore.open(f"sqlite:///{tmp_path / 'verifier.db'}")
    assert isinstance(store, RacingStore)
    enroll(store, NODE, prover.ak_public)
    enroll(store, OTHER_NODE, SoftwareKey.generate(AK_ATTRIBUTES).public.raw)
    index = TrustIndex()
    rows, mark = store.trust_changes()
    index.load(entries_from_rows(rows), mark)
    clock = Clock()
    signing = SigningKey.generate()

    def secret(name: str, make: Callable[[], bytes]) -> bytes:
        return store.shared_secret(name, make, T0)

    gate = CredentialGate(
        store=store,
        index=index,
        ca=LocalCertificateAuthority.shared(secret, "Test node CA", T0),
        tokens=LocalTokenIssuer(
            lambda: "https://verifier.test",
            lambda: signing,
            lambda: jwks_document([signing.public_key]),
        ),
        config=CONFIG,
        nonce_key=secret(NONCE_SECRET, lambda: os.urandom(32)),
        node_of=store.get_node,
        clock=clock,
        crl_url=lambda: "https://verifier.test/ca/crl",
    )
    built = World(store, index, gate, clock, prover, signing, tmp_path)
    built.attest()
    yield built
    store.close()


def _refused_for(caught: pytest.ExceptionInfo[VerifierError]) -> None:
    """Every refusal names the node it refused."""
    assert caught.value.node_id == NODE


# --- check 1: the nonce -------------------------------------------------------------------


def test_a_challenge_for_an_unknown_node_is_refused(world: World) -> None:
    with pytest.raises(UnknownNode, match="no such node") as caught:
        world.gate.challenge("node-nobody-enrolled")
    assert caught.value.node_id == "node-nobody-enrolled"


def test_an_expired_credential_nonce_is_refused(world: World) -> None:
    certification, nonce = world.proof()
    world.clock.now = T0 + timedelta(seconds=CONFIG.challenge_ttl_seconds)
    with pytest.raises(
        CredentialProofInvalid, match=r"nonce expired at 2026-11-27T12:01:00"
    ) as caught:
        world.gate.issue_certificate(NODE, certification, nonce, world.tpm.csr(), ANY)
    _refused_for(caught)
    assert world.store.credentials_of(NODE) == []


def test_an_attestation_nonce_is_no_credential_nonce(world: World) -> None:
    """Domain separation: a nonce the attestation service issued (for a quote) is made
    under another key than the gate's, so a key certification over it, though signed
    by the node's own AK, buys no credential."""
    verifier = Verifier(
        world.store, VerifierConfig(state_dir=world.tmp_path), TrustStore(()), world.clock
    )
    attestation_nonce = verifier.challenge(NODE).nonce
    # A genuine, live nonce for this node, as the attestation service reads it.
    attestation_key = world.store.shared_secret(NONCE_KEY, lambda: os.urandom(32), T0)
    issued = read_nonce(attestation_key, attestation_nonce, NODE)
    assert issued is not None and issued.node_id == NODE and issued.expires_at > T0
    certification, _ = world.proof(attestation_nonce)
    with pytest.raises(CredentialProofInvalid, match="not issued to this node by Cred") as caught:
        world.gate.issue_certificate(NODE, certification, attestation_nonce, world.tpm.csr(), ANY)
    _refused_for(caught)
    with pytest.raises(CredentialProofInvalid, match="not issued to this node by Credentials"):
        world.gate.issue_token(NODE, certification, attestation_nonce, ["payments"], ANY)
    assert world.store.credentials_of(NODE) == []


def test_a_nonce_issued_to_another_node_is_refused(world: World) -> None:
    theirs, _ = world.gate.challenge(OTHER_NODE)
    certification, _ = world.proof(theirs)
    with pytest.raises(CredentialProofInvalid, match="not issued to this node") as caught:
        world.gate.issue_certificate(NODE, certification, theirs, world.tpm.csr(), ANY)
    _refused_for(caught)
    assert world.store.credentials_of(NODE) == []


def test_a_nonce_used_twice_is_refused_as_a_replay(world: World) -> None:
    certification, nonce = world.proof()
    world.gate.issue_certificate(NODE, certification, nonce, world.tpm.csr(), ANY)
    with pytest.raises(CredentialProofInvalid, match=r"used before \(a replay\)") as caught:
        world.gate.issue_certificate(NODE, certification, nonce, world.tpm.csr(), ANY)
    _refused_for(caught)
    # Spent for one kind of credential is spent for the other.
    with pytest.raises(CredentialProofInvalid, match="replay"):
        world.gate.issue_token(NODE, certification, nonce, ["payments"], ANY)
    assert len(world.store.credentials_of(NODE)) == 1


def test_a_bad_certification_does_not_burn_the_nonce(world: World) -> None:
    """Whoever saw a nonce go by cannot spend it for the node with a certification the
    AK did not make over it: the node's own request with that nonce still succeeds."""
    stale, _ = world.proof()  # a genuine certification, over an earlier nonce
    certification, nonce = world.proof()
    signature = bytearray(certification.certify_signature)
    signature[-1] ^= 0x01
    forged = replace(certification, certify_signature=bytes(signature))
    for bad, says in ((stale, "extraData"), (forged, "signature")):
        with pytest.raises(CredentialProofInvalid, match=says) as caught:
            world.gate.issue_certificate(NODE, bad, nonce, world.tpm.csr(), ANY)
        _refused_for(caught)
    issued = world.gate.issue_certificate(NODE, certification, nonce, world.tpm.csr(), ANY)
    assert [c.serial for c in world.store.credentials_of(NODE)] == [f"{issued.serial:x}"]


# --- check 3: the CSR ---------------------------------------------------------------------


def test_a_csr_for_another_key_than_the_certified_one_is_refused(world: World) -> None:
    """The TPM certified its bound key; the CSR asks for a key held in software."""
    certification, nonce = world.proof()
    elsewhere = csr_of(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CredentialProofInvalid, match="is not the certified key") as caught:
        world.gate.issue_certificate(NODE, certification, nonce, elsewhere, ANY)
    _refused_for(caught)
    assert world.store.credentials_of(NODE) == []


def test_a_wrong_csr_does_not_burn_the_nonce(world: World) -> None:
    """The CSR is checked before the nonce is spent: whoever sends a bad CSR with the
    node's certification cannot use up the node's nonce."""
    certification, nonce = world.proof()
    elsewhere = csr_of(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CredentialProofInvalid, match="is not the certified key"):
        world.gate.issue_certificate(NODE, certification, nonce, elsewhere, ANY)
    issued = world.gate.issue_certificate(NODE, certification, nonce, world.tpm.csr(), ANY)
    assert [c.serial for c in world.store.credentials_of(NODE)] == [f"{issued.serial:x}"]


# --- check 4: trust now -------------------------------------------------------------------


def test_a_warning_node_gets_no_credential_even_where_the_workload_allows_warning(
    world: World,
) -> None:
    world.attest(status="warning")
    entry = world.index.get(NODE)
    assert entry is not None and entry.state == "warning"
    lenient = replace(ANY, allow_warning=True)
    assert judge(NODE, entry, lenient, world.clock.now).allowed  # enough to run a workload
    with pytest.raises(CredentialRefused, match=r"not trusted for credentials .*warning") as caught:
        world.certificate(lenient)
    _refused_for(caught)
    with pytest.raises(CredentialRefused, match=r"not trusted for credentials .*warning"):
        world.token(lenient)
    assert world.store.credentials_of(NODE) == []


def test_a_trust_ending_too_soon_is_refused(world: World) -> None:
    trust_ends = T0 + TRUST
    world.clock.now = trust_ends - timedelta(seconds=CONFIG.min_credential_seconds - 1)
    with pytest.raises(CredentialRefused, match="too soon for a credential") as caught:
        world.certificate()
    _refused_for(caught)
    assert trust_ends.isoformat() in str(caught.value)
    with pytest.raises(CredentialRefused, match="too soon"):
        world.token()
    assert world.store.credentials_of(NODE) == []
    # Exactly the shortest credential left: issued, and it ends with the trust.
    world.clock.now = trust_ends - timedelta(seconds=CONFIG.min_credential_seconds)
    assert world.certificate().not_after == trust_ends


def test_an_expired_node_is_refused(world: World) -> None:
    world.clock.now = T0 + TRUST
    with pytest.raises(
        CredentialRefused, match=r"not trusted for credentials \(expired\)"
    ) as caught:
        world.certificate()
    _refused_for(caught)


# --- lifetimes ----------------------------------------------------------------------------


def test_a_certificate_never_outlives_the_nodes_trust(world: World) -> None:
    trust_ends = world.attest(trust=timedelta(minutes=2, microseconds=700_000))
    entry = world.index.get(NODE)
    assert entry is not None and entry.expires_at == trust_ends  # not a whole second
    issued = world.certificate()
    certificate = x509.load_der_x509_certificate(issued.der)
    assert issued.not_after <= trust_ends
    # X.509 times are whole seconds: not rounded up past the trust.
    assert certificate.not_valid_after_utc <= trust_ends
    assert certificate.not_valid_after_utc > trust_ends - timedelta(seconds=1)
    (recorded,) = world.store.credentials_of(NODE)
    assert recorded.not_after <= trust_ends


def test_a_certificate_never_outlives_its_configured_lifetime(world: World) -> None:
    world.attest(trust=timedelta(days=1))
    issued = world.certificate()
    lifetime = timedelta(seconds=CONFIG.certificate_lifetime_seconds)
    assert issued.not_after == T0 + lifetime
    certificate = x509.load_der_x509_certificate(issued.der)
    assert certificate.not_valid_after_utc == T0 + lifetime


def test_a_token_never_outlives_the_nodes_trust(world: World) -> None:
    trust_ends = world.attest(trust=timedelta(minutes=2, microseconds=700_000))
    issued = world.token(lifetime_seconds=CONFIG.token_lifetime_seconds)
    claims = world.claims(issued)
    assert issued.expires_at <= trust_ends
    assert isinstance(claims["exp"], int) and claims["exp"] <= trust_ends.timestamp()
    assert claims["sub"] == NODE


def test_a_token_never_outlives_its_configured_lifetime_whatever_is_asked(world: World) -> None:
    world.attest(trust=timedelta(days=1))
    limit = timedelta(seconds=CONFIG.token_lifetime_seconds)
    for asked, expected in ((0.0, limit), (10.0**6, limit), (120.0, timedelta(seconds=120))):
        issued = world.token(lifetime_seconds=asked)
        claims = world.claims(issued)
        assert issued.expires_at == T0 + expected, asked
        assert claims["exp"] == int((T0 + expected).timestamp()), asked
        assert claims["iat"] == int(T0.timestamp())


# --- revocation ---------------------------------------------------------------------------


def test_revoking_a_node_revokes_its_credentials_and_lists_its_certificate(
    world: World,
) -> None:
    certificate = world.certificate()
    token = world.token()
    assert certificate.serial not in world.crl_serials()
    world.revoke()
    assert world.gate.revoke_pending() == 1
    credentials = world.store.credentials_of(NODE)
    assert len(credentials) == 2
    for credential in credentials:
        assert credential.revoked_at == world.clock.now, credential.kind
        assert credential.revoked_reason is not None
        assert "the node was stolen" in credential.revoked_reason
    serials = world.crl_serials()
    assert certificate.serial in serials
    assert int(token.jti.replace("-", ""), 16) not in serials  # tokens simply run out
    with pytest.raises(CredentialRefused, match=r"\(revoked\)"):
        world.certificate()


def test_losing_trust_to_a_warning_revokes_the_certificate(world: World) -> None:
    issued = world.certificate()
    world.clock.now = T0 + timedelta(minutes=1)
    world.attest(status="warning")
    assert world.gate.revoke_pending() == 1
    assert issued.serial in world.crl_serials()
    (credential,) = world.store.credentials_of(NODE)
    assert credential.revoked_reason is not None and credential.revoked_reason.startswith("lost")


def test_trust_expiring_before_a_certificate_ends_revokes_it(world: World) -> None:
    """Trust was shortened after the certificate was issued (the node attested again
    under a shorter trust_seconds): when that trust expires, the certificate, which
    still runs, goes on the CRL."""
    issued = world.certificate()
    assert issued.not_after == T0 + TRUST
    world.clock.now = T0 + timedelta(minutes=1)
    trust_ends = world.attest(trust=timedelta(minutes=2))
    assert world.gate.revoke_pending() == 0  # still affirming: nothing to revoke
    world.clock.now = trust_ends
    (change,) = world.index.expire_due(world.clock.now)
    assert change.kind == "expired"
    assert world.gate.revoke_pending() == 1
    assert issued.serial in world.crl_serials()
    (credential,) = world.store.credentials_of(NODE)
    assert credential.revoked_reason is not None and "expired" in credential.revoked_reason


# --- check 5: trust lost while a credential is being issued ------------------------------


@pytest.mark.parametrize("window", ["before the record", "after the record"])
@pytest.mark.parametrize("kind", ["certificate", "token"])
def test_trust_revoked_while_issuing_refuses_and_revokes_the_credential(
    world: World, kind: str, window: Window
) -> None:
    """An operator revokes the node on another thread after the gate checked its trust.
    Before the record, the revocation worker even runs first and finds nothing to
    revoke: the gate's check after the record is what catches it."""

    def revoke_meanwhile() -> None:
        world.revoke()
        world.gate.revoke_pending()

    world.store.race = (window, revoke_meanwhile)
    with pytest.raises(CredentialRefused, match="trust was lost while the credential") as caught:
        world.certificate() if kind == "certificate" else world.token()
    _refused_for(caught)
    (credential,) = world.store.credentials_of(NODE)
    assert credential.kind == kind
    assert credential.revoked_at is not None
    assert world.store.nodes_with_live_credentials(world.clock.now) == []
    if kind == "certificate":
        assert int(credential.serial, 16) in world.crl_serials()


@pytest.mark.parametrize("window", ["before the record", "after the record"])
def test_trust_lost_to_a_failed_attestation_while_issuing_refuses(
    world: World, window: Window
) -> None:
    world.clock.now = T0 + timedelta(minutes=1)
    world.store.race = (window, lambda: world.attest(status="contraindicated"))
    with pytest.raises(CredentialRefused, match="trust was lost") as caught:
        world.certificate()
    _refused_for(caught)
    (credential,) = world.store.credentials_of(NODE)
    assert credential.revoked_at is not None
    assert int(credential.serial, 16) in world.crl_serials()


def test_location_lost_while_issuing_refuses(world: World) -> None:
    """Check 5 judges what check 4 did, location included: a node that re-attests from
    another place between the two gets nothing for a workload bound to the first."""
    eu = Requirements(workload="db", location={"region": frozenset({"eu-west"})})
    world.attest(location={"region": "eu-west"})
    kept = world.certificate(eu)  # trusted there
    world.store.race = ("before the record", lambda: world.attest(location={"region": "us-east"}))
    with pytest.raises(CredentialRefused, match="trust was lost") as caught:
        world.certificate(eu)
    _refused_for(caught)
    revoked = {c.serial: c.revoked_at is not None for c in world.store.credentials_of(NODE)}
    # only the credential the check refused: the node's others are the worker's to judge
    assert sorted(revoked.items(), key=lambda item: item[0] != f"{kept.serial:x}") == [
        (f"{kept.serial:x}", False),
        *((serial, True) for serial in revoked if serial != f"{kept.serial:x}"),
    ]
    assert len(revoked) == 2


def test_trust_running_out_while_issuing_refuses(world: World) -> None:
    """No event at all: the trust's expiry passes between the check and the record.
    The credential recorded ends with that trust, so it is dead, not merely revoked."""
    world.clock.now = T0 + TRUST - timedelta(seconds=30)

    def time_passes() -> None:
        world.clock.now = T0 + TRUST

    world.store.race = ("before the record", time_passes)
    with pytest.raises(CredentialRefused, match="trust was lost") as caught:
        world.certificate()
    _refused_for(caught)
    (credential,) = world.store.credentials_of(NODE)
    assert credential.not_after <= world.clock.now
    assert world.store.nodes_with_live_credentials(world.clock.now) == []

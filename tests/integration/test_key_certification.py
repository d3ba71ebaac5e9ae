"""A node proves its bound key lives in its TPM, on real swtpm: the agent's key
certifies, and every forgery is refused by `verify_key_certification` / `verify_csr`.

The attacker is root on a node: it reads the agent's state directory (the AK blobs) and
drives the node's TPM directly with raw commands (`Tpm.execute`, structures marshalled
by tpm2-pytss), so it can make the AK sign whatever the TPM lets it.  What the TPM refuses to
sign is shown refused by the TPM; what the attacker can send instead is shown refused
by the verifier, each test naming the check.

The TPM's own refusals asserted here are those of swtpm 0.7.1 / libtpms 0.9 (the TPM 2.0
reference code): TPM2_Certify of a public-only object loaded with TPM2_LoadExternal
fails with TPM_RC_AUTH_UNAVAILABLE, which older TPMs did not do; that is why the
verifier also requires TPM2_CertifyCreation, which fails for such an object with
TPM_RC_TICKET.  The verifier's refusal of what such an older TPM would have signed is
in tests/unit/verifier/evidence/test_certify.py (a software AK stands in for it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm2_pytss.constants import TPM2_RH, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPMT_PUBLIC,
    TPMT_TK_CREATION,
)

from attestor.agent import StateDir
from attestor.bound_key import (
    BOUND_KEY_FILE,
    BoundKey,
    csr_builder,
    load_or_create_bound_key,
    node_uri,
)
from attestor.tpm import AkBlobs, Tpm, TpmError
from attestor.tpm2.commands import CommandCode
from verifier.evidence.certify import (
    CertifiedKey,
    KeyCertification,
    verify_csr,
    verify_key_certification,
)
from verifier.evidence.errors import ChecksFailed, EvidenceError
from verifier.evidence.keys import AttestationKey, spki_der

pytestmark = pytest.mark.swtpm

SwtpmFactory = VerifierFactory = AgentFactory = Any

FIXED_TPM_CLAIMED = (
    TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)


@dataclass
class Node:
    """A node as its agent keeps it: TPM session, AK (the one enrolled) and bound key."""

    node_id: str
    tpm: Tpm
    ak: AkBlobs
    bound_key: BoundKey
    state_dir: Path

    @property
    def enrolled_ak(self) -> AttestationKey:
        """The AK as the verifier knows it from enrollment (its TPMT_PUBLIC)."""
        return AttestationKey.from_bytes(self.ak.tpmt_public)

    def certify(self, nonce: bytes) -> KeyCertification:
        return self.bound_key.certification(self.ak, nonce)

    def verify(self, certification: KeyCertification, nonce: bytes) -> CertifiedKey:
        """What the verifier does with a certification that says it is this node's."""
        return verify_key_certification(
            self.enrolled_ak, certification, nonce, node_id=self.node_id
        )


NodeFactory = Callable[..., Node]


@pytest.fixture
def make_node(make_swtpm: SwtpmFactory, tmp_path: Path) -> Iterator[NodeFactory]:
    """A node on a freshly manufactured swtpm, with its AK and bound key stored in its
    state directory as the agent stores them."""
    sessions: list[Tpm] = []

    def factory(node_id: str, ak_algorithm: str = "ecc") -> Node:
        simulator = make_swtpm(boot=None)
        tpm = Tpm(simulator.tcti)
        sessions.append(tpm)
        state = StateDir(tmp_path / "agents" / node_id)
        ak = tpm.create_ak(ak_algorithm)  # type: ignore[arg-type]
        state.save_ak(ak)
        bound_key = load_or_create_bound_key(tpm, state.path, node_id=node_id)
        return Node(node_id, tpm, ak, bound_key, state.path)

    yield factory
    for tpm in sessions:
        tpm.close()


def fresh_nonce() -> bytes:
    return os.urandom(32)


def refusal(action: Callable[[], object]) -> EvidenceError:
    with pytest.raises(EvidenceError) as caught:
        action()
    return caught.value


def checks(exc: EvidenceError) -> list[str]:
    if isinstance(exc, ChecksFailed):
        return sorted(f.check for f in exc.failures)
    return [exc.check]


# --- a genuine bound key -----------------------------------------------------------------


@pytest.mark.parametrize("ak_algorithm", ["ecc", "rsa"])
def test_bound_key_certifies_and_its_csr_verifies(make_node: NodeFactory, ak_algorithm) -> None:
    node = make_node("node-a", ak_algorithm)
    nonce = fresh_nonce()
    certified = node.verify(node.certify(nonce), nonce)

    assert certified.public.raw == node.bound_key.public_area
    request = verify_csr(node.bound_key.csr(node.node_id), certified, node_id=node.node_id)
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-a"
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [node_uri("node-a")]
    assert node_uri("node-a") == "urn:lightgate:node:node-a"


def test_bound_key_survives_an_agent_restart(make_node: NodeFactory) -> None:
    """The key is stored (mode 0600) and loaded again by a new session: same key, and
    it still certifies (the stored creation ticket still checks out)."""
    node = make_node("node-a")
    stored = node.state_dir / BOUND_KEY_FILE
    assert stored.stat().st_mode & 0o777 == 0o600
    node.tpm.close()

    with Tpm(node.tpm.tcti) as tpm:
        again = load_or_create_bound_key(tpm, node.state_dir, node_id=node.node_id)
        assert again.public_area == node.bound_key.public_area
        nonce = fresh_nonce()
        node.verify(again.certification(node.ak, nonce), nonce)


def test_unreadable_stored_key_is_replaced(make_node: NodeFactory) -> None:
    node = make_node("node-a")
    (node.state_dir / BOUND_KEY_FILE).write_text("{not json")
    replaced = load_or_create_bound_key(node.tpm, node.state_dir, node_id=node.node_id)
    assert replaced.public_area != node.bound_key.public_area
    nonce = fresh_nonce()
    node.verify(replaced.certification(node.ak, nonce), nonce)


# --- (a) a key from another TPM ----------------------------------------------------------


def test_key_of_another_tpm_refused(make_node: NodeFactory) -> None:
    """TPM B made and certified its key with its AK; presented as node A's, the
    signatures do not verify under A's AK."""
    node_a, tpm_b = make_node("node-a"), make_node("tpm-b")
    nonce = fresh_nonce()
    forged = tpm_b.certify(nonce)
    exc = refusal(lambda: node_a.verify(forged, nonce))
    assert checks(exc) == ["key-attestation-signature"]
    assert "TPM2_Certify attestation" in exc.reason
    assert "TPM2_CertifyCreation attestation" in exc.reason


def test_public_area_of_another_tpms_key_refused(make_node: NodeFactory) -> None:
    """Node A's genuine certification, with TPM B's key's public area swapped in."""
    node_a, tpm_b = make_node("node-a"), make_node("tpm-b")
    nonce = fresh_nonce()
    forged = dataclasses.replace(node_a.certify(nonce), public_area=tpm_b.bound_key.public_area)
    exc = refusal(lambda: node_a.verify(forged, nonce))
    assert checks(exc) == ["certified-name", "creation-name"]


def test_key_of_another_tpm_cannot_be_loaded_here(make_node: NodeFactory) -> None:
    """TPM B's key blobs, copied to node A: wrapped by B's EK, A's TPM refuses them."""
    node_a, tpm_b = make_node("node-a"), make_node("tpm-b")
    with pytest.raises(TpmError, match="loading the bound key under this TPM's EK failed"):
        node_a.tpm.certify_bound_key(node_a.ak, tpm_b.bound_key.blobs, fresh_nonce())


# --- (b) a software key ------------------------------------------------------------------


def software_public(key: ec.EllipticCurvePrivateKey, attributes: int) -> Any:
    """A TPMT_PUBLIC for a software P-256 key, claiming whatever `attributes` say."""
    public = TPMT_PUBLIC.parse(
        alg="ecc256:ecdsa-sha256:null", objectAttributes=attributes, nameAlg="sha256"
    )
    point = key.public_key().public_numbers()
    public.unique.ecc.x = point.x.to_bytes(32, "big")
    public.unique.ecc.y = point.y.to_bytes(32, "big")
    return public


@contextmanager
def loaded_external(node: Node, public: Any, private_key: Any = None) -> Iterator[Any]:
    """TPM2_LoadExternal into the node's TPM (NULL hierarchy), next to the AK."""
    node.tpm.forget_handles()  # EK + AK + this object fill swtpm's three object slots
    ak_handle = node.tpm._load_ak(node.ak)
    sensitive = b"\x00\x00"
    if private_key is not None:
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        sensitive = TPM2B_SENSITIVE.from_pem(pem).marshal()
    parameters = (
        sensitive + TPM2B_PUBLIC(publicArea=public).marshal() + int(TPM2_RH.NULL).to_bytes(4, "big")
    )
    response = node.tpm.execute(CommandCode.LoadExternal, (), parameters, returns_handle=True)
    handle = response.handles[0]
    try:
        yield ak_handle, handle
    finally:
        node.tpm.execute(CommandCode.FlushContext, (), handle.to_bytes(4, "big"))


# inScheme NULL: the AK signs with its own scheme, as TPM2_Certify allows (Part 3, 18.2).
def attacker_certify(node: Node, ak_handle: int, handle: int, nonce: bytes) -> tuple[bytes, bytes]:
    """TPM2_Certify of `handle` by the node's AK, as the attacker runs it."""
    return node.tpm.certify(handle, ak_handle, nonce)


def attacker_certify_creation(
    node: Node, ak_handle: int, handle: int, nonce: bytes, creation_hash: bytes, ticket: bytes
) -> None:
    node.tpm.certify_creation(ak_handle, handle, nonce, creation_hash, ticket)


def genuine_ticket(node: Node) -> tuple[bytes, bytes]:
    """The creation hash and ticket TPM2_Create returned for the node's genuine key."""
    blobs = node.bound_key.blobs
    return blobs.creation_hash[2:], blobs.creation_ticket


NULL_TICKET = TPMT_TK_CREATION(tag=TPM2_ST.CREATION, hierarchy=TPM2_RH.NULL).marshal()


def test_software_key_loaded_public_only_gets_no_certification(make_node: NodeFactory) -> None:
    """A software key's public area, claiming fixedTPM, fixedParent and
    sensitiveDataOrigin, loads with TPM2_LoadExternal.  This TPM refuses to certify it
    (no authorization for a public-only object), and refuses TPM2_CertifyCreation for
    it with the genuine key's ticket and with a NULL ticket: no ticket exists for it."""
    node = make_node("node-a")
    nonce = fresh_nonce()
    public = software_public(ec.generate_private_key(ec.SECP256R1()), FIXED_TPM_CLAIMED)
    with loaded_external(node, public) as (ak_handle, handle):
        with pytest.raises(TpmError, match="TPM_RC_AUTH_UNAVAILABLE"):
            attacker_certify(node, ak_handle, handle, nonce)
        creation_hash, ticket = genuine_ticket(node)
        for attempt in (ticket, NULL_TICKET):
            with pytest.raises(TpmError, match="TPM_RC_TICKET"):
                attacker_certify_creation(node, ak_handle, handle, nonce, creation_hash, attempt)


def test_software_key_loaded_with_private_cannot_claim_fixed_tpm(make_node: NodeFactory) -> None:
    """Loaded with its private part, a key may not claim fixedTPM or fixedParent."""
    node = make_node("node-a")
    key = ec.generate_private_key(ec.SECP256R1())
    with (
        pytest.raises(TpmError, match="TPM_RC_ATTRIBUTES"),
        loaded_external(node, software_public(key, FIXED_TPM_CLAIMED), key),
    ):
        pass


def test_software_key_certified_by_the_ak_refused(make_node: NodeFactory) -> None:
    """Loaded with its private part (fixedTPM and fixedParent clear, sensitiveDataOrigin
    claimed, which the TPM accepts), a software key is certified by the node's real AK.
    CertifyCreation is refused by the TPM; whatever the attacker sends instead is
    refused by the verifier."""
    node = make_node("node-a")
    nonce = fresh_nonce()
    genuine = node.certify(nonce)
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = FIXED_TPM_CLAIMED & ~(TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT)
    public = software_public(key, attributes)
    with loaded_external(node, public, key) as (ak_handle, handle):
        certify_info, certify_signature = attacker_certify(node, ak_handle, handle, nonce)
        creation_hash, ticket = genuine_ticket(node)
        with pytest.raises(TpmError, match="TPM_RC_TICKET"):
            attacker_certify_creation(node, ak_handle, handle, nonce, creation_hash, ticket)

    certified_only = KeyCertification(
        public.marshal(), certify_info, certify_signature, b"", b"", b""
    )
    exc = refusal(lambda: node.verify(certified_only, nonce))
    assert checks(exc) == ["key-creation-missing"]

    with_genuine_creation = dataclasses.replace(
        certified_only,
        creation_data=genuine.creation_data,
        creation_info=genuine.creation_info,
        creation_signature=genuine.creation_signature,
    )
    exc = refusal(lambda: node.verify(with_genuine_creation, nonce))
    assert checks(exc) == ["creation-name", "key-attributes"]
    assert "missing fixed_tpm,fixed_parent" in exc.reason


def test_software_public_area_with_genuine_certification_refused(make_node: NodeFactory) -> None:
    """What a TPM that certified public-only objects would let through TPM2_Certify,
    here approximated by the genuine key's attestations beside the software key's
    public area (claiming fixedTPM): the names give it away."""
    node = make_node("node-a")
    nonce = fresh_nonce()
    public = software_public(ec.generate_private_key(ec.SECP256R1()), FIXED_TPM_CLAIMED)
    forged = dataclasses.replace(node.certify(nonce), public_area=public.marshal())
    exc = refusal(lambda: node.verify(forged, nonce))
    assert checks(exc) == ["certified-name", "creation-name"]


def test_csr_of_a_software_key_refused(make_node: NodeFactory) -> None:
    """The certification is of the genuine TPM key; the CSR names the node but carries
    (and is signed by) a software key the attacker holds."""
    node = make_node("node-a")
    nonce = fresh_nonce()
    certified = node.verify(node.certify(nonce), nonce)
    software = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.node_id)]))
        .sign(software, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    exc = refusal(lambda: verify_csr(request, certified, node_id=node.node_id))
    assert checks(exc) == ["csr-key"]
    assert spki_der(certified.public_key) != spki_der(software.public_key())


# --- (c) another enrolled node's certification ---------------------------------------------


def test_certification_by_another_enrolled_node_refused(
    make_swtpm: SwtpmFactory, make_verifier: VerifierFactory, make_agent: AgentFactory
) -> None:
    """Two nodes enroll with the verifier (EK certificates, ActivateCredential).  Node
    B's genuine certification of its own bound key, submitted as node A's, is checked
    against the AK the verifier enrolled for node A and refused."""
    handle = make_verifier()
    agent_a = make_agent(make_swtpm(), handle, node_id="node-a")
    agent_b = make_agent(make_swtpm(), handle, node_id="node-b")
    agent_a.enroll()
    agent_b.enroll()
    record_a = handle.running.store.get_node("node-a")
    assert record_a is not None and record_a.ak_public is not None
    enrolled_ak_a = AttestationKey.from_bytes(record_a.ak_public)

    key_b = load_or_create_bound_key(agent_b.tpm, agent_b.state_dir.path, node_id="node-b")
    nonce = fresh_nonce()  # issued to node A; node B answers it
    forged = key_b.certification(agent_b.ak, nonce)
    exc = refusal(lambda: verify_key_certification(enrolled_ak_a, forged, nonce, node_id="node-a"))
    assert checks(exc) == ["key-attestation-signature"]
    assert exc.node_id == "node-a"

    # The same certification verifies for node B, whose AK made it.
    record_b = handle.running.store.get_node("node-b")
    assert record_b is not None and record_b.ak_public is not None
    verify_key_certification(
        AttestationKey.from_bytes(record_b.ak_public), forged, nonce, node_id="node-b"
    )


# --- (d) replay -----------------------------------------------------------------------------


def test_replayed_certification_refused(make_node: NodeFactory) -> None:
    """A certification the verifier accepted for an earlier nonce, sent again."""
    node = make_node("node-a")
    first_nonce = fresh_nonce()
    old = node.certify(first_nonce)
    node.verify(old, first_nonce)
    exc = refusal(lambda: node.verify(old, fresh_nonce()))
    assert checks(exc) == ["key-attestation-nonce"]
    assert first_nonce.hex() in exc.reason


# --- (e) tampered bytes ---------------------------------------------------------------------


TAMPERED = [
    # field, byte (negative: from the end), bits flipped, the checks that refuse it
    ("public_area", -1, 0x01, ["certified-name", "creation-name"]),  # the key's y coordinate
    # objectAttributes' low byte: fixedTPM cleared, as if the key could be exported
    ("public_area", 7, 0x02, ["certified-name", "creation-name", "key-attributes"]),
    ("certify_info", -1, 0x01, ["key-attestation-signature"]),  # the qualified name
    ("certify_signature", -1, 0x01, ["key-attestation-signature"]),
    ("creation_data", -10, 0x01, ["creation-hash"]),  # the parent's qualified name
    ("creation_info", -1, 0x01, ["key-attestation-signature"]),  # creationHash
    ("creation_signature", -1, 0x01, ["key-attestation-signature"]),
]


@pytest.mark.parametrize(("field", "index", "bits", "refused_by"), TAMPERED)
def test_tampered_certification_refused(
    make_node: NodeFactory, field: str, index: int, bits: int, refused_by: list[str]
) -> None:
    node = make_node("node-a")
    nonce = fresh_nonce()
    genuine = node.certify(nonce)
    tampered = bytearray(getattr(genuine, field))
    tampered[index] ^= bits
    forged = dataclasses.replace(genuine, **{field: bytes(tampered)})
    exc = refusal(lambda: node.verify(forged, nonce))
    assert checks(exc) == refused_by


# --- the CSR's names -------------------------------------------------------------------------


def test_node_ids_outside_a_common_name_are_refused_by_the_agent() -> None:
    with pytest.raises(ValueError, match="common name"):
        csr_builder("n" * 65)
    with pytest.raises(ValueError, match="common name"):
        csr_builder("")
    assert node_uri("rack 7/node") == "urn:lightgate:node:rack%207%2Fnode"

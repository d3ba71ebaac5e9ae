"""The hand-written PKCS#10 request, read back by pyca/cryptography as the reference."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from attestor.bound_key import csr_builder, node_uri
from attestor.csr import build_csr, integer, oid, p256_subject_public_key_info
from verifier.evidence.tpm_public import EccCurve, PublicArea, SymDef
from verifier.evidence.tpm_structures import Alg


def tpm_public(key: ec.EllipticCurvePrivateKey) -> PublicArea:
    numbers = key.public_key().public_numbers()
    return PublicArea(
        b"", Alg.ECC, Alg.SHA256, 0x00040072, b"", SymDef(Alg.NULL), Alg.ECDSA, Alg.SHA256,
        curve=EccCurve.NIST_P256, kdf=Alg.NULL,
        x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"),
    )  # fmt: skip


def software_signer(key: ec.EllipticCurvePrivateKey):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    def sign(digest: bytes) -> tuple[bytes, bytes]:
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        return r.to_bytes(32, "big"), s.to_bytes(32, "big")

    return sign


@pytest.mark.parametrize("node_id", ["node-a", "n" * 64, "rack7:bay@site-1", "nœud"])
def test_request_reads_back_as_csr_builder_would_write_it(node_id: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = build_csr(node_id, node_uri(node_id), tpm_public(key), software_signer(key))
    request = x509.load_der_x509_csr(der)
    assert request.is_signature_valid
    assert request.signature_hash_algorithm is not None
    assert request.signature_hash_algorithm.name == "sha256"
    reference = csr_builder(node_id).sign(key, hashes.SHA256())
    assert request.subject == reference.subject
    assert [(e.oid, e.critical, e.value) for e in request.extensions] == [
        (e.oid, e.critical, e.value) for e in reference.extensions
    ]
    assert request.public_key() == key.public_key()
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node_id
    # The request is DER: cryptography writes it back byte for byte.
    assert request.public_bytes(serialization.Encoding.DER) == der


def test_a_signature_over_other_bytes_does_not_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sign = software_signer(key)
    der = build_csr("node-a", node_uri("node-a"), tpm_public(key), lambda _: sign(b"\x00" * 32))
    assert not x509.load_der_x509_csr(der).is_signature_valid


def test_only_p256_keys() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = tpm_public(key).__class__(**{**tpm_public(key).__dict__, "curve": EccCurve.NIST_P384})
    with pytest.raises(ValueError, match="P-256"):
        p256_subject_public_key_info(other)


@given(st.integers(0, 2**600))
def test_integers_are_minimal_der(value: int) -> None:
    encoded = integer(value.to_bytes(80, "big"))
    body = encoded[2:] if encoded[1] < 0x80 else encoded[2 + (encoded[1] & 0x7F) :]
    assert int.from_bytes(body, "big", signed=True) == value
    assert len(body) == 1 or not (body[0] == 0 and body[1] < 0x80)


def test_object_identifiers() -> None:
    assert oid("1.2.840.10045.4.3.2") == bytes.fromhex("06082a8648ce3d040302")
    assert oid("2.5.29.17") == bytes.fromhex("0603551d11")

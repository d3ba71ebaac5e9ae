"""verify_key_certification and verify_csr: one named test per reason to refuse.

Most certifications here are synthesized: a software "TPM" (an ECDSA-SHA256 P-256 AK
held in software) marshals TPMS_ATTEST, TPMS_CREATION_DATA and TPMT_SIGNATURE as TPM
2.0 Part 2 lays them out, so every check can be reached behind a valid signature (a
real restricted AK never signs a wrong magic, a wrong name or a software key's
certification; that is what the checks rely on).  A software AK also stands in for a
TPM that certifies a public-only object loaded with TPM2_LoadExternal, the attack
TPM2_CertifyCreation defeats.  The last tests record a genuine certification from a
fresh swtpm at test time (skipped without swtpm) and fuzz its bytes.

Every refusal asserts the error's `check`, the node, and what the message names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from verifier.evidence.certify import (
    ATTEST_CREATION,
    KEY_FORBIDDEN,
    KEY_REQUIRED,
    CertifiedKey,
    KeyCertification,
    parse_creation_data,
    verify_csr,
    verify_key_certification,
)
from verifier.evidence.errors import ChecksFailed, EvidenceError, KeyCertificationMalformed
from verifier.evidence.keys import AttestationKey, spki_der
from verifier.evidence.tpm_public import (
    EccCurve,
    ObjectAttributes,
    PublicArea,
    SymDef,
    marshal_public,
    parse_public,
)
from verifier.evidence.tpm_structures import (
    TPM_GENERATED_VALUE,
    Alg,
    Attest,
    AttestType,
    ClockInfo,
    HashAlg,
    Signature,
    marshal_attest,
    marshal_signature,
    tpm2b,
)

NODE = "node-a"
NONCE = hashlib.sha256(b"lightgate key certification nonce").digest()
OLD_NONCE = hashlib.sha256(b"lightgate key certification nonce, an earlier one").digest()
AK_ATTRIBUTES = (
    ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
    | ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.USER_WITH_AUTH
)
BOUND_KEY_ATTRIBUTES = KEY_REQUIRED | ObjectAttributes.USER_WITH_AUTH
FIELDS = [f.name for f in dataclasses.fields(KeyCertification)]
CREATION_FIELDS = ("creation_data", "creation_info", "creation_signature")


# --- a software TPM ------------------------------------------------------------------


def ecc_public(
    key: ec.EllipticCurvePrivateKey,
    attributes: int,
    *,
    scheme: int = Alg.ECDSA,
    scheme_hash: int = HashAlg.SHA256,
    name_alg: int = HashAlg.SHA256,
    curve: int = EccCurve.NIST_P256,
) -> PublicArea:
    size = (key.curve.key_size + 7) // 8
    point = key.public_key().public_numbers()
    template = PublicArea(
        raw=b"", type=Alg.ECC, name_alg=name_alg, object_attributes=int(attributes),
        auth_policy=b"", symmetric=SymDef(Alg.NULL), scheme=scheme,
        scheme_hash=scheme_hash if scheme != Alg.NULL else 0, curve=curve, kdf=Alg.NULL,
        x=point.x.to_bytes(size, "big"), y=point.y.to_bytes(size, "big"),
    )  # fmt: skip
    return parse_public(marshal_public(template))


def rsa_public(key: rsa.RSAPrivateKey, attributes: int) -> PublicArea:
    template = PublicArea(
        raw=b"", type=Alg.RSA, name_alg=HashAlg.SHA256, object_attributes=int(attributes),
        auth_policy=b"", symmetric=SymDef(Alg.NULL), scheme=Alg.RSASSA,
        scheme_hash=HashAlg.SHA256, key_bits=key.key_size, exponent=65537,
        modulus=key.public_key().public_numbers().n.to_bytes(key.key_size // 8, "big"),
    )  # fmt: skip
    return parse_public(marshal_public(template))


@dataclass(frozen=True)
class SoftwareKey:
    """A P-256 key held in software with a TPMT_PUBLIC: an AK or a key to certify."""

    private_key: ec.EllipticCurvePrivateKey
    public: PublicArea

    @classmethod
    def generate(cls, attributes: int = BOUND_KEY_ATTRIBUTES, **public: int) -> SoftwareKey:
        private_key = ec.generate_private_key(ec.SECP256R1())
        return cls(private_key, ecc_public(private_key, attributes, **public))

    @property
    def ak(self) -> AttestationKey:
        return AttestationKey.from_public(self.public)

    def sign(self, message: bytes, digest: type[hashes.HashAlgorithm] = hashes.SHA256) -> bytes:
        der = self.private_key.sign(message, ec.ECDSA(digest()))
        r, s = decode_dss_signature(der)
        hash_alg = {hashes.SHA256: HashAlg.SHA256, hashes.SHA384: HashAlg.SHA384}[digest]
        signature = Signature(
            Alg.ECDSA, hash_alg, ecdsa_r=r.to_bytes(32, "big"), ecdsa_s=s.to_bytes(32, "big")
        )
        return marshal_signature(signature)


#: The software TPM's clock: 123 s since its third reset.
CLOCK = ClockInfo(123456, 3, 0, True)


def attestation(
    signer: SoftwareKey,
    attest_type: int,
    nonce: bytes,
    attested: bytes,
    magic: int,
    clock: ClockInfo = CLOCK,
) -> bytes:
    """A TPMS_ATTEST: marshal_attest writes the header, `attested` follows it."""
    header = Attest(
        raw=b"", magic=magic, type=attest_type, qualified_signer=signer.public.name,
        extra_data=nonce, clock_info=clock, firmware_version=0x20191023,
    )  # fmt: skip
    return marshal_attest(header) + attested


PARENT_NAME = b"\x00\x0b" + hashlib.sha256(b"the EK's public area").digest()


def creation_data_of(parent_name: bytes = PARENT_NAME, locality: int = 1) -> bytes:
    """TPMS_CREATION_DATA as TPM2_Create returns it with no creation PCRs."""
    return (
        struct.pack(">I", 0)  # pcrSelect: no banks
        + tpm2b(hashlib.sha256(b"").digest())  # pcrDigest of no PCRs
        + struct.pack(">BH", locality, HashAlg.SHA256)
        + tpm2b(parent_name)
        + tpm2b(parent_name)  # parentQualifiedName: the EK is a primary
        + tpm2b(b"")  # outsideInfo
    )


def certify(
    ak: SoftwareKey,
    key: PublicArea,
    nonce: bytes = NONCE,
    *,
    certify_nonce: bytes | None = None,
    creation_nonce: bytes | None = None,
    certify_magic: int = TPM_GENERATED_VALUE,
    creation_magic: int = TPM_GENERATED_VALUE,
    certify_type: int = AttestType.CERTIFY,
    creation_type: int = ATTEST_CREATION,
    certified_name: bytes | None = None,
    created_name: bytes | None = None,
    creation_data: bytes | None = None,
    creation_hash: bytes | None = None,
    clock: ClockInfo = CLOCK,
) -> KeyCertification:
    """What the TPM holding `ak` returns for TPM2_Certify and TPM2_CertifyCreation of
    `key` (which it created), with any part replaced."""
    data = creation_data if creation_data is not None else creation_data_of()
    name = key.name
    certify_info = attestation(
        ak, certify_type, certify_nonce if certify_nonce is not None else nonce,
        tpm2b(certified_name if certified_name is not None else name) + tpm2b(name),
        certify_magic, clock,
    )  # fmt: skip
    creation_info = attestation(
        ak, creation_type, creation_nonce if creation_nonce is not None else nonce,
        tpm2b(created_name if created_name is not None else name)
        + tpm2b(creation_hash if creation_hash is not None else hashlib.sha256(data).digest()),
        creation_magic, clock,
    )  # fmt: skip
    return KeyCertification(
        public_area=key.raw,
        certify_info=certify_info,
        certify_signature=ak.sign(certify_info),
        creation_data=data,
        creation_info=creation_info,
        creation_signature=ak.sign(creation_info),
    )


def verify(ak: SoftwareKey, certification: KeyCertification, nonce: bytes = NONCE) -> CertifiedKey:
    return verify_key_certification(ak.ak, certification, nonce, node_id=NODE)


def refused(
    ak: SoftwareKey, certification: KeyCertification, check: str, *fragments: str,
    nonce: bytes = NONCE,
) -> EvidenceError:  # fmt: skip
    with pytest.raises(EvidenceError) as caught:
        verify(ak, certification, nonce)
    assert_refusal(caught.value, check, *fragments)
    return caught.value


def assert_refusal(exc: EvidenceError, check: str, *fragments: str) -> None:
    assert exc.check == check, exc.reason
    assert exc.node_id == NODE
    assert f"(node {NODE})" in exc.reason
    for fragment in fragments:
        assert fragment in str(exc), f"{fragment!r} not in {str(exc)!r}"


def checks_of(exc: EvidenceError) -> list[str]:
    assert isinstance(exc, ChecksFailed), exc.reason
    return sorted(f.check for f in exc.failures)


@pytest.fixture(scope="module")
def ak() -> SoftwareKey:
    return SoftwareKey.generate(AK_ATTRIBUTES)


@pytest.fixture(scope="module")
def other_ak() -> SoftwareKey:
    """Another node's AK (another TPM)."""
    return SoftwareKey.generate(AK_ATTRIBUTES)


@pytest.fixture(scope="module")
def key() -> SoftwareKey:
    """The bound key: the software TPM made it (sensitiveDataOrigin is true here)."""
    return SoftwareKey.generate()


@pytest.fixture(scope="module")
def genuine(ak: SoftwareKey, key: SoftwareKey) -> KeyCertification:
    return certify(ak, key.public)


# --- a genuine certification verifies -----------------------------------------------


def test_genuine_certification_verifies(ak, key, genuine) -> None:
    certified = verify(ak, genuine)
    assert certified.public == key.public
    assert certified.name == b"\x00\x0b" + hashlib.sha256(key.public.raw).digest()
    assert spki_der(certified.public_key) == spki_der(key.private_key.public_key())


def test_rsa_2048_key_verifies(ak) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    public = rsa_public(rsa_key, BOUND_KEY_ATTRIBUTES)
    certified = verify(ak, certify(ak, public))
    assert spki_der(certified.public_key) == spki_der(rsa_key.public_key())


def test_scheme_null_key_verifies(ak) -> None:
    """An unrestricted key may leave the scheme to each TPM2_Sign."""
    public = SoftwareKey.generate(scheme=Alg.NULL).public
    verify(ak, certify(ak, public))


def test_creation_data_parses() -> None:
    data = parse_creation_data(creation_data_of(locality=3))
    assert (data.locality, data.parent_name, data.outside_info) == (3, PARENT_NAME, b"")
    assert data.pcr_selection.banks == ()


# --- signatures ----------------------------------------------------------------------


def test_certification_by_another_ak_refused(ak, other_ak, key) -> None:
    """Another TPM certified (and made) this key: its AK is not this node's."""
    forged = certify(other_ak, key.public)
    refused(
        ak, forged, "key-attestation-signature",
        "TPM2_Certify attestation: signature does not verify under the AK",
        "TPM2_CertifyCreation attestation: signature does not verify under the AK",
    )  # fmt: skip


def test_creation_by_another_ak_refused(ak, other_ak, key, genuine) -> None:
    """This TPM has the key loaded, but the creation attestation is another TPM's."""
    other = certify(other_ak, key.public)
    mixed = dataclasses.replace(
        genuine, creation_info=other.creation_info, creation_signature=other.creation_signature
    )
    exc = refused(ak, mixed, "key-attestation-signature", "TPM2_CertifyCreation attestation")
    assert "TPM2_Certify attestation" not in str(exc)


def test_signature_with_another_hash_than_the_aks_refused(ak, key, genuine) -> None:
    resigned = dataclasses.replace(
        genuine, certify_signature=ak.sign(genuine.certify_info, hashes.SHA384)
    )
    refused(ak, resigned, "key-attestation-signature", "is not the AK's")


def test_signatures_swapped_refused(ak, genuine) -> None:
    swapped = dataclasses.replace(
        genuine,
        certify_signature=genuine.creation_signature,
        creation_signature=genuine.certify_signature,
    )
    refused(ak, swapped, "key-attestation-signature")


# --- magic, type, nonce ---------------------------------------------------------------


def test_certify_magic_refused(ak, key) -> None:
    refused(
        ak, certify(ak, key.public, certify_magic=0x00544347), "key-attestation-magic",
        "TPM2_Certify attestation: magic 0x00544347", "expected 0xff544347",
    )  # fmt: skip


def test_creation_magic_refused(ak, key) -> None:
    refused(
        ak, certify(ak, key.public, creation_magic=0), "key-attestation-magic",
        "TPM2_CertifyCreation attestation: magic 0x00000000",
    )  # fmt: skip


def test_creation_attestation_as_certify_refused(ak, genuine) -> None:
    """A TPM_ST_ATTEST_CREATION in the TPM2_Certify slot proves nothing is loaded."""
    forged = dataclasses.replace(
        genuine, certify_info=genuine.creation_info, certify_signature=genuine.creation_signature
    )
    refused(ak, forged, "key-attestation-type", "TPM2_Certify attestation: type 0x801a",
            "expected 0x8017")  # fmt: skip


def test_certify_attestation_as_creation_refused(ak, genuine) -> None:
    """A TPM_ST_ATTEST_CERTIFY in the TPM2_CertifyCreation slot proves no creation."""
    forged = dataclasses.replace(
        genuine, creation_info=genuine.certify_info, creation_signature=genuine.certify_signature
    )
    refused(ak, forged, "key-attestation-type",
            "TPM2_CertifyCreation attestation: type 0x8017", "expected 0x801a")  # fmt: skip


def test_attestations_swapped_refused(ak, genuine) -> None:
    swapped = KeyCertification(
        genuine.public_area, genuine.creation_info, genuine.creation_signature,
        genuine.creation_data, genuine.certify_info, genuine.certify_signature,
    )  # fmt: skip
    with pytest.raises(ChecksFailed) as caught:
        verify(ak, swapped)
    assert checks_of(caught.value) == ["key-attestation-type", "key-attestation-type"]


def test_replayed_certification_refused(ak, key) -> None:
    """A certification made for an earlier nonce, sent again for this one."""
    old = certify(ak, key.public, OLD_NONCE)
    refused(
        ak, old, "key-attestation-nonce",
        f"TPM2_Certify attestation: extraData {OLD_NONCE.hex()}, expected {NONCE.hex()}",
        f"TPM2_CertifyCreation attestation: extraData {OLD_NONCE.hex()}",
    )  # fmt: skip


def test_stale_creation_attestation_refused(ak, key) -> None:
    stale = certify(ak, key.public, creation_nonce=OLD_NONCE)
    exc = refused(ak, stale, "key-attestation-nonce", "TPM2_CertifyCreation attestation")
    assert "TPM2_Certify attestation" not in str(exc)


def test_no_nonce_issued_refused(ak, key) -> None:
    """With an empty nonce, an attestation with empty extraData would match: refused."""
    refused(ak, certify(ak, key.public, b""), "key-attestation-nonce", "no nonce", nonce=b"")


# --- names and creation ------------------------------------------------------------------


def test_public_area_of_another_key_refused(ak, key, genuine) -> None:
    """The TPM certified the genuine key; a software key's public area is presented."""
    software = SoftwareKey.generate()
    forged = dataclasses.replace(genuine, public_area=software.public.raw)
    with pytest.raises(ChecksFailed) as caught:
        verify(ak, forged)
    assert checks_of(caught.value) == ["certified-name", "creation-name"]
    assert f"TPM2_Certify attested name {key.public.name.hex()}" in str(caught.value)
    assert f"has name {software.public.name.hex()}" in str(caught.value)


def test_certified_name_of_another_object_refused(ak, key) -> None:
    other = SoftwareKey.generate().public.name
    refused(ak, certify(ak, key.public, certified_name=other), "certified-name",
            f"attested name {other.hex()}", f"has name {key.public.name.hex()}")  # fmt: skip


def test_creation_of_another_key_refused(ak, key) -> None:
    other = SoftwareKey.generate().public.name
    refused(ak, certify(ak, key.public, created_name=other), "creation-name",
            f"attested the creation of {other.hex()}")  # fmt: skip


def test_creation_data_not_the_attested_one_refused(ak, key, genuine) -> None:
    """Creation data of another parent (or altered) does not hash to creationHash."""
    other = creation_data_of(parent_name=b"\x00\x0b" + bytes(32))
    forged = dataclasses.replace(genuine, creation_data=other)
    refused(ak, forged, "creation-hash", f"hashes to {hashlib.sha256(other).hexdigest()}",
            f"creationHash {hashlib.sha256(creation_data_of()).hexdigest()}")  # fmt: skip


@pytest.mark.parametrize("missing", CREATION_FIELDS)
def test_creation_missing_refused(ak, genuine, missing) -> None:
    refused(ak, dataclasses.replace(genuine, **{missing: b""}), "key-creation-missing", missing)


# --- the LoadExternal attack, on a TPM that would certify a public-only object ---------


@pytest.fixture(scope="module")
def software_key_claiming_tpm() -> SoftwareKey:
    """A key made in software whose public area claims fixedTPM, fixedParent and
    sensitiveDataOrigin, as TPM2_LoadExternal loads it without checking."""
    return SoftwareKey.generate(BOUND_KEY_ATTRIBUTES)


def test_load_external_without_creation_refused(ak, software_key_claiming_tpm) -> None:
    certified_only = certify(ak, software_key_claiming_tpm.public)
    forged = dataclasses.replace(
        certified_only, creation_data=b"", creation_info=b"", creation_signature=b""
    )
    refused(ak, forged, "key-creation-missing", "TPM2_LoadExternal")


def test_load_external_with_genuine_keys_creation_refused(
    ak, software_key_claiming_tpm, genuine
) -> None:
    """TPM2_Certify of the software key, beside the creation attestation of the genuine
    TPM key (all the attacker can get: no ticket exists for a loaded external key)."""
    certified_only = certify(ak, software_key_claiming_tpm.public)
    forged = dataclasses.replace(
        certified_only,
        creation_data=genuine.creation_data,
        creation_info=genuine.creation_info,
        creation_signature=genuine.creation_signature,
    )
    refused(ak, forged, "creation-name", software_key_claiming_tpm.public.name.hex())


# --- the key itself --------------------------------------------------------------------


@pytest.mark.parametrize("flag", list(KEY_REQUIRED), ids=lambda f: f.name.lower())
def test_required_attribute_clear_refused(ak, flag) -> None:
    public = SoftwareKey.generate(BOUND_KEY_ATTRIBUTES & ~flag).public
    refused(ak, certify(ak, public), "key-attributes", f"missing {flag.name.lower()}")


@pytest.mark.parametrize("flag", list(KEY_FORBIDDEN), ids=lambda f: f.name.lower())
def test_forbidden_attribute_set_refused(ak, flag) -> None:
    public = SoftwareKey.generate(BOUND_KEY_ATTRIBUTES | flag).public
    refused(ak, certify(ak, public), "key-attributes", f"has {flag.name.lower()}")


def test_exportable_key_reports_every_attribute(ak) -> None:
    public = SoftwareKey.generate(
        ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.DECRYPT | ObjectAttributes.USER_WITH_AUTH
    ).public
    refused(ak, certify(ak, public), "key-attributes",
            "missing fixed_tpm,fixed_parent,sensitive_data_origin", "has decrypt")  # fmt: skip


def test_p384_key_refused(ak) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    public = ecc_public(p384, BOUND_KEY_ATTRIBUTES, curve=EccCurve.NIST_P384)
    refused(ak, certify(ak, public), "key-algorithm", "curve 0x0004 is not NIST P-256")


def test_rsa_1024_key_refused(ak) -> None:
    public = rsa_public(rsa.generate_private_key(65537, 1024), BOUND_KEY_ATTRIBUTES)
    refused(ak, certify(ak, public), "key-algorithm", "RSA key of 1024 bits")


def test_sha1_name_alg_refused(ak) -> None:
    public = SoftwareKey.generate(name_alg=HashAlg.SHA1).public
    certification = certify(ak, public, creation_hash=hashlib.sha1(creation_data_of()).digest())
    refused(ak, certification, "key-algorithm", "nameAlg 0x0004")


@pytest.mark.parametrize("scheme", [Alg.ECDAA, Alg.ECSCHNORR, Alg.ECDH])
def test_non_ecdsa_scheme_refused(ak, scheme) -> None:
    public = SoftwareKey.generate(scheme=scheme).public
    refused(ak, certify(ak, public), "key-algorithm", f"scheme 0x{scheme:04x}")


def test_sha1_signing_scheme_refused(ak) -> None:
    public = SoftwareKey.generate(scheme_hash=HashAlg.SHA1).public
    refused(ak, certify(ak, public), "key-algorithm", "scheme hash 0x0004")


def test_point_off_the_curve_refused(ak, key) -> None:
    off_curve = parse_public(marshal_public(dataclasses.replace(key.public, y=bytes(32))))
    with pytest.raises(KeyCertificationMalformed) as caught:
        verify(ak, certify(ak, off_curve))
    assert_refusal(caught.value, "key-certification-malformed", "public_area", "ECC point")


def test_every_failure_is_reported(ak, key) -> None:
    public = SoftwareKey.generate(BOUND_KEY_ATTRIBUTES & ~ObjectAttributes.FIXED_TPM).public
    with pytest.raises(ChecksFailed) as caught:
        verify(ak, certify(ak, public, OLD_NONCE, certify_magic=0))
    assert checks_of(caught.value) == ["key-attestation-magic", "key-attestation-nonce",
                                       "key-attributes"]  # fmt: skip


# --- malformed bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
def test_every_truncation_refused(ak, genuine, field) -> None:
    whole: bytes = getattr(genuine, field)
    for length in range(len(whole)):
        with pytest.raises(EvidenceError) as caught:
            verify(ak, dataclasses.replace(genuine, **{field: whole[:length]}))
        exc = caught.value
        if field in CREATION_FIELDS and length == 0:
            assert exc.check == "key-creation-missing"
        else:
            assert isinstance(exc, KeyCertificationMalformed), (length, exc.reason)
            assert exc.field == field


@pytest.mark.parametrize("field", FIELDS)
def test_trailing_bytes_refused(ak, genuine, field) -> None:
    with pytest.raises(KeyCertificationMalformed) as caught:
        verify(ak, dataclasses.replace(genuine, **{field: getattr(genuine, field) + b"\0"}))
    assert caught.value.field == field
    assert "trailing" in str(caught.value)


@given(field=st.sampled_from(FIELDS), data=st.data())
def test_any_changed_byte_refused(ak, genuine, field, data) -> None:
    whole = bytearray(getattr(genuine, field))
    index = data.draw(st.integers(0, len(whole) - 1))
    whole[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(EvidenceError):
        verify(ak, dataclasses.replace(genuine, **{field: bytes(whole)}))


@given(field=st.sampled_from(FIELDS), value=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_typed_refusal(ak, genuine, field, value) -> None:
    with pytest.raises(EvidenceError):
        verify(ak, dataclasses.replace(genuine, **{field: value}))


# --- CSRs ----------------------------------------------------------------------------------


def csr_of(private_key: ec.EllipticCurvePrivateKey, digest: hashes.HashAlgorithm) -> bytes:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE)]))
        .sign(private_key, digest)
    )
    return request.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def certified(ak, genuine) -> CertifiedKey:
    return verify(ak, genuine)


def test_csr_of_the_certified_key_verifies(key, certified) -> None:
    request = verify_csr(csr_of(key.private_key, hashes.SHA256()), certified, node_id=NODE)
    assert request.subject.rfc4514_string() == f"CN={NODE}"


def test_csr_of_another_key_refused(certified) -> None:
    """The certification is of the TPM key; the CSR is signed by a software key."""
    software = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(EvidenceError) as caught:
        verify_csr(csr_of(software, hashes.SHA256()), certified, node_id=NODE)
    assert_refusal(caught.value, "csr-key", "is not", certified.name.hex())


def test_csr_with_a_bad_signature_refused(key, certified) -> None:
    der = bytearray(csr_of(key.private_key, hashes.SHA256()))
    der[-1] ^= 0x01  # the last byte of the ECDSA s value: still DER, no longer valid
    with pytest.raises(EvidenceError) as caught:
        verify_csr(bytes(der), certified, node_id=NODE)
    assert_refusal(caught.value, "csr-signature", "does not verify")


def test_csr_signed_with_sha224_refused(key, certified) -> None:
    with pytest.raises(EvidenceError) as caught:
        verify_csr(csr_of(key.private_key, hashes.SHA224()), certified, node_id=NODE)
    assert_refusal(caught.value, "csr-signature", "sha224")


def test_csr_of_another_key_with_bad_signature_reports_both(certified) -> None:
    der = bytearray(csr_of(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    der[-1] ^= 0x01
    with pytest.raises(ChecksFailed) as caught:
        verify_csr(bytes(der), certified, node_id=NODE)
    assert checks_of(caught.value) == ["csr-key", "csr-signature"]


def test_csr_truncations_refused(key, certified) -> None:
    der = csr_of(key.private_key, hashes.SHA256())
    for length in range(len(der)):
        with pytest.raises(EvidenceError) as caught:
            verify_csr(der[:length], certified, node_id=NODE)
        assert caught.value.check == "csr-malformed", (length, caught.value.reason)


@given(value=st.binary(max_size=200))
def test_csr_arbitrary_bytes_refused(certified, value) -> None:
    with pytest.raises(EvidenceError):
        verify_csr(value, certified, node_id=NODE)


# --- a genuine certification recorded from swtpm at test time ----------------------------

swtpm = pytest.mark.swtpm
skip_without_swtpm = pytest.mark.skipif(
    shutil.which("swtpm") is None or shutil.which("swtpm_setup") is None,
    reason="swtpm is not installed (run `make setup`)",
)


@dataclass(frozen=True)
class Recorded:
    """What an agent sends for a bound key, beside its AK's TPMT_PUBLIC."""

    ak_public: bytes
    certification: KeyCertification
    csr: bytes

    def verify(self, **changes: bytes) -> CertifiedKey:
        return verify_key_certification(
            AttestationKey.from_bytes(self.ak_public),
            dataclasses.replace(self.certification, **changes),
            NONCE,
            node_id=NODE,
        )


@pytest.fixture(scope="module")
def swtpm_certified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Recorded]]:
    """A fresh swtpm's certification of one bound key by its ECC and by its RSA AK."""
    from attestor.bound_key import load_or_create_bound_key
    from attestor.tpm import Tpm
    from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision

    root: Path = tmp_path_factory.mktemp("certify-swtpm")
    provision(root / "tpm", SimulatorCA(root / "ca"))
    with Swtpm(root / "tpm").start() as simulator, Tpm(simulator.tcti) as tpm:
        out = {}
        for algorithm in ("ecc", "rsa"):
            ak_blobs = tpm.create_ak(algorithm)
            bound = load_or_create_bound_key(tpm, root / "state")
            out[algorithm] = Recorded(
                ak_blobs.tpmt_public, bound.certification(ak_blobs, NONCE), bound.csr(NODE)
            )
        yield out


@swtpm
@skip_without_swtpm
@pytest.mark.parametrize("algorithm", ["ecc", "rsa"])
def test_swtpm_certification_verifies(swtpm_certified, algorithm) -> None:
    certified_key = swtpm_certified[algorithm].verify()
    assert certified_key.public.curve == EccCurve.NIST_P256
    assert certified_key.public.attributes == BOUND_KEY_ATTRIBUTES
    verify_csr(swtpm_certified[algorithm].csr, certified_key, node_id=NODE)


@swtpm
@skip_without_swtpm
def test_swtpm_creation_data_parses(swtpm_certified) -> None:
    data = parse_creation_data(swtpm_certified["ecc"].certification.creation_data)
    assert data.parent_name_alg == HashAlg.SHA256  # the EK, the bound key's parent
    assert data.pcr_selection.banks == ()


@swtpm
@skip_without_swtpm
@pytest.mark.parametrize("field", FIELDS)
def test_swtpm_every_truncation_refused(swtpm_certified, field) -> None:
    whole: bytes = getattr(swtpm_certified["ecc"].certification, field)
    for length in range(len(whole)):
        with pytest.raises(EvidenceError) as caught:
            swtpm_certified["ecc"].verify(**{field: whole[:length]})
        expected = "key-creation-missing" if field in CREATION_FIELDS and length == 0 else None
        assert caught.value.check == (expected or "key-certification-malformed"), caught.value


@swtpm
@skip_without_swtpm
def test_swtpm_attestations_of_other_ak_refused(swtpm_certified) -> None:
    """The ECC AK's certification presented with the RSA AK of the same TPM."""
    with pytest.raises(EvidenceError) as caught:
        verify_key_certification(
            AttestationKey.from_bytes(swtpm_certified["rsa"].ak_public),
            swtpm_certified["ecc"].certification, NONCE, node_id=NODE,
        )  # fmt: skip
    assert caught.value.check == "key-attestation-signature"

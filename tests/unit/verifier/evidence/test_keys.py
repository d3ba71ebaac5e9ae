"""AttestationKey loading and the AK checks enrollment makes (ak_problems).

The AKs the attestor makes, and the other restricted signing keys swtpm made for
tests/data/quotes, have no problems; each missing or forbidden attribute is its own
refusal (TPM 2.0 Part 1, 25.3 and 27.2 for why each matters).
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.keys import AttestationKey, ak_problems, public_area_from_key, spki_der
from verifier.evidence.tpm_public import (
    EccCurve,
    ObjectAttributes,
    PublicArea,
    SymDef,
    marshal_public,
    parse_public,
)
from verifier.evidence.tpm_structures import Alg, HashAlg, tpm2b

ECC = "ecc-p256-ecdsa-sha256-sha256-all"
RSA = "rsa2048-rsassa-sha256-sha256-all"
NULL_SCHEME = "rsa2048-null-unrestricted-rsapss-sha256-sha256-all"


def remarshalled(public: PublicArea, **changes: object) -> PublicArea:
    """`public` with `changes`, as the TPMT_PUBLIC bytes would parse (raw kept in step)."""
    return parse_public(marshal_public(dataclasses.replace(public, **changes)))


def without_attribute(public: PublicArea, flag: ObjectAttributes) -> PublicArea:
    return remarshalled(public, object_attributes=public.object_attributes & ~flag)


# --- ak_problems -------------------------------------------------------------------


def test_recorded_restricted_aks_have_no_problems(recorded_quotes) -> None:
    restricted = [q for name, q in recorded_quotes.items() if name != NULL_SCHEME]
    assert len(restricted) >= 6
    for recorded in restricted:
        assert ak_problems(recorded.ak().public) == [], recorded.name


def test_recorded_unrestricted_null_scheme_key_refused(recorded_quotes) -> None:
    """A real swtpm key that signs quotes (TPM2_Quote needs no restricted key) but would
    also sign a forged TPMS_ATTEST digest handed to TPM2_Sign."""
    public = recorded_quotes[NULL_SCHEME].ak().public
    assert ak_problems(public) == [
        "missing attributes restricted",
        "signing scheme 0x0010 is not RSASSA, RSAPSS or ECDSA",
    ]


@pytest.mark.parametrize("case", [ECC, RSA])
@pytest.mark.parametrize(
    ("flag", "name"),
    [
        (ObjectAttributes.RESTRICTED, "restricted"),
        (ObjectAttributes.FIXED_TPM, "fixed_tpm"),
        (ObjectAttributes.FIXED_PARENT, "fixed_parent"),
        (ObjectAttributes.SENSITIVE_DATA_ORIGIN, "sensitive_data_origin"),
        (ObjectAttributes.SIGN_ENCRYPT, "sign_encrypt"),
    ],
)
def test_ak_missing_required_attribute_refused(recorded_quotes, case, flag, name) -> None:
    public = without_attribute(recorded_quotes[case].ak().public, flag)
    assert ak_problems(public) == [f"missing attributes {name}"]


def test_ak_missing_several_attributes_lists_them_all(recorded_quotes) -> None:
    public = recorded_quotes[ECC].ak().public
    public = without_attribute(public, ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT)
    assert ak_problems(public) == ["missing attributes fixed_tpm,fixed_parent"]


@pytest.mark.parametrize("case", [ECC, RSA])
def test_ak_with_decrypt_refused(recorded_quotes, case) -> None:
    public = recorded_quotes[case].ak().public
    public = remarshalled(
        public, object_attributes=public.object_attributes | ObjectAttributes.DECRYPT
    )
    assert ak_problems(public) == ["has the decrypt attribute"]


def test_rsa_1024_ak_refused(recorded_quotes) -> None:
    key = rsa.generate_private_key(65537, 1024).public_key()
    public = remarshalled(
        recorded_quotes[RSA].ak().public,
        key_bits=1024,
        modulus=key.public_numbers().n.to_bytes(128, "big"),
    )
    AttestationKey.from_public(public)  # a well-formed key, refused only for its size
    assert ak_problems(public) == ["RSA key of 1024 bits (at least 2048)"]


def test_ecc_ak_on_unsupported_curve_refused(recorded_quotes) -> None:
    public = remarshalled(recorded_quotes[ECC].ak().public, curve=0x0010)  # BN P-256
    assert ak_problems(public) == ["ECC curve 0x0010 is not supported"]


@pytest.mark.parametrize(
    ("case", "scheme"),
    [(RSA, Alg.NULL), (RSA, Alg.ECDSA), (RSA, Alg.OAEP), (ECC, Alg.RSASSA), (ECC, Alg.ECDAA)],
)
def test_ak_with_scheme_other_than_a_signing_scheme_of_its_type_refused(
    recorded_quotes, case, scheme
) -> None:
    public = dataclasses.replace(recorded_quotes[case].ak().public, scheme=scheme)
    assert ak_problems(public) == [f"signing scheme 0x{scheme:04x} is not RSASSA, RSAPSS or ECDSA"]


# --- AttestationKey.from_bytes -----------------------------------------------------


@pytest.mark.parametrize("case", [ECC, RSA])
def test_from_bytes_reads_tpmt_public(recorded_quotes, case) -> None:
    recorded = recorded_quotes[case]
    ak = AttestationKey.from_bytes(recorded.ak_public)
    assert ak.public.raw == recorded.ak_public
    assert ak.name == ak.public.name
    assert ak.name[:2] == HashAlg.SHA256.to_bytes(2, "big")


@pytest.mark.parametrize("case", [ECC, RSA])
def test_from_bytes_reads_tpm2b_public(recorded_quotes, case) -> None:
    recorded = recorded_quotes[case]
    from_tpmt = AttestationKey.from_bytes(recorded.ak_public)
    from_tpm2b = AttestationKey.from_bytes(tpm2b(recorded.ak_public))
    assert from_tpm2b.public == from_tpmt.public
    assert from_tpm2b.name == from_tpmt.name
    assert spki_der(from_tpm2b.key) == spki_der(from_tpmt.key)


@pytest.mark.parametrize("case", [ECC, RSA])
def test_from_bytes_reads_pem(recorded_quotes, case) -> None:
    from_tpmt = AttestationKey.from_bytes(recorded_quotes[case].ak_public)
    pem = from_tpmt.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    from_pem = AttestationKey.from_bytes(b"\n  " + pem)
    assert spki_der(from_pem.key) == spki_der(from_tpmt.key)
    # A bare key carries no TPM attributes or scheme: the PEM path is for offline
    # `attest quote verify`, and enrollment must refuse it.
    assert from_pem.public.scheme == Alg.NULL
    assert "missing attributes" in ak_problems(from_pem.public)[0]
    ours, theirs = from_pem.public, from_tpmt.public
    assert (ours.type, ours.modulus, ours.exponent, ours.curve, ours.x, ours.y) == (
        theirs.type, theirs.modulus, theirs.exponent, theirs.curve, theirs.x, theirs.y
    )  # fmt: skip


def test_recorded_quote_verifies_under_pem_form_of_its_ak(recorded_quotes) -> None:
    from verifier.evidence.quote import check_signature

    recorded = recorded_quotes[ECC]
    pem = recorded.ak().key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    quote = recorded.quote()
    check_signature(AttestationKey.from_bytes(pem), quote.attest.raw, quote.signature)


def test_from_bytes_refuses_malformed_pem() -> None:
    with pytest.raises(TpmStructureMalformed) as caught:
        AttestationKey.from_bytes(
            b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"
        )
    assert caught.value.structure == "PEM public key"


def test_from_bytes_refuses_pem_of_other_key_type() -> None:
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(TpmStructureMalformed, match="not an RSA or ECC key"):
        AttestationKey.from_bytes(pem)


def test_from_bytes_refuses_ecc_point_not_on_curve(recorded_quotes) -> None:
    public = recorded_quotes[ECC].ak().public
    off_curve = marshal_public(dataclasses.replace(public, y=bytes(31) + b"\x01"))
    with pytest.raises(TpmStructureMalformed, match="ECC point is invalid"):
        AttestationKey.from_bytes(off_curve)


def test_from_bytes_refuses_unsupported_curve(recorded_quotes) -> None:
    public = recorded_quotes[ECC].ak().public
    with pytest.raises(TpmStructureMalformed, match="ECC curve 0x0010 is not supported"):
        AttestationKey.from_bytes(marshal_public(dataclasses.replace(public, curve=0x0010)))


def test_from_bytes_refuses_empty_rsa_modulus(recorded_quotes) -> None:
    public = recorded_quotes[RSA].ak().public
    with pytest.raises(TpmStructureMalformed, match="empty modulus"):
        AttestationKey.from_bytes(marshal_public(dataclasses.replace(public, modulus=b"")))


RSA_TEMPLATE = PublicArea(
    raw=b"",
    type=Alg.RSA,
    name_alg=HashAlg.SHA256,
    object_attributes=0x00050072,
    auth_policy=b"",
    symmetric=SymDef(Alg.NULL),
    scheme=Alg.RSASSA,
    scheme_hash=HashAlg.SHA256,
    key_bits=2048,
    exponent=65537,
    modulus=b"\xc5" * 256,
)


@pytest.mark.parametrize(
    ("modulus", "exponent"),
    [(b"\x01", 65537), (bytes(256), 65537), (b"\xc5" * 256, 4), (b"\xc5" * 256, 1)],
    ids=["modulus-1", "modulus-0", "even-exponent", "exponent-1"],
)
def test_from_bytes_refuses_invalid_rsa_numbers(modulus, exponent) -> None:
    public = dataclasses.replace(RSA_TEMPLATE, modulus=modulus, exponent=exponent)
    with pytest.raises(TpmStructureMalformed):
        AttestationKey.from_bytes(marshal_public(public))


def test_public_area_from_key_covers_supported_curves() -> None:
    for curve, curve_id in (
        (ec.SECP256R1(), EccCurve.NIST_P256),
        (ec.SECP384R1(), EccCurve.NIST_P384),
        (ec.SECP521R1(), EccCurve.NIST_P521),
    ):
        key = ec.generate_private_key(curve).public_key()
        public = public_area_from_key(key)
        assert public.curve == curve_id
        assert len(public.x) == len(public.y) == (curve.key_size + 7) // 8

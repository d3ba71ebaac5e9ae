"""EK chain building, EK/certificate match, allow-list and AK attribute checks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from lightgate.config import EnrollmentConfig
from verifier.enrollment import (
    Endorsement,
    TrustStore,
    check_ak,
    check_allowlist,
    check_ek_matches_certificate,
    ek_fingerprint,
    endorsement_of,
    load_ek_certificate,
    verify_ek_chain,
)
from verifier.errors import (
    AkInvalid,
    EkCertificateMalformed,
    EkCertificateUntrusted,
    EkNotAllowed,
    EkPublicMismatch,
)
from verifier.evidence.keys import public_area_from_key, spki_der
from verifier.evidence.tpm_public import ObjectAttributes, PublicArea
from verifier.evidence.tpm_structures import Alg, HashAlg
from verifier.store.records import NodeRecord

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key,
    issuer: str,
    issuer_key,
    *,
    ca: bool,
    days: int = 3650,  # type: ignore[no-untyped-def]
    not_before: datetime | None = None,
) -> x509.Certificate:
    start = not_before or NOW - timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject) if subject else x509.Name([]))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():  # type: ignore[no-untyped-def]
    root_key = ec.generate_private_key(ec.SECP384R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    ek_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _cert("Vendor Root", root_key, "Vendor Root", root_key, ca=True)
    inter = _cert("Vendor EK CA", inter_key, "Vendor Root", root_key, ca=True)
    leaf = _cert("", ek_key, "Vendor EK CA", inter_key, ca=False)  # EK certs often have no subject
    return {
        "root": root,
        "root_key": root_key,
        "inter": inter,
        "inter_key": inter_key,
        "ek_key": ek_key,
        "leaf": leaf,
    }


def test_chain_through_presented_intermediate(pki) -> None:  # type: ignore[no-untyped-def]
    trust = TrustStore.from_certificates([pki["root"]])
    path = verify_ek_chain(pki["leaf"], [pki["inter"]], trust, NOW)
    assert path == [pki["leaf"], pki["inter"], pki["root"]]


def test_chain_through_trust_store_intermediate(pki) -> None:  # type: ignore[no-untyped-def]
    trust = TrustStore.from_certificates([pki["root"], pki["inter"]])
    assert trust.intermediates == (pki["inter"],)
    assert verify_ek_chain(pki["leaf"], [], trust, NOW)[-1] == pki["root"]


def test_missing_intermediate_is_untrusted(pki) -> None:  # type: ignore[no-untyped-def]
    trust = TrustStore.from_certificates([pki["root"]])
    with pytest.raises(EkCertificateUntrusted, match="no trusted issuer"):
        verify_ek_chain(pki["leaf"], [], trust, NOW)


def test_forged_ek_certificate_from_lookalike_ca_is_refused(pki) -> None:  # type: ignore[no-untyped-def]
    """Same issuer name, different key: the signature check, not the name, decides."""
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    forged = _cert("", pki["ek_key"], "Vendor EK CA", rogue_key, ca=False)
    trust = TrustStore.from_certificates([pki["root"], pki["inter"]])
    with pytest.raises(EkCertificateUntrusted):
        verify_ek_chain(forged, [], trust, NOW)


def test_self_signed_ek_is_refused(pki) -> None:  # type: ignore[no-untyped-def]
    selfie = _cert("me", pki["ek_key"], "me", pki["ek_key"], ca=True)
    trust = TrustStore.from_certificates([pki["root"]])
    with pytest.raises(EkCertificateUntrusted):
        verify_ek_chain(selfie, [selfie], trust, NOW)


def test_intermediate_that_is_not_a_ca_is_refused(pki) -> None:  # type: ignore[no-untyped-def]
    not_ca_key = ec.generate_private_key(ec.SECP256R1())
    not_ca = _cert("Leafy", not_ca_key, "Vendor Root", pki["root_key"], ca=False)
    leaf = _cert("", pki["ek_key"], "Leafy", not_ca_key, ca=False)
    with pytest.raises(EkCertificateUntrusted):
        verify_ek_chain(leaf, [not_ca], TrustStore.from_certificates([pki["root"]]), NOW)


def test_expired_ek_certificate_is_refused(pki) -> None:  # type: ignore[no-untyped-def]
    old = _cert(
        "",
        pki["ek_key"],
        "Vendor EK CA",
        pki["inter_key"],
        ca=False,
        days=10,
        not_before=NOW - timedelta(days=30),
    )
    with pytest.raises(EkCertificateUntrusted, match="valid from"):
        verify_ek_chain(old, [pki["inter"]], TrustStore.from_certificates([pki["root"]]), NOW)


def test_empty_trust_store_refuses_everything(pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EkCertificateUntrusted, match="no root"):
        verify_ek_chain(pki["leaf"], [pki["inter"]], TrustStore(()), NOW)


def test_trust_store_from_dir_reads_pem_and_der(pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "root.pem").write_bytes(pki["root"].public_bytes(Encoding.PEM))
    (tmp_path / "inter.der").write_bytes(pki["inter"].public_bytes(Encoding.DER))
    (tmp_path / "README.txt").write_text("ignored")
    trust = TrustStore.from_dir(tmp_path)
    assert trust.roots == (pki["root"],) and trust.intermediates == (pki["inter"],)


def test_garbage_certificate_is_malformed() -> None:
    with pytest.raises(EkCertificateMalformed):
        load_ek_certificate(b"\x30\x03\x02\x01\x00")


def test_ek_public_must_match_certificate(pki) -> None:  # type: ignore[no-untyped-def]
    genuine = public_area_from_key(pki["ek_key"].public_key())
    check_ek_matches_certificate(genuine, pki["leaf"])
    other = public_area_from_key(rsa.generate_private_key(65537, 2048).public_key())
    with pytest.raises(EkPublicMismatch):
        check_ek_matches_certificate(other, pki["leaf"])


def test_allowlist_by_public_key_or_certificate(pki) -> None:  # type: ignore[no-untyped-def]
    ek = public_area_from_key(pki["ek_key"].public_key())
    der = pki["leaf"].public_bytes(Encoding.DER)
    by_key = EnrollmentConfig(mode="allowlist", allowlist=[ek_fingerprint(ek)])
    by_cert = EnrollmentConfig(mode="allowlist", allowlist=[hashlib.sha256(der).hexdigest()])
    check_allowlist(ek, None, by_key)
    check_allowlist(ek, der, by_cert)
    with pytest.raises(EkNotAllowed):
        check_allowlist(ek, None, by_cert)
    assert ek_fingerprint(ek) == hashlib.sha256(spki_der(pki["ek_key"].public_key())).hexdigest()


def test_allowlist_entries_must_be_sha256() -> None:
    with pytest.raises(ValueError, match="not a SHA-256"):
        EnrollmentConfig(mode="allowlist", allowlist=["abc"])


def _ak(
    attributes: int, *, key_type: int = Alg.ECC, scheme: int = Alg.ECDSA, bits: int = 2048
) -> PublicArea:
    base = public_area_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    from dataclasses import replace

    return replace(
        base,
        object_attributes=attributes,
        scheme=scheme,
        scheme_hash=HashAlg.SHA256,
        type=key_type,
        key_bits=bits,
    )


GOOD_AK = int(
    ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
    | ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.USER_WITH_AUTH
)


def test_ak_attributes_accepted() -> None:
    check_ak(_ak(GOOD_AK))


@pytest.mark.parametrize(
    "missing",
    [
        ObjectAttributes.RESTRICTED,
        ObjectAttributes.SIGN_ENCRYPT,
        ObjectAttributes.FIXED_TPM,
        ObjectAttributes.FIXED_PARENT,
        ObjectAttributes.SENSITIVE_DATA_ORIGIN,
    ],
)
def test_ak_missing_attribute_is_refused(missing: ObjectAttributes) -> None:
    with pytest.raises(AkInvalid, match=str(missing.name).lower()):
        check_ak(_ak(GOOD_AK & ~missing))


def test_decrypting_ak_is_refused() -> None:
    with pytest.raises(AkInvalid, match="decrypt"):
        check_ak(_ak(GOOD_AK | ObjectAttributes.DECRYPT))


def test_ak_without_signing_scheme_is_refused() -> None:
    with pytest.raises(AkInvalid, match="scheme"):
        check_ak(_ak(GOOD_AK, scheme=Alg.NULL))


def _enrolled(pki, certificate: bool = True) -> NodeRecord:  # type: ignore[no-untyped-def]
    ek = public_area_from_key(pki["ek_key"].public_key())
    return NodeRecord(
        node_id="node-1",
        state="enrolled",
        ek_certificate=pki["leaf"].public_bytes(Encoding.DER) if certificate else None,
        ek_public=b"ek",
        ek_fingerprint=ek_fingerprint(ek),
        ak_public=b"ak",
        ak_name=b"name",
        created_at=NOW,
        enrolled_at=NOW,
        last_clock=None,
        last_attested_at=None,
        last_status=None,
        reboots=0,
    )


def test_endorsement_comes_from_what_the_node_enrolled_with(pki) -> None:  # type: ignore[no-untyped-def]
    node = _enrolled(pki)
    chain = TrustStore.from_certificates([pki["root"], pki["inter"]])
    assert endorsement_of(node, chain, EnrollmentConfig(mode="ek-chain")) == Endorsement(
        ek_chain_verified=True, ek_pinned=False
    )
    # The verifier's mode says nothing of this node's TPM: an enrollment mode that
    # checks no chain does not make its certificate verified, nor does an empty store.
    unrelated = TrustStore.from_certificates(
        [_cert("Other", pki["root_key"], "Other", pki["root_key"], ca=True)]
    )
    assert not endorsement_of(node, unrelated, EnrollmentConfig(mode="ek-chain")).ek_chain_verified
    assert not endorsement_of(
        _enrolled(pki, certificate=False), chain, EnrollmentConfig()
    ).ek_chain_verified
    pinned = EnrollmentConfig(mode="allowlist", allowlist=[node.ek_fingerprint])
    assert endorsement_of(node, unrelated, pinned) == Endorsement(
        ek_chain_verified=False, ek_pinned=True
    )
    # The allow-list in force counts: a node taken off it is no longer pinned.
    assert not endorsement_of(node, unrelated, EnrollmentConfig(mode="allowlist")).ek_pinned

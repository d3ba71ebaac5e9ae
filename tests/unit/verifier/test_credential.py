"""Software TPM2_MakeCredential, checked against the TPM's side of the protocol.

The test implements TPM2_ActivateCredential (TPM 2.0 Part 3, 12.5; Part 1, 24.4-24.6)
with the EK's private key held in software, from pyca/cryptography primitives only:
KDFa is SP 800-108 counter-mode HMAC (cryptography's KBKDFHMAC), KDFe the SP 800-56A
concatenation KDF (ConcatKDFHash), the seed is RSA-OAEP or one-pass ECDH.  That
activation is first validated on credentials made by tpm2-pytss's make_credential (an
independent implementation known to interoperate with TPMs), then used on ours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss.types import TPMT_PUBLIC
from tpm2_pytss.utils import make_credential as pytss_make_credential

from verifier.credential import Credential, CredentialError, kdfa, kdfe, make_credential
from verifier.evidence.tpm_public import (
    EccCurve,
    ObjectAttributes,
    PublicArea,
    SymDef,
    marshal_public,
    parse_public,
)
from verifier.evidence.tpm_structures import Alg, HashAlg, tpm2b

try:  # cryptography >= 47 moved CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

HASHES = {
    HashAlg.SHA1: hashes.SHA1,
    HashAlg.SHA256: hashes.SHA256,
    HashAlg.SHA384: hashes.SHA384,
    HashAlg.SHA512: hashes.SHA512,
}
EK_ATTRIBUTES = (  # TCG EK Credential Profile 2.0, B.3.3 (template L-1 and L-2)
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.ADMIN_WITH_POLICY
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.DECRYPT
)
# An AK name as the TPM computes it: nameAlg || H(TPMT_PUBLIC).
AK_NAME = HashAlg.SHA256.to_bytes(2, "big") + hashlib.sha256(b"an AK's TPMT_PUBLIC").digest()
OTHER_AK_NAME = HashAlg.SHA256.to_bytes(2, "big") + hashlib.sha256(b"another AK").digest()


# --- KDFs from their definitions ---------------------------------------------------


def spec_kdfa(hash_alg: HashAlg, key: bytes, label: str, u: bytes, v: bytes, bits: int) -> bytes:
    """KDFa by SP 800-108 counter mode (Part 1, 11.4.10.2), via pyca/cryptography."""
    assert bits % 8 == 0
    return KBKDFHMAC(
        algorithm=HASHES[hash_alg](),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label.encode(),  # KBKDFHMAC puts the 0x00 separator after the label
        context=u + v,
        fixed=None,
    ).derive(key)


def spec_kdfe(hash_alg: HashAlg, z: bytes, label: str, u: bytes, v: bytes, bits: int) -> bytes:
    """KDFe by the SP 800-56A concatenation KDF (Part 1, 11.4.10.3), via pyca/cryptography."""
    assert bits % 8 == 0
    other_info = label.encode() + b"\0" + u + v
    return ConcatKDFHash(HASHES[hash_alg](), bits // 8, other_info).derive(z)


kdf_hashes = st.sampled_from(list(HASHES))
kdf_labels = st.sampled_from(["STORAGE", "INTEGRITY", "IDENTITY", "DUPLICATE", "x"])


@settings(max_examples=200)
@given(
    kdf_hashes,
    st.binary(min_size=1, max_size=64),
    kdf_labels,
    st.binary(max_size=70),
    st.binary(max_size=70),
    st.integers(1, 160).map(lambda n: n * 8),
)
def test_kdfa_is_sp800_108_counter_mode(hash_alg, key, label, u, v, bits) -> None:
    assert kdfa(hash_alg, key, label, u, v, bits) == spec_kdfa(hash_alg, key, label, u, v, bits)


@settings(max_examples=200)
@given(
    kdf_hashes,
    st.binary(min_size=1, max_size=66),
    kdf_labels,
    st.binary(max_size=66),
    st.binary(max_size=66),
    st.integers(1, 160).map(lambda n: n * 8),
)
def test_kdfe_is_sp800_56a_concatenation_kdf(hash_alg, z, label, u, v, bits) -> None:
    assert kdfe(hash_alg, z, label, u, v, bits) == spec_kdfe(hash_alg, z, label, u, v, bits)


def test_kdfa_with_bits_not_a_multiple_of_8_masks_the_first_byte() -> None:
    """Part 1, 11.4.10.2 and the reference KDFa: [L] is the bit count, and the excess
    high bits of the first octet are cleared."""
    key, bits = b"\x0b" * 32, 12
    block = hmac.new(
        key,
        (1).to_bytes(4, "big") + b"STORAGE\0" + b"ctx" + bits.to_bytes(4, "big"),
        "sha256",
    ).digest()
    expected = bytes([block[0] & 0x0F, block[1]])
    assert kdfa(HashAlg.SHA256, key, "STORAGE", b"ctx", b"", bits) == expected


# --- the TPM's side: TPM2_ActivateCredential ----------------------------------------


class IntegrityError(Exception):
    """TPM_RC_INTEGRITY: the credential's HMAC does not match (wrong AK name or EK)."""


def recover_seed(ek_private, ek: PublicArea, encrypted_secret: bytes) -> bytes:
    name_alg = HashAlg(ek.name_alg)
    if isinstance(ek_private, rsa.RSAPrivateKey):
        digest = HASHES[name_alg]()
        oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=b"IDENTITY\0")
        return ek_private.decrypt(encrypted_secret, oaep)
    # TPMS_ECC_POINT: the ephemeral public key Qe (Part 1, C.6.1)
    x_size = int.from_bytes(encrypted_secret[:2], "big")
    qe_x = encrypted_secret[2 : 2 + x_size]
    y_size = int.from_bytes(encrypted_secret[2 + x_size : 4 + x_size], "big")
    qe_y = encrypted_secret[4 + x_size :]
    assert len(qe_y) == y_size
    qe = ec.EllipticCurvePublicNumbers(
        int.from_bytes(qe_x, "big"), int.from_bytes(qe_y, "big"), ek_private.curve
    ).public_key()
    z = ek_private.exchange(ec.ECDH(), qe)
    return spec_kdfe(name_alg, z, "IDENTITY", qe_x, ek.x, name_alg.digest_size * 8)


def activate_credential(
    ek_private, ek: PublicArea, ak_name: bytes, credential_blob: bytes, encrypted_secret: bytes
) -> bytes:
    """What the TPM does (Part 1, 24.5 and 24.6): check the HMAC, then decrypt."""
    name_alg = HashAlg(ek.name_alg)
    seed = recover_seed(ek_private, ek, encrypted_secret)
    hmac_size = int.from_bytes(credential_blob[:2], "big")
    integrity = credential_blob[2 : 2 + hmac_size]
    enc_identity = credential_blob[2 + hmac_size :]
    hmac_key = spec_kdfa(name_alg, seed, "INTEGRITY", b"", b"", name_alg.digest_size * 8)
    expected = hmac.new(hmac_key, enc_identity + ak_name, name_alg.name.lower()).digest()
    if not hmac.compare_digest(expected, integrity):
        raise IntegrityError("integrityHMAC does not match")
    sym_key = spec_kdfa(name_alg, seed, "STORAGE", ak_name, b"", ek.symmetric.key_bits)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    plain = decryptor.update(enc_identity) + decryptor.finalize()
    size = int.from_bytes(plain[:2], "big")
    assert len(plain) == 2 + size, "TPM2B_DIGEST credential does not fill encIdentity"
    return plain[2:]


# --- software EKs ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SoftwareEk:
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    public: PublicArea

    def activate(self, credential: Credential, ak_name: bytes = AK_NAME) -> bytes:
        return activate_credential(
            self.private_key,
            self.public,
            ak_name,
            credential.credential_blob,
            credential.encrypted_secret,
        )


def rsa_ek(bits: int = 2048, name_alg: HashAlg = HashAlg.SHA256, aes_bits: int = 128) -> SoftwareEk:
    private_key = rsa.generate_private_key(65537, bits)
    template = PublicArea(
        raw=b"",
        type=Alg.RSA,
        name_alg=name_alg,
        object_attributes=EK_ATTRIBUTES,
        auth_policy=b"",
        symmetric=SymDef(Alg.AES, aes_bits, Alg.CFB),
        scheme=Alg.NULL,
        scheme_hash=0,
        key_bits=bits,
        exponent=65537,
        modulus=private_key.public_key().public_numbers().n.to_bytes(bits // 8, "big"),
    )
    return SoftwareEk(private_key, parse_public(marshal_public(template)))


CURVES = {EccCurve.NIST_P256: ec.SECP256R1, EccCurve.NIST_P384: ec.SECP384R1}


def ecc_ek(
    curve: EccCurve = EccCurve.NIST_P256, name_alg: HashAlg = HashAlg.SHA256, aes_bits: int = 128
) -> SoftwareEk:
    private_key = ec.generate_private_key(CURVES[curve]())
    numbers = private_key.public_key().public_numbers()
    size = (private_key.curve.key_size + 7) // 8
    template = PublicArea(
        raw=b"",
        type=Alg.ECC,
        name_alg=name_alg,
        object_attributes=EK_ATTRIBUTES,
        auth_policy=b"",
        symmetric=SymDef(Alg.AES, aes_bits, Alg.CFB),
        scheme=Alg.NULL,
        scheme_hash=0,
        curve=curve,
        kdf=Alg.NULL,
        x=numbers.x.to_bytes(size, "big"),
        y=numbers.y.to_bytes(size, "big"),
    )
    return SoftwareEk(private_key, parse_public(marshal_public(template)))


@pytest.fixture(scope="module")
def rsa2048_ek() -> SoftwareEk:
    return rsa_ek()


@pytest.fixture(scope="module")
def p256_ek() -> SoftwareEk:
    return ecc_ek()


@pytest.fixture(params=["rsa2048", "p256"])
def ek(request, rsa2048_ek, p256_ek) -> SoftwareEk:
    return {"rsa2048": rsa2048_ek, "p256": p256_ek}[request.param]


# --- the test's TPM side agrees with tpm2-pytss ------------------------------------


def test_tpm2_pytss_credential_activates(ek) -> None:
    """Validates `activate_credential` above on an independent MakeCredential."""
    secret = os.urandom(32)
    credential_blob, encrypted_secret = pytss_make_credential(
        TPMT_PUBLIC.unmarshal(ek.public.raw)[0], secret, AK_NAME
    )
    recovered = activate_credential(
        ek.private_key, ek.public, AK_NAME, bytes(credential_blob), bytes(encrypted_secret)
    )
    assert recovered == secret


# --- ours ------------------------------------------------------------------------


def test_credential_activates(ek) -> None:
    secret = os.urandom(32)
    assert ek.activate(make_credential(ek.public, AK_NAME, secret)) == secret


@pytest.mark.parametrize(
    "make_ek",
    [
        lambda: rsa_ek(3072, HashAlg.SHA384, 256),  # EK Credential Profile H-2
        lambda: ecc_ek(EccCurve.NIST_P384, HashAlg.SHA384, 256),  # H-3
        lambda: ecc_ek(EccCurve.NIST_P256, HashAlg.SHA384, 128),
    ],
    ids=["rsa3072-sha384-aes256", "p384-sha384-aes256", "p256-sha384-aes128"],
)
def test_credential_activates_for_high_range_eks(make_ek) -> None:
    ek = make_ek()
    secret = os.urandom(48)
    assert ek.activate(make_credential(ek.public, AK_NAME, secret)) == secret


@pytest.mark.parametrize("size", [0, 1, 16, 32])
def test_credential_of_any_size_up_to_the_digest_activates(rsa2048_ek, size) -> None:
    secret = os.urandom(size)
    assert rsa2048_ek.activate(make_credential(rsa2048_ek.public, AK_NAME, secret)) == secret


def test_wrong_ak_name_fails_integrity(ek) -> None:
    """The TPM releases the secret only beside the AK the verifier named."""
    credential = make_credential(ek.public, AK_NAME, os.urandom(32))
    with pytest.raises(IntegrityError):
        ek.activate(credential, ak_name=OTHER_AK_NAME)


def test_tampered_credential_blob_fails_integrity(ek) -> None:
    credential = make_credential(ek.public, AK_NAME, os.urandom(32))
    blob = bytearray(credential.credential_blob)
    blob[-1] ^= 1
    with pytest.raises(IntegrityError):
        ek.activate(dataclasses.replace(credential, credential_blob=bytes(blob)))


def test_credential_for_another_ek_cannot_be_activated(rsa2048_ek) -> None:
    other = rsa_ek()
    credential = make_credential(other.public, AK_NAME, os.urandom(32))
    with pytest.raises(ValueError, match="Decryption failed"):
        rsa2048_ek.activate(credential)


def test_ecc_credential_for_another_ek_fails_integrity(p256_ek) -> None:
    credential = make_credential(ecc_ek().public, AK_NAME, os.urandom(32))
    with pytest.raises(IntegrityError):
        p256_ek.activate(credential)


def test_rsa_credential_with_fixed_seed_is_the_known_answer(rsa2048_ek) -> None:
    """With the seed fixed, credentialBlob is fully determined (Part 1, 24.4-24.5)."""
    seed, secret = bytes(range(32)), b"lightgate credential secret 0123"
    credential = make_credential(rsa2048_ek.public, AK_NAME, secret, seed=seed)
    sym_key = spec_kdfa(HashAlg.SHA256, seed, "STORAGE", AK_NAME, b"", 128)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()
    hmac_key = spec_kdfa(HashAlg.SHA256, seed, "INTEGRITY", b"", b"", 256)
    integrity = hmac.new(hmac_key, enc_identity + AK_NAME, "sha256").digest()
    assert credential.credential_blob == tpm2b(integrity) + enc_identity
    assert (
        recover_seed(rsa2048_ek.private_key, rsa2048_ek.public, credential.encrypted_secret) == seed
    )


def test_ecc_encrypted_secret_is_an_ecc_point_on_the_ek_curve(p256_ek) -> None:
    credential = make_credential(p256_ek.public, AK_NAME, os.urandom(32))
    secret = credential.encrypted_secret
    assert secret[:2] == (32).to_bytes(2, "big") and secret[34:36] == (32).to_bytes(2, "big")
    assert len(secret) == 2 + 32 + 2 + 32


# --- refusals ----------------------------------------------------------------------


def test_secret_longer_than_ek_name_alg_digest_refused(rsa2048_ek) -> None:
    with pytest.raises(CredentialError, match="credential of 33 bytes exceeds 32"):
        make_credential(rsa2048_ek.public, AK_NAME, bytes(33))


@pytest.mark.parametrize(
    "symmetric",
    [SymDef(Alg.NULL), SymDef(Alg.AES, 128, 0x0044)],  # no symmetric; AES-CBC
    ids=["null", "aes-cbc"],
)
def test_ek_without_aes_cfb_refused(rsa2048_ek, symmetric) -> None:
    ek = dataclasses.replace(rsa2048_ek.public, symmetric=symmetric)
    with pytest.raises(CredentialError, match="not AES-CFB"):
        make_credential(ek, AK_NAME, bytes(32))


def test_ek_of_other_type_refused(rsa2048_ek) -> None:
    ek = dataclasses.replace(rsa2048_ek.public, type=Alg.KEYEDHASH)
    with pytest.raises(CredentialError, match="neither RSA nor ECC"):
        make_credential(ek, AK_NAME, bytes(32))


def test_ek_with_unknown_name_alg_refused(rsa2048_ek) -> None:
    ek = dataclasses.replace(rsa2048_ek.public, name_alg=0x0027)  # SHA3-256
    with pytest.raises(CredentialError, match="nameAlg 0x0027"):
        make_credential(ek, AK_NAME, bytes(32))


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: rsa_ek(aes_bits=64), "AES key of 64 bits"),
        (lambda: rsa_ek(bits=1024, name_alg=HashAlg.SHA512), "cannot seal"),
        (lambda: rsa_ek(name_alg=HashAlg.SM3_256), "nameAlg"),
    ],
    ids=["aes-64", "rsa1024-oaep-sha512-too-small", "sm3-name-alg"],
)
def test_eks_a_credential_cannot_be_sealed_to_are_refused_by_name(make, needle) -> None:
    """Malformed or unusable EKs are a CredentialError (INVALID_ARGUMENT at the API),
    never a cryptography exception (INTERNAL)."""
    with pytest.raises(CredentialError, match=needle):
        make_credential(make().public, AK_NAME, b"s" * 16)

"""Public keys from TPM public areas, and the AK checks enrollment makes."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.tpm_public import (
    EccCurve,
    ObjectAttributes,
    PublicArea,
    SymDef,
    parse_public,
)
from verifier.evidence.tpm_structures import Alg, HashAlg

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES: dict[int, type[ec.EllipticCurve]] = {
    EccCurve.NIST_P256: ec.SECP256R1,
    EccCurve.NIST_P384: ec.SECP384R1,
    EccCurve.NIST_P521: ec.SECP521R1,
}
_CURVE_IDS = {
    "secp256r1": EccCurve.NIST_P256,
    "secp384r1": EccCurve.NIST_P384,
    "secp521r1": EccCurve.NIST_P521,
}


def public_key(public: PublicArea) -> PublicKey:
    """The cryptography key of an RSA or ECC TPMT_PUBLIC."""
    if public.type == Alg.RSA:
        if not public.modulus:
            raise TpmStructureMalformed("TPMT_PUBLIC", 0, "RSA key with an empty modulus")
        try:
            return rsa.RSAPublicNumbers(
                public.exponent, int.from_bytes(public.modulus, "big")
            ).public_key()
        except ValueError as exc:
            raise TpmStructureMalformed("TPMT_PUBLIC", 0, f"RSA key is invalid: {exc}") from None
    curve = _CURVES.get(public.curve)
    if curve is None:
        raise TpmStructureMalformed(
            "TPMT_PUBLIC", 0, f"ECC curve 0x{public.curve:04x} is not supported"
        )
    try:
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(public.x, "big"), int.from_bytes(public.y, "big"), curve()
        ).public_key()
    except ValueError as exc:
        raise TpmStructureMalformed("TPMT_PUBLIC", 0, f"ECC point is invalid: {exc}") from None


def public_area_from_key(key: PublicKey) -> PublicArea:
    """A scheme-less public area for a bare key (PEM input to `attest quote verify`)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return PublicArea(
            raw=b"",
            type=Alg.RSA,
            name_alg=HashAlg.SHA256,
            object_attributes=0,
            auth_policy=b"",
            symmetric=SymDef(Alg.NULL),
            scheme=Alg.NULL,
            scheme_hash=0,
            key_bits=key.key_size,
            exponent=numbers.e,
            modulus=numbers.n.to_bytes((key.key_size + 7) // 8, "big"),
        )
    size = (key.curve.key_size + 7) // 8
    point = key.public_numbers()
    return PublicArea(
        raw=b"",
        type=Alg.ECC,
        name_alg=HashAlg.SHA256,
        object_attributes=0,
        auth_policy=b"",
        symmetric=SymDef(Alg.NULL),
        scheme=Alg.NULL,
        scheme_hash=0,
        curve=_CURVE_IDS[key.curve.name],
        kdf=Alg.NULL,
        x=point.x.to_bytes(size, "big"),
        y=point.y.to_bytes(size, "big"),
    )


@dataclass(frozen=True)
class AttestationKey:
    """An AK: its TPM public area and the key loaded once for signature checks."""

    public: PublicArea
    key: PublicKey

    @classmethod
    def from_public(cls, public: PublicArea) -> AttestationKey:
        return cls(public, public_key(public))

    @classmethod
    def from_bytes(cls, blob: bytes) -> AttestationKey:
        """TPMT_PUBLIC, TPM2B_PUBLIC, or a PEM SubjectPublicKeyInfo."""
        if blob.lstrip().startswith(b"-----BEGIN"):
            try:
                key = serialization.load_pem_public_key(blob)
            except ValueError as exc:
                raise TpmStructureMalformed("PEM public key", 0, str(exc)) from None
            if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                raise TpmStructureMalformed("PEM public key", 0, "not an RSA or ECC key")
            return cls(public_area_from_key(key), key)
        return cls.from_public(parse_public(blob))

    @property
    def name(self) -> bytes:
        return self.public.name


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


AK_REQUIRED = (
    ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
    | ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
)
AK_FORBIDDEN = ObjectAttributes.DECRYPT


def ak_problems(public: PublicArea) -> list[str]:
    """Why a public area is not acceptable as an attestation key (empty when it is).

    A restricted signing key signs only digests the TPM computed, so a message that
    starts with TPM_GENERATED_VALUE came from the TPM; fixedTPM + fixedParent +
    sensitiveDataOrigin mean the private key was made inside this TPM and can never
    leave it (Part 1, 25.3 and 27.2).  A decrypt-capable AK could be used to activate
    credentials meant for another key, so it is refused.
    """
    problems = []
    attributes = public.attributes
    missing = AK_REQUIRED & ~attributes
    if missing:
        problems.append(f"missing attributes {_flag_names(missing)}")
    if attributes & AK_FORBIDDEN:
        problems.append("has the decrypt attribute")
    rsa_bits = min(public.key_bits, len(public.modulus) * 8)
    if public.type == Alg.RSA and rsa_bits < 2048:
        problems.append(f"RSA key of {rsa_bits} bits (at least 2048)")
    if public.type == Alg.ECC and public.curve not in _CURVES:
        problems.append(f"ECC curve 0x{public.curve:04x} is not supported")
    allowed: dict[int, tuple[int, ...]] = {
        Alg.RSA: (Alg.RSASSA, Alg.RSAPSS),
        Alg.ECC: (Alg.ECDSA,),
    }
    if public.scheme not in allowed.get(public.type, ()):
        problems.append(f"signing scheme 0x{public.scheme:04x} is not RSASSA, RSAPSS or ECDSA")
    return problems


def _flag_names(flags: ObjectAttributes) -> str:
    return ",".join(f.name.lower() for f in ObjectAttributes if f in flags and f.name)

"""TPMT_PUBLIC: the public area of RSA and ECC keys (TPM 2.0 Part 2, 12.2.4), pure.

Parsed with the same bounds-checked Reader as the other TPM structures; the exact bytes
are kept because a key's TPM name is the hash of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import partial

from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.tpm_structures import Alg, HashAlg, Reader, tpm2b


class EccCurve(IntEnum):
    """TPM_ECC_CURVE values (Part 2, 6.4)."""

    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005


class ObjectAttributes(IntFlag):
    """TPMA_OBJECT bits (Part 2, 8.3)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18


# --- TPMT_PUBLIC -------------------------------------------------------------------


@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage parent (Part 2, 11.1.7)."""

    algorithm: int
    key_bits: int = 0
    mode: int = 0


@dataclass(frozen=True)
class PublicArea:
    """TPMT_PUBLIC of an RSA or ECC key (Part 2, 12.2.4), with its exact bytes."""

    raw: bytes
    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    symmetric: SymDef
    scheme: int
    scheme_hash: int
    scheme_count: int = 0  # ECDAA only
    # RSA
    key_bits: int = 0
    exponent: int = 0
    modulus: bytes = b""
    # ECC
    curve: int = 0
    kdf: int = 0
    kdf_hash: int = 0
    x: bytes = b""
    y: bytes = b""

    @property
    def attributes(self) -> ObjectAttributes:
        return ObjectAttributes(self.object_attributes)

    @property
    def name(self) -> bytes:
        """TPM2B_NAME payload: nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1, 16)."""
        if not self.raw:
            raise TpmStructureMalformed("TPMT_PUBLIC", 0, "a bare public key has no TPM name")
        return self.name_alg.to_bytes(2, "big") + HashAlg(self.name_alg).digest(self.raw)


MAX_PUBLIC_BYTES = 1024
_SCHEMES_WITHOUT_HASH = (Alg.NULL, Alg.RSAES)


def parse_public(buf: bytes) -> PublicArea:
    """Parse a TPMT_PUBLIC; a TPM2B_PUBLIC (size-prefixed) is accepted too."""
    if len(buf) > MAX_PUBLIC_BYTES:
        raise TpmStructureMalformed("TPMT_PUBLIC", 0, f"{len(buf)} bytes is too long")
    # TPMT_PUBLIC starts with its type (RSA 0x0001 or ECC 0x0023); a size prefix equal
    # to the remaining length, followed by such a type, marks a TPM2B_PUBLIC.
    if (
        len(buf) >= 4
        and int.from_bytes(buf[:2], "big") == len(buf) - 2
        and int.from_bytes(buf[2:4], "big") in (Alg.RSA, Alg.ECC)
    ):
        buf = buf[2:]
    reader = Reader(buf, "TPMT_PUBLIC")
    key_type = reader.u16("type")
    name_alg = reader.u16("nameAlg")
    if name_alg not in HashAlg.__members__.values():
        raise reader.fail(f"nameAlg 0x{name_alg:04x} is not a supported hash")
    attributes = reader.u32("objectAttributes")
    auth_policy = reader.tpm2b("authPolicy", 64)
    symmetric = _read_sym_def(reader)
    scheme = reader.u16("scheme")
    scheme_hash = scheme_count = 0
    # Every scheme's details start with a hashAlg except NULL and RSAES, whose
    # TPMS_ENC_SCHEME_RSAES is empty (Part 2, 11.2.3.2); ECDAA adds a count.
    if scheme not in _SCHEMES_WITHOUT_HASH:
        scheme_hash = reader.u16("scheme.hashAlg")
        if scheme == Alg.ECDAA:
            scheme_count = reader.u16("scheme.count")
    common = partial(
        PublicArea, buf, key_type, name_alg, attributes, auth_policy, symmetric, scheme,
        scheme_hash, scheme_count,
    )  # fmt: skip
    if key_type == Alg.RSA:
        key_bits = reader.u16("keyBits")
        exponent = reader.u32("exponent") or 65537  # Part 2, 12.2.3.5: zero means 2^16+1
        modulus = reader.tpm2b("unique.rsa", 512)
        reader.end()
        return common(key_bits=key_bits, exponent=exponent, modulus=modulus)
    if key_type == Alg.ECC:
        curve = reader.u16("curveID")
        kdf = reader.u16("kdf.scheme")
        kdf_hash = reader.u16("kdf.hashAlg") if kdf != Alg.NULL else 0
        x = reader.tpm2b("unique.ecc.x", 66)
        y = reader.tpm2b("unique.ecc.y", 66)
        reader.end()
        return common(curve=curve, kdf=kdf, kdf_hash=kdf_hash, x=x, y=y)
    raise TpmStructureMalformed("TPMT_PUBLIC", 0, f"type 0x{key_type:04x} is not RSA or ECC")


def _read_sym_def(reader: Reader) -> SymDef:
    algorithm = reader.u16("symmetric.algorithm")
    if algorithm == Alg.NULL:
        return SymDef(algorithm)
    return SymDef(algorithm, reader.u16("symmetric.keyBits"), reader.u16("symmetric.mode"))


def marshal_public(public: PublicArea) -> bytes:
    """Marshal the fields of a PublicArea into TPMT_PUBLIC (ignores `raw`)."""
    out = [
        struct.pack(">HHI", public.type, public.name_alg, public.object_attributes),
        tpm2b(public.auth_policy),
        struct.pack(">H", public.symmetric.algorithm),
    ]
    if public.symmetric.algorithm != Alg.NULL:
        out.append(struct.pack(">HH", public.symmetric.key_bits, public.symmetric.mode))
    out.append(struct.pack(">H", public.scheme))
    if public.scheme not in _SCHEMES_WITHOUT_HASH:
        out.append(struct.pack(">H", public.scheme_hash))
        if public.scheme == Alg.ECDAA:
            out.append(struct.pack(">H", public.scheme_count))
    if public.type == Alg.RSA:
        exponent = 0 if public.exponent == 65537 else public.exponent
        out.append(struct.pack(">HI", public.key_bits, exponent) + tpm2b(public.modulus))
    else:
        out.append(struct.pack(">HH", public.curve, public.kdf))
        if public.kdf != Alg.NULL:
            out.append(struct.pack(">H", public.kdf_hash))
        out.append(tpm2b(public.x) + tpm2b(public.y))
    return b"".join(out)

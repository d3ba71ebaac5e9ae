"""TPM 2.0 structures the verifier reads: pure marshalling, no TPM, no I/O.

Layouts follow TPM 2.0 Library Part 2 (Structures), rev 1.59: big-endian integers,
TPM2B = UINT16 size + bytes.  Every length is bounds-checked; a short or
inconsistent buffer raises `TpmStructureMalformed` naming the structure and the
byte offset, never IndexError or struct.error.

Only the structures attestation needs are modelled: TPMS_ATTEST (quote and certify),
TPMT_SIGNATURE (RSASSA, RSAPSS, ECDSA) and TPML_PCR_SELECTION here, TPMT_PUBLIC (RSA
and ECC keys) in `tpm_public`.  The raw bytes of TPMT_PUBLIC and TPMS_ATTEST are kept, because
names and signatures are computed over exactly what the TPM produced.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from verifier.evidence.errors import TpmStructureMalformed

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes

TPM_GENERATED_VALUE = 0xFF544347  # Part 2, 6.2: "TCG" in every TPM-generated TPMS_ATTEST


class AttestType(IntEnum):
    """TPM_ST values of TPMS_ATTEST.type (Part 2, 6.9)."""

    CERTIFY = 0x8017
    QUOTE = 0x8018


class Alg(IntEnum):
    """TPM_ALG_ID values (Part 2, 6.3 / TCG Algorithm Registry)."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    ECSCHNORR = 0x001C
    KDF1_SP800_56A = 0x0020
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CFB = 0x0043


class HashAlg(IntEnum):
    """Hash algorithms a PCR bank or signature may use."""

    SHA1 = 0x0004
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    SM3_256 = 0x0012

    @property
    def digest_size(self) -> int:
        return _DIGEST_SIZES[self]

    @property
    def bank_name(self) -> str:
        """The name used for this bank in PCR JSON and configuration: sha1, sha256..."""
        return self.name.lower()

    @classmethod
    def from_name(cls, name: str) -> HashAlg:
        try:
            return cls[name.strip().upper().replace("-", "_")]
        except KeyError:
            raise ValueError(f"unknown hash algorithm {name!r}") from None

    def crypto(self) -> hashes.HashAlgorithm:
        """The pyca/cryptography hash object (for signatures, OAEP).  Imported here, not
        at the top: the agent uses these structures and must not load cryptography."""
        from cryptography.hazmat.primitives import hashes

        algorithm: type[hashes.HashAlgorithm] = getattr(hashes, _CRYPTO_HASH_NAMES[self])
        return algorithm()

    def digest(self, data: bytes) -> bytes:
        if self is HashAlg.SM3_256:
            return hashlib.new("sm3", data).digest()
        return hashlib.new(self.name.lower(), data).digest()


_CRYPTO_HASH_NAMES = {
    HashAlg.SHA1: "SHA1",
    HashAlg.SHA256: "SHA256",
    HashAlg.SHA384: "SHA384",
    HashAlg.SHA512: "SHA512",
    HashAlg.SM3_256: "SM3",
}
_DIGEST_SIZES = {
    HashAlg.SHA1: 20,
    HashAlg.SHA256: 32,
    HashAlg.SHA384: 48,
    HashAlg.SHA512: 64,
    HashAlg.SM3_256: 32,
}


class Reader:
    """A bounds-checked cursor over one TPM structure."""

    __slots__ = ("_buf", "_structure", "offset")

    def __init__(self, buf: bytes, structure: str, offset: int = 0) -> None:
        self._buf = buf
        self._structure = structure
        self.offset = offset

    def fail(self, message: str) -> TpmStructureMalformed:
        return TpmStructureMalformed(self._structure, self.offset, message)

    def take(self, n: int, what: str) -> bytes:
        end = self.offset + n
        if n < 0 or end > len(self._buf):
            raise self.fail(f"{what}: needs {n} bytes, {len(self._buf) - self.offset} left")
        out = self._buf[self.offset : end]
        self.offset = end
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "big")

    def tpm2b(self, what: str, limit: int = 0xFFFF) -> bytes:
        size = self.u16(f"{what}.size")
        if size > limit:
            raise self.fail(f"{what}.size {size} exceeds {limit}")
        return self.take(size, what)

    def since(self, start: int) -> bytes:
        """The bytes read from offset `start` up to here (a structure kept as marshalled)."""
        return self._buf[start : self.offset]

    def end(self) -> None:
        if self.offset != len(self._buf):
            raise self.fail(f"{len(self._buf) - self.offset} trailing bytes")


def tpm2b(payload: bytes) -> bytes:
    """Marshal a TPM2B: UINT16 size then the bytes."""
    if len(payload) > 0xFFFF:
        raise ValueError("TPM2B payload longer than 65535 bytes")
    return len(payload).to_bytes(2, "big") + payload


def unwrap_tpm2b(buf: bytes, structure: str) -> bytes:
    """The payload of a buffer that is exactly one TPM2B (for example TPM2B_PUBLIC)."""
    reader = Reader(buf, structure)
    payload = reader.tpm2b(structure)
    reader.end()
    return payload


# --- PCR selection -----------------------------------------------------------------


@dataclass(frozen=True)
class PcrBankSelection:
    """One TPMS_PCR_SELECTION: a bank and the PCR indices selected in it, ascending."""

    hash_alg: int
    pcrs: tuple[int, ...]

    @property
    def bank(self) -> HashAlg:
        return HashAlg(self.hash_alg)


@dataclass(frozen=True)
class PcrSelection:
    """TPML_PCR_SELECTION, in the order the TPM lists it (that order defines pcrDigest)."""

    banks: tuple[PcrBankSelection, ...]

    @classmethod
    def of(
        cls, selection: dict[HashAlg, list[int]] | dict[HashAlg, tuple[int, ...]]
    ) -> PcrSelection:
        return cls(
            tuple(
                PcrBankSelection(int(alg), tuple(sorted(set(pcrs))))
                for alg, pcrs in selection.items()
            )
        )

    def as_dict(self) -> dict[str, list[int]]:
        return {_bank_label(b.hash_alg): list(b.pcrs) for b in self.banks}

    def covers(self, other: PcrSelection) -> bool:
        """True when every PCR selected in `other` is selected here too."""
        mine = {b.hash_alg: set(b.pcrs) for b in self.banks}
        return all(set(b.pcrs) <= mine.get(b.hash_alg, set()) for b in other.banks)


def _bank_label(hash_alg: int) -> str:
    try:
        return HashAlg(hash_alg).bank_name
    except ValueError:
        return f"0x{hash_alg:04x}"


MAX_PCR_SELECT_BYTES = 4  # 32 PCRs; PC Client TPMs have 24 (sizeofSelect 3)
MAX_PCR_BANKS = 16


def read_pcr_selection(reader: Reader) -> PcrSelection:
    count = reader.u32("TPML_PCR_SELECTION.count")
    if count > MAX_PCR_BANKS:
        raise reader.fail(f"TPML_PCR_SELECTION.count {count} exceeds {MAX_PCR_BANKS}")
    banks = []
    for _ in range(count):
        hash_alg = reader.u16("TPMS_PCR_SELECTION.hash")
        size = reader.u8("TPMS_PCR_SELECTION.sizeofSelect")
        if size > MAX_PCR_SELECT_BYTES:
            raise reader.fail(f"sizeofSelect {size} exceeds {MAX_PCR_SELECT_BYTES}")
        bitmap = reader.take(size, "TPMS_PCR_SELECTION.pcrSelect")
        pcrs = tuple(
            byte_index * 8 + bit
            for byte_index, byte in enumerate(bitmap)
            for bit in range(8)
            if byte & (1 << bit)
        )
        banks.append(PcrBankSelection(hash_alg, pcrs))
    return PcrSelection(tuple(banks))


def marshal_pcr_selection(selection: PcrSelection, size_of_select: int = 3) -> bytes:
    """Marshal with at least `size_of_select` bitmap bytes (3 on PC Client TPMs), more
    when a bank selects PCR 24 or above."""
    out = [len(selection.banks).to_bytes(4, "big")]
    for bank in selection.banks:
        size = max([size_of_select, *(pcr // 8 + 1 for pcr in bank.pcrs)])
        if size > MAX_PCR_SELECT_BYTES:
            raise ValueError(
                f"PCR {max(bank.pcrs)} is beyond the {MAX_PCR_SELECT_BYTES * 8} a TPM has"
            )
        bitmap = bytearray(size)
        for pcr in bank.pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        out.append(struct.pack(">HB", bank.hash_alg, size) + bytes(bitmap))
    return b"".join(out)


# --- TPMS_ATTEST -------------------------------------------------------------------


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (Part 2, 10.11.1)."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO (Part 2, 10.12.1)."""

    pcr_selection: PcrSelection
    pcr_digest: bytes


@dataclass(frozen=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO (Part 2, 10.12.3): the certified object's name."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True)
class Attest:
    """TPMS_ATTEST (Part 2, 10.12.12), with the exact bytes the TPM signed."""

    raw: bytes
    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    quote: QuoteInfo | None = None
    certify: CertifyInfo | None = None


MAX_ATTEST_BYTES = 1024  # TPM2B_ATTEST holds at most sizeof(TPMS_ATTEST)


def parse_attest(buf: bytes) -> Attest:
    """Parse a TPMS_ATTEST; a TPM2B_ATTEST (size-prefixed) is accepted too."""
    if len(buf) > MAX_ATTEST_BYTES + 2:
        raise TpmStructureMalformed("TPMS_ATTEST", 0, f"{len(buf)} bytes is too long")
    if (
        len(buf) >= 6
        and int.from_bytes(buf[2:6], "big") == TPM_GENERATED_VALUE
        and int.from_bytes(buf[:2], "big") == len(buf) - 2
    ):
        buf = buf[2:]
    reader = Reader(buf, "TPMS_ATTEST")
    magic = reader.u32("magic")
    attest_type = reader.u16("type")
    qualified_signer = reader.tpm2b("qualifiedSigner", 2 + 64)
    extra_data = reader.tpm2b("extraData", 2 + 64)  # TPM2B_DATA: sizeof(TPMT_HA)
    clock_info = ClockInfo(
        clock=reader.u64("clockInfo.clock"),
        reset_count=reader.u32("clockInfo.resetCount"),
        restart_count=reader.u32("clockInfo.restartCount"),
        safe=_read_bool(reader, "clockInfo.safe"),
    )
    firmware_version = reader.u64("firmwareVersion")
    quote = certify = None
    if attest_type == AttestType.QUOTE:
        selection = read_pcr_selection(reader)
        quote = QuoteInfo(selection, reader.tpm2b("pcrDigest", 64))
    elif attest_type == AttestType.CERTIFY:
        certify = CertifyInfo(
            reader.tpm2b("certifyInfo.name", 2 + 64), reader.tpm2b("qualifiedName", 2 + 64)
        )
    else:
        # The magic and type checks report this as a refusal; the fields after
        # `attested` cannot be parsed without knowing its type.
        reader.offset = len(buf)
    reader.end()
    return Attest(
        raw=buf,
        magic=magic,
        type=attest_type,
        qualified_signer=qualified_signer,
        extra_data=extra_data,
        clock_info=clock_info,
        firmware_version=firmware_version,
        quote=quote,
        certify=certify,
    )


def _read_bool(reader: Reader, what: str) -> bool:
    value = reader.u8(what)
    if value > 1:
        raise reader.fail(f"{what} is {value}, not a TPMI_YES_NO")
    return value == 1


def marshal_attest(attest: Attest) -> bytes:
    """The inverse of parse_attest for quote and certify (tests and software signers)."""
    clock = attest.clock_info
    out = [
        struct.pack(">IH", attest.magic, attest.type),
        tpm2b(attest.qualified_signer),
        tpm2b(attest.extra_data),
        struct.pack(">QIIB", clock.clock, clock.reset_count, clock.restart_count, clock.safe),
        struct.pack(">Q", attest.firmware_version),
    ]
    if attest.quote is not None:
        out.append(marshal_pcr_selection(attest.quote.pcr_selection))
        out.append(tpm2b(attest.quote.pcr_digest))
    elif attest.certify is not None:
        out.append(tpm2b(attest.certify.name) + tpm2b(attest.certify.qualified_name))
    return b"".join(out)


# --- TPMT_SIGNATURE ----------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """TPMT_SIGNATURE for the schemes attestation keys use (Part 2, 11.3.4)."""

    sig_alg: int
    hash_alg: int
    rsa_signature: bytes = b""
    ecdsa_r: bytes = b""
    ecdsa_s: bytes = b""


MAX_SIGNATURE_BYTES = 2 + 2 + 2 + 512  # RSA-4096 is the largest key a TPM offers


def parse_signature(buf: bytes) -> Signature:
    if len(buf) > MAX_SIGNATURE_BYTES + 4:
        raise TpmStructureMalformed("TPMT_SIGNATURE", 0, f"{len(buf)} bytes is too long")
    reader = Reader(buf, "TPMT_SIGNATURE")
    sig_alg = reader.u16("sigAlg")
    if sig_alg in (Alg.RSASSA, Alg.RSAPSS):
        hash_alg = reader.u16("hash")
        signature = Signature(sig_alg, hash_alg, rsa_signature=reader.tpm2b("sig", 512))
    elif sig_alg == Alg.ECDSA:
        hash_alg = reader.u16("hash")
        r = reader.tpm2b("signatureR", 66)
        s = reader.tpm2b("signatureS", 66)
        signature = Signature(sig_alg, hash_alg, ecdsa_r=r, ecdsa_s=s)
    else:
        raise reader.fail(f"sigAlg 0x{sig_alg:04x} is not RSASSA, RSAPSS or ECDSA")
    reader.end()
    return signature


def marshal_signature(signature: Signature) -> bytes:
    head = struct.pack(">HH", signature.sig_alg, signature.hash_alg)
    if signature.sig_alg == Alg.ECDSA:
        return head + tpm2b(signature.ecdsa_r) + tpm2b(signature.ecdsa_s)
    return head + tpm2b(signature.rsa_signature)

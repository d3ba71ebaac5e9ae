"""TPM 2.0 commands the agent sends, as pure marshalling: bytes in, bytes out, no TPM.

TPM 2.0 Library Part 3 (Commands) gives each command's handles, authorizations and
parameters; Part 1, 18 the framing: a header (tag, size, command code), the handles,
with TPM_ST_SESSIONS an authorization area (its size, then one TPMS_AUTH_COMMAND per
session), then the parameters.  A response mirrors it, and with sessions puts the
parameter area's size before it.

Authorizations are a password session (TPM_RS_PW, empty password: the agent's keys
and the endorsement hierarchy have none) or a policy session whose policy needs no
authValue (the EK's PolicySecret(TPM_RH_ENDORSEMENT)): the TPM checks neither an HMAC
in that case (Part 1, 19.6.12), so no session key and no HMAC is ever computed here.
The agent sends no secrets to the TPM and reads none back it could not equally read
from its state directory, so parameter encryption would protect nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.tpm_public import (
    EccCurve,
    ObjectAttributes,
    PublicArea,
    SymDef,
    marshal_public,
)
from verifier.evidence.tpm_structures import Alg, Reader, tpm2b

TPM_ST_NO_SESSIONS: Final = 0x8001
TPM_ST_SESSIONS: Final = 0x8002
TPM_ST_HASHCHECK: Final = 0x8024
TPM_RS_PW: Final = 0x40000009
TPM_RH_OWNER: Final = 0x40000001
TPM_RH_NULL: Final = 0x40000007
TPM_RH_ENDORSEMENT: Final = 0x4000000B
TPM_SE_POLICY: Final = 0x01
TPM_CAP_TPM_PROPERTIES: Final = 0x00000006
TPM_CAP_PCRS: Final = 0x00000005
TPM_PT_NV_BUFFER_MAX: Final = 0x100 + 44
CONTINUE_SESSION: Final = 0x01

# TPMA_NV bits (Part 2, 13.4)
TPMA_NV_OWNERREAD: Final = 1 << 17
TPMA_NV_AUTHREAD: Final = 1 << 18
TPMA_NV_WRITTEN: Final = 1 << 29


class CommandCode(IntEnum):
    """TPM_CC values (Part 2, 6.5.2) of the commands Lightgate sends."""

    NV_Read = 0x0000014E
    Create = 0x00000153
    Load = 0x00000157
    Quote = 0x00000158
    Sign = 0x0000015D
    ActivateCredential = 0x00000147
    Certify = 0x00000148
    CertifyCreation = 0x0000014A
    CreatePrimary = 0x00000131
    PolicySecret = 0x00000151
    FlushContext = 0x00000165
    LoadExternal = 0x00000167
    NV_ReadPublic = 0x00000169
    StartAuthSession = 0x00000176
    GetCapability = 0x0000017A
    PCR_Read = 0x0000017E
    PCR_Extend = 0x00000182


# --- response codes (Part 2, 6.6) -------------------------------------------------------

_FORMAT_ONE: Final = {
    0x01: "ASYMMETRIC", 0x02: "ATTRIBUTES", 0x03: "HASH", 0x04: "VALUE",
    0x05: "HIERARCHY", 0x07: "KEY_SIZE", 0x08: "MGF", 0x09: "MODE", 0x0A: "TYPE",
    0x0B: "HANDLE", 0x0C: "KDF", 0x0D: "RANGE", 0x0E: "AUTH_FAIL", 0x0F: "NONCE",
    0x10: "PP", 0x12: "SCHEME", 0x15: "SIZE", 0x16: "SYMMETRIC", 0x17: "TAG",
    0x18: "SELECTOR", 0x1A: "INSUFFICIENT", 0x1B: "SIGNATURE", 0x1C: "KEY",
    0x1D: "POLICY_FAIL", 0x1F: "INTEGRITY", 0x20: "TICKET", 0x21: "RESERVED_BITS",
    0x22: "BAD_AUTH", 0x23: "EXPIRED", 0x24: "POLICY_CC", 0x25: "BINDING", 0x26: "CURVE",
    0x27: "ECC_POINT",
}  # fmt: skip
_FORMAT_ZERO: Final = {
    0x100: "INITIALIZE", 0x101: "FAILURE", 0x103: "SEQUENCE", 0x120: "DISABLED",
    0x121: "EXCLUSIVE", 0x124: "AUTH_TYPE", 0x125: "AUTH_MISSING", 0x126: "POLICY",
    0x127: "PCR", 0x128: "PCR_CHANGED", 0x12D: "UPGRADE", 0x12E: "TOO_MANY_CONTEXTS",
    0x12F: "AUTH_UNAVAILABLE", 0x130: "REBOOT", 0x131: "UNBALANCED", 0x142: "COMMAND_SIZE",
    0x143: "COMMAND_CODE", 0x144: "AUTHSIZE", 0x145: "AUTH_CONTEXT", 0x146: "NV_RANGE",
    0x147: "NV_SIZE", 0x148: "NV_LOCKED", 0x149: "NV_AUTHORIZATION",
    0x14A: "NV_UNINITIALIZED", 0x14B: "NV_SPACE", 0x14C: "NV_DEFINED", 0x150: "BAD_CONTEXT",
    0x151: "CPHASH", 0x152: "PARENT", 0x153: "NEEDS_TEST", 0x154: "NO_RESULT",
    0x155: "SENSITIVE",
    0x901: "CONTEXT_GAP", 0x902: "OBJECT_MEMORY", 0x903: "SESSION_MEMORY", 0x904: "MEMORY",
    0x905: "SESSION_HANDLES", 0x906: "OBJECT_HANDLES", 0x907: "LOCALITY", 0x908: "YIELDED",
    0x909: "CANCELED", 0x90A: "TESTING", 0x920: "NV_RATE", 0x921: "LOCKOUT", 0x922: "RETRY",
    0x923: "NV_UNAVAILABLE",
}  # fmt: skip
#: Warnings after which the same command may simply be sent again (Part 2, 6.6.3).
RETRYABLE: Final = frozenset({0x908, 0x90A, 0x922})
RC_HANDLE: Final = 0x0B  # format-one TPM_RC_HANDLE: an NV index or object that is not there


def describe_response_code(code: int) -> str:
    """`TPM_RC_VALUE (parameter 2)` and the like, from a response code (Part 2, 6.6)."""
    if code & 0x80:  # format one: an error about one handle, session or parameter
        name = _FORMAT_ONE.get(code & 0x3F, f"0x{code & 0x3F:02x}")
        number = (code >> 8) & 0xF
        if code & 0x40:
            where = f" (parameter {number})"
        elif number & 0x8:
            where = f" (session {number & 0x7})"
        elif number:
            where = f" (handle {number})"
        else:
            where = ""
        return f"TPM_RC_{name}{where}"
    if code & 0x400:
        return f"TCG vendor code 0x{code:03x}"
    known = _FORMAT_ZERO.get(code & 0xFFF)
    return f"TPM_RC_{known}" if known else f"response code 0x{code:03x}"


def format_one_error(code: int) -> int:
    """The error number of a format-one response code; 0 for other codes."""
    return code & 0x3F if code & 0x80 else 0


class TpmCommandFailed(Exception):
    """The TPM answered a command with an error response code."""

    def __init__(self, command: str, code: int) -> None:
        super().__init__(f"{command}: {describe_response_code(code)} (0x{code:03x})")
        self.command = command
        self.code = code


# --- framing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """One TPMS_AUTH_COMMAND.  The nonce is the caller's; the HMAC field carries the
    password for TPM_RS_PW and is empty for a policy session that needs no authValue."""

    handle: int
    nonce: bytes = b""
    attributes: int = 0
    hmac: bytes = b""

    def marshal(self) -> bytes:
        return (
            self.handle.to_bytes(4, "big")
            + tpm2b(self.nonce)
            + bytes([self.attributes])
            + tpm2b(self.hmac)
        )


PASSWORD: Final = Auth(TPM_RS_PW)


def policy_auth(session: int, nonce: bytes) -> Auth:
    """Authorization by a policy session, which ends with the command (continueSession
    clear): a satisfied policy is good for one use."""
    return Auth(session, nonce=nonce)


def build_command(
    code: CommandCode, handles: Sequence[int], parameters: bytes, auths: Sequence[Auth] = ()
) -> bytes:
    body = [handle.to_bytes(4, "big") for handle in handles]
    if auths:
        area = b"".join(auth.marshal() for auth in auths)
        body.append(len(area).to_bytes(4, "big") + area)
    body.append(parameters)
    payload = b"".join(body)
    tag = TPM_ST_SESSIONS if auths else TPM_ST_NO_SESSIONS
    return struct.pack(">HII", tag, 10 + len(payload), code) + payload


@dataclass(frozen=True)
class Response:
    handles: tuple[int, ...]
    parameters: bytes


def parse_response(raw: bytes, command: CommandCode, handle_count: int = 0) -> Response:
    """Split a response into its handles and parameter area; TpmCommandFailed for an
    error code, TpmStructureMalformed for bytes that are not a response."""
    reader = Reader(raw, f"TPM2_{command.name} response")
    tag = reader.u16("tag")
    size = reader.u32("responseSize")
    code = reader.u32("responseCode")
    if size != len(raw):
        raise reader.fail(f"responseSize {size} but {len(raw)} bytes")
    if code != 0:
        raise TpmCommandFailed(f"TPM2_{command.name}", code)
    if tag not in (TPM_ST_SESSIONS, TPM_ST_NO_SESSIONS):
        raise reader.fail(f"tag 0x{tag:04x}")
    handles = tuple(reader.u32("handle") for _ in range(handle_count))
    if tag == TPM_ST_SESSIONS:
        parameters = reader.take(reader.u32("parameterSize"), "parameters")
        # What follows is one TPMS_AUTH_RESPONSE per session; nothing in it is needed.
    else:
        parameters = reader.take(len(raw) - reader.offset, "parameters")
    return Response(handles, parameters)


# --- parameter pieces -----------------------------------------------------------------


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


EMPTY_SENSITIVE: Final = tpm2b(tpm2b(b"") + tpm2b(b""))  # TPM2B_SENSITIVE_CREATE, no auth
EMPTY_PCR_SELECTION: Final = u32(0)  # TPML_PCR_SELECTION with no banks
NULL_SCHEME: Final = u16(Alg.NULL)  # TPMT_SIG_SCHEME: the key's own scheme
NULL_HASHCHECK: Final = u16(TPM_ST_HASHCHECK) + u32(TPM_RH_NULL) + tpm2b(b"")


def signature_scheme(public: PublicArea) -> bytes:
    """TPMT_SIG_SCHEME naming a key's own scheme and hash."""
    if public.scheme == Alg.NULL:
        return NULL_SCHEME
    return u16(public.scheme) + u16(public.scheme_hash)


def read_signature(reader: Reader) -> bytes:
    """Take one TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA) from a parameter area."""
    start = reader.offset
    sig_alg = reader.u16("signature.sigAlg")
    if sig_alg in (Alg.RSASSA, Alg.RSAPSS):
        reader.u16("signature.hash")
        reader.tpm2b("signature.sig", 512)
    elif sig_alg == Alg.ECDSA:
        reader.u16("signature.hash")
        reader.tpm2b("signature.r", 66)
        reader.tpm2b("signature.s", 66)
    else:
        raise reader.fail(f"signature algorithm 0x{sig_alg:04x} is not RSASSA, RSAPSS or ECDSA")
    return reader.since(start)


def read_tpm2b_whole(reader: Reader, what: str) -> bytes:
    """A TPM2B with its size prefix, as the blobs the agent persists keep it."""
    start = reader.offset
    reader.tpm2b(what)
    return reader.since(start)


# --- key templates --------------------------------------------------------------------

#: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the authPolicy of the TCG default EKs
#: (EK Credential Profile 2.0, B.3.3).
EK_POLICY: Final = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_EK_ATTRIBUTES: Final = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.ADMIN_WITH_POLICY
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.DECRYPT
)
_AES_128_CFB: Final = SymDef(Alg.AES, 128, Alg.CFB)


def ek_template(kind: str, nonce: bytes = b"") -> bytes:
    """The TCG default EK template (EK Credential Profile 2.0, B.3.3: L-1 RSA 2048, L-2
    ECC NIST P-256) as TPMT_PUBLIC, with the manufacturer's EK nonce if there is one."""
    if kind == "rsa":
        public = PublicArea(
            b"", Alg.RSA, Alg.SHA256, _EK_ATTRIBUTES, EK_POLICY, _AES_128_CFB, Alg.NULL, 0,
            key_bits=2048, exponent=0, modulus=bytes(256),
        )  # fmt: skip
    elif kind == "ecc":
        public = PublicArea(
            b"", Alg.ECC, Alg.SHA256, _EK_ATTRIBUTES, EK_POLICY, _AES_128_CFB, Alg.NULL, 0,
            curve=EccCurve.NIST_P256, kdf=Alg.NULL, x=bytes(32), y=bytes(32),
        )  # fmt: skip
    else:
        raise ValueError(f"EK kind {kind!r} is not rsa or ecc")
    return with_ek_nonce(marshal_public(public), nonce)


_ECC_KEY_BYTES: Final[dict[int, int]] = {
    EccCurve.NIST_P256: 32,
    EccCurve.NIST_P384: 48,
    EccCurve.NIST_P521: 66,
}


def with_ek_nonce(template: bytes, nonce: bytes) -> bytes:
    """An EK template (the default one, or the one a manufacturer stored in NV) with the
    EK nonce in its unique field: for RSA the nonce zero-padded to the key's size, for
    ECC x the nonce zero-padded to the curve's size and y zeros (EK Credential Profile
    2.0, 2.2.1.5).  Without a nonce the template is returned as far as its structure
    goes (an NV index may hold padding after it).  Every other byte stays as it was:
    the TPM derives a primary key from the template's exact bytes.  ValueError for bytes
    that are not an RSA or ECC TPMT_PUBLIC."""
    try:
        reader = Reader(template, "EK template")
        key_type = reader.u16("type")
        reader.u16("nameAlg")
        reader.u32("objectAttributes")
        reader.tpm2b("authPolicy", 64)
        if reader.u16("symmetric.algorithm") != Alg.NULL:
            reader.u16("symmetric.keyBits")
            reader.u16("symmetric.mode")
        scheme = reader.u16("scheme")
        if scheme not in (Alg.NULL, Alg.RSAES):
            reader.u16("scheme.hashAlg")
            if scheme == Alg.ECDAA:
                reader.u16("scheme.count")
        if key_type == Alg.RSA:
            key_bytes = reader.u16("keyBits") // 8
            reader.u32("exponent")
            prefix = reader.offset
            unique = reader.tpm2b("unique.rsa", 512)
            if nonce:
                unique = nonce.ljust(key_bytes, b"\x00")[:key_bytes]
            return template[:prefix] + tpm2b(unique)
        if key_type == Alg.ECC:
            curve = reader.u16("curveID")
            if reader.u16("kdf.scheme") != Alg.NULL:
                reader.u16("kdf.hashAlg")
            prefix = reader.offset
            x = reader.tpm2b("unique.x", 66)
            y = reader.tpm2b("unique.y", 66)
            if nonce:
                size = _ECC_KEY_BYTES.get(curve, 32)
                x, y = nonce.ljust(size, b"\x00")[:size], bytes(size)
            return template[:prefix] + tpm2b(x) + tpm2b(y)
    except TpmStructureMalformed as exc:
        raise ValueError(str(exc)) from None
    raise ValueError(f"EK template of type 0x{key_type:04x}: not an RSA or ECC key")


def signing_key_template(algorithm: str, attributes: int) -> bytes:
    """A SHA-256 named signing key: ECC P-256 with ECDSA-SHA256, or RSA 2048 with
    RSASSA-SHA256; the unique field empty (TPM2_Create makes the key)."""
    null = SymDef(Alg.NULL)
    if algorithm == "ecc":
        public = PublicArea(
            b"", Alg.ECC, Alg.SHA256, attributes, b"", null, Alg.ECDSA, Alg.SHA256,
            curve=EccCurve.NIST_P256, kdf=Alg.NULL,
        )  # fmt: skip
    elif algorithm == "rsa":
        public = PublicArea(
            b"", Alg.RSA, Alg.SHA256, attributes, b"", null, Alg.RSASSA, Alg.SHA256,
            key_bits=2048, exponent=0,
        )  # fmt: skip
    else:
        raise ValueError(f"key algorithm {algorithm!r} is not ecc or rsa")
    return marshal_public(public)


# --- NV public area ---------------------------------------------------------------------


@dataclass(frozen=True)
class NvPublic:
    index: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    data_size: int


def parse_nv_public(parameters: bytes) -> NvPublic:
    """TPM2_NV_ReadPublic's nvPublic (TPM2B_NV_PUBLIC; the name after it is not needed)."""
    reader = Reader(parameters, "TPM2B_NV_PUBLIC")
    inner = Reader(reader.tpm2b("nvPublic"), "TPMS_NV_PUBLIC")
    nv = NvPublic(
        inner.u32("nvIndex"),
        inner.u16("nameAlg"),
        inner.u32("attributes"),
        inner.tpm2b("authPolicy", 64),
        inner.u16("dataSize"),
    )
    inner.end()
    return nv

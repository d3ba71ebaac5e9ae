"""The node's TPM.  The only module in Lightgate that opens a TPM.

Commands are marshalled by `attestor.tpm2.commands` and sent over `attestor.tpm2.tcti`,
named in tpm2-tools form: `device:/dev/tpmrm0` (the kernel's resource manager) or
`swtpm:host=127.0.0.1,port=2321`.  The agent needs a dozen commands; tpm2-tss with
tpm2-pytss (and the `cryptography` it loads) cost more memory than the whole agent may
use on a node.  Tests check this layer against tpm2-tss on the same swtpm.

Keys:
- EK: recreated from the TCG default template (EK Credential Profile 2.0, 2.1.5, low
  range: RSA-2048 at NV 0x01c00002 or ECC NIST P-256 at 0x01c0000a) or from the template
  the manufacturer stored beside the certificate, so it is the key the EK certificate
  certifies.
- AK: a restricted signing key created as a child of the EK (as `tpm2_createak` does),
  so ActivateCredential can prove it shares a TPM with the EK.  Its TPM2B_PUBLIC and
  TPM2B_PRIVATE are returned for the agent to persist; the TPM re-loads them later.
- Bound key: an unrestricted ECC P-256 ECDSA-SHA256 signing key (fixedTPM, fixedParent,
  sensitiveDataOrigin, userWithAuth) that credentials are issued for once the AK
  certifies it (TPM2_Certify, TPM2_CertifyCreation; `verifier.evidence.certify`).  It is
  a child of the EK too, not of an SRK: the EK is loaded anyway whenever the AK is (the
  AK is its child), so the bound key costs no extra primary (a CreatePrimary per
  session) and no extra object slot (swtpm, like the reference TPM, has 3 transient
  slots: EK + AK + bound key fill them, an SRK would need a fourth without a resource
  manager), and a session that already holds the EK policy needs nothing new.
  TPM2_CertifyCreation needs the creation ticket, which only TPM2_Create returns (never
  TPM2_Load), so the creation data, hash and ticket are persisted with the key.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal

from attestor.tpm2 import commands as cmd
from attestor.tpm2.commands import CommandCode as CC
from attestor.tpm2.tcti import TctiError, Transport, open_transport
from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.tpm_public import ObjectAttributes, parse_public
from verifier.evidence.tpm_structures import (
    HashAlg,
    PcrBankSelection,
    PcrSelection,
    Reader,
    marshal_pcr_selection,
    read_pcr_selection,
    tpm2b,
    unwrap_tpm2b,
)

if TYPE_CHECKING:
    from verifier.evidence.certify import KeyCertification

EkKind = Literal["rsa", "ecc"]
AkAlgorithm = Literal["ecc", "rsa"]

#: EK certificate NV indices (EK Credential Profile 2.0, 2.2.1.4, low range): the
#: certificate, the nonce the template's unique field starts with, and the template a
#: manufacturer may store instead of the default one.
_EK_NV: Final[dict[str, tuple[int, int, int]]] = {
    "rsa": (0x01C00002, 0x01C00003, 0x01C00004),
    "ecc": (0x01C0000A, 0x01C0000B, 0x01C0000C),
}
_AK_ATTRIBUTES: Final = int(
    ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
    | ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.USER_WITH_AUTH
)
# The bound key: a signing-only key that never leaves this TPM and that the TPM made
# (what verifier.evidence.certify requires), usable with an empty password.
_BOUND_KEY_ATTRIBUTES: Final = int(
    ObjectAttributes.SIGN_ENCRYPT
    | ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.USER_WITH_AUTH
)
_PCR_READ_BATCH: Final = 8  # TPM2_PCR_Read returns at most 8 digests per call (Part 3, 22.4)
_RETRIES: Final = 5  # TPM_RC_RETRY, _YIELDED, _TESTING: send the command again
_DEFAULT_NV_BUFFER: Final = 512


class TpmError(Exception):
    """A TPM command failed; the message names the command and the TPM's response code."""


class TpmCommandError(TpmError):
    """The TPM refused a command; `code` is its response code (TPM_RC)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AkBlobs:
    """A persisted AK: TPM2B_PUBLIC and TPM2B_PRIVATE (wrapped by the EK) as marshalled."""

    public: bytes
    private: bytes

    @property
    def tpmt_public(self) -> bytes:
        return self.public[2:]


@dataclass(frozen=True)
class BoundKeyBlobs:
    """A persisted bound key, as TPM2_Create returned it (marshalled).

    `public` (TPM2B_PUBLIC) and `private` (TPM2B_PRIVATE, wrapped by this TPM's EK and
    useless elsewhere) load it again; `creation_data` (TPM2B_CREATION_DATA),
    `creation_hash` (TPM2B_DIGEST) and `creation_ticket` (TPMT_TK_CREATION) are what
    TPM2_CertifyCreation takes, and only TPM2_Create gives them out.
    """

    public: bytes
    private: bytes
    creation_data: bytes
    creation_hash: bytes
    creation_ticket: bytes

    @property
    def tpmt_public(self) -> bytes:
        return self.public[2:]


@dataclass(frozen=True)
class Endorsement:
    """The EK as the verifier needs it: certificate (DER, if provisioned) and TPMT_PUBLIC."""

    kind: EkKind
    certificate: bytes | None
    public: bytes


class Tpm:
    """One connection to one TPM.  Not thread-safe: one Tpm per thread.

    Handles are the TPM's own (0x80xxxxxx transient objects, 0x03xxxxxx policy
    sessions); a resource manager virtualises them per connection.
    """

    def __init__(self, tcti: str, ek_kind: EkKind = "rsa") -> None:
        self.tcti = tcti
        self.ek_kind = ek_kind
        try:
            self._transport: Transport = open_transport(tcti)
        except TctiError as exc:
            raise TpmError(f"cannot open TPM at {tcti!r}: {exc}") from None
        self._ek_handle: int | None = None
        self._endorsement: Endorsement | None = None
        self._loaded_ak: tuple[AkBlobs, int] | None = None
        self._loaded_bound_key: tuple[BoundKeyBlobs, int] | None = None
        self._nv_buffer: int | None = None  # TPM_PT_NV_BUFFER_MAX, asked once
        self._closed = False

    def close(self) -> None:
        """Flush the transient objects this session loaded, then close it.  Without a
        resource manager (a bare swtpm socket) they would otherwise fill the TPM's
        object slots for the next user."""
        if self._closed:
            return
        self.forget_handles()
        self._closed = True
        self._transport.close()

    def __enter__(self) -> Tpm:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- commands --------------------------------------------------------------------

    def execute(
        self,
        code: cmd.CommandCode,
        handles: Sequence[int] = (),
        parameters: bytes = b"",
        auths: Sequence[cmd.Auth] = (),
        *,
        returns_handle: bool = False,
    ) -> cmd.Response:
        """Send one command and return its handles and parameter area.  A failure is a
        TpmError naming the command and the TPM's response code; the warnings after which
        a TPM asks to be asked again (RETRY, YIELDED, TESTING) are retried here."""
        command = cmd.build_command(code, handles, parameters, auths)
        for attempt in range(_RETRIES + 1):
            try:
                raw = self._transport.transact(command)
            except TctiError as exc:
                raise TpmError(f"TPM2_{code.name}: {exc}") from None
            try:
                return cmd.parse_response(raw, code, 1 if returns_handle else 0)
            except cmd.TpmCommandFailed as exc:
                if exc.code in cmd.RETRYABLE and attempt < _RETRIES:
                    time.sleep(0.01 * 2**attempt)
                    continue
                raise TpmCommandError(str(exc), exc.code) from None
            except TpmStructureMalformed as exc:
                raise TpmError(f"TPM2_{code.name}: malformed response: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _flush(self, handle: int) -> None:
        with contextlib.suppress(TpmError):  # already gone: nothing to release
            self.execute(CC.FlushContext, (), cmd.u32(handle))

    # --- endorsement key -------------------------------------------------------------

    def endorsement(self) -> Endorsement:
        self._load_ek()
        assert self._endorsement is not None
        return self._endorsement

    def nv_read(self, index: int) -> bytes | None:
        """An NV index's whole contents; None when it is not defined or never written."""
        try:
            response = self.execute(CC.NV_ReadPublic, (index,))
        except TpmCommandError as exc:
            if cmd.format_one_error(exc.code) == cmd.RC_HANDLE:
                return None
            raise
        try:
            public = cmd.parse_nv_public(response.parameters)
        except TpmStructureMalformed as exc:
            raise TpmError(f"TPM2_NV_ReadPublic 0x{index:08x}: {exc}") from None
        if not public.attributes & cmd.TPMA_NV_WRITTEN:
            return None
        if public.attributes & cmd.TPMA_NV_AUTHREAD:
            auth_handle = index
        elif public.attributes & cmd.TPMA_NV_OWNERREAD:
            auth_handle = cmd.TPM_RH_OWNER
        else:
            raise TpmError(f"NV index 0x{index:08x} is readable neither by its auth nor owner")
        chunk = self._nv_buffer_max()
        data = bytearray()
        while len(data) < public.data_size:
            size = min(chunk, public.data_size - len(data))
            window = cmd.u16(size) + cmd.u16(len(data))
            response = self.execute(CC.NV_Read, (auth_handle, index), window, (cmd.PASSWORD,))
            try:
                reader = Reader(response.parameters, "TPM2B_MAX_NV_BUFFER")
                part = reader.tpm2b("data")
            except TpmStructureMalformed as exc:
                raise TpmError(f"TPM2_NV_Read 0x{index:08x}: {exc}") from None
            if len(part) != size:
                raise TpmError(f"TPM2_NV_Read 0x{index:08x}: {len(part)} bytes, asked {size}")
            data += part
        return bytes(data)

    def _nv_buffer_max(self) -> int:
        """TPM_PT_NV_BUFFER_MAX: the most TPM2_NV_Read returns at once."""
        if self._nv_buffer is None:
            self._nv_buffer = self._ask_nv_buffer_max()
        return self._nv_buffer

    def _ask_nv_buffer_max(self) -> int:
        response = self.execute(
            CC.GetCapability,
            (),
            cmd.u32(cmd.TPM_CAP_TPM_PROPERTIES) + cmd.u32(cmd.TPM_PT_NV_BUFFER_MAX) + cmd.u32(1),
        )
        try:
            reader = Reader(response.parameters, "TPMS_CAPABILITY_DATA")
            reader.u8("moreData")
            reader.u32("capability")
            if reader.u32("count") >= 1 and reader.u32("property") == cmd.TPM_PT_NV_BUFFER_MAX:
                return max(1, reader.u32("value"))
        except TpmStructureMalformed as exc:
            raise TpmError(f"TPM2_GetCapability(TPM_PROPERTIES): {exc}") from None
        return _DEFAULT_NV_BUFFER

    def _load_ek(self) -> int:
        """TPM2_CreatePrimary of the EK its certificate certifies: the manufacturer's
        stored template if there is one, else the TCG default (with the stored nonce)."""
        if self._ek_handle is not None:
            return self._ek_handle
        cert_index, nonce_index, template_index = _EK_NV[self.ek_kind]
        what = f"creating the {self.ek_kind.upper()} EK failed"
        try:
            certificate = self.nv_read(cert_index)
            stored = self.nv_read(template_index)
            nonce = self.nv_read(nonce_index) or b""
        except TpmError as exc:
            raise TpmError(f"{what}: {exc}") from None
        try:
            if stored is None:
                template = cmd.ek_template(self.ek_kind, nonce)
            else:
                template = cmd.with_ek_nonce(stored, nonce)
        except ValueError as exc:
            raise TpmError(f"{what}: the EK template in NV 0x{template_index:08x}: {exc}") from None
        parameters = cmd.EMPTY_SENSITIVE + tpm2b(template) + tpm2b(b"") + cmd.EMPTY_PCR_SELECTION
        try:
            response = self.execute(
                CC.CreatePrimary,
                (cmd.TPM_RH_ENDORSEMENT,),
                parameters,
                (cmd.PASSWORD,),
                returns_handle=True,
            )
        except TpmError as exc:
            raise TpmError(f"{what}: {exc}") from None
        handle = response.handles[0]
        try:
            public = Reader(response.parameters, "TPM2_CreatePrimary").tpm2b("outPublic")
        except TpmStructureMalformed as exc:
            self._flush(handle)
            raise TpmError(f"TPM2_CreatePrimary: {exc}") from None
        self._ek_handle = handle
        self._endorsement = Endorsement(self.ek_kind, certificate or None, public)
        return handle

    def _ek_policy(self) -> cmd.Auth:
        """A policy session satisfying the EK's authPolicy, PolicySecret(TPM_RH_ENDORSEMENT)
        (EK Credential Profile 2.0, B.6), as the authorization of one command."""
        parameters = (
            tpm2b(os.urandom(32))  # nonceCaller
            + tpm2b(b"")  # encryptedSalt: unsalted
            + bytes([cmd.TPM_SE_POLICY])
            + cmd.u16(0x0010)  # symmetric: TPM_ALG_NULL, no parameter encryption
            + cmd.u16(HashAlg.SHA256)
        )
        try:
            response = self.execute(
                CC.StartAuthSession,
                (cmd.TPM_RH_NULL, cmd.TPM_RH_NULL),
                parameters,
                returns_handle=True,
            )
        except TpmError as exc:
            raise TpmError(f"starting a policy session failed: {exc}") from None
        session = response.handles[0]
        try:
            self.execute(
                CC.PolicySecret,
                (cmd.TPM_RH_ENDORSEMENT, session),
                tpm2b(b"") + tpm2b(b"") + tpm2b(b"") + cmd.u32(0),
                (cmd.PASSWORD,),
            )
        except TpmError as exc:
            self._flush(session)
            raise TpmError(f"PolicySecret(endorsement) failed: {exc}") from None
        return cmd.policy_auth(session, os.urandom(32))

    def _with_ek_policy(
        self,
        what: str,
        code: cmd.CommandCode,
        handles: Sequence[int],
        parameters: bytes,
        auths_before: Sequence[cmd.Auth] = (),
        *,
        returns_handle: bool = False,
    ) -> cmd.Response:
        """Run a command whose last authorization is the EK's policy.  The session ends
        with a successful command; a failed one leaves it, so it is flushed."""
        policy = self._ek_policy()
        try:
            return self.execute(
                code, handles, parameters, (*auths_before, policy), returns_handle=returns_handle
            )
        except TpmError as exc:
            self._flush(policy.handle)
            raise TpmError(f"{what} failed: {exc}") from None

    # --- attestation key -------------------------------------------------------------

    def create_ak(self, algorithm: AkAlgorithm = "ecc") -> AkBlobs:
        ek = self._load_ek()
        self._flush_bound_key()  # TPM2_Create needs a free object slot
        private, public, *_ = self._create_under_ek(
            "creating the AK", cmd.signing_key_template(algorithm, _AK_ATTRIBUTES), ek
        )
        return AkBlobs(public, private)

    def _create_under_ek(
        self, what: str, template: bytes, ek: int
    ) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """TPM2_Create under the EK: TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2B_CREATION_DATA,
        TPM2B_DIGEST (creation hash) and TPMT_TK_CREATION, each as marshalled."""
        parameters = cmd.EMPTY_SENSITIVE + tpm2b(template) + tpm2b(b"") + cmd.EMPTY_PCR_SELECTION
        response = self._with_ek_policy(what, CC.Create, (ek,), parameters)
        try:
            reader = Reader(response.parameters, "TPM2_Create")
            private = cmd.read_tpm2b_whole(reader, "outPrivate")
            public = cmd.read_tpm2b_whole(reader, "outPublic")
            creation_data = cmd.read_tpm2b_whole(reader, "creationData")
            creation_hash = cmd.read_tpm2b_whole(reader, "creationHash")
            start = reader.offset
            reader.u16("creationTicket.tag")
            reader.u32("creationTicket.hierarchy")
            reader.tpm2b("creationTicket.digest")
            ticket = reader.since(start)
            reader.end()
        except TpmStructureMalformed as exc:
            raise TpmError(f"{what}: {exc}") from None
        return private, public, creation_data, creation_hash, ticket

    def _load_ak(self, ak: AkBlobs) -> int:
        if self._loaded_ak is not None and self._loaded_ak[0] == ak:
            return self._loaded_ak[1]
        if self._loaded_ak is not None:
            self._flush(self._loaded_ak[1])
            self._loaded_ak = None
        handle = self._load_under_ek(ak.public, ak.private, "AK")
        self._loaded_ak = (ak, handle)
        return handle

    def _load_under_ek(self, public_blob: bytes, private_blob: bytes, what: str) -> int:
        """TPM2_Load of a child of the EK (the AK, the bound key) from its blobs."""
        ek = self._load_ek()
        try:
            unwrap_tpm2b(private_blob, "TPM2B_PRIVATE")
            unwrap_tpm2b(public_blob, "TPM2B_PUBLIC")
        except TpmStructureMalformed as exc:
            raise TpmError(f"the persisted {what} is corrupt: {exc}") from None
        response = self._with_ek_policy(
            f"loading the {what} under this TPM's EK",
            CC.Load,
            (ek,),
            private_blob + public_blob,
            returns_handle=True,
        )
        return response.handles[0]

    def activate_credential(
        self, ak: AkBlobs, credential_blob: bytes, encrypted_secret: bytes
    ) -> bytes:
        """TPM2_ActivateCredential: recover the verifier's secret if `ak` sits beside our EK."""
        ak_handle = self._load_ak(ak)
        ek = self._load_ek()
        if len(credential_blob) > 0xFFFF or len(encrypted_secret) > 0xFFFF:
            raise TpmError("ActivateCredential failed: the challenge is too large")
        response = self._with_ek_policy(
            "ActivateCredential",
            CC.ActivateCredential,
            (ak_handle, ek),
            tpm2b(credential_blob) + tpm2b(encrypted_secret),
            (cmd.PASSWORD,),
        )
        try:
            return Reader(response.parameters, "TPM2_ActivateCredential").tpm2b("certInfo")
        except TpmStructureMalformed as exc:
            raise TpmError(f"ActivateCredential: {exc}") from None

    # --- bound key ------------------------------------------------------------------

    def create_bound_key(self) -> BoundKeyBlobs:
        """TPM2_Create a bound key under the EK; the blobs are for the caller to persist.
        About 5 ms on swtpm (ECC keys are cheap to generate; the EK is already loaded)."""
        ek = self._load_ek()
        # TPM2_Create needs a free object slot while it runs: with the EK, an AK and a
        # bound key loaded, swtpm's three are taken.  The old key reloads in ~4 ms.
        self._flush_bound_key()
        private, public, creation_data, creation_hash, ticket = self._create_under_ek(
            "creating the bound key",
            cmd.signing_key_template("ecc", _BOUND_KEY_ATTRIBUTES),
            ek,
        )
        return BoundKeyBlobs(public, private, creation_data, creation_hash, ticket)

    def _load_bound_key(self, key: BoundKeyBlobs) -> int:
        if self._loaded_bound_key is not None and self._loaded_bound_key[0] == key:
            return self._loaded_bound_key[1]
        self._flush_bound_key()
        handle = self._load_under_ek(key.public, key.private, "bound key")
        self._loaded_bound_key = (key, handle)
        return handle

    def certify(
        self, object_handle: int, ak_handle: int, nonce: bytes, scheme: bytes = cmd.NULL_SCHEME
    ) -> tuple[bytes, bytes]:
        """TPM2_Certify: TPMS_ATTEST and TPMT_SIGNATURE.  The object needs the ADMIN role
        (its empty password, adminWithPolicy being clear), the AK the USER role."""
        response = self.execute(
            CC.Certify,
            (object_handle, ak_handle),
            tpm2b(nonce) + scheme,
            (cmd.PASSWORD, cmd.PASSWORD),
        )
        return _attest_and_signature(response, "TPM2_Certify")

    def certify_creation(
        self,
        ak_handle: int,
        object_handle: int,
        nonce: bytes,
        creation_hash: bytes,
        ticket: bytes,
        scheme: bytes = cmd.NULL_SCHEME,
    ) -> tuple[bytes, bytes]:
        """TPM2_CertifyCreation (`creation_hash` the TPM2B_DIGEST's payload, `ticket` a
        marshalled TPMT_TK_CREATION): TPMS_ATTEST and TPMT_SIGNATURE."""
        response = self.execute(
            CC.CertifyCreation,
            (ak_handle, object_handle),
            tpm2b(nonce) + tpm2b(creation_hash) + scheme + ticket,
            (cmd.PASSWORD,),
        )
        return _attest_and_signature(response, "TPM2_CertifyCreation")

    def certify_bound_key(self, ak: AkBlobs, key: BoundKeyBlobs, nonce: bytes) -> KeyCertification:
        """TPM2_Certify (the key is loaded beside the AK) and TPM2_CertifyCreation (this
        TPM created it: the ticket checks out), both signed by the AK over `nonce`."""
        from verifier.evidence.certify import KeyCertification

        ak_handle = self._load_ak(ak)
        key_handle = self._load_bound_key(key)
        scheme = _signing_scheme(ak)
        try:
            if len(nonce) > 64:
                raise TpmStructureMalformed("qualifyingData", 0, f"{len(nonce)} bytes")
            creation_hash = unwrap_tpm2b(key.creation_hash, "TPM2B_DIGEST")
            creation_data = unwrap_tpm2b(key.creation_data, "TPM2B_CREATION_DATA")
        except TpmStructureMalformed as exc:
            raise TpmError(
                f"the bound key's creation record or the nonce is unusable: {exc}"
            ) from None
        try:
            certify_info, certify_signature = self.certify(key_handle, ak_handle, nonce, scheme)
        except TpmError as exc:
            raise TpmError(f"TPM2_Certify of the bound key failed: {exc}") from None
        try:
            creation_info, creation_signature = self.certify_creation(
                ak_handle, key_handle, nonce, creation_hash, key.creation_ticket, scheme
            )
        except TpmError as exc:
            raise TpmError(f"TPM2_CertifyCreation of the bound key failed: {exc}") from None
        return KeyCertification(
            public_area=key.tpmt_public,
            certify_info=certify_info,
            certify_signature=certify_signature,
            creation_data=creation_data,
            creation_info=creation_info,
            creation_signature=creation_signature,
        )

    def sign(self, key: BoundKeyBlobs, digest: bytes) -> bytes:
        """TPM2_Sign of a SHA-256 digest with the bound key (ECDSA-SHA256): TPMT_SIGNATURE.
        The key is unrestricted, so the NULL hash-check ticket suffices."""
        if len(digest) != HashAlg.SHA256.digest_size:
            raise TpmError(f"TPM2_Sign: a SHA-256 digest has 32 bytes, not {len(digest)}")
        handle = self._load_bound_key(key)
        response = self.execute(
            CC.Sign,
            (handle,),
            tpm2b(digest) + cmd.NULL_SCHEME + cmd.NULL_HASHCHECK,
            (cmd.PASSWORD,),
        )
        try:
            reader = Reader(response.parameters, "TPM2_Sign")
            signature = cmd.read_signature(reader)
            reader.end()
        except TpmStructureMalformed as exc:
            raise TpmError(f"TPM2_Sign: {exc}") from None
        return signature

    # --- quotes and PCRs -------------------------------------------------------------

    def quote(self, ak: AkBlobs, selection: PcrSelection, nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote: the TPMS_ATTEST and TPMT_SIGNATURE, marshalled."""
        if not any(bank.pcrs for bank in selection.banks):
            raise TpmError("the PCR selection to quote is empty")
        if len(nonce) > 64:
            raise TpmError(f"TPM2_Quote: a nonce of {len(nonce)} bytes is too long")
        handle = self._load_ak(ak)
        banks = PcrSelection(tuple(bank for bank in selection.banks if bank.pcrs))
        try:
            pcrs = marshal_pcr_selection(banks)
        except ValueError as exc:
            raise TpmError(f"TPM2_Quote: {exc}") from None
        try:
            response = self.execute(
                CC.Quote, (handle,), tpm2b(nonce) + cmd.NULL_SCHEME + pcrs, (cmd.PASSWORD,)
            )
        except TpmError as exc:
            raise TpmError(f"TPM2_Quote failed: {exc}") from None
        return _attest_and_signature(response, "TPM2_Quote")

    def read_pcrs(self, selection: PcrSelection) -> dict[HashAlg, dict[int, bytes]]:
        values: dict[HashAlg, dict[int, bytes]] = {}
        for bank in selection.banks:
            if not bank.pcrs:
                continue
            alg = HashAlg(bank.hash_alg)
            values[alg] = {}
            pcrs = list(bank.pcrs)
            for start in range(0, len(pcrs), _PCR_READ_BATCH):
                batch = pcrs[start : start + _PCR_READ_BATCH]
                spec = f"{alg.bank_name}:{','.join(map(str, batch))}"
                asked = PcrSelection((PcrBankSelection(alg, tuple(batch)),))
                try:
                    response = self.execute(CC.PCR_Read, (), marshal_pcr_selection(asked))
                except ValueError as exc:  # a PCR beyond any TPM's
                    raise TpmError(f"TPM2_PCR_Read {spec}: {exc}") from None
                except TpmError as exc:
                    raise TpmError(f"TPM2_PCR_Read {spec} failed: {exc}") from None
                try:
                    reader = Reader(response.parameters, "TPM2_PCR_Read")
                    reader.u32("pcrUpdateCounter")
                    returned = read_pcr_selection(reader)
                    digests = [
                        reader.tpm2b("digest", 64) for _ in range(reader.u32("pcrValues.count"))
                    ]
                    reader.end()
                except TpmStructureMalformed as exc:
                    raise TpmError(f"TPM2_PCR_Read {spec}: {exc}") from None
                if returned != asked or len(digests) != len(batch):
                    raise TpmError(f"TPM2_PCR_Read {spec}: bank not allocated on this TPM")
                for pcr, digest in zip(batch, digests, strict=True):
                    if len(digest) != alg.digest_size:
                        raise TpmError(f"TPM2_PCR_Read {spec}: {len(digest)}-byte digest")
                    values[alg][pcr] = digest
        return values

    def quote_with_pcrs(
        self, ak: AkBlobs, selection: PcrSelection, nonce: bytes, attempts: int = 3
    ) -> tuple[bytes, bytes, dict[HashAlg, dict[int, bytes]]]:
        """Quote and the PCR values it covers.  A PCR may be extended between the read and
        the quote, so the PCRs are read before and after and the pair retried until both
        reads agree (then the quote, taken between them, is over those values)."""
        for _ in range(attempts):
            before = self.read_pcrs(selection)
            message, signature = self.quote(ak, selection, nonce)
            if self.read_pcrs(selection) == before:
                return message, signature, before
        raise TpmError(f"PCRs kept changing during {attempts} quote attempts")

    def allocated_banks(self) -> dict[HashAlg, frozenset[int]]:
        """The PCR banks this TPM has allocated and the PCRs in each (TPM2_GetCapability
        TPM_CAP_PCRS, Part 3, 30.2), for the hash algorithms Lightgate knows.  A bank a
        PCR is extended in must be allocated; one left out of an extend keeps its value."""
        try:
            response = self.execute(
                CC.GetCapability, (), cmd.u32(cmd.TPM_CAP_PCRS) + cmd.u32(0) + cmd.u32(1)
            )
        except TpmError as exc:
            raise TpmError(f"TPM2_GetCapability(PCRS) failed: {exc}") from None
        try:
            reader = Reader(response.parameters, "TPMS_CAPABILITY_DATA")
            reader.u8("moreData")
            reader.u32("capability")
            assigned = read_pcr_selection(reader)
        except TpmStructureMalformed as exc:
            raise TpmError(f"TPM2_GetCapability(PCRS): {exc}") from None
        banks: dict[HashAlg, frozenset[int]] = {}
        for bank in assigned.banks:
            try:
                alg = HashAlg(bank.hash_alg)
            except ValueError:
                continue  # an algorithm Lightgate cannot name is never extended by it
            if bank.pcrs:
                banks[alg] = frozenset(bank.pcrs)
        return banks

    def extend_pcr(self, pcr: int, digests: dict[HashAlg, bytes]) -> None:
        """TPM2_PCR_Extend: the simulator replaying measurements, the runtime log
        measuring an asset tag or an image."""
        for alg, digest in digests.items():
            if len(digest) != alg.digest_size:
                raise TpmError(f"TPM2_PCR_Extend of PCR {pcr}: {alg.bank_name} digest size")
        values = cmd.u32(len(digests)) + b"".join(
            cmd.u16(alg) + digest for alg, digest in digests.items()
        )
        try:
            self.execute(CC.PCR_Extend, (pcr,), values, (cmd.PASSWORD,))
        except TpmError as exc:
            raise TpmError(f"TPM2_PCR_Extend of PCR {pcr} failed: {exc}") from None

    def forget_handles(self) -> None:
        """Drop the EK, AK and bound key handles (after a TPM reset or a resource manager
        restart they name nothing); the next command loads them again."""
        self._flush_bound_key()
        if self._loaded_ak is not None:
            self._flush(self._loaded_ak[1])
            self._loaded_ak = None
        if self._ek_handle is not None:
            self._flush(self._ek_handle)
            self._ek_handle = None

    def _flush_bound_key(self) -> None:
        if self._loaded_bound_key is not None:
            self._flush(self._loaded_bound_key[1])
            self._loaded_bound_key = None


def _attest_and_signature(response: cmd.Response, command: str) -> tuple[bytes, bytes]:
    """TPM2B_ATTEST (its payload, TPMS_ATTEST) and TPMT_SIGNATURE from a response."""
    try:
        reader = Reader(response.parameters, command)
        attest = reader.tpm2b("TPM2B_ATTEST")
        signature = cmd.read_signature(reader)
        reader.end()
    except TpmStructureMalformed as exc:
        raise TpmError(f"{command}: {exc}") from None
    return attest, signature


def _signing_scheme(ak: AkBlobs) -> bytes:
    """The AK's own scheme as a TPMT_SIG_SCHEME: the inScheme of Certify and
    CertifyCreation must be it (or NULL) for a key that has one (Part 3, 18.2)."""
    try:
        return cmd.signature_scheme(parse_public(ak.tpmt_public))
    except TpmStructureMalformed as exc:
        raise TpmError(f"the persisted AK is corrupt: {exc}") from None

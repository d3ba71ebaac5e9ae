"""The node's TPM, over tpm2-pytss ESAPI.  The only module in Lightgate that opens a TPM.

The TCTI comes from configuration in tpm2-tools form: `swtpm:host=127.0.0.1,port=2321`,
`device:/dev/tpmrm0` (the kernel's resource manager) or `tabrmd:bus_type=system`.

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
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

# tpm2-tss logs every expected TPM error (such as probing for an absent EK template
# index) to stderr; the agent reports failures itself.  An operator can still set it.
os.environ.setdefault("TSS2_LOG", "all+NONE")

from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.types import (
    TPM2B_CREATION_DATA,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPML_PCR_SELECTION,
    TPMS_SCHEME_HASH,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_TK_CREATION,
    TPMU_SIG_SCHEME,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template

from verifier.evidence.certify import KeyCertification
from verifier.evidence.tpm_structures import HashAlg, PcrSelection

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

EkKind = Literal["rsa", "ecc"]
AkAlgorithm = Literal["ecc", "rsa"]

_EK_TEMPLATES: dict[str, str] = {"rsa": "EK-RSA2048", "ecc": "EK-ECC256"}
_AK_ALGORITHMS: dict[str, str] = {
    "ecc": "ecc256:ecdsa-sha256:null",
    "rsa": "rsa2048:rsassa-sha256:null",
}
_AK_ATTRIBUTES = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)
# The bound key: a signing-only key that never leaves this TPM and that the TPM made
# (what verifier.evidence.certify requires), usable with an empty password.
_BOUND_KEY_ALGORITHM = "ecc256:ecdsa-sha256:null"
_BOUND_KEY_ATTRIBUTES = (
    TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)
_PCR_READ_BATCH = 8  # TPM2_PCR_Read returns at most 8 digests per call (Part 3, 22.4)


class TpmError(Exception):
    """A TPM command failed; the message names the command and the TPM's response code."""


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
    """An ESAPI session to one TPM.  Not thread-safe: one Tpm per thread."""

    def __init__(self, tcti: str, ek_kind: EkKind = "rsa") -> None:
        self.tcti = tcti
        self.ek_kind = ek_kind
        try:
            self._ectx = ESAPI(tcti)
        except TSS2_Exception as exc:
            raise TpmError(f"cannot open TPM at {tcti!r}: {exc}") from None
        self._ek_handle: Any = None
        self._endorsement: Endorsement | None = None
        self._loaded_ak: tuple[AkBlobs, Any] | None = None
        self._loaded_bound_key: tuple[BoundKeyBlobs, Any] | None = None
        self._closed = False

    def close(self) -> None:
        """Flush the transient objects this session loaded, then close it.  Without a
        resource manager (a bare swtpm socket) they would otherwise fill the TPM's
        object slots for the next user."""
        self.forget_handles()
        if not self._closed:
            self._closed = True
            self._ectx.close()

    def __enter__(self) -> Tpm:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- endorsement key -------------------------------------------------------------

    def endorsement(self) -> Endorsement:
        self._load_ek()
        assert self._endorsement is not None
        return self._endorsement

    def _load_ek(self) -> Any:
        if self._ek_handle is not None:
            return self._ek_handle
        try:
            certificate, template = create_ek_template(
                _EK_TEMPLATES[self.ek_kind], NVReadEK(self._ectx)
            )
            handle, public, _, _, _ = self._ectx.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        except TSS2_Exception as exc:
            raise TpmError(f"creating the {self.ek_kind.upper()} EK failed: {exc}") from None
        self._ek_handle = handle
        self._endorsement = Endorsement(
            self.ek_kind, bytes(certificate) if certificate else None, public.publicArea.marshal()
        )
        return handle

    def _ek_policy_session(self) -> Any:
        """A policy session satisfying the EK's authPolicy, PolicySecret(TPM_RH_ENDORSEMENT)
        (EK Credential Profile 2.0, B.6)."""
        try:
            session = self._ectx.start_auth_session(
                tpm_key=ESYS_TR.NONE,
                bind=ESYS_TR.NONE,
                session_type=TPM2_SE.POLICY,
                symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                auth_hash=TPM2_ALG.SHA256,
            )
        except TSS2_Exception as exc:
            raise TpmError(f"starting a policy session failed: {exc}") from None
        try:
            self._ectx.policy_secret(ESYS_TR.ENDORSEMENT, session)
        except TSS2_Exception as exc:
            self._flush(session)
            raise TpmError(f"PolicySecret(endorsement) failed: {exc}") from None
        return session

    # --- attestation key -------------------------------------------------------------

    def create_ak(self, algorithm: AkAlgorithm = "ecc") -> AkBlobs:
        ek = self._load_ek()
        self._flush_bound_key()  # TPM2_Create needs a free object slot
        template = TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC.parse(
                alg=_AK_ALGORITHMS[algorithm], objectAttributes=_AK_ATTRIBUTES, nameAlg="sha256"
            )
        )
        session = self._ek_policy_session()
        try:
            private, public, _, _, _ = self._ectx.create(ek, None, template, session1=session)
        except TSS2_Exception as exc:
            raise TpmError(f"creating the AK failed: {exc}") from None
        finally:
            self._flush(session)
        return AkBlobs(public.marshal(), private.marshal())

    def _load_ak(self, ak: AkBlobs) -> Any:
        if self._loaded_ak is not None and self._loaded_ak[0] == ak:
            return self._loaded_ak[1]
        if self._loaded_ak is not None:
            self._flush(self._loaded_ak[1])
            self._loaded_ak = None
        handle = self._load_under_ek(ak.public, ak.private, "AK")
        self._loaded_ak = (ak, handle)
        return handle

    def _load_under_ek(self, public_blob: bytes, private_blob: bytes, what: str) -> Any:
        """TPM2_Load of a child of the EK (the AK, the bound key) from its blobs."""
        ek = self._load_ek()
        try:
            public, _ = TPM2B_PUBLIC.unmarshal(public_blob)
            private, _ = TPM2B_PRIVATE.unmarshal(private_blob)
        except (TSS2_Exception, ValueError) as exc:
            raise TpmError(f"the persisted {what} is corrupt: {exc}") from None
        session = self._ek_policy_session()
        try:
            return self._ectx.load(ek, private, public, session1=session)
        except TSS2_Exception as exc:
            raise TpmError(f"loading the {what} under this TPM's EK failed: {exc}") from None
        finally:
            self._flush(session)

    def activate_credential(
        self, ak: AkBlobs, credential_blob: bytes, encrypted_secret: bytes
    ) -> bytes:
        """TPM2_ActivateCredential: recover the verifier's secret if `ak` sits beside our EK."""
        ak_handle = self._load_ak(ak)
        ek = self._load_ek()
        session = self._ek_policy_session()
        try:
            secret = self._ectx.activate_credential(
                ak_handle,
                ek,
                TPM2B_ID_OBJECT(credential_blob),
                TPM2B_ENCRYPTED_SECRET(encrypted_secret),
                session1=ESYS_TR.PASSWORD,
                session2=session,
            )
        except TSS2_Exception as exc:
            raise TpmError(f"ActivateCredential failed: {exc}") from None
        finally:
            self._flush(session)
        return bytes(secret)

    # --- bound key ------------------------------------------------------------------

    def create_bound_key(self) -> BoundKeyBlobs:
        """TPM2_Create a bound key under the EK; the blobs are for the caller to persist.
        About 5 ms on swtpm (ECC keys are cheap to generate; the EK is already loaded)."""
        ek = self._load_ek()
        # TPM2_Create needs a free object slot while it runs: with the EK, an AK and a
        # bound key loaded, swtpm's three are taken.  The old key reloads in ~4 ms.
        self._flush_bound_key()
        template = TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC.parse(
                alg=_BOUND_KEY_ALGORITHM, objectAttributes=_BOUND_KEY_ATTRIBUTES, nameAlg="sha256"
            )
        )
        session = self._ek_policy_session()
        try:
            private, public, creation_data, creation_hash, ticket = self._ectx.create(
                ek, None, template, session1=session
            )
        except TSS2_Exception as exc:
            raise TpmError(f"creating the bound key failed: {exc}") from None
        finally:
            self._flush(session)
        return BoundKeyBlobs(
            public=public.marshal(),
            private=private.marshal(),
            creation_data=creation_data.marshal(),
            creation_hash=creation_hash.marshal(),
            creation_ticket=ticket.marshal(),
        )

    def _load_bound_key(self, key: BoundKeyBlobs) -> Any:
        if self._loaded_bound_key is not None and self._loaded_bound_key[0] == key:
            return self._loaded_bound_key[1]
        self._flush_bound_key()
        handle = self._load_under_ek(key.public, key.private, "bound key")
        self._loaded_bound_key = (key, handle)
        return handle

    def certify_bound_key(self, ak: AkBlobs, key: BoundKeyBlobs, nonce: bytes) -> KeyCertification:
        """TPM2_Certify (the key is loaded beside the AK) and TPM2_CertifyCreation (this
        TPM created it: the ticket checks out), both signed by the AK over `nonce`."""
        ak_handle = self._load_ak(ak)
        key_handle = self._load_bound_key(key)
        scheme = _signing_scheme(ak)
        try:
            qualifying_data = TPM2B_DATA(nonce)
            creation_hash, _ = TPM2B_DIGEST.unmarshal(key.creation_hash)
            ticket, _ = TPMT_TK_CREATION.unmarshal(key.creation_ticket)
            creation_data, _ = TPM2B_CREATION_DATA.unmarshal(key.creation_data)
        except (TSS2_Exception, ValueError) as exc:
            raise TpmError(
                f"the bound key's creation record or the nonce is unusable: {exc}"
            ) from None
        try:
            # Certify: the object needs ADMIN role (its empty password, as adminWithPolicy
            # is clear), the AK USER role; CertifyCreation authorizes only the AK.
            certify_info, certify_signature = self._ectx.certify(
                key_handle, ak_handle, qualifying_data, scheme
            )
        except TSS2_Exception as exc:
            raise TpmError(f"TPM2_Certify of the bound key failed: {exc}") from None
        try:
            creation_info, creation_signature = self._ectx.certify_creation(
                ak_handle, key_handle, qualifying_data, creation_hash, scheme, ticket
            )
        except TSS2_Exception as exc:
            raise TpmError(f"TPM2_CertifyCreation of the bound key failed: {exc}") from None
        return KeyCertification(
            public_area=key.tpmt_public,
            certify_info=certify_info.marshal()[2:],
            certify_signature=certify_signature.marshal(),
            creation_data=creation_data.marshal()[2:],
            creation_info=creation_info.marshal()[2:],
            creation_signature=creation_signature.marshal(),
        )

    def bound_key_signer(self, key: BoundKeyBlobs) -> ec.EllipticCurvePrivateKey:
        """The bound key as a `cryptography` private key whose sign() is TPM2_Sign (for a
        CSR builder).  Valid until forget_handles(), close() or another bound key is
        loaded; its sign() raises TSS2_Exception, which `sign_csr` turns into TpmError."""
        from tpm2_pytss.cryptography import tpm_ecc_private_key

        handle = self._load_bound_key(key)
        try:
            signer: ec.EllipticCurvePrivateKey = tpm_ecc_private_key(self._ectx, handle)
        except (TSS2_Exception, ValueError) as exc:
            raise TpmError(f"the bound key cannot sign: {exc}") from None
        return signer

    def sign_csr(
        self, key: BoundKeyBlobs, builder: x509.CertificateSigningRequestBuilder
    ) -> x509.CertificateSigningRequest:
        """Sign a PKCS#10 request with the bound key (ECDSA-SHA256, in the TPM)."""
        from cryptography.hazmat.primitives import hashes

        signer = self.bound_key_signer(key)
        try:
            return builder.sign(signer, hashes.SHA256())
        except TSS2_Exception as exc:
            raise TpmError(f"TPM2_Sign with the bound key failed: {exc}") from None

    # --- quotes and PCRs -------------------------------------------------------------

    def quote(self, ak: AkBlobs, selection: PcrSelection, nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote: the TPMS_ATTEST and TPMT_SIGNATURE, marshalled."""
        handle = self._load_ak(ak)
        try:
            attest, signature = self._ectx.quote(
                handle, _pytss_selection(selection), TPM2B_DATA(nonce)
            )
        except TSS2_Exception as exc:
            raise TpmError(f"TPM2_Quote failed: {exc}") from None
        return attest.marshal()[2:], signature.marshal()

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
                try:
                    _, _, digests = self._ectx.pcr_read(TPML_PCR_SELECTION.parse(spec))
                except TSS2_Exception as exc:
                    raise TpmError(f"TPM2_PCR_Read {spec} failed: {exc}") from None
                if len(digests) != len(batch):
                    raise TpmError(f"TPM2_PCR_Read {spec}: bank not allocated on this TPM")
                for pcr, digest in zip(batch, digests, strict=True):
                    values[alg][pcr] = bytes(digest)
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
            _, capability = self._ectx.get_capability(TPM2_CAP.PCRS, 0, 1)
        except TSS2_Exception as exc:
            raise TpmError(f"TPM2_GetCapability(PCRS) failed: {exc}") from None
        assigned = capability.data.assignedPCR
        banks: dict[HashAlg, frozenset[int]] = {}
        for index in range(assigned.count):
            selection = assigned.pcrSelections[index]
            try:
                bank = HashAlg(int(selection.hash))
            except ValueError:
                continue  # an algorithm Lightgate cannot name is never extended by it
            bitmap = bytes(selection.pcrSelect)[: selection.sizeofSelect]
            pcrs = frozenset(i for i in range(8 * len(bitmap)) if bitmap[i // 8] >> (i % 8) & 1)
            if pcrs:
                banks[bank] = pcrs
        return banks

    def extend_pcr(self, pcr: int, digests: dict[HashAlg, bytes]) -> None:
        """TPM2_PCR_Extend: the simulator replaying measurements, the runtime log
        measuring an asset tag."""
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

        values = TPML_DIGEST_VALUES(
            [
                TPMT_HA(hashAlg=int(alg), digest=TPMU_HA(**{alg.bank_name: digest}))
                for alg, digest in digests.items()
            ]
        )
        try:
            self._ectx.pcr_extend(ESYS_TR.parse(f"pcr{pcr}"), values)
        except TSS2_Exception as exc:
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

    def _flush(self, handle: Any) -> None:
        with contextlib.suppress(TSS2_Exception):  # already gone: nothing to release
            self._ectx.flush_context(handle)


def _signing_scheme(ak: AkBlobs) -> Any:
    """The AK's own scheme as a TPMT_SIG_SCHEME: the inScheme of Certify and
    CertifyCreation must be it (or NULL) for a key that has one (Part 3, 18.2)."""
    try:
        public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    except (TSS2_Exception, ValueError) as exc:
        raise TpmError(f"the persisted AK is corrupt: {exc}") from None
    scheme = public.publicArea.parameters.asymDetail.scheme
    return TPMT_SIG_SCHEME(
        scheme=scheme.scheme,
        details=TPMU_SIG_SCHEME(any=TPMS_SCHEME_HASH(hashAlg=scheme.details.anySig.hashAlg)),
    )


def _pytss_selection(selection: PcrSelection) -> Any:
    spec = "+".join(
        f"{HashAlg(bank.hash_alg).bank_name}:{','.join(map(str, bank.pcrs))}"
        for bank in selection.banks
        if bank.pcrs
    )
    if not spec:
        raise TpmError("the PCR selection to quote is empty")
    return TPML_PCR_SELECTION.parse(spec)

"""Typed refusals of evidence.

Every check the verifier makes on evidence has its own exception class, and each class
names its check in `check` (a stable, kebab-case identifier that results, logs, the CLI
and the simulator print).  Messages name the node, the PCR and the expected and actual
values where there are any.
"""

from __future__ import annotations

from typing import ClassVar

from lightgate.errors import Refusal


class EvidenceError(Refusal):
    """Evidence was refused.  `check` names the check that refused it."""

    check: ClassVar[str] = "evidence"


class TpmStructureMalformed(EvidenceError):
    """A TPM structure could not be parsed: short, oversized or inconsistent."""

    check = "malformed"

    def __init__(self, structure: str, offset: int, detail: str) -> None:
        self.structure = structure
        self.offset = offset
        super().__init__(f"{structure} at byte {offset}: {detail}")


class QuoteMagicInvalid(EvidenceError):
    """TPMS_ATTEST.magic is not TPM_GENERATED_VALUE: the TPM did not produce it."""

    check = "quote-magic"


class QuoteTypeInvalid(EvidenceError):
    """TPMS_ATTEST.type is not TPM_ST_ATTEST_QUOTE."""

    check = "quote-type"


class QuoteSignatureInvalid(EvidenceError):
    """The signature does not verify under the enrolled AK, or its scheme is not the AK's."""

    check = "quote-signature"


class NonceUnknown(EvidenceError):
    """The quote's extraData is not a nonce this verifier issued."""

    check = "nonce-unknown"


class NonceMismatch(EvidenceError):
    """The quote's extraData is not the nonce issued to this node."""

    check = "nonce-mismatch"


class NonceReplayed(EvidenceError):
    """The nonce was already used by an earlier attestation."""

    check = "nonce-replayed"


class NonceExpired(EvidenceError):
    """The nonce's lifetime ended before the evidence arrived."""

    check = "nonce-expired"


class PcrSelectionMismatch(EvidenceError):
    """The quote does not cover the PCRs the verifier asked for, or the values supplied
    are not exactly the quoted selection."""

    check = "pcr-selection"


class PcrDigestMismatch(EvidenceError):
    """The supplied PCR values do not hash to the quoted pcrDigest."""

    check = "pcr-digest"


class ClockRollback(EvidenceError):
    """TPM clock, resetCount or restartCount went backwards since the last accepted quote."""

    check = "clock-rollback"


class ChecksFailed(EvidenceError):
    """More than one check refused the same evidence; all of them are in `failures`."""

    check = "multiple"

    def __init__(self, failures: list[EvidenceError], *, node_id: str | None = None) -> None:
        self.failures = tuple(failures)
        super().__init__("; ".join(f.reason for f in failures), node_id=node_id)

    @property
    def reason(self) -> str:
        return "; ".join(f.reason for f in self.failures)


class EventLogMalformed(EvidenceError):
    """The measured-boot event log could not be parsed.

    `offset` is the byte offset of the record that failed and `event` its number
    (records are numbered from 0, the Spec ID header included), so an operator can
    find the bytes with a hex dump.
    """

    check = "event-log-malformed"

    def __init__(self, offset: int, event: int, detail: str, *, node_id: str | None = None) -> None:
        self.offset = offset
        self.event = event
        self.detail = detail
        super().__init__(f"event {event} at byte {offset}: {detail}", node_id=node_id)


class EventDataMalformed(EvidenceError):
    """An event's data does not hold the structure its event type defines.

    Raised by the event-data parsers; claims extraction turns it into a finding rather
    than refusing the whole log, because the log's digests (what the quote proves) are
    still sound.
    """

    check = "event-data-malformed"

    def __init__(self, structure: str, offset: int, detail: str) -> None:
        self.structure = structure
        self.offset = offset
        super().__init__(f"{structure} at byte {offset}: {detail}")


class EventLogReplayMismatch(EvidenceError):
    """Replaying the event log does not give the quoted PCR values: the log is not the
    boot the TPM measured (edited, truncated or from another boot)."""

    check = "event-log-replay"


class EventLogBankMissing(EvidenceError):
    """The log has no digests for any bank the quote covers, so it cannot be checked."""

    check = "event-log-bank"


class EventLogMissing(EvidenceError):
    """The verifier needs the boot event log to appraise this node, and none was sent."""

    check = "event-log-missing"


class GoldenValuesMissing(EvidenceError):
    """No golden values are active, so the boot cannot be appraised (closed by default)."""

    check = "golden-values-missing"


class GoldenValuesDeviation(EvidenceError):
    """The boot's claims differ from every active golden-values document."""

    check = "golden-values"


class RuntimeLogMalformed(EvidenceError):
    """Lightgate's runtime event log could not be parsed, or holds something it may not:
    a record other than an EV_EVENT_TAG in the runtime PCR, a TCG_PCClientTaggedEvent
    that does not hold together, a tagged-event ID Lightgate does not define.

    `event` is the record's number (the Spec ID header is 0) and `offset` its byte
    offset, as for the boot log."""

    check = "runtime-log"

    def __init__(self, offset: int, event: int, detail: str, *, node_id: str | None = None) -> None:
        self.offset = offset
        self.event = event
        self.detail = detail
        super().__init__(f"runtime log event {event} at byte {offset}: {detail}", node_id=node_id)


class RuntimeLogDigestMismatch(EvidenceError):
    """A runtime-log event's digest is not the hash of its event data.  Replay extends
    the digests, so without this check a log could pair the digests the TPM saw with
    event data it never measured (another asset tag, another image)."""

    check = "runtime-log-digest"


class RuntimeLogReplayMismatch(EvidenceError):
    """Replaying the runtime log does not give the quoted runtime PCR: an event is missing
    (something extended the PCR without a record), added or from another boot.
    `mismatches` maps each bank that differs to (replayed, quoted)."""

    check = "runtime-log-replay"

    def __init__(
        self, pcr: int, mismatches: dict[str, tuple[bytes, bytes]], *, node_id: str | None = None
    ) -> None:
        self.pcr = pcr
        self.mismatches = mismatches
        detail = "; ".join(
            f"{bank} PCR{pcr}: runtime log replays to {replayed.hex()}, quoted {quoted.hex()}"
            for bank, (replayed, quoted) in mismatches.items()
        )
        super().__init__(detail, node_id=node_id)


class RuntimeLogBankMissing(EvidenceError):
    """The quote covers the runtime PCR in a bank the runtime log has no digests for."""

    check = "runtime-log-bank"


class RuntimePcrNotQuoted(EvidenceError):
    """The quote does not cover the runtime PCR in any bank, so nothing vouches for the
    runtime log (an asset tag or image list the TPM did not attest is only a claim)."""

    check = "runtime-log-pcr"


# --- key certification (verifier.evidence.certify) ---------------------------------
#
# A node proves that a key lives in its TPM with TPM2_Certify (the key is loaded in the
# TPM that holds the enrolled AK) and TPM2_CertifyCreation (that TPM created it), both
# signed by the AK over a fresh nonce.  Each reason to refuse one is its own check.


class KeyCertificationMalformed(EvidenceError):
    """A field of a key certification could not be parsed; `field` names it
    (public_area, certify_info, certify_signature, creation_data, creation_info,
    creation_signature)."""

    check = "key-certification-malformed"

    def __init__(self, field: str, detail: str, *, node_id: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {detail}", node_id=node_id)


class KeyCreationMissing(EvidenceError):
    """No TPM2_CertifyCreation attestation (or no creation data) came with the key.
    TPM2_Certify alone does not show that the TPM made the key: a TPM that lets a
    public-only object loaded with TPM2_LoadExternal be certified would certify a
    software key's public area claiming fixedTPM."""

    check = "key-creation-missing"


class KeyAttestationSignatureInvalid(EvidenceError):
    """The TPM2_Certify or TPM2_CertifyCreation attestation is not signed by the node's
    enrolled AK with the AK's scheme: another TPM (or no TPM) made it."""

    check = "key-attestation-signature"


class KeyAttestationMagicInvalid(EvidenceError):
    """A key attestation's TPMS_ATTEST.magic is not TPM_GENERATED_VALUE."""

    check = "key-attestation-magic"


class KeyAttestationTypeInvalid(EvidenceError):
    """The attestation said to come from TPM2_Certify is not TPM_ST_ATTEST_CERTIFY, or the
    one said to come from TPM2_CertifyCreation is not TPM_ST_ATTEST_CREATION."""

    check = "key-attestation-type"


class KeyAttestationNonceMismatch(EvidenceError):
    """A key attestation's extraData is not the nonce the verifier issued for it: replayed
    or made for another request."""

    check = "key-attestation-nonce"


class CertifiedNameMismatch(EvidenceError):
    """TPM2_Certify attested another object than the public area presented: the name in
    the attestation is not nameAlg || H_nameAlg(public area)."""

    check = "certified-name"


class CreationNameMismatch(EvidenceError):
    """TPM2_CertifyCreation attested the creation of another object than the public area
    presented (for example the creation of a genuine key, sent beside a software key)."""

    check = "creation-name"


class CreationHashMismatch(EvidenceError):
    """The creation data presented does not hash (with the key's nameAlg) to the
    creationHash that TPM2_CertifyCreation attested."""

    check = "creation-hash"


class KeyAttributesInvalid(EvidenceError):
    """The key is not a non-exportable, TPM-generated, signing-only key: fixedTPM,
    fixedParent, sensitiveDataOrigin or sign is clear, or restricted or decrypt is set."""

    check = "key-attributes"


class KeyAlgorithmUnsupported(EvidenceError):
    """The key's type, curve, size, scheme or name algorithm is not one credentials are
    issued for (ECC NIST P-256 or RSA of at least 2048 bits, named with SHA-256 or
    stronger)."""

    check = "key-algorithm"


class CsrMalformed(EvidenceError):
    """The PKCS#10 certificate signing request could not be parsed (or its key read)."""

    check = "csr-malformed"


class CsrSignatureInvalid(EvidenceError):
    """The CSR's self-signature does not verify, or uses a hash weaker than SHA-256."""

    check = "csr-signature"


class CsrKeyMismatch(EvidenceError):
    """The CSR's public key is not the key the TPM certified."""

    check = "csr-key"

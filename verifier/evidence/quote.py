"""TPM quote verification: pure functions over bytes and typed values, no I/O.

A quote is believed only when all of these hold (TPM 2.0 Part 3, 18.4 TPM2_Quote):

1. the signature verifies under the node's enrolled AK, with the AK's scheme;
2. TPMS_ATTEST.magic is TPM_GENERATED_VALUE and its type is TPM_ST_ATTEST_QUOTE (a
   restricted key signs data beginning with TPM_GENERATED_VALUE only when the TPM
   itself produced it, which is what makes a quote evidence and not a claim);
3. extraData is a nonce this verifier issued to this node, unused and unexpired;
4. the quoted selection covers the PCRs the verifier asked for, and the PCR values
   supplied are exactly the quoted selection;
5. pcrDigest equals the hash, under the signing scheme's hash, of those values in
   selection order;
6. clock, resetCount and restartCount did not go backwards since the last accepted
   quote (resetCount going up is a reboot and is recorded, not refused).

Check 1 runs first and alone: nothing in a message that the AK did not sign is worth
reporting.  Checks 2-6 all run, and every failure is reported.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.evidence.errors import (
    ChecksFailed,
    ClockRollback,
    EvidenceError,
    NonceExpired,
    NonceMismatch,
    NonceReplayed,
    NonceUnknown,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    QuoteMagicInvalid,
    QuoteSignatureInvalid,
    QuoteTypeInvalid,
)
from verifier.evidence.keys import AttestationKey
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.tpm_structures import (
    TPM_GENERATED_VALUE,
    Alg,
    Attest,
    AttestType,
    ClockInfo,
    HashAlg,
    PcrSelection,
    QuoteInfo,
    Signature,
    parse_attest,
    parse_signature,
)


@dataclass(frozen=True)
class Quote:
    """A parsed quote: the signed TPMS_ATTEST and its TPMT_SIGNATURE."""

    attest: Attest
    signature: Signature

    @classmethod
    def parse(cls, message: bytes, signature: bytes) -> Quote:
        return cls(parse_attest(message), parse_signature(signature))

    @property
    def nonce(self) -> bytes:
        return self.attest.extra_data


@dataclass(frozen=True)
class NonceRecord:
    """A nonce this verifier issued, as it was before this attestation spent it.

    `node_id` is the node it was issued to; None when that is another node than the
    one presenting it (the nonce names its node only by a tag)."""

    value: bytes
    node_id: str | None
    expires_at: datetime
    used: bool


@dataclass(frozen=True)
class QuoteExpectations:
    """What the verifier expects of one node's quote."""

    node_id: str
    nonce: NonceRecord | None
    required_selection: PcrSelection
    previous_clock: ClockInfo | None
    now: datetime


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that passed every check; only this type carries PCR values onward."""

    node_id: str
    attest: Attest
    pcr_values: PcrValues
    signature_hash: HashAlg
    rebooted: bool

    @property
    def clock_info(self) -> ClockInfo:
        return self.attest.clock_info


@dataclass(frozen=True)
class AuthenticatedQuote:
    """A quote whose signature verified under the node's AK (check 1).  Only
    `authenticate_quote` makes one; the remaining checks take only this type."""

    node_id: str
    quote: Quote


def authenticate_quote(ak: AttestationKey, quote: Quote, node_id: str) -> AuthenticatedQuote:
    check_signature(ak, quote.attest.raw, quote.signature, node_id=node_id)
    return AuthenticatedQuote(node_id, quote)


def verify_quote(
    ak: AttestationKey, quote: Quote, pcr_values: PcrValues, expect: QuoteExpectations
) -> VerifiedQuote:
    """Run every check; return a VerifiedQuote or raise the typed refusal(s)."""
    return verify_authenticated_quote(
        authenticate_quote(ak, quote, expect.node_id), pcr_values, expect
    )


def verify_authenticated_quote(
    authenticated: AuthenticatedQuote, pcr_values: PcrValues, expect: QuoteExpectations
) -> VerifiedQuote:
    """Checks 2-6 on a quote whose signature already holds; every failure is reported."""
    node = expect.node_id
    quote = authenticated.quote
    failures: list[EvidenceError] = []
    rebooted = False
    quote_info: QuoteInfo | None = None
    try:
        quote_info = check_magic_and_type(quote.attest, node_id=node)
    except EvidenceError as exc:
        failures.append(exc)
    try:
        check_nonce(expect.nonce, quote.attest.extra_data, node, expect.now)
    except EvidenceError as exc:
        failures.append(exc)
    if quote_info is not None:
        try:
            check_pcr_selection(
                quote_info.pcr_selection, expect.required_selection, pcr_values, node
            )
            check_pcr_digest(quote_info, quote.signature.hash_alg, pcr_values, node_id=node)
        except EvidenceError as exc:
            failures.append(exc)
    try:
        rebooted = check_clock(expect.previous_clock, quote.attest.clock_info, node)
    except EvidenceError as exc:
        failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ChecksFailed(failures, node_id=node)
    return VerifiedQuote(
        node, quote.attest, pcr_values, HashAlg(quote.signature.hash_alg), rebooted
    )


def check_signature(
    ak: AttestationKey, message: bytes, signature: Signature, *, node_id: str | None = None
) -> None:
    """The signature must verify under the AK with the AK's own scheme and hash."""
    public = ak.public
    if public.scheme != Alg.NULL and (
        signature.sig_alg != public.scheme or signature.hash_alg != public.scheme_hash
    ):
        raise QuoteSignatureInvalid(
            f"scheme 0x{signature.sig_alg:04x}/0x{signature.hash_alg:04x} is not the AK's "
            f"0x{public.scheme:04x}/0x{public.scheme_hash:04x}",
            node_id=node_id,
        )
    if signature.hash_alg not in (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512):
        raise QuoteSignatureInvalid(
            f"signature hash 0x{signature.hash_alg:04x} is not supported", node_id=node_id
        )
    key = ak.key
    digest = HashAlg(signature.hash_alg).crypto()
    try:
        if signature.sig_alg == Alg.ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            der = encode_dss_signature(
                int.from_bytes(signature.ecdsa_r, "big"), int.from_bytes(signature.ecdsa_s, "big")
            )
            key.verify(der, message, ec.ECDSA(digest))
        elif signature.sig_alg == Alg.RSASSA and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature.rsa_signature, message, padding.PKCS1v15(), digest)
        elif signature.sig_alg == Alg.RSAPSS and isinstance(key, rsa.RSAPublicKey):
            # TPMs choose the salt length (the digest size, or the largest the key
            # allows, by implementation); the verifier reads it from the signature.
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.AUTO)
            key.verify(signature.rsa_signature, message, pss, digest)
        else:
            raise QuoteSignatureInvalid(
                f"signature algorithm 0x{signature.sig_alg:04x} does not fit the AK's key type",
                node_id=node_id,
            )
    except InvalidSignature:
        raise QuoteSignatureInvalid(
            "signature does not verify under the AK", node_id=node_id
        ) from None


def check_magic_and_type(
    attest: Attest, *, node_id: str | None = None, expected: AttestType = AttestType.QUOTE
) -> QuoteInfo:
    if attest.magic != TPM_GENERATED_VALUE:
        raise QuoteMagicInvalid(
            f"magic 0x{attest.magic:08x}, expected 0x{TPM_GENERATED_VALUE:08x}", node_id=node_id
        )
    if attest.type != expected or attest.quote is None:
        raise QuoteTypeInvalid(
            f"type 0x{attest.type:04x}, expected 0x{expected:04x}", node_id=node_id
        )
    return attest.quote


def check_nonce(record: NonceRecord | None, extra_data: bytes, node_id: str, now: datetime) -> None:
    """extraData must be a nonce issued to this node, unused and unexpired."""
    if record is None:
        raise NonceUnknown(
            f"extraData {extra_data.hex() or '(empty)'} was not issued by this verifier",
            node_id=node_id,
        )
    if not hmac.compare_digest(record.value, extra_data):
        raise NonceUnknown(
            f"extraData {extra_data.hex() or '(empty)'} is not the nonce issued, "
            f"{record.value.hex()}",
            node_id=node_id,
        )
    if record.node_id != node_id:
        issued_to = f"node {record.node_id}" if record.node_id else "another node (by its tag)"
        raise NonceMismatch(f"nonce {extra_data.hex()} was issued to {issued_to}", node_id=node_id)
    if record.used:
        raise NonceReplayed(f"nonce {extra_data.hex()} was already used", node_id=node_id)
    if now >= record.expires_at:
        raise NonceExpired(
            f"nonce {extra_data.hex()} expired at {record.expires_at.isoformat()}, "
            f"evidence arrived at {now.isoformat()}",
            node_id=node_id,
        )


def check_nonce_value(expected: bytes, extra_data: bytes, *, node_id: str | None = None) -> None:
    """Offline form of the nonce check (`attest quote verify --nonce`)."""
    if not hmac.compare_digest(expected, extra_data):
        raise NonceMismatch(
            f"extraData {extra_data.hex() or '(empty)'}, expected {expected.hex() or '(empty)'}",
            node_id=node_id,
        )


def check_pcr_selection(
    quoted: PcrSelection, required: PcrSelection, pcr_values: PcrValues, node_id: str | None = None
) -> None:
    if not quoted.covers(required):
        raise PcrSelectionMismatch(
            f"quote selects {quoted.as_dict()}, verifier asked for {required.as_dict()}",
            node_id=node_id,
        )
    supplied = pcr_values.selection()
    if not (supplied.covers(quoted) and quoted.covers(supplied)):
        raise PcrSelectionMismatch(
            f"PCR values cover {supplied.as_dict()}, quote selects {quoted.as_dict()}",
            node_id=node_id,
        )


def check_pcr_digest(
    quote_info: QuoteInfo, hash_alg: int, pcr_values: PcrValues, *, node_id: str | None = None
) -> None:
    """pcrDigest = H_sign(PCR values in TPML_PCR_SELECTION order) (Part 3, 18.4.1)."""
    try:
        digest_alg = HashAlg(hash_alg)
    except ValueError:
        raise PcrDigestMismatch(
            f"hash 0x{hash_alg:04x} is not supported", node_id=node_id
        ) from None
    parts = []
    for bank in quote_info.pcr_selection.banks:
        if not bank.pcrs:
            continue  # an empty selection contributes nothing to pcrDigest
        try:
            bank_alg = HashAlg(bank.hash_alg)
        except ValueError:
            raise PcrSelectionMismatch(
                f"quote selects PCRs in bank 0x{bank.hash_alg:04x}, which this verifier "
                "does not support",
                node_id=node_id,
            ) from None
        values = pcr_values.banks.get(bank_alg, {})
        for pcr in bank.pcrs:
            if pcr not in values:
                raise PcrSelectionMismatch(
                    f"no value supplied for quoted PCR {bank_alg.bank_name}:{pcr}", node_id=node_id
                )
            parts.append(values[pcr])
    actual = digest_alg.digest(b"".join(parts))
    if not hmac.compare_digest(actual, quote_info.pcr_digest):
        raise PcrDigestMismatch(
            f"PCR values hash to {actual.hex()}, "
            f"quote's pcrDigest is {quote_info.pcr_digest.hex()}",
            node_id=node_id,
        )


def check_clock(previous: ClockInfo | None, current: ClockInfo, node_id: str) -> bool:
    """Refuse counters that go backwards; return True when resetCount shows a reboot.

    resetCount increments on every TPM Reset (a reboot), restartCount on every
    Restart/Resume (hibernate) and is zeroed by a Reset; clock is monotonic between
    Resets (Part 1, 36.3 and 36.6).  A rollback means a replayed or forged quote, or a
    TPM whose state was restored from an old copy.
    """
    if previous is None:
        return False
    if current.reset_count < previous.reset_count:
        raise ClockRollback(
            f"resetCount {current.reset_count} < last accepted {previous.reset_count}",
            node_id=node_id,
        )
    if current.reset_count > previous.reset_count:
        return True
    if current.restart_count < previous.restart_count:
        raise ClockRollback(
            f"restartCount {current.restart_count} < last accepted {previous.restart_count}",
            node_id=node_id,
        )
    if current.restart_count == previous.restart_count and current.clock < previous.clock:
        raise ClockRollback(
            f"clock {current.clock} ms < last accepted {previous.clock} ms", node_id=node_id
        )
    return False


def verify_quote_offline(
    ak: AttestationKey, quote: Quote, pcr_values: PcrValues, nonce: bytes
) -> QuoteInfo:
    """The checks `tpm2_checkquote` makes, for `attest quote verify`: signature, magic
    and type, qualifying data equal to `nonce`, the PCR values cover exactly the quoted
    selection and hash to pcrDigest.  No verifier state (nonce use, counters)."""
    check_signature(ak, quote.attest.raw, quote.signature)
    quote_info = check_magic_and_type(quote.attest)
    check_nonce_value(nonce, quote.attest.extra_data)
    check_pcr_selection(quote_info.pcr_selection, PcrSelection(()), pcr_values)
    check_pcr_digest(quote_info, quote.signature.hash_alg, pcr_values)
    return quote_info

"""verify_quote on recorded swtpm quotes, and one named test per reason to refuse one.

Checks 2-6 sit behind the signature check, so refusals of a well-signed but wrong
TPMS_ATTEST (magic, type) are signed by a software AK (conftest.SoftwareAk): a real
restricted AK would never sign them, which is the point of checking the magic.
Every refusal asserts the error class, its `check`, and that the message names the
expected and the actual value.  Time is a fixed `now` (conftest.NOW), never the clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    TpmStructureMalformed,
)
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.quote import Quote, check_signature, verify_quote
from verifier.evidence.tpm_public import parse_public
from verifier.evidence.tpm_structures import (
    TPM_GENERATED_VALUE,
    Alg,
    AttestType,
    CertifyInfo,
    ClockInfo,
    HashAlg,
    PcrBankSelection,
    PcrSelection,
    Signature,
    marshal_signature,
)

NODE = "node-a"  # = conftest.NODE, the node RecordedQuote.expectations() names
OTHER_NODE = "node-b"
ECC = "ecc-p256-ecdsa-sha256-sha256-all"
RSA = "rsa2048-rsassa-sha256-sha256-all"
THREE_BANKS = "ecc-p256-ecdsa-sha256-three-banks"
AK_KINDS = pytest.mark.parametrize("case", [ECC, RSA])


def verify(recorded, *, quote: Quote | None = None, ak=None, pcr_values=None, **expect):
    """verify_quote on a recorded quote, with the given parts swapped out."""
    return verify_quote(
        ak if ak is not None else recorded.ak(),
        quote if quote is not None else recorded.quote(),
        pcr_values if pcr_values is not None else recorded.pcr_values(),
        recorded.expectations(**expect),
    )


def without(pcr_values: PcrValues, bank: HashAlg, pcr: int) -> PcrValues:
    banks = {b: dict(values) for b, values in pcr_values.banks.items()}
    del banks[bank][pcr]
    return PcrValues(banks)


def with_value(pcr_values: PcrValues, bank: HashAlg, pcr: int, value: bytes) -> PcrValues:
    banks = {b: dict(values) for b, values in pcr_values.banks.items()}
    banks.setdefault(bank, {})[pcr] = value
    return PcrValues(banks)


def flip_bit(buf: bytes, index: int, bit: int = 0) -> bytes:
    flipped = bytearray(buf)
    flipped[index] ^= 1 << bit
    return bytes(flipped)


def assert_refusal(exc: EvidenceError, check: str, *fragments: str) -> None:
    assert exc.check == check
    assert exc.node_id == NODE
    assert f"(node {NODE})" in exc.reason
    for fragment in fragments:
        assert fragment in str(exc), f"{fragment!r} not in {str(exc)!r}"


# --- recorded quotes verify --------------------------------------------------------


def test_recorded_quote_verifies(recorded) -> None:
    verified = verify(recorded)
    quote = recorded.quote()
    assert verified.node_id == NODE
    assert verified.attest == quote.attest
    assert verified.pcr_values == recorded.pcr_values()
    assert verified.signature_hash == quote.signature.hash_alg
    assert verified.rebooted is False
    assert verified.clock_info == quote.attest.clock_info


@pytest.mark.parametrize("case", ["ecc-p256-ecdsa-sha256", "rsa2048-rsassa-sha256"])
def test_later_recorded_quote_verifies_after_earlier_one(recorded_quotes, case) -> None:
    first = recorded_quotes[f"{case}-sha256-all"]
    second = recorded_quotes[f"{case}-sha256-all-second"]
    previous = first.quote().attest.clock_info
    verified = verify(second, previous_clock=previous)
    assert verified.rebooted is False
    assert verified.clock_info.clock >= previous.clock


# --- check 1: signature ------------------------------------------------------------


@AK_KINDS
def test_signature_bit_flip_refused(recorded_quotes, case) -> None:
    recorded = recorded_quotes[case]
    signature = flip_bit(recorded.signature, len(recorded.signature) - 1)
    with pytest.raises(QuoteSignatureInvalid) as caught:
        verify(recorded, quote=Quote.parse(recorded.message, signature))
    assert_refusal(caught.value, "quote-signature", "does not verify under the AK")


def test_signature_under_another_ak_refused(recorded_quotes, software_ak) -> None:
    recorded = recorded_quotes[ECC]
    # Same curve and scheme, so only the key differs.
    assert software_ak.ak.public.scheme == recorded.ak().public.scheme
    with pytest.raises(QuoteSignatureInvalid) as caught:
        verify(recorded, ak=software_ak.ak)
    assert_refusal(caught.value, "quote-signature", "does not verify under the AK")


def test_quote_signed_by_another_ak_refused(recorded_quotes, software_ak) -> None:
    recorded = recorded_quotes[ECC]
    forged = software_ak.quote(recorded.quote().attest)
    with pytest.raises(QuoteSignatureInvalid) as caught:
        verify(recorded, quote=forged)
    assert_refusal(caught.value, "quote-signature", "does not verify under the AK")


@pytest.mark.parametrize(
    ("signed_by", "actual"),
    [("rsa2048-rsapss-sha256-sha256-all", "0x0016/0x000b"),
     ("rsa2048-rsassa-sha384-sha256-all", "0x0014/0x000c"),
     ("rsa2048-rsassa-sha1-sha256-all", "0x0014/0x0004")],
)  # fmt: skip
def test_signature_scheme_differing_from_aks_refused(recorded_quotes, signed_by, actual) -> None:
    """A valid TPM signature in another scheme or hash, offered for an RSASSA-SHA256 AK,
    is refused on the scheme alone: a quote is believed only in the AK's own scheme, so a
    weaker hash (SHA-1) can never be substituted."""
    other = recorded_quotes[signed_by]
    with pytest.raises(QuoteSignatureInvalid) as caught:
        verify(recorded_quotes[RSA], quote=other.quote())
    assert_refusal(caught.value, "quote-signature", f"scheme {actual}", "AK's 0x0014/0x000b")


def test_signature_algorithm_not_fitting_key_type_refused(recorded_quotes) -> None:
    """An ECDSA signature for an RSA AK whose scheme is NULL (scheme check skipped)."""
    null_scheme = recorded_quotes["rsa2048-null-unrestricted-rsapss-sha256-sha256-all"]
    ecdsa = recorded_quotes[ECC].quote().signature
    with pytest.raises(QuoteSignatureInvalid) as caught:
        check_signature(null_scheme.ak(), null_scheme.message, ecdsa, node_id=NODE)
    assert_refusal(caught.value, "quote-signature", "0x0018 does not fit the AK's key type")


def test_message_bit_flip_refused(recorded) -> None:
    """extraData changed to another value in a genuine quote (a replayed quote passed off
    as fresh): only the signature notices, so the nonce check is told to expect it."""
    attest = recorded.quote().attest
    nonce_offset = 6 + 2 + len(attest.qualified_signer) + 2
    message = flip_bit(recorded.message, nonce_offset)
    tampered = Quote.parse(message, recorded.signature)
    with pytest.raises(QuoteSignatureInvalid) as caught:
        verify(recorded, quote=tampered, nonce=recorded.nonce_record(value=tampered.nonce))
    assert_refusal(caught.value, "quote-signature", "does not verify under the AK")


def test_signature_failure_is_reported_alone(recorded_quotes) -> None:
    """Check 1 runs first and alone: nothing in an unsigned message is worth reporting."""
    recorded = recorded_quotes[ECC]
    signature = flip_bit(recorded.signature, len(recorded.signature) - 1)
    with pytest.raises(QuoteSignatureInvalid):
        verify(recorded, quote=Quote.parse(recorded.message, signature), nonce=None,
               previous_clock=ClockInfo(2**63, 2**31, 0, True))  # fmt: skip


AK_CASES = [ECC, RSA, "rsa2048-null-unrestricted-rsapss-sha256-sha256-all"]
signatures = st.builds(
    Signature,
    sig_alg=st.sampled_from([Alg.RSASSA, Alg.RSAPSS, Alg.ECDSA, Alg.HMAC]).map(int),
    hash_alg=st.one_of(st.sampled_from(list(HashAlg)).map(int), st.integers(0, 0xFFFF)),
    rsa_signature=st.binary(max_size=512),
    ecdsa_r=st.binary(max_size=66),
    ecdsa_s=st.binary(max_size=66),
)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(AK_CASES), signature=signatures)
def test_arbitrary_signature_raises_only_signature_invalid(
    recorded_quotes, case, signature
) -> None:
    recorded = recorded_quotes[case]
    with pytest.raises(QuoteSignatureInvalid):
        check_signature(recorded.ak(), recorded.message, signature, node_id=NODE)


# --- check 2: magic and type -------------------------------------------------------


def test_magic_changed_refused(recorded_quotes, software_ak) -> None:
    recorded = recorded_quotes[ECC]
    forged = software_ak.quote(recorded.quote().attest, magic=0x00544347)
    with pytest.raises(QuoteMagicInvalid) as caught:
        verify(recorded, quote=forged, ak=software_ak.ak)
    assert_refusal(caught.value, "quote-magic", "magic 0x00544347", "expected 0xff544347")


def test_type_not_quote_refused(recorded_quotes, software_ak) -> None:
    """A TPM2_Certify result (same magic, signed by the same AK) offered as a quote."""
    recorded = recorded_quotes[ECC]
    attest = recorded.quote().attest
    certify = software_ak.quote(
        attest,
        type=AttestType.CERTIFY,
        quote=None,
        certify=CertifyInfo(software_ak.ak.name, software_ak.ak.name),
    )
    assert certify.attest.magic == TPM_GENERATED_VALUE
    with pytest.raises(QuoteTypeInvalid) as caught:
        verify(recorded, quote=certify, ak=software_ak.ak)
    assert_refusal(caught.value, "quote-type", "type 0x8017", "expected 0x8018")


def test_software_signed_recorded_attest_verifies(recorded_quotes, software_ak) -> None:
    """The control for the two tests above: only the changed field is refused."""
    recorded = recorded_quotes[ECC]
    verify(recorded, quote=software_ak.quote(recorded.quote().attest), ak=software_ak.ak)


# --- check 3: nonce ----------------------------------------------------------------


def test_nonce_unknown_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    with pytest.raises(NonceUnknown) as caught:
        verify(recorded, nonce=None)
    assert_refusal(caught.value, "nonce-unknown", f"extraData {recorded.nonce.hex()}")


def test_nonce_other_than_issued_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    issued = hashlib.sha256(b"the nonce this verifier issued").digest()
    with pytest.raises(NonceUnknown) as caught:
        verify(recorded, nonce=recorded.nonce_record(value=issued))
    assert_refusal(caught.value, "nonce-unknown", f"extraData {recorded.nonce.hex()}")


def test_nonce_other_than_issued_names_issued_nonce(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    issued = hashlib.sha256(b"the nonce this verifier issued").digest()
    with pytest.raises(NonceUnknown) as caught:
        verify(recorded, nonce=recorded.nonce_record(value=issued))
    assert issued.hex() in str(caught.value)


def test_nonce_issued_to_another_node_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    with pytest.raises(NonceMismatch) as caught:
        verify(recorded, nonce=recorded.nonce_record(node_id=OTHER_NODE))
    assert_refusal(
        caught.value, "nonce-mismatch", recorded.nonce.hex(), f"issued to node {OTHER_NODE}"
    )


def test_nonce_already_used_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    with pytest.raises(NonceReplayed) as caught:
        verify(recorded, nonce=recorded.nonce_record(used=True))
    assert_refusal(caught.value, "nonce-replayed", f"nonce {recorded.nonce.hex()}", "already used")


@pytest.mark.parametrize("late_by", [timedelta(seconds=1), timedelta(0)], ids=["after", "at"])
def test_nonce_expired_refused(recorded_quotes, late_by) -> None:
    recorded = recorded_quotes[ECC]
    expires_at = recorded.expectations().now - late_by
    with pytest.raises(NonceExpired) as caught:
        verify(recorded, nonce=recorded.nonce_record(expires_at=expires_at))
    assert_refusal(
        caught.value,
        "nonce-expired",
        recorded.nonce.hex(),
        f"expired at {expires_at.isoformat()}",
        f"arrived at {recorded.expectations().now.isoformat()}",
    )


# --- checks 4 and 5: PCR selection and digest --------------------------------------


@pytest.mark.parametrize("case", [ECC, RSA, THREE_BANKS])
def test_pcr_value_tampered_refused(recorded_quotes, case) -> None:
    recorded = recorded_quotes[case]
    tampered = with_value(recorded.pcr_values(), HashAlg.SHA256, 0, bytes(32))
    quote = recorded.quote()
    assert quote.attest.quote is not None
    hash_alg = HashAlg(quote.signature.hash_alg)
    computed = hash_alg.digest(
        b"".join(
            tampered.banks[HashAlg(bank.hash_alg)][pcr]
            for bank in quote.attest.quote.pcr_selection.banks
            for pcr in bank.pcrs
        )
    )
    with pytest.raises(PcrDigestMismatch) as caught:
        verify(recorded, pcr_values=tampered)
    assert_refusal(
        caught.value,
        "pcr-digest",
        f"PCR values hash to {computed.hex()}",
        f"pcrDigest is {quote.attest.quote.pcr_digest.hex()}",
    )


def test_quote_missing_required_pcr_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[THREE_BANKS]
    required = PcrSelection.of({HashAlg.SHA256: [0, 7, 8]})  # PCR 8 is not quoted
    quoted = recorded.quote().attest.quote.pcr_selection
    with pytest.raises(PcrSelectionMismatch) as caught:
        verify(recorded, required_selection=required)
    assert_refusal(
        caught.value,
        "pcr-selection",
        f"quote selects {quoted.as_dict()}",
        "verifier asked for {'sha256': [0, 7, 8]}",
    )


def test_quote_missing_required_bank_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]  # sha256 only
    required = PcrSelection.of({HashAlg.SHA256: [0], HashAlg.SHA384: [0]})
    with pytest.raises(PcrSelectionMismatch) as caught:
        verify(recorded, required_selection=required)
    assert_refusal(
        caught.value, "pcr-selection", "verifier asked for {'sha256': [0], 'sha384': [0]}"
    )


def test_supplied_pcr_values_missing_a_pcr_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[THREE_BANKS]
    supplied = without(recorded.pcr_values(), HashAlg.SHA384, 23)
    quoted = recorded.quote().attest.quote.pcr_selection
    with pytest.raises(PcrSelectionMismatch) as caught:
        verify(recorded, pcr_values=supplied)
    assert_refusal(
        caught.value,
        "pcr-selection",
        f"PCR values cover {supplied.selection().as_dict()}",
        f"quote selects {quoted.as_dict()}",
    )
    assert "'sha384': [0, 1, 4, 7]}, quote selects" in str(caught.value)


@pytest.mark.parametrize(
    ("bank", "pcr"), [(HashAlg.SHA256, 9), (HashAlg.SHA512, 0)], ids=["pcr", "bank"]
)
def test_supplied_pcr_values_with_extra_pcr_refused(recorded_quotes, bank, pcr) -> None:
    """Values the quote does not cover must not travel on as if attested."""
    recorded = recorded_quotes[THREE_BANKS]
    supplied = with_value(recorded.pcr_values(), bank, pcr, bytes(bank.digest_size))
    quoted = recorded.quote().attest.quote.pcr_selection
    with pytest.raises(PcrSelectionMismatch) as caught:
        verify(recorded, pcr_values=supplied)
    assert_refusal(
        caught.value,
        "pcr-selection",
        f"PCR values cover {supplied.selection().as_dict()}",
        f"quote selects {quoted.as_dict()}",
    )


def test_quote_with_empty_unknown_bank_raises_only_evidence_errors(
    recorded_quotes, software_ak
) -> None:
    recorded = recorded_quotes[ECC]
    attest = recorded.quote().attest
    assert attest.quote is not None
    banks = (*attest.quote.pcr_selection.banks, PcrBankSelection(0x0027, ()))
    selection = dataclasses.replace(attest.quote, pcr_selection=PcrSelection(banks))
    quote = software_ak.quote(attest, quote=selection)
    with contextlib.suppress(EvidenceError):
        verify(recorded, quote=quote, ak=software_ak.ak)


# --- check 6: clock ----------------------------------------------------------------


def clock_of(recorded) -> ClockInfo:
    return recorded.quote().attest.clock_info


def test_earlier_recorded_quote_after_later_one_is_clock_rollback(recorded_quotes) -> None:
    first = recorded_quotes["ecc-p256-ecdsa-sha256-sha256-all"]
    second = recorded_quotes["ecc-p256-ecdsa-sha256-sha256-all-second"]
    earlier, later = clock_of(first), clock_of(second)
    assert earlier.clock < later.clock
    with pytest.raises(ClockRollback) as caught:
        verify(first, previous_clock=later)
    assert_refusal(
        caught.value, "clock-rollback", f"clock {earlier.clock} ms < last accepted {later.clock} ms"
    )


def test_reset_count_going_backwards_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    current = clock_of(recorded)
    previous = dataclasses.replace(current, reset_count=current.reset_count + 1, clock=0)
    with pytest.raises(ClockRollback) as caught:
        verify(recorded, previous_clock=previous)
    assert_refusal(
        caught.value,
        "clock-rollback",
        f"resetCount {current.reset_count} < last accepted {previous.reset_count}",
    )


def test_restart_count_going_backwards_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    current = clock_of(recorded)
    previous = dataclasses.replace(current, restart_count=current.restart_count + 1, clock=0)
    with pytest.raises(ClockRollback) as caught:
        verify(recorded, previous_clock=previous)
    assert_refusal(
        caught.value,
        "clock-rollback",
        f"restartCount {current.restart_count} < last accepted {previous.restart_count}",
    )


def test_clock_going_backwards_refused(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    current = clock_of(recorded)
    previous = dataclasses.replace(current, clock=current.clock + 1)
    with pytest.raises(ClockRollback) as caught:
        verify(recorded, previous_clock=previous)
    assert_refusal(
        caught.value,
        "clock-rollback",
        f"clock {current.clock} ms < last accepted {previous.clock} ms",
    )


def test_reset_count_up_is_a_reboot(recorded_quotes) -> None:
    """After a TPM Reset the clock may be lower; resetCount going up is a reboot."""
    recorded = recorded_quotes[ECC]
    current = clock_of(recorded)
    previous = ClockInfo(current.clock + 10**9, current.reset_count - 1, 7, True)
    assert verify(recorded, previous_clock=previous).rebooted is True


def test_restart_count_up_with_lower_clock_is_not_a_reboot(recorded_quotes, software_ak) -> None:
    """A TPM Restart (resume from hibernate) may report a clock below the last one seen,
    Clock being saved to NV only now and then (Part 1, 36.3): accepted, not a reboot."""
    recorded = recorded_quotes[ECC]
    current = clock_of(recorded)
    resumed = dataclasses.replace(current, restart_count=current.restart_count + 1)
    quote = software_ak.quote(recorded.quote().attest, clock_info=resumed)
    previous = dataclasses.replace(current, clock=current.clock + 10**9)
    verified = verify(recorded, quote=quote, ak=software_ak.ak, previous_clock=previous)
    assert verified.rebooted is False


def test_same_clock_as_last_accepted_is_not_rollback(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    assert verify(recorded, previous_clock=clock_of(recorded)).rebooted is False


# --- several failures --------------------------------------------------------------


def test_two_failures_reported_together(recorded_quotes) -> None:
    recorded = recorded_quotes[ECC]
    tampered = with_value(recorded.pcr_values(), HashAlg.SHA256, 7, bytes(32))
    with pytest.raises(ChecksFailed) as caught:
        verify(recorded, pcr_values=tampered, nonce=recorded.nonce_record(used=True))
    failures = caught.value.failures
    assert [type(f) for f in failures] == [NonceReplayed, PcrDigestMismatch]
    assert caught.value.check == "multiple"
    assert caught.value.node_id == NODE
    assert "nonce-replayed: " in caught.value.reason
    assert "pcr-digest: " in caught.value.reason


def test_every_failing_check_is_listed(recorded_quotes, software_ak) -> None:
    """Wrong magic, unknown nonce and a clock rollback at once: all three are listed
    (the PCR checks need a valid magic and type, so they are not reached)."""
    recorded = recorded_quotes[ECC]
    forged = software_ak.quote(recorded.quote().attest, magic=0)
    current = clock_of(recorded)
    with pytest.raises(ChecksFailed) as caught:
        verify(
            recorded,
            quote=forged,
            ak=software_ak.ak,
            nonce=None,
            previous_clock=dataclasses.replace(current, clock=current.clock + 1),
        )
    assert [type(f) for f in caught.value.failures] == [QuoteMagicInvalid, NonceUnknown,
                                                        ClockRollback]  # fmt: skip


# --- PcrValues.from_json -----------------------------------------------------------

SHA256_ZERO = "00" * 32


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ([], "expected an object of banks"),
        ({"sha256": [SHA256_ZERO]}, "bank sha256 is not an object"),
        ({"sha999": {"0": SHA256_ZERO}}, "unknown hash algorithm 'sha999'"),
        ({"sha256": {"0": "zz" * 32}}, "sha256:0 is not hex"),
        ({"sha256": {"0": SHA256_ZERO[:-1]}}, "sha256:0 is not hex"),
        ({"sha256": {"0": None}}, "sha256:0 is not hex"),
        ({"sha256": {"0": "00" * 20}}, "sha256:0 has 20 bytes, not 32"),
        ({"sha1": {"0": SHA256_ZERO}}, "sha1:0 has 32 bytes, not 20"),
        ({"sha256": {"x": SHA256_ZERO}}, "PCR index 'x'"),
        ({"sha256": {"": SHA256_ZERO}}, "PCR index ''"),
        ({"sha256": {"-1": SHA256_ZERO}}, "PCR index '-1'"),
        ({"sha256": {"1_0": SHA256_ZERO}}, "PCR index '1_0'"),
        ({"sha256": {"32": SHA256_ZERO}}, "PCR index 32 out of range"),
    ],
    ids=["not-object", "bank-not-object", "unknown-bank", "bad-hex", "odd-hex", "null",
         "short", "sha256-in-sha1", "index-word", "index-empty", "index-negative",
         "index-underscore", "index-32"],
)  # fmt: skip
def test_pcr_values_from_json_refuses(document, detail) -> None:
    with pytest.raises(TpmStructureMalformed) as caught:
        PcrValues.from_json(document)
    assert caught.value.check == "malformed"
    assert detail in str(caught.value)


def test_pcr_values_json_round_trip(recorded) -> None:
    values = recorded.pcr_values()
    assert PcrValues.from_json(values.to_json()) == values
    assert values.to_json() == recorded.pcrs


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
bank_names = st.sampled_from(["sha1", "sha256", "SHA384", "sha-512", "sm3_256", "md5", ""])
pcr_documents = st.dictionaries(
    bank_names | st.text(max_size=8),
    st.dictionaries(
        st.integers(-2, 40).map(str) | st.text(max_size=3),
        st.sampled_from(["00" * n for n in (20, 32, 48, 64)]) | json_values,
        max_size=4,
    )
    | json_values,
    max_size=3,
)


@settings(max_examples=300)
@given(pcr_documents | json_values)
def test_pcr_values_from_json_fuzz_raises_only_malformed(document) -> None:
    try:
        values = PcrValues.from_json(document)
    except TpmStructureMalformed:
        return
    for bank, pcrs in values.banks.items():
        assert all(0 <= i < 32 and len(v) == bank.digest_size for i, v in pcrs.items())


def test_software_ak_is_shaped_like_a_tpm_ak(software_ak) -> None:
    """The software AK used above has a real TPMT_PUBLIC and signs ECDSA-SHA256."""
    assert parse_public(software_ak.ak.public.raw) == software_ak.ak.public
    assert marshal_signature(software_ak.sign(b"m"))[:4] == bytes.fromhex("0018000b")

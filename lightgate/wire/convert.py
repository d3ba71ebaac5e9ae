"""Conversions between wire messages and domain types, used by both sides."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from lightgate.wire.v1 import attestation_pb2 as pb
from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.pcr_values import MAX_PCRS, PcrValues, check_pcr_bank
from verifier.evidence.tpm_structures import HashAlg, PcrSelection

STATUS_TO_WIRE = {
    "affirming": pb.TRUST_STATUS_AFFIRMING,
    "warning": pb.TRUST_STATUS_WARNING,
    "contraindicated": pb.TRUST_STATUS_CONTRAINDICATED,
    "none": pb.TRUST_STATUS_NONE,
}
STATUS_FROM_WIRE = {v: k for k, v in STATUS_TO_WIRE.items()}


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def selection_to_wire(selection: PcrSelection) -> list[pb.PcrBankSelection]:
    return [
        pb.PcrBankSelection(hash=HashAlg(bank.hash_alg).bank_name, pcrs=list(bank.pcrs))
        for bank in selection.banks
    ]


def selection_from_wire(banks: list[pb.PcrBankSelection]) -> PcrSelection:
    """Raises TpmStructureMalformed on an unknown bank or a PCR no TPM has."""
    for bank in banks:
        for pcr in bank.pcrs:
            if not 0 <= pcr < MAX_PCRS:
                raise TpmStructureMalformed(
                    "PcrBankSelection", 0, f"{bank.hash}: PCR {pcr} is out of range"
                )
    try:
        return PcrSelection.of({HashAlg.from_name(b.hash): tuple(b.pcrs) for b in banks})
    except ValueError as exc:
        raise TpmStructureMalformed("PcrBankSelection", 0, str(exc)) from None


def pcr_values_to_wire(values: PcrValues) -> list[pb.PcrBankValues]:
    return [
        pb.PcrBankValues(hash=bank.bank_name, values=dict(digests))
        for bank, digests in values.banks.items()
    ]


def pcr_values_from_wire(banks: list[pb.PcrBankValues]) -> PcrValues:
    """Raises TpmStructureMalformed on unknown or repeated banks, bad indices or sizes."""
    values: dict[HashAlg, dict[int, bytes]] = {}
    for bank in banks:
        try:
            alg = HashAlg.from_name(bank.hash)
        except ValueError as exc:
            raise TpmStructureMalformed("PcrBankValues", 0, str(exc)) from None
        if alg in values:
            raise TpmStructureMalformed("PcrBankValues", 0, f"bank {bank.hash} appears twice")
        values[alg] = dict(bank.values)
        check_pcr_bank(alg, values[alg])
    return PcrValues(values)

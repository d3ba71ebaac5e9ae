"""Conversions between wire messages and domain types, used by both sides."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from lightgate.wire.v1 import attestation_pb2 as pb
from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.quote import PcrValues
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
    """Raises TpmStructureMalformed on unknown banks, bad indices or digest sizes."""
    return PcrValues.from_json(
        {bank.hash: {str(i): d.hex() for i, d in bank.values.items()} for bank in banks}
    )

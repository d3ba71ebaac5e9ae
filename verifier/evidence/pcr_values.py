"""PCR values as a node reports them, checked for shape: pure, and free of the
cryptography the quote checks need (the agent sends these too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.tpm_structures import HashAlg, PcrSelection


@dataclass(frozen=True)
class PcrValues:
    """PCR values per bank, as the node reports them: {HashAlg: {index: digest}}."""

    banks: Mapping[HashAlg, Mapping[int, bytes]]

    @classmethod
    def from_json(cls, document: object) -> PcrValues:
        """Read `{"sha256": {"0": "<hex>", ...}, ...}`; raises TpmStructureMalformed."""
        if not isinstance(document, dict):
            raise TpmStructureMalformed("PCR values", 0, "expected an object of banks")
        banks: dict[HashAlg, dict[int, bytes]] = {}
        for bank_name, values in document.items():
            try:
                bank = HashAlg.from_name(str(bank_name))
            except ValueError as exc:
                raise TpmStructureMalformed("PCR values", 0, str(exc)) from None
            if not isinstance(values, dict):
                raise TpmStructureMalformed("PCR values", 0, f"bank {bank_name} is not an object")
            banks[bank] = {_pcr_index(i): _pcr_digest(bank, i, v) for i, v in values.items()}
            check_pcr_bank(bank, banks[bank])
        return cls(banks)

    def to_json(self) -> dict[str, dict[str, str]]:
        return {
            bank.bank_name: {str(i): v.hex() for i, v in sorted(values.items())}
            for bank, values in self.banks.items()
        }

    def selection(self) -> PcrSelection:
        return PcrSelection.of({bank: tuple(values) for bank, values in self.banks.items()})


MAX_PCRS = 32  # a TPMS_PCR_SELECTION bitmap holds at most 4 bytes


def check_pcr_bank(bank: HashAlg, digests: Mapping[int, bytes]) -> None:
    """Every index a PCR a TPM can have, every value a digest of the bank's size; the
    one check PCR values pass however they arrived (JSON, the wire)."""
    for index, digest in digests.items():
        if not 0 <= index < MAX_PCRS:
            raise TpmStructureMalformed("PCR values", 0, f"PCR index {index} out of range")
        if len(digest) != bank.digest_size:
            raise TpmStructureMalformed(
                "PCR values",
                0,
                f"{bank.bank_name}:{index} has {len(digest)} bytes, not {bank.digest_size}",
            )


def _pcr_index(index: object) -> int:
    text = str(index)
    if not (text.isascii() and text.isdigit() and len(text) <= 2):
        raise TpmStructureMalformed("PCR values", 0, f"PCR index {index!r}")
    return int(text)


def _pcr_digest(bank: HashAlg, index: object, value: object) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise TpmStructureMalformed(
            "PCR values", 0, f"{bank.bank_name}:{index} is not hex"
        ) from None

"""The AR4SI trustworthiness vocabulary (draft-ietf-rats-ar4si) that both the policy
engines and the EAR results speak: the eight claims, the four tiers and how a value
falls in one.  A leaf module: nothing here imports the rest of the verifier."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final, Literal

#: The eight AR4SI trustworthiness claims (2.3.4), in EAR's order: in CBOR each claim's
#: label is its index here.
TRUST_CLAIMS: Final = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)

#: A status as text, the type of a signed result's `ear.status`.
StatusName = Literal["none", "affirming", "warning", "contraindicated"]


class Status(StrEnum):
    """EAR status, ordered from no claim to worst (`ear.status`)."""

    NONE = "none"
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


_TIERS: Final = (Status.NONE, Status.AFFIRMING, Status.WARNING, Status.CONTRAINDICATED)


def tier_of(value: int) -> Status:
    """The tier of one trust-vector value (2.3.2): none -1..1, affirming 2..31 and
    -32..-2, warning 32..95 and -96..-33, contraindicated 96..127 and -128..-97."""
    if -1 <= value <= 1:
        return Status.NONE
    magnitude = -value - 1 if value < 0 else value  # the negative bands mirror, shifted by 1
    if magnitude <= 31:
        return Status.AFFIRMING
    if magnitude <= 95:
        return Status.WARNING
    return Status.CONTRAINDICATED


def status_of(trust_vector: Mapping[str, int]) -> Status:
    """The worst tier over the vector; an all-zero (or empty) vector is `none`."""
    return max((tier_of(v) for v in trust_vector.values()), key=_TIERS.index, default=Status.NONE)

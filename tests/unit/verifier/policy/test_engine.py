"""Decision validation: a policy's output is refused unless it is a well-formed EAR
appraisal (closed: a malformed decision is never a pass)."""

from __future__ import annotations

import copy
from dataclasses import FrozenInstanceError

import pytest

from verifier.policy.engine import (
    TRUST_CLAIMS,
    Status,
    decision_from_result,
    status_of,
    tier_of,
)
from verifier.policy.errors import PolicyOutputInvalid

POLICY_ID = "policy:lightgate/appraisal@sha256:0123456789abcdef"
AFFIRMING = {
    "status": "affirming",
    "trust_vector": {
        "instance-identity": 2,
        "configuration": 2,
        "executables": 2,
        "file-system": 0,
        "hardware": 2,
        "runtime-opaque": 0,
        "storage-opaque": 2,
        "sourced-data": 2,
    },
    "reasons": {},
    "failed_checks": [],
}


def result(**changes: object) -> dict[str, object]:
    document = copy.deepcopy(AFFIRMING)
    document.update(changes)
    return document


def vector(**values: int) -> dict[str, int]:
    base = copy.deepcopy(AFFIRMING["trust_vector"])
    assert isinstance(base, dict)
    base.update({k.replace("_", "-"): v for k, v in values.items()})
    return base


def test_a_well_formed_result_is_a_decision() -> None:
    decision = decision_from_result(AFFIRMING, policy_id=POLICY_ID)
    assert decision.status is Status.AFFIRMING
    assert decision.affirming
    assert tuple(decision.trust_vector) == TRUST_CLAIMS
    assert decision.policy_id == POLICY_ID
    assert decision.to_json() == {**AFFIRMING, "policy_id": POLICY_ID}


def test_a_contraindicated_result_keeps_reasons_and_checks() -> None:
    decision = decision_from_result(
        result(
            status="contraindicated",
            trust_vector=vector(executables=96),
            reasons={"executables": ["boot-chain.kernel: not among the golden values"]},
            failed_checks=["golden-values"],
        ),
        policy_id=POLICY_ID,
    )
    assert decision.status is Status.CONTRAINDICATED
    assert decision.reasons == {"executables": ("boot-chain.kernel: not among the golden values",)}
    assert decision.failed_checks == ("golden-values",)


def test_decisions_are_immutable() -> None:
    decision = decision_from_result(AFFIRMING, policy_id=POLICY_ID)
    with pytest.raises(TypeError):
        decision.trust_vector["executables"] = 96  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        decision.status = Status.NONE  # type: ignore[misc]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([], "is a list, not an object"),
        (None, "is a NoneType"),
        ({k: v for k, v in AFFIRMING.items() if k != "reasons"}, "missing \\['reasons'\\]"),
        (result(extra=1), "unknown \\['extra'\\]"),
        (result(status="great"), "unknown status 'great'"),
        (result(status=2), "unknown status 2"),
        (result(trust_vector=[]), "trust_vector is not an object"),
        (
            result(trust_vector={k: 2 for k in TRUST_CLAIMS if k != "hardware"}),
            "missing \\['hardware'\\]",
        ),
        (result(trust_vector={**vector(), "extra": 2}), "unknown \\['extra'\\]"),
        (result(trust_vector=vector(hardware=128)), "outside -128..127"),
        (result(trust_vector=vector(hardware=-129)), "outside -128..127"),
        (result(trust_vector={**vector(), "hardware": True}), "not an integer"),
        (result(trust_vector={**vector(), "hardware": 2.0}), "not an integer"),
        (result(trust_vector={**vector(), "hardware": "2"}), "not an integer"),
        (result(reasons=[]), "reasons is not an object"),
        (result(reasons={"kernel": ["x"]}), "not a trust-vector claim"),
        (result(reasons={"hardware": "x"}), "not a list of non-empty strings"),
        (result(reasons={"hardware": [""]}), "not a list of non-empty strings"),
        (result(failed_checks="location"), "failed_checks is not a list"),
        (result(trust_vector=vector(executables=96)), "does not follow the trust vector"),
        (result(status="contraindicated"), "does not follow the trust vector"),
        (result(failed_checks=["location"]), "status affirming with failed checks location"),
        (
            result(status="warning", trust_vector=vector(sourced_data=32)),
            "sourced-data is 32 without a reason",
        ),
    ],
)
def test_malformed_results_are_refused(output: object, message: str) -> None:
    with pytest.raises(PolicyOutputInvalid, match=message):
        decision_from_result(output, policy_id=POLICY_ID)


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (0, Status.NONE),
        (1, Status.NONE),
        (-1, Status.NONE),
        (2, Status.AFFIRMING),
        (31, Status.AFFIRMING),
        (-2, Status.AFFIRMING),
        (-32, Status.AFFIRMING),
        (32, Status.WARNING),
        (95, Status.WARNING),
        (-33, Status.WARNING),
        (-96, Status.WARNING),
        (96, Status.CONTRAINDICATED),
        (127, Status.CONTRAINDICATED),
        (-97, Status.CONTRAINDICATED),
        (-128, Status.CONTRAINDICATED),
    ],
)
def test_ar4si_tiers(value: int, tier: Status) -> None:
    assert tier_of(value) is tier


def test_status_is_the_worst_tier() -> None:
    assert status_of(vector()) is Status.AFFIRMING
    assert status_of(vector(hardware=32)) is Status.WARNING
    assert status_of(vector(hardware=32, executables=96)) is Status.CONTRAINDICATED
    assert status_of(dict.fromkeys(TRUST_CLAIMS, 0)) is Status.NONE
    assert status_of({}) is Status.NONE

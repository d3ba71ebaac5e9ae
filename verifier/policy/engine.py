"""What every policy engine gives the verifier: one `Decision`, checked before use.

Engines (embedded regorus, remote OPA) differ only in how they run Rego; both hand the
rule's raw output to `decision_from_result`, which refuses anything that is not a
well-formed appraisal (EAR, draft-fv-rats-ear; trust-vector values and tiers from
AR4SI, draft-ietf-rats-ar4si section 3).  A malformed decision is never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from verifier.ar4si import TRUST_CLAIMS, Status, status_of, tier_of
from verifier.policy.errors import PolicyOutputInvalid

__all__ = [
    "RESULT_PATH",
    "RESULT_RULE",
    "TRUST_CLAIMS",
    "Decision",
    "PolicyEngine",
    "Status",
    "decision_from_result",
    "status_of",
    "tier_of",
]

#: The rule every engine evaluates, as a Rego reference and as an OPA Data API path.
RESULT_RULE: Final = "data.lightgate.appraisal.result"
RESULT_PATH: Final = "lightgate/appraisal/result"

_RESULT_KEYS: Final = frozenset({"status", "trust_vector", "reasons", "failed_checks"})
_MIN_VALUE: Final = -128
_MAX_VALUE: Final = 127


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's appraisal of one input.  Built only by `decision_from_result`, so every
    Decision has all eight claims, values in range and a status that follows them."""

    status: Status
    trust_vector: Mapping[str, int]
    reasons: Mapping[str, tuple[str, ...]]
    failed_checks: tuple[str, ...]
    policy_id: str

    @property
    def affirming(self) -> bool:
        return self.status is Status.AFFIRMING

    def to_json(self) -> dict[str, object]:
        return {
            "status": str(self.status),
            "trust_vector": dict(self.trust_vector),
            "reasons": {claim: list(texts) for claim, texts in self.reasons.items()},
            "failed_checks": list(self.failed_checks),
            "policy_id": self.policy_id,
        }


class PolicyEngine(Protocol):
    """Runs the appraisal policy.  `evaluate` returns a Decision or raises
    PolicyUnavailable (no decision) or PolicyOutputInvalid (a malformed one)."""

    @property
    def bundle_digest(self) -> str: ...

    @property
    def policy_id(self) -> str: ...

    def evaluate(self, input: Mapping[str, object]) -> Decision: ...


def decision_from_result(result: object, *, policy_id: str) -> Decision:
    """Check the rule's output (spec: "Policy output") and build the Decision.

    Refused: a non-object, missing or unknown keys, an unknown status, a vector without
    exactly the eight claims, a value that is not an integer in -128..127, reasons or
    checks that are not lists of text, a status that is not the vector's worst tier, a
    failed check that leaves the node affirming, and a claim in the warning or
    contraindicated tier without a reason (every refusal must say why).
    """
    if not isinstance(result, dict):
        raise PolicyOutputInvalid(f"the result is a {type(result).__name__}, not an object")
    keys = set(result)
    if keys != _RESULT_KEYS:
        missing, unknown = sorted(_RESULT_KEYS - keys), sorted(str(k) for k in keys - _RESULT_KEYS)
        raise PolicyOutputInvalid(f"the result's keys: missing {missing}, unknown {unknown}")
    status = _status(result["status"])
    vector = _trust_vector(result["trust_vector"])
    reasons = _reasons(result["reasons"])
    failed_checks = _texts(result["failed_checks"], "failed_checks")
    expected = status_of(vector)
    if status is not expected:
        raise PolicyOutputInvalid(
            f"status {status} does not follow the trust vector (its worst tier is {expected})"
        )
    if failed_checks and status in (Status.NONE, Status.AFFIRMING):
        raise PolicyOutputInvalid(f"status {status} with failed checks {', '.join(failed_checks)}")
    for claim, value in vector.items():
        if tier_of(value) in (Status.WARNING, Status.CONTRAINDICATED) and not reasons.get(claim):
            raise PolicyOutputInvalid(f"trust-vector claim {claim} is {value} without a reason")
    return Decision(
        status=status,
        trust_vector=MappingProxyType(vector),
        reasons=MappingProxyType(reasons),
        failed_checks=failed_checks,
        policy_id=policy_id,
    )


def _status(value: object) -> Status:
    if not isinstance(value, str) or value not in {s.value for s in Status}:
        raise PolicyOutputInvalid(f"unknown status {value!r}")
    return Status(value)


def _trust_vector(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise PolicyOutputInvalid("trust_vector is not an object")
    claims = set(value)
    if claims != set(TRUST_CLAIMS):
        missing = sorted(set(TRUST_CLAIMS) - claims)
        unknown = sorted(str(c) for c in claims - set(TRUST_CLAIMS))
        raise PolicyOutputInvalid(f"trust_vector claims: missing {missing}, unknown {unknown}")
    vector: dict[str, int] = {}
    for claim in TRUST_CLAIMS:
        number = value[claim]
        # bool is an int in Python; `true` is not a trust-vector value.
        if isinstance(number, bool) or not isinstance(number, int):
            raise PolicyOutputInvalid(f"trust_vector[{claim}] is {number!r}, not an integer")
        if not _MIN_VALUE <= number <= _MAX_VALUE:
            raise PolicyOutputInvalid(f"trust_vector[{claim}] is {number}, outside -128..127")
        vector[claim] = number
    return vector


def _reasons(value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise PolicyOutputInvalid("reasons is not an object")
    reasons: dict[str, tuple[str, ...]] = {}
    for claim, texts in value.items():
        if claim not in TRUST_CLAIMS:
            raise PolicyOutputInvalid(f"reasons names {claim!r}, not a trust-vector claim")
        reasons[claim] = _texts(texts, f"reasons[{claim}]")
    return reasons


def _texts(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise PolicyOutputInvalid(f"{where} is not a list of non-empty strings")
    return tuple(value)

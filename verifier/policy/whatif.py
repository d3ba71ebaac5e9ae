"""What-if: stored evidence appraised again under a candidate policy, before anyone
rolls it out.

Each node's newest appraised result in the window is decided again from what the
verifier kept of it (the policy input and the claims: `results.appraisal_input` and
`results.claims`), once by the policy in force and once by the candidate: the same
evidence, golden-values outcome and location, only the policy differs, so every change
shown is the candidate's doing (not an expiry, a revocation or new golden values since).
Results decided by the evidence checks alone (a forged quote, a log that does not
replay) never reached a policy and cannot change; they are left out.  Pure: the
evidence and the engines are handed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from verifier.policy.engine import PolicyEngine
from verifier.policy.errors import PolicyError
from verifier.store.records import AppraisedEvidence


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # "none" with check "policy" when the policy decided nothing
    failed_checks: tuple[str, ...]
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "failed_checks": list(self.failed_checks),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Reappraisal:
    node_id: str
    result_id: int
    stored: str  # the status the verifier recorded then
    current: Verdict
    candidate: Verdict

    @property
    def changed(self) -> bool:
        return (self.current.status, self.current.failed_checks) != (
            self.candidate.status,
            self.candidate.failed_checks,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node_id,
            "result_id": self.result_id,
            "stored": self.stored,
            "current": self.current.to_json(),
            "candidate": self.candidate.to_json(),
            "changed": self.changed,
        }


def reappraise(
    evidence: Sequence[AppraisedEvidence], current: PolicyEngine, candidate: PolicyEngine
) -> list[Reappraisal]:
    """Every node's newest appraisable evidence under both policies, ordered by node."""
    outcomes = []
    for item in sorted(evidence, key=lambda e: e.node_id):
        if item.appraisal_input is None:
            continue
        policy_input = dict(item.appraisal_input) | {"claims": item.claims or {}}
        outcomes.append(
            Reappraisal(
                node_id=item.node_id,
                result_id=item.result_id,
                stored=item.status,
                current=_verdict(current, policy_input),
                candidate=_verdict(candidate, policy_input),
            )
        )
    return outcomes


def _verdict(engine: PolicyEngine, policy_input: dict[str, object]) -> Verdict:
    try:
        decision = engine.evaluate(policy_input)
    except PolicyError as failure:
        return Verdict("none", (failure.check,), (failure.reason,))
    reasons = tuple(line for claim in sorted(decision.reasons) for line in decision.reasons[claim])
    return Verdict(str(decision.status), decision.failed_checks, reasons)

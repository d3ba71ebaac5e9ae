"""Rego appraisal policies: bundles, two engines behind one interface, a decision memo
and the Rego test runner.

    bundle = load_bundle(default_policy_dir())
    engine = MemoisedEngine(EmbeddedEngine(bundle))          # or RemoteEngine(url, ...)
    decision = engine.evaluate(policy_input, evidence_digest)

Every failure to decide raises a `PolicyError` (check `policy`): no decision, no trust.
"""

from verifier.policy.bundle import (
    PolicyBundle,
    RegoModule,
    default_policy_dir,
    load_bundle,
    policy_id_of,
)
from verifier.policy.embedded import EmbeddedEngine
from verifier.policy.engine import (
    RESULT_PATH,
    RESULT_RULE,
    TRUST_CLAIMS,
    Decision,
    PolicyEngine,
    Status,
    decision_from_result,
    status_of,
    tier_of,
)
from verifier.policy.errors import (
    PolicyError,
    PolicyInvalid,
    PolicyOutputInvalid,
    PolicyUnavailable,
)
from verifier.policy.memo import MemoisedEngine, input_digest
from verifier.policy.remote import RemoteEngine
from verifier.policy.runner import Outcome, RegoTestReport, RegoTestResult, run_tests

__all__ = [
    "RESULT_PATH",
    "RESULT_RULE",
    "TRUST_CLAIMS",
    "Decision",
    "EmbeddedEngine",
    "MemoisedEngine",
    "Outcome",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyError",
    "PolicyInvalid",
    "PolicyOutputInvalid",
    "PolicyUnavailable",
    "RegoModule",
    "RegoTestReport",
    "RegoTestResult",
    "RemoteEngine",
    "Status",
    "decision_from_result",
    "default_policy_dir",
    "input_digest",
    "load_bundle",
    "policy_id_of",
    "run_tests",
    "status_of",
    "tier_of",
]

"""Runs a bundle's Rego unit tests through the embedded engine: `attest policy test`.

As `opa test` does: every complete rule named `test_*` in a test module (`*_test.rego`)
is a test; it passes when it evaluates to `true`, fails when it is undefined or any other
value, and errors when evaluation raises.  Rules are found in regorus's own syntax tree,
not by pattern-matching source text, so a rule head spread over lines or a `test_`
function (which OPA does not run either) is read the way the engine reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from verifier.policy.bundle import PolicyBundle
from verifier.policy.embedded import RegoEngine, compile_modules, regorus_message
from verifier.policy.errors import PolicyInvalid

TEST_PREFIX = "test_"


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERRORED = "errored"


@dataclass(frozen=True, slots=True)
class RegoTestResult:
    """One test rule's outcome; `message` says why it did not pass."""

    package: str
    name: str
    module: str
    outcome: Outcome
    message: str = ""

    @property
    def rule(self) -> str:
        return f"data.{self.package}.{self.name}"


@dataclass(frozen=True, slots=True)
class RegoTestReport:
    bundle_digest: str
    policy_id: str
    results: tuple[RegoTestResult, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def ok(self) -> bool:
        """Every test passed, and there was at least one."""
        return bool(self.results) and all(r.outcome is Outcome.PASSED for r in self.results)

    def to_json(self) -> dict[str, object]:
        return {
            "bundle_digest": self.bundle_digest,
            "policy_id": self.policy_id,
            "passed": self.count(Outcome.PASSED),
            "failed": self.count(Outcome.FAILED),
            "errored": self.count(Outcome.ERRORED),
            "tests": [
                {
                    "package": r.package,
                    "name": r.name,
                    "module": r.module,
                    "outcome": str(r.outcome),
                    "message": r.message,
                }
                for r in self.results
            ],
        }


def run_tests(bundle: PolicyBundle) -> RegoTestReport:
    """Compile the bundle with its test modules and run every test rule, in file order.
    Raises PolicyInvalid when a module or test module does not compile."""
    engine = compile_modules(bundle, tests=True)
    test_modules = {module.path for module in bundle.tests}
    results = tuple(
        _run(engine, package, name, module)
        for module, package, name in _test_rules(engine, test_modules)
    )
    return RegoTestReport(bundle.digest, bundle.policy_id, results)


def _run(engine: RegoEngine, package: str, name: str, module: str) -> RegoTestResult:
    rule = f"data.{package}.{name}"
    try:
        value = engine.eval_rule(rule)
    except RuntimeError as exc:
        return RegoTestResult(package, name, module, Outcome.ERRORED, regorus_message(exc))
    if value is True:
        return RegoTestResult(package, name, module, Outcome.PASSED)
    message = "undefined" if value is None else f"evaluated to {json.dumps(value)[:200]}"
    return RegoTestResult(package, name, module, Outcome.FAILED, message)


def _test_rules(engine: RegoEngine, test_modules: set[str]) -> Iterator[tuple[str, str, str]]:
    """(module, package, rule name) of each test rule, once per name, in source order."""
    seen: set[tuple[str, str]] = set()
    for tree in json.loads(engine.get_ast_as_json()):
        module = tree["source"]["file"]
        if module not in test_modules:
            continue
        package = ".".join(_ref_names(tree["ast"]["package"]["refr"], module))
        for rule in tree["ast"]["rules"]:
            name = _complete_rule_name(rule)
            if name is None or not name.startswith(TEST_PREFIX) or (package, name) in seen:
                continue
            seen.add((package, name))
            yield module, package, name


def _complete_rule_name(rule: dict[str, object]) -> str | None:
    """The name of a complete rule (`name if ...`, `name := ...`) whose head is a plain
    variable; None for functions, partial sets/objects and dotted heads."""
    spec = rule.get("Spec")
    if not isinstance(spec, dict):
        return None
    head = spec.get("head")
    if not isinstance(head, dict) or not isinstance(head.get("Compr"), dict):
        return None
    reference = head["Compr"].get("refr")
    variable = reference.get("Var") if isinstance(reference, dict) else None
    name = variable.get("value") if isinstance(variable, dict) else None
    return name if isinstance(name, str) else None


def _ref_names(reference: object, module: str) -> list[str]:
    """`a.b.c` of a package reference (`Var` then `RefDot` fields)."""
    if isinstance(reference, dict) and isinstance(reference.get("Var"), dict):
        return [str(reference["Var"]["value"])]
    if isinstance(reference, dict) and isinstance(reference.get("RefDot"), dict):
        dot = reference["RefDot"]
        return [*_ref_names(dot["refr"], module), str(dot["field"][1])]
    raise PolicyInvalid(f"{module}: a package name this runner cannot read")

"""The embedded engine: regorus (the Rust Rego interpreter Trustee uses) in process.

regorus's Python Engine is `unsendable`: pyo3 panics when an Engine is used, cloned or
even dropped on a thread other than the one that made it.  So neither a lock around one
Engine nor `clone()` handed to other threads works; each thread compiles its own Engine
from the bundle's sources on first use (about 2.5 ms, once per thread).  The Engines sit
in one module-level `threading.local`, keyed by bundle digest: a thread's entries are
dropped on that thread when it ends, and, unlike a per-instance `threading.local`, this
one is never deallocated by another thread (which would drop live threads' Engines
there: pyo3 refuses with "unsendable, but is being dropped on another thread").  The
first Engine is compiled in the constructor, so a bundle that does not compile is
refused at start-up, not at the first attestation.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final, Protocol, cast

import regorus  # no type hints: pyproject.toml ignores its missing imports

from verifier.policy.bundle import PolicyBundle, RegoModule
from verifier.policy.engine import RESULT_RULE, Decision, decision_from_result
from verifier.policy.errors import PolicyInvalid, PolicyUnavailable

#: Compiled Engines a thread keeps (policy reloads leave old ones behind; the oldest go,
#: on their own thread).
ENGINES_PER_THREAD: Final = 4


class RegoEngine(Protocol):
    """The part of `regorus.Engine` Lightgate uses."""

    def set_rego_v0(self, enable: bool) -> None: ...
    def add_policy(self, path: str, rego: str) -> str: ...
    def add_data_json(self, data: str) -> None: ...
    def set_input_json(self, input: str) -> None: ...
    def eval_rule(self, rule: str) -> object: ...
    def get_packages(self) -> list[str]: ...
    def get_ast_as_json(self) -> str: ...


def compile_modules(bundle: PolicyBundle, *, tests: bool = False) -> RegoEngine:
    """A regorus Engine holding the bundle's modules (and test modules) and its data.

    Raises PolicyInvalid with regorus's message (file, line, column) when a module does
    not parse or the data is refused.
    """
    engine = cast(RegoEngine, regorus.Engine())
    # Rego v1 (`if`, `contains`) explicitly, so a change of regorus's default cannot
    # change which policies parse.
    engine.set_rego_v0(False)
    modules: tuple[RegoModule, ...] = bundle.modules + (bundle.tests if tests else ())
    for module in modules:
        try:
            engine.add_policy(module.path, module.source)
        except RuntimeError as exc:
            raise PolicyInvalid(f"{module.path}: {regorus_message(exc)}") from exc
    try:
        engine.add_data_json(bundle.data_json)
    except RuntimeError as exc:
        raise PolicyInvalid(f"data of {bundle.root}: {regorus_message(exc)}") from exc
    return engine


def regorus_message(exc: BaseException) -> str:
    """regorus's error without the Rust backtrace it appends (RUST_BACKTRACE):
    `file:line:col: what` when it names a place, else its first line."""
    text = str(exc).split("Stack backtrace:", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = next((line[3:].strip() for line in lines if line.startswith("-->")), None)
    what = next((line[6:].strip() for line in lines if line.startswith("error:")), None)
    if what:
        return f"{where}: {what}" if where else what
    return lines[0] if lines else type(exc).__name__


class _ThreadEngines(threading.local):
    def __init__(self) -> None:
        self.by_digest: OrderedDict[str, RegoEngine] = OrderedDict()


_THREAD_ENGINES: Final = _ThreadEngines()


class EmbeddedEngine:
    """Evaluates `data.lightgate.appraisal.result` in process; safe to share between
    threads (one regorus Engine per thread, see the module note)."""

    def __init__(self, bundle: PolicyBundle, *, rule: str = RESULT_RULE) -> None:
        self._bundle = bundle
        self._rule = rule
        package = rule.rsplit(".", 1)[0]
        if package not in self._engine().get_packages():
            raise PolicyInvalid(
                f"{bundle.root} has no package {package.removeprefix('data.')} "
                "(closed: no policy, no trust)"
            )

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    @property
    def bundle_digest(self) -> str:
        return self._bundle.digest

    @property
    def policy_id(self) -> str:
        return self._bundle.policy_id

    def evaluate(self, input: Mapping[str, object]) -> Decision:
        """The policy's Decision for `input`; PolicyUnavailable when regorus fails or
        the rule is undefined (closed: no decision, no trust)."""
        try:
            document = json.dumps(input)
        except (TypeError, ValueError) as exc:
            raise PolicyUnavailable(f"the policy input is not JSON: {exc}") from exc
        engine = self._engine()
        try:
            engine.set_input_json(document)
            result = engine.eval_rule(self._rule)
        except RuntimeError as exc:
            raise PolicyUnavailable(f"{self._rule}: {regorus_message(exc)}") from exc
        if result is None:
            raise PolicyUnavailable(
                f"{self._rule} is undefined for this input (closed: no decision, no trust)"
            )
        return decision_from_result(result, policy_id=self.policy_id)

    def _engine(self) -> RegoEngine:
        engines = _THREAD_ENGINES.by_digest
        engine = engines.get(self._bundle.digest)
        if engine is None:
            engine = compile_modules(self._bundle)
            engines[self._bundle.digest] = engine
            while len(engines) > ENGINES_PER_THREAD:
                engines.popitem(last=False)
        return engine

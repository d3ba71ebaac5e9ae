"""The embedded engine (regorus) running the repository's policy: decisions for the
spec's scenarios, closed failures, and use from many threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.unit.verifier.policy.cases import CASES, KERNEL
from tests.unit.verifier.policy.conftest import good_input, section, write
from verifier.policy.bundle import PolicyBundle, load_bundle
from verifier.policy.embedded import EmbeddedEngine, regorus_message
from verifier.policy.engine import Decision, Status
from verifier.policy.errors import PolicyInvalid, PolicyOutputInvalid, PolicyUnavailable


@pytest.fixture(scope="module")
def engine(bundle: PolicyBundle) -> EmbeddedEngine:
    return EmbeddedEngine(bundle)


@pytest.mark.parametrize(
    ("policy_input", "status", "checks"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_default_policy_decisions(
    engine: EmbeddedEngine,
    policy_input: dict[str, object],
    status: Status,
    checks: tuple[str, ...],
) -> None:
    decision = engine.evaluate(policy_input)
    assert decision.status is status
    assert decision.failed_checks == checks
    assert decision.policy_id == engine.policy_id


def test_kernel_deviation_names_the_claim(engine: EmbeddedEngine) -> None:
    decision = engine.evaluate(good_input(golden=section("golden", deviations=[KERNEL])))
    assert decision.trust_vector["executables"] == 96
    assert decision.reasons == {"executables": (KERNEL["text"],)}


def test_a_bundle_without_its_data_decides_nothing(tmp_path: Path, bundle: PolicyBundle) -> None:
    module = bundle.modules[0]
    engine = EmbeddedEngine(load_bundle(write(tmp_path, {module.path: module.source})))
    with pytest.raises(PolicyUnavailable, match="undefined for this input"):
        engine.evaluate(good_input())


def test_evaluation_errors_are_unavailable_without_a_backtrace(tmp_path: Path) -> None:
    policy = "package lightgate.appraisal\n\nresult := 1 / input.zero\n"
    engine = EmbeddedEngine(load_bundle(write(tmp_path, {"p.rego": policy})))
    with pytest.raises(PolicyUnavailable) as caught:
        engine.evaluate({"zero": 0})
    assert "p.rego:3" in caught.value.message
    assert "divide by zero" in caught.value.message
    assert "backtrace" not in caught.value.message


def test_a_malformed_decision_is_refused(tmp_path: Path) -> None:
    policy = 'package lightgate.appraisal\n\nresult := {"status": "great"}\n'
    engine = EmbeddedEngine(load_bundle(write(tmp_path, {"p.rego": policy})))
    with pytest.raises(PolicyOutputInvalid):
        engine.evaluate({})


def test_rego_that_does_not_compile_is_refused_at_start(tmp_path: Path) -> None:
    policy = "package lightgate.appraisal\n\nresult := {\n"
    with pytest.raises(PolicyInvalid, match=r"p\.rego:"):
        EmbeddedEngine(load_bundle(write(tmp_path, {"p.rego": policy})))


def test_a_bundle_without_the_appraisal_package_is_refused(tmp_path: Path) -> None:
    bundle = load_bundle(write(tmp_path, {"p.rego": "package other\n\nresult := 1\n"}))
    with pytest.raises(PolicyInvalid, match=r"no package lightgate\.appraisal"):
        EmbeddedEngine(bundle)


def test_input_that_is_not_json_is_unavailable(engine: EmbeddedEngine) -> None:
    with pytest.raises(PolicyUnavailable, match="not JSON"):
        engine.evaluate({"node": object()})


def test_threads_each_get_the_same_decisions(engine: EmbeddedEngine) -> None:
    # regorus Engines are bound to the thread that made them: every thread must get its
    # own and still decide exactly as the constructing thread does.
    expected = {name: engine.evaluate(case) for name, case, _, _ in CASES}
    decided: list[dict[str, Decision]] = []
    failures: list[BaseException] = []

    def work() -> None:
        try:
            decided.append({name: engine.evaluate(case) for name, case, _, _ in CASES * 3})
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert decided == [expected] * 4


def test_regorus_messages_keep_place_and_reason() -> None:
    error = RuntimeError(
        "\n--> a.rego:3:21\n  |\n3 | x := 1/0\n  |  ^\nerror: divide by zero\n\n"
        "Stack backtrace:\n   0: <unknown>\n"
    )
    assert regorus_message(error) == "a.rego:3:21: divide by zero"
    assert regorus_message(RuntimeError("not a valid rule path\n\nStack backtrace:\n")) == (
        "not a valid rule path"
    )

"""The Rego test runner behind `attest policy test`: which rules are tests, and what
counts as passed, failed and errored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.verifier.policy.conftest import write
from verifier.policy.bundle import PolicyBundle, load_bundle
from verifier.policy.errors import PolicyInvalid
from verifier.policy.runner import Outcome, run_tests

MODULE = "package lightgate.appraisal\n\nresult := input.x\n"


def test_the_repository_policy_passes_its_tests(bundle: PolicyBundle) -> None:
    report = run_tests(bundle)
    names = re.findall(r"^(test_\w+) if", bundle.tests[0].source, re.MULTILINE)
    assert [r.name for r in report.results] == names
    assert report.ok
    assert {r.package for r in report.results} == {"lightgate.appraisal_test"}
    assert report.count(Outcome.PASSED) == len(names) >= 9


def test_outcomes(tmp_path: Path) -> None:
    tests = """package lightgate.more_test

import data.lightgate.appraisal

test_passes if appraisal.result == 1 with input as {"x": 1}

test_fails if appraisal.result == 2 with input as {"x": 1}

test_not_true := 7

test_errors if 1 / count([]) == 1

test_f(x) if x

test_set contains 1 if true

helper if true
"""
    report = run_tests(load_bundle(write(tmp_path, {"p.rego": MODULE, "p_test.rego": tests})))
    outcomes = {r.name: (r.outcome, r.message) for r in report.results}
    assert outcomes == {
        "test_passes": (Outcome.PASSED, ""),
        "test_fails": (Outcome.FAILED, "undefined"),
        "test_not_true": (Outcome.FAILED, "evaluated to 7"),
        "test_errors": (Outcome.ERRORED, outcomes["test_errors"][1]),
    }
    assert "divide by zero" in outcomes["test_errors"][1]
    assert report.results[0].rule == "data.lightgate.more_test.test_passes"
    assert report.results[0].module == "p_test.rego"
    assert not report.ok
    assert report.to_json()["failed"] == 2


def test_rules_with_several_bodies_run_once(tmp_path: Path) -> None:
    tests = "package t_test\n\ntest_x if false\n\ntest_x if true\n"
    report = run_tests(load_bundle(write(tmp_path, {"p.rego": MODULE, "p_test.rego": tests})))
    assert [(r.name, r.outcome) for r in report.results] == [("test_x", Outcome.PASSED)]


def test_no_tests_is_not_ok(tmp_path: Path) -> None:
    report = run_tests(load_bundle(write(tmp_path, {"p.rego": MODULE})))
    assert report.results == ()
    assert not report.ok


def test_a_test_module_that_does_not_compile_is_refused(tmp_path: Path) -> None:
    bundle = load_bundle(
        write(tmp_path, {"p.rego": MODULE, "p_test.rego": "package t\n\ntest_x if {\n"})
    )
    with pytest.raises(PolicyInvalid, match=r"p_test\.rego"):
        run_tests(bundle)

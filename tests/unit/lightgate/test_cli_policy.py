"""`attest policy test` and `attest policy eval` as a user runs them: exit codes, output,
and one `error:` line for a broken policy."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.models import TyperInfo

from lightgate import cli
from lightgate.cli_policy import policy_app
from verifier.policy.bundle import default_policy_dir

POLICIES = default_policy_dir()
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def attest(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """Runs `attest ARGS` through lightgate.cli.main.  Until the coordinator wires the
    `policy` group into lightgate/cli.py, the test adds it for its own duration."""
    if not any(group.name == "policy" for group in cli.app.registered_groups):
        groups = [*cli.app.registered_groups, TyperInfo(policy_app, name="policy")]
        monkeypatch.setattr(cli.app, "registered_groups", groups)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            cli.main(list(argv))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_the_repository_policies_pass(attest: Run) -> None:
    code, out, _ = attest("policy", "test", str(POLICIES))
    assert code == 0
    assert "PASS data.lightgate.appraisal_test.test_good_node_is_affirming" in out
    assert "0 failed, 0 errored" in out


def test_the_default_folder_is_the_repositorys(attest: Run) -> None:
    code, out, _ = attest("policy", "test", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["failed"] == report["errored"] == 0
    assert report["passed"] == len(report["tests"]) > 0


def test_a_failing_test_exits_1(attest: Run, tmp_path: Path) -> None:
    folder = shutil.copytree(POLICIES, tmp_path / "policies")
    (folder / "lightgate" / "extra_test.rego").write_text(
        "package lightgate.extra_test\n\n"
        "import data.lightgate.appraisal\n\n"
        'test_wrong if appraisal.result.status == "warning" with input as {}\n'
    )
    code, out, _ = attest("policy", "test", str(folder))
    assert code == 1
    assert "FAIL data.lightgate.extra_test.test_wrong: undefined" in out
    assert "1 failed" in out


def test_a_broken_test_file_exits_1(attest: Run, tmp_path: Path) -> None:
    folder = shutil.copytree(POLICIES, tmp_path / "policies")
    (folder / "lightgate" / "broken_test.rego").write_text("package broken_test\n\ntest_x if {\n")
    code, _, err = attest("policy", "test", str(folder))
    assert code == 1
    assert err.startswith("error: policy: lightgate/broken_test.rego:")
    assert "Traceback" not in err


def test_a_folder_without_tests_exits_1(attest: Run, tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package lightgate.appraisal\n\nresult := 1\n")
    code, _, err = attest("policy", "test", str(tmp_path))
    assert code == 1
    assert "error: no Rego tests" in err


def test_eval_prints_the_decision(attest: Run, tmp_path: Path) -> None:
    document = tmp_path / "input.json"
    document.write_text(json.dumps({"claims": {"secure-boot.enabled": False}}))
    code, out, _ = attest("policy", "eval", "--input", str(document), "--policy", str(POLICIES))
    decision = json.loads(out)
    assert code == 0
    assert decision["status"] == "contraindicated"
    assert "secure-boot" in decision["failed_checks"]
    assert decision["policy_id"].startswith("policy:lightgate/appraisal@sha256:")


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "is not JSON"), ("[1]", "must be a JSON object")],
)
def test_eval_refuses_bad_input(attest: Run, tmp_path: Path, text: str, message: str) -> None:
    document = tmp_path / "input.json"
    document.write_text(text)
    code, _, err = attest("policy", "eval", "--input", str(document))
    assert code == 1
    assert err.startswith("error: ")
    assert message in err

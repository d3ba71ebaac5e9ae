"""`attest policy`: run a policy folder's Rego tests, evaluate one input.

Thin like the rest of the CLI: load the bundle, call verifier.policy, print.  A bundle
that does not load or compile is a PolicyInvalid refusal, which `attest` prints as one
`error:` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lightgate.cli_common import JsonOption, fail, out, read_file

if TYPE_CHECKING:  # verifier.policy loads regorus; only the commands that run need it
    from verifier.policy.bundle import PolicyBundle

policy_app = typer.Typer(no_args_is_help=True, help="Rego appraisal policies.")

PolicyDirOption = Annotated[
    Path | None,
    typer.Option("--policy", help="Policy folder (default: the repository's policies/)."),
]
MAX_INPUT_BYTES = 16 * 1024 * 1024


def _bundle(directory: Path | None) -> PolicyBundle:
    from verifier.policy.bundle import default_policy_dir, load_bundle

    return load_bundle(directory if directory is not None else default_policy_dir())


@policy_app.command("test")
def policy_test(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Policy folder (default: the repository's policies/)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run every test_* rule of the folder's *_test.rego modules; exit 1 unless all pass."""
    from verifier.policy.runner import Outcome, run_tests

    bundle = _bundle(directory)
    report = run_tests(bundle)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        labels = {
            Outcome.PASSED: "[green]PASS[/green]",
            Outcome.FAILED: "[red]FAIL[/red]",
            Outcome.ERRORED: "[red]ERROR[/red]",
        }
        for result in report.results:
            detail = f": {result.message}" if result.message else ""
            out.print(
                f"{labels[result.outcome]} {result.rule}{detail}", highlight=False, soft_wrap=True
            )
        out.print(
            f"{report.count(Outcome.PASSED)} passed, {report.count(Outcome.FAILED)} failed, "
            f"{report.count(Outcome.ERRORED)} errored ({report.policy_id})",
            highlight=False,
            soft_wrap=True,
        )
    if not report.results:
        fail(f"no Rego tests (test_* rules in *_test.rego) under {bundle.root}")
    if not report.ok:
        raise typer.Exit(1)


@policy_app.command("eval")
def policy_eval(
    input_file: Annotated[Path, typer.Option("--input", help="The policy input document (JSON).")],
    policy: PolicyDirOption = None,
) -> None:
    """Evaluate the appraisal policy on one input and print the Decision as JSON."""
    from verifier.policy.embedded import EmbeddedEngine

    try:
        document = json.loads(read_file(input_file, MAX_INPUT_BYTES))
    except ValueError as exc:
        fail(f"{input_file} is not JSON: {exc}")
    if not isinstance(document, dict):
        fail(f"{input_file}: the policy input must be a JSON object")
    decision = EmbeddedEngine(_bundle(policy)).evaluate(document)
    out.print_json(json.dumps(decision.to_json()))

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

from lightgate.cli_common import ConfigOption, JsonOption, fail, open_store, out, read_file
from lightgate.cli_node import AdminOption, CaOption, CertOption, KeyOption, TokenFileOption

if TYPE_CHECKING:  # verifier.policy loads regorus; only the commands that run need it
    from verifier.policy.bundle import PolicyBundle
    from verifier.policy.engine import PolicyEngine
    from verifier.policy.whatif import Reappraisal

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


@policy_app.command("whatif")
def policy_whatif(
    policy: Annotated[Path, typer.Option("--policy", help="The candidate policy folder.")],
    since: Annotated[str, typer.Option(help="Evidence since then: 24h, 7d or a time.")] = "24h",
    config: ConfigOption = None,
    all_nodes: Annotated[bool, typer.Option("--all", help="List unchanged nodes too.")] = False,
    fail_on_change: Annotated[
        bool, typer.Option(help="Exit 3 when any node would change (for pipelines).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Appraise stored evidence again under a candidate policy: which nodes would
    change status, and why, before the policy is rolled out."""
    from lightgate.cli_node import parse_since
    from lightgate.config import VerifierConfig, load_config
    from verifier.policy import EmbeddedEngine, PolicyError
    from verifier.policy.whatif import reappraise
    from verifier.references import policy_in_force

    settings = load_config(VerifierConfig, config)
    moment = parse_since(since)
    assert moment is not None
    store = open_store(settings)
    try:
        try:
            current, source = policy_in_force(settings.policy, store)
            candidate = EmbeddedEngine(_bundle(policy))
        except PolicyError as exc:
            fail(exc.reason)
        outcomes = reappraise(store.appraised_evidence(moment), current, candidate)
    finally:
        store.close()
    changed = [o for o in outcomes if o.changed]
    if as_json:
        document = {
            "since": moment.isoformat(),
            "current_policy": {"id": current.policy_id, "source": source},
            "candidate_policy": {"id": candidate.policy_id, "source": str(policy)},
            "nodes": len(outcomes),
            "changed": len(changed),
            "outcomes": [o.to_json() for o in (outcomes if all_nodes else changed)],
        }
        out.print_json(json.dumps(document))
    else:
        _print_whatif(outcomes if all_nodes else changed, len(outcomes), current, candidate)
    if changed and fail_on_change:
        raise typer.Exit(3)


def _print_whatif(
    shown: list[Reappraisal], total: int, current: PolicyEngine, candidate: PolicyEngine
) -> None:
    from rich.table import Table

    table = Table(
        "node",
        "now",
        "candidate",
        "why",
        title=f"{current.policy_id} → {candidate.policy_id}",
    )
    for outcome in shown:
        was, will = outcome.current, outcome.candidate
        why = "; ".join(will.reasons if will.reasons else was.reasons) or "-"
        table.add_row(outcome.node_id, was.status, will.status, why)
    out.print(table)
    changed = sum(1 for o in shown if o.changed)
    out.print(f"{changed} of {total} nodes would change status under the candidate policy")


@policy_app.command("apply")
def policy_apply(
    directory: Annotated[Path, typer.Argument(help="The policy folder to put in force.")],
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Put a policy folder in force on every verifier replica (through the Admin API;
    refused unless it compiles and its own Rego tests pass)."""
    from lightgate.cli_node import admin_call
    from lightgate.wire.v1 import admin_pb2 as pb
    from verifier.policy import PolicyError
    from verifier.policy.bundle import read_bundle_files

    try:
        files = read_bundle_files(directory)
    except PolicyError as exc:
        fail(exc.reason)
    with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
        reply = stub.SetPolicy(pb.SetPolicyRequest(files=files), metadata=metadata)
    out.print(f"policy {reply.policy_id} is in force", highlight=False)

"""The `attest` command.  Thin: it parses, reads files, calls, prints.

Errors are one line starting with `error:` and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lightgate import logs, sdnotify
from lightgate.cli_boot import eventlog_app
from lightgate.cli_common import CliError, ConfigOption, JsonOption, err, fail, out
from lightgate.cli_golden import golden_app
from lightgate.cli_node import admin_app, node_app
from lightgate.cli_policy import policy_app
from lightgate.cli_report import report
from lightgate.cli_result import result_app
from lightgate.config import ConfigError, VerifierConfig, load_config
from lightgate.errors import Refusal

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Lightgate trusted-compute attestation."
)
verifier_app = typer.Typer(no_args_is_help=True, help="The central verifier service.")
agent_app = typer.Typer(no_args_is_help=True, help="The node agent.")
sim_app = typer.Typer(no_args_is_help=True, help="A fleet of software-TPM nodes on this machine.")
quote_app = typer.Typer(no_args_is_help=True, help="TPM quotes, offline.")
for sub, name in (
    (verifier_app, "verifier"),
    (agent_app, "agent"),
    (sim_app, "sim"),
    (quote_app, "quote"),
    (node_app, "node"),
    (admin_app, "admin"),
    (policy_app, "policy"),
    (result_app, "result"),
):
    app.add_typer(sub, name=name)
app.add_typer(eventlog_app, name="eventlog")
app.add_typer(golden_app, name="golden")
app.command("report")(report)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


# --- verifier -------------------------------------------------------------------------


@verifier_app.command("serve")
def verifier_serve(config: ConfigOption = None, log_level: str = "INFO") -> None:
    """Serve the gRPC Attestation API until SIGTERM or Ctrl-C."""
    from verifier.server import start_verifier

    logs.configure(log_level)
    settings = load_config(VerifierConfig, config)
    stop = _stop_on_signals()
    running = start_verifier(settings)
    sdnotify.notify(f"READY=1\nSTATUS=serving gRPC on port {running.port}")
    try:
        ping_every = sdnotify.watchdog_seconds()
        while not sdnotify.rest(stop, 3600.0, ping_every):
            pass
    finally:
        sdnotify.notify("STOPPING=1")
        running.stop(grace=2.0)


# --- agent ----------------------------------------------------------------------------


@agent_app.command("run")
def agent_run(config: ConfigOption = None, log_level: str = "INFO") -> None:
    """Enroll this node's TPM, then attest every interval until SIGTERM or Ctrl-C.

    This process becomes `lightgate-agent` (exec, same pid): the agent alone, without
    this CLI's modules, which would triple its memory on every node."""
    from lightgate.agent_config import load_agent_config

    load_agent_config(config)  # a bad file is this CLI's one-line error, before the exec
    argv = [sys.executable, "-m", "attestor", "--log-level", log_level]
    if config is not None:
        argv += ["--config", str(config)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, an argv list


# --- quotes ---------------------------------------------------------------------------


@quote_app.command("verify")
def quote_verify(
    ak: Annotated[Path, typer.Option(help="AK public area: TPMT_PUBLIC, TPM2B_PUBLIC or PEM.")],
    message: Annotated[Path, typer.Option(help="Quote message: TPMS_ATTEST or TPM2B_ATTEST.")],
    signature: Annotated[Path, typer.Option(help="Quote signature: TPMT_SIGNATURE.")],
    pcrs: Annotated[Path, typer.Option(help='PCR values JSON: {"sha256": {"0": "<hex>"}}.')],
    nonce: Annotated[
        str, typer.Option(help="Expected nonce (qualifying data), hex; empty for none.")
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Check a quote offline, like tpm2_checkquote: exit 0 only when every check holds."""
    report = _check_quote_files(ak, message, signature, pcrs, nonce)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        out.print(
            f"ok: quote verified ({report['signature']}, clock {report['clock']['clock']} ms, "
            f"resetCount {report['clock']['reset_count']}, PCRs {report['pcr_selection']})",
            highlight=False,
        )


def _check_quote_files(
    ak: Path, message: Path, signature: Path, pcrs: Path, nonce: str
) -> dict[str, Any]:
    from verifier.evidence.keys import AttestationKey
    from verifier.evidence.pcr_values import PcrValues
    from verifier.evidence.quote import Quote, verify_quote_offline

    try:
        expected_nonce = bytes.fromhex(nonce)
    except ValueError:
        fail(f"--nonce {nonce!r} is not hex")
    try:
        pcr_document = json.loads(pcrs.read_text())
    except json.JSONDecodeError as exc:
        fail(f"{pcrs}: not JSON ({exc})")
    key = AttestationKey.from_bytes(ak.read_bytes())
    quote = Quote.parse(message.read_bytes(), signature.read_bytes())
    quote_info = verify_quote_offline(key, quote, PcrValues.from_json(pcr_document), expected_nonce)
    clock = quote.attest.clock_info
    return {
        "verified": True,
        "signature": f"sigAlg 0x{quote.signature.sig_alg:04x} "
        f"hash 0x{quote.signature.hash_alg:04x}",
        "nonce": quote.attest.extra_data.hex(),
        "pcr_selection": quote_info.pcr_selection.as_dict(),
        "pcr_digest": quote_info.pcr_digest.hex(),
        "clock": {
            "clock": clock.clock,
            "reset_count": clock.reset_count,
            "restart_count": clock.restart_count,
            "safe": clock.safe,
        },
        "firmware_version": f"{quote.attest.firmware_version:016x}",
    }


# --- simulator ------------------------------------------------------------------------


def _run_sim(plan: list[str], as_json: bool, workdir: Path | None) -> None:
    from lightgate.sim.fleet import run_fleet
    from lightgate.sim.scenarios import check_plan
    from lightgate.sim.swtpm import require_tools

    check_plan(plan)
    require_tools()
    if as_json:
        results = run_fleet(plan, workdir=workdir)
        document = {
            "nodes": [
                {
                    "node": r.node,
                    "scenario": r.scenario,
                    "status": r.status,
                    "failed_checks": list(r.failed_checks),
                    "reason": r.reason,
                    "admission": None if r.admission is None else r.admission.to_json(),
                    "containers": r.containers,
                }
                for r in results
            ]
        }
        out.print_json(json.dumps(document))
    else:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("simulating", total=len(plan))

            def progress(message: str) -> None:
                if message.startswith("node-"):
                    bar.advance(task)
                bar.update(task, description=message[:60])

            results = run_fleet(plan, workdir=workdir, progress=progress)
        _print_results(results)
    if not all(r.as_expected for r in results):
        raise typer.Exit(1)


_LONG_HEX = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{8,}\b")
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT)?(\d\d:\d\d:\d\d)(\.\d+)?\+00:00")


_CLAIM_NAME = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9-]+)+$|^(boot-chain|separators)$")


def _brief(reason: str, node: str) -> str:
    """The table's short form of a reason: golden deviations by claim name only, other
    lines without their check's name, long hex and timestamps abbreviated (the JSON
    output and the logs keep reasons whole)."""
    claims: list[str] = []
    lines: list[str] = []
    for line in reason.removesuffix(f" (node {node})").split("; "):
        prefix, _, text = line.partition(": ")
        if _CLAIM_NAME.match(prefix):
            claims.append(prefix)
        elif text:
            lines.append(_TIMESTAMP.sub(r"\2Z", _LONG_HEX.sub(r"\1…", text)))
        # else: the rest of a deviation's description (missing ...; unexpected ...)
    parts = ["deviates in " + ", ".join(dict.fromkeys(claims))] if claims else []
    return "; ".join([*parts, *dict.fromkeys(lines)][:3])


def _print_results(results: list[Any]) -> None:
    table = Table(title="Lightgate simulation", expand=True)
    table.add_column("node", no_wrap=True)
    table.add_column("scenario")
    table.add_column("verdict (checks)", overflow="fold")
    table.add_column("detail", ratio=1, min_width=20, overflow="fold")
    table.add_column("scheduler · certificate", overflow="fold")
    table.add_column("", no_wrap=True)
    style = {"affirming": "green", "contraindicated": "red", "expired": "magenta"}
    for r in results:
        checks = list(r.failed_checks) or ([r.reason.partition(": ")[0]] if r.reason else [])
        detail = _brief(r.reason, r.node) if r.reason else f"trusted; {r.ak}"
        mark = "[green]✓[/]" if r.as_expected else f"[red]✗ expected {r.expected}[/]"
        verdict = f"[{style.get(r.status, 'yellow')}]{r.status}[/]"
        if checks:
            verdict += "\n" + ", ".join(checks)
        table.add_row(r.node, r.scenario, verdict, detail, _admission_cell(r.admission), mark)
    out.print(table)
    trusted = sum(r.status == "affirming" for r in results)
    admitted = sum(bool(r.admission and r.admission.admitted) for r in results)
    certified = sum(bool(r.admission and r.admission.certificate) for r in results)
    out.print(
        f"{trusted} of {len(results)} nodes trusted; {admitted} admitted by the scheduler "
        f"extender (workload web, region eu-west); {certified} given a TPM-bound certificate; "
        f"{sum(r.as_expected for r in results)} of {len(results)} outcomes as expected"
    )
    for source in sorted({r.containers for r in results if r.containers}):
        out.print(source)


def _admission_cell(admission: Any) -> str:
    """What the scheduler extender and the credential gate made of a node."""
    if admission is None:
        return "-"
    lines = [
        "[green]admitted[/]" if admission.admitted else "[red]filtered out[/]",
        f"[green]certificate[/] {admission.certificate[:12]}…"
        if admission.certificate
        else "[red]no certificate[/]",
    ]
    if admission.revoked_serial is not None:
        crl = "on the CRL" if admission.revoked_on_crl else "[red]NOT on the CRL[/]"
        lines.append(f"earlier certificate {admission.revoked_serial[:12]}… {crl}")
    return "\n".join(lines)


@sim_app.command("demo")
def sim_demo(
    as_json: JsonOption = False,
    workdir: Annotated[Path | None, typer.Option(help="Keep the fleet's files here.")] = None,
) -> None:
    """Good nodes and every attack scenario, each refused for its reason."""
    from lightgate.sim.scenarios import DEMO_PLAN

    _run_sim(DEMO_PLAN, as_json, workdir)


@sim_app.command("run")
def sim_run(
    nodes: Annotated[int, typer.Option(min=1, max=500, help="Number of nodes.")] = 4,
    scenario: Annotated[
        list[str] | None, typer.Option(help="Scenario(s), cycled over the nodes.")
    ] = None,
    vm: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=16,
            help="Boot this many full guests under QEMU instead (scenarios vm-good, "
            "vm-changed-cmdline; default both, cycled).",
        ),
    ] = None,
    as_json: JsonOption = False,
    workdir: Annotated[Path | None, typer.Option(help="Keep the fleet's files here.")] = None,
) -> None:
    """Run N nodes with the given scenarios (default: good), or N full guests (--vm)."""
    if vm is not None:
        names = scenario or ["vm-good", "vm-changed-cmdline"]
        _run_vms([names[i % len(names)] for i in range(vm)], as_json, workdir)
        return
    names = scenario or ["good"]
    _run_sim([names[i % len(names)] for i in range(nodes)], as_json, workdir)


def _run_vms(plan: list[str], as_json: bool, workdir: Path | None) -> None:
    from lightgate.sim.realboot.esp import EspError
    from lightgate.sim.realboot.packages import PackageError
    from lightgate.sim.realboot.qemu import BootError
    from lightgate.sim.realboot.rootfs import RootfsError
    from lightgate.sim.realboot.vm import GuestError, check_plan, run_guests

    check_plan(plan)

    def progress(message: str) -> None:
        err.print(f"[dim]{message}[/]", highlight=False)

    try:
        results = run_guests(plan, workdir=workdir, progress=progress)
    except (GuestError, BootError, RootfsError, PackageError, EspError) as exc:
        fail(str(exc))
    if as_json:
        out.print_json(json.dumps({"nodes": [r.to_json() for r in results]}))
    else:
        table = Table(title="Lightgate full guests (QEMU, Secure Boot, agent as a service)")
        for column in ("node", "scenario", "verdict (checks)", "detail", "boot to verdict", ""):
            table.add_column(column, overflow="fold")
        for r in results:
            verdict = r.status + ("\n" + ", ".join(r.failed_checks) if r.failed_checks else "")
            seconds = "-" if r.boot_to_verdict_seconds is None else f"{r.boot_to_verdict_seconds} s"
            mark = "[green]✓[/]" if r.as_expected else f"[red]✗ expected {r.expected}[/]"
            detail = _brief(r.reason, r.node) if r.reason else "trusted"
            table.add_row(r.node, r.scenario, verdict, detail, seconds, mark)
        out.print(table)
        for r in results:
            if not r.as_expected and r.console_tail:
                err.print(f"{r.node} console (last lines):\n{r.console_tail}", highlight=False)
    if not all(r.as_expected for r in results):
        raise typer.Exit(1)


@sim_app.command("scenarios")
def sim_scenarios() -> None:
    """List the scenarios and the check each must trip."""
    from lightgate.sim.scenarios import SCENARIOS

    table = Table("scenario", "what the node does", "refused by")
    for s in SCENARIOS.values():
        table.add_row(s.name, s.description, s.expect or "(trusted)")
    out.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning known failures into one `error:` line."""
    from attestor.tpm import TpmError
    from lightgate.sim.swtpm import SimulatorError

    known: tuple[type[BaseException], ...] = (
        CliError,
        ConfigError,
        Refusal,
        SimulatorError,
        TpmError,
        OSError,
        ValueError,
    )
    # Real firmware carries certificates that bend RFC 5280; cryptography warns about
    # them on every parse.  The claims already say what the certificates are.
    warnings.filterwarnings("ignore", module="cryptography")
    warnings.filterwarnings("ignore", message="Attribute's length must be")
    command: Callable[..., Any] = typer.main.get_command(app)
    try:
        # click handles usage errors (exit 2) and Ctrl-C ("Aborted!", exit 1) itself.
        command(args=argv, prog_name="attest")
    except known as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        print(f"error: {' '.join(str(reason).split())}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # everything started was stopped on the way out
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

"""`attest eventlog`: measured-boot event logs for people (`attest golden` is in
cli_golden.py).

Thin like the rest of the CLI: read files, call the pure modules, print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lightgate.cli_common import JsonOption, out, read_file

if TYPE_CHECKING:  # the modules load lazily so `attest --help` stays fast
    from verifier.evidence.eventlog import EventLog

eventlog_app = typer.Typer(no_args_is_help=True, help="UEFI measured-boot event logs, offline.")

LogArgument = Annotated[Path, typer.Argument(help="Event log (binary_bios_measurements).")]


# --- eventlog -------------------------------------------------------------------------


def parse_log_file(path: Path) -> EventLog:
    from verifier.evidence.eventlog import MAX_EVENT_LOG_BYTES, parse_event_log

    return parse_event_log(read_file(path, MAX_EVENT_LOG_BYTES), max_size=MAX_EVENT_LOG_BYTES)


@eventlog_app.command("show")
def eventlog_show(
    path: LogArgument,
    pcr: Annotated[list[int] | None, typer.Option(help="Only events of these PCRs.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The log's events as a table: number, PCR, type, digests and what the data says."""
    from verifier.evidence.event_text import describe_event

    log = parse_log_file(path)
    events = [e for e in log.events if not pcr or e.pcr in pcr]
    if as_json:
        rows = [
            {
                "event": e.number,
                "offset": e.offset,
                "pcr": e.pcr,
                "type": e.type_name,
                "digests": {_bank(alg): d.hex() for alg, d in e.digests},
                "description": describe_event(e, log.uintn_size, limit=4096),
                "data_size": len(e.data),
            }
            for e in events
        ]
        document = {
            "format": str(log.format),
            "banks": [b.bank_name for b in log.banks],
            "startup_locality": log.startup_locality,
            "sha256": log.sha256.hex(),
            "events": rows,
        }
        out.print_json(json.dumps(document))
        return
    bank = log.banks[-1] if log.banks else None
    table = Table("#", "PCR", f"{bank.bank_name if bank else ''} digest")
    table.add_column("type", no_wrap=True)
    table.add_column("data", overflow="fold")
    for event in events:
        digest = event.digest(bank) if bank else None
        table.add_row(
            str(event.number),
            "-1" if event.pcr == 0xFFFFFFFF else str(event.pcr),
            digest.hex()[:16] + "…" if digest else "-",
            event.type_name,
            describe_event(event, log.uintn_size),
        )
    out.print(table)
    locality = log.startup_locality
    out.print(
        f"{log.format}, banks {', '.join(b.bank_name for b in log.banks)}, "
        f"{len(log.events)} events"
        + (f", StartupLocality {locality}" if locality is not None else ""),
        highlight=False,
    )


@eventlog_app.command("replay")
def eventlog_replay(path: LogArgument, as_json: JsonOption = False) -> None:
    """The PCR values the log's events produce, per bank, for every PCR it extends."""
    from verifier.evidence.eventlog import replay

    replayed = replay(parse_log_file(path)).to_json()
    if as_json:
        out.print_json(json.dumps(replayed))
        return
    table = Table("bank", "PCR", "value")
    for bank, values in replayed["banks"].items():
        for index, value in values.items():
            table.add_row(bank, index, value)
    out.print(table)


@eventlog_app.command("claims")
def eventlog_claims(path: LogArgument, as_json: JsonOption = False) -> None:
    """What the log says was booted (unverified: no quote vouches for it here)."""
    from verifier.evidence.claim_names import claims_document, flatten
    from verifier.evidence.claims import extract_claims

    claims = extract_claims(parse_log_file(path))
    if as_json:
        out.print_json(json.dumps(claims_document(claims)))
        return
    table = Table("claim", "value")
    for name, value in flatten(claims).items():
        shown = _listing(value) if isinstance(value, tuple) else str(value)
        table.add_row(name, shown or "(empty)")
    out.print(table)
    for finding in claims.findings:
        out.print(f"finding: {finding.describe()}", highlight=False)


def _listing(values: tuple[str, ...], most: int = 8) -> str:
    """A list claim for the table: whole when short, else its head and a count (the
    JSON output keeps every entry)."""
    if len(values) <= most:
        return "\n".join(values)
    return "\n".join(values[: most - 2]) + f"\n… ({len(values)} entries; --json lists all)"


def _bank(alg: int) -> str:
    from verifier.evidence.tpm_structures import HashAlg

    try:
        return HashAlg(alg).bank_name
    except ValueError:
        return f"0x{alg:04x}"

"""`attest report`: fleet compliance for auditors, read from the verifier's store.

Thin: parse the options, read the store (`lightgate.report`), print or write one of
four formats.  The exit status gates a pipeline: 0 when every selected node is
compliant, 1 when any is not, 2 when the report could not be made (bad options or
configuration, an unreadable database, no node selected), so that a broken report
never reads as a compliance failure or a pass.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from lightgate.cli_common import CliError, ConfigOption, JsonOption, fail, out
from lightgate.cli_node import parse_since

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from lightgate.config import VerifierConfig
    from lightgate.report import FleetReport

EXIT_OUT_OF_COMPLIANCE = 1
EXIT_USAGE = 2
# Hourly points up to two days, daily beyond (8 points for the default week).
HOURLY_UP_TO = timedelta(days=2)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


def report(
    config: ConfigOption = None,
    since: Annotated[
        str,
        typer.Option(help="Start of the trend: 7d, 24h (before --until) or an ISO 8601 time."),
    ] = "7d",
    until: Annotated[
        str | None,
        typer.Option(help="The moment reported on: an ISO 8601 time or 24h (ago); default now."),
    ] = None,
    bucket: Annotated[
        str | None,
        typer.Option(help="Trend step: 1h, 6h, 1d (default 1h up to 2 days, else 1d)."),
    ] = None,
    site: Annotated[
        list[str] | None,
        typer.Option("--site", help="Only nodes observed at this site (repeat: any of them)."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Only nodes whose asset tag has KEY=VALUE (repeat: all)."),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only nodes in this trust state (repeat: any of them)."),
    ] = None,
    allow_warning: Annotated[
        bool, typer.Option("--allow-warning", help="Count warning nodes as compliant.")
    ] = False,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="table, json, csv or html.")
    ] = ReportFormat.table,
    as_json: JsonOption = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
    ] = None,
    every_node: Annotated[
        bool,
        typer.Option("--all", help="Table: list compliant nodes too (other formats always do)."),
    ] = False,
) -> None:
    """Fleet compliance at --until and trusted nodes over the window: per node its
    status, last attestation, firmware, kernel, Secure Boot, location, images and
    failed checks (the table lists nodes out of compliance unless --all); totals,
    trend, and the NIST IR 8320A mapping.  Exit 0 when every selected node is
    compliant, 1 when any is not, 2 on a usage or configuration error."""
    from sqlalchemy.exc import SQLAlchemyError

    from lightgate.config import ConfigError
    from lightgate.report import ReportError
    from verifier.store.errors import StoreError

    chosen = ReportFormat.json if as_json else output_format
    try:
        with _cyclic_gc_paused():
            made = _make_report(config, since, until, bucket, site, tag, status, allow_warning)
            _emit(made, chosen, output, every_node)
    except (CliError, ConfigError, ReportError) as exc:
        _usage_error(str(exc))
    except (SQLAlchemyError, StoreError) as exc:
        detail = getattr(exc, "orig", None) or exc
        _usage_error(f"cannot read the verifier's database: {detail}")
    except OSError as exc:
        _usage_error(f"cannot write the report: {exc.strerror or exc}")
    if not made.compliant:
        raise typer.Exit(EXIT_OUT_OF_COMPLIANCE)


def _make_report(
    config: Path | None,
    since: str,
    until: str | None,
    bucket: str | None,
    sites: list[str] | None,
    tags: list[str] | None,
    statuses: list[str] | None,
    allow_warning: bool,
) -> FleetReport:
    from lightgate.config import VerifierConfig, load_config
    from lightgate.report import Selection, Window, fleet_report

    now = datetime.now(UTC)
    moment = _moment(until, now) if until is not None else now
    if moment > now:
        fail(f"--until {until} is in the future")
    start = _moment(since, moment)
    step = parse_duration(bucket) if bucket else _default_bucket(moment - start)
    window = Window(start, moment, step)
    selection = Selection(
        sites=frozenset(sites or ()),
        tags=tuple(parse_tag(item) for item in tags or ()),
        statuses=frozenset(statuses or ()),
        allow_warning=allow_warning,
    )
    settings = load_config(VerifierConfig, config)
    engine = _read_engine(settings)
    try:
        made = fleet_report(engine, window, selection, now)
    finally:
        engine.dispose()
    if not made.nodes:
        filtered = selection.sites or selection.tags or selection.statuses
        what = "matches the selection" if filtered else "is enrolled"
        fail(f"no node {what} at {moment.isoformat()}: nothing to report on")
    return made


def _read_engine(settings: VerifierConfig) -> Engine:
    """An engine on the verifier's database, which must exist: reading a report never
    creates or migrates one (an empty new database would report nothing)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from verifier.store.engine import create_store_engine, is_sqlite_memory
    from verifier.store.errors import StoreError

    try:
        url = make_url(settings.database())
    except ArgumentError as exc:
        fail(f"the database URL is not usable: {exc}")
    on_disk = url.get_backend_name() == "sqlite" and not is_sqlite_memory(url)
    if on_disk and not Path(url.database or "").is_file():
        fail(f"no verifier database at {url.database}")
    try:
        return create_store_engine(url, pool_size=1)
    except StoreError as exc:
        fail(str(exc))


def _emit(made: FleetReport, chosen: ReportFormat, output: Path | None, every_node: bool) -> None:
    from rich.console import Console

    from lightgate.report import render_csv, render_html, render_json
    from lightgate.report.table import print_report

    if chosen is ReportFormat.table:
        if output is None:
            print_report(made, out, every_node=every_node)
            return
        with output.open("w", encoding="utf-8") as handle:
            console = Console(file=handle, width=200, no_color=True)
            print_report(made, console, every_node=every_node)
        return
    renderers = {
        ReportFormat.json: render_json,
        ReportFormat.csv: render_csv,
        ReportFormat.html: render_html,
    }
    text = renderers[chosen](made)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `6h`, `1d`, `1w`: a positive length of time."""
    value = text.strip()
    number = value[:-1]
    if value and value[-1] in _UNITS and number.replace(".", "", 1).isdigit():
        length = timedelta(seconds=float(number) * _UNITS[value[-1]])
        if length > timedelta(0):
            return length
    fail(f"--bucket {text!r} is not a length of time such as 1h or 1d")


def parse_tag(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        fail(f"--tag {text!r} is not KEY=VALUE")
    return name, value


def _default_bucket(span: timedelta) -> timedelta:
    return timedelta(hours=1) if span <= HOURLY_UP_TO else timedelta(days=1)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A report of 10^4 nodes makes about a million objects in two seconds, none in a
    reference cycle (rows, tuples, frozen records: reference counting frees them).  The
    cyclic collector would walk the growing heap again and again and find nothing: a
    third of the command's time.  A command that exits when done can pause it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _moment(text: str, base: datetime) -> datetime:
    """A time, or a duration before `base`, in UTC."""
    moment = parse_since(text, base)
    assert moment is not None  # parse_since returns None only for None
    return moment.astimezone(UTC)


def _usage_error(message: str) -> NoReturn:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise typer.Exit(EXIT_USAGE)

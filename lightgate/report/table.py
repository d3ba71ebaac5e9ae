"""The report for a terminal: a rich table of the nodes out of compliance (of every node
with `every_node`), the fleet's totals, the trend as a sparkline, and the NIST IR 8320A
mapping with its outcome.

Only the nodes that need attention by default, as `attest policy whatif` lists only the
nodes that would change: a terminal cannot show 10^4 rows, and rich lays a row out in
about 2 ms (20 s for 10^4).  JSON, CSV and HTML always carry every node.

Node-sourced text (kernel paths, firmware versions, reasons) is printed as plain
`Text`, never as rich markup, and with control characters shown escaped: a boot log
must not be able to restyle or rewrite an auditor's terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lightgate.report.formats import attributes_text, duration
from lightgate.report.model import FleetReport, NodeCompliance, TrendPoint
from lightgate.report.nist import REQUIREMENTS
from lightgate.report.trend import summarise

_COLOURS: Final = {
    "affirming": "green",
    "warning": "yellow",
    "contraindicated": "red",
    "expired": "magenta",
    "revoked": "red",
    "enrolled": "cyan",
}
_BLOCKS: Final = "▁▂▃▄▅▆▇█"
SPARKLINE_POINTS: Final = 60


def print_report(report: FleetReport, console: Console, *, every_node: bool = False) -> None:
    listed = report.nodes if every_node else [n for n in report.nodes if not n.compliant]
    if listed:
        console.print(nodes_table(report, listed))
    unlisted = len(report.nodes) - len(listed)
    if unlisted:
        console.print(
            f"{_count(unlisted, 'compliant node')} not listed (--all lists every node)",
            highlight=False,
        )
    for line in summary_lines(report):
        console.print(line, highlight=False)
    console.print(nist_table(report))


def nodes_table(report: FleetReport, nodes: Sequence[NodeCompliance]) -> Table:
    """One row per node; images only when some node records them.  Times are UTC,
    month-day hour:minute (the title has the year); digests abbreviated (JSON, CSV and
    HTML keep them whole)."""
    window = report.window
    table = Table(
        title=f"Lightgate fleet compliance at {_time(window.until)}",
        caption=f"window {_time(window.since)} → {_time(window.until)}",
    )
    table.add_column("", no_wrap=True)  # ✓ compliant, ✗ not (for output without colour)
    table.add_column("node", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("last attested", min_width=5)
    table.add_column("firmware · kernel · Secure Boot", overflow="fold", min_width=14)
    table.add_column("site · tag", overflow="fold", min_width=10)
    with_images = any(node.boot.images for node in nodes)
    if with_images:
        table.add_column("images", overflow="fold", min_width=14)
    table.add_column("failed checks · window", overflow="fold", min_width=14)
    for node in nodes:
        cells = _node_cells(node)
        table.add_row(*(cells if with_images else cells[:6] + cells[7:]))
    return table


def _node_cells(node: NodeCompliance) -> tuple[Text, ...]:
    boot, location = node.boot, node.location
    mark = Text("✓", style="green") if node.compliant else Text("✗", style="bold red")
    secure_boot = {True: ("on", "green"), False: ("off", "red"), None: ("-", "")}
    sb_text, sb_style = secure_boot[boot.secure_boot]
    kernel = boot.kernel or _short(boot.kernel_digest) or "-"
    booted = plain(f"{', '.join(boot.firmware) or '-'}\n{kernel}\nSecure Boot ")
    booted.append(sb_text, style=sb_style)
    where = f"{location.site or '-'}\n{attributes_text(location.assigned) or '-'}"
    checks = plain(", ".join(node.failed_checks) or "-", style="red" if node.failed_checks else "")
    checks.append(f"\n{node.attestations} attested, {node.refused} refused")
    if node.window_failed_checks:
        failed = ", ".join(f"{c} ({n})" for c, n in node.window_failed_checks.items())
        checks.append(plain(f": {failed}"))
    return (
        mark,
        plain(node.node_id),
        Text(node.status, style=_COLOURS.get(node.status, "")),
        plain(_short_time(node.last_attested_at)),
        booted,
        plain(where),
        plain("\n".join(_short_image(image) for image in boot.images) or "-"),
        checks,
    )


def summary_lines(report: FleetReport) -> list[Text]:
    totals = report.totals
    verdict = (
        Text("compliant", style="bold green")
        if report.compliant
        else Text("OUT OF COMPLIANCE", style="bold red")
    )
    statuses = ", ".join(f"{count} {status}" for status, count in totals.by_status.items())
    head = Text.assemble(
        verdict,
        f": {totals.compliant} of {totals.nodes} nodes compliant ({statuses or 'none'})",
    )
    failed = ", ".join(
        f"{check} ({_count(count, 'result')}, {_count(totals.nodes_failing[check], 'node')})"
        for check, count in totals.failed_checks.items()
    )
    attestations = Text(
        f"{totals.attestations} attestations in the window, {totals.refused} refused"
        + (f"; failed: {failed}" if failed else "")
    )
    summary = summarise(report.trend)
    trend_line = Text.assemble(
        "trusted nodes ",
        (sparkline(report.trend), "green"),
        f" {summary.first} → {summary.last} (lowest {summary.lowest}, "
        f"highest {summary.highest}), every {duration(report.window.bucket)}",
    )
    return [head, attestations, trend_line]


def sparkline(points: Sequence[TrendPoint], most: int = SPARKLINE_POINTS) -> str:
    """The trusted count per point as block characters, scaled to the most nodes known;
    at most `most` characters (evenly chosen points)."""
    if len(points) > most:
        step = (len(points) - 1) / (most - 1)
        points = [points[round(i * step)] for i in range(most)]
    highest = max([point.nodes for point in points] + [1])
    top = len(_BLOCKS) - 1
    return "".join(_BLOCKS[round(top * point.trusted / highest)] for point in points)


def nist_table(report: FleetReport) -> Table:
    """The mapping's outcome; what each row asks and does is in the HTML and JSON."""
    outcomes = {outcome.requirement_id: outcome for outcome in report.requirements}
    failed = set(report.totals.failed_checks)
    table = Table(
        "NIST IR 8320A",
        "coverage",
        "Lightgate checks (failed in window)",
        "nodes failing now / in window",
        title="NIST IR 8320A mapping (in full: --format html or json)",
    )
    for requirement in REQUIREMENTS:
        outcome = outcomes[requirement.id]
        if requirement.pool:
            checks = "trust state at --until"
        elif requirement.checks:
            seen = [check for check in requirement.checks if check in failed]
            checks = _count(len(requirement.checks), "check")
            checks += f" ({', '.join(seen)})" if seen else ""
        else:
            checks = "-"
        table.add_row(
            requirement.id,
            requirement.coverage,
            checks,
            f"{outcome.failing_now} / {outcome.failing_in_window}",
        )
    return table


def plain(text: str, style: str = "") -> Text:
    """Untrusted text as it is, no markup, control characters escaped (\\x1b...)."""
    shown = "".join(
        ch if ch.isprintable() or ch == "\n" else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )
    return Text(shown, style=style)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _short(digest: str | None) -> str | None:
    """`sha256:3a0193…`: enough to tell digests apart by eye."""
    if digest is None:
        return None
    algorithm, sep, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}…" if sep and len(value) > 12 else digest


def _short_image(image: str) -> str:
    name, sep, digest = image.rpartition("@")
    return f"{name}@{_short(digest)}" if sep else image


def _short_time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%m-%d %H:%M")


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")

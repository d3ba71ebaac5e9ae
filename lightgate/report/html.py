"""The report as one self-contained HTML page an auditor can open from an email: inline
CSS, an inline SVG chart of the trusted nodes over the window, no script and nothing
fetched (its Content-Security-Policy forbids both, should an escape ever be missed).
Every text is escaped: kernel paths, firmware versions and reasons come from nodes.
Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from lightgate.report.formats import attributes_text, duration
from lightgate.report.model import FleetReport, NodeCompliance, TrendPoint
from lightgate.report.nist import REQUIREMENTS, SOURCE
from lightgate.report.trend import summarise

_CHART_WIDTH: Final = 760
_CHART_HEIGHT: Final = 260
_MARGIN_LEFT: Final = 48
_MARGIN_RIGHT: Final = 16
_MARGIN_TOP: Final = 16
_MARGIN_BOTTOM: Final = 40

_STYLE: Final = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em;
       color: #1d2330; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccd; }
.verdict { display: inline-block; padding: 0.3em 0.8em; border-radius: 4px;
           font-weight: bold; color: #fff; }
.pass { background: #1f7a3a; } .fail { background: #b3261e; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccd; padding: 0.25em 0.5em; text-align: left;
         vertical-align: top; }
th { background: #eef0f5; }
tr.out td { background: #fdecea; }
td.num { text-align: right; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace;
              font-size: 0.92em; word-break: break-all; }
.muted { color: #5b6172; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6172; }
"""


def render_html(report: FleetReport) -> str:
    window, totals = report.window, report.totals
    verdict = (
        '<span class="verdict pass">COMPLIANT</span>'
        if report.compliant
        else f'<span class="verdict fail">OUT OF COMPLIANCE: {totals.out_of_compliance} of '
        f"{totals.nodes} nodes</span>"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Lightgate fleet compliance at {_text(_time(window.until))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Lightgate fleet compliance</h1>",
        f"<p>{verdict}</p>",
        f'<p class="muted">At {_text(_time(window.until))}; trend from '
        f"{_text(_time(window.since))} every {_text(duration(window.bucket))}. "
        f"Selection: {_text(_selection_text(report))}. "
        f"Generated {_text(_time(report.generated_at))}.</p>",
        _totals_html(report),
        "<h2>Trusted nodes over time</h2>",
        trend_svg(report.trend),
        _nodes_html(report.nodes),
        _nist_html(report),
        f'<p class="muted">Mapping source: {_text(SOURCE)}.</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def trend_svg(points: Sequence[TrendPoint]) -> str:
    """A line chart: trusted (affirming) nodes, and all selected nodes known, per point."""
    width, height = _CHART_WIDTH, _CHART_HEIGHT
    plot_w = width - _MARGIN_LEFT - _MARGIN_RIGHT
    plot_h = height - _MARGIN_TOP - _MARGIN_BOTTOM
    highest = max([point.nodes for point in points] + [1])
    first, last = points[0].at, points[-1].at
    span = (last - first).total_seconds() or 1.0

    def x(moment: datetime) -> float:
        return _MARGIN_LEFT + plot_w * (moment - first).total_seconds() / span

    def y(value: int) -> float:
        return _MARGIN_TOP + plot_h * (1 - value / highest)

    def line(values: Iterable[tuple[datetime, int]]) -> str:
        return " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in values)

    summary = summarise(points)
    description = (
        f"Trusted nodes from {summary.first} to {summary.last} "
        f"(lowest {summary.lowest}, highest {summary.highest}) of up to {highest}"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_text(description)}">',
        f"<title>{_text(description)}</title>",
        f'<line x1="{_MARGIN_LEFT}" y1="{y(0):.1f}" x2="{width - _MARGIN_RIGHT}" '
        f'y2="{y(0):.1f}" stroke="#99a"/>',
        f'<line x1="{_MARGIN_LEFT}" y1="{_MARGIN_TOP}" x2="{_MARGIN_LEFT}" '
        f'y2="{y(0):.1f}" stroke="#99a"/>',
    ]
    for value in sorted({0, highest // 2, highest}):
        parts.append(
            f'<text x="{_MARGIN_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value}</text>'
        )
    labelled = ((points[0], "start"), (points[len(points) // 2], "middle"), (points[-1], "end"))
    for point, anchor in labelled:
        parts.append(
            f'<text x="{x(point.at):.1f}" y="{height - _MARGIN_BOTTOM + 16}" '
            f'text-anchor="{anchor}">{_text(_time(point.at))}</text>'
        )
    parts.append(
        f'<polyline fill="none" stroke="#8a90a2" stroke-dasharray="4 3" stroke-width="1.5" '
        f'points="{line((p.at, p.nodes) for p in points)}"/>'
    )
    parts.append(
        f'<polyline fill="none" stroke="#1f7a3a" stroke-width="2" '
        f'points="{line((p.at, p.trusted) for p in points)}"/>'
    )
    for point in points:
        parts.append(
            f'<circle cx="{x(point.at):.1f}" cy="{y(point.trusted):.1f}" r="2.5" '
            f'fill="#1f7a3a"><title>{_text(_time(point.at))}: {point.trusted} trusted of '
            f"{point.nodes}</title></circle>"
        )
    legend_y = height - 8
    parts.append(
        f'<text x="{_MARGIN_LEFT}" y="{legend_y}">— trusted (affirming)   '
        "- - nodes known</text></svg>"
    )
    return "\n".join(parts)


def _totals_html(report: FleetReport) -> str:
    totals = report.totals
    rows = [
        ("nodes", totals.nodes),
        ("compliant", totals.compliant),
        ("out of compliance", totals.out_of_compliance),
        *((f"status {status}", count) for status, count in totals.by_status.items()),
        ("attestations in window", totals.attestations),
        ("refused in window", totals.refused),
        *(
            (f"failed {check} (results / nodes)", f"{count} / {totals.nodes_failing[check]}")
            for check, count in totals.failed_checks.items()
        ),
    ]
    body = "".join(
        f'<tr><th>{_text(name)}</th><td class="num">{_text(str(value))}</td></tr>'
        for name, value in rows
    )
    return f"<h2>Totals</h2><table>{body}</table>"


_NODE_HEADINGS: Final = (
    "node",
    "status",
    "since",
    "last attestation",
    "firmware",
    "kernel",
    "Secure Boot",
    "location",
    "images",
    "failed checks (newest result)",
    "window: attestations / refused / failed checks",
    "reason",
)


def _nodes_html(nodes: Sequence[NodeCompliance]) -> str:
    head = "".join(f"<th>{_text(heading)}</th>" for heading in _NODE_HEADINGS)
    rows = "\n".join(_node_row(node) for node in nodes)
    return f"<h2>Nodes</h2><table><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>"


def _node_row(node: NodeCompliance) -> str:
    boot, location = node.boot, node.location
    secure_boot = {True: "on", False: "off", None: "-"}[boot.secure_boot]
    where = [f"site {location.site or '-'}", f"tag {attributes_text(location.assigned) or '-'}"]
    if location.attested is not None:
        where.append(f"attested {attributes_text(location.attested) or '-'}")
    kernel = boot.kernel or "-"
    if boot.kernel_digest:
        kernel += f" ({boot.kernel_digest})"
    window = f"{node.attestations} / {node.refused}"
    if node.window_failed_checks:
        checks = ", ".join(f"{c} ({n})" for c, n in node.window_failed_checks.items())
        window += f" / {checks}"
    cells = (
        f'<td class="mono">{_text(node.node_id)}</td>',
        f"<td><b>{_text(node.status)}</b></td>",
        f"<td>{_text(_time(node.since))}</td>",
        f"<td>{_text(_time(node.last_attested_at))}"
        f"{'' if node.last_result is None else ' (' + _text(node.last_result) + ')'}</td>",
        f"<td>{_text(', '.join(boot.firmware) or '-')}</td>",
        f'<td class="mono">{_text(kernel)}</td>',
        f"<td>{secure_boot}</td>",
        f"<td>{'<br>'.join(_text(line) for line in where)}</td>",
        f'<td class="mono">{"<br>".join(_text(image) for image in boot.images) or "-"}</td>',
        f"<td>{_text(', '.join(node.failed_checks) or '-')}</td>",
        f"<td>{_text(window)}</td>",
        f"<td>{_text(node.reason or '-')}</td>",
    )
    row_class = "" if node.compliant else ' class="out"'
    return f"<tr{row_class}>{''.join(cells)}</tr>"


def _nist_html(report: FleetReport) -> str:
    outcomes = {outcome.requirement_id: outcome for outcome in report.requirements}
    head = "".join(
        f"<th>{_text(h)}</th>"
        for h in (
            "requirement",
            "NIST IR 8320A asks",
            "what Lightgate does",
            "checks",
            "coverage",
            "limits",
            "nodes failing now / in window",
        )
    )
    rows = []
    for requirement in REQUIREMENTS:
        outcome = outcomes[requirement.id]
        rows.append(
            "<tr>"
            f'<td>{_text(requirement.id)}<br><span class="muted">{_text(requirement.stage)}'
            "</span></td>"
            f"<td>{_text(requirement.asks)}</td>"
            f"<td>{_text(requirement.lightgate)}</td>"
            f'<td class="mono">{_text(", ".join(requirement.checks) or "-")}</td>'
            f"<td>{_text(requirement.coverage)}</td>"
            f"<td>{_text(requirement.limits)}</td>"
            f'<td class="num">{outcome.failing_now} / {outcome.failing_in_window}</td>'
            "</tr>"
        )
    return (
        "<h2>NIST IR 8320A: trusted compute pools and trusted location</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _selection_text(report: FleetReport) -> str:
    selection = report.selection
    parts = []
    if selection.sites:
        parts.append("site " + " or ".join(sorted(selection.sites)))
    if selection.tags:
        parts.append("tag " + " and ".join(f"{k}={v}" for k, v in selection.tags))
    if selection.statuses:
        parts.append("status " + " or ".join(sorted(selection.statuses)))
    if selection.allow_warning:
        parts.append("warning counts as compliant")
    return "; ".join(parts) or "every enrolled node"


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _text(value: str) -> str:
    return escape(value, quote=True)

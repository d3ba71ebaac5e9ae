"""The report as JSON (one document) and as CSV (one row per node).  Pure.

Text in a report comes partly from nodes (kernel paths and firmware versions are what a
node's boot log says; reasons quote them), so every format escapes it for where it
goes: CSV cells that a spreadsheet would run as a formula are quoted (OWASP, "CSV
Injection"); HTML and the terminal escape in their own modules.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from lightgate.report.model import FleetReport, NodeCompliance
from lightgate.report.nist import REQUIREMENTS, SOURCE
from lightgate.report.trend import summarise

FORMAT_VERSION: Final = 1

CSV_COLUMNS: Final = (
    "node",
    "status",
    "compliant",
    "since",
    "reason",
    "last_attested_at",
    "last_result",
    "failed_checks",
    "firmware",
    "kernel",
    "kernel_digest",
    "secure_boot",
    "site",
    "tag",
    "attested_tag",
    "images",
    "attestations_in_window",
    "refused_in_window",
    "failed_checks_in_window",
)
# A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def report_document(report: FleetReport) -> dict[str, object]:
    """The whole report as one JSON-ready document."""
    window, totals = report.window, report.totals
    summary = summarise(report.trend)
    outcomes = {outcome.requirement_id: outcome for outcome in report.requirements}
    return {
        "report": "lightgate fleet compliance",
        "version": FORMAT_VERSION,
        "generated_at": report.generated_at.isoformat(),
        "window": {
            "since": window.since.isoformat(),
            "until": window.until.isoformat(),
            "bucket_seconds": int(window.bucket.total_seconds()),
        },
        "selection": {
            "sites": sorted(report.selection.sites),
            "tags": dict(report.selection.tags),
            "statuses": sorted(report.selection.statuses),
            "allow_warning": report.selection.allow_warning,
        },
        "compliant": report.compliant,
        "totals": {
            "nodes": totals.nodes,
            "compliant": totals.compliant,
            "out_of_compliance": totals.out_of_compliance,
            "by_status": dict(totals.by_status),
            "attestations": totals.attestations,
            "refused": totals.refused,
            "failed_checks": dict(totals.failed_checks),
            "nodes_failing": dict(totals.nodes_failing),
        },
        "trend": {
            "trusted_first": summary.first,
            "trusted_last": summary.last,
            "trusted_lowest": summary.lowest,
            "trusted_highest": summary.highest,
            "points": [
                {
                    "at": point.at.isoformat(),
                    "nodes": point.nodes,
                    "trusted": point.trusted,
                    "states": dict(point.states),
                }
                for point in report.trend
            ],
        },
        "nodes": [node_document(node) for node in report.nodes],
        "nist_ir_8320a": {
            "source": SOURCE,
            "requirements": [
                {
                    "id": requirement.id,
                    "stage": requirement.stage,
                    "asks": requirement.asks,
                    "lightgate": requirement.lightgate,
                    "checks": list(requirement.checks),
                    "coverage": requirement.coverage,
                    "limits": requirement.limits,
                    "failing_now": outcomes[requirement.id].failing_now,
                    "failing_in_window": outcomes[requirement.id].failing_in_window,
                }
                for requirement in REQUIREMENTS
            ],
        },
    }


def node_document(node: NodeCompliance) -> dict[str, object]:
    boot, location = node.boot, node.location
    return {
        "node": node.node_id,
        "status": node.status,
        "compliant": node.compliant,
        "since": _iso(node.since),
        "reason": node.reason,
        "last_attested_at": _iso(node.last_attested_at),
        "last_result": node.last_result,
        "failed_checks": list(node.failed_checks),
        "firmware": list(boot.firmware),
        "kernel": boot.kernel,
        "kernel_digest": boot.kernel_digest,
        "secure_boot": boot.secure_boot,
        "location": {
            "site": location.site,
            "assigned": dict(location.assigned),
            "attested": None if location.attested is None else dict(location.attested),
        },
        "images": list(boot.images),
        "window": {
            "attestations": node.attestations,
            "refused": node.refused,
            "failed_checks": dict(node.window_failed_checks),
        },
    }


def render_json(report: FleetReport) -> str:
    """One line: for machines and `jq` (an indented dump of 10^4 nodes takes Python's
    pure-Python encoder, several times slower than the C one)."""
    return json.dumps(report_document(report)) + "\n"


def render_csv(report: FleetReport) -> str:
    """One row per selected node, with a header; lists joined with '; '."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for node in report.nodes:
        writer.writerow([csv_cell(value) for value in csv_row(node)])
    return buffer.getvalue()


def csv_row(node: NodeCompliance) -> tuple[str, ...]:
    boot, location = node.boot, node.location
    secure_boot = "" if boot.secure_boot is None else str(boot.secure_boot).lower()
    return (
        node.node_id,
        node.status,
        str(node.compliant).lower(),
        _iso(node.since) or "",
        node.reason or "",
        _iso(node.last_attested_at) or "",
        node.last_result or "",
        "; ".join(node.failed_checks),
        "; ".join(boot.firmware),
        boot.kernel or "",
        boot.kernel_digest or "",
        secure_boot,
        location.site or "",
        attributes_text(location.assigned),
        "" if location.attested is None else attributes_text(location.attested),
        "; ".join(boot.images),
        str(node.attestations),
        str(node.refused),
        "; ".join(f"{check}={count}" for check, count in node.window_failed_checks.items()),
    )


def csv_cell(text: str) -> str:
    """`text`, quoted with a leading apostrophe when a spreadsheet would take it for a
    formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def attributes_text(attributes: Mapping[str, str]) -> str:
    return " ".join(f"{name}={value}" for name, value in sorted(attributes.items()))


def duration(length: timedelta) -> str:
    """`1d`, `6h`, `90m`, `30s`: the largest unit that divides the length."""
    seconds = int(length.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0 and seconds == length.total_seconds():
            return f"{seconds // size}{unit}"
    return f"{length.total_seconds():g}s"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()

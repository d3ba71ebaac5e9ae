"""`attest report`: the fleet's compliance at one moment and its trust over a window
before it, for auditors, as a terminal table, JSON, CSV or a self-contained HTML page,
with Lightgate's checks mapped to NIST IR 8320A.

    report = fleet_report(engine, Window(since, until, bucket), Selection(), now)
    render_html(report)

`history` reads the verifier's store (the only I/O); `compliance` and `trend` decide;
`formats`, `html` and `table` render; `nist` is the mapping, as data.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from lightgate.report.compliance import build_report
from lightgate.report.formats import render_csv, render_json, report_document
from lightgate.report.history import read_fleet
from lightgate.report.html import render_html
from lightgate.report.model import (
    FleetReport,
    NodeCompliance,
    ReportError,
    Selection,
    SelectionInvalid,
    TrendPoint,
    Window,
    WindowInvalid,
)


def fleet_report(
    engine: Engine, window: Window, selection: Selection, now: datetime
) -> FleetReport:
    """The report over the store behind `engine` (read in one transaction)."""
    return build_report(read_fleet(engine, window.since, window.until), window, selection, now)


__all__ = [
    "FleetReport",
    "NodeCompliance",
    "ReportError",
    "Selection",
    "SelectionInvalid",
    "TrendPoint",
    "Window",
    "WindowInvalid",
    "build_report",
    "fleet_report",
    "render_csv",
    "render_html",
    "render_json",
    "report_document",
]

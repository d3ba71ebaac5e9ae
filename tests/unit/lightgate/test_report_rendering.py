"""The report's pure parts, on histories built in memory: trust over time, claims as
stored, the window and selection, and each format's escaping of text that nodes choose
(a boot log names the kernel path; a reason quotes it)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from lightgate.report import (
    FleetReport,
    Selection,
    SelectionInvalid,
    Window,
    WindowInvalid,
    build_report,
)
from lightgate.report.compliance import images, location_of, node_timeline, state_at
from lightgate.report.formats import duration, render_csv, render_json
from lightgate.report.history import JsonTexts, NewestResult, NodeHistory, StateChange
from lightgate.report.html import render_html
from lightgate.report.model import HistoryUnreadable, TrendPoint
from lightgate.report.table import print_report, sparkline
from lightgate.report.trend import trend

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOW = Window(NOW - 24 * HOUR, NOW, 6 * HOUR)
HOSTILE_KERNEL = '=HYPERLINK("http://evil")<script>alert(1)</script>\x1b[2J[red]x[/red]'


def history(
    node_id: str = "node-1",
    *,
    trust_state: str = "affirming",
    expires: datetime | None = None,
    before: StateChange | None = None,
    changes: tuple[StateChange, ...] = (),
    newest: NewestResult | None = None,
    last_site: str | None = None,
    last_result_id: int | None = None,
) -> NodeHistory:
    return NodeHistory(
        node_id=node_id,
        created_at=NOW - 48 * HOUR,
        trust_state=trust_state,
        trust_expires_at=expires,
        last_site=last_site,
        last_result_id=last_result_id,
        tag={"region": "eu-west"},
        newest=newest,
        before=before,
        changes=changes,
    )


def result(**fields: Any) -> NewestResult:
    base = NewestResult(
        result_id=7,
        created_at=NOW - HOUR,
        status="contraindicated",
        failed_checks=("golden-values",),
        reason=f"golden-values: kernel.path is {HOSTILE_KERNEL}",
        kernel=HOSTILE_KERNEL,
        secure_boot=None,
    )
    return replace(base, **fields)


# --- trust over time -------------------------------------------------------------------


def test_an_expiry_not_yet_swept_counts_from_when_trust_lasted_out() -> None:
    affirmed = StateChange(NOW - 30 * HOUR, "affirming", "ok")
    node = history(before=affirmed, expires=NOW - 3 * HOUR)
    timeline = node_timeline(node, NOW)
    assert [c.state for c in timeline] == ["affirming", "expired"]
    assert timeline[-1].at == NOW - 3 * HOUR
    assert state_at(timeline, NOW - 4 * HOUR) == affirmed
    # Still in force at the report's moment: no expiry added.
    assert node_timeline(history(before=affirmed, expires=NOW + HOUR), NOW) == (affirmed,)
    # Not a lasting state: its expiry means nothing.
    revoked = history(trust_state="revoked", before=affirmed, expires=NOW - HOUR)
    assert node_timeline(revoked, NOW) == (affirmed,)


def test_state_at_before_any_change_is_none() -> None:
    timeline = (StateChange(NOW - HOUR, "affirming"),)
    assert state_at(timeline, NOW - 2 * HOUR) is None
    assert state_at(timeline, NOW - HOUR) == timeline[0]  # a change counts from its moment
    assert state_at((), NOW) is None


def test_trend_counts_nodes_from_their_creation() -> None:
    early = history("node-early", before=StateChange(NOW - 30 * HOUR, "affirming"))
    late = replace(history("node-late"), created_at=NOW - 7 * HOUR)
    report = build_report([early, late], WINDOW, Selection(), NOW)
    assert [p.nodes for p in report.trend] == [1, 1, 1, 2, 2]
    assert [p.trusted for p in report.trend] == [1, 1, 1, 1, 1]
    assert report.trend[-1].states == {"affirming": 1, "enrolled": 1}


STATES = ("enrolled", "affirming", "warning", "contraindicated", "expired", "revoked")
HOURS = st.integers(min_value=-40, max_value=4)  # around a window of NOW - 24h .. NOW


@st.composite
def fleets(draw: st.DrawFn) -> tuple[dict[str, tuple[StateChange, ...]], dict[str, datetime]]:
    timelines, created = {}, {}
    for i in range(draw(st.integers(0, 6))):
        moments = sorted(draw(st.lists(HOURS, max_size=6)))
        timelines[f"node-{i}"] = tuple(
            StateChange(NOW + hours * HOUR, draw(st.sampled_from(STATES))) for hours in moments
        )
        created[f"node-{i}"] = NOW + draw(HOURS) * HOUR
    return timelines, created


@given(fleets(), st.integers(min_value=1, max_value=30))
def test_trend_is_the_state_at_every_point(
    fleet: tuple[dict[str, tuple[StateChange, ...]], dict[str, datetime]], step: int
) -> None:
    timelines, created = fleet
    points = Window(NOW - 24 * HOUR, NOW, step * HOUR).points()
    expected = []
    for moment in points:
        counts: Counter[str] = Counter()
        for node_id, timeline in timelines.items():
            if created[node_id] <= moment:
                change = state_at(timeline, moment)
                counts[change.state if change is not None else "enrolled"] += 1
        expected.append(dict(counts))
    got = trend(timelines, created, points)
    assert [dict(point.states) for point in got] == expected
    assert [point.nodes for point in got] == [sum(c.values()) for c in expected]


# --- claims and location as stored -----------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (None, ()),
        ("sha256:ab", ()),
        (["web@sha256:ab", "db@sha256:cd"], ("web@sha256:ab", "db@sha256:cd")),
        ([{"name": "web", "digest": "sha256:ab"}], ("web@sha256:ab",)),
        ([{"reference": "db:1"}, {"digest": "sha256:cd"}, {"other": 1}], ("db:1", "sha256:cd")),
        ({"web": "sha256:ab"}, ("web@sha256:ab",)),
    ],
)
def test_images_in_every_shape_a_result_may_hold(stored: object, shown: tuple[str, ...]) -> None:
    assert images(stored) == shown


def test_location_falls_back_to_the_last_site_only_for_the_last_result() -> None:
    newest = result(observed_site=None)
    assert location_of(history(newest=newest, last_site="ams1", last_result_id=7)).site == "ams1"
    assert location_of(history(newest=newest, last_site="ams1", last_result_id=8)).site is None
    observed = result(observed_site="fra1", attested={"dc": "fra1"})
    where = location_of(history(newest=observed, last_site="ams1", last_result_id=7))
    assert (where.site, where.attested, where.assigned) == (
        "fra1",
        {"dc": "fra1"},
        {"region": "eu-west"},
    )
    assert location_of(history(newest=result(attested=["not", "attributes"]))).attested is None


def test_stored_json_is_decoded_once_and_garbage_refused() -> None:
    decode = JsonTexts()
    first = decode('["golden-values"]')
    assert first == ["golden-values"] and decode('["golden-values"]') is first
    assert decode(None) is None and decode("null") is None
    with pytest.raises(HistoryUnreadable, match="does not parse"):
        decode("[not json")


# --- window and selection --------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "bucket", "message"),
    [
        (NOW, NOW, HOUR, "must be before"),
        (NOW, NOW - HOUR, HOUR, "must be before"),
        (NOW - HOUR, NOW, timedelta(0), "longer than zero"),
        (NOW - 30 * 24 * HOUR, NOW, timedelta(seconds=60), "more than 2000 trend points"),
        (NOW.replace(tzinfo=None) - HOUR, NOW, HOUR, "time zone"),
    ],
)
def test_unusable_windows_are_refused(
    since: datetime, until: datetime, bucket: timedelta, message: str
) -> None:
    with pytest.raises(WindowInvalid, match=message):
        Window(since, until, bucket)


def test_window_points_end_at_until() -> None:
    assert Window(NOW - 2 * HOUR, NOW, HOUR).points() == (NOW - 2 * HOUR, NOW - HOUR, NOW)
    assert Window(NOW - 90 * timedelta(minutes=1), NOW, HOUR).points() == (
        NOW - 90 * timedelta(minutes=1),
        NOW - 30 * timedelta(minutes=1),
        NOW,
    )


def test_selection_refuses_unknown_states_and_nameless_tags() -> None:
    with pytest.raises(SelectionInvalid, match="unknown status trusted"):
        Selection(statuses=frozenset({"trusted"}))
    with pytest.raises(SelectionInvalid, match="KEY=VALUE"):
        Selection(tags=(("", "eu-west"),))


def test_an_empty_fleet_is_not_compliant() -> None:
    report = build_report([], WINDOW, Selection(), NOW)
    assert report.nodes == () and not report.compliant


# --- escaping node-chosen text ---------------------------------------------------------


@pytest.fixture
def hostile() -> FleetReport:
    node = history(
        before=StateChange(NOW - 2 * HOUR, "contraindicated", f"kernel {HOSTILE_KERNEL}"),
        newest=result(images=["-2+3@sha256:ab"], firmware=["@SUM(A1)"]),
    )
    return build_report([node], WINDOW, Selection(), NOW)


def test_csv_quotes_what_a_spreadsheet_would_run(hostile: FleetReport) -> None:
    row = next(csv.DictReader(io.StringIO(render_csv(hostile))))
    assert row["kernel"] == "'" + HOSTILE_KERNEL
    assert row["images"] == "'-2+3@sha256:ab"
    assert row["firmware"] == "'@SUM(A1)"
    assert row["reason"].startswith("kernel =HYPERLINK")  # not at the start: harmless


def test_html_escapes_every_node_text(hostile: FleetReport) -> None:
    page = render_html(hostile)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;http://evil&quot;" in page
    assert "default-src 'none'" in page  # nothing runs even if an escape were missed


def test_terminal_shows_control_characters_and_markup_literally(hostile: FleetReport) -> None:
    console = Console(record=True, width=300, force_terminal=True)
    print_report(hostile, console)
    text = console.export_text()
    assert "\x1b[2J" not in console.export_text(styles=True)
    assert "\\x1b[2J[red]x[/red]" in text


def test_json_keeps_text_exact(hostile: FleetReport) -> None:
    document = json.loads(render_json(hostile))
    assert document["nodes"][0]["kernel"] == HOSTILE_KERNEL


# --- terminal helpers ------------------------------------------------------------------


def test_sparkline_scales_to_the_fleet_and_fits_the_line() -> None:
    points = [TrendPoint(NOW, 8, {"affirming": trusted}) for trusted in (0, 4, 8)]
    assert sparkline(points) == "▁▅█"
    many = [TrendPoint(NOW, 10, {"affirming": i % 10}) for i in range(500)]
    assert len(sparkline(many, most=60)) == 60


@pytest.mark.parametrize(
    ("length", "text"),
    [(timedelta(days=1), "1d"), (6 * HOUR, "6h"), (timedelta(minutes=90), "90m"),
     (timedelta(weeks=2), "2w"), (timedelta(seconds=45), "45s")],
)  # fmt: skip
def test_duration(length: timedelta, text: str) -> None:
    assert duration(length) == text

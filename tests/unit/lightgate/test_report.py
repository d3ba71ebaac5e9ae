"""`attest report` over a stored fleet history: seven nodes on SQLite (and PostgreSQL
when it answers), written through the Store as the verifier writes them (enrollment,
results, expiry sweep, revocation, asset tags), over ten days before a fixed moment NOW.

    node-good       ams1, tagged eu-west/ams1, affirming every day (images recorded)
    node-tampered   fra1, tagged eu-central/fra1, affirming, then contraindicated at
                    day -3 (golden-values, secure-boot) and day -1 (golden-values)
    node-expired    ams1, affirming once at day -6, expiry swept (expired from day -5)
    node-lapsed     ams1, affirming once at day -3, expiry never swept (day -2)
    node-revoked    fra1, affirming daily, revoked at day -2, attests again at day -1
    node-warning    ams1, tagged eu-west/ams1, affirming, then warning (location) day -1
    node-new        enrolled at day -1, never attested

Attestations are at D(k) - 2h, so no transition falls on a daily trend point.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from rich.console import Console
from sqlalchemy import create_engine
from typer.testing import CliRunner

from lightgate.cli import app
from lightgate.report import FleetReport, Selection, Window, fleet_report
from lightgate.report.formats import CSV_COLUMNS, render_csv, render_json
from lightgate.report.html import render_html
from lightgate.report.table import print_report
from verifier.evidence.tpm_structures import ClockInfo
from verifier.store import AttestationRecord, PendingEnrollment, Store
from verifier.store.engine import create_store_engine

POSTGRES_HOST = ("127.0.0.1", 5432)
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SINCE = NOW - 7 * DAY
CLOCK = ClockInfo(clock=1000, reset_count=1, restart_count=0, safe=True)
EU_WEST = {"region": "eu-west", "dc": "ams1"}
EU_CENTRAL = {"region": "eu-central", "dc": "fra1"}
GOOD_CLAIMS: dict[str, Any] = {
    "firmware.scrtm-version": ["2022.11-6+deb12u1"],
    "secure-boot.enabled": True,
    "boot-chain.kernel": "sha256:" + "3a" * 32,
    "kernel.path": "/boot/vmlinuz-6.1.0-28-amd64",
    "kernel.cmdline": "root=UUID=6d93 ro quiet",
    "other-events.pcr4": ["EV_EFI_ACTION sha256:00"],
}
IMAGES = [{"name": "registry.example/web:1.4", "digest": "sha256:" + "ab" * 32}]
TAMPERED_CLAIMS = GOOD_CLAIMS | {
    "secure-boot.enabled": False,
    "kernel.path": "/boot/vmlinuz-evil",
    "boot-chain.kernel": "sha256:" + "66" * 32,
}
NODES = (
    "node-expired",
    "node-good",
    "node-lapsed",
    "node-new",
    "node-revoked",
    "node-tampered",
    "node-warning",
)
runner = CliRunner()


def D(days: int) -> datetime:  # the day `days` from NOW, as the table above writes it
    return NOW + days * DAY


# --- the stored fleet ------------------------------------------------------------------


def _enroll(store: Store, node_id: str, at: datetime) -> None:
    pending = PendingEnrollment(
        node_id=node_id,
        ek_certificate=None,
        ek_public=b"ek-" + node_id.encode(),
        ek_fingerprint=secrets.token_hex(32),
        ak_public=b"ak-" + node_id.encode(),
        ak_name=b"\x00\x0b" + secrets.token_bytes(32),
        secret_digest=secrets.token_bytes(32),
        created_at=at,
        expires_at=at + timedelta(minutes=5),
    )
    store.begin_enrollment(pending)
    store.complete_enrollment(node_id, at, pending.secret_digest)


def _attest(
    store: Store,
    node_id: str,
    at: datetime,
    *,
    status: str = "affirming",
    failed_checks: tuple[str, ...] = (),
    claims: dict[str, Any] | None = None,
    site: str = "ams1",
    attested: dict[str, str] | None = None,
    lasts: timedelta = 2 * DAY,
) -> None:
    location = {"observed": {"site": site, "address": "10.0.0.7"}, "attested": None}
    if attested is not None:
        location["attested"] = {"attributes": attested, "issued_at": at.isoformat()}
    store.record_attestation(
        AttestationRecord(
            node_id=node_id,
            received_at=at,
            nonce=secrets.token_bytes(32),
            quote_message=b"\xffTCG" + secrets.token_bytes(60),
            quote_signature=secrets.token_bytes(64),
            pcr_values={"sha256": {"0": "00" * 32}},
            peer="ipv4:10.0.0.7:50512",
            status=status,
            failed_checks=failed_checks,
            reason="; ".join(f"{check}: failed" for check in failed_checks) or None,
            clock=CLOCK,
            rebooted=False,
            claims=GOOD_CLAIMS if claims is None else claims,
            expires_at=at + lasts if status in ("affirming", "warning") else None,
            appraisal_input={"node": {"id": node_id}, "location": location},
            site=site,
        )
    )


def _tag(store: Store, node_id: str, attributes: dict[str, str]) -> None:
    store.put_asset_tag(node_id, attributes, lambda serial: f"tag-{serial}", "auditor", D(-10))


def build_fleet(store: Store) -> None:
    for node_id in NODES:
        if node_id != "node-new":
            _enroll(store, node_id, D(-10) - 3 * timedelta(hours=1))
    _tag(store, "node-good", EU_WEST)
    _tag(store, "node-warning", EU_WEST)
    _tag(store, "node-tampered", EU_CENTRAL)
    hours = timedelta(hours=2)
    for day in range(-10, 0):
        _attest(
            store, "node-good", D(day) - hours, claims=GOOD_CLAIMS | {"images": IMAGES},
            attested=EU_WEST,
        )  # fmt: skip
    _attest(
        store, "node-good", NOW - timedelta(hours=1), claims=GOOD_CLAIMS | {"images": IMAGES},
        attested=EU_WEST,
    )  # fmt: skip
    for day in range(-10, -3):
        _attest(store, "node-tampered", D(day) - hours, site="fra1")
    _attest(
        store, "node-tampered", D(-3) - hours, status="contraindicated", site="fra1",
        failed_checks=("golden-values", "secure-boot"), claims=TAMPERED_CLAIMS,
    )  # fmt: skip
    _attest(
        store, "node-tampered", D(-1) - hours, status="contraindicated", site="fra1",
        failed_checks=("golden-values",), claims=TAMPERED_CLAIMS,
    )  # fmt: skip
    _attest(store, "node-expired", D(-6) - hours, lasts=DAY)
    store.expire_trust(D(-4))  # the sweep: node-expired from D(-5) - 2h
    _attest(store, "node-lapsed", D(-3) - hours, lasts=DAY)  # lasts out at D(-2) - 2h
    for day in range(-10, -2):
        _attest(store, "node-revoked", D(day) - hours, site="fra1")
    store.revoke("node-revoked", "stolen from the rack", "auditor", D(-2) - timedelta(hours=1))
    _attest(store, "node-revoked", D(-1) - hours, site="fra1")
    for day in range(-10, -1):
        _attest(store, "node-warning", D(day) - hours)
    _attest(store, "node-warning", D(-1) - hours, status="warning", failed_checks=("location",))
    _enroll(store, "node-new", D(-1) + timedelta(hours=1))


def _postgres_answers() -> bool:
    try:
        socket.create_connection(POSTGRES_HOST, timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fleet_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The fleet on SQLite and, when the server on 127.0.0.1:5432 answers, on PostgreSQL
    (a database of its own, dropped after): the claims are read by JSON path, which each
    backend spells its own way."""
    admin = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'verifier.db'}"
    else:
        if not _postgres_answers():
            pytest.skip("PostgreSQL does not accept connections on 127.0.0.1:5432")
        pytest.importorskip("psycopg")
        name = f"lightgate_report_test_{os.getpid()}_{secrets.token_hex(4)}"
        admin = create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = f"{POSTGRES_SERVER}/{name}"
    try:
        store = Store.open(url)
        try:
            build_fleet(store)
        finally:
            store.close()
        yield url
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


@pytest.fixture(scope="module")
def full(fleet_url: str) -> FleetReport:
    return report_of(fleet_url)


def report_of(
    url: str,
    selection: Selection | None = None,
    since: datetime = SINCE,
    until: datetime = NOW,
    bucket: timedelta = DAY,
) -> FleetReport:
    engine = create_store_engine(url)
    try:
        return fleet_report(engine, Window(since, until, bucket), selection or Selection(), NOW)
    finally:
        engine.dispose()


def by_id(report: FleetReport) -> dict[str, Any]:
    return {node.node_id: node for node in report.nodes}


# --- each node at NOW --------------------------------------------------------------------


def test_every_enrolled_node_is_reported_in_order(full: FleetReport) -> None:
    assert [node.node_id for node in full.nodes] == list(NODES)


def test_status_of_each_node_now(full: FleetReport) -> None:
    assert {n.node_id: n.status for n in full.nodes} == {
        "node-expired": "expired",
        "node-good": "affirming",
        "node-lapsed": "expired",
        "node-new": "enrolled",
        "node-revoked": "revoked",
        "node-tampered": "contraindicated",
        "node-warning": "warning",
    }
    assert [n.node_id for n in full.nodes if n.compliant] == ["node-good"]
    assert not full.compliant


def test_a_compliant_node_in_full(full: FleetReport) -> None:
    good = by_id(full)["node-good"]
    assert good.last_attested_at == NOW - timedelta(hours=1)
    assert good.last_result == "affirming"
    assert good.since == D(-10) - timedelta(hours=2)
    assert good.failed_checks == ()
    assert good.boot.firmware == ("2022.11-6+deb12u1",)
    assert good.boot.kernel == "/boot/vmlinuz-6.1.0-28-amd64"
    assert good.boot.kernel_digest == "sha256:" + "3a" * 32
    assert good.boot.secure_boot is True
    assert good.boot.images == ("registry.example/web:1.4@sha256:" + "ab" * 32,)
    assert good.location.site == "ams1"
    assert good.location.assigned == EU_WEST
    assert good.location.attested == EU_WEST
    assert good.attestations == 7  # D(-7) - 2h is before the window; D(-6)..D(-1), NOW-1h
    assert good.refused == 0


def test_a_refused_node_lists_every_failed_check(full: FleetReport) -> None:
    tampered = by_id(full)["node-tampered"]
    assert tampered.since == D(-3) - timedelta(hours=2)
    assert tampered.failed_checks == ("golden-values",)  # its newest result
    assert tampered.window_failed_checks == {"golden-values": 2, "secure-boot": 1}
    assert (tampered.attestations, tampered.refused) == (5, 2)
    assert tampered.boot.secure_boot is False  # a JSON false read back as False
    assert tampered.boot.kernel == "/boot/vmlinuz-evil"
    assert tampered.boot.images == ()  # no images recorded: nothing shown
    assert tampered.location.site == "fra1"
    assert tampered.location.assigned == EU_CENTRAL


def test_expiry_swept_and_not_yet_swept(full: FleetReport) -> None:
    nodes = by_id(full)
    swept, lapsed = nodes["node-expired"], nodes["node-lapsed"]
    assert swept.since == D(-5) - timedelta(hours=2)
    assert lapsed.since == D(-2) - timedelta(hours=2)  # from the node row's expiry
    for node in (swept, lapsed):
        assert node.reason is not None and "trust lasted until" in node.reason
        assert node.last_result == "affirming" and node.failed_checks == ()


def test_revoked_stays_revoked_through_an_affirming_result(full: FleetReport) -> None:
    revoked = by_id(full)["node-revoked"]
    assert revoked.reason == "stolen from the rack"
    assert revoked.last_result == "affirming"
    assert revoked.last_attested_at == D(-1) - timedelta(hours=2)


def test_a_node_that_never_attested(full: FleetReport) -> None:
    new = by_id(full)["node-new"]
    assert (new.status, new.compliant, new.last_attested_at, new.since) == (
        "enrolled",
        False,
        None,
        None,
    )
    assert new.boot.firmware == () and new.location.site is None


def test_totals(full: FleetReport) -> None:
    totals = full.totals
    assert (totals.nodes, totals.compliant, totals.out_of_compliance) == (7, 1, 6)
    assert totals.by_status == {
        "affirming": 1,
        "contraindicated": 1,
        "enrolled": 1,
        "expired": 2,
        "revoked": 1,
        "warning": 1,
    }
    assert totals.refused == 3
    assert totals.failed_checks == {"golden-values": 2, "location": 1, "secure-boot": 1}
    assert totals.nodes_failing == {"golden-values": 1, "location": 1, "secure-boot": 1}


# --- the trend -------------------------------------------------------------------------


def test_trusted_nodes_at_each_daily_point(full: FleetReport) -> None:
    assert [p.at for p in full.trend] == [D(k) for k in range(-7, 1)]
    assert [p.trusted for p in full.trend] == [4, 5, 4, 4, 4, 2, 1, 1]
    assert [p.nodes for p in full.trend] == [6, 6, 6, 6, 6, 6, 6, 7]
    assert full.trend[1].states == {"affirming": 5, "enrolled": 1}  # D(-6)
    assert full.trend[-1].states == {
        "affirming": 1,
        "contraindicated": 1,
        "enrolled": 1,
        "expired": 2,
        "revoked": 1,
        "warning": 1,
    }


def test_the_trend_ends_at_until_between_buckets(fleet_url: str) -> None:
    report = report_of(fleet_url, since=NOW - 2 * DAY, bucket=timedelta(hours=18))
    assert [p.at for p in report.trend] == [
        D(-2),
        D(-2) + timedelta(hours=18),
        D(-2) + timedelta(hours=36),
        NOW,
    ]


# --- filters -----------------------------------------------------------------------------


def ids(report: FleetReport) -> list[str]:
    return [node.node_id for node in report.nodes]


def test_filter_by_site(fleet_url: str) -> None:
    report = report_of(fleet_url, Selection(sites=frozenset({"fra1"})))
    assert ids(report) == ["node-revoked", "node-tampered"]
    assert [p.nodes for p in report.trend] == [2] * 8
    assert [p.trusted for p in report.trend] == [2, 2, 2, 2, 1, 0, 0, 0]


def test_filter_by_tags_needs_every_attribute(fleet_url: str) -> None:
    region = report_of(fleet_url, Selection(tags=(("region", "eu-west"),)))
    assert ids(region) == ["node-good", "node-warning"]
    both = report_of(fleet_url, Selection(tags=(("region", "eu-west"), ("dc", "fra1"))))
    assert ids(both) == []


def test_filter_by_status(fleet_url: str) -> None:
    report = report_of(fleet_url, Selection(statuses=frozenset({"expired", "revoked"})))
    assert ids(report) == ["node-expired", "node-lapsed", "node-revoked"]
    assert not report.compliant
    trusted = report_of(fleet_url, Selection(statuses=frozenset({"affirming"})))
    assert ids(trusted) == ["node-good"] and trusted.compliant


def test_warning_counts_as_compliant_only_when_allowed(fleet_url: str) -> None:
    strict = report_of(fleet_url, Selection(tags=(("region", "eu-west"),)))
    assert not strict.compliant
    lenient = report_of(fleet_url, Selection(tags=(("region", "eu-west"),), allow_warning=True))
    assert lenient.compliant and lenient.totals.compliant == 2


# --- another window --------------------------------------------------------------------


def test_the_fleet_as_it_was_at_an_earlier_moment(fleet_url: str) -> None:
    report = report_of(fleet_url, since=D(-7), until=D(-4))
    nodes = by_id(report)
    assert "node-new" not in nodes  # enrolled after that moment
    assert {n.node_id: n.status for n in report.nodes} == {
        "node-expired": "expired",
        "node-good": "affirming",
        "node-lapsed": "enrolled",
        "node-revoked": "affirming",
        "node-tampered": "affirming",
        "node-warning": "affirming",
    }
    tampered = nodes["node-tampered"]
    assert tampered.failed_checks == () and tampered.last_attested_at == D(-4) - timedelta(hours=2)
    assert tampered.boot.secure_boot is True and tampered.window_failed_checks == {}
    assert nodes["node-lapsed"].last_attested_at is None
    assert [p.trusted for p in report.trend] == [4, 5, 4, 4]


def test_results_before_the_window_are_not_counted(fleet_url: str) -> None:
    report = report_of(fleet_url, since=D(-2), until=NOW)
    tampered = by_id(report)["node-tampered"]
    assert (tampered.attestations, tampered.refused) == (1, 1)
    assert tampered.window_failed_checks == {"golden-values": 1}


# --- NIST IR 8320A -----------------------------------------------------------------------


def test_requirement_outcomes(full: FleetReport) -> None:
    outcomes = {o.requirement_id: (o.failing_now, o.failing_in_window) for o in full.requirements}
    assert outcomes["8320A Stage 0 / known-good measurements"] == (1, 1)
    assert outcomes["8320A Stage 1 / trusted compute pool"] == (6, 0)
    assert outcomes["8320A Stage 2 / trusted location"] == (1, 1)
    assert outcomes["8320A Stage 0 / measured boot attested"] == (0, 0)
    assert outcomes["8320A Stage 3"] == (0, 0)


# --- every format's content --------------------------------------------------------------


def test_json_document(full: FleetReport) -> None:
    document = json.loads(render_json(full))
    assert document["compliant"] is False
    assert document["window"] == {
        "since": SINCE.isoformat(),
        "until": NOW.isoformat(),
        "bucket_seconds": 86400,
    }
    assert document["totals"]["nodes"] == 7 and document["totals"]["out_of_compliance"] == 6
    assert [p["trusted"] for p in document["trend"]["points"]] == [4, 5, 4, 4, 4, 2, 1, 1]
    assert document["trend"]["trusted_lowest"] == 1
    nodes = {node["node"]: node for node in document["nodes"]}
    assert list(nodes) == list(NODES)
    assert nodes["node-tampered"] == {
        "node": "node-tampered",
        "status": "contraindicated",
        "compliant": False,
        "since": (D(-3) - timedelta(hours=2)).isoformat(),
        "reason": "golden-values: failed; secure-boot: failed",
        "last_attested_at": (D(-1) - timedelta(hours=2)).isoformat(),
        "last_result": "contraindicated",
        "failed_checks": ["golden-values"],
        "firmware": ["2022.11-6+deb12u1"],
        "kernel": "/boot/vmlinuz-evil",
        "kernel_digest": "sha256:" + "66" * 32,
        "secure_boot": False,
        "location": {"site": "fra1", "assigned": EU_CENTRAL, "attested": None},
        "images": [],
        "window": {
            "attestations": 5,
            "refused": 2,
            "failed_checks": {"golden-values": 2, "secure-boot": 1},
        },
    }
    assert nodes["node-good"]["images"] == ["registry.example/web:1.4@sha256:" + "ab" * 32]
    nist = document["nist_ir_8320a"]
    assert "NIST.IR.8320A" in nist["source"]
    stages = {r["id"]: r for r in nist["requirements"]}
    assert stages["8320A Stage 0 / known-good measurements"]["checks"] == [
        "golden-values",
        "golden-values-missing",
        "secure-boot",
    ]
    assert stages["8320A Stage 3"]["coverage"] == "not covered"
    assert stages["8320A Stage 2 / trusted location"]["failing_now"] == 1


def test_csv_rows(full: FleetReport) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(full))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [row["node"] for row in rows] == list(NODES)
    tampered = next(row for row in rows if row["node"] == "node-tampered")
    assert tampered["status"] == "contraindicated" and tampered["compliant"] == "false"
    assert tampered["failed_checks"] == "golden-values"
    assert tampered["failed_checks_in_window"] == "golden-values=2; secure-boot=1"
    assert tampered["secure_boot"] == "false" and tampered["site"] == "fra1"
    assert tampered["tag"] == "dc=fra1 region=eu-central"
    good = next(row for row in rows if row["node"] == "node-good")
    assert good["compliant"] == "true" and good["secure_boot"] == "true"
    assert good["kernel"] == "/boot/vmlinuz-6.1.0-28-amd64"
    assert good["images"] == "registry.example/web:1.4@sha256:" + "ab" * 32
    new = next(row for row in rows if row["node"] == "node-new")
    assert new["last_attested_at"] == "" and new["secure_boot"] == ""


def test_html_page(full: FleetReport) -> None:
    page = render_html(full)
    assert page.startswith("<!DOCTYPE html>")
    assert "OUT OF COMPLIANCE: 6 of 7 nodes" in page
    assert page.count('<tr class="out">') == 6
    for node_id in NODES:
        assert f'<td class="mono">{node_id}</td>' in page
    assert "<td><b>contraindicated</b></td>" in page
    assert "/boot/vmlinuz-evil" in page and "golden-values (2), secure-boot (1)" in page
    # The inline chart: one point per trend point, trusted over all known.
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"  # well formed
    assert svg.count("<circle") == 8
    assert "Trusted nodes from 4 to 1 (lowest 1, highest 5)" in svg
    assert "2026-02-26 12:00:00Z: 4 trusted of 6" in svg  # D(-3)
    assert "8320A Stage 2 / trusted location" in page
    # Self-contained: nothing fetched, nothing run.
    for external in ("<script", "<link", "src=", "href=", "@import", "url("):
        assert external not in page


def table_text(report: FleetReport, *, every_node: bool = False) -> tuple[str, dict[str, str]]:
    """The printed report, and the mark (✓/✗) of each node row in its table."""
    console = Console(record=True, width=250, force_terminal=False)
    print_report(report, console, every_node=every_node)
    text = console.export_text()
    marks = {line.split("│")[2].strip(): line.split("│")[1].strip() for line in text.splitlines()
             if line.startswith("│") and "node-" in line}  # fmt: skip
    return text, marks


def test_terminal_table_lists_the_nodes_out_of_compliance(full: FleetReport) -> None:
    text, marks = table_text(full)
    assert marks == {node_id: "✗" for node_id in NODES if node_id != "node-good"}
    assert "1 compliant node not listed (--all lists every node)" in text
    assert "OUT OF COMPLIANCE: 1 of 7 nodes compliant" in text
    assert "contraindicated" in text and "/boot/vmlinuz-evil" in text
    assert "Secure Boot off" in text and "dc=fra1 region=eu-central" in text
    assert "5 attested, 2 refused: golden-values (2), secure-boot (1)" in text
    assert "golden-values (2 results, 1 node)" in text
    assert "▅▆▅▅▅▃▂▂ 4 → 1 (lowest 1, highest 5), every 1d" in text
    assert "8320A Stage 1 / trusted compute pool" in text


def test_terminal_table_with_every_node(full: FleetReport) -> None:
    text, marks = table_text(full, every_node=True)
    assert marks == {node_id: "✓" if node_id == "node-good" else "✗" for node_id in NODES}
    assert "not listed" not in text
    assert "registry.example/web:1.4@sha256:abababababab…" in text  # abbreviated here only


# --- the command -------------------------------------------------------------------------


@pytest.fixture
def config(fleet_url: str, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "verifier.yaml"
    path.write_text(f"database_url: {fleet_url}\n")
    yield path


def attest(*args: str) -> Any:
    return runner.invoke(app, ["report", *args])


WINDOW = ("--since", SINCE.isoformat(), "--until", NOW.isoformat(), "--bucket", "1d")


def test_command_exit_1_when_any_selected_node_is_out_of_compliance(config: Path) -> None:
    outcome = attest("-c", str(config), *WINDOW, "--json")
    assert outcome.exit_code == 1, outcome.output
    document = json.loads(outcome.stdout)
    assert [node["node"] for node in document["nodes"]] == list(NODES)
    assert document["compliant"] is False


def test_command_exit_0_when_every_selected_node_is_compliant(config: Path) -> None:
    outcome = attest("-c", str(config), *WINDOW, "--status", "affirming", "--format", "csv")
    assert outcome.exit_code == 0, outcome.output
    rows = list(csv.DictReader(io.StringIO(outcome.stdout)))
    assert [row["node"] for row in rows] == ["node-good"]
    lenient = attest(
        "-c", str(config), *WINDOW, "--tag", "region=eu-west", "--allow-warning", "--all"
    )
    assert lenient.exit_code == 0, lenient.output
    assert "node-warning" in lenient.stdout and "node-tampered" not in lenient.stdout


def test_command_filters_and_relative_window(config: Path) -> None:
    outcome = attest(
        "-c", str(config), "--until", NOW.isoformat(), "--since", "2d", "--site", "fra1", "--json"
    )
    assert outcome.exit_code == 1, outcome.output
    document = json.loads(outcome.stdout)
    assert [node["node"] for node in document["nodes"]] == ["node-revoked", "node-tampered"]
    assert document["window"]["since"] == (NOW - 2 * DAY).isoformat()
    assert document["window"]["bucket_seconds"] == 3600  # hourly up to two days
    assert len(document["trend"]["points"]) == 49


def test_command_writes_html_to_a_file(config: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    outcome = attest("-c", str(config), *WINDOW, "--format", "html", "-o", str(page))
    assert outcome.exit_code == 1, outcome.output
    assert outcome.stdout == ""
    text = page.read_text()
    assert "<svg" in text and '<td class="mono">node-good</td>' in text


def test_command_prints_a_table_by_default(config: Path) -> None:
    outcome = attest("-c", str(config), *WINDOW, "--site", "ams1")
    assert outcome.exit_code == 1, outcome.output
    assert "node-lapsed" in outcome.stdout and "node-revoked" not in outcome.stdout
    assert "OUT OF COMPLIANCE" in outcome.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--status", "trusted"), "unknown status trusted"),
        (("--tag", "region"), "'region' is not KEY=VALUE"),
        (("--bucket", "often"), "is not a length of time"),
        (("--site", "nowhere"), "no node matches the selection"),
        (("--since", "yesterday"), "neither a duration"),
        (("--bucket", "1s"), "more than 2000 trend points"),
    ],
)
def test_command_usage_errors_exit_2(config: Path, args: tuple[str, ...], message: str) -> None:
    outcome = attest("-c", str(config), "--until", NOW.isoformat(), *args)
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.startswith("error: ") and message in outcome.stderr
    assert outcome.stdout == ""


def test_command_window_the_wrong_way_round_exits_2(config: Path) -> None:
    outcome = attest("-c", str(config), "--since", NOW.isoformat(), "--until", SINCE.isoformat())
    assert outcome.exit_code == 2 and "must be before --until" in outcome.stderr


def test_command_until_in_the_future_exits_2(config: Path) -> None:
    outcome = attest("-c", str(config), "--until", "2999-01-01T00:00:00+00:00")
    assert outcome.exit_code == 2 and "in the future" in outcome.stderr


def test_command_without_a_database_exits_2_and_creates_none(tmp_path: Path) -> None:
    path = tmp_path / "verifier.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n")
    outcome = attest("-c", str(path))
    assert outcome.exit_code == 2 and "no verifier database at" in outcome.stderr
    assert not (tmp_path / "state").exists()


def test_command_with_a_broken_configuration_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "verifier.yaml"
    path.write_text("no_such_setting: 1\n")
    outcome = attest("-c", str(path))
    assert outcome.exit_code == 2 and outcome.stderr.startswith("error: invalid configuration")


def test_command_with_an_unreadable_database_exits_2(tmp_path: Path) -> None:
    database = tmp_path / "verifier.db"
    database.write_bytes(b"not a database, just bytes " * 100)
    path = tmp_path / "verifier.yaml"
    path.write_text(f"database_url: sqlite:///{database}\n")
    outcome = attest("-c", str(path))
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.startswith("error: cannot read the verifier's database")

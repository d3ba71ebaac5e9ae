"""`attest report` over a month of fleet history: 10,000 nodes, one result per node per
day for 30 days, with their trust transitions, on SQLite.

    .venv/bin/python benchmarks/report.py [--json] [--iterations N] [--quick] [--cpu C]
                                          [--nodes N] [--days D]

The store is made with `Store.open` (the real schema, every index) and filled by
SQLAlchemy Core executemany, as the verifier would have written it: nodes (80% good,
5% tampered from some day, 5% that stop attesting and expire, 3% revoked, 5% warning
on location, 2% flapping between affirming and contraindicated), asset tags, evidence,
results with the named claims of the `good.bin` firmware fixture (3.7 kB, images on a
third of the nodes), a signed-EAR-sized token and a policy input, and every trust
transition.  Enrolling 10,000 TPMs is not what is measured.

Ops (median and p95 in µs):
  read_history   the four reads (`lightgate.report.history.read_fleet`), 30-day window
  build          the report from what was read (`compliance.build_report`), daily trend
  report         both: `fleet_report`, what `attest report` computes
  render_json | render_csv | render_html   each format of that report (every node)
  render_table   the terminal table's default view: the nodes out of compliance (20%)
  report_json    `fleet_report` + `render_json`: the aim (issue 7) is under 5 s
  report_site    `fleet_report` for one site of three (filters apply after reading)
  cli_json       `attest report --json` as a process: start-up, imports, report, output

No incumbent is timed: Keylime has no fleet compliance report to put beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from rich.console import Console
from sqlalchemy import BindParameter, Engine, bindparam, insert, update

from lightgate.report import Selection, Window, fleet_report, render_csv, render_html, render_json
from lightgate.report.compliance import build_report
from lightgate.report.history import read_fleet
from lightgate.report.table import print_report
from lightgate.sim.boot import fixture_path
from verifier.evidence.claim_names import claims_json
from verifier.evidence.claims import extract_claims
from verifier.evidence.eventlog import parse_event_log
from verifier.store import Store
from verifier.store.engine import create_store_engine
from verifier.store.models import ASSET_TAGS, EVIDENCE, NODES, RESULTS, TRUST_TRANSITIONS

NAME = "report"
SITES = ("ams1", "fra1", "lon1")
REGIONS = {"ams1": "eu-west", "fra1": "eu-central", "lon1": "uk-south"}
DAY = timedelta(days=1)
TRUST_LASTS = timedelta(hours=36)  # a day between attestations here: trust outlasts it
BATCH = 5000


# --- the fleet -------------------------------------------------------------------------


#: Per hundred nodes: what each does over the month.
KINDS = (
    ("good",) * 80
    + ("tampered",) * 5
    + ("expired",) * 5
    + ("revoked",) * 3
    + ("warning",) * 5
    + ("flapping",) * 2
)


def node_kind(i: int) -> str:
    return KINDS[i % len(KINDS)]


def good_claims() -> dict[str, Any]:
    log = parse_event_log(fixture_path("good").read_bytes())
    return claims_json(extract_claims(log))


class FleetWriter:
    """Rows for one node at a time, flushed in batches by executemany."""

    def __init__(self, engine: Engine, now: datetime, days: int) -> None:
        self.engine = engine
        self.now = now
        self.days = days
        self.claims = good_claims()
        self.tampered_claims = self.claims | {
            "secure-boot.enabled": False,
            "boot-chain.kernel": "sha256:" + "66" * 32,
            "kernel.path": "/boot/vmlinuz-evil",
        }
        self.ear = "eyJ" + "a" * 900  # the size of a signed EAR JWT
        self.evidence: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.transitions: list[dict[str, Any]] = []
        self.evidence_id = 0
        self.counts = {"nodes": 0, "results": 0, "transitions": 0}

    def node(self, i: int) -> dict[str, Any]:
        """Write node i's history; return its row (inserted before, updated after)."""
        node_id = f"node-{i:05d}"
        kind = node_kind(i)
        site = SITES[i % len(SITES)]
        state, since, expires, reason = "enrolled", None, None, None
        last: dict[str, Any] | None = None
        turn = self.days // 2 + i % 7  # the day things go wrong
        for day in range(-self.days, 0):
            if kind == "expired" and day >= -self.days + turn:
                break
            at = self.now + day * DAY + timedelta(hours=i % 24, minutes=i % 60)
            status, failed = self._verdict(kind, day + self.days, turn)
            last = self._result(node_id, at, status, failed, site, i)
            new_state = state if state == "revoked" else status
            if new_state != state:
                self._transition(node_id, at, state, new_state, last["reason"] or status)
                state, since, reason = new_state, at, last["reason"]
            expires = at + TRUST_LASTS if state in ("affirming", "warning") else None
            if kind == "revoked" and day == -self.days + turn:
                revoked_at = at + timedelta(hours=1)
                self._transition(node_id, revoked_at, state, "revoked", "stolen", "auditor")
                state, since, expires, reason = "revoked", revoked_at, None, "stolen"
        if state in ("affirming", "warning") and expires is not None and expires <= self.now:
            self._transition(node_id, expires, state, "expired", "lasted out")
            state, since, expires, reason = "expired", expires, None, "lasted out"
        self.counts["nodes"] += 1
        return {
            "node_id": node_id,
            "state": "enrolled",
            "created_at": self.now - (self.days + 1) * DAY,
            "enrolled_at": self.now - (self.days + 1) * DAY,
            "trust_state": state,
            "trust_since": since,
            "trust_expires_at": expires,
            "trust_reason": reason,
            "last_attested_at": None if last is None else last["created_at"],
            "last_status": None if last is None else last["status"],
            "last_site": site,
            "last_result_id": None if last is None else last["id"],
        }

    def _verdict(self, kind: str, day: int, turn: int) -> tuple[str, list[str]]:
        if kind == "tampered" and day >= turn:
            return "contraindicated", ["golden-values", "secure-boot"]
        if kind == "warning" and day >= turn:
            return "warning", ["location"]
        if kind == "flapping" and day % 2:
            return "contraindicated", ["golden-values"]
        return "affirming", []

    def _result(
        self, node_id: str, at: datetime, status: str, failed: list[str], site: str, i: int
    ) -> dict[str, Any]:
        self.evidence_id += 1
        self.evidence.append(
            {
                "id": self.evidence_id,
                "node_id": node_id,
                "received_at": at,
                "nonce": secrets.token_bytes(32),
                "quote_message": b"\xffTCG" + bytes(120),
                "quote_signature": bytes(72),
                "pcr_values": {"sha256": {str(p): "00" * 32 for p in range(8)}},
                "peer": f"ipv4:10.{i % 3}.0.{i % 250}:50512",
                "event_log_sha256": None,
                "runtime_log": None,
            }
        )
        claims = self.tampered_claims if "secure-boot" in failed else self.claims
        if i % 3 == 0:
            claims = claims | {"images": [{"name": "registry.example/web:1.4",
                                           "digest": "sha256:" + "ab" * 32}]}  # fmt: skip
        attributes = {"region": REGIONS[site], "dc": site}
        row = {
            "id": self.evidence_id,
            "node_id": node_id,
            "evidence_id": self.evidence_id,
            "status": status,
            "failed_checks": failed,
            "reason": "; ".join(f"{check}: failed" for check in failed) or None,
            "rebooted": False,
            "created_at": at,
            "findings": [],
            "workarounds": [],
            "claims": claims,
            "trust_vector": {"instance-identity": 2, "configuration": 2, "executables": 2},
            "policy_id": "policy:lightgate/appraisal@sha256:0123456789abcdef",
            "ear": self.ear,
            "expires_at": at + TRUST_LASTS if status != "contraindicated" else None,
            "evidence_digest": bytes(32),
            "appraisal_input": {
                "node": {"id": node_id, "rebooted": False},
                "evidence": {"quote": {"verified": True, "banks": ["sha256"]}},
                "golden": {"documents": ["good"], "matched": "good", "deviations": []},
                "location": {
                    "assigned": attributes,
                    "attested": {"attributes": attributes, "issued_at": at.isoformat()},
                    "observed": {"address": "10.0.0.7", "site": site, "attributes": attributes},
                },
            },
        }
        self.results.append(row)
        self.counts["results"] += 1
        return row

    def _transition(
        self, node_id: str, at: datetime, was: str, now: str, reason: str, actor: str = "verifier"
    ) -> None:
        self.transitions.append(
            {"node_id": node_id, "at": at, "from_state": was, "to_state": now,
             "reason": reason, "evidence_digest": None, "result_id": None, "actor": actor}
        )  # fmt: skip
        self.counts["transitions"] += 1

    def flush(self) -> None:
        with self.engine.begin() as connection:
            for table, rows in (
                (EVIDENCE, self.evidence),
                (RESULTS, self.results),
                (TRUST_TRANSITIONS, self.transitions),
            ):
                if rows:
                    connection.execute(insert(table), rows)
                rows.clear()


def fill_store(url: str, nodes: int, days: int, now: datetime) -> dict[str, Any]:
    Store.open(url).close()  # the schema and its indexes, as the verifier makes them
    engine = create_store_engine(url)
    started = time.perf_counter()
    try:
        writer = FleetWriter(engine, now, days)
        node_rows = [
            {"node_id": f"node-{i:05d}", "state": "pending", "created_at": now}
            for i in range(nodes)
        ]
        tags = [
            {
                "node_id": row["node_id"],
                "attributes": {"region": REGIONS[SITES[i % 3]], "dc": SITES[i % 3]},
                "token": "tag." + "t" * 200,
                "serial": 1,
                "issued_at": now - (days + 1) * DAY,
                "issued_by": "auditor",
            }
            for i, row in enumerate(node_rows)
        ]
        with engine.begin() as connection:
            connection.execute(insert(NODES), node_rows)
            connection.execute(insert(ASSET_TAGS), tags)
        finals = []
        for i in range(nodes):
            finals.append(writer.node(i))
            if len(writer.results) >= BATCH:
                writer.flush()
        writer.flush()
        with engine.begin() as connection:
            for chunk in _chunks(finals, BATCH):
                connection.execute(
                    update(NODES)
                    .where(NODES.c.node_id == _bound("node_id"))
                    .values(**{k: _bound(k) for k in chunk[0] if k != "node_id"}),
                    [{"b_" + k: v for k, v in row.items()} for row in chunk],
                )
    finally:
        engine.dispose()
    database = url.removeprefix("sqlite:///")
    return writer.counts | {
        "days": days,
        "db_bytes": os.path.getsize(database),
        "fill_seconds": round(time.perf_counter() - started, 1),
    }


def _bound(name: str) -> BindParameter[Any]:
    return bindparam("b_" + name)


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- timing ----------------------------------------------------------------------------


def measure(url: str, now: datetime, days: int, n: int, checks: dict[str, Any]) -> dict[str, Any]:
    engine = create_store_engine(url)
    window = Window(now - days * DAY, now, DAY)
    everyone = Selection()
    one_site = Selection(sites=frozenset({"ams1"}))
    results: dict[str, h.Stats] = {}
    try:
        history = read_fleet(engine, window.since, window.until)
        report = build_report(history, window, everyone, now)
        checks["every_node_reported"] = len(report.nodes) == len(history) > 0
        checks["trend_points"] = len(report.trend) == days + 1
        checks["some_out_of_compliance"] = not report.compliant
        checks["json_parses"] = len(json.loads(render_json(report))["nodes"]) == len(history)

        def table() -> None:  # the default view: the nodes out of compliance
            print_report(report, Console(file=io.StringIO(), width=160))

        plan = {
            "read_history": lambda: read_fleet(engine, window.since, window.until),
            "build": lambda: build_report(history, window, everyone, now),
            "report": lambda: fleet_report(engine, window, everyone, now),
            "render_json": lambda: render_json(report),
            "render_csv": lambda: render_csv(report),
            "render_html": lambda: render_html(report),
            "render_table": table,
            "report_json": lambda: render_json(fleet_report(engine, window, everyone, now)),
            "report_site": lambda: fleet_report(engine, window, one_site, now),
        }
        for op, call in plan.items():
            h.progress(f"{op} x {n}")
            results[op] = h.measure(call, [()] * n, warmup=1)
    finally:
        engine.dispose()
    return results


def measure_cli(
    url: str, now: datetime, days: int, nodes: int, n: int, checks: dict[str, Any]
) -> h.Stats:
    with tempfile.TemporaryDirectory(prefix="lightgate-bench-report-cli-") as folder:
        config = Path(folder) / "verifier.yaml"
        config.write_text(f"database_url: {url}\n")
        attest = Path(sys.executable).with_name("attest")
        argv = [str(attest), "report", "-c", str(config), "--json",
                "--since", f"{days}d", "--until", now.isoformat()]  # fmt: skip
        samples = []
        for _ in range(n):
            started = time.perf_counter_ns()
            done = subprocess.run(argv, capture_output=True, check=False, timeout=300)
            samples.append(time.perf_counter_ns() - started)
            reported = json.loads(done.stdout or b"{}").get("nodes", [])
            checks["cli_exit_1_out_of_compliance"] = done.returncode == 1
            checks["cli_reports_every_node"] = len(reported) == nodes
            if done.returncode != 1:
                h.progress(f"attest report: {done.stderr.decode(errors='replace')[-500:]}")
    return h.stats(samples)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    h.common_arguments(parser, default_iterations=5)
    parser.add_argument("--nodes", type=int, default=None, help="default 10000 (--quick 300)")
    parser.add_argument("--days", type=int, default=None, help="default 30 (--quick 5)")
    parser.add_argument("--no-baseline", action="store_true", help="accepted; no baseline is named")
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 2 if args.quick else 5
    if args.nodes is None:
        args.nodes = 300 if args.quick else 10000
    if args.days is None:
        args.days = 5 if args.quick else 30
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = args.cpu if args.cpu is not None else h.least_busy_cpu()
    h.pin(cpu)
    now = datetime.now(UTC).replace(microsecond=0)
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lightgate-bench-report-") as folder:
        url = f"sqlite:///{Path(folder) / 'verifier.db'}"
        h.progress(f"filling {args.nodes} nodes x {args.days} days")
        fleet = fill_store(url, args.nodes, args.days, now)
        h.progress(f"filled: {fleet}")
        results = measure(url, now, args.days, args.iterations, checks)
        h.progress("cli_json")
        runs = max(1, args.iterations // 2)
        results["cli_json"] = measure_cli(url, now, args.days, args.nodes, runs, checks)
    document = h.report(
        NAME,
        h.machine_info(cpu=cpu),
        results,
        baseline={},
        ratio={},
        fleet=fleet,
        checks=checks,
        baseline_info={"name": "none", "status": "skipped (no incumbent makes this report)"},
        aims={"report_json.median_us": {"aim": "< 5000000",
                                        "measured": results["report_json"]["median_us"]}},
    )  # fmt: skip
    h.emit(document, args.json, notes=[f"fleet: {fleet}", f"checks: {checks}"])
    return 0 if all(checks.values()) else 2


if __name__ == "__main__":
    sys.exit(main())

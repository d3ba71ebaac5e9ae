"""Event-log parse + replay on one pinned core, per real firmware log, beside the incumbent
measured in the same run on the same files: `tpm2_eventlog` in a subprocess and a YAML
load of its output, which is what Keylime 7.14.3 does with the boot log of every
attestation.

    .venv/bin/python benchmarks/eventlog.py [--json] [--iterations N] [--rounds R]
        [--baseline-iterations M] [--cpu K] [--quick] [--logs DIR] [--no-baseline]

Inputs: every `*.bin` in `--logs` (default `<repo>/../shared/firmware-logs`, see its
SOURCES.md), read once into memory; without that folder only the synthetic log is
timed.  Plus one synthetic crypto-agile log (sha1+sha256, 150 events in PCRs 0-9,
built with `encode_crypto_agile`), the size of a typical physical machine's log.

Operations (results are named OP; one log per call unless said otherwise):
  log.<stem>         ours: replay(parse_event_log(bytes)) (a refusal, EventLogMalformed,
                     is timed as well); baseline: `tpm2_eventlog --eventlog-version=2 FILE`
                     as a subprocess (Keylime's argv) + yaml.load(stdout, CSafeLoader)
                     (Keylime's `config.yaml_to_dict`; pure-Python SafeLoader without libyaml)
  all_logs           the same over every shared log in turn, in one call
  synthetic_150_events  ours only, on the synthetic log
ratio = baseline median / our median.  Per round, ours and the baseline run one after
the other on each log; the tool's subprocesses inherit the pinning.

Before timing, each log's replayed PCRs are compared with the final `pcrs:` of a fresh
tpm2_eventlog run (whenever the tool is installed, also with --no-baseline): "identical",
"tool wrong: <reason>" where SOURCES.md shows tpm2-tools 5.4 is wrong and its value is
exactly what its rule gives (PCR0 from zero with every EV_NO_ACTION but the Spec ID
header extended), "tool fails" when it exits non-zero or prints no PCRs, or "DIFFERENT"
(which would be a bug, and `checks` says so).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
import yaml

from verifier.evidence.errors import EventLogMalformed
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    EventLog,
    LogFormat,
    Replay,
    parse_event_log,
    replay,
)
from verifier.evidence.eventlog_encode import EventRecord, encode_crypto_agile
from verifier.evidence.tpm_structures import HashAlg

NAME = "eventlog"
DEFAULT_ITERATIONS = 300
QUICK_ITERATIONS = 10
DEFAULT_BASELINE_ITERATIONS = 10
QUICK_BASELINE_ITERATIONS = 2
DEFAULT_LOGS = Path(h.REPO).parent / "shared" / "firmware-logs"
TOOL = "tpm2_eventlog"
TOOL_ARGS = ("--eventlog-version=2",)  # keylime/mba/elparsing/tpm2_tools_elparser.py
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SYNTHETIC_EVENTS = 150
SYNTHETIC_BANKS = (HashAlg.SHA1, HashAlg.SHA256)
#: Logs SOURCES.md names as ones whose PCR0 tpm2_eventlog 5.4 gets wrong.
SOURCES_TOOL_WRONG = frozenset(
    {
        "goeventlog__glinux-alex",
        "gotpmtools__gdc-host",
        "keylime__binary_bios_measurements",
        "gotpmtools__eventlogwithsp800155",
    }
)


@dataclass
class SharedLog:
    stem: str
    path: Path
    raw: bytes
    log: EventLog | None = None
    refused: str | None = None  # our EventLogMalformed, if we refuse it
    pcr_status: str = "not compared"
    tool_rc: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def events(self) -> int | None:
        return len(self.log.events) if self.log else None


# --- the two sides -------------------------------------------------------------------


def ours(raw: bytes) -> Replay | None:
    """What the verifier does with a log: parse and replay (None: refused)."""
    try:
        return replay(parse_event_log(raw))
    except EventLogMalformed:
        return None


def ours_all(raws: Sequence[bytes]) -> None:
    for raw in raws:
        ours(raw)


def tool(path: Path) -> tuple[int, Any, str]:
    """Keylime's way: run tpm2_eventlog, load its YAML.  (returncode, document, stderr)"""
    done = subprocess.run([TOOL, *TOOL_ARGS, str(path)], capture_output=True, check=False)
    try:
        document = yaml.load(done.stdout.decode(errors="replace"), Loader=YAML_LOADER)
    except yaml.YAMLError:
        document = None
    return done.returncode, document, done.stderr.decode(errors="replace")


def tool_all(paths: Sequence[Path]) -> None:
    for path in paths:
        tool(path)


# --- inputs ----------------------------------------------------------------------------


def load_logs(folder: Path) -> list[SharedLog]:
    logs = []
    for path in sorted(folder.glob("*.bin")):
        shared = SharedLog(path.stem, path, path.read_bytes())
        try:
            shared.log = parse_event_log(shared.raw)
        except EventLogMalformed as error:
            shared.refused = error.reason
        logs.append(shared)
    return logs


def synthetic_log(events: int = SYNTHETIC_EVENTS) -> bytes:
    """A crypto-agile sha1+sha256 log of `events` events in PCRs 0-9 (firmware blobs,
    variables, separators, boot applications, grub commands), 40-160 bytes of data each."""
    kinds = (
        (0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB),
        (1, EventType.EV_EFI_VARIABLE_BOOT),
        (2, EventType.EV_EFI_BOOT_SERVICES_DRIVER),
        (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION),
        (5, EventType.EV_EFI_ACTION),
        (7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG),
        (8, EventType.EV_IPL),
        (9, EventType.EV_IPL),
    )
    records = []
    for index in range(events):
        pcr, event_type = kinds[index % len(kinds)]
        data = f"synthetic event {index} ".encode() * (1 + index % 7)
        digests = {bank: bank.digest(data) for bank in SYNTHETIC_BANKS}
        records.append(EventRecord(pcr, event_type, digests, data))
    return encode_crypto_agile(SYNTHETIC_BANKS, records)


# --- our PCRs against the tool's --------------------------------------------------------


def tool_pcr_values(document: Any) -> dict[HashAlg, dict[int, bytes]] | None:
    """The final `pcrs:` section (bank -> PCR -> 0x... read by YAML as an int)."""
    if not isinstance(document, dict) or not isinstance(document.get("pcrs"), dict):
        return None
    out: dict[HashAlg, dict[int, bytes]] = {}
    for name, values in document["pcrs"].items():
        bank = HashAlg.from_name(str(name))
        out[bank] = {int(p): int(v).to_bytes(bank.digest_size, "big") for p, v in values.items()}
    return out


def tool_rule_pcr0(log: EventLog, bank: HashAlg) -> bytes:
    """PCR0 as tpm2-tools 5.4 computes it: from zero, every PCR0 event but the Spec ID
    header extended, EV_NO_ACTION included (SOURCES.md, items 1 and 3)."""
    value = bytes(bank.digest_size)
    events = log.events[1:] if log.format is LogFormat.CRYPTO_AGILE else log.events
    for event in events:
        digest = event.digest(bank)
        if event.pcr == 0 and digest is not None:
            value = bank.digest(value + digest)
    return value


def compare_with_tool(shared: SharedLog) -> None:
    rc, document, stderr = tool(shared.path)
    shared.tool_rc = rc
    theirs = tool_pcr_values(document)
    if rc != 0 or theirs is None:
        why = f"signal {-rc}" if rc < 0 else f"rc {rc}"
        first = next((line for line in stderr.splitlines() if line.strip()), "")
        shared.pcr_status = f"tool fails ({why}{': ' + first if first else ''})"
        if shared.refused:
            shared.pcr_status += "; ours: EventLogMalformed"
        return
    if shared.log is None:
        shared.pcr_status = "DIFFERENT: the tool parses it, we refuse it"
        return
    mine = replay(shared.log).pcrs
    differing = sorted(
        (bank.bank_name, pcr)
        for bank in set(mine) | set(theirs)
        for pcr in set(mine.get(bank, {})) | set(theirs.get(bank, {}))
        if mine.get(bank, {}).get(pcr) != theirs.get(bank, {}).get(pcr)
    )
    shared.details["differing"] = [f"{bank}[{pcr}]" for bank, pcr in differing]
    if not differing:
        shared.pcr_status = "identical"
    elif {pcr for _, pcr in differing} == {0} and all(
        tool_rule_pcr0(shared.log, bank) == theirs[bank][0] for bank in theirs
    ):
        shared.pcr_status = "tool wrong: " + _tool_wrong_reason(shared.log)
    else:
        shared.pcr_status = "DIFFERENT: " + ", ".join(shared.details["differing"])


def _tool_wrong_reason(log: EventLog) -> str:
    if log.startup_locality:
        return f"ignores StartupLocality {log.startup_locality} (PCR0)"
    return "extends EV_NO_ACTION events (PCR0)"


# --- timing ----------------------------------------------------------------------------


@dataclass
class Plan:
    fn: Callable[..., object]
    args: list[tuple[Any, ...]]
    warmup: int = 3


def plans(
    logs: Sequence[SharedLog], synthetic: bytes, iterations: int, baseline_iterations: int
) -> tuple[dict[str, Plan], dict[str, Plan]]:
    mine: dict[str, Plan] = {}
    theirs: dict[str, Plan] = {}
    for shared in logs:
        mine[f"log.{shared.stem}"] = Plan(ours, [(shared.raw,)] * iterations)
        theirs[f"log.{shared.stem}"] = Plan(tool, [(shared.path,)] * baseline_iterations, 1)
    if logs:
        raws = [shared.raw for shared in logs]
        paths = [shared.path for shared in logs]
        mine["all_logs"] = Plan(ours_all, [(raws,)] * max(4, iterations // 10))
        theirs["all_logs"] = Plan(tool_all, [(paths,)] * max(2, baseline_iterations // 3), 1)
    mine["synthetic_150_events"] = Plan(ours, [(synthetic,)] * iterations)
    return mine, theirs


def run_rounds(
    mine: Mapping[str, Plan], theirs: Mapping[str, Plan], rounds: int
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    ours_ns: dict[str, list[int]] = {op: [] for op in mine}
    theirs_ns: dict[str, list[int]] = {op: [] for op in theirs}
    for index in range(rounds):
        h.progress(f"round {index + 1}/{rounds}")
        for op, plan in mine.items():
            ours_ns[op] += h.time_calls(plan.fn, plan.args, plan.warmup)
            if op in theirs:
                other = theirs[op]
                theirs_ns[op] += h.time_calls(other.fn, other.args, other.warmup)
    return ours_ns, theirs_ns


# --- output ----------------------------------------------------------------------------


def print_tables(document: Mapping[str, Any], notes: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 180)
    results, baseline = document["results"], document["baseline"]
    ratio = document["ratio"]
    machine = document["machine"]
    table = Table(
        title=f"{NAME} - {machine.get('cpu_model')}, pinned to core {machine.get('pinned_cpu')}, "
        f"Python {machine.get('python')}",
        title_justify="left",
    )
    table.add_column("log")
    for column in ("events", "ours median µs", "ours p95 µs", "tpm2_eventlog median ms", "ratio"):
        table.add_column(column, justify="right")
    table.add_column("PCRs vs tpm2_eventlog")
    for stem, info in document["logs"].items():
        op = f"log.{stem}"
        table.add_row(
            stem,
            "-" if info["events"] is None else str(info["events"]),
            f"{results[op]['median_us']:,.1f}",
            f"{results[op]['p95_us']:,.1f}",
            f"{baseline[op]['median_us'] / 1000:,.2f}" if op in baseline else "-",
            f"{ratio[op]:,.0f}x" if op in ratio else "-",
            info["pcrs"],
        )
    for op, label in (("all_logs", "ALL LOGS (one call)"), ("synthetic_150_events", None)):
        if op not in results:
            continue
        table.add_row(
            label or f"synthetic ({SYNTHETIC_EVENTS} events, sha1+sha256)",
            str(document["aggregate"].get("events", "")) if op == "all_logs" else "150",
            f"{results[op]['median_us']:,.1f}",
            f"{results[op]['p95_us']:,.1f}",
            f"{baseline[op]['median_us'] / 1000:,.2f}" if op in baseline else "-",
            f"{ratio[op]:,.0f}x" if op in ratio else "-",
            "",
        )
    console.print(table)
    for note in notes:
        console.print(f"- {note}", highlight=False, markup=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    h.common_arguments(parser, default_iterations=DEFAULT_ITERATIONS)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, quick 1)")
    parser.add_argument(
        "--baseline-iterations",
        type=int,
        default=None,
        help=f"tpm2_eventlog runs per log per round (default {DEFAULT_BASELINE_ITERATIONS})",
    )
    parser.add_argument(
        "--logs", type=Path, default=DEFAULT_LOGS, help=f"folder of *.bin (default {DEFAULT_LOGS})"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="do not time tpm2_eventlog (PCRs still compared)"
    )
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = QUICK_ITERATIONS if args.quick else DEFAULT_ITERATIONS
    if args.baseline_iterations is None:
        quick = args.quick
        args.baseline_iterations = (
            QUICK_BASELINE_ITERATIONS if quick else DEFAULT_BASELINE_ITERATIONS
        )
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.iterations < 1 or args.baseline_iterations < 1 or args.rounds < 1:
        parser.error("--iterations, --baseline-iterations and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    have_tool = shutil.which(TOOL) is not None
    logs = load_logs(args.logs) if args.logs.is_dir() else []
    if not logs:
        notes.append(f"no shared logs in {args.logs}: only the synthetic log is timed")
    synthetic = synthetic_log()
    cpu = args.cpu if args.cpu is not None else h.least_busy_cpu()
    h.pin(cpu)

    if have_tool:
        h.progress(f"comparing our PCRs with {TOOL}'s on {len(logs)} logs")
        for shared in logs:
            compare_with_tool(shared)
    baseline_info: dict[str, Any] = {
        "name": f"{TOOL} {' '.join(TOOL_ARGS)} FILE + yaml.load({YAML_LOADER.__name__})",
        "tool_version": h.tool_version([TOOL, "--version"]) if have_tool else None,
    }
    if args.no_baseline:
        baseline_info["status"] = "skipped (--no-baseline)"
    elif not have_tool:
        baseline_info["status"] = f"unavailable: {TOOL} not found (apt-get install tpm2-tools)"
    else:
        baseline_info["status"] = "ok"

    mine, theirs = plans(logs, synthetic, args.iterations, args.baseline_iterations)
    if baseline_info["status"] != "ok":
        theirs = {}
    before = h.cpu_times()
    ours_ns, theirs_ns = run_rounds(mine, theirs, args.rounds)
    utilisation = h.cpu_util(before, h.cpu_times())

    results = {op: h.stats(samples) for op, samples in ours_ns.items()}
    baseline = {op: h.stats(samples) for op, samples in theirs_ns.items()}
    ratio = h.ratios(baseline, results)
    per_log = {
        s.stem: {
            "events": s.events,
            "bytes": len(s.raw),
            "format": s.log.format.value if s.log else None,
            "banks": [b.bank_name for b in s.log.banks] if s.log else [],
            "ours": "parsed" if s.log else f"refused: {s.refused}",
            "tool_rc": s.tool_rc,
            "pcrs": s.pcr_status,
            **s.details,
        }
        for s in logs
    }
    both = [f"log.{s.stem}" for s in logs if f"log.{s.stem}" in baseline]
    aggregate: dict[str, Any] = {"logs": len(logs), "events": sum(s.events or 0 for s in logs)}
    if both:
        ours_sum = sum(results[op]["median_us"] for op in both)
        theirs_sum = sum(baseline[op]["median_us"] for op in both)
        aggregate.update(
            sum_of_medians_us={"ours": round(ours_sum, 1), "baseline": round(theirs_sum, 1)},
            ratio_of_sums=round(theirs_sum / ours_sum, 1),
        )
    wrong = {s.stem for s in logs if s.pcr_status.startswith("tool wrong")}
    checks = {
        "no_unexplained_pcr_difference": not any(
            s.pcr_status.startswith("DIFFERENT") for s in logs
        ),
        "tool_wrong_exactly_where_sources_md_says": (
            wrong == {s for s in SOURCES_TOOL_WRONG if any(x.stem == s for x in logs)}
            if have_tool and logs
            else None
        ),
        "synthetic_log_events": len(parse_event_log(synthetic).events) == SYNTHETIC_EVENTS + 1,
    }
    synthetic_stats = results["synthetic_150_events"]
    notes += [
        f"pinned to core {cpu}; ours {args.iterations} calls per log per round, "
        f"{TOOL} {args.baseline_iterations} per log per round, {args.rounds} round(s)",
        f"baseline: {baseline_info['name']} ({baseline_info['status']})",
        f"synthetic {SYNTHETIC_EVENTS}-event sha1+sha256 log ({len(synthetic):,} bytes): median "
        f"{synthetic_stats['median_us']:,.1f} µs, p95 {synthetic_stats['p95_us']:,.1f} µs: "
        + ("under 1 ms" if synthetic_stats["p95_us"] < 1000 else "NOT under 1 ms at p95"),
    ]
    if "ratio_of_sums" in aggregate:
        notes.append(
            f"aggregate over {len(both)} logs: sum of medians ours "
            f"{aggregate['sum_of_medians_us']['ours'] / 1000:,.2f} ms, {TOOL} "
            f"{aggregate['sum_of_medians_us']['baseline'] / 1000:,.1f} ms, "
            f"ratio {aggregate['ratio_of_sums']:,.0f}x"
        )
    notes.append(f"checks: {checks}")
    document = h.report(
        NAME,
        h.machine_info(pinned_cpu=cpu, cpu_util_during_run=utilisation),
        results,
        baseline,
        ratio,
        baseline_info=baseline_info,
        config={
            "iterations": args.iterations,
            "baseline_iterations": args.baseline_iterations,
            "rounds": args.rounds,
            "logs_dir": str(args.logs),
            "synthetic_bytes": len(synthetic),
        },
        logs=per_log,
        aggregate=aggregate,
        checks=checks,
        notes=notes,
    )
    if args.json:
        h.emit(document, True)
    else:
        print_tables(document, notes)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        h.progress("interrupted")
        sys.exit(130)

"""Shared helpers for the benchmarks: statistics, pinning, timing, machine info, output.

Every benchmark prints a readable table, or with `--json` exactly one JSON object on
stdout (DESIGN.md, "Benchmarks"):

    {"benchmark": NAME, "machine": {...}, "results": {OP: STATS}, "baseline": {OP: STATS},
     "ratio": {OP: baseline_median / our_median}, ...}

where STATS is {"median_us", "p95_us", "ops_per_s", "n", ...}: median and nearest-rank
p95 of the per-call wall-clock times, and ops/s = n / total time.  Progress goes to
stderr only.  Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `python benchmarks/NAME.py` from anywhere
    sys.path.insert(0, REPO)

Stats = dict[str, Any]
_CORES_ALLOWED_AT_START = len(os.sched_getaffinity(0))  # before any pinning

# Distributions reported in "machine" (what the figures depend on).
VERSIONED = (
    "lightgate",
    "cryptography",
    "grpcio",
    "protobuf",
    "sqlalchemy",
    "psycopg",
    "tpm2-pytss",
    "pydantic",
)


# --- progress ------------------------------------------------------------------------


def progress(message: str) -> None:
    """One progress line on stderr (stdout is reserved for the table or the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- statistics ----------------------------------------------------------------------


def nearest_rank(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (rank = ceil(fraction * n))."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def stats(samples_ns: Sequence[int], total_ns: int | None = None, **extra: Any) -> Stats:
    """Median, nearest-rank p95, mean, min, max (µs) and ops/s = n / total time.

    `total_ns` is the wall time of the whole run when the calls overlapped (windowed
    RPCs); by default the calls ran one after another and the total is their sum.
    """
    if not samples_ns:
        raise ValueError("no samples")
    values = sorted(s / 1000.0 for s in samples_ns)
    n = len(values)
    total = total_ns if total_ns is not None else sum(samples_ns)
    out: Stats = {
        "median_us": round(statistics.median(values), 2),
        "p95_us": round(nearest_rank(values, 0.95), 2),
        "ops_per_s": round(n / (total / 1e9), 1) if total > 0 else 0.0,
        "n": n,
        "mean_us": round(statistics.fmean(values), 2),
        "min_us": round(values[0], 2),
        "max_us": round(values[-1], 2),
    }
    out.update(extra)
    return out


def ratios(
    baseline: Mapping[str, Stats],
    results: Mapping[str, Stats],
    counterpart: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """baseline median / our median, for every op measured by both; `counterpart` names
    our op for a baseline op that has no namesake (e.g. a baseline's inner step)."""
    out = {}
    for op, theirs in baseline.items():
        mine = results.get(op) or results.get((counterpart or {}).get(op, ""))
        if mine and mine.get("median_us"):
            out[op] = round(theirs["median_us"] / mine["median_us"], 2)
    return out


# --- timing --------------------------------------------------------------------------


def time_calls(
    fn: Callable[..., object],
    args_list: Sequence[tuple[Any, ...]],
    warmup: int = 3,
    *,
    collect: bool = True,
) -> list[int]:
    """Call fn(*args) for each args; the per-call wall times in ns (after `warmup` calls
    on the first arguments, not timed, and a full collection).  GC stays on, as in a
    server."""
    for args in args_list[: min(warmup, len(args_list))]:
        fn(*args)
    if collect:
        gc.collect()
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    for args in args_list:
        start = clock()
        fn(*args)
        append(clock() - start)
    return samples


def measure(
    fn: Callable[..., object], args_list: Sequence[tuple[Any, ...]], warmup: int = 3
) -> Stats:
    """stats() of time_calls(), plus `cpu_us_per_op`: this thread's CPU time per call
    (less than the median when the call waits, e.g. on a database server)."""
    for args in args_list[: min(warmup, len(args_list))]:
        fn(*args)
    gc.collect()
    cpu_before = time.thread_time_ns()
    samples = time_calls(fn, args_list, warmup=0, collect=False)
    cpu_ns = time.thread_time_ns() - cpu_before
    return stats(samples, cpu_us_per_op=round(cpu_ns / len(samples) / 1000, 1))


# --- CPUs ----------------------------------------------------------------------------


def cpu_times() -> dict[int, tuple[int, int, int]]:
    """Per core (busy, steal, total) jiffies from /proc/stat."""
    out: dict[int, tuple[int, int, int]] = {}
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                if line.startswith("cpu") and line[3].isdigit():
                    fields = line.split()
                    values = [int(v) for v in fields[1:]]
                    idle = values[3] + values[4]
                    steal = values[7] if len(values) > 7 else 0
                    total = sum(values[:8])
                    out[int(fields[0][3:])] = (total - idle - steal, steal, total)
    except OSError:
        pass
    return out


def cpu_util(
    before: Mapping[int, tuple[int, int, int]], after: Mapping[int, tuple[int, int, int]]
) -> dict[str, dict[str, float | None]]:
    """Busy % and steal % per core between two cpu_times() snapshots."""
    out: dict[str, dict[str, float | None]] = {}
    for core, now in after.items():
        then = before.get(core, (0, 0, 0))
        busy, steal, total = (now[i] - then[i] for i in range(3))
        out[str(core)] = {
            "busy_pct": round(100.0 * busy / total, 1) if total else None,
            "steal_pct": round(100.0 * steal / total, 1) if total else None,
        }
    return out


def least_busy_cpu(sample_seconds: float = 0.5) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    before = cpu_times()
    time.sleep(sample_seconds)
    util = cpu_util(before, cpu_times())
    return min(allowed, key=lambda c: (util.get(str(c), {}).get("busy_pct") or 0.0, -c))


def pin(cpu: int, pid: int = 0) -> None:
    """Pin a process (this one by default) to one core; children inherit it."""
    os.sched_setaffinity(pid, {cpu})


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- machine -------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def tool_version(command: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def machine_info(**extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_allowed": _CORES_ALLOWED_AT_START,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in VERSIONED},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(extra)
    return info


# --- command line --------------------------------------------------------------------


def common_arguments(parser: argparse.ArgumentParser, *, default_iterations: int) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--iterations",
        "-n",
        type=int,
        default=None,
        help=f"iterations per operation (default {default_iterations})",
    )
    parser.add_argument(
        "--cpu", type=int, default=None, help="core to pin the measuring process to"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few iterations only (smoke test; figures noisy)"
    )


# --- output --------------------------------------------------------------------------


def report(
    name: str,
    machine: Mapping[str, Any],
    results: Mapping[str, Stats],
    baseline: Mapping[str, Stats] | None = None,
    ratio: Mapping[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    baseline = dict(baseline or {})
    document: dict[str, Any] = {
        "benchmark": name,
        "machine": dict(machine),
        "results": dict(results),
        "baseline": baseline,
        "ratio": dict(ratio if ratio is not None else ratios(baseline, results)),
    }
    document.update(extra)
    return document


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# Optional per-op fields shown as extra columns when any result has them.
EXTRA_COLUMNS = (
    ("cpu_us_per_op", "CPU µs"),
    ("server_cpu_us_per_op", "server CPU µs"),
    ("client_cpu_us_per_op", "client CPU µs"),
    ("postgres_cpu_us_per_op", "pg CPU µs"),
    ("server_core_busy_pct", "server busy %"),
    ("postgres_connections_opened", "pg conns opened"),
)


def print_table(document: Mapping[str, Any], notes: Iterable[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    results: Mapping[str, Stats] = document["results"]
    baseline: Mapping[str, Stats] = document.get("baseline") or {}
    ratio: Mapping[str, float] = document.get("ratio") or {}
    machine = document["machine"]
    title = (
        f"{document['benchmark']} - {machine.get('cpu_model')}, {machine.get('cores')} cores, "
        f"Python {machine.get('python')}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("operation", no_wrap=True)
    for column in ("median µs", "p95 µs", "ops/s", "n"):
        table.add_column(column, justify="right")
    extras = [(k, label) for k, label in EXTRA_COLUMNS if any(k in r for r in results.values())]
    for _, label in extras:
        table.add_column(label, justify="right")
    if baseline:
        for column in ("baseline median µs", "baseline ops/s", "ratio"):
            table.add_column(column, justify="right")
    ops = list(results) + [op for op in baseline if op not in results]
    for op in ops:
        ours = results.get(op, {})
        row = [
            op,
            _fmt(ours.get("median_us")),
            _fmt(ours.get("p95_us")),
            _fmt(ours.get("ops_per_s"), 0),
            _fmt(ours.get("n")),
        ]
        row += [_fmt(ours.get(key)) for key, _ in extras]
        if baseline:
            theirs = baseline.get(op, {})
            row += [
                _fmt(theirs.get("median_us")),
                _fmt(theirs.get("ops_per_s"), 0),
                f"{ratio[op]:.2f}x" if op in ratio else "-",
            ]
        table.add_row(*row)
    console.print(table)
    for note in notes:
        console.print(f"- {note}", highlight=False, markup=False)


def emit(document: Mapping[str, Any], as_json: bool, notes: Iterable[str] = ()) -> None:
    if as_json:
        sys.stdout.write(json.dumps(document, default=str) + "\n")
        sys.stdout.flush()
    else:
        print_table(document, notes)

"""The agent as it runs on a node: resident memory and CPU time per attestation.

    .venv/bin/python benchmarks/agent.py [--json] [--iterations N] [--quick]

One swtpm (provisioned with a private simulator CA, its PCRs measured with the good boot
fixture), a verifier in this process (SQLite), and `attest agent run` in its own
process, exactly as systemd starts it (a config file, nothing else), attesting every
`--interval` seconds.  Once it has attested N times (counted in the verifier's store),
the agent's VmRSS and VmHWM are read from /proc, and its CPU time (user + system) is
divided by the attestations it made after warm-up.  Aim (issue 7): resident memory
under 40 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attestor.tpm import Tpm
from benchmarks._harness import common_arguments, emit, machine_info, progress, report, stats
from lightgate.sim.boot import (
    GOOD_BOOT,
    fixture_path,
    golden_from_fixture,
    import_golden,
    measure_boot,
)
from lightgate.sim.fleet import sim_verifier_config
from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision, require_tools
from verifier.server import start_verifier

RSS_AIM_MB = 40.0
BIN = Path(sys.executable).parent
#: The agent as systemd starts it, and as the `attest` CLI does (for comparison).
COMMANDS = {
    "lightgate-agent": [str(BIN / "lightgate-agent")],
    "attest agent run": [str(BIN / "attest"), "agent", "run"],
}


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of the process, in ns resolution (schedstat's first
    field), where /proc/PID/stat counts clock ticks of 10 ms."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e9


def _affirming(store: Any, node_id: str) -> int:
    return sum(r.status == "affirming" for r in store.results_for(node_id, limit=10_000))


def run(command: list[str], iterations: int, interval: float, warmup: int) -> dict[str, Any]:
    require_tools()
    with tempfile.TemporaryDirectory(prefix="lightgate-agent-bench-") as tmp:
        root = Path(tmp)
        ca = SimulatorCA(root / "ca-sim")
        provision(root / "tpm", ca)
        ca.export_trust(root / "trust")
        with (
            Swtpm(root / "tpm").start() as swtpm,
            start_verifier(sim_verifier_config(root, "0" * 64)) as verifier,
        ):
            import_golden(verifier.store, golden_from_fixture())
            verifier.verifier.references.refresh()
            with Tpm(swtpm.tcti) as tpm:  # the firmware's measurements, at power-on
                measure_boot(tpm, fixture_path(GOOD_BOOT).read_bytes())
            config = root / "agent.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "node_id": "bench-node",
                        "verifier": f"127.0.0.1:{verifier.port}",
                        "tcti": swtpm.tcti,
                        "state_dir": str(root / "agent"),
                        "event_log": str(fixture_path(GOOD_BOOT)),
                        "interval_seconds": interval,
                    }
                )
            )
            progress(f"{command[-1]}: every {interval} s, {iterations} attestations")
            agent = subprocess.Popen(
                [*command, "--config", str(config), "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "MALLOC_ARENA_MAX": "2"},  # as the unit sets it
            )
            try:
                deadline = time.monotonic() + 120 + iterations * interval * 4
                samples_ns: list[int] = []
                counted, cpu_then = 0, 0.0
                while len(samples_ns) < iterations:
                    if agent.poll() is not None:
                        raise RuntimeError(f"the agent exited: {agent.stderr.read().decode()}")  # type: ignore[union-attr]
                    if time.monotonic() > deadline:
                        raise RuntimeError("the agent did not attest in time")
                    time.sleep(min(interval / 4, 0.05))
                    now = _affirming(verifier.store, "bench-node")
                    if now == counted:
                        continue
                    cpu_now = _cpu_seconds(agent.pid)
                    if counted >= warmup:  # the CPU the agent spent on these rounds
                        per_round = (cpu_now - cpu_then) / (now - counted)
                        samples_ns += [max(1, int(per_round * 1e9))] * (now - counted)
                    counted, cpu_then = now, cpu_now
                rss_kib = _status_kib(agent.pid, "VmRSS")
                peak_kib = _status_kib(agent.pid, "VmHWM")
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(timeout=30)
    return {
        "cpu": stats(samples_ns[:iterations]),
        "memory": {
            "rss_mb": round(rss_kib / 1024, 1),
            "peak_rss_mb": round(peak_kib / 1024, 1),
            "aim_max_mb": RSS_AIM_MB,
            "met": peak_kib / 1024 < RSS_AIM_MB,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, default_iterations=60)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between rounds")
    parser.add_argument("--no-baseline", action="store_true", help="(no incumbent here)")
    args = parser.parse_args()
    iterations = 5 if args.quick else (args.iterations or 60)
    measured = {
        name: run(command, iterations, args.interval, warmup=3)
        for name, command in COMMANDS.items()
    }
    results = {f"{name}.cpu_per_attestation": m["cpu"] for name, m in measured.items()}
    memory = {name: m["memory"] for name, m in measured.items()}
    document = report("agent", machine_info(), results, memory=memory)
    notes = [
        "cpu_per_attestation: the agent process' CPU time (user + system) per attestation"
        " round (challenge, quote, event log, Attest), median over rounds"
    ] + [
        f"{name}: resident {m['rss_mb']} MB, peak {m['peak_rss_mb']} MB:"
        f" aim < {RSS_AIM_MB:.0f} MB {'met' if m['met'] else 'MISSED'}"
        for name, m in memory.items()
    ]
    emit(document, args.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

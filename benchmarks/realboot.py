"""Real boots: what recording one costs, and what appraising a real Secure Boot log costs
the verifier, beside Keylime 7.14.3 on the same log in the same run.

    .venv/bin/python benchmarks/realboot.py [--json] [--iterations N] [--quick] [--cpu K]
        [--no-record] [--no-baseline]

Ops (median and p95 in µs):
  record_sb_on / record_sb_off   one `lightgate.sim.realboot.record.record` (packages from
                                 the cache, build, boot under QEMU TCG, check, write); a
                                 few runs only: each is a whole boot (skip: --no-record)
  appraise_cold   BootAppraiser.appraise on a fresh appraiser: parse + replay of the
                  recorded firmware-fixtures/recorded/sb-on log (four banks, 20 kB)
                  against the PCRs the guest read, claims, golden values
  appraise_warm   the same on a warm appraiser (the log seen before)
  parse_replay    parse_event_log + replay alone

Keylime (when /tmp/klvenv exists: bash ../shared/anchors/keylime/setup.sh): the
anchor's bench.py on the same log, pinned to the same core; its `b_bootlog_parse`
(tpm2_eventlog + YAML) and `d_full_attestation` (quote check, parse, measured-boot
policy) are put beside parse_replay and appraise_cold.

The full-guest figure (boot to an affirming result, agent as a systemd service) is what
`attest sim run --vm 1 --json` prints as boot_to_verdict_seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

from lightgate.sim.firmware import FIXTURES_DIR
from lightgate.sim.realboot.qemu import BootMode
from lightgate.sim.realboot.record import record
from verifier.appraisal import BootAppraiser
from verifier.evidence.claims import extract_claims
from verifier.evidence.eventlog import parse_event_log, replay
from verifier.evidence.pcr_values import PcrValues
from verifier.golden.values import learn

NAME = "realboot"
RECORDING = FIXTURES_DIR / "recorded" / "sb-on"
ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "keylime"
KEYLIME_PYTHON = Path("/tmp/klvenv/bin/python")
#: Keylime's op -> ours.  Its full attestation also checks the quote (about 90 µs here);
#: appraise_cold does not, so the ratio slightly favours Keylime.
KEYLIME_OPS = {"b_bootlog_parse": "parse_replay", "d_full_attestation": "appraise_cold"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    h.common_arguments(parser, default_iterations=300)
    parser.add_argument("--no-record", action="store_true", help="do not time recordings")
    parser.add_argument("--no-baseline", action="store_true", help="do not run Keylime")
    parser.add_argument("--records", type=int, default=None, help="boots per mode (default 2)")
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 30 if args.quick else 300
    if args.records is None:
        args.records = 1 if args.quick else 2
    return args


def appraisal_ops(iterations: int, checks: dict[str, Any]) -> dict[str, h.Stats]:
    raw = (RECORDING / "eventlog.bin").read_bytes()
    pcrs = json.loads((RECORDING / "pcrs.json").read_text())["banks"]
    quoted = PcrValues.from_json(pcrs)
    golden = [learn([extract_claims(parse_event_log(raw))], "recorded")]
    warm = BootAppraiser()
    first = warm.appraise("vm", raw, quoted, golden)
    checks["affirmed_by_its_golden_values"] = first.golden == "recorded" and first.passed
    checks["events"] = len(parse_event_log(raw).events)
    checks["log_bytes"] = len(raw)
    runs = [()] * iterations
    return {
        "parse_replay": h.measure(lambda: replay(parse_event_log(raw)), runs),
        "appraise_cold": h.measure(
            lambda: BootAppraiser().appraise("vm", raw, quoted, golden), runs
        ),
        "appraise_warm": h.measure(lambda: warm.appraise("vm", raw, quoted, golden), runs),
    }


def record_ops(records: int, checks: dict[str, Any]) -> dict[str, h.Stats]:
    results = {}
    for mode in (BootMode.SB_ON, BootMode.SB_OFF):
        samples = []
        for _ in range(records):
            with tempfile.TemporaryDirectory(prefix="lg-bench-record-") as folder:
                h.progress(f"recording {mode}")
                manifest = record(mode, Path(folder) / str(mode))
                timings = manifest["timings"]
                samples.append(int(sum(timings.values()) * 1e9))
                checks[f"{mode}_replay_ok"] = manifest["replay"]["ok"]
                checks[f"{mode}_boot_seconds"] = timings["boot_seconds"]
        results[f"record_{str(mode).replace('-', '_')}"] = h.stats(samples)
    return results


def keylime_baseline(cpu: int, iterations: int) -> tuple[dict[str, h.Stats], dict[str, Any]]:
    info: dict[str, Any] = {"name": "keylime 7.14.3", "log": str(RECORDING / "eventlog.bin")}
    bench = ANCHOR / "bench.py"
    if not bench.exists() or not KEYLIME_PYTHON.exists():
        info["status"] = f"unavailable: needs {bench} and {KEYLIME_PYTHON} (anchor setup.sh)"
        return {}, info
    log = RECORDING / "eventlog.bin"
    command = [
        str(KEYLIME_PYTHON), str(bench), "--log", str(log), "--skip-e",
        "--iters", str(iterations), "--parse-iters", str(iterations), "--cpu", str(cpu),
    ]  # fmt: skip
    info["command"] = " ".join(command)
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=1800,
        cwd=tempfile.gettempdir(),
    )  # fmt: skip
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        info["status"] = f"failed: bench.py exited {done.returncode}: {tail}"
        return {}, info
    scenario = json.loads(done.stdout)["scenarios"][log.name]
    if "error" in scenario:
        info["status"] = f"failed: {scenario['error']}"
        return {}, info
    baseline = {
        ours: {
            k: scenario["results"][theirs].get(k) for k in ("median_us", "p95_us", "ops_per_s", "n")
        }
        for theirs, ours in KEYLIME_OPS.items()
        if theirs in scenario["results"]
    }
    info["status"] = "ok"
    return baseline, info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = args.cpu if args.cpu is not None else h.least_busy_cpu()
    h.pin(cpu)
    checks: dict[str, Any] = {}
    results = appraisal_ops(args.iterations, checks)
    baseline: dict[str, h.Stats] = {}
    info: dict[str, Any] = {"name": "keylime 7.14.3", "status": "skipped (--no-baseline)"}
    if not args.no_baseline:
        h.progress("Keylime on the same log")
        baseline, info = keylime_baseline(cpu, max(10, args.iterations // 10))
    if not args.no_record:
        results |= record_ops(args.records, checks)
    document = h.report(
        NAME,
        h.machine_info(cpu=cpu),
        results,
        baseline=baseline,
        checks=checks,
        baseline_info=info,
    )
    h.emit(document, args.json, notes=[f"checks: {checks}", f"baseline: {info.get('status')}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

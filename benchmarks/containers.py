"""Container-image evidence with 200 running containers: what the agent pays each round
to read them and decide what to measure, what measuring costs, and what the verifier
pays to replay and appraise the runtime log.

    .venv/bin/python benchmarks/containers.py [--json] [--iterations N] [--quick]
                                              [--containers N] [--images N]

A private containerd (runc, the `native` snapshotter) runs `--containers` containers
(default 200) made from `--images` distinct busybox images (default 10) built with umoci,
in one namespace; a swtpm is the node's TPM.  Needs root, containerd, runc, umoci, a
static busybox and swtpm (`make setup`).

Ops (median and p95 in µs):
  read_containers   a full read of containerd's gRPC API: Containers/List, Tasks/List (which
                    containerd answers by asking every container's shim) and Images/List
                    (`running_images`): what a round would cost if it read everything
  round_steady      the agent's whole per-round step when nothing new started
                    (`Agent.measure_images`: Containers/List, Images/List, compare with the
                    runtime log; no task is asked about, nothing extended)
  measure_new       one new image measured: record written ahead, then extended into
                    PCR 13 of the swtpm in every bank (`RuntimeLog.append_image`)
  verify_log        the verifier's replay of a runtime log of one event per container
                    (every container a distinct image: the worst case), checked against
                    the quoted PCR (`verify_runtime_log`), uncached
  appraise_images   the verdicts of those images against an allow-list of 200 entries
  verify_appraise   both, as a verifier that has not seen this log before pays

No incumbent is timed: Keylime appraises files through IMA, not container images
through a runtime's API, so there is no like-for-like operation to put beside these.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

from attestor.agent import Agent
from attestor.collect.containers import running_images
from attestor.collect.images import images_to_measure
from attestor.tpm import Tpm
from lightgate.config import DEFAULT_RUNTIME_PCR, AgentConfig, ContainerSource
from lightgate.sim.containerd import build_busybox_image, missing_prerequisites, private_containerd
from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision, require_tools
from verifier.evidence.images import ImageRecord, encode_image_event
from verifier.evidence.runtime_log import (
    TAGGED_EVENT_IMAGE,
    TaggedEvent,
    encode_runtime_log,
    expected_pcr,
    verify_runtime_log,
)
from verifier.evidence.tpm_structures import HashAlg
from verifier.golden.images import allow_list, allow_list_document, appraise_images

NAME = "containers"
NAMESPACE = "bench"
PCR = DEFAULT_RUNTIME_PCR


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    h.common_arguments(parser, default_iterations=200)
    parser.add_argument("--containers", type=int, default=None, help="default 200 (--quick 20)")
    parser.add_argument("--images", type=int, default=None, help="default 10 (--quick 2)")
    parser.add_argument("--no-baseline", action="store_true", help="accepted; no baseline is named")
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 20 if args.quick else 200
    if args.containers is None:
        args.containers = 20 if args.quick else 200
    if args.images is None:
        args.images = 2 if args.quick else 10
    return args


def synthetic_records(count: int) -> list[ImageRecord]:
    """`count` distinct images with plausible names and digests."""
    return [
        ImageRecord(
            f"registry.example/team-{i % 17}/service-{i}:1.{i % 7}",
            "sha256:" + hashlib.sha256(f"image {i}".encode()).hexdigest(),
            "containerd",
        )
        for i in range(count)
    ]


def verifier_ops(count: int, iterations: int, checks: dict[str, Any]) -> dict[str, h.Stats]:
    """Replay and appraisal of a runtime log with one image event per container."""
    records = synthetic_records(count)
    banks = (HashAlg.SHA1, HashAlg.SHA256)
    events = [TaggedEvent(PCR, TAGGED_EVENT_IMAGE, encode_image_event(r)) for r in records]
    raw = encode_runtime_log(events, banks)
    quoted = {bank: {PCR: expected_pcr(events, bank)} for bank in banks}
    pins = [f"{r.name}@{r.digest}" for r in records]
    allowed = allow_list([allow_list_document("bench", pins, [])])
    verified = verify_runtime_log(raw, quoted, PCR)
    verdicts = appraise_images(verified.images, allowed)
    checks["log_bytes"] = len(raw)
    checks["replayed_images"] = len(verified.images) == count
    checks["all_allowed"] = all(v.allowed for v in verdicts)

    def both() -> None:
        appraise_images(verify_runtime_log(raw, quoted, PCR).images, allowed)

    runs = [()] * iterations
    return {
        "verify_log": h.measure(lambda: verify_runtime_log(raw, quoted, PCR), runs),
        "appraise_images": h.measure(lambda: appraise_images(verified.images, allowed), runs),
        "verify_appraise": h.measure(both, runs),
    }


def agent_ops(
    args: argparse.Namespace, workdir: Path, checks: dict[str, Any]
) -> dict[str, h.Stats]:
    """The agent's side against a real containerd and a swtpm."""
    results: dict[str, h.Stats] = {}
    with private_containerd() as daemon:
        names = []
        for i in range(args.images):
            image = build_busybox_image(workdir / f"image-{i}", marker=f"bench image {i}")
            names.append(daemon.import_image(NAMESPACE, image, f"bench.example/service-{i}"))
        h.progress(f"built and imported {len(names)} images; starting {args.containers} containers")
        threads = []
        for i in range(args.containers):  # ctr runs in parallel: each is a process
            thread = threading.Thread(
                target=daemon.run,
                args=(NAMESPACE, names[i % len(names)], f"c{i:04d}", "/bin/sleep", "3600"),
            )
            threads.append(thread)
            thread.start()
            if len(threads) >= 8:
                threads.pop(0).join()
        for thread in threads:
            thread.join()
        try:
            containers = running_images(daemon.socket, NAMESPACE)
            started = sum(c.started for c in containers)
            checks["containers_running"] = started
            checks["all_started"] = started == args.containers
            runs = [()] * args.iterations
            h.progress("read_containers")
            results["read_containers"] = h.measure(
                lambda: running_images(daemon.socket, NAMESPACE), runs
            )
            results |= _agent_rounds(args, workdir, daemon.socket, checks)
        finally:
            h.progress("removing containers")
            daemon.empty_namespace(NAMESPACE)
    return results


def _agent_rounds(
    args: argparse.Namespace, workdir: Path, socket: Path, checks: dict[str, Any]
) -> dict[str, h.Stats]:
    state = workdir / "tpm"
    provision(state, SimulatorCA(workdir / "ca"))
    with Swtpm(state).start() as swtpm, Tpm(swtpm.tcti) as tpm:
        source = ContainerSource(runtime="containerd", socket=socket, namespace=NAMESPACE)
        config = AgentConfig(
            node_id="bench",
            tcti=swtpm.tcti,
            state_dir=workdir / "agent",
            event_log=None,
            containers=[source],
        )
        config.state_dir.mkdir(parents=True, exist_ok=True)
        agent = Agent(config, tpm, stub=None)  # type: ignore[arg-type]  # no verifier needed
        agent.measure_images()  # the first round measures every image once
        measured = agent.runtime_log.measured_images()
        checks["measured_images"] = len(measured)
        checks["measured_all_distinct"] = len(measured) == args.images
        runs = [()] * args.iterations
        h.progress("round_steady")
        steady = h.measure(agent.measure_images, runs)
        checks["steady_round_measured_nothing"] = (
            len(agent.runtime_log.measured_images()) == args.images
        )
        log = agent.runtime_log
        fresh = iter(synthetic_records(args.iterations + 10))
        h.progress("measure_new")
        new = h.measure(lambda: log.append_image(tpm, next(fresh)), runs)
        checks["selected_from_containers"] = len(
            images_to_measure(running_images(socket, NAMESPACE))
        )
    return {"round_steady": steady, "measure_new": new}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = missing_prerequisites()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    require_tools()
    cpu = args.cpu if args.cpu is not None else h.least_busy_cpu()
    h.pin(cpu)
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lg-bench-ctr-", dir="/tmp") as folder:
        results = agent_ops(args, Path(folder), checks)
    h.progress("verifier: replay and appraisal")
    results |= verifier_ops(args.containers, args.iterations, checks)
    document = h.report(
        NAME,
        h.machine_info(cpu=cpu),
        results,
        baseline={},
        ratio={},
        setup={"containers": args.containers, "images": args.images, "runtime": "containerd"},
        checks=checks,
        baseline_info={
            "name": "none",
            "status": "skipped (Keylime has no container-image evidence to compare)",
        },
    )
    h.emit(document, args.json, notes=[f"checks: {checks}"])
    passed = all(v for v in checks.values() if isinstance(v, bool))
    return 0 if passed else 2


if __name__ == "__main__":
    sys.exit(main())

"""The agent's pure-Python gRPC client (lightgate.wire.channel over h2) beside grpcio's own
client, against one real grpcio server in this process on loopback.

    .venv/bin/python benchmarks/wire_channel.py [--json] [--iterations N] [--rounds R]
        [--cpu K] [--quick]

Operations (ours: AttestationClient(Channel("127.0.0.1:PORT")); baseline: grpcio's
AttestationStub(grpc.insecure_channel(...)); both one call at a time, connection reused,
timeout 10 s, rounds interleaved ours / theirs):
  challenge     Attestation.Challenge: a node id in, a 32-byte nonce and a PCR selection
                out (the agent's small call)
  attest_1mb    Attestation.Attest with a 1 MiB event_log (an event-log-sized request);
                the server answers a small AttestResponse

Memory (`memory_kib`): ru_maxrss of a fresh `python -c` subprocess that imports
  ours      lightgate.wire.clients (the channel and every pb2 module it needs)
  grpcio    grpc + the generated *_pb2_grpc stubs for the same services
  floor     the same pb2 modules alone (what both pay)
and ours / grpcio after one Challenge call to the server (`*_after_call`).

The server's threads run in this process, so the client and server share its cores;
nothing is pinned unless --cpu is given (then the whole process, server included, is on
that core).  Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
import grpc

from lightgate.wire.channel import Channel
from lightgate.wire.clients import AttestationClient
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc

NAME = "wire_channel"
DEFAULT_ITERATIONS = 2000
QUICK_ITERATIONS = 50
EVENT_LOG = os.urandom(1024 * 1024)
TIMEOUT = 10.0

PB2 = """
from lightgate.wire.v1 import attestation_pb2, admission_pb2
from lightgate.wire.containerd import containers_pb2, images_pb2, tasks_pb2
"""
MEMORY_SCRIPTS = {
    "ours": "import lightgate.wire.clients",
    "grpcio": PB2
    + """
import grpc
from lightgate.wire.v1 import attestation_pb2_grpc, admission_pb2_grpc
from lightgate.wire.containerd import containers_pb2_grpc, images_pb2_grpc, tasks_pb2_grpc
""",
    "floor": PB2,
}
CALLS = {
    "ours": """
from lightgate.wire.channel import Channel
from lightgate.wire.v1 import attestation_pb2
from lightgate.wire.clients import AttestationClient
AttestationClient(Channel(TARGET)).Challenge(attestation_pb2.ChallengeRequest(node_id="m"), 10)
""",
    "grpcio": """
stub = attestation_pb2_grpc.AttestationStub(grpc.insecure_channel(TARGET))
stub.Challenge(attestation_pb2.ChallengeRequest(node_id="m"), timeout=10)
""",
}


class Attestation(pb_grpc.AttestationServicer):
    def Challenge(self, request: pb.ChallengeRequest, context: Any) -> pb.ChallengeResponse:
        return pb.ChallengeResponse(
            nonce=b"n" * 32,
            pcr_selection=[pb.PcrBankSelection(hash="sha256", pcrs=list(range(24)))],
        )

    def Attest(self, request: pb.AttestRequest, context: Any) -> pb.AttestResponse:
        return pb.AttestResponse(status=pb.TRUST_STATUS_AFFIRMING, result_id=len(request.event_log))


def start_server() -> tuple[Any, str]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    pb_grpc.add_AttestationServicer_to_server(Attestation(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


PEAK = """
import resource
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def max_rss_kib(script: str) -> int:
    """Peak resident memory (KiB) of a fresh interpreter after running `script`.

    VmHWM, the peak of the new program image: Linux carries the parent's peak over
    execve into ru_maxrss, so a child of this (large) process would report our size.
    """
    code = textwrap.dedent(script) + PEAK
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=h.REPO, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return int(done.stdout.split()[0])


def memory(target: str, samples: int) -> dict[str, int]:
    """The smallest of `samples` runs of each script (the least disturbed)."""
    out: dict[str, int] = {}
    for name, script in MEMORY_SCRIPTS.items():
        out[name] = min(max_rss_kib(script) for _ in range(samples))
        if name in CALLS:
            call = f"TARGET = {target!r}\n" + script + CALLS[name]
            out[f"{name}_after_call"] = min(max_rss_kib(call) for _ in range(samples))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    h.common_arguments(parser, default_iterations=DEFAULT_ITERATIONS)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--server",
        choices=["inprocess", "subprocess", "both"],
        default="both",
        help="where the grpcio server runs (default both; results of the subprocess "
        "server are named subprocess.OP)",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="time only our client, not grpcio's"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = QUICK_ITERATIONS if args.quick else DEFAULT_ITERATIONS
    if args.quick:
        args.rounds = 1
    return args


def serve() -> int:
    """The server of `--server subprocess`: print the target, serve until stdin closes."""
    server, target = start_server()
    print(target, flush=True)
    sys.stdin.read()
    server.stop(None)
    return 0


@contextlib.contextmanager
def running_server(mode: str) -> Iterator[str]:
    if mode == "inprocess":
        server, target = start_server()
        try:
            yield target
        finally:
            server.stop(None)
        return
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=h.REPO,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        process.wait(30)


def bench(target: str, args: argparse.Namespace) -> tuple[dict[str, list[int]], ...]:
    """Per-call times (ns) of ours and grpcio's client, rounds interleaved."""
    ours_channel = Channel(target)
    ours = AttestationClient(ours_channel)
    grpc_channel = grpc.insecure_channel(target)
    theirs = pb_grpc.AttestationStub(grpc_channel)
    try:
        small = pb.ChallengeRequest(node_id="bench-node")
        big = pb.AttestRequest(node_id="bench-node", event_log=EVENT_LOG)
        # Both must give the same answers before anything is timed.
        assert ours.Challenge(small, TIMEOUT) == theirs.Challenge(small, timeout=TIMEOUT)
        assert ours.Attest(big, TIMEOUT).result_id == len(EVENT_LOG)
        assert theirs.Attest(big, timeout=TIMEOUT).result_id == len(EVENT_LOG)
        plans = {
            "challenge": (
                lambda: ours.Challenge(small, TIMEOUT),
                lambda: theirs.Challenge(small, timeout=TIMEOUT),
                args.iterations,
            ),
            "attest_1mb": (
                lambda: ours.Attest(big, TIMEOUT),
                lambda: theirs.Attest(big, timeout=TIMEOUT),
                max(10, args.iterations // 10),
            ),
        }
        ours_ns: dict[str, list[int]] = {op: [] for op in plans}
        theirs_ns: dict[str, list[int]] = {op: [] for op in plans}
        for round_number in range(args.rounds):
            h.progress(f"{target}: round {round_number + 1}/{args.rounds}")
            for op, (mine, baseline, n) in plans.items():
                calls = [()] * max(1, n // args.rounds)
                warmup = 20 if round_number == 0 else 3
                ours_ns[op] += h.time_calls(mine, calls, warmup=warmup)
                if not args.no_baseline:
                    theirs_ns[op] += h.time_calls(baseline, calls, warmup=warmup)
        return ours_ns, theirs_ns
    finally:
        ours_channel.close()
        grpc_channel.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve()
    if args.cpu is not None:
        h.pin(args.cpu)
    modes = ["inprocess", "subprocess"] if args.server == "both" else [args.server]
    results: dict[str, h.Stats] = {}
    baseline: dict[str, h.Stats] = {}
    rss: dict[str, int] = {}
    for mode in modes:
        prefix = "subprocess." if mode == "subprocess" else ""
        with running_server(mode) as target:
            ours_ns, theirs_ns = bench(target, args)
            if not rss:
                h.progress("memory (fresh subprocesses)")
                rss = memory(target, 1 if args.quick else 3)
        results.update({prefix + op: h.stats(v) for op, v in ours_ns.items()})
        baseline.update({prefix + op: h.stats(v) for op, v in theirs_ns.items() if v})

    document = h.report(
        NAME,
        h.machine_info(h2=h._version("h2"), pinned_cpu=args.cpu),
        results,
        baseline,
        memory_kib=rss,
        memory_saved_mib=round((rss["grpcio"] - rss["ours"]) / 1024, 1),
        baseline_info={"name": "grpcio insecure_channel + generated AttestationStub"},
    )
    notes = [
        "baseline = grpcio's client on the same server; ratio = baseline / ours "
        "(above 1: ours faster)",
        "OP: server in this process (its Python handlers share our GIL); "
        "subprocess.OP: server in another process, as in production",
        "peak resident memory (VmHWM KiB, fresh process): "
        + ", ".join(f"{k} {v:,}" for k, v in rss.items()),
        f"importing ours instead of grpcio saves {document['memory_saved_mib']} MiB",
    ]
    h.emit(document, args.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

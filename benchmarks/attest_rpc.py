"""Full gRPC round trips against a real verifier process, store writes included.

    .venv/bin/python benchmarks/attest_rpc.py [--json] [--iterations N] [--quick]
        [--backend sqlite|postgresql|both] [--tpms K] [--nodes M] [--window W]
        [--sequential S] [--cpu C] [--server-cpu S] [--server-log-level INFO]
        [--server-workers W] [--no-breakdown] [--perf] [--py-spy PATH [--py-spy-out DIR]]

The verifier is `.venv/bin/attest verifier serve --config CONF` in a subprocess pinned to
one core (`--server-cpu`, default the first allowed), with a fresh database per backend
(a SQLite file, or a PostgreSQL database created for the run and dropped after), EK-chain
enrollment against a private simulator CA, nonce TTL 900 s, PCR selection sha256 0-23,
its default worker count and log level INFO (one JSON line per attestation, to a file).
This process is the client, pinned to another core (`--cpu`, default the next allowed
one).  PostgreSQL (shared, not pinned) runs on the same two cores.

Fleet: K swtpm TPMs (provisioned with the private CA) carry M node identities (round
robin), each with its own AK, enrolled by the real agent (`attestor.agent.Agent.enroll`:
Enroll, TPM2_ActivateCredential, ActivateCredential).  Several node ids per TPM keep the
fleet cheap to start; the verifier's work per attestation is the same as for M machines.
A node has at most one request in flight (as a real agent), so the window is at most M.
One attestation per node is made first as warm-up.

Per backend (results are named BACKEND.OP):
  grpc_floor_health_check  N grpc.health.v1 Health/Check calls on the same server (a
                trivial Python handler): what any unary RPC costs there
  challenge     N Challenge RPCs, round robin over the nodes, W futures in flight;
                median/p95 = latency of one call under that load, ops/s = N / wall time
  (evidence)    for each nonce, TPM2_Quote on that node's swtpm over the PCRs it asked
                for (values read once; they do not change): the nodes' work, NOT timed
  attest        N Attest RPCs over that evidence, same window; every response must be
                TRUST_STATUS_AFFIRMING (the run aborts otherwise, exit status 2)
  *_seq         the same, S calls one at a time (window 1): latency without queueing
  round_trip    ops/s = 1 / (1/challenge + 1/attest) (one Challenge + one Attest per
                attestation on one verifier process); median/p95 = challenge_seq + attest_seq
                latency of the same attestation
  inprocess.*   (unless --no-breakdown) the same work without gRPC: a Verifier and Store
                opened in this process on the server's database, called from one thread,
                and the store calls one by one (see `breakdown`); with `cpu_us_per_op`
Extra fields per op: server_cpu_us_per_op (the verifier process' CPU time / calls, from
/proc), client_cpu_us_per_op, server_core_busy_pct, and for PostgreSQL
postgres_cpu_us_per_op (every `postgres` process on the machine) and
postgres_connections_opened (pg_stat_database.sessions).  config.backends.B holds
`where_time_goes_us`; `--perf` adds the verifier's CPU by shared object (perf record),
`--py-spy PATH` its Python time under the GIL during the attest phase.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attestor.agent import Agent
from attestor.tpm import Tpm
from lightgate.config import AgentConfig
from lightgate.sim.boot import (
    GOOD_BOOT,
    fixture_path,
    golden_from_fixture,
    import_golden,
    measure_boot,
)
from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision, require_tools
from lightgate.wire import convert
from lightgate.wire.channel import Channel
from lightgate.wire.clients import AttestationClient
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc
from verifier.evidence.pcr_values import PcrValues
from verifier.store import Store

NAME = "attest_rpc"
DEFAULT_ITERATIONS = 4000
QUICK_ITERATIONS = 24
ATTEST = Path(h.REPO) / ".venv" / "bin" / "attest"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
PCR_SELECTION = list(range(24))
RPC_TIMEOUT = 60.0
BOOT_LOG = fixture_path(GOOD_BOOT).read_bytes()  # every bench node booted this
_PR_SET_PDEATHSIG = 1


# --- fleet ---------------------------------------------------------------------------


@dataclass
class TpmNode:
    """One swtpm and the node identities it carries (one ESAPI session, one thread)."""

    index: int
    swtpm: Swtpm
    tpm: Tpm
    nodes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Fleet:
    root: Path
    tpms: list[TpmNode]
    node_tpm: dict[str, TpmNode]
    nodes: list[str]

    def agent(self, node: str, address: str, stub: AttestationClient) -> Agent:
        owner = self.node_tpm[node]
        config = AgentConfig(
            node_id=node,
            verifier=address,
            tcti=owner.swtpm.tcti,
            state_dir=self.root / "agents" / node,  # the AK is kept across backends
            ak_algorithm="ecc",
            rpc_timeout_seconds=RPC_TIMEOUT,
            event_log=fixture_path(GOOD_BOOT),
        )
        return Agent(config, owner.tpm, stub)


def start_fleet(root: Path, tpms: int, nodes: int, stack: contextlib.ExitStack) -> Fleet:
    require_tools()
    ca = SimulatorCA(root / "ca")
    dirs = [root / "tpm" / f"tpm-{i:02d}" for i in range(tpms)]
    provision(dirs[0], ca)  # the first provisioning creates the CA
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda d: provision(d, ca), dirs[1:]))
    ca.export_trust(root / "trust")
    members = []
    for i, state_dir in enumerate(dirs):
        swtpm = stack.enter_context(Swtpm(state_dir).start())
        tpm = stack.enter_context(Tpm(swtpm.tcti))
        measure_boot(tpm, BOOT_LOG)  # the PCRs of a real boot, so log and quote agree
        members.append(TpmNode(i, swtpm, tpm))
    names = [f"bench-node-{i:03d}" for i in range(nodes)]
    owner = {}
    for i, name in enumerate(names):
        member = members[i % tpms]
        member.nodes.append(name)
        owner[name] = member
    return Fleet(root, members, owner, names)


def per_tpm(fleet: Fleet, work: Callable[[TpmNode], Any]) -> list[Any]:
    """Run `work` once per TPM, in parallel (one thread per ESAPI session)."""
    with ThreadPoolExecutor(max_workers=len(fleet.tpms), thread_name_prefix="tpm") as pool:
        return list(pool.map(work, fleet.tpms))


# --- verifier process ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_preexec(cpu: int) -> Callable[[], None]:
    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # never outlive the benchmark

    return preexec


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: str
    log_path: Path

    def tail(self, lines: int = 8) -> str:
        if not self.log_path.exists():
            return ""
        return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_server(
    workdir: Path, database_url: str, trust: Path, cpu: int, log_level: str, workers: int | None
) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"state_dir: {workdir / 'state'}",
        f"database_url: {database_url}",
        "enrollment:",
        "  mode: ek-chain",
        f"  trust_store: {trust}",
        "attestation:",
        "  nonce_ttl_seconds: 900",
        f"  pcr_selection: {{sha256: {PCR_SELECTION}}}",
        # Only the agents' API: no fixed ports that two runs could fight over.
        "admin: {listen: null}",
        "results: {https_listen: null}",
    ]
    if workers is not None:
        lines.append(f"workers: {workers}")
    config = workdir / "verifier.yaml"
    config.write_text("\n".join(lines) + "\n")
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    store = Store.open(database_url)  # golden values learned from the fleet's boot
    try:
        import_golden(store, golden_from_fixture(GOOD_BOOT))
    finally:
        store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTGATE_")}
    log_path = workdir / "verifier.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(ATTEST), "verifier", "serve", "--config", str(config), "--log-level", log_level],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us; we stop it
            preexec_fn=_server_preexec(cpu),  # noqa: PLW1509 - affinity and prctl only
        )
    server = Server(process, f"127.0.0.1:{port}", log_path)
    try:
        wait_serving(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_serving(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"verifier exited with {server.process.returncode}: {server.tail()}"
                )
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"verifier not SERVING after {timeout:.0f} s: {server.tail()}")


# --- databases -----------------------------------------------------------------------


def postgres_reason() -> str | None:
    """None when PostgreSQL takes connections, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means: skip PostgreSQL
        return f"PostgreSQL unreachable at 127.0.0.1:5432: {str(exc).strip().splitlines()[0]}"
    return None


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"lightgate_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(db=name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_cpu_seconds() -> float:
    """CPU time of the PostgreSQL server on this machine: every live `postgres` process,
    plus the postmaster's reaped children (backends of connections already closed)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                head, _, tail = handle.read().rpartition(")")
            if head.split("(", 1)[1] == "postgres":
                stats[int(entry)] = tail.split()
        except (OSError, IndexError):
            continue
    total = 0
    for fields in stats.values():
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if int(fields[1]) not in stats:  # the postmaster: add cutime, cstime
            total += int(fields[13]) + int(fields[14])
    return total / ticks


def postgres_sessions(database: str) -> int | None:
    """pg_stat_database.sessions: connections ever opened to `database`."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            row = connection.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone()
    except psycopg.Error:
        return None
    return None if row is None or row[0] is None else int(row[0])


# --- load generation -----------------------------------------------------------------


@dataclass
class Phase:
    """One timed phase: per-call latencies, wall time, CPU of both sides."""

    latencies_ns: list[int]
    wall_ns: int
    responses: list[Any]
    errors: list[str]
    server_cpu_s: float
    client_cpu_s: float
    postgres_cpu_s: float | None
    cores: dict[str, dict[str, float | None]]
    postgres_sessions: int | None = None

    def stats(self, sequential: bool = False) -> h.Stats:
        n = len(self.latencies_ns)
        extra: dict[str, Any] = {
            "server_cpu_us_per_op": round(self.server_cpu_s / n * 1e6, 1),
            "client_cpu_us_per_op": round(self.client_cpu_s / n * 1e6, 1),
            "server_core_busy_pct": round(100 * self.server_cpu_s / (self.wall_ns / 1e9), 1),
            "cores_busy_pct": {k: v["busy_pct"] for k, v in self.cores.items()},
        }
        if self.postgres_cpu_s is not None:
            extra["postgres_cpu_us_per_op"] = round(self.postgres_cpu_s / n * 1e6, 1)
        if self.postgres_sessions is not None:
            extra["postgres_connections_opened"] = self.postgres_sessions
        return h.stats(self.latencies_ns, None if sequential else self.wall_ns, **extra)


class Meter:
    """CPU accounting around a phase."""

    def __init__(self, server_pid: int, postgres_database: str | None) -> None:
        self.server_pid = server_pid
        self.database = postgres_database
        self.postgres = postgres_database is not None

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, Any]]:
        out: dict[str, Any] = {}
        server0 = h.process_cpu_seconds(self.server_pid)
        client0 = time.process_time()
        sessions0 = postgres_sessions(self.database) if self.database else None
        pg0 = postgres_cpu_seconds() if self.postgres else 0.0
        cores0 = h.cpu_times()
        start = time.perf_counter_ns()
        yield out
        out["wall_ns"] = time.perf_counter_ns() - start
        out["cores"] = h.cpu_util(cores0, h.cpu_times())
        out["server_cpu_s"] = h.process_cpu_seconds(self.server_pid) - server0
        out["client_cpu_s"] = time.process_time() - client0
        out["postgres_cpu_s"] = postgres_cpu_seconds() - pg0 if self.postgres else None
        if self.database and sessions0 is not None:
            time.sleep(0.6)  # backends publish their statistics at most every 0.5 s
            sessions1 = postgres_sessions(self.database)
            if sessions1 is not None:
                out["postgres_sessions"] = sessions1 - sessions0


def windowed(
    method: Any, requests: Sequence[Any], window: int, meter: Meter, *, timeout: float
) -> Phase:
    """Send every request with at most `window` in flight, oldest first.

    Requests are ordered round robin over the nodes and the in-flight calls are always
    consecutive ones, so with window <= nodes no node has two calls in flight."""
    n = len(requests)
    starts = [0] * n
    ends = [0] * n
    responses: list[Any] = [None] * n
    errors: list[str] = []
    clock = time.perf_counter_ns
    inflight: collections.deque[tuple[int, Any]] = collections.deque()

    def finish() -> None:
        index, future = inflight.popleft()
        try:
            responses[index] = future.result()
        except grpc.RpcError as exc:
            errors.append(f"#{index}: {exc.code().name}: {exc.details()}")
        if not ends[index]:
            ends[index] = clock()

    def done(index: int) -> Callable[[Any], None]:
        def callback(_: Any) -> None:
            ends[index] = clock()

        return callback

    with meter.measure() as measured:
        for index, request in enumerate(requests):
            if len(inflight) >= window:
                finish()
            starts[index] = clock()
            future = method.future(request, timeout=timeout)
            future.add_done_callback(done(index))
            inflight.append((index, future))
        while inflight:
            finish()
    latencies = [e - s for s, e in zip(starts, ends, strict=True)]
    return _phase(latencies, responses, errors, measured)


def _phase(
    latencies: list[int], responses: list[Any], errors: list[str], measured: dict[str, Any]
) -> Phase:
    return Phase(
        latencies,
        measured["wall_ns"],
        responses,
        errors,
        measured["server_cpu_s"],
        measured["client_cpu_s"],
        measured["postgres_cpu_s"],
        measured["cores"],
        measured.get("postgres_sessions"),
    )


def sequential(method: Any, requests: Sequence[Any], meter: Meter, *, timeout: float) -> Phase:
    latencies = []
    responses = []
    errors = []
    clock = time.perf_counter_ns
    with meter.measure() as measured:
        for index, request in enumerate(requests):
            start = clock()
            try:
                responses.append(method(request, timeout=timeout))
            except grpc.RpcError as exc:
                responses.append(None)
                errors.append(f"#{index}: {exc.code().name}: {exc.details()}")
            latencies.append(clock() - start)
    return _phase(latencies, responses, errors, measured)


def challenge_requests(fleet: Fleet, count: int) -> list[pb.ChallengeRequest]:
    nodes = fleet.nodes
    return [pb.ChallengeRequest(node_id=nodes[i % len(nodes)]) for i in range(count)]


def make_evidence(
    fleet: Fleet,
    agents: dict[str, Agent],
    challenges: Sequence[pb.ChallengeRequest],
    answers: Sequence[pb.ChallengeResponse],
) -> list[pb.AttestRequest]:
    """A real quote per nonce, by the node's own AK on its TPM (not timed: the nodes'
    work).  PCR values are read once per TPM; a node's quotes are made in the order of
    its nonces, so its TPM clock only moves forward from one attestation to the next."""
    out: list[pb.AttestRequest | None] = [None] * len(challenges)
    by_node: dict[str, list[int]] = collections.defaultdict(list)
    for index, request in enumerate(challenges):
        by_node[request.node_id].append(index)

    def work(member: TpmNode) -> None:
        values: dict[Any, list[pb.PcrBankValues]] = {}
        for node in member.nodes:
            agent = agents[node]
            for index in by_node.get(node, []):
                answer = answers[index]
                selection = convert.selection_from_wire(list(answer.pcr_selection))
                if selection not in values:
                    pcrs = member.tpm.read_pcrs(selection)
                    values[selection] = convert.pcr_values_to_wire(PcrValues(pcrs))
                message, signature = member.tpm.quote(agent.ak, selection, answer.nonce)
                out[index] = pb.AttestRequest(
                    node_id=node,
                    quote_message=message,
                    quote_signature=signature,
                    pcr_values=values[selection],
                    event_log=BOOT_LOG,
                )

    per_tpm(fleet, work)
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def affirming_failures(phase: Phase) -> list[str]:
    problems = list(phase.errors)
    for index, response in enumerate(phase.responses):
        if response is not None and response.status != pb.TRUST_STATUS_AFFIRMING:
            status = convert.STATUS_FROM_WIRE.get(response.status, str(response.status))
            problems.append(f"#{index}: {status}: {response.reason}")
    return problems


class BenchmarkFailure(RuntimeError):
    pass


def require_clean(what: str, problems: list[str], server: Server) -> None:
    if problems:
        shown = "; ".join(problems[:5])
        raise BenchmarkFailure(
            f"{what}: {len(problems)} call(s) failed or were not affirming: {shown}"
            f" (verifier log: {server.tail(3)})"
        )


# --- profiling -----------------------------------------------------------------------


SUBSYSTEMS = (  # first match on the sampled stack, innermost frame first
    ("logging", ("logging/__init__", "lightgate/logs.py", "json/encoder")),
    ("store: sqlalchemy", ("sqlalchemy/",)),
    ("store: sqlite3", ("sqlite3",)),
    ("store: psycopg", ("psycopg",)),
    ("store: lightgate", ("verifier/store/",)),
    ("quote checks", ("verifier/evidence/",)),
    ("cryptography", ("cryptography/",)),
    ("wire conversion", ("lightgate/wire/", "protobuf")),
    ("verifier service", ("verifier/service.py",)),
    ("gRPC servicer", ("verifier/api/",)),
    ("gRPC runtime", ("grpc/",)),
    ("threads / idle", ("threading.py", "concurrent/futures")),
)


@dataclass
class PySpy:
    binary: Path
    process: subprocess.Popen[bytes] | None = None
    output: Path | None = None

    def start(self, pid: int, output: Path) -> None:
        self.output = output
        self.process = subprocess.Popen(
            [str(self.binary), "record", "--pid", str(pid), "--format", "raw",
             "--output", str(output), "--rate", "250", "--nonblocking", "--gil"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # attach before the phase starts

    def stop(self) -> dict[str, Any]:
        if self.process is None or self.output is None:
            return {}
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self.output.exists():
            return {"error": "py-spy wrote no profile"}
        return summarize_collapsed(self.output.read_text(errors="replace"))


def summarize_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Busy samples of the server by subsystem (innermost matching frame wins) and the
    functions with the most inclusive samples.  Idle worker threads are left out."""
    busy: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        innermost = frames[-1]
        if any(idle in innermost for idle in ("wait (threading", "_worker (concurrent", "poll")):
            continue
        if "(threading.py" in innermost and "wait" in innermost:
            continue
        count = int(count_text)
        total += count
        label = "other"
        for frame in reversed(frames):
            hit = next((name for name, keys in SUBSYSTEMS if any(k in frame for k in keys)), None)
            if hit:
                label = hit
                break
        busy[label] += count
        for frame in set(frames):
            if "(" in frame:
                inclusive[frame] += count
    if not total:
        return {"busy_samples": 0}
    return {
        "busy_samples": total,
        "by_subsystem_pct": {k: round(100 * v / total, 1) for k, v in busy.most_common()},
        "top_inclusive_pct": {k: round(100 * v / total, 1) for k, v in inclusive.most_common(top)},
    }


@dataclass
class Perf:
    """`perf record -e cpu-clock` on the verifier during a phase: where its CPU time goes
    by shared object (Python interpreter, gRPC core, SQLite, libpq, kernel, ...)."""

    process: subprocess.Popen[bytes] | None = None
    output: Path | None = None

    def start(self, pid: int, output: Path) -> None:
        self.output = output
        self.process = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "999", "-p", str(pid), "-o", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)

    def stop(self) -> dict[str, float] | dict[str, str]:
        if self.process is None or self.output is None:
            return {}
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        done = subprocess.run(
            ["perf", "report", "-i", str(self.output), "--stdio", "--sort", "dso",
             "--percent-limit", "0.5"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        shares: dict[str, float] = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith("%") and not line.startswith("#"):
                shares[" ".join(parts[1:])] = float(parts[0].rstrip("%"))
        return shares or {"error": (done.stderr or "no samples").strip()[:200]}


# --- in-process breakdown ------------------------------------------------------------


def breakdown(
    config_path: Path,
    fleet: Fleet,
    agents: dict[str, Agent],
    count: int,
    log_level: str,
    log_path: Path,
) -> dict[str, h.Stats]:
    """Where the verifier's time goes without gRPC: its own Verifier and Store, opened in
    this process on the same database as the server (nodes already enrolled), called
    from one thread on this (pinned) core, logging JSON lines to a file as the server does.

      challenge / attest       Verifier.challenge / pcr_values_from_wire + Verifier.attest
                               (what the servicer runs, minus protobuf and gRPC)
      store.*                  the store calls they make, one by one
      quote_checks             pcr_values_from_wire + Quote.parse + authenticate_quote +
                               verify_authenticated_quote, AK loaded beforehand (as cached)
      log_decision             one decision log line (JSON) to a file
    """
    from datetime import UTC, datetime, timedelta

    from lightgate import logs
    from lightgate.config import VerifierConfig, load_config
    from verifier.evidence.keys import AttestationKey
    from verifier.evidence.quote import (
        NonceRecord,
        Quote,
        QuoteExpectations,
        authenticate_quote,
        verify_authenticated_quote,
    )
    from verifier.server import load_trust_store
    from verifier.service import Verifier, _log_decision
    from verifier.store import AttestationRecord, Store

    config = load_config(VerifierConfig, config_path)
    with log_path.open("a") as log_stream:
        logs.configure(log_level, stream=log_stream)
        store = Store(config.database())
        try:
            verifier = Verifier(store, config, load_trust_store(config))
            out: dict[str, h.Stats] = {}
            requests = challenge_requests(fleet, count)
            nodes = [r.node_id for r in requests]
            answers: list[Any] = []

            def challenge(node: str) -> None:
                answers.append(verifier.challenge(node))

            out["challenge"] = h.measure(challenge, [(n,) for n in nodes], warmup=0)
            wire = [
                pb.ChallengeResponse(
                    nonce=a.nonce, pcr_selection=convert.selection_to_wire(a.pcr_selection)
                )
                for a in answers
            ]
            evidence = make_evidence(fleet, agents, requests, wire)
            statuses: list[str] = []

            def attest(request: pb.AttestRequest) -> None:
                values = convert.pcr_values_from_wire(list(request.pcr_values))
                outcome = verifier.attest(
                    request.node_id, request.quote_message, request.quote_signature, values,
                    peer="ipv4:127.0.0.1:1", event_log=request.event_log,
                )  # fmt: skip
                statuses.append(outcome.status)

            out["attest"] = h.measure(attest, [(e,) for e in evidence], warmup=0)
            bad = [s for s in statuses if s != "affirming"]
            if bad:
                raise BenchmarkFailure(f"in-process attest: {len(bad)} not affirming ({bad[0]})")

            # The store calls, one by one, with the arguments the verifier passes.
            out["store.get_node"] = h.measure(store.get_node, [(n,) for n in nodes])
            now = datetime.now(UTC)
            later = now + timedelta(seconds=config.attestation.nonce_ttl_seconds)
            records = []
            for e in evidence:
                node = store.get_node(e.node_id)
                assert node is not None and node.last_clock is not None
                record = AttestationRecord(
                    node_id=e.node_id,
                    received_at=datetime.now(UTC),
                    nonce=Quote.parse(e.quote_message, e.quote_signature).nonce,
                    quote_message=e.quote_message,
                    quote_signature=e.quote_signature,
                    pcr_values=convert.pcr_values_from_wire(list(e.pcr_values)).to_json(),
                    peer="ipv4:127.0.0.1:1",
                    status="affirming",
                    failed_checks=(),
                    reason=None,
                    clock=node.last_clock,  # unchanged: later quotes stay in order
                    rebooted=False,
                )
                records.append((record,))

            def transaction(record: AttestationRecord) -> None:
                # What Verifier.attest asks of the store: one transaction that reads the
                # node, spends the nonce and records evidence and result.
                nonce = NonceRecord(os.urandom(32), record.node_id, later, used=False)
                with store.attestation(record.node_id) as tx:
                    assert tx.node is not None
                    tx.spend_nonce(nonce, now, now)
                    tx.record(record)

            out["store.attestation_transaction"] = h.measure(transaction, records, warmup=0)

            # The pure checks on the same evidence (nonce record as the store returns it).
            node_records = {n: store.get_node(n) for n in set(nodes)}
            selection = config.attestation.selection()
            aks = {  # the verifier caches loaded AKs the same way
                n: AttestationKey.from_bytes(r.ak_public)
                for n, r in node_records.items()
                if r is not None and r.ak_public is not None
            }

            def checks(request: pb.AttestRequest) -> None:
                node = node_records[request.node_id]
                assert node is not None
                quote = Quote.parse(request.quote_message, request.quote_signature)
                ak = aks[node.node_id]
                record = NonceRecord(quote.nonce, node.node_id, later, False)
                expect = QuoteExpectations(node.node_id, record, selection, None, datetime.now(UTC))
                verify_authenticated_quote(
                    authenticate_quote(ak, quote, node.node_id),
                    convert.pcr_values_from_wire(list(request.pcr_values)),
                    expect,
                )

            out["quote_checks"] = h.measure(checks, [(e,) for e in evidence])
            out["log_decision"] = h.measure(_log_decision, [("attestation", n) for n in nodes])
            return out
        finally:
            store.close()
            logs.configure("CRITICAL")


def where_time_goes(results: dict[str, h.Stats]) -> dict[str, dict[str, float]]:
    """Per RPC: the verifier process' CPU time in the windowed run against the CPU time of
    the same work called in-process (one thread); the rest is gRPC, protobuf and the
    thread pool.  `in_process_wall` adds what the work waits for (PostgreSQL)."""
    cpu = {op: r.get("cpu_us_per_op", r["median_us"]) for op, r in results.items()}
    store_ops = {
        "attest": ("attestation_transaction",),
        "challenge": (),  # nonces are minted, not stored; enrolled nodes are cached
    }
    out = {}
    for rpc, ops in store_ops.items():
        server_cpu = results[rpc]["server_cpu_us_per_op"]
        service = cpu[f"inprocess.{rpc}"]
        row = {
            "server_cpu_per_rpc": server_cpu,
            "in_process_cpu": service,
            "of_which_store": round(sum(cpu[f"inprocess.store.{op}"] for op in ops), 1),
        }
        if rpc == "attest":
            row["of_which_quote_checks"] = cpu["inprocess.quote_checks"]
            row["of_which_log_decision"] = cpu["inprocess.log_decision"]
        row["grpc_protobuf_threads"] = round(server_cpu - service, 1)
        row["grpc_floor_health_check"] = results["grpc_floor_health_check"]["server_cpu_us_per_op"]
        row["in_process_wall"] = results[f"inprocess.{rpc}"]["mean_us"]
        out[rpc] = row
    return out


# --- one backend ---------------------------------------------------------------------


def run_backend(
    backend: str,
    database_url: str,
    fleet: Fleet,
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
) -> tuple[dict[str, h.Stats], dict[str, Any]]:
    root = fleet.root / backend
    h.progress(f"[{backend}] starting the verifier on core {args.server_cpu}")
    server = start_server(
        root,
        database_url,
        fleet.root / "trust",
        args.server_cpu,
        args.server_log_level,
        args.server_workers,
    )
    stack.callback(server.stop)
    channel = stack.enter_context(
        grpc.insecure_channel(
            server.address, options=[("grpc.max_receive_message_length", 1 << 22)]
        )
    )
    stub = pb_grpc.AttestationStub(channel)
    # The agents enroll over their own transport, one channel per swtpm (enrollment
    # runs a thread per swtpm); the measured load below goes through grpcio's stub.
    agent_channels = {
        id(member): stack.enter_context(Channel(server.address)) for member in fleet.tpms
    }
    agents = {
        node: fleet.agent(
            node, server.address, AttestationClient(agent_channels[id(fleet.node_tpm[node])])
        )
        for node in fleet.nodes
    }

    h.progress(f"[{backend}] enrolling {len(fleet.nodes)} nodes on {len(fleet.tpms)} swtpms")
    started = time.monotonic()

    def enroll(member: TpmNode) -> None:
        for node in member.nodes:
            agents[node].enroll()

    per_tpm(fleet, enroll)
    enroll_seconds = round(time.monotonic() - started, 1)

    meter = Meter(
        server.process.pid,
        database_url.rsplit("/", 1)[1] if backend == "postgresql" else None,
    )
    # Warm-up: one attestation per node (AK cache, connection pool, code paths).
    warm = challenge_requests(fleet, len(fleet.nodes) * 2)
    warm_answers = windowed(stub.Challenge, warm, args.window, meter, timeout=RPC_TIMEOUT)
    require_clean("warm-up Challenge", warm_answers.errors, server)
    warm_attest = windowed(
        stub.Attest,
        make_evidence(fleet, agents, warm, warm_answers.responses),
        args.window,
        meter,
        timeout=RPC_TIMEOUT,
    )
    require_clean("warm-up Attest", affirming_failures(warm_attest), server)

    # The gRPC floor: grpc.health.v1 Health/Check, a trivial handler on the same server.
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service="")
    h.progress(f"[{backend}] grpc floor: {args.iterations} Health/Check calls")
    floor = windowed(health.Check, [check] * args.iterations, args.window, meter, timeout=30)
    require_clean("Health/Check", floor.errors, server)

    profiler = PySpy(Path(args.py_spy)) if args.py_spy else None
    perf = Perf() if args.perf else None
    cpu_by_dso: dict[str, Any] = {}
    n = args.iterations
    h.progress(f"[{backend}] challenge: {n} calls, window {args.window}")
    requests = challenge_requests(fleet, n)
    if perf:
        perf.start(server.process.pid, root / "challenge.perf")
    challenge = windowed(stub.Challenge, requests, args.window, meter, timeout=RPC_TIMEOUT)
    if perf:
        cpu_by_dso["challenge"] = perf.stop()
    require_clean("Challenge", challenge.errors, server)
    h.progress(f"[{backend}] making {n} quotes on the swtpms (not timed)")
    evidence = make_evidence(fleet, agents, requests, challenge.responses)
    h.progress(f"[{backend}] attest: {n} calls, window {args.window}")
    if profiler:
        profiler.start(server.process.pid, root / "attest.pyspy")
    if perf:
        perf.start(server.process.pid, root / "attest.perf")
    attest = windowed(stub.Attest, evidence, args.window, meter, timeout=RPC_TIMEOUT)
    if perf:
        cpu_by_dso["attest"] = perf.stop()
    profile = profiler.stop() if profiler else None
    if profiler and args.py_spy_out and (root / "attest.pyspy").exists():
        Path(args.py_spy_out).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "attest.pyspy", Path(args.py_spy_out) / f"attest-{backend}.txt")
    require_clean("Attest", affirming_failures(attest), server)

    s = args.sequential
    h.progress(f"[{backend}] sequential: {s} challenges, then {s} attests")
    seq_requests = challenge_requests(fleet, s)
    challenge_seq = sequential(stub.Challenge, seq_requests, meter, timeout=RPC_TIMEOUT)
    require_clean("Challenge (sequential)", challenge_seq.errors, server)
    seq_evidence = make_evidence(fleet, agents, seq_requests, challenge_seq.responses)
    attest_seq = sequential(stub.Attest, seq_evidence, meter, timeout=RPC_TIMEOUT)
    require_clean("Attest (sequential)", affirming_failures(attest_seq), server)

    results = {
        "grpc_floor_health_check": floor.stats(),
        "challenge": challenge.stats(),
        "attest": attest.stats(),
        "challenge_seq": challenge_seq.stats(sequential=True),
        "attest_seq": attest_seq.stats(sequential=True),
    }
    c_ops, a_ops = results["challenge"]["ops_per_s"], results["attest"]["ops_per_s"]
    pairs = [
        c + a for c, a in zip(challenge_seq.latencies_ns, attest_seq.latencies_ns, strict=True)
    ]
    round_trip = h.stats(pairs)
    round_trip["ops_per_s"] = round(1 / (1 / c_ops + 1 / a_ops), 1)
    round_trip["server_cpu_us_per_op"] = round(
        results["challenge"]["server_cpu_us_per_op"] + results["attest"]["server_cpu_us_per_op"],
        1,
    )
    round_trip["latency_from"] = "challenge_seq + attest_seq (window 1)"
    round_trip["ops_per_s_from"] = "1 / (1/challenge + 1/attest) (windowed)"
    results["round_trip"] = round_trip

    info_extra: dict[str, Any] = {}
    if args.breakdown:
        b = min(args.iterations, args.breakdown_iterations)
        h.progress(f"[{backend}] in-process breakdown: {b} calls per op on core {args.cpu}")
        for op, value in breakdown(
            root / "verifier.yaml", fleet, agents, b, args.server_log_level,
            root / "inprocess.log",
        ).items():  # fmt: skip
            results[f"inprocess.{op}"] = value
        info_extra["where_time_goes_us"] = where_time_goes(results)

    server.stop()
    info: dict[str, Any] = {
        "database": database_url if backend == "sqlite" else database_url.rsplit("/", 1)[0],
        "enroll_seconds": enroll_seconds,
        "server_log_lines": sum(1 for _ in server.log_path.open("rb")),
    }
    if profile is not None:
        info["attest_profile"] = profile
    if cpu_by_dso:
        info["server_cpu_by_dso_pct"] = cpu_by_dso
    info.update(info_extra)
    return results, info


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    h.common_arguments(parser, default_iterations=DEFAULT_ITERATIONS)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--tpms", type=int, default=None, help="swtpm processes (default 4)")
    parser.add_argument("--nodes", type=int, default=None, help="node identities (default 32)")
    parser.add_argument("--window", type=int, default=None, help="calls in flight (default 32)")
    parser.add_argument(
        "--sequential", type=int, default=None, help="window-1 calls per RPC (default 500)"
    )
    parser.add_argument(
        "--server-cpu", type=int, default=None, help="core of the verifier (default: first)"
    )
    parser.add_argument("--server-log-level", default="INFO", help="the verifier's --log-level")
    parser.add_argument(
        "--server-workers", type=int, default=None, help="verifier `workers` (default: its own)"
    )
    parser.add_argument("--py-spy", default=None, help="py-spy binary: profile the attest phase")
    parser.add_argument(
        "--perf", action="store_true", help="perf record the verifier's CPU by shared object"
    )
    parser.add_argument(
        "--py-spy-out", default=None, help="folder to keep the collapsed py-spy stacks in"
    )
    parser.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="skip the in-process breakdown (Verifier and Store called without gRPC)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="accepted; no baseline here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.iterations = args.iterations or (QUICK_ITERATIONS if quick else DEFAULT_ITERATIONS)
    args.tpms = args.tpms or (2 if quick else 4)
    args.nodes = args.nodes or (4 if quick else 32)
    args.window = args.window or (4 if quick else 32)
    args.sequential = args.sequential or (8 if quick else 500)
    args.breakdown_iterations = 8 if quick else 1000
    allowed = sorted(os.sched_getaffinity(0))
    if args.server_cpu is None:
        args.server_cpu = allowed[0]
    if args.cpu is None:  # the client: another core when there is one
        others = [c for c in allowed if c != args.server_cpu]
        args.cpu = others[0] if others else args.server_cpu
    if min(args.iterations, args.tpms, args.nodes, args.window, args.sequential) < 1:
        parser.error("counts must be positive")
    args.tpms = min(args.tpms, args.nodes)
    if args.perf and shutil.which("perf") is None:
        parser.error("--perf needs perf (apt-get install linux-perf)")
    if args.py_spy and not Path(args.py_spy).exists():
        parser.error(f"--py-spy: {args.py_spy} not found (pip install py-spy --target DIR)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    if args.window > args.nodes:
        notes.append(f"window {args.window} capped to {args.nodes} (one call per node in flight)")
        args.window = args.nodes
    if args.cpu == args.server_cpu:
        notes.append("client and verifier share one core: figures include the client's work")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    skipped: dict[str, str] = {}
    if "postgresql" in backends:
        reason = postgres_reason()
        if reason:
            skipped["postgresql"] = reason
            backends.remove("postgresql")
            notes.append(f"postgresql skipped: {reason}")
            h.progress(f"postgresql skipped: {reason}")

    results: dict[str, h.Stats] = {}
    backend_info: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="lightgate-bench-rpc-"))
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with contextlib.ExitStack() as stack:
            h.progress(f"provisioning {args.tpms} swtpms, {args.nodes} nodes")
            started = time.monotonic()
            fleet = start_fleet(root, args.tpms, args.nodes, stack)
            fleet_seconds = round(time.monotonic() - started, 1)
            # swtpms were started unpinned; from here on this process is the client.
            h.pin(args.cpu)
            for backend in backends:
                with contextlib.ExitStack() as per_backend:
                    if backend == "postgresql":
                        url = per_backend.enter_context(postgres_database())
                    else:
                        url = f"sqlite:///{root / 'sqlite' / 'state' / 'verifier.db'}"
                    ops, info = run_backend(backend, url, fleet, args, per_backend)
                for op, value in ops.items():
                    results[f"{backend}.{op}"] = value
                backend_info[backend] = info
                rt = ops["round_trip"]
                h.progress(
                    f"[{backend}] round trips {rt['ops_per_s']:,.0f}/s "
                    f"(challenge {ops['challenge']['ops_per_s']:,.0f}/s, "
                    f"attest {ops['attest']['ops_per_s']:,.0f}/s)"
                )
    except BenchmarkFailure as exc:
        h.progress(f"ABORTED: {exc}")
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(root, ignore_errors=True)

    notes.append(
        f"verifier pinned to core {args.server_cpu}, client to core {args.cpu}; "
        f"{args.iterations} calls per windowed phase (window {args.window}), "
        f"{args.sequential} per sequential phase; {args.nodes} nodes on {args.tpms} swtpms"
    )
    notes.append(
        "windowed median/p95 = latency under load; round_trip ops/s = 1/(1/challenge + "
        "1/attest), its median/p95 = challenge_seq + attest_seq"
    )
    notes.append("aim: >= 1,000 round trips/s on one verifier process")
    for backend, info in backend_info.items():
        for rpc, w in info.get("where_time_goes_us", {}).items():
            parts = ", ".join(
                f"{k.removeprefix('of_which_')} {v:,.0f}"
                for k, v in w.items()
                if k.startswith("of_which_")
            )
            notes.append(
                f"{backend} {rpc}: verifier CPU {w['server_cpu_per_rpc']:,.0f} µs/RPC = "
                f"in-process CPU {w['in_process_cpu']:,.0f} ({parts}) + gRPC/protobuf/"
                f"threads {w['grpc_protobuf_threads']:,.0f} (a Health/Check costs "
                f"{w['grpc_floor_health_check']:,.0f}); in-process wall (mean) "
                f"{w['in_process_wall']:,.0f} µs"
            )
        for phase, shares in info.get("server_cpu_by_dso_pct", {}).items():
            top = ", ".join(f"{k} {v:.0f}%" for k, v in list(shares.items())[:6])
            notes.append(f"{backend} {phase} verifier CPU by object (perf): {top}")
        by_subsystem = info.get("attest_profile", {}).get("by_subsystem_pct", {})
        if by_subsystem:
            top = ", ".join(f"{k} {v}%" for k, v in by_subsystem.items())
            notes.append(f"{backend} attest, Python under the GIL (py-spy): {top}")
    document = h.report(
        NAME,
        h.machine_info(
            client_cpu=args.cpu,
            server_cpu=args.server_cpu,
            swtpm=h.tool_version(["swtpm", "--version"]),
        ),
        results,
        {},
        {},
        config={
            "iterations": args.iterations,
            "sequential": args.sequential,
            "window": args.window,
            "tpms": args.tpms,
            "nodes": args.nodes,
            "ak": "ecc (P-256, ECDSA-SHA256)",
            "pcr_selection": {"sha256": PCR_SELECTION},
            "server_log_level": args.server_log_level,
            "server_workers": args.server_workers or "verifier default",
            "fleet_seconds": fleet_seconds,
            "backends": backend_info,
            "skipped": skipped,
        },
        baseline_info={"status": "none: no incumbent baseline for this benchmark"},
        notes=notes,
    )
    h.emit(document, args.json, notes)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        h.progress("interrupted; everything started was stopped and removed")
        sys.exit(130)

"""Appraisal on one pinned core, in process: from received evidence to a stored, signed
result (`Verifier.attest`), warm and cold, and its parts (Rego policy, EAR sign/verify),
beside Keylime 7.14.3's full attestation on the same boot log in the same run.

    .venv/bin/python benchmarks/appraisal.py [--json] [--iterations N] [--quick] [--cpu K]
        [--postgres] [--keylime | --no-baseline] [--keylime-iterations M] [--profile]

Setup (not timed): a private simulator CA and a swtpm per backend, the fixture boot
`firmware-fixtures/good.bin` replayed into its PCRs (`measure_boot`); a `Verifier` over a
fresh SQLite file (and with `--postgres` a second one over a PostgreSQL database created
for the run on 127.0.0.1:5432 and dropped after); the fixture's golden values imported and
`references.refresh()`ed; the real agent (`attestor.agent.Agent`, ECC AK) enrolled through
a gRPC server over that Verifier (EK chain to the CA, credential activation), the server
then stopped; the node tagged by an operator (`Operators.tag`, region=eu-west dc=bench1)
and a `location.sites` rule mapping 127.0.0.0/8 to site bench1 with the same attributes,
so the attested tag, the observed site and the assigned tag all agree.  Then every quote
is made BEFORE timing: `Verifier.challenge` -> `Agent.collect` (quote over the nonce,
boot log, runtime log with the measured tag) -> `pcr_values_from_wire`, one per call.

Operations (results; one attestation or one part per call):
  attest_warm           Verifier.attest(node, message, signature, pcr_values, peer,
                        event_log, runtime_log): the same boot log and tag every time, so
                        parse/replay/claims come from the BootAppraiser's caches and the
                        policy decision from the memo; quote checks, nonce spend, location,
                        EAR signing and the store transaction run every time
  attest_cold           the same with nothing reused: before each call (not timed) a fresh
                        BootAppraiser replaces the verifier's and the decision memo is
                        cleared, so each call parses, replays, extracts claims, evaluates
                        the Rego policy (regorus) and signs.  Kept: the loaded AK (the
                        verifier caches it for good), the compiled regorus Engine, the
                        references snapshot (re-read from the store every 5 s)
  postgresql.attest_*   the same on PostgreSQL (--postgres)
  boot_appraise_cold    BootAppraiser.appraise on a fresh appraiser: parse + replay +
                        verify against the quoted PCRs + claims + golden values
  boot_appraise_warm    the same on a warm appraiser (cache hits)
  policy_eval_cold      EmbeddedEngine.evaluate(input) on the input the verifier built
                        for this node (claims, golden outcome, location, ...)
  policy_eval_memoised  appraisal.decide(memo, input, boot, site) with the decision
                        memoised: the input digest (canonical JSON + SHA-256) and a hit
  ear_sign / ear_verify           sign_result / verify_result (EAR JWT, ES256)
  ear_sign_cose / ear_verify_cose sign_result_cose / verify_result_cose (COSE_Sign1)
Each op reports median, nearest-rank p95 and ops/s = n / total; attest_* also the CPU
time of this thread per call (less than the wall time on PostgreSQL, which waits).

Baseline (default when /tmp/klvenv exists; `--keylime` builds it with
../shared/anchors/keylime/setup.sh when missing; skipped by --quick and --no-baseline):
../shared/anchors/keylime/bench.py run by /tmp/klvenv/bin/python on the same core with
`--log firmware-fixtures/good.bin --skip-e`: its own swtpm replays the same log, one
fresh quote per nonce, refstate from `keylime-policy create measured-boot`.  baseline =
its full_attestation (Tpm().check_quote: quote + log parse via tpm2_eventlog + PCR
comparison + measured-boot policy), quote_verify, bootlog_parse, policy_evaluate.
ratio.attest_cold / ratio.attest_warm = Keylime full_attestation / ours;
ratio.policy_eval_cold = Keylime policy_evaluate / ours.  Keylime's figure stores and
signs nothing; ours includes the store transaction and the signed EAR.

Aims (issue 5; printed, never asserted): attest_warm <= 0.5 ms, attest_cold <= 3 ms
median, >= 50x Keylime's full attestation.  `--profile` adds a cProfile of attest_warm
and attest_cold (on further quotes) to the JSON (`profile`) and the notes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import gc
import hashlib
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
import grpc

import verifier.appraiser as appraiser_module
from attestor.agent import Agent, open_channel
from attestor.tpm import Tpm
from lightgate.config import (
    AgentConfig,
    AttestationConfig,
    EnrollmentConfig,
    LocationConfig,
    ResultsConfig,
    SiteRule,
    VerifierConfig,
)
from lightgate.sim.boot import (
    GOOD_BOOT,
    fixture_path,
    golden_from_fixture,
    import_golden,
    measure_boot,
)
from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision, require_tools
from lightgate.wire import convert
from lightgate.wire.clients import AttestationClient
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc
from verifier.api.attestation import AttestationServicer
from verifier.appraisal import Appraisal, BootAppraisal, BootAppraiser, decide
from verifier.evidence.pcr_values import PcrValues
from verifier.operators import Operators
from verifier.policy import MemoisedEngine
from verifier.results import sign_result, sign_result_cose, verify_result, verify_result_cose
from verifier.server import load_trust_store
from verifier.service import Verifier, utc_now
from verifier.store import Store

NAME = "appraisal"
DEFAULT_ITERATIONS = 1000
QUICK_ITERATIONS = 8
DEFAULT_KEYLIME_ITERATIONS = 100
WARMUP = 3
PROFILE_WARM = 300
PROFILE_COLD = 100
BOOT_LOG_PATH = fixture_path(GOOD_BOOT)
PEER = "ipv4:127.0.0.1:40000"  # as gRPC's context.peer() gives it
SITE = "bench1"
TAG = {"region": "eu-west", "dc": SITE}
NONCE_TTL_SECONDS = 3600.0  # every quote is made before timing starts
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
ANCHOR = Path(h.REPO).parent / "shared" / "anchors" / "keylime"
KEYLIME_PYTHON = Path("/tmp/klvenv/bin/python")
KEYLIME_OPS = {  # bench.py result -> baseline op
    "d_full_attestation": "full_attestation",
    "a_quote_verify": "quote_verify",
    "b_bootlog_parse": "bootlog_parse",
    "c_policy_evaluate": "policy_evaluate",
}
RATIOS = {  # our op -> the Keylime op it is compared with
    "attest_cold": "full_attestation",
    "attest_warm": "full_attestation",
    "policy_eval_cold": "policy_evaluate",
}
AIM_MEDIAN_US = {"attest_warm": 500.0, "attest_cold": 3000.0}
AIM_RATIO = 50.0


class BenchmarkFailure(RuntimeError):
    pass


# --- evidence ------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One AttestRequest as the servicer hands it to Verifier.attest."""

    node_id: str
    message: bytes
    signature: bytes
    pcr_values: PcrValues
    event_log: bytes
    runtime_log: bytes


@dataclass
class Backend:
    """One database, its Verifier, the enrolled node and its agent."""

    name: str
    url: str
    store: Store
    verifier: Verifier
    config: VerifierConfig
    agent: Agent
    node: str
    outcomes: list[Any] = field(default_factory=list)

    def attest(self, evidence: Evidence) -> None:
        outcome = self.verifier.attest(
            evidence.node_id,
            evidence.message,
            evidence.signature,
            evidence.pcr_values,
            peer=PEER,
            event_log=evidence.event_log,
            runtime_log=evidence.runtime_log,
        )
        self.outcomes.append(outcome)

    def fresh_caches(self) -> None:
        """Nothing the next attestation could reuse: parsed logs, claims, golden
        outcomes, verified tags, runtime-log verdicts and the decision memo forgotten."""
        self.verifier.forget_cached()

    def evidence(self, count: int) -> list[Evidence]:
        """`count` quotes, each over its own fresh nonce (the node's work, not timed)."""
        out = []
        for _ in range(count):
            challenge = self.verifier.challenge(self.node)
            wire = pb.ChallengeResponse(
                nonce=challenge.nonce,
                pcr_selection=convert.selection_to_wire(challenge.pcr_selection),
                asset_tag=challenge.asset_tag,
            )
            request = self.agent.collect(wire)
            out.append(
                Evidence(
                    request.node_id,
                    request.quote_message,
                    request.quote_signature,
                    convert.pcr_values_from_wire(list(request.pcr_values)),
                    request.event_log,
                    request.runtime_log,
                )
            )
        return out


def new_appraiser(config: VerifierConfig) -> BootAppraiser:
    """A BootAppraiser with empty caches, built as Verifier.__init__ builds it."""
    boot = config.measured_boot
    return BootAppraiser(
        require_event_log=boot.require_event_log,
        log_pcrs=frozenset(boot.log_pcrs),
        max_event_log_bytes=boot.max_event_log_bytes,
        cache_entries=boot.replay_cache_entries,
        cache_log_bytes=boot.replay_cache_bytes,
    )


def verifier_config(root: Path, url: str, trust: Path) -> VerifierConfig:
    return VerifierConfig(
        listen="127.0.0.1:0",
        state_dir=root,
        database_url=url,
        enrollment=EnrollmentConfig(mode="ek-chain", trust_store=trust),
        attestation=AttestationConfig(nonce_ttl_seconds=NONCE_TTL_SECONDS),
        location=LocationConfig(sites=[SiteRule(cidr="127.0.0.0/8", site=SITE, attributes=TAG)]),
        results=ResultsConfig(https_listen=None),
    )


def enroll(verifier: Verifier, agent_config: AgentConfig, tpm: Tpm) -> Agent:
    """The real agent's enrollment (Enroll, TPM2_ActivateCredential, ActivateCredential)
    through a gRPC server over this Verifier, stopped afterwards."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_AttestationServicer_to_server(AttestationServicer(verifier), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        config = dataclasses.replace(agent_config, verifier=f"127.0.0.1:{port}")
        with open_channel(config) as channel:
            agent = Agent(config, tpm, AttestationClient(channel))
            agent.enroll()
    finally:
        server.stop(0).wait()
    return agent


def open_backend(
    name: str, url: str, root: Path, ca: SimulatorCA, stack: contextlib.ExitStack
) -> Backend:
    """A swtpm that booted good.bin, a Verifier on `url`, the node enrolled and tagged."""
    tpm_dir = root / "tpm" / name
    provision(tpm_dir, ca)
    swtpm = stack.enter_context(Swtpm(tpm_dir).start())
    tpm = stack.enter_context(Tpm(swtpm.tcti))
    measure_boot(tpm, BOOT_LOG_PATH.read_bytes())
    config = verifier_config(root / "verifier" / name, url, root / "trust")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(url)
    stack.callback(store.close)
    verifier = Verifier(store, config, load_trust_store(config))
    import_golden(store, golden_from_fixture(GOOD_BOOT))
    verifier.references.refresh()
    node = f"bench-{name}"
    agent_config = AgentConfig(
        node_id=node,
        tcti=swtpm.tcti,
        state_dir=root / "agents" / node,
        ak_algorithm="ecc",
        event_log=BOOT_LOG_PATH,
    )
    agent = enroll(verifier, agent_config, tpm)
    Operators(store, config, verifier.references, utc_now).tag("benchmark", node, TAG)
    return Backend(name, url, store, verifier, config, agent, node)


def postgres_reason() -> str | None:
    try:
        import psycopg  # noqa: F401
        import sqlalchemy

        engine = sqlalchemy.create_engine(PG_ADMIN, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means: no PostgreSQL
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL unreachable at 127.0.0.1:5432: {first}"
    return None


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A database created for this run, dropped after it."""
    import sqlalchemy

    name = f"lightgate_bench_appraisal_{os.getpid()}_{os.urandom(4).hex()}"
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(db=name)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# --- timing --------------------------------------------------------------------------


def time_each(
    fn: Callable[[Evidence], object],
    inputs: Sequence[Evidence],
    before: Callable[[], object] | None = None,
) -> h.Stats:
    """Per-call wall time of fn(x) for each x, `before()` run untimed ahead of every
    call; with this thread's CPU time per call.  GC on, a collection first."""
    gc.collect()
    clock = time.perf_counter_ns
    samples = []
    cpu_ns = 0
    for item in inputs:
        if before is not None:
            before()
        cpu0 = time.thread_time_ns()
        start = clock()
        fn(item)
        samples.append(clock() - start)
        cpu_ns += time.thread_time_ns() - cpu0
    return h.stats(samples, cpu_us_per_op=round(cpu_ns / len(samples) / 1000, 1))


def affirming_or_fail(backend: Backend, what: str) -> int:
    bad = [o for o in backend.outcomes if o.status != "affirming"]
    if bad:
        first = bad[0]
        raise BenchmarkFailure(
            f"{backend.name} {what}: {len(bad)} of {len(backend.outcomes)} not affirming "
            f"({first.status}: {first.failed_checks} {first.reason})"
        )
    count = len(backend.outcomes)
    backend.outcomes.clear()
    return count


@dataclass
class Captured:
    """What the verifier handed the policy for this node (from one attestation)."""

    engine: MemoisedEngine
    partial: dict[str, object]
    boot: BootAppraisal
    site: str | None


def capture_decide(backend: Backend, evidence: Evidence) -> Captured:
    """Attest once with `decide` observed, to get the exact policy input."""
    seen: list[Captured] = []

    def spy(
        engine: MemoisedEngine, partial: dict[str, object], boot: BootAppraisal, site: str | None
    ) -> Appraisal:
        seen.append(Captured(engine, partial, boot, site))
        return decide(engine, partial, boot, site)

    with mock.patch.object(appraiser_module, "decide", spy):
        backend.attest(evidence)
    if not seen:
        raise BenchmarkFailure("the verifier did not consult the policy (no decide call)")
    return seen[0]


Measured = tuple[dict[str, h.Stats], dict[str, Any], dict[str, Any]]


def measure_ours(backend: Backend, args: argparse.Namespace, parts: bool) -> Measured:
    """attest_warm and attest_cold on this backend (and with `parts`, the parts)."""
    n = args.iterations
    extra = 1 if parts else 0
    profile_counts = (PROFILE_WARM, PROFILE_COLD) if args.profile else (0, 0)
    total = WARMUP + n + n + extra + sum(profile_counts)
    h.progress(f"[{backend.name}] making {total} quotes on the swtpm (not timed)")
    started = time.monotonic()
    evidence = backend.evidence(total)
    # Quotes are attested in the order they were made: the TPM clock only moves forward.
    warmup, rest = evidence[:WARMUP], evidence[WARMUP:]
    warm, rest = rest[:n], rest[n:]
    cold, rest = rest[:n], rest[n:]
    captured_with, rest = rest[:extra], rest[extra:]
    profile_warm, profile_cold = rest[: profile_counts[0]], rest[profile_counts[0] :]
    info: dict[str, Any] = {"quote_generation_s": round(time.monotonic() - started, 1)}
    checks: dict[str, Any] = {}
    prefix = "" if backend.name == "sqlite" else f"{backend.name}."
    out: dict[str, h.Stats] = {}

    for item in warmup:
        backend.attest(item)
    affirming_or_fail(backend, "warm-up")
    memo = backend.verifier.references.policy
    hits, misses = memo.hits, memo.misses
    h.progress(f"[{backend.name}] attest_warm x {n}")
    out[f"{prefix}attest_warm"] = time_each(backend.attest, warm)
    checks[f"{prefix}attest_warm.affirming"] = affirming_or_fail(backend, "attest_warm") == n
    checks[f"{prefix}attest_warm.memo_hits_every_call"] = (
        memo.hits - hits == n and memo.misses == misses
    )

    h.progress(f"[{backend.name}] attest_cold x {n}")
    misses = backend.verifier.references.policy.misses
    out[f"{prefix}attest_cold"] = time_each(backend.attest, cold, before=backend.fresh_caches)
    checks[f"{prefix}attest_cold.affirming"] = affirming_or_fail(backend, "attest_cold") == n
    checks[f"{prefix}attest_cold.memo_misses_every_call"] = (
        backend.verifier.references.policy.misses - misses == n
    )

    if parts:
        out.update(measure_parts(backend, captured_with[0], n, checks, info))
    if args.profile:

        def warm_run() -> None:
            for item in profile_warm:
                backend.attest(item)

        def cold_run() -> None:
            for item in profile_cold:
                backend.fresh_caches()
                backend.attest(item)

        info["profile"] = {"attest_warm": profile(warm_run), "attest_cold": profile(cold_run)}
        affirming_or_fail(backend, "profile")
    return out, checks, info


def measure_parts(
    backend: Backend, evidence: Evidence, n: int, checks: dict[str, Any], info: dict[str, Any]
) -> dict[str, h.Stats]:
    out: dict[str, h.Stats] = {}
    backend.fresh_caches()
    captured = capture_decide(backend, evidence)
    outcome = backend.outcomes[-1]
    affirming_or_fail(backend, "policy input capture")
    verifier = backend.verifier
    full = captured.partial | {"claims": captured.boot.claims_json or {}}
    info["policy_input_json_bytes"] = len(json.dumps(full))
    info["policy_id"] = captured.engine.policy_id
    golden = verifier.references.golden
    now = datetime.now(UTC)
    runs = [()] * n

    def appraise(appraiser: BootAppraiser) -> BootAppraisal:
        return appraiser.appraise(
            evidence.node_id, evidence.event_log, evidence.pcr_values, golden, now
        )

    def fresh_appraise() -> None:
        appraise(new_appraiser(backend.config))

    warm_appraiser = new_appraiser(backend.config)
    checks["boot_appraise.passed"] = appraise(warm_appraiser).passed
    h.progress(f"parts x {n}: boot appraisal, policy, EAR")
    out["boot_appraise_cold"] = h.measure(fresh_appraise, runs)
    out["boot_appraise_warm"] = h.measure(lambda: appraise(warm_appraiser), runs)

    engine = captured.engine.engine
    checks["policy_eval.affirming"] = str(engine.evaluate(full).status) == "affirming"
    out["policy_eval_cold"] = h.measure(lambda: engine.evaluate(full), runs)
    memo = captured.engine
    decide(memo, captured.partial, captured.boot, captured.site)  # memoised now
    hits = memo.hits
    out["policy_eval_memoised"] = h.measure(
        lambda: decide(memo, captured.partial, captured.boot, captured.site), runs
    )
    checks["policy_eval_memoised.hits"] = memo.hits - hits == n + 3  # + warm-up calls

    keys = verifier.references.keys
    verification = keys.verification_keys()
    result = verify_result(outcome.result, verification, now)
    cose = sign_result_cose(result, keys.active)
    checks["ear.verifies"] = verify_result(sign_result(result, keys.active), verification, now) == (
        result
    )
    checks["ear_cose.verifies"] = verify_result_cose(cose, verification, now) == result
    info["ear_jwt_bytes"] = len(outcome.result)
    info["ear_cose_bytes"] = len(cose)
    out["ear_sign"] = h.measure(lambda: sign_result(result, keys.active), runs)
    out["ear_verify"] = h.measure(lambda: verify_result(outcome.result, verification, now), runs)
    out["ear_sign_cose"] = h.measure(lambda: sign_result_cose(result, keys.active), runs)
    out["ear_verify_cose"] = h.measure(lambda: verify_result_cose(cose, verification, now), runs)
    return out


#: Steps of Verifier.attest for the profile: (label, file, function); inclusive time.
PROFILE_STEPS = (
    ("quote parse", "verifier/evidence/quote.py", "parse"),
    ("evidence digest", "verifier/service.py", "_evidence_digest"),
    ("store: transaction (lock node row, commit)", "verifier/store/store.py", "attestation"),
    ("store: nonce spend", "verifier/store/store.py", "spend_nonce"),
    ("store: record evidence + result", "verifier/store/store.py", "record"),
    ("quote signature (authenticate_quote)", "verifier/evidence/quote.py", "authenticate_quote"),
    ("quote checks", "verifier/evidence/quote.py", "verify_authenticated_quote"),
    ("boot log appraisal", "verifier/appraisal.py", "appraise"),
    ("runtime log", "verifier/evidence/runtime_log.py", "verify_runtime_log"),
    ("location (asset tag JWS verify, site)", "verifier/service.py", "_location"),
    ("policy input", "verifier/appraisal.py", "policy_input"),
    ("policy decision (decide)", "verifier/appraisal.py", "decide"),
    ("EAR sign + record (_signed)", "verifier/service.py", "_signed"),
    ("decision log line", "verifier/service.py", "_log_decision"),
)
#: Own time by where the function lives (first match on file or function name).
PROFILE_KINDS = (
    ("store: sqlite3 / psycopg", ("sqlite3", "psycopg")),
    ("store: sqlalchemy", ("sqlalchemy/",)),
    ("store: lightgate", ("verifier/store/",)),
    ("policy: regorus", ("eval_rule", "set_input_json", "regorus")),
    ("crypto: ECDSA (OpenSSL)", ("ECPublicKey", "ECPrivateKey", "cryptography/")),
    ("json", ("json/", "_json")),
    ("hashing", ("_hashlib", "hashlib")),
    ("boot log: parse/replay/claims/golden", ("verifier/evidence/", "verifier/golden/")),
    ("verifier: other", ("verifier/", "lightgate/")),
)


def profile(work: Callable[[], object], top: int = 12) -> dict[str, Any]:
    """cProfile of `work`: inclusive share of each step of Verifier.attest, own time by
    kind of code, and the functions with the most own time.  Shares only: cProfile slows
    Python calls down, so its absolute times are not the benchmark's."""
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    work()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    attest = [
        v[3]
        for (f, _, fn), v in rows.items()
        if f.endswith("verifier/service.py") and fn == "attest"
    ]
    total = attest[0] if attest else stats.total_tt  # type: ignore[attr-defined]

    def name(key: tuple[str, int, str]) -> str:
        filename, line, function = key
        short = filename.split("site-packages/")[-1].replace(h.REPO + "/", "")
        return f"{short}:{line}({function})" if line else function

    steps = {}
    for label, filename, function in PROFILE_STEPS:
        spent = sum(
            v[3] for (f, _, fn), v in rows.items() if f.endswith(filename) and fn == function
        )
        steps[label] = round(100 * spent / total, 1)
    kinds: dict[str, float] = {}
    own_total = 0.0
    for key, value in rows.items():
        if key[0].endswith("benchmarks/appraisal.py"):
            continue
        own_total += value[2]
        where = f"{key[0]} {key[2]}"
        kind = next(
            (k for k, marks in PROFILE_KINDS if any(m in where for m in marks)),
            "other (stdlib, builtins)",
        )
        kinds[kind] = kinds.get(kind, 0.0) + value[2]
    own = sorted(rows.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {
        "attestations_s_profiled": round(total, 3),
        "steps_inclusive_pct": steps,
        "own_time_by_kind_pct": {
            k: round(100 * v / own_total, 1)
            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
        },
        "top_own_pct": {name(k): round(100 * v[2] / total, 1) for k, v in own},
    }


# --- Keylime ---------------------------------------------------------------------------


def keylime_baseline(
    args: argparse.Namespace, cpu: int, root: Path
) -> tuple[dict[str, h.Stats], dict[str, Any]]:
    """Keylime's per-operation costs on good.bin from the anchor's bench.py, pinned to
    `cpu` (the core ours ran on)."""
    info: dict[str, Any] = {"name": "keylime 7.14.3", "log": BOOT_LOG_PATH.name}
    bench = ANCHOR / "bench.py"
    if not bench.exists():
        info["status"] = f"unavailable: {bench} not found (the anchor folder is absent)"
        return {}, info
    if not KEYLIME_PYTHON.exists():
        if not args.keylime:
            info["status"] = (
                f"unavailable: {KEYLIME_PYTHON} not found (--keylime builds it with "
                f"bash {ANCHOR / 'setup.sh'})"
            )
            return {}, info
        h.progress(f"building Keylime: bash {ANCHOR / 'setup.sh'} (a few minutes)")
        done = subprocess.run(
            ["bash", str(ANCHOR / "setup.sh")], capture_output=True, text=True, check=False,
            timeout=1800,
        )  # fmt: skip
        if done.returncode != 0 or not KEYLIME_PYTHON.exists():
            last = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            info["status"] = f"unavailable: setup.sh failed ({done.returncode}): {last}"
            return {}, info
    iterations = args.keylime_iterations
    command = [
        str(KEYLIME_PYTHON), str(bench), "--log", str(BOOT_LOG_PATH), "--skip-e",
        "--iters", str(iterations), "--parse-iters", str(iterations), "--cpu", str(cpu),
    ]  # fmt: skip
    info["command"] = " ".join(command)
    h.progress(f"Keylime: bench.py on {BOOT_LOG_PATH.name}, {iterations} iterations, core {cpu}")
    stderr_path = root / "keylime-bench.stderr"
    try:
        with stderr_path.open("w") as stderr:
            done = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, check=False,
                timeout=1800, cwd=tempfile.gettempdir(),
            )  # fmt: skip
    except subprocess.TimeoutExpired:
        info["status"] = "failed: bench.py timed out"
        return {}, info
    tail = " | ".join(stderr_path.read_text(errors="replace").strip().splitlines()[-3:])
    if done.returncode != 0:
        info["status"] = f"failed: bench.py exited {done.returncode}: {tail}"
        return {}, info
    try:
        document = json.loads(done.stdout)
        scenario = document["scenarios"][BOOT_LOG_PATH.name]
    except (ValueError, KeyError) as exc:
        info["status"] = f"failed: unreadable bench.py output ({exc}): {tail}"
        return {}, info
    if "error" in scenario:
        info["status"] = f"failed: {scenario['error']}"
        return {}, info
    results = scenario["results"]
    baseline: dict[str, h.Stats] = {}
    for theirs, op in KEYLIME_OPS.items():
        if theirs in results:
            entry = results[theirs]
            baseline[op] = {
                "median_us": entry["median_us"],
                "p95_us": entry["p95_us"],
                "ops_per_s": entry["ops_per_s"],
                "n": entry["n"],
                "function": entry.get("function"),
            }
    info["status"] = "ok"
    info["config"] = {
        k: v
        for k, v in document.get("config", {}).items()
        if k
        in ("keylime_version", "cryptography_version", "tpm2_tools", "pinned_cpu", "python",
            "measured_boot_policy_name", "measured_boot_evaluate")
    }  # fmt: skip
    info["scenario_config"] = scenario.get("config", {})
    info["negative_controls"] = {k: v for k, v in results.items() if "negative" in k}
    info["d_sum_of_a_b_c_us"] = results.get("d_sum_of_a_b_c", {}).get("median_us")
    return baseline, info


def keylime_ratios(baseline: dict[str, h.Stats], results: dict[str, h.Stats]) -> dict[str, float]:
    out = {}
    for ours, theirs in RATIOS.items():
        if ours in results and theirs in baseline and results[ours]["median_us"]:
            out[ours] = round(baseline[theirs]["median_us"] / results[ours]["median_us"], 1)
    return out


# --- output ----------------------------------------------------------------------------


def aim_text(op: str, stats: h.Stats, ratio: dict[str, float]) -> str:
    parts = []
    limit = AIM_MEDIAN_US.get(op.removeprefix("postgresql."))
    if limit is not None:
        met = "met" if stats["median_us"] <= limit else "MISSED"
        parts.append(f"median <= {limit:,.0f} µs: {met}")
    if op in ratio and RATIOS.get(op) == "full_attestation":
        met = "met" if ratio[op] >= AIM_RATIO else "MISSED"
        parts.append(f">= {AIM_RATIO:.0f}x Keylime: {ratio[op]:,.1f}x {met}")
    return "; ".join(parts)


def print_tables(document: dict[str, Any], notes: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 170)
    machine = document["machine"]
    results: dict[str, h.Stats] = document["results"]
    ratio: dict[str, float] = document["ratio"]
    table = Table(
        title=f"{NAME} - {machine.get('cpu_model')}, core {machine.get('cpu')}, "
        f"Python {machine.get('python')}",
        title_justify="left",
    )
    for column in ("operation", "median µs", "p95 µs", "ops/s", "n", "CPU µs", "aim (issue 5)"):
        table.add_column(column, justify="left" if column[0] in "oa" else "right")
    for op, stats in results.items():
        table.add_row(
            op,
            f"{stats['median_us']:,.1f}",
            f"{stats['p95_us']:,.1f}",
            f"{stats['ops_per_s']:,.0f}",
            f"{stats['n']:,}",
            f"{stats['cpu_us_per_op']:,.1f}" if "cpu_us_per_op" in stats else "-",
            aim_text(op, stats, ratio),
        )
    console.print(table)
    baseline: dict[str, h.Stats] = document["baseline"]
    if baseline:
        keylime = Table(
            title=f"baseline: Keylime 7.14.3 on {BOOT_LOG_PATH.name}, same core",
            title_justify="left",
        )
        for column in ("operation", "median µs", "p95 µs", "ops/s", "n", "ratio"):
            keylime.add_column(column, justify="left" if column == "operation" else "right")
        for op, stats in baseline.items():
            compared = [
                f"/ {o} {ratio[o]:,.1f}x" for o, t in RATIOS.items() if t == op and o in ratio
            ]
            keylime.add_row(
                op,
                f"{stats['median_us']:,.1f}",
                f"{stats['p95_us']:,.1f}",
                f"{stats['ops_per_s']:,.0f}",
                f"{stats['n']:,}",
                ", ".join(compared) or "-",
            )
        console.print(keylime)
    for note in notes:
        console.print(f"- {note}", highlight=False, markup=False)


def profile_notes(profiles: dict[str, Any]) -> list[str]:
    out = []
    for op, prof in profiles.items():
        steps = ", ".join(
            f"{k} {v}%"
            for k, v in sorted(prof["steps_inclusive_pct"].items(), key=lambda kv: -kv[1])
        )
        kinds = ", ".join(f"{k} {v}%" for k, v in prof["own_time_by_kind_pct"].items())
        out.append(f"cProfile {op}, steps (inclusive, % of Verifier.attest): {steps}")
        out.append(f"cProfile {op}, own time by kind: {kinds}")
    return out


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    h.common_arguments(parser, default_iterations=DEFAULT_ITERATIONS)
    parser.add_argument(
        "--postgres", action="store_true", help="also attest on PostgreSQL (127.0.0.1:5432)"
    )
    parser.add_argument(
        "--keylime",
        action="store_true",
        help="Keylime baseline; builds /tmp/klvenv with setup.sh when missing",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="no Keylime baseline (default with --quick)"
    )
    parser.add_argument(
        "--keylime-iterations",
        type=int,
        default=DEFAULT_KEYLIME_ITERATIONS,
        help=f"Keylime quotes and full attestations (default {DEFAULT_KEYLIME_ITERATIONS})",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile attest_warm and attest_cold as well"
    )
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = QUICK_ITERATIONS if args.quick else DEFAULT_ITERATIONS
    if args.iterations < 1 or args.keylime_iterations < 3:
        parser.error("--iterations must be >= 1 and --keylime-iterations >= 3")
    if args.keylime and args.no_baseline:
        parser.error("--keylime and --no-baseline exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools()
    notes: list[str] = []
    results: dict[str, h.Stats] = {}
    checks: dict[str, Any] = {}
    info: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    backends = ["sqlite"]
    if args.postgres:
        reason = postgres_reason()
        if reason:
            skipped["postgresql"] = reason
            notes.append(f"postgresql skipped: {reason}")
            h.progress(f"postgresql skipped: {reason}")
        else:
            backends.append("postgresql")
    root = Path(tempfile.mkdtemp(prefix="lightgate-bench-appraisal-"))
    try:
        with contextlib.ExitStack() as stack:
            h.progress("provisioning the simulator CA")
            ca = SimulatorCA(root / "ca")
            provision(root / "tpm" / "first", ca)  # creates the CA
            ca.export_trust(root / "trust")
            opened: dict[str, Backend] = {}
            for name in backends:
                if name == "postgresql":
                    url = stack.enter_context(postgres_database())
                else:
                    url = f"sqlite:///{root / 'verifier.db'}"
                h.progress(f"[{name}] swtpm, verifier, enrollment, tag")
                opened[name] = open_backend(name, url, root, ca, stack)
            # swtpms were started unpinned; from here on this process measures.
            cpu = args.cpu if args.cpu is not None else h.least_busy_cpu()
            h.pin(cpu)
            before = h.cpu_times()
            for index, (name, backend) in enumerate(opened.items()):
                ops, more_checks, more_info = measure_ours(backend, args, parts=index == 0)
                results.update(ops)
                checks.update(more_checks)
                info[name] = more_info
            info["cpu_util_during_ours"] = h.cpu_util(before, h.cpu_times())
        baseline: dict[str, h.Stats] = {}
        if args.quick or args.no_baseline:
            why = "--quick" if args.quick else "--no-baseline"
            baseline_info: dict[str, Any] = {"name": "keylime 7.14.3", "status": f"skipped ({why})"}
        else:
            baseline, baseline_info = keylime_baseline(args, cpu, root)
            if baseline_info["status"] != "ok":
                h.progress(f"Keylime baseline: {baseline_info['status']}")
                notes.append(f"Keylime baseline: {baseline_info['status']}")
    except BenchmarkFailure as exc:
        h.progress(f"ABORTED: {exc}")
        return 2
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ratio = keylime_ratios(baseline, results)
    notes.append(
        f"pinned to core {cpu}; {args.iterations} attestations per attest op (each its own "
        f"quote and nonce, made before timing), {args.iterations} calls per part; boot log "
        f"{BOOT_LOG_PATH.name} ({BOOT_LOG_PATH.stat().st_size:,} bytes)"
    )
    if "attest_cold" in results and "boot_appraise_cold" in results:
        cold = results["attest_cold"]["median_us"]
        warm = results["attest_warm"]["median_us"]
        parts = {
            "boot appraisal": results["boot_appraise_cold"]["median_us"],
            "policy": results["policy_eval_cold"]["median_us"],
        }
        shown = ", ".join(f"{k} {v:,.0f}" for k, v in parts.items())
        notes.append(
            f"cold - warm = {cold - warm:,.0f} µs; the cold-only parts alone: {shown} µs "
            f"(medians); the rest of a warm attestation (quote checks, nonce, location, "
            f"EAR signing ~{results['ear_sign']['median_us']:,.0f} µs, store) is in both"
        )
    for op, limit in AIM_MEDIAN_US.items():
        if op in results:
            met = "met" if results[op]["median_us"] <= limit else "MISSED"
            notes.append(
                f"aim {op} median <= {limit:,.0f} µs: {results[op]['median_us']:,.1f} µs {met}"
            )
    for op in ("attest_cold", "attest_warm"):
        if op in ratio:
            met = "met" if ratio[op] >= AIM_RATIO else "MISSED"
            notes.append(
                f"aim >= {AIM_RATIO:.0f}x Keylime full attestation: "
                f"Keylime / {op} = {ratio[op]:,.1f}x {met}"
            )
    if baseline:
        notes.append(
            "Keylime full_attestation = Tpm().check_quote (quote + tpm2_eventlog parse + PCR "
            "comparison + measured-boot policy 'example'); it neither stores nor signs a "
            "result, ours does both"
        )
    for value in info.values():
        if isinstance(value, dict) and "profile" in value:
            notes += profile_notes(value["profile"])
    document = h.report(
        NAME,
        h.machine_info(
            cpu=cpu,
            swtpm=h.tool_version(["swtpm", "--version"]),
            regorus=h._version("gordon-to-regorus"),
            cbor2=h._version("cbor2"),
        ),
        results,
        baseline,
        ratio,
        ratio_basis={o: f"baseline.{t} / results.{o}" for o, t in RATIOS.items() if o in ratio},
        aims={
            "attest_warm_median_us": AIM_MEDIAN_US["attest_warm"],
            "attest_cold_median_us": AIM_MEDIAN_US["attest_cold"],
            "ratio_vs_keylime_full_attestation": AIM_RATIO,
        },
        config={
            "iterations": args.iterations,
            "backends": backends,
            "skipped": skipped,
            "boot_log": BOOT_LOG_PATH.name,
            "boot_log_sha256": hashlib.sha256(BOOT_LOG_PATH.read_bytes()).hexdigest(),
            "ak": "ecc (P-256, ECDSA-SHA256)",
            "peer": PEER,
            "tag": TAG,
            "site": SITE,
            **info,
        },
        checks=checks,
        baseline_info=baseline_info,
        notes=notes,
    )
    if not all(v for v in checks.values()):
        failed = sorted(k for k, v in checks.items() if not v)
        h.progress(f"checks failed: {failed}")
    if args.json:
        h.emit(document, True)
    else:
        print_tables(document, notes)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        h.progress("interrupted; everything started was stopped and removed")
        sys.exit(130)

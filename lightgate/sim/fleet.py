"""A fleet of swtpm nodes, a real verifier and real agents on one machine.

Everything it starts lives under one temporary folder and is stopped and removed on
exit, Ctrl-C included: swtpm processes (also asked to die with this process), the
verifier's gRPC server, its SQLite store, the simulator CAs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from attestor.agent import Agent, open_channel
from attestor.source_address import SourceAddressRelay
from attestor.tpm import Tpm, TpmError
from lightgate.admin_client import new_token
from lightgate.config import (
    AdminConfig,
    AdminToken,
    AdmissionConfig,
    AgentConfig,
    AttestationConfig,
    EnrollmentConfig,
    LocationConfig,
    ResultsConfig,
    SiteRule,
    VerifierConfig,
)
from lightgate.sim.admission import AdmissionOutcome, SimAdmission
from lightgate.sim.boot import fixture_path, golden_from_fixture, import_golden, measure_boot
from lightgate.sim.images import sim_images
from lightgate.sim.scenarios import SCENARIOS, Environment, Scenario, Verdict, check_plan
from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision, require_tools
from lightgate.wire.channel import RpcError
from lightgate.wire.clients import AttestationClient, CredentialsClient
from lightgate.wire.v1 import admin_pb2 as admin_pb
from lightgate.wire.v1 import admin_pb2_grpc as admin_pb_grpc
from verifier.server import start_verifier

SIM_NONCE_TTL_SECONDS = 2.0  # short, so expired-nonce shows in seconds, not a minute
SIM_TRUST_SECONDS = 3.0  # short, so an expired node shows in seconds
PROVISION_WORKERS = 2
#: The simulated sites: each is a /16 of loopback, which Linux routes to lo whole, so a
#: node "at" a site connects from its own address there (attestor/source_address.py).
SIM_SITES = {
    "ams1": ("127.1.0.0/16", {"region": "eu-west", "dc": "ams1"}),
    "fra1": ("127.2.0.0/16", {"region": "eu-central", "dc": "fra1"}),
}


@dataclass(frozen=True)
class NodeResult:
    node: str
    scenario: str
    status: str
    reason: str | None
    expected: str  # "affirming" or the check that must refuse it
    as_expected: bool
    ak: str = ""  # the node's AK kind
    failed_checks: tuple[str, ...] = ()
    admission: AdmissionOutcome | None = None
    # For a node that runs containers: where its images came from (a real containerd,
    # or declared, and why).
    containers: str | None = None

    def to_json(self) -> dict[str, object]:
        document = asdict(self)
        document["admission"] = None if self.admission is None else self.admission.to_json()
        return document


Progress = Callable[[str], None]


def _admitted_as_expected(scenario: Scenario, admission: AdmissionOutcome | None) -> bool:
    """Trusted nodes are admitted and get a certificate; every other node is filtered
    out and refused one; a node revoked mid-run has its earlier certificate on the CRL."""
    if admission is None:
        return True  # the fleet ran without the admission checks
    trusted = scenario.expect is None
    issued = admission.certificate is not None
    if admission.admitted != trusted or issued != trusted:
        return False
    return scenario.name != "revoked" or admission.revoked_on_crl is True


def _as_expected(scenario: Scenario, verdict: Verdict) -> bool:
    if scenario.expect is None:
        return verdict.status == "affirming"
    reason = verdict.reason or ""
    named = scenario.detail is None or scenario.detail in reason
    # The check must be among those that refused (an EAR lists every failed check);
    # a refused request (no result) names it at the start of its reason.
    refused_by = scenario.expect in verdict.failed_checks or reason.startswith(
        f"{scenario.expect}:"
    )
    return verdict.status != "affirming" and refused_by and named


class SimOperator:
    """The simulator's operator: a bearer token and the verifier's Admin API."""

    def __init__(self, address: str, token: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = admin_pb_grpc.AdminStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")]

    def tag(self, node_id: str, attributes: dict[str, str]) -> None:
        request = admin_pb.TagNodeRequest(node_id=node_id, attributes=attributes)
        self._stub.TagNode(request, metadata=self._metadata, timeout=10)

    def revoke(self, node_id: str, reason: str) -> None:
        request = admin_pb.RevokeNodeRequest(node_id=node_id, reason=reason)
        self._stub.RevokeNode(request, metadata=self._metadata, timeout=10)

    def trust(self, node_id: str) -> tuple[str, str]:
        nodes = self._stub.ListNodes(
            admin_pb.ListNodesRequest(), metadata=self._metadata, timeout=10
        ).nodes
        (node,) = [n for n in nodes if n.node_id == node_id]
        return node.state, node.reason

    def close(self) -> None:
        self._channel.close()


def sim_verifier_config(root: Path, operator_token_sha256: str) -> VerifierConfig:
    """The simulated fleet's verifier: every listener on loopback, short lifetimes."""
    return VerifierConfig(
        listen="127.0.0.1:0",
        state_dir=root / "verifier",
        enrollment=EnrollmentConfig(mode="ek-chain", trust_store=root / "trust"),
        attestation=AttestationConfig(nonce_ttl_seconds=SIM_NONCE_TTL_SECONDS),
        results=ResultsConfig(trust_seconds=SIM_TRUST_SECONDS, https_listen="127.0.0.1:0"),
        location=LocationConfig(
            sites=[
                SiteRule(cidr=cidr, site=site, attributes=attributes)
                for site, (cidr, attributes) in SIM_SITES.items()
            ]
        ),
        admin=AdminConfig(
            listen="127.0.0.1:0",
            tokens=[AdminToken(operator="simulator", sha256=operator_token_sha256)],
        ),
        # Trust lasts seconds here; a certificate for the rest of it still shows the gate.
        admission=AdmissionConfig(min_credential_seconds=0.5),
    )


def source_address(site: str, index: int) -> str:
    """Node `index`'s own address in `site`'s network."""
    network = ipaddress.ip_network(SIM_SITES[site][0])
    return str(network.network_address + 2 + index)


@contextlib.contextmanager
def run_folder(keep: Path | None, prefix: str = "lightgate-sim-") -> Iterator[Path]:
    """`keep` (made if needed, left afterwards), or a temporary folder removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_fleet(
    plan: list[str],
    *,
    workdir: Path | None = None,
    progress: Progress | None = None,
    parallel: int = 4,
) -> list[NodeResult]:
    """Run one node per entry of `plan` (scenario names); return their verdicts."""
    require_tools()
    check_plan(plan)
    note = progress or (lambda _msg: None)
    scenarios = [SCENARIOS[name] for name in plan]
    with run_folder(workdir) as root, contextlib.ExitStack() as stack:
        trusted_ca = SimulatorCA(root / "ca-sim")
        rogue_ca = SimulatorCA(root / "ca-rogue")
        nodes = [f"node-{i:02d}" for i in range(len(scenarios))]
        tpm_dirs = {node: root / "tpm" / node for node in nodes}
        foreign_dir = root / "tpm" / "foreign"

        jobs = [
            (tpm_dirs[n], rogue_ca if s.rogue_ca else trusted_ca)
            for n, s in zip(nodes, scenarios, strict=True)
        ]
        if any(s.needs_foreign_tpm for s in scenarios):
            jobs.append((foreign_dir, trusted_ca))
        _provision_all(jobs, note)
        trusted_ca.export_trust(root / "trust")

        swtpms: dict[Path, Swtpm] = {}
        for state_dir, _ in jobs:
            swtpms[state_dir] = stack.enter_context(Swtpm(state_dir).start())
        note(f"started {len(swtpms)} swtpm processes")

        token, token_sha256 = new_token()
        verifier = stack.enter_context(start_verifier(sim_verifier_config(root, token_sha256)))
        address = f"127.0.0.1:{verifier.port}"
        note(f"verifier listening on {address}")
        operator = SimOperator(f"127.0.0.1:{verifier.admin_port}", token)
        stack.callback(operator.close)
        images = stack.enter_context(sim_images(root, any(s.runs_containers for s in scenarios)))
        note(images.describe())
        golden = images.allow(golden_from_fixture())
        import_golden(verifier.store, golden)
        verifier.verifier.references.refresh()
        note(
            f"golden values {golden.name!r} learned from the good boot fixture, allowing "
            f"image {images.reference('allowed')}@{images.digest('allowed')[:19]}…"
        )
        env = Environment(
            nonce_ttl_seconds=SIM_NONCE_TTL_SECONDS,
            foreign_tpm=(lambda: Tpm(swtpms[foreign_dir].tcti)) if foreign_dir in swtpms else None,
            operator=operator,
            trust_seconds=SIM_TRUST_SECONDS,
            admission=SimAdmission(verifier.https.url) if verifier.https is not None else None,
            images=images,
        )

        fleet = _Fleet(root, address, nodes, {n: swtpms[tpm_dirs[n]].tcti for n in nodes}, env)
        results: dict[str, NodeResult] = {}
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="node")
        # On Ctrl-C or an error, queued nodes are cancelled rather than run first.
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        futures = {
            pool.submit(_run_node, fleet, n, s.name): n
            for n, s in zip(nodes, scenarios, strict=True)
        }
        for future in as_completed(futures):
            result = future.result()
            results[result.node] = result
            note(f"{result.node}: {result.status}")
        return [results[node] for node in nodes]


@dataclass(frozen=True)
class _Fleet:
    root: Path
    address: str  # the verifier's
    nodes: list[str]
    tctis: dict[str, str]
    env: Environment


def _run_node(fleet: _Fleet, node: str, scenario_name: str) -> NodeResult:
    """One node: its firmware measures its boot, then its agent plays the scenario,
    connecting from the node's own address at its site."""
    scenario = SCENARIOS[scenario_name]
    boot_log, log_path = _boot_logs(fleet.root, node, scenario)
    index = fleet.nodes.index(node)
    agent_config = AgentConfig(
        node_id=node,
        verifier=fleet.address,
        tcti=fleet.tctis[node],
        state_dir=fleet.root / "agents" / node,
        rpc_timeout_seconds=10,
        # Both AK kinds a fleet has in the field: ECC P-256 and RSA-2048.
        ak_algorithm="rsa" if index % 2 else "ecc",
        event_log=log_path,
        source_address=source_address(scenario.site, index),
        containers=fleet.env.images.sources(node)
        if fleet.env.images is not None and scenario.runs_containers
        else [],
    )
    try:
        with contextlib.ExitStack() as own:
            relay = SourceAddressRelay(fleet.address, source_address(scenario.site, index))
            channel = own.enter_context(
                open_channel(agent_config, own.enter_context(relay).address)
            )
            tpm = own.enter_context(Tpm(agent_config.tcti, agent_config.ek_kind))
            measure_boot(tpm, boot_log)  # the firmware's measurements, at power-on
            agent = Agent(agent_config, tpm, AttestationClient(channel), CredentialsClient(channel))
            verdict = scenario.run(agent, fleet.env)
            admission = None
            if fleet.env.admission is not None:
                admission = fleet.env.admission.check(agent)
    except RpcError as exc:
        verdict = Verdict("none", exc.details or exc.code.name)
        admission = None
    except TpmError as exc:
        verdict = Verdict("none", f"tpm: {exc}")
        admission = None
    return NodeResult(
        node,
        scenario_name,
        verdict.status,
        verdict.reason,
        scenario.expect or "affirming",
        _as_expected(scenario, verdict) and _admitted_as_expected(scenario, admission),
        ak={"ecc": "ECC P-256 AK", "rsa": "RSA-2048 AK"}[agent_config.ak_algorithm],
        failed_checks=verdict.failed_checks,
        admission=admission,
        containers=fleet.env.images.describe()
        if fleet.env.images is not None and scenario.runs_containers
        else None,
    )


def _boot_logs(root: Path, node: str, scenario: Scenario) -> tuple[bytes, Path]:
    """The log of the boot the node's TPM measures, and the file of the log its agent
    sends (the same log, unless the scenario lies about it)."""
    boot_log = fixture_path(scenario.boot).read_bytes()
    sent = scenario.sent_log(boot_log) if scenario.sent_log else boot_log
    log_path = root / "logs" / f"{node}.bin"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_bytes(sent)
    return boot_log, log_path


def _provision_all(jobs: list[tuple[Path, SimulatorCA]], note: Progress) -> None:
    """swtpm_setup for every TPM.  The first TPM of each CA creates that CA, so it runs
    alone; the rest run in parallel (swtpm_localca serialises its serial numbers)."""
    first: dict[Path, tuple[Path, SimulatorCA]] = {}
    for state_dir, ca in jobs:
        first.setdefault(ca.directory, (state_dir, ca))
    for state_dir, ca in first.values():
        provision(state_dir, ca)
        note(f"provisioned {state_dir.name}")
    rest = [job for job in jobs if job not in first.values()]
    with ThreadPoolExecutor(max_workers=PROVISION_WORKERS) as pool:
        for state_dir in pool.map(_provision_job, rest):
            note(f"provisioned {state_dir.name}")


def _provision_job(job: tuple[Path, SimulatorCA]) -> Path:
    provision(*job)
    return job[0]

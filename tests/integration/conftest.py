"""Real swtpm processes, a real verifier on loopback, SQLite and (when reachable) PostgreSQL."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from attestor.agent import Agent, open_channel
from attestor.tpm import Tpm
from lightgate.config import (
    AdminConfig,
    AgentConfig,
    AttestationConfig,
    EnrollmentConfig,
    ResultsConfig,
    VerifierConfig,
)
from lightgate.sim.boot import (
    GOOD_BOOT,
    fixture_path,
    golden_from_fixture,
    import_golden,
    measure_boot,
)
from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision
from lightgate.wire.channel import Channel
from lightgate.wire.clients import AttestationClient, CredentialsClient
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc
from verifier.server import RunningVerifier, start_verifier

if shutil.which("swtpm") is None or shutil.which("swtpm_setup") is None:
    pytest.skip("swtpm is not installed (run `make setup`)", allow_module_level=True)

POSTGRES = ("127.0.0.1", 5432)


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(POSTGRES, timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def sim_ca(tmp_path_factory: pytest.TempPathFactory) -> SimulatorCA:
    """A private CA, created by provisioning a first TPM with it."""
    root = tmp_path_factory.mktemp("ca")
    ca = SimulatorCA(root / "ca-sim")
    provision(root / "first-tpm", ca)
    ca.export_trust(root / "trust")
    return ca


@pytest.fixture(scope="session")
def rogue_ca(tmp_path_factory: pytest.TempPathFactory) -> SimulatorCA:
    root = tmp_path_factory.mktemp("rogue")
    ca = SimulatorCA(root / "ca-rogue")
    provision(root / "first-tpm", ca)
    return ca


@pytest.fixture
def trust_store(sim_ca: SimulatorCA) -> Path:
    return sim_ca.directory.parent / "trust"


SwtpmFactory = Callable[..., Swtpm]


@pytest.fixture
def make_swtpm(tmp_path: Path, sim_ca: SimulatorCA) -> Iterator[SwtpmFactory]:
    """Start freshly manufactured swtpm processes; all are stopped after the test."""
    started: list[Swtpm] = []

    def factory(
        ca: SimulatorCA | None = None, name: str | None = None, boot: str | None = GOOD_BOOT
    ) -> Swtpm:
        """`boot`: the fixture boot measured into the PCRs at start (None: no boot)."""
        state = tmp_path / "tpm" / (name or uuid.uuid4().hex[:8])
        provision(state, ca or sim_ca)
        tpm = Swtpm(state).start()
        started.append(tpm)
        if boot is not None:
            with Tpm(tpm.tcti) as session:
                measure_boot(session, fixture_path(boot).read_bytes())
        return tpm

    yield factory
    for tpm in started:
        tpm.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'verifier.db'}"
        return
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import sqlalchemy

    name = f"lightgate_it_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class VerifierHandle:
    running: RunningVerifier
    address: str
    channel: grpc.Channel

    @property
    def stub(self) -> pb_grpc.AttestationStub:
        return pb_grpc.AttestationStub(self.channel)


VerifierFactory = Callable[..., VerifierHandle]


@pytest.fixture
def make_verifier(tmp_path: Path, trust_store: Path) -> Iterator[VerifierFactory]:
    handles: list[VerifierHandle] = []

    def factory(
        database_url: str | None = None,
        enrollment: EnrollmentConfig | None = None,
        nonce_ttl_seconds: float = 60.0,
        **overrides: object,
    ) -> VerifierHandle:
        settings: dict[str, object] = {
            "listen": "127.0.0.1:0",
            "state_dir": tmp_path / f"verifier-{len(handles)}",
            "database_url": database_url,
            "enrollment": enrollment or EnrollmentConfig(mode="ek-chain", trust_store=trust_store),
            "attestation": AttestationConfig(nonce_ttl_seconds=nonce_ttl_seconds),
            # Every listener on a free port, so that verifiers of one test do not meet.
            "admin": AdminConfig(listen="127.0.0.1:0"),
            "results": ResultsConfig(https_listen="127.0.0.1:0"),
            **overrides,
        }
        config = VerifierConfig(**settings)  # type: ignore[arg-type]
        running = start_verifier(config)
        import_golden(running.store, golden_from_fixture(GOOD_BOOT))
        running.verifier.references.refresh()
        address = f"127.0.0.1:{running.port}"
        handle = VerifierHandle(running, address, grpc.insecure_channel(address))
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        handle.channel.close()
        handle.running.stop(grace=0)


@pytest.fixture
def verifier(make_verifier: VerifierFactory, database_url: str) -> VerifierHandle:
    return make_verifier(database_url)


AgentFactory = Callable[..., Agent]


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[AgentFactory]:
    opened: list[Tpm] = []
    channels: list[Channel] = []

    def factory(
        swtpm: Swtpm, handle: VerifierHandle, node_id: str | None = None, **overrides: object
    ) -> Agent:
        node = node_id or f"node-{uuid.uuid4().hex[:8]}"
        settings: dict[str, object] = {
            "node_id": node,
            "verifier": handle.address,
            "tcti": swtpm.tcti,
            "state_dir": tmp_path / "agents" / node,
            "event_log": fixture_path(GOOD_BOOT),
            **overrides,
        }
        config = AgentConfig(**settings)  # type: ignore[arg-type]
        tpm = Tpm(config.tcti, config.ek_kind)
        opened.append(tpm)
        # The agent's own transport (lightgate.wire.channel), as `run_agent` opens it.
        channel = open_channel(config)
        channels.append(channel)
        return Agent(config, tpm, AttestationClient(channel), CredentialsClient(channel))

    yield factory
    for tpm in opened:
        tpm.close()
    for channel in channels:
        channel.close()

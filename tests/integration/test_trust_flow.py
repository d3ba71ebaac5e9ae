"""Appraisal end to end, on real swtpm nodes and a real verifier: every trust state and
its transition, signed results checked against the published JWKS, the Admin API's
authentication, a remote policy engine (OPA's REST API) and what-if."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from lightgate.cli import app
from lightgate.config import (
    AdminConfig,
    AdminToken,
    LocationConfig,
    PolicyConfig,
    ResultsConfig,
    SiteRule,
)
from lightgate.sim.boot import fixture_path
from lightgate.wire.v1 import admin_pb2 as admin_pb
from lightgate.wire.v1 import admin_pb2_grpc as admin_grpc
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import results_pb2 as results_pb
from lightgate.wire.v1 import results_pb2_grpc as results_grpc
from tests.integration.conftest import AgentFactory, SwtpmFactory, VerifierFactory
from tests.support.opa_server import opa_server
from verifier.jose import keys_of_jwks
from verifier.policy import default_policy_dir, load_bundle
from verifier.results import ResultSignatureInvalid, verify_result

TOKEN = "operator-token-for-tests"  # a test credential
LAB = {"region": "eu-west", "dc": "ams1"}
TRUST_SECONDS = 2.0


def _trusting_verifier(make_verifier: VerifierFactory, database_url: str, **extra: Any) -> Any:
    settings: dict[str, Any] = {
        "results": ResultsConfig(trust_seconds=TRUST_SECONDS, https_listen="127.0.0.1:0"),
        "admin": AdminConfig(
            listen="127.0.0.1:0",
            tokens=[
                AdminToken(operator="alice", sha256=hashlib.sha256(TOKEN.encode()).hexdigest())
            ],
        ),
        # Loopback is the lab: every agent here connects from it.
        "location": LocationConfig(
            sites=[SiteRule(cidr="127.0.0.0/8", site="lab", attributes=LAB)]
        ),
    }
    settings.update(extra)
    return make_verifier(database_url, **settings)


class Operator:
    def __init__(self, handle: Any, token: str | None = TOKEN) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{handle.running.admin_port}")
        self.stub = admin_grpc.AdminStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def tag(self, node: str, **attributes: str) -> None:
        request = admin_pb.TagNodeRequest(node_id=node, attributes=attributes)
        self.stub.TagNode(request, metadata=self.metadata)

    def state(self, node: str) -> admin_pb.NodeTrustState:
        reply = self.stub.ListNodes(admin_pb.ListNodesRequest(), metadata=self.metadata)
        (found,) = [n for n in reply.nodes if n.node_id == node]
        return found


def _jwks(handle: Any) -> dict[str, Any]:
    url = f"http://127.0.0.1:{handle.running.https.port}/.well-known/jwks.json"
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback
        document: dict[str, Any] = json.load(response)
    return document


def test_every_trust_state_and_transition(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    database_url: str,
) -> None:
    handle = _trusting_verifier(make_verifier, database_url)
    operator = Operator(handle)
    agent = make_agent(make_swtpm(), handle)
    agent.enroll()
    node = agent.node_id
    assert operator.state(node).state == "enrolled"

    # affirming: tagged where it is, and the quote proves the tag
    operator.tag(node, **LAB)
    first = agent.attest_once()
    assert first.status == pb.TRUST_STATUS_AFFIRMING, first.reason
    keys = keys_of_jwks(_jwks(handle))
    result = verify_result(first.result, keys, datetime.now(UTC))
    assert (result.node_id, result.status) == (node, "affirming")
    assert result.trust_vector["sourced-data"] == 2
    (stored,) = handle.running.store.results_for(node, 1)
    assert result.evidence_digest == stored.evidence_digest
    assert stored.ear == first.result

    # warning: the operator moved the node, which has not measured the new tag yet
    operator.tag(node, region="eu-west", dc="ams2")
    challenge = agent.challenge()
    current_tag = agent.state_dir.load_asset_tag()
    challenge.asset_tag = current_tag or ""  # the agent keeps measuring its old tag
    stale = agent.submit(agent.collect(challenge))
    assert stale.status == pb.TRUST_STATUS_WARNING, stale.reason
    assert "location" in stale.failed_checks

    # contraindicated: the node now attests dc=ams2, but it is seen at ams1
    wrong = agent.attest_once()
    assert wrong.status == pb.TRUST_STATUS_CONTRAINDICATED
    assert "location" in wrong.failed_checks and "dc=ams1" in wrong.reason

    operator.tag(node, **LAB)
    assert agent.attest_once().status == pb.TRUST_STATUS_AFFIRMING

    # revoked: good evidence no longer helps, until an operator restores the node
    operator.stub.RevokeNode(
        admin_pb.RevokeNodeRequest(node_id=node, reason="disk reported stolen"),
        metadata=operator.metadata,
    )
    # The affirming result signed before the revocation still verifies, but is no
    # longer handed out as the node's result.
    results = results_grpc.ResultsStub(grpc.insecure_channel(f"127.0.0.1:{handle.running.port}"))
    with pytest.raises(grpc.RpcError) as withdrawn:
        results.GetResult(results_pb.GetResultRequest(node_id=node))
    assert withdrawn.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "disk reported stolen" in (withdrawn.value.details() or "")
    revoked = agent.attest_once()
    assert revoked.status == pb.TRUST_STATUS_CONTRAINDICATED
    served = results.GetResult(results_pb.GetResultRequest(node_id=node))
    assert served.status == pb.TRUST_STATUS_CONTRAINDICATED and served.state == "revoked"
    assert "revoked" in revoked.failed_checks and "disk reported stolen" in revoked.reason
    assert operator.state(node).state == "revoked"
    operator.stub.RestoreNode(
        admin_pb.RestoreNodeRequest(node_id=node, reason="disk found"), metadata=operator.metadata
    )
    assert operator.state(node).state == "enrolled"
    assert agent.attest_once().status == pb.TRUST_STATUS_AFFIRMING

    # expired: no attestation within the trust lifetime
    time.sleep(TRUST_SECONDS + 0.2)
    assert operator.state(node).state == "expired"  # read as expired before any sweep
    handle.running.verifier.expire()

    moves = [(t.from_state, t.to_state, t.actor) for t in handle.running.store.transitions(node)]
    assert moves == [
        ("enrolled", "affirming", "verifier"),
        ("affirming", "warning", "verifier"),
        ("warning", "contraindicated", "verifier"),
        ("contraindicated", "affirming", "verifier"),
        ("affirming", "revoked", "token:alice"),
        ("revoked", "enrolled", "token:alice"),
        ("enrolled", "affirming", "verifier"),
        ("affirming", "expired", "verifier"),
    ]
    audit = operator.stub.AuditLog(admin_pb.AuditLogRequest(), metadata=operator.metadata)
    assert [e.action for e in audit.entries] == ["tag", "tag", "tag", "revoke", "restore"]
    assert {e.actor for e in audit.entries} == {"token:alice"}


def test_a_tampered_result_or_another_verifiers_key_is_refused(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    database_url: str,
) -> None:
    handle = _trusting_verifier(make_verifier, database_url)
    other = _trusting_verifier(make_verifier, database_url.replace("verifier.db", "other.db"))
    agent = make_agent(make_swtpm(), handle)
    agent.enroll()
    token = agent.attest_once().result
    header, payload, signature = token.split(".")
    claims = json.loads(_b64decode(payload))
    (submod,) = claims["submods"].values()
    submod["ear.status"] = "affirming"
    claims["exp"] += 3600  # trust for an hour longer
    forged = ".".join((header, _b64encode(json.dumps(claims).encode()), signature))
    with pytest.raises(ResultSignatureInvalid):
        verify_result(forged, keys_of_jwks(_jwks(handle)), datetime.now(UTC))
    if "sqlite" in database_url:  # another verifier's keys do not vouch for this result
        with pytest.raises(ResultSignatureInvalid):
            verify_result(token, keys_of_jwks(_jwks(other)), datetime.now(UTC))


def test_admin_api_refuses_calls_without_operator_credentials(
    make_verifier: VerifierFactory, make_swtpm: SwtpmFactory, make_agent: AgentFactory
) -> None:
    handle = _trusting_verifier(make_verifier, None)
    agent = make_agent(make_swtpm(), handle)
    agent.enroll()
    request = admin_pb.TagNodeRequest(node_id=agent.node_id, attributes=LAB)
    for token in (None, "not-a-token"):
        with pytest.raises(grpc.RpcError) as refused:
            Operator(handle, token).stub.TagNode(request, metadata=Operator(handle, token).metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The agents' listener does not serve the Admin API at all.
    on_agent_port = admin_grpc.AdminStub(handle.channel)
    with pytest.raises(grpc.RpcError) as refused:
        on_agent_port.TagNode(request, metadata=Operator(handle).metadata)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert handle.running.store.asset_tag(agent.node_id) is None
    assert handle.running.store.audit_log() == []


def test_admin_api_with_client_certificates(make_verifier: VerifierFactory, tmp_path: Path) -> None:
    ca_key, ca = _ca(tmp_path / "operators-ca.pem", "operators")
    rogue_key, rogue = _ca(tmp_path / "rogue-ca.pem", "rogue")
    server_cert, server_key = _leaf(tmp_path, "server", ca_key, ca, server=True)
    alice_cert, alice_key = _leaf(tmp_path, "alice", ca_key, ca)
    mallory_cert, mallory_key = _leaf(tmp_path, "mallory", rogue_key, rogue)
    handle = make_verifier(
        None,
        tls_cert=server_cert,
        tls_key=server_key,
        admin=AdminConfig(
            listen="127.0.0.1:0", auth="mtls", client_ca=tmp_path / "operators-ca.pem"
        ),
    )
    address = f"127.0.0.1:{handle.running.admin_port}"

    def audit_as(cert: Path | None, key: Path | None) -> admin_pb.AuditLogResponse:
        credentials = grpc.ssl_channel_credentials(
            (tmp_path / "operators-ca.pem").read_bytes(),
            key.read_bytes() if key else None,
            cert.read_bytes() if cert else None,
        )
        options = [("grpc.ssl_target_name_override", "server")]
        with grpc.secure_channel(address, credentials, options=options) as channel:
            stub = admin_grpc.AdminStub(channel)
            return stub.AuditLog(admin_pb.AuditLogRequest(), timeout=5)

    assert audit_as(alice_cert, alice_key).entries == []
    for cert, key in ((mallory_cert, mallory_key), (None, None)):
        with pytest.raises(grpc.RpcError) as refused:
            audit_as(cert, key)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails


def test_remote_policy_engine_decides_and_its_absence_refuses_trust(
    make_swtpm: SwtpmFactory, make_verifier: VerifierFactory, make_agent: AgentFactory
) -> None:
    with opa_server(load_bundle(default_policy_dir())) as (url, state):
        handle = make_verifier(None, policy=PolicyConfig(engine="remote", opa_url=url))
        agent = make_agent(make_swtpm(), handle)
        agent.enroll()
        response = agent.attest_once()
        assert response.status == pb.TRUST_STATUS_AFFIRMING, response.reason
        assert state.requests  # the server decided, not an embedded engine
    # No server where the configuration says: no decision, no trust, and the reason says why.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    unreachable = make_verifier(None, policy=PolicyConfig(engine="remote", opa_url=dead))
    agent = make_agent(make_swtpm(), unreachable)
    agent.enroll()
    refused = agent.attest_once()
    assert refused.status == pb.TRUST_STATUS_NONE
    assert list(refused.failed_checks) == ["policy"]
    assert dead.removeprefix("http://") in refused.reason
    node = unreachable.running.store.get_node(agent.node_id)
    assert node is not None and node.trust_state == "contraindicated"


def test_whatif_shows_which_nodes_a_candidate_policy_would_change(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'whatif.db'}"
    handle = make_verifier(database)
    good = make_agent(make_swtpm(), handle)
    tampered = make_agent(
        make_swtpm(boot="tampered-kernel"),
        handle,
        event_log=fixture_path("tampered-kernel"),
    )
    for agent in (good, tampered):
        agent.enroll()
        agent.attest_once()
    # The candidate: a golden-values deviation is a warning, not a refusal.
    candidate = tmp_path / "candidate"
    shutil.copytree(default_policy_dir(), candidate)
    data_file = candidate / "lightgate" / "data.json"
    data = json.loads(data_file.read_text())
    data["config"]["golden"]["deviation"] = 33
    data_file.write_text(json.dumps(data))
    config = tmp_path / "verifier.yaml"
    config.write_text(yaml.safe_dump({"database_url": database, "state_dir": str(tmp_path)}))

    done = CliRunner().invoke(
        app,
        ["policy", "whatif", "--policy", str(candidate), "--config", str(config), "--json"],
    )
    assert done.exit_code == 0, done.output
    document = json.loads(done.output)
    assert (document["nodes"], document["changed"]) == (2, 1)
    (change,) = document["outcomes"]
    assert change["node"] == tampered.node_id
    assert (change["current"]["status"], change["candidate"]["status"]) == (
        "contraindicated",
        "warning",
    )
    assert any("boot-chain.kernel" in r for r in change["candidate"]["reasons"])
    gate = CliRunner().invoke(
        app,
        [
            "policy",
            "whatif",
            "--policy",
            str(candidate),
            "--config",
            str(config),
            "--fail-on-change",
        ],
    )
    assert gate.exit_code == 3


# --- helpers ------------------------------------------------------------------------


def _b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _ca(path: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _leaf(
    directory: Path,
    name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    server: bool = False,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_operators_change_golden_values_and_rotate_keys_through_the_admin_api(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = _trusting_verifier(make_verifier, None)
    agent = make_agent(make_swtpm(), handle)
    agent.enroll()
    before = agent.attest_once().result
    address = f"127.0.0.1:{handle.running.admin_port}"
    monkeypatch.setenv("LIGHTGATE_ADMIN_TOKEN", TOKEN)
    runner = CliRunner()

    golden = tmp_path / "tampered.yaml"
    log = str(fixture_path("tampered-kernel"))
    learned = runner.invoke(
        app, ["golden", "learn", "--name", "tampered", "--log", log, "-o", str(golden)]
    )
    assert learned.exit_code == 0, learned.output
    imported = runner.invoke(app, ["golden", "import", str(golden), "--admin", address])
    assert imported.exit_code == 0, imported.output
    names = {row.name for row in handle.running.store.golden_values()}
    assert "tampered" in names

    operator = Operator(handle)
    operator.tag(agent.node_id, **LAB)
    tag_before = handle.running.store.asset_tag(agent.node_id)
    assert agent.attest_once().status == pb.TRUST_STATUS_AFFIRMING
    rotated = runner.invoke(app, ["admin", "rotate-key", "--admin", address])
    assert rotated.exit_code == 0, rotated.output
    # The node's tag is signed again by the new key: it outlives the old key's grace.
    tag_after = handle.running.store.asset_tag(agent.node_id)
    assert tag_before is not None and tag_after is not None
    assert (tag_after.serial, tag_after.attributes) == (tag_before.serial + 1, LAB)
    new_kid = json.loads(_b64decode(tag_after.token.split(".")[0]))["kid"]
    assert new_kid != json.loads(_b64decode(tag_before.token.split(".")[0]))["kid"]
    keys = keys_of_jwks(_jwks(handle))
    assert len(keys) == 2  # the new key signs; the old one still verifies what it signed
    verify_result(before, keys, datetime.now(UTC))
    after = agent.attest_once().result
    assert (
        json.loads(_b64decode(after.split(".")[0]))["kid"]
        != json.loads(_b64decode(before.split(".")[0]))["kid"]
    )

    removed = runner.invoke(app, ["golden", "remove", "tampered", "--admin", address])
    assert removed.exit_code == 0, removed.output
    audit = runner.invoke(app, ["admin", "audit", "--admin", address, "--json"])
    actions = [(e["actor"], e["action"]) for e in json.loads(audit.output)["entries"]]
    assert actions == [
        ("token:alice", "golden-import"),
        ("token:alice", "tag"),
        ("token:alice", "rotate-key"),
        ("token:alice", "tag"),
        ("token:alice", "golden-remove"),
    ]
    refused = CliRunner().invoke(
        app, ["admin", "audit", "--admin", address], env={"LIGHTGATE_ADMIN_TOKEN": "wrong"}
    )
    assert refused.exit_code != 0 and "unauthenticated" in str(refused.exception)

"""The verifier serves gRPC over TLS when configured; the agent checks its certificate."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestor.agent import Agent, open_channel
from attestor.tpm import Tpm
from lightgate.config import AgentConfig
from lightgate.sim.boot import GOOD_BOOT, fixture_path
from lightgate.wire.channel import RpcError, StatusCode
from lightgate.wire.clients import AttestationClient
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_agent_attests_over_tls(make_swtpm: Any, make_verifier: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "verifier.lightgate.test")
    handle = make_verifier(tls_cert=cert, tls_key=key)
    swtpm = make_swtpm()
    config = AgentConfig(
        node_id="tls-node",
        verifier=handle.address,
        tls_ca=cert,
        tls_server_name="verifier.lightgate.test",
        tcti=swtpm.tcti,
        state_dir=tmp_path / "agent",
        event_log=fixture_path(GOOD_BOOT),
    )
    with Tpm(config.tcti) as tpm, open_channel(config) as channel:
        agent = Agent(config, tpm, AttestationClient(channel))
        agent.enroll()
        assert agent.attest_once().status == pb.TRUST_STATUS_AFFIRMING


def test_plaintext_client_cannot_talk_to_tls_verifier(make_verifier: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "verifier.lightgate.test")
    handle = make_verifier(tls_cert=cert, tls_key=key)
    with grpc.insecure_channel(handle.address) as channel:
        stub = pb_grpc.AttestationStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Challenge(pb.ChallengeRequest(node_id="n"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_agent_refuses_verifier_with_untrusted_certificate(
    make_verifier: Any, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path, "verifier.lightgate.test")
    other_ca, _ = _self_signed(tmp_path, "someone-else.test")
    handle = make_verifier(tls_cert=cert, tls_key=key)
    config = AgentConfig(
        verifier=handle.address, tls_ca=other_ca, tls_server_name="verifier.lightgate.test"
    )
    with open_channel(config) as channel:
        stub = AttestationClient(channel)
        with pytest.raises(RpcError) as caught:
            stub.Challenge(pb.ChallengeRequest(node_id="n"), timeout=5)
    assert caught.value.code == StatusCode.UNAVAILABLE
    assert "certificate" in caught.value.details


def test_agent_refuses_verifier_under_another_name(make_verifier: Any, tmp_path: Path) -> None:
    """The CA is right, the name is not: a verifier impersonated with a certificate the
    same CA issued for another host is refused."""
    cert, key = _self_signed(tmp_path, "verifier.lightgate.test")
    handle = make_verifier(tls_cert=cert, tls_key=key)
    config = AgentConfig(
        verifier=handle.address, tls_ca=cert, tls_server_name="other.lightgate.test"
    )
    with open_channel(config) as channel, pytest.raises(RpcError) as caught:
        AttestationClient(channel).Challenge(pb.ChallengeRequest(node_id="n"), timeout=5)
    assert caught.value.code == StatusCode.UNAVAILABLE

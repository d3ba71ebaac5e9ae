"""Admission end to end on real swtpm nodes and a real verifier: NodeTrust (Get, Filter,
Watch) through every trust state, the scheduler extender over the verifier's own HTTP
listener, and the credential gate: TPM-bound certificates and tokens only while the
node is affirming, never outliving its trust, revoked onto the CRL when trust is lost,
and refused for every forgery a node or an onlooker can make."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestor.agent import Agent
from attestor.bound_key import csr_builder, load_or_create_bound_key
from lightgate.config import (
    AdminConfig,
    AdminToken,
    AdmissionConfig,
    LocationConfig,
    ResultsConfig,
    SiteRule,
)
from lightgate.wire.v1 import admin_pb2 as admin_pb
from lightgate.wire.v1 import admin_pb2_grpc as admin_grpc
from lightgate.wire.v1 import admission_pb2 as pb
from lightgate.wire.v1 import admission_pb2_grpc as pb_grpc
from lightgate.wire.v1 import attestation_pb2 as attestation_pb
from tests.integration.conftest import AgentFactory, SwtpmFactory, VerifierFactory
from verifier.admission.ca import ATTESTATION_EXTENSION_OID, read_attestation_extension
from verifier.jose import b64url_decode, keys_of_jwks, thumbprint, verify_jws

TOKEN = "operator-token-for-admission-tests"  # a test credential
LAB = {"region": "eu-west", "dc": "ams1"}
TRUST_SECONDS = 3.0
EU = pb.WorkloadRequirements(
    workload="web", location={"region": pb.AllowedValues(values=["eu-west"])}
)
US = pb.WorkloadRequirements(
    workload="db", location={"region": pb.AllowedValues(values=["us-east"])}
)


def _verifier(make_verifier: VerifierFactory, database_url: str | None, **extra: Any) -> Any:
    settings: dict[str, Any] = {
        "results": ResultsConfig(trust_seconds=TRUST_SECONDS, https_listen="127.0.0.1:0"),
        "admin": AdminConfig(
            listen="127.0.0.1:0",
            tokens=[
                AdminToken(operator="alice", sha256=hashlib.sha256(TOKEN.encode()).hexdigest())
            ],
        ),
        "location": LocationConfig(
            sites=[SiteRule(cidr="127.0.0.0/8", site="lab", attributes=LAB)]
        ),
        "admission": AdmissionConfig(token_audiences=("payments", "api.example")),
    }
    settings.update(extra)
    return make_verifier(database_url, **settings)


class Operator:
    def __init__(self, handle: Any) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.running.admin_port}")
        self.stub = admin_grpc.AdminStub(channel)
        self.auth = [("authorization", f"Bearer {TOKEN}")]

    def tag(self, node: str) -> None:
        self.stub.TagNode(admin_pb.TagNodeRequest(node_id=node, attributes=LAB), metadata=self.auth)

    def revoke(self, node: str, reason: str) -> None:
        self.stub.RevokeNode(
            admin_pb.RevokeNodeRequest(node_id=node, reason=reason), metadata=self.auth
        )

    def restore(self, node: str) -> None:
        self.stub.RestoreNode(
            admin_pb.RestoreNodeRequest(node_id=node, reason="found"), metadata=self.auth
        )


def _trusted_node(
    make_swtpm: SwtpmFactory, make_agent: AgentFactory, handle: Any, operator: Operator
) -> Agent:
    agent = make_agent(make_swtpm(), handle)
    agent.enroll()
    operator.tag(agent.node_id)
    response = agent.attest_once()
    assert response.status == attestation_pb.TRUST_STATUS_AFFIRMING, response.reason
    return agent


def _refusals(reply: pb.FilterResponse) -> dict[str, int]:
    return {r.node_id: r.kind for r in reply.refused}


def _next(stream: Any, kind: int) -> pb.TrustChange:
    for change in stream:
        if change.kind == kind:
            return change  # type: ignore[no-any-return]
    raise AssertionError("the watch ended")


def test_node_trust_through_every_state(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    database_url: str,
) -> None:
    handle = _verifier(make_verifier, database_url)
    operator = Operator(handle)
    nodes = pb_grpc.NodeTrustStub(handle.channel)
    agent = make_agent(make_swtpm(), handle)
    agent.enroll()
    node = agent.node_id

    # enrolled, never attested: untrusted; a name nobody enrolled: unknown
    reply = nodes.Filter(pb.FilterRequest(node_ids=[node, "stranger"]))
    assert list(reply.allowed) == []
    assert _refusals(reply) == {
        node: pb.REFUSAL_KIND_UNTRUSTED,
        "stranger": pb.REFUSAL_KIND_UNKNOWN,
    }
    with pytest.raises(grpc.RpcError) as unknown:
        nodes.Get(pb.GetNodeTrustRequest(node_id="stranger"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    watch = nodes.Watch(pb.WatchRequest(node_ids=[node], include_current=True), timeout=60)
    assert _next(watch, pb.CHANGE_KIND_CURRENT).state == "enrolled"

    # affirming: allowed where it attested to be, refused for a workload elsewhere
    operator.tag(node)
    assert agent.attest_once().status == attestation_pb.TRUST_STATUS_AFFIRMING
    gained = _next(watch, pb.CHANGE_KIND_GAINED)
    assert gained.state == "affirming" and gained.HasField("expires_at")
    info = nodes.Get(pb.GetNodeTrustRequest(node_id=node))
    assert (info.state, dict(info.location), info.site) == ("affirming", LAB, "lab")
    assert info.ear and info.status == attestation_pb.TRUST_STATUS_AFFIRMING
    assert list(nodes.Filter(pb.FilterRequest(requirements=EU, node_ids=[node])).allowed) == [node]
    wrong = nodes.Filter(pb.FilterRequest(requirements=US, node_ids=[node]))
    assert _refusals(wrong) == {node: pb.REFUSAL_KIND_WRONG_LOCATION}
    assert "region=eu-west" in wrong.refused[0].reason

    # the scheduler extender, over the verifier's own HTTP listener, agrees
    extender = _post(
        handle,
        "/scheduler/filter",
        {
            "Pod": {
                "metadata": {
                    "name": "db-0",
                    "annotations": {"lightgate.io/location.region": "us-east"},
                }
            },
            "NodeNames": [node],
        },
    )
    assert not extender.get("NodeNames") and node in json.dumps(extender)

    # revoked: refused at once, and watchers are told
    operator.revoke(node, "disk reported stolen")
    revoked = _next(watch, pb.CHANGE_KIND_REVOKED)
    assert "disk reported stolen" in revoked.reason
    reply = nodes.Filter(pb.FilterRequest(node_ids=[node]))
    assert _refusals(reply) == {node: pb.REFUSAL_KIND_REVOKED}

    # lost: restored and trusted again, then a refused attestation
    operator.restore(node)
    assert agent.attest_once().status == attestation_pb.TRUST_STATUS_AFFIRMING
    _next(watch, pb.CHANGE_KIND_GAINED)
    request = agent.collect(agent.challenge())
    for bank in request.pcr_values:
        if 4 in bank.values:
            bank.values[4] = bytes(len(bank.values[4]))
    assert agent.submit(request).status == attestation_pb.TRUST_STATUS_CONTRAINDICATED
    _next(watch, pb.CHANGE_KIND_LOST)
    assert _refusals(nodes.Filter(pb.FilterRequest(node_ids=[node]))) == {
        node: pb.REFUSAL_KIND_UNTRUSTED
    }

    # expired: no attestation within the trust lifetime; told without any sweep
    assert agent.attest_once().status == attestation_pb.TRUST_STATUS_AFFIRMING
    _next(watch, pb.CHANGE_KIND_GAINED)
    expired = _next(watch, pb.CHANGE_KIND_EXPIRED)
    assert expired.state == "expired"
    assert _refusals(nodes.Filter(pb.FilterRequest(node_ids=[node]))) == {
        node: pb.REFUSAL_KIND_EXPIRED
    }
    watch.cancel()


def _post(handle: Any, path: str, document: object) -> dict[str, Any]:
    url = f"http://127.0.0.1:{handle.running.https.port}{path}"
    request = urllib.request.Request(
        url, json.dumps(document).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback
        answer: dict[str, Any] = json.load(response)
    return answer


def _get(handle: Any, path: str) -> bytes:
    url = f"http://127.0.0.1:{handle.running.https.port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback
        body: bytes = response.read()
    return body


class Node:
    """A node asking for credentials: its agent, TPM-bound key and the gate's stub."""

    def __init__(self, agent: Agent, handle: Any) -> None:
        self.agent = agent
        self.stub = pb_grpc.CredentialsStub(handle.channel)
        self.key = load_or_create_bound_key(
            agent.tpm, agent.config.state_dir, node_id=agent.node_id
        )

    def proof(self, nonce: bytes | None = None) -> pb.KeyCertification:
        if nonce is None:
            nonce = self.stub.Challenge(
                pb.CredentialChallengeRequest(node_id=self.agent.node_id)
            ).nonce
        c = self.key.certification(self.agent.ak, nonce)
        return pb.KeyCertification(
            public_area=c.public_area,
            certify_info=c.certify_info,
            certify_signature=c.certify_signature,
            creation_data=c.creation_data,
            creation_info=c.creation_info,
            creation_signature=c.creation_signature,
            nonce=nonce,
        )

    def certificate(self, **changes: Any) -> pb.IssueCertificateResponse:
        fields: dict[str, Any] = {
            "node_id": self.agent.node_id,
            "key": self.proof(),
            "csr": self.key.csr(self.agent.node_id),
        }
        fields.update(changes)
        response: pb.IssueCertificateResponse = self.stub.IssueCertificate(
            pb.IssueCertificateRequest(**fields)
        )
        return response

    def token(self, audience: str = "api.example") -> pb.IssueTokenResponse:
        request = pb.IssueTokenRequest(
            node_id=self.agent.node_id, key=self.proof(), audience=[audience]
        )
        response: pb.IssueTokenResponse = self.stub.IssueToken(request)
        return response


def _refused(call: Any, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() == code, refused.value.details()
    return refused.value.details() or ""


def test_credentials_are_tpm_bound_and_last_no_longer_than_trust(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    database_url: str,
) -> None:
    handle = _verifier(
        make_verifier,
        database_url,
        results=ResultsConfig(trust_seconds=60, https_listen="127.0.0.1:0"),
    )
    operator = Operator(handle)
    node = Node(_trusted_node(make_swtpm, make_agent, handle, operator), handle)
    node_id = node.agent.node_id
    trust = pb_grpc.NodeTrustStub(handle.channel).Get(pb.GetNodeTrustRequest(node_id=node_id))
    trust_ends = trust.expires_at.ToDatetime(tzinfo=UTC)

    issued = node.certificate()
    certificate = x509.load_der_x509_certificate(issued.certificate)
    ca = x509.load_der_x509_certificate(issued.chain[0])
    certificate.verify_directly_issued_by(ca)
    assert certificate.not_valid_after_utc <= trust_ends  # never beyond the node's trust
    tpm_key = x509.load_der_x509_csr(node.key.csr(node_id)).public_key()
    assert certificate.public_key() == tpm_key
    extension = certificate.extensions.get_extension_for_oid(ATTESTATION_EXTENSION_OID).value
    assert read_attestation_extension(extension.value) == (
        hashlib.sha256(trust.ear.encode()).digest(),
        "affirming",
    )
    assert _get(handle, "/ca/certificate") == issued.chain[0]

    # the token: OIDC discovery leads to the keys; bound to the TPM key; within trust
    token = node.token("payments")
    discovery = json.loads(_get(handle, "/.well-known/openid-configuration"))
    assert discovery["jwks_uri"].endswith("/.well-known/jwks.json")
    keys = keys_of_jwks(json.loads(_get(handle, "/.well-known/jwks.json")))
    claims = json.loads(verify_jws(token.token, keys, typ="at+jwt").payload)
    assert (claims["iss"], claims["sub"], claims["aud"]) == (
        discovery["issuer"],
        node_id,
        "payments",
    )
    assert isinstance(tpm_key, ec.EllipticCurvePublicKey)
    assert claims["cnf"] == {"jkt": thumbprint(tpm_key)}
    assert claims["exp"] <= trust_ends.timestamp()
    assert json.loads(b64url_decode(token.token.split(".")[0]))["typ"] == "at+jwt"
    # an audience the verifier was not told to issue for: refused, whoever asks
    assert "no token is issued for audience elsewhere" in _refused(lambda: node.token("elsewhere"))

    # trust lost: the certificate goes on the CRL, and nothing new is issued
    operator.revoke(node_id, "decommissioned")
    crl = _wait_for_crl(handle, issued.serial)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert "revoked" in _refused(node.certificate)
    assert "revoked" in _refused(node.token)
    # affirming again: credentials again
    operator.restore(node_id)
    assert node.agent.attest_once().status == attestation_pb.TRUST_STATUS_AFFIRMING
    assert node.certificate().serial != issued.serial


def _wait_for_crl(handle: Any, serial_hex: str) -> x509.CertificateRevocationList:
    deadline = time.monotonic() + 10
    while True:
        crl = x509.load_der_x509_crl(_get(handle, "/ca/crl"))
        if crl.get_revoked_certificate_by_serial_number(int(serial_hex, 16)) is not None:
            return crl
        assert time.monotonic() < deadline, "the certificate never reached the CRL"
        time.sleep(0.05)


def test_credential_forgeries_are_refused(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
) -> None:
    handle = _verifier(
        make_verifier, None, results=ResultsConfig(trust_seconds=60, https_listen="127.0.0.1:0")
    )
    operator = Operator(handle)
    alice = Node(_trusted_node(make_swtpm, make_agent, handle, operator), handle)
    mallory = Node(_trusted_node(make_swtpm, make_agent, handle, operator), handle)
    gate = alice.stub

    # a replayed proof: the nonce is single-use
    proof = alice.proof()
    csr = alice.key.csr(alice.agent.node_id)
    gate.IssueCertificate(
        pb.IssueCertificateRequest(node_id=alice.agent.node_id, key=proof, csr=csr)
    )
    replay = pb.IssueCertificateRequest(node_id=alice.agent.node_id, key=proof, csr=csr)
    assert "used before" in _refused(lambda: gate.IssueCertificate(replay))

    # another node's key and certification, presented as alice: its AK is not hers
    mallory_proof = mallory.proof(
        gate.Challenge(pb.CredentialChallengeRequest(node_id=alice.agent.node_id)).nonce
    )
    forged = pb.IssueCertificateRequest(
        node_id=alice.agent.node_id, key=mallory_proof, csr=mallory.key.csr(alice.agent.node_id)
    )
    _refused(lambda: gate.IssueCertificate(forged))

    # a nonce issued to another node
    foreign = alice.proof(
        gate.Challenge(pb.CredentialChallengeRequest(node_id=mallory.agent.node_id)).nonce
    )
    stolen = pb.IssueCertificateRequest(node_id=alice.agent.node_id, key=foreign, csr=csr)
    assert "not issued to this node" in _refused(lambda: gate.IssueCertificate(stolen))

    # a genuine certification, but a CSR for a software key
    software = ec.generate_private_key(ec.SECP256R1())
    soft_csr = csr_builder(alice.agent.node_id).sign(software, hashes.SHA256())
    swapped = pb.IssueCertificateRequest(
        node_id=alice.agent.node_id,
        key=alice.proof(),
        csr=soft_csr.public_bytes(serialization.Encoding.DER),
    )
    _refused(lambda: gate.IssueCertificate(swapped))

    # tampered certification bytes
    tampered = alice.proof()
    tampered.certify_info = tampered.certify_info[:-1] + bytes([tampered.certify_info[-1] ^ 1])
    bad = pb.IssueCertificateRequest(node_id=alice.agent.node_id, key=tampered, csr=csr)
    _refused(lambda: gate.IssueCertificate(bad))

    # a workload that may not run where alice is
    assert "wrong-location" in _refused(lambda: alice.certificate(requirements=US))

    # a node that is not affirming, and one nobody enrolled
    request = mallory.agent.collect(mallory.agent.challenge())
    for bank in request.pcr_values:
        if 4 in bank.values:
            bank.values[4] = bytes(len(bank.values[4]))
    assert mallory.agent.submit(request).status == attestation_pb.TRUST_STATUS_CONTRAINDICATED
    assert "untrusted" in _refused(mallory.certificate)
    _refused(
        lambda: gate.Challenge(pb.CredentialChallengeRequest(node_id="stranger")),
        grpc.StatusCode.NOT_FOUND,
    )
    # nothing above was issued but alice's first certificate
    issued = handle.running.store.credentials_of(alice.agent.node_id)
    assert len(issued) == 1 and handle.running.store.credentials_of(mallory.agent.node_id) == []
    assert datetime.now(UTC) < issued[0].not_after


def test_a_change_made_on_another_replica_reaches_this_ones_watchers(
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
    database_url: str,
) -> None:
    first = _verifier(make_verifier, database_url)
    second = _verifier(make_verifier, database_url)  # another replica, same database
    agent = _trusted_node(make_swtpm, make_agent, first, Operator(first))
    node = agent.node_id
    watch = pb_grpc.NodeTrustStub(second.channel).Watch(
        pb.WatchRequest(node_ids=[node], include_current=True), timeout=30
    )
    current = next(iter(watch))
    if current.state != "affirming":  # the second replica had not read it yet
        assert _next(watch, pb.CHANGE_KIND_GAINED).state == "affirming"
    Operator(first).revoke(node, "revoked on the other replica")
    assert "other replica" in _next(watch, pb.CHANGE_KIND_REVOKED).reason
    refused = pb_grpc.NodeTrustStub(second.channel).Filter(pb.FilterRequest(node_ids=[node]))
    assert _refusals(refused) == {node: pb.REFUSAL_KIND_REVOKED}
    watch.cancel()

"""lightgate.v1.Results over a real gRPC channel: the JWKS, a node's latest result in
either format, and NOT_FOUND for a node with none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from lightgate.wire.v1 import attestation_pb2, results_pb2, results_pb2_grpc
from verifier.api.results import ResultsServicer
from verifier.jose import SigningKey, jwks_document, keys_of_jwks
from verifier.results import (
    AttestationResult,
    ResultFormat,
    ResultView,
    evidence_digest,
    sign_result,
    sign_result_cose,
    verify_result,
    verify_result_cose,
)

KEY = SigningKey.generate()
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
RESULT = AttestationResult(
    node_id="node-1",
    status="affirming",
    trust_vector={"hardware": 2, "executables": 2},
    policy_id="default",
    nonce=b"\x03" * 32,
    issued_at=NOW,
    expires_at=NOW + timedelta(minutes=1),
    evidence_digest=evidence_digest(b"evidence"),
    reasons={},
    verifier_id="lightgate",
    failed_checks=(),
)


def latest(node_id: str, result_format: ResultFormat) -> ResultView | None:
    if node_id != "node-1":
        return None
    return ResultView(
        node_id=node_id,
        state="affirming",
        status=RESULT.status,
        jwt=sign_result(RESULT, KEY) if result_format == "jwt" else None,
        cose=sign_result_cose(RESULT, KEY) if result_format == "cose" else None,
        issued_at=RESULT.issued_at,
        expires_at=RESULT.expires_at,
    )


@pytest.fixture
def stub() -> Iterator[results_pb2_grpc.ResultsStub]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = ResultsServicer(lambda: jwks_document([KEY.public_key]), latest)
    results_pb2_grpc.add_ResultsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield results_pb2_grpc.ResultsStub(channel)
    channel.close()
    server.stop(None)


def test_get_jwks(stub: results_pb2_grpc.ResultsStub) -> None:
    response = stub.GetJwks(results_pb2.GetJwksRequest(), timeout=5)
    assert list(keys_of_jwks(json.loads(response.jwks))) == [KEY.kid]


def test_get_result_jwt_by_default(stub: results_pb2_grpc.ResultsStub) -> None:
    response = stub.GetResult(results_pb2.GetResultRequest(node_id="node-1"), timeout=5)
    assert response.state == "affirming"
    assert response.status == attestation_pb2.TRUST_STATUS_AFFIRMING
    assert response.cose == b""
    assert verify_result(response.jwt, {KEY.kid: KEY.public_key}, NOW) == RESULT
    assert response.expires_at.ToDatetime(tzinfo=UTC) == RESULT.expires_at


def test_get_result_cose(stub: results_pb2_grpc.ResultsStub) -> None:
    request = results_pb2.GetResultRequest(node_id="node-1", format=results_pb2.RESULT_FORMAT_COSE)
    response = stub.GetResult(request, timeout=5)
    assert response.jwt == ""
    assert verify_result_cose(response.cose, {KEY.kid: KEY.public_key}, NOW) == RESULT


def test_unknown_node_is_not_found(stub: results_pb2_grpc.ResultsStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetResult(results_pb2.GetResultRequest(node_id="ghost"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost" in (caught.value.details() or "")


def test_missing_node_id_is_invalid(stub: results_pb2_grpc.ResultsStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetResult(results_pb2.GetResultRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_failing_store_is_internal_without_details() -> None:
    def broken(node_id: str, result_format: ResultFormat) -> ResultView | None:
        raise RuntimeError("database password is hunter2")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = ResultsServicer(lambda: jwks_document([KEY.public_key]), broken)
    results_pb2_grpc.add_ResultsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            results_pb2_grpc.ResultsStub(channel).GetResult(
                results_pb2.GetResultRequest(node_id="node-1"), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "hunter2" not in (caught.value.details() or "")
    finally:
        server.stop(None)

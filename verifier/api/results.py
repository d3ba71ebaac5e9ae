"""gRPC servicer for lightgate.v1.Results: the keys that verify results, and a node's
latest signed result.  Thin: decode, call what it was given, encode.

Refusals map to gRPC status as in `verifier.api.attestation.refusals_to_status`; the
mapping is restated here (`_refusals_to_status`) so that this read-only service does not
import the attestation service and everything behind it.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

import grpc

from lightgate.wire import convert
from lightgate.wire.v1 import results_pb2 as pb
from lightgate.wire.v1 import results_pb2_grpc as pb_grpc
from verifier.errors import MalformedRequest, UnknownNode, VerifierError
from verifier.results import ResultFormat, ResultView

log = logging.getLogger("lightgate.verifier.api")

Request = TypeVar("Request")
Response = TypeVar("Response")

_FORMATS: dict[int, ResultFormat] = {
    pb.RESULT_FORMAT_UNSPECIFIED: "jwt",
    pb.RESULT_FORMAT_JWT: "jwt",
    pb.RESULT_FORMAT_COSE: "cose",
}


def _refusals_to_status(
    handler: Callable[[ResultsServicer, Request, grpc.ServicerContext], Response],
) -> Callable[[ResultsServicer, Request, grpc.ServicerContext], Response]:
    """A VerifierError becomes its gRPC status with a one-line reason; anything else is a
    malfunction: logged here with its traceback, INTERNAL to the client."""

    @functools.wraps(handler)
    def wrapper(self: ResultsServicer, request: Request, context: grpc.ServicerContext) -> Response:
        try:
            return handler(self, request, context)
        except VerifierError as exc:
            context.abort(getattr(grpc.StatusCode, exc.status), exc.reason)
        except Exception:  # the RPC boundary: fail closed, report a malfunction
            log.exception("verifier malfunction", extra={"fields": {"rpc": handler.__name__}})
            context.abort(grpc.StatusCode.INTERNAL, "verifier malfunction; see the verifier's log")
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper


class ResultsServicer(pb_grpc.ResultsServicer):
    def __init__(
        self,
        jwks: Callable[[], Mapping[str, object]],
        latest_result: Callable[[str, ResultFormat], ResultView | None],
    ) -> None:
        self._jwks = jwks
        self._latest_result = latest_result

    @_refusals_to_status
    def GetJwks(
        self, request: pb.GetJwksRequest, context: grpc.ServicerContext
    ) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks=json.dumps(self._jwks(), separators=(",", ":")))

    @_refusals_to_status
    def GetResult(
        self, request: pb.GetResultRequest, context: grpc.ServicerContext
    ) -> pb.GetResultResponse:
        node_id = request.node_id
        if not node_id:
            raise MalformedRequest("GetResult needs a node_id")
        result_format = _FORMATS.get(request.format)
        if result_format is None:
            raise MalformedRequest(f"unknown result format {request.format}", node_id=node_id)
        view = self._latest_result(node_id, result_format)
        signed = None if view is None else (view.jwt if result_format == "jwt" else view.cose)
        if view is None or not signed:
            raise UnknownNode(
                f"no signed result for node {node_id!r}: it is unknown or has not attested yet",
                node_id=node_id,
            )
        return pb.GetResultResponse(
            node_id=view.node_id,
            state=view.state,
            status=convert.STATUS_TO_WIRE[view.status],
            jwt=view.jwt or "",
            cose=view.cose or b"",
            issued_at=convert.timestamp(view.issued_at),
            expires_at=convert.timestamp(view.expires_at),
        )

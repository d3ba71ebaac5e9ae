"""gRPC servicer for lightgate.v1.Attestation: decode, call the Verifier, encode."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from lightgate.wire import convert
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc
from verifier.errors import MalformedRequest, VerifierError
from verifier.evidence.errors import TpmStructureMalformed
from verifier.location import join_metadata
from verifier.service import EnrollRequest, Verifier

log = logging.getLogger("lightgate.verifier.api")

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.ServicerContext], Response]


def _status(name: str) -> grpc.StatusCode:
    code: grpc.StatusCode = getattr(grpc.StatusCode, name)
    return code


def refusals_to_status(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Typed refusals become their gRPC status with a one-line reason; anything else is
    a verifier malfunction: logged with its traceback here, INTERNAL to the client (no
    traceback leaves the process), and never a trusted result."""

    @functools.wraps(handler)
    def wrapper(self: Any, request: Request, context: grpc.ServicerContext) -> Response:
        try:
            return handler(self, request, context)
        except VerifierError as exc:
            context.abort(_status(exc.status), exc.reason)
        except TpmStructureMalformed as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        except Exception:  # the RPC boundary: fail closed, report a malfunction
            log.exception("verifier malfunction", extra={"fields": {"rpc": handler.__name__}})
            context.abort(grpc.StatusCode.INTERNAL, "verifier malfunction; see the verifier's log")
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper


class AttestationServicer(pb_grpc.AttestationServicer):
    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier

    @refusals_to_status
    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        challenge = self._verifier.enroll(
            EnrollRequest(
                node_id=request.node_id,
                ek_public=request.ek_public,
                ak_public=request.ak_public,
                ek_certificate=request.ek_certificate or None,
                ek_intermediates=tuple(request.ek_intermediates),
                join_token=request.join_token or None,
            )
        )
        return pb.EnrollResponse(
            credential_blob=challenge.credential.credential_blob,
            encrypted_secret=challenge.credential.encrypted_secret,
            expires_at=convert.timestamp(challenge.expires_at),
        )

    @refusals_to_status
    def ActivateCredential(
        self, request: pb.ActivateCredentialRequest, context: grpc.ServicerContext
    ) -> pb.ActivateCredentialResponse:
        node = self._verifier.activate(request.node_id, request.secret)
        assert node.enrolled_at is not None
        return pb.ActivateCredentialResponse(
            node_id=node.node_id, enrolled_at=convert.timestamp(node.enrolled_at)
        )

    @refusals_to_status
    def Challenge(
        self, request: pb.ChallengeRequest, context: grpc.ServicerContext
    ) -> pb.ChallengeResponse:
        challenge = self._verifier.challenge(request.node_id)
        return pb.ChallengeResponse(
            nonce=challenge.nonce,
            pcr_selection=convert.selection_to_wire(challenge.pcr_selection),
            expires_at=convert.timestamp(challenge.expires_at),
            asset_tag=challenge.asset_tag,
        )

    @refusals_to_status
    def Attest(self, request: pb.AttestRequest, context: grpc.ServicerContext) -> pb.AttestResponse:
        try:
            pcr_values = convert.pcr_values_from_wire(list(request.pcr_values))
        except TpmStructureMalformed as exc:
            raise MalformedRequest(exc.message, node_id=request.node_id) from None
        outcome = self._verifier.attest(
            request.node_id,
            request.quote_message,
            request.quote_signature,
            pcr_values,
            peer=context.peer() or "",
            event_log=request.event_log,
            runtime_log=request.runtime_log,
            metadata=join_metadata(context.invocation_metadata() or ()),
        )
        response = pb.AttestResponse(
            status=convert.STATUS_TO_WIRE[outcome.status],
            failed_checks=list(outcome.failed_checks),
            reason=outcome.reason or "",
            result_id=outcome.result_id,
            rebooted=outcome.rebooted,
            attested_at=convert.timestamp(outcome.attested_at),
            workarounds=list(outcome.workarounds),
            findings=list(outcome.findings),
            result=outcome.result,
        )
        if outcome.expires_at is not None:
            response.expires_at.CopyFrom(convert.timestamp(outcome.expires_at))
        return response

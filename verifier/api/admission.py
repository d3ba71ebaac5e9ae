"""gRPC servicers for lightgate.v1.NodeTrust and lightgate.v1.Credentials: decode, ask
the trust index or the credential gate, encode.

NodeTrust reads only the in-memory trust index (never the database).  A Watch holds one
of the server's worker threads for as long as it lasts, so the number of concurrent
watches is capped (`max_watches`); a watcher beyond it is told RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from http import HTTPStatus
from typing import Final

import grpc

from lightgate.wire import convert
from lightgate.wire.v1 import admission_pb2 as pb
from lightgate.wire.v1 import admission_pb2_grpc as pb_grpc
from lightgate.wire.v1 import attestation_pb2 as attestation_pb
from verifier.admission.ca import openid_configuration
from verifier.admission.decide import NodeTrust, RefusalMemo, Requirements, filter_nodes
from verifier.admission.gate import CredentialGate
from verifier.admission.index import TrustChange, TrustIndex, WatchClosed
from verifier.api.attestation import refusals_to_status
from verifier.api.https import Request, Response, Router, json_response
from verifier.errors import MalformedRequest, UnknownNode
from verifier.evidence.certify import KeyCertification

MAX_CANDIDATES: Final = 100_000
#: Relying parties may cache the CRL this long: a revocation reaches them within it.
CRL_MAX_AGE_SECONDS: Final = 5
MAX_ATTRIBUTES: Final = 32
_POLL_SECONDS: Final = 0.5  # how soon a Watch notices its client went away

REFUSAL_TO_WIRE: Final = {
    "untrusted": pb.REFUSAL_KIND_UNTRUSTED,
    "expired": pb.REFUSAL_KIND_EXPIRED,
    "wrong-location": pb.REFUSAL_KIND_WRONG_LOCATION,
    "unknown": pb.REFUSAL_KIND_UNKNOWN,
    "revoked": pb.REFUSAL_KIND_REVOKED,
}
CHANGE_TO_WIRE: Final = {
    "current": pb.CHANGE_KIND_CURRENT,
    "gained": pb.CHANGE_KIND_GAINED,
    "lost": pb.CHANGE_KIND_LOST,
    "expired": pb.CHANGE_KIND_EXPIRED,
    "revoked": pb.CHANGE_KIND_REVOKED,
    "updated": pb.CHANGE_KIND_UPDATED,
}


def requirements_of(message: pb.WorkloadRequirements) -> Requirements:
    """The workload's requirements; malformed ones are refused, not ignored."""
    if len(message.location) > MAX_ATTRIBUTES:
        raise MalformedRequest(f"at most {MAX_ATTRIBUTES} location attributes")
    location: dict[str, frozenset[str]] = {}
    for name, allowed in message.location.items():
        values = frozenset(v for v in allowed.values if v)
        if not name or not values:
            raise MalformedRequest(f"location requirement {name!r} lists no value")
        location[name] = values
    return Requirements(message.workload, location, message.allow_warning)


def certification_of(message: pb.KeyCertification) -> KeyCertification:
    return KeyCertification(
        public_area=message.public_area,
        certify_info=message.certify_info,
        certify_signature=message.certify_signature,
        creation_data=message.creation_data,
        creation_info=message.creation_info,
        creation_signature=message.creation_signature,
    )


def trust_info(entry: NodeTrust, now: datetime) -> pb.NodeTrustInfo:
    info = pb.NodeTrustInfo(
        node_id=entry.node_id,
        state=entry.state_at(now),
        status=convert.STATUS_TO_WIRE.get(
            entry.status or "", attestation_pb.TRUST_STATUS_UNSPECIFIED
        ),
        ear=entry.ear or "",
        reasons=[entry.reason_at(now)],
        location=dict(entry.location),
        site=entry.site or "",
    )
    if entry.expires_at is not None and entry.state_at(now) in ("affirming", "warning"):
        info.expires_at.CopyFrom(convert.timestamp(entry.expires_at))
    if entry.since is not None:
        info.since.CopyFrom(convert.timestamp(entry.since))
    return info


def change_message(change: TrustChange) -> pb.TrustChange:
    message = pb.TrustChange(
        node_id=change.node_id,
        kind=CHANGE_TO_WIRE[change.kind],
        state=change.state,
        reason=change.reason,
        at=convert.timestamp(change.at),
        sequence=change.sequence,
    )
    if change.expires_at is not None:
        message.expires_at.CopyFrom(convert.timestamp(change.expires_at))
    return message


class NodeTrustServicer(pb_grpc.NodeTrustServicer):
    def __init__(
        self, index: TrustIndex, clock: Callable[[], datetime], max_watches: int = 4
    ) -> None:
        self._index = index
        self._now = clock
        self._watches = threading.BoundedSemaphore(max_watches)
        self._refusals = RefusalMemo()  # Filter's refused verdicts, reused (decide.py)

    @refusals_to_status
    def Get(
        self, request: pb.GetNodeTrustRequest, context: grpc.ServicerContext
    ) -> pb.NodeTrustInfo:
        entry = self._index.get(request.node_id)
        if entry is None:
            raise UnknownNode("not a node this verifier knows", node_id=request.node_id)
        return trust_info(entry, self._now())

    @refusals_to_status
    def Filter(self, request: pb.FilterRequest, context: grpc.ServicerContext) -> pb.FilterResponse:
        if len(request.node_ids) > MAX_CANDIDATES:
            raise MalformedRequest(f"at most {MAX_CANDIDATES} candidate nodes per request")
        requirements = requirements_of(request.requirements)
        outcome = filter_nodes(
            request.node_ids, self._index.get, requirements, self._now(), self._refusals
        )
        response = pb.FilterResponse(allowed=outcome.allowed)
        add = response.refused.add  # a third cheaper than building each RefusedNode
        for verdict in outcome.refused:
            kind = REFUSAL_TO_WIRE[verdict.kind] if verdict.kind else pb.REFUSAL_KIND_UNSPECIFIED
            add(node_id=verdict.node_id, kind=kind, reason=verdict.reason)
        return response

    def Watch(
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TrustChange]:
        if not self._watches.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many concurrent watches on this verifier; watch another replica",
            )
        try:
            watcher = self._index.watch(request.node_ids, request.include_current, self._now())
            try:
                while context.is_active():
                    try:
                        change = watcher.next(_POLL_SECONDS)
                    except WatchClosed as closed:
                        context.abort(grpc.StatusCode.ABORTED, str(closed))
                    if change is not None:
                        yield change_message(change)
            finally:
                watcher.close()
        finally:
            self._watches.release()


class CredentialsServicer(pb_grpc.CredentialsServicer):
    def __init__(self, gate: CredentialGate) -> None:
        self._gate = gate

    @refusals_to_status
    def Challenge(
        self, request: pb.CredentialChallengeRequest, context: grpc.ServicerContext
    ) -> pb.CredentialChallengeResponse:
        nonce, expires_at = self._gate.challenge(request.node_id)
        return pb.CredentialChallengeResponse(nonce=nonce, expires_at=convert.timestamp(expires_at))

    @refusals_to_status
    def IssueCertificate(
        self, request: pb.IssueCertificateRequest, context: grpc.ServicerContext
    ) -> pb.IssueCertificateResponse:
        issued = self._gate.issue_certificate(
            request.node_id,
            certification_of(request.key),
            request.key.nonce,
            request.csr,
            requirements_of(request.requirements),
        )
        return pb.IssueCertificateResponse(
            certificate=issued.der,
            chain=list(issued.chain),
            serial=f"{issued.serial:x}",
            not_after=convert.timestamp(issued.not_after),
        )

    @refusals_to_status
    def IssueToken(
        self, request: pb.IssueTokenRequest, context: grpc.ServicerContext
    ) -> pb.IssueTokenResponse:
        issued = self._gate.issue_token(
            request.node_id,
            certification_of(request.key),
            request.key.nonce,
            list(request.audience),
            requirements_of(request.requirements),
            float(request.lifetime_seconds),
        )
        return pb.IssueTokenResponse(
            token=issued.token, expires_at=convert.timestamp(issued.expires_at)
        )


def add_credential_routes(router: Router, gate: CredentialGate) -> None:
    """`GET /ca/crl` (the CRL, DER), `GET /ca/certificate` (the issuing CA, DER) and
    `GET /.well-known/openid-configuration` (OIDC discovery of the token issuer)."""

    def crl(request: Request) -> Response:
        return Response(
            HTTPStatus.OK,
            "application/pkix-crl",  # RFC 5280, 4.2.1.13 / RFC 2585
            gate.crl(),
            (("Cache-Control", f"public, max-age={CRL_MAX_AGE_SECONDS}"),),
        )

    def certificate(request: Request) -> Response:
        return Response(HTTPStatus.OK, "application/pkix-cert", gate.ca_chain[0])

    def discovery(request: Request) -> Response:
        return json_response(HTTPStatus.OK, openid_configuration(gate.issuer))

    router.get("/ca/crl", crl)
    router.get("/ca/certificate", certificate)
    router.get("/.well-known/openid-configuration", discovery)

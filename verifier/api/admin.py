"""gRPC servicer for lightgate.v1.Admin: authenticate the operator, decode, call
`verifier.operators`, encode.

Authentication (config `admin.auth`), checked on every call before anything else:
- token: `authorization: Bearer <token>` metadata; the configuration holds only each
  token's SHA-256, compared in constant time, and names its operator.
- mtls: the listener requires a client certificate issued by `admin.client_ca` (gRPC
  checks the chain in the handshake); the operator is the certificate's common name.
A verifier with no operator credentials configured refuses every admin call.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc

from lightgate.config import AdminConfig
from lightgate.wire import convert
from lightgate.wire.v1 import admin_pb2 as pb
from lightgate.wire.v1 import admin_pb2_grpc as pb_grpc
from verifier.api.attestation import refusals_to_status
from verifier.errors import OperatorUnauthenticated
from verifier.operators import Operators
from verifier.store import AuditRecord, NodeRecord, TransitionRecord

Request = TypeVar("Request")
Response = TypeVar("Response")


class OperatorAuth:
    """Who is calling, from the call's credentials; OperatorUnauthenticated otherwise."""

    def __init__(self, config: AdminConfig) -> None:
        self._mode = config.auth
        self._tokens = [(bytes.fromhex(t.sha256), t.operator) for t in config.tokens]

    def operator(self, context: grpc.ServicerContext) -> str:
        if self._mode == "mtls":
            return self._from_certificate(context)
        return self._from_token(context)

    def _from_token(self, context: grpc.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata() or ())
        header = metadata.get("authorization", "")
        if not isinstance(header, str) or not header.startswith("Bearer "):
            raise OperatorUnauthenticated("an operator bearer token is required")
        digest = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).digest()
        operator = None
        for known, name in self._tokens:  # every entry compared: no timing by position
            if hmac.compare_digest(digest, known):
                operator = name
        if operator is None:
            raise OperatorUnauthenticated("the bearer token is not an operator's")
        return f"token:{operator}"

    def _from_certificate(self, context: grpc.ServicerContext) -> str:
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        if not names:
            raise OperatorUnauthenticated("an operator client certificate is required")
        return f"cert:{names[0].decode('utf-8', errors='replace')}"


def _authenticated(
    handler: Callable[[Any, str, Request, grpc.ServicerContext], Response],
) -> Callable[[Any, Request, grpc.ServicerContext], Response]:
    @functools.wraps(handler)
    def wrapper(self: AdminServicer, request: Request, context: grpc.ServicerContext) -> Response:
        return handler(self, self._auth.operator(context), request, context)

    return refusals_to_status(wrapper)


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, operators: Operators, auth: OperatorAuth, clock: Callable[[], datetime]):
        self._operators = operators
        self._auth = auth
        self._now = clock

    @_authenticated
    def TagNode(
        self, operator: str, request: pb.TagNodeRequest, context: grpc.ServicerContext
    ) -> pb.TagNodeResponse:
        tag = self._operators.tag(operator, request.node_id, dict(request.attributes))
        return pb.TagNodeResponse(
            node_id=tag.node_id, asset_tag=tag.token, issued_at=convert.timestamp(tag.issued_at)
        )

    @_authenticated
    def RevokeNode(
        self, operator: str, request: pb.RevokeNodeRequest, context: grpc.ServicerContext
    ) -> pb.NodeTrustState:
        self._operators.revoke(operator, request.node_id, request.reason)
        return self._state(request.node_id)

    @_authenticated
    def RestoreNode(
        self, operator: str, request: pb.RestoreNodeRequest, context: grpc.ServicerContext
    ) -> pb.NodeTrustState:
        self._operators.restore(operator, request.node_id, request.reason)
        return self._state(request.node_id)

    def _state(self, node_id: str) -> pb.NodeTrustState:
        (node,) = [n for n in self._operators.nodes() if n.node_id == node_id]
        return node_state(node, self._now(), self._operators.tag_of(node_id))

    @_authenticated
    def ListNodes(
        self, operator: str, request: pb.ListNodesRequest, context: grpc.ServicerContext
    ) -> pb.ListNodesResponse:
        now = self._now()
        return pb.ListNodesResponse(
            nodes=[
                node_state(n, now, self._operators.tag_of(n.node_id))
                for n in self._operators.nodes()
            ]
        )

    @_authenticated
    def NodeHistory(
        self, operator: str, request: pb.NodeHistoryRequest, context: grpc.ServicerContext
    ) -> pb.NodeHistoryResponse:
        since = convert.from_timestamp(request.since) if request.HasField("since") else None
        history = self._operators.history(request.node_id, since, request.limit or 1000)
        return pb.NodeHistoryResponse(
            node_id=request.node_id, transitions=[transition_to_wire(t) for t in history]
        )

    @_authenticated
    def ImportGoldenValues(
        self, operator: str, request: pb.ImportGoldenValuesRequest, context: grpc.ServicerContext
    ) -> pb.ImportGoldenValuesResponse:
        golden = self._operators.import_golden(
            operator, request.document, request.format, request.source
        )
        return pb.ImportGoldenValuesResponse(name=golden.name, digest=golden.digest.hex())

    @_authenticated
    def RemoveGoldenValues(
        self, operator: str, request: pb.RemoveGoldenValuesRequest, context: grpc.ServicerContext
    ) -> pb.RemoveGoldenValuesResponse:
        return pb.RemoveGoldenValuesResponse(
            removed=self._operators.remove_golden(operator, request.name)
        )

    @_authenticated
    def SetPolicy(
        self, operator: str, request: pb.SetPolicyRequest, context: grpc.ServicerContext
    ) -> pb.SetPolicyResponse:
        done = self._operators.set_policy(operator, dict(request.files))
        return pb.SetPolicyResponse(policy_id=done.policy_id, digest=done.digest)

    @_authenticated
    def RotateSigningKey(
        self, operator: str, request: pb.RotateSigningKeyRequest, context: grpc.ServicerContext
    ) -> pb.RotateSigningKeyResponse:
        ring = self._operators.rotate_signing_key(operator)
        return pb.RotateSigningKeyResponse(kid=ring.active.kid, published=list(ring.kids))

    @_authenticated
    def AuditLog(
        self, operator: str, request: pb.AuditLogRequest, context: grpc.ServicerContext
    ) -> pb.AuditLogResponse:
        since = convert.from_timestamp(request.since) if request.HasField("since") else None
        entries = self._operators.audit_log(since, request.limit or 1000)
        return pb.AuditLogResponse(entries=[audit_to_wire(e) for e in entries])


def node_state(
    node: NodeRecord, now: datetime, tag: dict[str, str] | None = None
) -> pb.NodeTrustState:
    state = pb.NodeTrustState(
        node_id=node.node_id,
        state=node.trust_at(now) if node.state == "enrolled" else node.state,
        reason=node.trust_reason_at(now) or "",
        asset_tag=tag or {},
        observed_site=node.last_site or "",
    )
    if node.trust_since is not None:
        state.since.CopyFrom(convert.timestamp(node.trust_since))
    if node.trust_expires_at is not None:
        state.expires_at.CopyFrom(convert.timestamp(node.trust_expires_at))
    if node.last_attested_at is not None:
        state.last_attested_at.CopyFrom(convert.timestamp(node.last_attested_at))
    return state


def transition_to_wire(t: TransitionRecord) -> pb.TrustTransition:
    return pb.TrustTransition(
        at=convert.timestamp(t.at),
        from_state=t.from_state,
        to_state=t.to_state,
        reason=t.reason,
        evidence_digest=t.evidence_digest.hex() if t.evidence_digest else "",
        result_id=t.result_id or 0,
        actor=t.actor,
    )


def audit_to_wire(entry: AuditRecord) -> pb.AuditEntry:
    return pb.AuditEntry(
        at=convert.timestamp(entry.at),
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        detail=entry.detail,
    )

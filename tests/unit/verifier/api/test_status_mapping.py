"""The RPC boundary: typed refusals become their status; anything else is a malfunction,
reported as INTERNAL with no traceback, never as a result."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from verifier.api.attestation import refusals_to_status
from verifier.errors import (
    ActivationFailed,
    EkChanged,
    MalformedRequest,
    NodeNotEnrolled,
    UnknownNode,
)
from verifier.evidence.errors import TpmStructureMalformed


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted


def call(exc: BaseException) -> Context:
    @refusals_to_status
    def handler(self: Any, request: Any, context: Any) -> None:
        raise exc

    context = Context()
    with pytest.raises(Aborted):
        handler(None, None, context)
    return context


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UnknownNode("no such node", node_id="n1"), grpc.StatusCode.NOT_FOUND),
        (NodeNotEnrolled("not activated", node_id="n1"), grpc.StatusCode.FAILED_PRECONDITION),
        (MalformedRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (EkChanged("other EK", node_id="n1"), grpc.StatusCode.PERMISSION_DENIED),
        (ActivationFailed("wrong secret", node_id="n1"), grpc.StatusCode.PERMISSION_DENIED),
        (TpmStructureMalformed("TPMS_ATTEST", 3, "short"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_typed_refusals_keep_their_status_and_reason(exc: Exception, code: grpc.StatusCode) -> None:
    context = call(exc)
    assert context.code == code
    assert context.details == exc.reason  # type: ignore[attr-defined]
    assert context.details.split(":")[0] == exc.check  # type: ignore[attr-defined]


def test_a_bug_is_internal_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    context = call(ZeroDivisionError("secret internals"))
    assert context.code == grpc.StatusCode.INTERNAL
    assert context.details == "verifier malfunction; see the verifier's log"
    assert "secret internals" not in context.details
    assert any("verifier malfunction" in r.getMessage() and r.exc_info for r in caplog.records)

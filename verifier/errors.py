"""Refusals of requests (not of evidence): enrollment, unknown nodes, malformed input.

Each class names its check and the gRPC status a client receives; the API layer maps
`status` to grpc.StatusCode, so the verifier's logic imports no gRPC.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from lightgate.errors import Refusal

Status = Literal[
    "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "FAILED_PRECONDITION", "NOT_FOUND"
]


class VerifierError(Refusal):
    """A request was refused; `status` is the gRPC status the client receives."""

    check: ClassVar[str] = "request"
    status: ClassVar[Status] = "INVALID_ARGUMENT"


class MalformedRequest(VerifierError):
    check = "malformed"
    status = "INVALID_ARGUMENT"


class UnknownNode(VerifierError):
    check = "unknown-node"
    status = "NOT_FOUND"


class NodeNotEnrolled(VerifierError):
    """The node exists but has no activated AK yet."""

    check = "not-enrolled"
    status = "FAILED_PRECONDITION"


class EkCertificateMalformed(VerifierError):
    check = "ek-certificate-malformed"
    status = "INVALID_ARGUMENT"


class EkCertificateUntrusted(VerifierError):
    """The EK certificate does not chain to a root in the trust store."""

    check = "ek-certificate-untrusted"
    status = "PERMISSION_DENIED"


class EkPublicMismatch(VerifierError):
    """The EK public key presented is not the one the certificate certifies."""

    check = "ek-public-mismatch"
    status = "PERMISSION_DENIED"


class EkNotAllowed(VerifierError):
    """Allow-list mode: neither the EK certificate nor its public key is listed."""

    check = "ek-not-allowed"
    status = "PERMISSION_DENIED"


class EkChanged(VerifierError):
    """The node id is enrolled with another EK: a different TPM claims its identity."""

    check = "ek-changed"
    status = "PERMISSION_DENIED"


class JoinTokenInvalid(VerifierError):
    check = "join-token"
    status = "UNAUTHENTICATED"


class AkInvalid(VerifierError):
    """The AK's attributes do not make it an attestation key."""

    check = "ak-attributes"
    status = "INVALID_ARGUMENT"


class NoPendingEnrollment(VerifierError):
    check = "no-pending-enrollment"
    status = "FAILED_PRECONDITION"


class ActivationFailed(VerifierError):
    """The secret returned is not the one sealed to the EK for this AK: the AK is not
    resident in the TPM whose EK was checked (or the node is someone else)."""

    check = "credential-activation"
    status = "PERMISSION_DENIED"


class ActivationExpired(VerifierError):
    check = "credential-activation-expired"
    status = "FAILED_PRECONDITION"


class OperatorUnauthenticated(VerifierError):
    """An admin call without valid operator credentials (bearer token or client
    certificate, by configuration)."""

    check = "operator-authentication"
    status = "UNAUTHENTICATED"


class ResultWithdrawn(VerifierError):
    """A node's newest signed result predates an operator's revocation (or the restore
    that followed it): it no longer holds, so it is not handed out."""

    check = "result-withdrawn"
    status = "FAILED_PRECONDITION"

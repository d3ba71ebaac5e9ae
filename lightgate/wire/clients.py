"""Typed unary clients over `lightgate.wire.channel.Channel`, in place of grpcio stubs.

Method names, paths and message types are those of the generated `*_pb2_grpc` stubs
(which import grpc, so this module does not); a unit test checks them against the
protobuf service descriptors so they cannot drift.  Only the pb2 message modules are
imported, keeping the agent's memory small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from lightgate.wire.channel import Channel, RpcError, StatusCode
from lightgate.wire.containerd import containers_pb2, images_pb2, tasks_pb2
from lightgate.wire.v1 import admission_pb2
from lightgate.wire.v1 import attestation_pb2 as pb

__all__ = [
    "DEFAULT_TIMEOUT",
    "AttestationClient",
    "ContainersClient",
    "CredentialsClient",
    "ImagesClient",
    "Metadata",
    "TasksClient",
]

# A call without a timeout must still end: a verifier that stops answering would
# otherwise hang the agent forever.
DEFAULT_TIMEOUT = 30.0

Metadata = Sequence[tuple[str, str]]
_Response = TypeVar("_Response", bound=Message)


def _unary(
    channel: Channel,
    path: str,
    request: Message,
    response_type: type[_Response],
    timeout: float | None,
    metadata: Metadata,
) -> _Response:
    """Serialize, call, parse: the one place every client method goes through."""
    data = channel.unary(
        path,
        request.SerializeToString(),
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        metadata=metadata,
    )
    try:
        return response_type.FromString(data)
    except DecodeError as exc:
        raise RpcError(
            StatusCode.INTERNAL, f"{path}: could not parse the response: {exc}"
        ) from None


class AttestationClient:
    """lightgate.v1.Attestation: enrollment and attestation with the verifier."""

    _SERVICE = "/lightgate.v1.Attestation/"

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def Enroll(
        self, request: pb.EnrollRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.EnrollResponse:
        return _unary(
            self._channel, self._SERVICE + "Enroll", request, pb.EnrollResponse, timeout, metadata
        )

    def ActivateCredential(
        self,
        request: pb.ActivateCredentialRequest,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ActivateCredentialResponse:
        return _unary(
            self._channel,
            self._SERVICE + "ActivateCredential",
            request,
            pb.ActivateCredentialResponse,
            timeout,
            metadata,
        )

    def Challenge(
        self, request: pb.ChallengeRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.ChallengeResponse:
        return _unary(
            self._channel,
            self._SERVICE + "Challenge",
            request,
            pb.ChallengeResponse,
            timeout,
            metadata,
        )

    def Attest(
        self, request: pb.AttestRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.AttestResponse:
        return _unary(
            self._channel, self._SERVICE + "Attest", request, pb.AttestResponse, timeout, metadata
        )


class CredentialsClient:
    """lightgate.v1.Credentials: workload credentials for an attested node."""

    _SERVICE = "/lightgate.v1.Credentials/"

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def Challenge(
        self,
        request: admission_pb2.CredentialChallengeRequest,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> admission_pb2.CredentialChallengeResponse:
        return _unary(
            self._channel,
            self._SERVICE + "Challenge",
            request,
            admission_pb2.CredentialChallengeResponse,
            timeout,
            metadata,
        )

    def IssueCertificate(
        self,
        request: admission_pb2.IssueCertificateRequest,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> admission_pb2.IssueCertificateResponse:
        return _unary(
            self._channel,
            self._SERVICE + "IssueCertificate",
            request,
            admission_pb2.IssueCertificateResponse,
            timeout,
            metadata,
        )

    def IssueToken(
        self,
        request: admission_pb2.IssueTokenRequest,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> admission_pb2.IssueTokenResponse:
        return _unary(
            self._channel,
            self._SERVICE + "IssueToken",
            request,
            admission_pb2.IssueTokenResponse,
            timeout,
            metadata,
        )


class ContainersClient:
    """containerd.services.containers.v1.Containers (pass the containerd-namespace
    metadata, as containerd requires)."""

    _SERVICE = "/containerd.services.containers.v1.Containers/"

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def List(
        self,
        request: containers_pb2.ListContainersRequest,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> containers_pb2.ListContainersResponse:
        return _unary(
            self._channel,
            self._SERVICE + "List",
            request,
            containers_pb2.ListContainersResponse,
            timeout,
            metadata,
        )


class ImagesClient:
    """containerd.services.images.v1.Images."""

    _SERVICE = "/containerd.services.images.v1.Images/"

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def List(
        self,
        request: images_pb2.ListImagesRequest,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> images_pb2.ListImagesResponse:
        return _unary(
            self._channel,
            self._SERVICE + "List",
            request,
            images_pb2.ListImagesResponse,
            timeout,
            metadata,
        )


class TasksClient:
    """containerd.services.tasks.v1.Tasks."""

    _SERVICE = "/containerd.services.tasks.v1.Tasks/"

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def List(
        self,
        request: tasks_pb2.ListTasksRequest,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> tasks_pb2.ListTasksResponse:
        return _unary(
            self._channel,
            self._SERVICE + "List",
            request,
            tasks_pb2.ListTasksResponse,
            timeout,
            metadata,
        )

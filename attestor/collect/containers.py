"""The containers containerd runs on this node, and the image digest each was made from.

Read from containerd's own gRPC API on its Unix socket (proto/containerd/: Containers/List,
Tasks/List, Images/List), never by scraping `ctr` or `nerdctl` output, whose
format is not an interface.  containerd scopes every object to a namespace, named per
call in the gRPC metadata key `containerd-namespace`.

The digest reported is the target of the image record the container names, as containerd
holds it when read: the manifest (or, for a multi-platform image, the index).  A container
records only the image's name, so if that name has been re-pointed since the container was
made, the digest is the new target's; closing that gap (e.g. from the snapshot chain) is
left to a later slice.

Cost: containerd answers Tasks/List by asking every container's shim for its state (about
100 ms for 200 containers here); `listed_images`, the agent's per-round read, needs no
task: a round is Containers/List and Images/List, whatever the container count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final

from attestor.collect.runtime import (
    ContainerRecordMalformed,
    ContainerRuntimeApiFailed,
    ContainerRuntimeError,
    ContainerRuntimeUnavailable,
    RunningContainer,
    TaskStatus,
    require_socket,
)
from lightgate.wire.channel import Channel, RpcError, StatusCode
from lightgate.wire.clients import ContainersClient, ImagesClient, TasksClient
from lightgate.wire.containerd import containers_pb2, images_pb2, task_pb2, tasks_pb2
from verifier.evidence.images import DIGEST, ImageRecord, reported_name

__all__ = [  # the runtime-neutral records and errors, as this source's callers know them
    "ContainerRecordMalformed",
    "ContainerRuntimeApiFailed",
    "ContainerRuntimeError",
    "ContainerRuntimeUnavailable",
    "RunningContainer",
    "TaskStatus",
    "image_target",
    "image_targets",
    "listed_images",
    "running_container",
    "running_images",
    "task_statuses",
]

log = logging.getLogger("lightgate.agent")

#: The gRPC metadata key containerd reads the namespace from (containerd/namespaces/grpc.go).
NAMESPACE_METADATA_KEY: Final = "containerd-namespace"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


_STATUS_BY_WIRE: Final[Mapping[int, TaskStatus]] = {
    task_pb2.UNKNOWN: TaskStatus.UNKNOWN,
    task_pb2.CREATED: TaskStatus.CREATED,
    task_pb2.RUNNING: TaskStatus.RUNNING,
    task_pb2.STOPPED: TaskStatus.STOPPED,
    task_pb2.PAUSED: TaskStatus.PAUSED,
    task_pb2.PAUSING: TaskStatus.PAUSING,
}


# --- pure functions: containerd responses to records -------------------------------------


def task_statuses(tasks: Iterable[task_pb2.Process]) -> dict[str, TaskStatus]:
    """Each container's task status, keyed by container id.

    Tasks/List returns each task's init process, whose `id` is the container id (containerd
    1.6 leaves `container_id` empty there); either is accepted.
    """
    statuses: dict[str, TaskStatus] = {}
    for task in tasks:
        container_id = task.container_id or task.id
        if not container_id:
            raise ContainerRecordMalformed("containerd listed a task with no container id")
        statuses[container_id] = _STATUS_BY_WIRE.get(task.status, TaskStatus.UNKNOWN)
    return statuses


def image_target(image: images_pb2.Image | None) -> tuple[str, str] | None:
    """The (digest, media type) an image record points at, or None when there is no record."""
    if image is None:
        return None
    digest = image.target.digest
    if not DIGEST.fullmatch(digest):
        raise ContainerRecordMalformed(
            f"image {image.name!r}: target digest {digest!r} is not sha256:<64 hex digits>"
        )
    return digest, image.target.media_type


def image_targets(images: Iterable[images_pb2.Image]) -> dict[str, tuple[str, str]]:
    """The (digest, media type) each image record of the namespace points at, by name."""
    targets: dict[str, tuple[str, str]] = {}
    for image in images:
        try:
            target = image_target(image)
        except ContainerRecordMalformed as exc:
            # Not one image the agent can name by digest: a container using it is
            # measured with no digest (refused), the rest of the namespace still counts.
            log.warning("image skipped", extra={"fields": {"detail": str(exc)}})
            continue
        if target is not None:
            targets[image.name] = target
    return targets


def running_container(
    container: containers_pb2.Container,
    target: tuple[str, str] | None,
    statuses: Mapping[str, TaskStatus],
) -> RunningContainer:
    """The record for one container, given its image's target and the namespace's tasks."""
    if not container.id:
        raise ContainerRecordMalformed("containerd listed a container with no id")
    digest, media_type = target if target is not None else (None, None)
    return RunningContainer(
        container_id=container.id,
        image_name=container.image,
        image_digest=digest,
        image_media_type=media_type,
        task_status=statuses.get(container.id, TaskStatus.NO_TASK),
    )


# --- the edge: containerd's gRPC API on its socket ---------------------------------------


class ContainerdClient:
    """Calls to one containerd namespace over `unix:<socket_path>`; use as a context."""

    def __init__(
        self,
        socket_path: Path,
        namespace: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"{namespace!r} is not a containerd namespace name")
        socket_path = require_socket(
            socket_path, "containerd", "is containerd running, and is this its --address?"
        )
        self.socket_path = socket_path
        self.namespace = namespace
        self.timeout = timeout
        self._metadata = ((NAMESPACE_METADATA_KEY, namespace),)
        self._channel = Channel(f"unix:{socket_path}")
        self._containers = ContainersClient(self._channel)
        self._tasks = TasksClient(self._channel)
        self._images = ImagesClient(self._channel)

    def __enter__(self) -> ContainerdClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def containers(self) -> list[containers_pb2.Container]:
        try:
            response = self._containers.List(
                containers_pb2.ListContainersRequest(),
                metadata=self._metadata,
                timeout=self.timeout,
            )
        except RpcError as exc:
            raise self._failure("Containers/List", exc) from exc
        return list(response.containers)

    def tasks(self) -> list[task_pb2.Process]:
        try:
            response = self._tasks.List(
                tasks_pb2.ListTasksRequest(), metadata=self._metadata, timeout=self.timeout
            )
        except RpcError as exc:
            raise self._failure("Tasks/List", exc) from exc
        return list(response.tasks)

    def images(self) -> list[images_pb2.Image]:
        """Every image record of the namespace (one call, however many are named)."""
        try:
            response = self._images.List(
                images_pb2.ListImagesRequest(), metadata=self._metadata, timeout=self.timeout
            )
        except RpcError as exc:
            raise self._failure("Images/List", exc) from exc
        return list(response.images)

    def _failure(self, call: str, exc: RpcError) -> ContainerRuntimeError:
        code = exc.code
        where = f"containerd at {self.socket_path}, namespace {self.namespace!r}"
        detail = f"{call}: {code.name}: {exc.details}"
        if code in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED):
            return ContainerRuntimeUnavailable(f"{where} did not answer {detail}")
        return ContainerRuntimeApiFailed(f"{where} refused {detail}")


def running_images(
    socket_path: Path,
    namespace: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[RunningContainer]:
    """Every container in `namespace` with its image digest and task status, by id.

    All containers are reported, not only those with a running task: a created or stopped
    container can be started at any moment, and which ones count is the verifier's call.
    """
    with ContainerdClient(socket_path, namespace, timeout) as client:
        containers = client.containers()
        statuses = task_statuses(client.tasks())
        targets = image_targets(client.images())
    records = sorted(
        (running_container(c, targets.get(c.image), statuses) for c in containers),
        key=lambda record: record.container_id,
    )
    log.info(
        "containers read",
        extra={
            "fields": {
                "namespace": namespace,
                "containers": len(records),
                "unresolved_images": sum(1 for r in records if r.image_digest is None),
            }
        },
    )
    return records


def listed_images(
    socket_path: Path,
    namespace: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[ImageRecord]:
    """The image of every container of the namespace, distinct and sorted: what the agent
    measures (Containers/List and Images/List, two calls whatever the container count).

    Every listed container counts, with or without a task: containerd (and the CRI
    plugin) deletes a task once its process exits, so a container that ran and stopped
    looks exactly like one never started.  Measuring both is closed by default; a
    container created and removed between two reads is not seen at all (polling).
    """
    with ContainerdClient(socket_path, namespace, timeout) as client:
        containers = client.containers()
        targets = image_targets(client.images())
    records = set()
    for container in containers:
        if not container.id:
            raise ContainerRecordMalformed("containerd listed a container with no id")
        digest = targets.get(container.image, (None, None))[0] if container.image else None
        records.add(ImageRecord(reported_name(container.image), digest, "containerd"))
    return sorted(records, key=lambda r: (r.name, r.digest or ""))

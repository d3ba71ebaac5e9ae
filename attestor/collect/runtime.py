"""What every container source reports, and how it fails: the runtime-neutral part of
`attestor.collect`.  Light on purpose: the agent imports it at start-up, and a source's
client (containerd's gRPC stubs, the Engine API) only when that source is configured.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class ContainerRuntimeError(Exception):
    """The runtime could not tell the agent which containers run here."""


class ContainerRuntimeUnavailable(ContainerRuntimeError):
    """No runtime answers on the socket (absent, not a socket, refused or timed out)."""


class ContainerRuntimeApiFailed(ContainerRuntimeError):
    """The runtime answered a call with an error status."""


class ContainerRecordMalformed(ContainerRuntimeError):
    """The runtime returned a record the agent cannot report (e.g. a digest not sha256:hex)."""


class TaskStatus(enum.StrEnum):
    """containerd.v1.types.Status of a container's task, or NO_TASK when it has none."""

    UNKNOWN = "unknown"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    PAUSING = "pausing"
    NO_TASK = "no_task"


@dataclass(frozen=True)
class RunningContainer:
    """One container of the namespace, as containerd records it.

    `image_digest` is the target digest ("sha256:<hex>") of the image record named
    `image_name`, and `image_media_type` says whether that is a manifest or an index.  Both
    are None when the container names no image (made from a bare rootfs) or the image record
    is gone (deleted after the container was made): the verifier must treat such a
    container as running unknown content.
    """

    container_id: str
    image_name: str
    image_digest: str | None
    image_media_type: str | None
    task_status: TaskStatus
    runtime: str = "containerd"  # the source read: containerd, docker or podman

    @property
    def started(self) -> bool:
        """The container has (or had) a process: its image's content has been run."""
        return self.task_status is not TaskStatus.NO_TASK


def require_socket(socket_path: Path, runtime: str, hint: str) -> Path:
    """`socket_path` made absolute, if a socket is there; else ContainerRuntimeUnavailable
    saying what is there instead, and `hint` (what to check)."""
    socket_path = socket_path.absolute()
    try:
        is_socket = socket_path.is_socket()
        what = "not a socket" if socket_path.exists() else "nothing"
    except OSError as exc:  # e.g. EACCES on a parent directory: not ours to read
        raise ContainerRuntimeUnavailable(f"no {runtime} at {socket_path}: {exc}") from exc
    if not is_socket:
        raise ContainerRuntimeUnavailable(f"no {runtime} at {socket_path}: {what} there ({hint})")
    return socket_path

"""The containers Docker or Podman runs on this node, and the image digest each was made from.

Read from the Engine API on the daemon's Unix socket: the HTTP API dockerd serves and
Podman serves as its compat API (`podman system service`), at its unversioned paths, which
both daemons answer at their current API version (dockerd 29 refuses versions under 1.44,
so no fixed version prefix is asked for; the fields read here are in every version since
1.24).  Never by scraping
`docker` or `podman` output, whose format is not an interface.  Two calls: the container
list (`GET /containers/json?all=1`) and, per distinct image ID, the image inspect
(`GET /images/{id}/json`).  The records are the containerd source's (`RunningContainer`),
with `runtime` naming which daemon was read.

The digest reported is the MANIFEST digest (of the index, for a multi-platform image) as
the daemon recorded it when the image was pulled or pushed: the `RepoDigests` entry of the
repository the container was made from.  The image ID (`ImageID`, the digest of the image's
config) is never reported: it names different bytes than the manifest digest a policy
pins.  An image never pulled from or pushed to a registry (built or loaded locally) may
have no `RepoDigests`; its digest is then None, which the verifier appraises as unknown.
The Engine API does not say the manifest's media type, so that is None too.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from attestor.collect.runtime import (
    ContainerRecordMalformed,
    ContainerRuntimeApiFailed,
    ContainerRuntimeError,
    ContainerRuntimeUnavailable,
    RunningContainer,
    TaskStatus,
    require_socket,
)
from verifier.evidence.images import DIGEST, repository_of

log = logging.getLogger("lightgate.agent")

EngineRuntime = Literal["docker", "podman"]
RUNTIMES: Final = frozenset({"docker", "podman"})
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
#: No answer the agent needs is anywhere near this; a larger body is refused unread.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
_HEX_ID: Final = re.compile(r"[0-9a-f]{12,64}")
_MAX_ERROR_CHARS: Final = 300

_STATUS_BY_STATE: Final[Mapping[str, TaskStatus]] = {
    "running": TaskStatus.RUNNING,
    "restarting": TaskStatus.RUNNING,
    "paused": TaskStatus.PAUSED,
    "exited": TaskStatus.STOPPED,
    "dead": TaskStatus.STOPPED,
    "removing": TaskStatus.STOPPED,
    "created": TaskStatus.NO_TASK,  # never started: its image's content has not run
}


@dataclass(frozen=True)
class EngineContainer:
    """One entry of `GET /containers/json`: what the agent needs of it."""

    container_id: str
    image: str  # the reference it was made from, or an image ID when that tag moved
    image_id: str  # "sha256:<hex>" of the image config, or "" (made from a bare rootfs)
    state: str


@dataclass(frozen=True)
class EngineImage:
    """One `GET /images/{id}/json` answer: what the agent needs of it."""

    image_id: str
    repo_digests: tuple[str, ...]  # "repository@sha256:<hex>", digests of manifests
    repo_tags: tuple[str, ...]


# --- pure functions: Engine API responses to records -------------------------------------


def decode_json(body: bytes, call: str) -> object:
    """The JSON document of a response body; ContainerRecordMalformed when it is not one."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ContainerRecordMalformed(f"{call}: the answer is not UTF-8 JSON: {exc}") from exc


def _string(entry: Mapping[str, object], key: str, what: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        found = "missing" if key not in entry else f"{type(value).__name__}, not a string"
        raise ContainerRecordMalformed(f"{what}: {key!r} is {found}")
    return value


def _strings(entry: Mapping[str, object], key: str, what: str) -> tuple[str, ...]:
    """A list of strings; JSON null (Docker and Podman both send it for none) is empty."""
    if key not in entry:
        raise ContainerRecordMalformed(f"{what}: {key!r} is missing")
    value = entry[key]
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ContainerRecordMalformed(f"{what}: {key!r} is not a list of strings")
    return tuple(value)


def parse_containers(document: object) -> list[EngineContainer]:
    """The containers of a `GET /containers/json` answer (a JSON array of objects)."""
    if not isinstance(document, list):
        raise ContainerRecordMalformed("container list: the answer is not a JSON array")
    containers = []
    for index, entry in enumerate(document):
        what = f"container list entry {index}"
        if not isinstance(entry, dict):
            raise ContainerRecordMalformed(f"{what}: not a JSON object")
        container_id = _string(entry, "Id", what)
        if not container_id or not container_id.isprintable():
            raise ContainerRecordMalformed(f"{what}: 'Id' {container_id!r} is not a container id")
        what = f"container {container_id}"
        image_id = _string(entry, "ImageID", what)
        if image_id and not DIGEST.fullmatch(image_id):
            raise ContainerRecordMalformed(
                f"{what}: ImageID {image_id!r} is not sha256:<64 hex digits>"
            )
        containers.append(
            EngineContainer(
                container_id=container_id,
                image=_string(entry, "Image", what),
                image_id=image_id,
                state=_string(entry, "State", what),
            )
        )
    return containers


def parse_image(document: object, image_id: str) -> EngineImage:
    """The image of a `GET /images/{image_id}/json` answer."""
    what = f"image {image_id}"
    if not isinstance(document, dict):
        raise ContainerRecordMalformed(f"{what}: the answer is not a JSON object")
    answered_id = _string(document, "Id", what)
    if answered_id != image_id:
        raise ContainerRecordMalformed(f"{what}: the daemon answered for {answered_id!r}")
    return EngineImage(
        image_id=image_id,
        repo_digests=_strings(document, "RepoDigests", what),
        repo_tags=_strings(document, "RepoTags", what),
    )


def split_repo_digest(entry: str) -> tuple[str, str]:
    """("repository", "sha256:<hex>") of a RepoDigests entry "repository@sha256:<hex>"."""
    repository, at, digest = entry.rpartition("@")
    if not at or not repository or not DIGEST.fullmatch(digest):
        raise ContainerRecordMalformed(
            f"RepoDigests entry {entry!r} is not repository@sha256:<64 hex digits>"
        )
    return repository, digest


def is_image_id(name: str, image_id: str) -> bool:
    """True when the container's image "name" is an image ID (the daemon puts its ImageID
    there when the tag it was made from has since moved), not a reference."""
    if not name:
        return False
    if name == image_id or DIGEST.fullmatch(name):
        return True
    hex_id = image_id.removeprefix("sha256:")
    return bool(_HEX_ID.fullmatch(name)) and bool(hex_id) and hex_id.startswith(name)


def manifest_digest(image_name: str, image: EngineImage) -> str | None:
    """The manifest digest of `image` for a container made from `image_name`, or None.

    The RepoDigests entry whose repository (normalised: "busybox" is
    "docker.io/library/busybox") is the container's; failing a match (the name is an
    image ID, or the image was pulled under another name) the one digest all entries
    share; else None: unknown, never the image ID.  Where several digests are recorded
    for the repository, the one the name itself pins ("repo@sha256:...") when listed,
    else the one they all share, else None.
    """
    entries = [split_repo_digest(entry) for entry in image.repo_digests]
    digests = {digest for _, digest in entries}
    if image_name and not is_image_id(image_name, image.image_id):
        repository = repository_of(image_name)
        matching = {digest for repo, digest in entries if repository_of(repo) == repository}
        if len(matching) == 1:
            return matching.pop()
        if matching:
            _, at, pinned = image_name.rpartition("@")
            return pinned if at and pinned in matching else None
    return digests.pop() if len(digests) == 1 else None


def image_name_of(container: EngineContainer, image: EngineImage | None) -> str:
    """The reference the container was made from; when the daemon only says its image ID,
    the image's first tag, else ""."""
    if not is_image_id(container.image, container.image_id):
        return container.image
    if image is not None and image.repo_tags:
        return image.repo_tags[0]
    return ""


def task_status_of(state: str) -> TaskStatus:
    """The TaskStatus of an Engine API container `State`."""
    return _STATUS_BY_STATE.get(state, TaskStatus.UNKNOWN)


def engine_record(
    container: EngineContainer, image: EngineImage | None, runtime: EngineRuntime
) -> RunningContainer:
    """The record for one container, given its image (None: no image, or deleted since)."""
    name = image_name_of(container, image)
    return RunningContainer(
        container_id=container.container_id,
        image_name=name,
        image_digest=manifest_digest(name, image) if image is not None else None,
        image_media_type=None,
        task_status=task_status_of(container.state),
        runtime=runtime,
    )


def api_error_message(body: bytes) -> str:
    """The daemon's message in an error answer ({"message": ...}), else the body's text."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        text = str(document["message"])
    else:
        text = body.decode("utf-8", errors="replace")
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_CHARS else f"{text[:_MAX_ERROR_CHARS]}..."


# --- the edge: HTTP on the daemon's Unix socket ------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 to a server on an AF_UNIX stream socket; `timeout` bounds each operation."""

    def __init__(self, socket_path: Path, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        super().__init__("localhost", timeout=timeout)  # the Host header Docker expects
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.socket_path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class EngineClient:
    """GET requests to one Engine API daemon over its Unix socket."""

    def __init__(
        self,
        socket_path: Path,
        runtime: EngineRuntime,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r} is not one of {sorted(RUNTIMES)}")
        socket_path = require_socket(
            socket_path, runtime, f"is the {runtime} API service running, and is this its socket?"
        )
        self.socket_path = socket_path
        self.runtime = runtime
        self.timeout = timeout

    def get(self, path: str, call: str) -> tuple[int, bytes]:
        """(status, body) of `GET <path>` (unversioned); the body at most MAX_BODY_BYTES."""
        where = f"{self.runtime} at {self.socket_path}"
        connection = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                raise ContainerRecordMalformed(
                    f"{where}: {call}: an answer of {length} bytes is over {MAX_BODY_BYTES}"
                )
            body = response.read(MAX_BODY_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
            detail = str(exc) or type(exc).__name__
            raise ContainerRuntimeUnavailable(f"{where} did not answer {call}: {detail}") from exc
        finally:
            connection.close()
        if len(body) > MAX_BODY_BYTES:
            raise ContainerRecordMalformed(
                f"{where}: {call}: the answer is over {MAX_BODY_BYTES} bytes"
            )
        return response.status, body

    def _failure(self, call: str, status: int, body: bytes) -> ContainerRuntimeError:
        return ContainerRuntimeApiFailed(
            f"{self.runtime} at {self.socket_path} refused {call}: HTTP {status}: "
            f"{api_error_message(body)}"
        )

    def containers(self) -> list[EngineContainer]:
        call = "GET /containers/json"
        status, body = self.get("/containers/json?all=1", call)
        if status >= 400:
            raise self._failure(call, status, body)
        return parse_containers(decode_json(body, call))

    def image(self, image_id: str) -> EngineImage | None:
        """The image `image_id` ("sha256:<hex>"), or None when the daemon has none by it."""
        if not DIGEST.fullmatch(image_id):  # it goes into the request path
            raise ContainerRecordMalformed(f"image ID {image_id!r} is not sha256:<64 hex digits>")
        call = f"GET /images/{image_id}/json"
        status, body = self.get(f"/images/{image_id}/json", call)
        if status == http.HTTPStatus.NOT_FOUND:  # deleted since the container was made
            return None
        if status >= 400:
            raise self._failure(call, status, body)
        return parse_image(decode_json(body, call), image_id)


def running_images_engine(
    socket_path: Path,
    runtime: EngineRuntime,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[RunningContainer]:
    """Every container the daemon knows, with its image's manifest digest, by id.

    All containers are reported, not only running ones: a created or stopped container can
    be started at any moment, and which ones count is the verifier's call.
    """
    client = EngineClient(socket_path, runtime, timeout)
    containers = client.containers()
    images = _images(client, {c.image_id for c in containers if c.image_id})
    records = sorted(
        (engine_record(c, images.get(c.image_id), runtime) for c in containers),
        key=lambda record: record.container_id,
    )
    log.info(
        "containers read",
        extra={
            "fields": {
                "runtime": runtime,
                "socket": str(client.socket_path),
                "containers": len(records),
                "unresolved_images": sum(1 for r in records if r.image_digest is None),
            }
        },
    )
    return records


def _images(client: EngineClient, image_ids: Iterable[str]) -> dict[str, EngineImage]:
    images = {}
    for image_id in sorted(image_ids):
        image = client.image(image_id)
        if image is not None:
            images[image_id] = image
    return images

"""Container images as the runtime log records them.  Pure: no I/O.

The agent measures each image a container on the node started from, once per boot, as
an EV_EVENT_TAG of taggedEventID 0x4C470002 (`runtime_log.TAGGED_EVENT_IMAGE`) in the
runtime PCR.  Its taggedEventData is one JSON object in UTF-8, keys sorted, no spaces:

    {"digest":"sha256:<64 hex>","name":"docker.io/library/busybox:1.36","runtime":"containerd"}

`name` is the image reference the container was made from (as the runtime holds it,
up to 512 characters; "" when the container names none); `digest` is the digest of the
image's manifest, or of its index for a multi-platform image (`null` when the runtime
could not say which content the name points at: such an image is appraised as unknown);
`runtime` is the source the agent read (containerd, docker, podman).  Canonical form is
required, so that one image is one byte string and one PCR extend, whoever encodes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_string  # JSON string, not ASCII-escaped
from typing import Final

#: OCI image-spec digests Lightgate records: the runtimes address content by sha256.
DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
RUNTIMES: Final = frozenset({"containerd", "docker", "podman"})
MAX_NAME_CHARS: Final = 512
_KEYS: Final = frozenset({"digest", "name", "runtime"})
#: The registry Docker assumes for a name whose first part is not a host.
DEFAULT_REGISTRY: Final = "docker.io"


class ImageEventInvalid(ValueError):
    """Image event data that is not the canonical record this module defines."""


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image a container on the node started from."""

    name: str
    digest: str | None
    runtime: str

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ImageEventInvalid(f"runtime {self.runtime!r} is not one of {sorted(RUNTIMES)}")
        if self.digest is not None and not DIGEST.fullmatch(self.digest):
            raise ImageEventInvalid(f"digest {self.digest!r} is not sha256:<64 hex digits>")
        if len(self.name) > MAX_NAME_CHARS or not self.name.isprintable():
            raise ImageEventInvalid(
                f"image name of {len(self.name)} characters is not a printable reference "
                f"of at most {MAX_NAME_CHARS}"
            )

    @property
    def repository(self) -> str:
        """The normalised repository of `name` ("" when the container names none)."""
        return repository_of(self.name) if self.name else ""

    def describe(self) -> str:
        return f"{self.name or '(no image name)'}@{self.digest or '(digest unknown)'}"

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "digest": self.digest, "runtime": self.runtime}


def reported_name(name: str) -> str:
    """A runtime's image name as a record can hold it: unchanged when printable and at
    most MAX_NAME_CHARS, else escaped to printable ASCII and cut (the digest, not the
    name, is what an allow-list admits, so a strange name only costs readability)."""
    if len(name) <= MAX_NAME_CHARS and name.isprintable():
        return name
    return name.encode("unicode_escape").decode("ascii")[:MAX_NAME_CHARS]


def encode_image_event(record: ImageRecord) -> bytes:
    """The canonical taggedEventData of `record`: what json.dumps with sorted keys, compact
    separators and ensure_ascii=False writes, for these three keys (built directly: the
    verifier checks every event of a log against it)."""
    digest = "null" if record.digest is None else _json_string(record.digest)
    text = (
        f'{{"digest":{digest},"name":{_json_string(record.name)},'
        f'"runtime":{_json_string(record.runtime)}}}'
    )
    return text.encode("utf-8")


def parse_image_event(data: bytes) -> ImageRecord:
    """The record of canonical image event data; raises ImageEventInvalid naming what is
    wrong (not UTF-8 JSON, other keys or types, not canonical)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ImageEventInvalid("image event data is not UTF-8 JSON") from None
    if not isinstance(value, dict) or set(value) != _KEYS:
        raise ImageEventInvalid(f"image event data must be an object of exactly {sorted(_KEYS)}")
    name, digest, runtime = value["name"], value["digest"], value["runtime"]
    if not isinstance(name, str) or not isinstance(runtime, str):
        raise ImageEventInvalid("image event name and runtime must be strings")
    if digest is not None and not isinstance(digest, str):
        raise ImageEventInvalid("image event digest must be a string or null")
    record = ImageRecord(name, digest, runtime)
    if encode_image_event(record) != data:
        raise ImageEventInvalid("image event data is not in canonical form (sorted keys, compact)")
    return record


def repository_of(reference: str) -> str:
    """The repository of an image reference, normalised as Docker and containerd do:
    without its `@digest` and `:tag`, with `docker.io/` before a name whose first part
    is not a registry host, and `library/` before an official image's single name.

    "busybox:1.36" → "docker.io/library/busybox"; "localhost:5000/app@sha256:…" →
    "localhost:5000/app"; "registry.example/team/web:2" → "registry.example/team/web".
    """
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, _, rest = name.partition("/")
    if not rest:
        return f"{DEFAULT_REGISTRY}/library/{first}"
    host = first.lower()  # host names are case-insensitive; repository paths are not
    if host in (DEFAULT_REGISTRY, "index.docker.io"):
        return f"{DEFAULT_REGISTRY}/{rest}" if "/" in rest else f"{DEFAULT_REGISTRY}/library/{rest}"
    if "." in first or ":" in first or host == "localhost":
        return f"{host}/{rest}"
    return f"{DEFAULT_REGISTRY}/{name}"

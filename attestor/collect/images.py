"""Which container images the agent measures: every image a container on the node has
started from, read from each configured runtime's own API.

`images_to_measure` is pure: containers (from any source) in, the distinct image
records to measure out, in a stable order.  A container counts once it has (or had) a
process: containerd's task exists, Docker's state is past `created`.  A created-never-
started container runs nothing yet; it is measured when it starts.  `read_containers`
and `images_started` are the edge: one read per configured source.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from verifier.evidence.images import ImageRecord

if TYPE_CHECKING:
    from attestor.collect.containers import RunningContainer
    from lightgate.config import ContainerSource


def images_to_measure(containers: Iterable[RunningContainer]) -> list[ImageRecord]:
    """The distinct images started containers use, sorted (one record, one extend)."""
    records = {
        ImageRecord(container.image_name, container.image_digest, container.runtime)
        for container in containers
        if container.started
    }
    return sorted(records, key=lambda r: (r.runtime, r.name, r.digest or ""))


def new_images(wanted: Sequence[ImageRecord], measured: Iterable[ImageRecord]) -> list[ImageRecord]:
    """The images of `wanted` the runtime log does not record yet, in `wanted`'s order."""
    known = set(measured)
    return [record for record in wanted if record not in known]


def images_started(
    source: ContainerSource, measured: Collection[ImageRecord], timeout: float
) -> list[ImageRecord]:
    """The images of `source`'s started containers that `measured` lacks (the agent's
    per-round read); raises ContainerRuntimeError when the runtime cannot say."""
    if source.runtime == "containerd":
        from attestor.collect.containers import started_images

        return started_images(source.socket, source.namespace, measured, timeout)
    return new_images(images_to_measure(read_containers(source, timeout)), measured)


def read_containers(source: ContainerSource, timeout: float) -> list[RunningContainer]:
    """The containers of one source; raises ContainerRuntimeError when it cannot say.
    Each client is imported when first configured: an agent pays for what it reads."""
    if source.runtime == "containerd":
        from attestor.collect.containers import running_images

        return running_images(source.socket, source.namespace, timeout)
    from attestor.collect.engine_api import running_images_engine

    return running_images_engine(source.socket, source.runtime, timeout)

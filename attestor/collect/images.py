"""Which container images the agent measures: the image of every container the node's
runtimes list, read from each configured runtime's own API.

Every listed container counts, started or not: a container that ran and exited may have
no task left (containerd deletes it, and so does the CRI plugin), which looks just like
one never started, so measuring only containers with a process would miss the short-
lived ones.  Measuring all is closed by default.  What polling cannot see is a container
created and removed between two reads; the runtimes' event streams would close that gap.

`images_to_measure` is pure: containers (from any source) in, the distinct image
records to measure out, in a stable order.  `read_containers` and `images_in_use` are
the edge: one read per configured source.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from verifier.evidence.images import ImageRecord, reported_name

if TYPE_CHECKING:
    from attestor.collect.runtime import RunningContainer
    from lightgate.agent_config import ContainerSource


def images_to_measure(containers: Iterable[RunningContainer]) -> list[ImageRecord]:
    """The distinct images the listed containers use, sorted (one record, one extend)."""
    records = {
        ImageRecord(reported_name(container.image_name), container.image_digest, container.runtime)
        for container in containers
    }
    return sorted(records, key=lambda r: (r.runtime, r.name, r.digest or ""))


def new_images(wanted: Sequence[ImageRecord], measured: Iterable[ImageRecord]) -> list[ImageRecord]:
    """The images of `wanted` the runtime log does not record yet, in `wanted`'s order."""
    known = set(measured)
    return [record for record in wanted if record not in known]


def images_in_use(
    source: ContainerSource, measured: Collection[ImageRecord], timeout: float
) -> list[ImageRecord]:
    """The images of `source`'s containers that `measured` lacks (the agent's per-round
    read); raises ContainerRuntimeError when the runtime cannot say."""
    if source.runtime == "containerd":
        from attestor.collect.containers import listed_images

        return new_images(listed_images(source.socket, source.namespace, timeout), measured)
    return new_images(images_to_measure(read_containers(source, timeout)), measured)


def read_containers(source: ContainerSource, timeout: float) -> list[RunningContainer]:
    """The containers of one source; raises ContainerRuntimeError when it cannot say.
    Each client is imported when first configured: an agent pays for what it reads."""
    if source.runtime == "containerd":
        from attestor.collect.containers import running_images

        return running_images(source.socket, source.namespace, timeout)
    from attestor.collect.engine_api import running_images_engine

    return running_images_engine(source.socket, source.runtime, timeout)

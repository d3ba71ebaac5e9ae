"""Container images for the simulated fleet.

When this machine can run one (root, containerd, runc, umoci and a static busybox), the
simulator starts a private containerd, builds two busybox images with umoci (the
"allowed" web image, whose digest goes into the golden values' image allow-list, and an
"unknown" miner image that no list names), and gives each node its own containerd
namespace: its agent reads that namespace over containerd's gRPC API and measures the
images its containers started from, exactly as on a real node.

Otherwise the simulator says why and falls back to declared images: the node's agent
measures an image record for each container the scenario starts, with a digest derived
from the image's name, into the same runtime log and PCR.  The verifier's side (replay,
allow-list, policy) is the same either way; only the reading of a runtime is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from attestor.agent import Agent
from lightgate.agent_config import ContainerSource
from lightgate.sim.containerd import (
    Containerd,
    OciImage,
    build_busybox_image,
    missing_prerequisites,
    private_containerd,
)
from verifier.evidence.images import ImageRecord, repository_of
from verifier.golden.values import IMAGES_REPOSITORY, GoldenValues

log = logging.getLogger("lightgate.sim")

ImageKind = Literal["allowed", "unknown"]
#: Where the simulated images come from (no registry is contacted: names only).
IMAGE_NAMES: dict[ImageKind, str] = {
    "allowed": "registry.lightgate.sim/web",
    "unknown": "registry.lightgate.sim/miner",
}


def _declared_digest(kind: ImageKind) -> str:
    return "sha256:" + hashlib.sha256(f"lightgate simulated image {kind}".encode()).hexdigest()


@dataclass
class SimImages:
    """The fleet's images: real (a private containerd) or declared (none available)."""

    daemon: Containerd | None
    built: dict[ImageKind, OciImage] = field(default_factory=dict)
    why_declared: str | None = None
    _imported: set[tuple[str, ImageKind]] = field(default_factory=set)
    _namespaces: set[str] = field(default_factory=set)

    @property
    def real(self) -> bool:
        return self.daemon is not None

    def describe(self) -> str:
        if self.daemon is not None:
            return f"container images: a private containerd at {self.daemon.socket} (real)"
        return f"container images: declared, not read from a runtime ({self.why_declared})"

    def digest(self, kind: ImageKind) -> str:
        return self.built[kind].manifest_digest if kind in self.built else _declared_digest(kind)

    def reference(self, kind: ImageKind) -> str:
        return f"{IMAGE_NAMES[kind]}:latest"

    def allow(self, golden: GoldenValues) -> GoldenValues:
        """`golden` with the allowed image's repository pinned to its digest."""
        entry = IMAGES_REPOSITORY + repository_of(IMAGE_NAMES["allowed"])
        reference = {**golden.reference, entry: (self.digest("allowed"),)}
        return GoldenValues(golden.name, reference, golden.provenance)

    def sources(self, namespace: str) -> list[ContainerSource]:
        """What a node's agent reads: its own namespace of the private containerd."""
        if self.daemon is None:
            return []
        return [
            ContainerSource(runtime="containerd", socket=self.daemon.socket, namespace=namespace)
        ]

    def start(self, agent: Agent, kind: ImageKind) -> None:
        """Start a container from the `kind` image on `agent`'s node; the agent measures
        it at its next attestation (declared: measured now, as the agent would)."""
        namespace = agent.node_id
        if self.daemon is None:
            record = ImageRecord(self.reference(kind), self.digest(kind), "containerd")
            agent.runtime_log.append_image(agent.tpm, record)
            return
        if (namespace, kind) not in self._imported:
            self.daemon.import_image(namespace, self.built[kind], IMAGE_NAMES[kind])
            self._imported.add((namespace, kind))
        self._namespaces.add(namespace)
        self.daemon.run(namespace, self.reference(kind), f"{kind}-1", "/bin/sleep", "600")

    def clean(self) -> None:
        if self.daemon is not None:
            for namespace in sorted(self._namespaces):
                self.daemon.empty_namespace(namespace)


@contextlib.contextmanager
def sim_images(workdir: Path, wanted: bool) -> Iterator[SimImages]:
    """The fleet's images; a private containerd only when `wanted` and this machine can."""
    why = None if wanted else "no scenario runs containers"
    why = why or missing_prerequisites()
    if why is not None:
        yield SimImages(None, why_declared=why)
        return
    with private_containerd() as daemon:
        images = SimImages(daemon)
        for kind in IMAGE_NAMES:
            images.built[kind] = build_busybox_image(workdir / "images" / kind, marker=kind)
        try:
            yield images
        finally:
            images.clean()

"""The tests' real containerd: the simulator's (`lightgate.sim.containerd`), re-exported
so integration tests keep one import."""

from lightgate.sim.containerd import (
    Containerd,
    OciImage,
    build_busybox_image,
    missing_prerequisites,
    private_containerd,
)

__all__ = [
    "Containerd",
    "OciImage",
    "build_busybox_image",
    "missing_prerequisites",
    "private_containerd",
]

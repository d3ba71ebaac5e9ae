"""A real, private containerd for the simulator and the tests, and busybox OCI images
built locally with umoci.

containerd runs as root with its own --root, --state and socket under a short temporary
directory (a Unix socket path must fit in 108 bytes), the CRI plugin disabled, and the
`native` snapshotter so no overlay mounts are needed.  No registry is reachable here: the
image is built from busybox-static with umoci and imported with `ctr images import`.
`ctr` only sets the scene; what is under test reads containerd's gRPC API itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
TOOLS = ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "umoci")
SNAPSHOTTER = "native"
START_TIMEOUT_SECONDS = 20.0
CTR_TIMEOUT_SECONDS = 60.0
_PT_INTERP = 3
RUNC_STATE = Path("/run/containerd/runc")

CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
"""


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF with no PT_INTERP (no dynamic loader needed)."""
    raw = path.read_bytes()
    if raw[:6] != b"\x7fELF\x02\x01":
        return False
    phoff, _, _, _, phentsize, phnum = struct.unpack_from("<QQIHHH", raw, 0x20)
    return all(
        struct.unpack_from("<I", raw, phoff + i * phentsize)[0] != _PT_INTERP for i in range(phnum)
    )


def missing_prerequisites() -> str | None:
    """Why a real containerd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "containerd tests need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (run `make setup`)"
    if not BUSYBOX.is_file() or not _is_static_elf(BUSYBOX):
        return f"{BUSYBOX} is not a static busybox (install busybox-static: `make setup`)"
    return None


@dataclass(frozen=True)
class OciImage:
    """An OCI image layout archive and the manifest its index.json names."""

    archive: Path
    manifest_digest: str
    manifest_media_type: str


def build_busybox_image(workdir: Path, marker: str | None = None) -> OciImage:
    """An OCI image whose rootfs is busybox-static, as an archive `ctr images import` takes.
    `marker` is written to /etc/lightgate-image, so images built with different markers
    differ in content (and so in digest) as different software would."""
    workdir.mkdir(parents=True, exist_ok=True)
    layout, bundle = workdir / "layout", workdir / "bundle"
    image = f"{layout}:latest"
    _run(["umoci", "init", "--layout", str(layout)])
    _run(["umoci", "new", "--image", image])
    _run(["umoci", "unpack", "--image", image, str(bundle)])
    bin_dir = bundle / "rootfs" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    for applet in ("sh", "sleep"):
        (bin_dir / applet).symlink_to("busybox")
    if marker is not None:
        etc = bundle / "rootfs" / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "lightgate-image").write_text(marker + "\n")
    _run(["umoci", "repack", "--image", image, str(bundle)])
    _run(["umoci", "config", "--image", image, "--config.cmd", "/bin/sleep"])
    (manifest,) = json.loads((layout / "index.json").read_text())["manifests"]
    archive = workdir / "busybox-oci.tar"
    _run(["tar", "-C", str(layout), "-cf", str(archive), "."])
    return OciImage(archive, manifest["digest"], manifest["mediaType"])


class Containerd:
    """One running containerd, driven with `ctr` against its private socket."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "containerd.sock"
        config = workdir / "config.toml"
        config.write_text(
            CONFIG.format(root=workdir / "root", state=workdir / "state", socket=self.socket)
        )
        self._log = (workdir / "containerd.log").open("wb")
        argv = ["containerd", "--config", str(config), "--address", str(self.socket)]
        argv += ["--root", str(workdir / "root"), "--state", str(workdir / "state")]
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited at start: {self.log_tail()}")
            if self.socket.is_socket() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"containerd did not serve within {START_TIMEOUT_SECONDS}s")

    def log_tail(self, lines: int = 20) -> str:
        text = (self.workdir / "containerd.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def ctr(
        self, *args: str, namespace: str = "default", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", str(self.socket), "--namespace", namespace, *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=CTR_TIMEOUT_SECONDS, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
        return result

    def import_image(self, namespace: str, image: OciImage, base_name: str) -> str:
        """Import `image` into `namespace`; the image name containerd gives it."""
        self.ctr(
            "images", "import", "--base-name", base_name, str(image.archive), namespace=namespace
        )
        return f"{base_name}:latest"

    def run(self, namespace: str, image_name: str, container_id: str, *command: str) -> None:
        """Create `container_id` from `image_name` and start its task, detached."""
        self.ctr(
            "run",
            "-d",
            "--snapshotter",
            SNAPSHOTTER,
            image_name,
            container_id,
            *command,
            namespace=namespace,
        )

    def start(self, namespace: str, container_id: str) -> None:
        """Start the task of a created container, detached."""
        self.ctr("tasks", "start", "-d", container_id, namespace=namespace)

    def remove(self, namespace: str, container_id: str) -> None:
        """Kill and delete a container's task, then the container."""
        self.ctr("tasks", "kill", "-s", "SIGKILL", container_id, namespace=namespace, check=False)
        self.ctr("tasks", "delete", "--force", container_id, namespace=namespace, check=False)
        self.ctr("containers", "delete", container_id, namespace=namespace)

    def create(self, namespace: str, image_name: str, container_id: str) -> None:
        """Create `container_id` without starting a task."""
        self.ctr(
            "containers",
            "create",
            "--snapshotter",
            SNAPSHOTTER,
            image_name,
            container_id,
            namespace=namespace,
        )

    def empty_namespace(self, namespace: str) -> None:
        """Kill and delete every task and container in `namespace` (best effort)."""
        tasks = self.ctr("tasks", "ls", "-q", namespace=namespace, check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, namespace=namespace, check=False)
        for task in tasks:
            self.ctr("tasks", "delete", "--force", task, namespace=namespace, check=False)
        containers = self.ctr("containers", "ls", "-q", namespace=namespace, check=False)
        for container in containers.stdout.split():
            self.ctr("containers", "delete", container, namespace=namespace, check=False)
        # The runc shim keeps runc's state in a fixed /run/containerd/runc/<namespace>.
        with contextlib.suppress(OSError):
            (RUNC_STATE / namespace).rmdir()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _mounts_under(path: Path) -> list[str]:
    prefix = f"{path}/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


@contextlib.contextmanager
def private_containerd() -> Iterator[Containerd]:
    """A containerd in a fresh /tmp directory, stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="lg-ctd-", dir="/tmp"))
    daemon: Containerd | None = None
    try:
        daemon = Containerd(workdir)
        yield daemon
    finally:
        if daemon is not None:
            daemon.stop()
        for mount_point in _mounts_under(workdir):  # a task rootfs left by a failed delete
            subprocess.run(["umount", "-l", mount_point], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")

"""A real, private Podman API service for tests, serving the Docker-compatible Engine API.

`podman system service` runs as root on a socket under a short temporary directory (a
Unix socket path must fit in 108 bytes), with every place Podman keeps state moved there:
its storage (--root, --runroot, the `vfs` driver so no overlay mounts are needed), its
--tmpdir, runc's state (--runtime-flag root=...), its events (a file), and its
containers.conf and storage.conf (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF), so the host's
default storage is never touched.  The `podman` CLI sets the scene with the same flags;
what is under test reads the Engine API on the service's socket itself.

No registry is reachable here: the image is the busybox OCI archive the containerd tests
build with umoci, loaded with `podman load`.  Containers run with --network none and
ulimits no higher than this sandbox's (raising RLIMIT_NPROC needs CAP_SYS_RESOURCE).

Podman 4.3 writes its blob-info cache to /var/lib/containers/cache whatever the storage
flags say, and creates runc's default /run/runc (left empty); when either did not exist
before, it is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.integration.containerd_fixture import OciImage

BUSYBOX = Path("/bin/busybox")
TOOLS = ("podman", "conmon", "umoci")
OCI_RUNTIMES = ("runc", "crun")
START_TIMEOUT_SECONDS = 20.0
PODMAN_TIMEOUT_SECONDS = 60.0
#: Where Podman 4.3 (containers/image) keeps its blob-info cache when run as root.
HOST_BLOB_INFO_CACHE = Path("/var/lib/containers")
#: runc's default state directory, which some of Podman 4.3's runc calls still create.
HOST_RUNC_STATE = Path("/run/runc")
_PT_INTERP = 3

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "{tmp}"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
runroot = "{runroot}"
graphroot = "{root}"
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
    """Why a real Podman cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "podman tests need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not any(shutil.which(runtime) for runtime in OCI_RUNTIMES):
        missing.append(" or ".join(OCI_RUNTIMES))
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install podman umoci)"
    if not BUSYBOX.is_file() or not _is_static_elf(BUSYBOX):
        return f"{BUSYBOX} is not a static busybox (install busybox-static: `make setup`)"
    return None


class Podman:
    """One running `podman system service`, and the `podman` CLI on the same storage."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "podman.sock"
        tmp = workdir / "tmp"
        for directory in (tmp, workdir / "xdg-runtime", workdir / "xdg-config"):
            directory.mkdir(mode=0o700)
        containers_conf = workdir / "containers.conf"
        containers_conf.write_text(CONTAINERS_CONF.format(tmp=tmp))
        storage_conf = workdir / "storage.conf"
        storage_conf.write_text(
            STORAGE_CONF.format(runroot=workdir / "runroot", root=workdir / "root")
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(containers_conf),
            "CONTAINERS_STORAGE_CONF": str(storage_conf),
            "TMPDIR": str(tmp),
            "XDG_RUNTIME_DIR": str(workdir / "xdg-runtime"),
            "XDG_CONFIG_HOME": str(workdir / "xdg-config"),
        }
        self.flags = [
            "--root",
            str(workdir / "root"),
            "--runroot",
            str(workdir / "runroot"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--tmpdir",
            str(tmp),
            "--runtime-flag",
            f"root={workdir / 'runc'}",
        ]
        self._log = (workdir / "podman.log").open("wb")
        argv = ["podman", *self.flags, "system", "service", "--time=0", f"unix://{self.socket}"]
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"podman system service exited at start: {self.log_tail()}")
            if self.socket.is_socket():
                return
            time.sleep(0.1)
        raise RuntimeError(f"podman system service did not serve within {START_TIMEOUT_SECONDS}s")

    def log_tail(self, lines: int = 20) -> str:
        text = (self.workdir / "podman.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["podman", *self.flags, *args]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=PODMAN_TIMEOUT_SECONDS,
            env=self.env,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
        return result

    def load(self, image: OciImage, name: str) -> str:
        """Load `image` and name it `name` (only); the image ID Podman gives it."""
        loaded = self.podman("load", "--quiet", "--input", str(image.archive)).stdout
        prefix = "Loaded image: "
        (line,) = (line for line in loaded.splitlines() if line.startswith(prefix))
        loaded_name = line.removeprefix(prefix).strip()
        self.podman("tag", loaded_name, name)
        if loaded_name != name:
            self.podman("untag", loaded_name, loaded_name)
        return self.podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()

    def run(self, image_name: str, name: str, *command: str) -> str:
        """Create and start container `name`, detached; its id."""
        argv = ["run", "--detach", "--network", "none", "--name", name, image_name, *command]
        return self.podman(*argv).stdout.strip()

    def create(self, image_name: str, name: str, *command: str) -> str:
        """Create container `name` without starting it; its id."""
        argv = ["create", "--network", "none", "--name", name, image_name, *command]
        return self.podman(*argv).stdout.strip()

    def remove_all_containers(self) -> None:
        self.podman("rm", "--all", "--force", "--time", "0", check=False)

    def stop(self) -> None:
        self.remove_all_containers()
        self.podman("rmi", "--all", "--force", check=False)
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
def private_podman() -> Iterator[Podman]:
    """A Podman API service in a fresh /tmp directory, stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="lg-pm-", dir="/tmp"))
    had_host_cache = HOST_BLOB_INFO_CACHE.exists()
    had_runc_state = HOST_RUNC_STATE.exists()
    service: Podman | None = None
    try:
        service = Podman(workdir)
        yield service
    finally:
        if service is not None:
            service.stop()
        for mount_point in _mounts_under(workdir):  # e.g. a container's /dev/shm left behind
            subprocess.run(["umount", "-l", mount_point], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        if not had_host_cache:
            shutil.rmtree(HOST_BLOB_INFO_CACHE, ignore_errors=True)
        if not had_runc_state:
            with contextlib.suppress(OSError):  # only when empty: no container's state
                HOST_RUNC_STATE.rmdir()

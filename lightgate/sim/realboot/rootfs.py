"""A Debian 12 root file system for full guests (`attest sim run --vm`): systemd, the
TPM libraries, Python, and the Lightgate agent installed as the systemd service of
deploy/systemd/, as an ext4 image the guest's initramfs switches to.

Built in steps, each cached under the cache folder by what it is made from, so a second
run only boots:

1. `debootstrap --variant=minbase` of bookworm with GUEST_PACKAGES (about a minute; the
   packages come from the host's Debian mirror), plus the kernel's modules (the NIC
   driver is a module) and `depmod` in the chroot: `rootfs-<key>/`.
2. The agent: a venv made by the guest's own Python 3.11, holding the host venv's
   packages that the agent needs at run time (same CPython minor version and platform,
   so the compiled ones load) and Lightgate's own packages; the service's unit,
   sysusers and tmpfiles files from deploy/systemd/; systemd-networkd for DHCP on QEMU's
   user network; the agent's configuration pointing at the verifier's forwarded address.
   Then `mkfs.ext4 -d` makes `root-<key>.img`, keyed also by the project's sources.
3. Per guest (`guest_image`): a sparse copy whose /etc/hostname (the agent's node id)
   debugfs writes without mounting anything.

Needs root (debootstrap, chroot), debootstrap, e2fsprogs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from lightgate.sim.realboot.packages import DEFAULT_CACHE, BootFiles
from lightgate.sim.realboot.qemu import GUEST_VERIFIER

SUITE: Final = "bookworm"
MIRROR: Final = "http://deb.debian.org/debian"
GUEST_PACKAGES: Final = (
    "systemd-sysv",
    "udev",
    "kmod",
    "tpm-udev",
    "python3",
    "python3-venv",
)  # no tpm2-tss: the agent speaks TPM 2.0 to /dev/tpmrm0 itself (attestor/tpm2/)
IMAGE_BYTES: Final = 2 << 30
VENV: Final = "/opt/lightgate"
#: Lightgate's own packages, copied into the guest's venv.
PROJECT_PACKAGES: Final = ("attestor", "lightgate", "verifier")
#: Host venv packages the agent never imports (tools, tests, the verifier's store, its
#: gRPC server, policy engine and CLI); tests/unit/attestor/test_agent_footprint.py
#: checks that the agent loads none of them.
EXCLUDED: Final = (
    "grpc",
    "grpcio",
    "grpc_health",
    "grpcio_health_checking",
    "grpc_reflection",
    "grpcio_reflection",
    "grpcio_tools",
    "tpm2_pytss",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "typing_inspection",
    "annotated_types",
    "dotenv",
    "python_dotenv",
    "typer",
    "rich",
    "shellingham",
    "markdown_it",
    "markdown_it_py",
    "mdurl",
    "mako",
    "markupsafe",
    "cbor2",
    "gordon_to_regorus",
    "sortedcontainers",
    "mypy_protobuf",
    "types_protobuf",
    "types_pyyaml",
    "iniconfig",
    "pluggy",
    "pathspec",
    "packaging",
    "mypy",
    "mypyc",
    "mypy_extensions",
    "hypothesis",
    "grpc_tools",
    "pip",
    "setuptools",
    "_distutils_hack",
    "pytest",
    "_pytest",
    "ruff",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg_binary",
    "psycopg_binary.libs",
    "regorus",
    "pygments",
    "atheris",
    "lightgate-0.1.0.dist-info",
    "__editable__",
)
REPO: Final = Path(__file__).resolve().parents[3]
_NO_CACHE: Final = shutil.ignore_patterns("__pycache__")


class RootfsError(Exception):
    """A build step failed; the message names it and what it printed."""


def _run(argv: list[str], what: str, timeout: float = 900) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise RootfsError(f"{what} failed ({done.returncode}): " + "\n".join(tail))


def missing_prerequisites() -> str | None:
    """Why a guest root file system cannot be built here, or None."""
    if os.geteuid() != 0:
        return "building a guest root file system needs root (debootstrap, chroot)"
    missing = [t for t in ("debootstrap", "mkfs.ext4", "debugfs") if shutil.which(t) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (make setup installs them)"
    return None


def _digest(parts: Iterable[bytes]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big") + part)
    return hasher.hexdigest()[:16]


def _sources_digest() -> bytes:
    """What the agent image is made of from this checkout: the project's packages and
    the service files (a change to any rebuilds the image)."""
    hasher = hashlib.sha256()
    roots = [REPO / name for name in PROJECT_PACKAGES] + [REPO / "deploy" / "systemd"]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                hasher.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return hasher.digest()


def base_rootfs(files: BootFiles, cache: Path = DEFAULT_CACHE) -> Path:
    """Step 1, cached: debootstrap plus the kernel's modules."""
    modules = _modules_dir(files)
    key = _digest([SUITE.encode(), " ".join(GUEST_PACKAGES).encode(), modules.name.encode()])
    target = cache / f"rootfs-{key}"
    if (target / ".complete").exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    include = ",".join(GUEST_PACKAGES)
    _run(
        ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(target), MIRROR],
        "debootstrap",
    )
    shutil.copytree(modules, target / "lib" / "modules" / modules.name, symlinks=True)
    _run(["chroot", str(target), "depmod", modules.name], "depmod in the guest")
    (target / ".complete").write_text("")
    return target


def _modules_dir(files: BootFiles) -> Path:
    package = files.kernel.parent.parent  # <unpacked>/boot/vmlinuz-<ver>
    (modules,) = (package / "lib" / "modules").iterdir()
    return modules


def agent_image(files: BootFiles, cache: Path = DEFAULT_CACHE) -> Path:
    """Step 2, cached: the ext4 image with the agent installed as a service."""
    base = base_rootfs(files, cache)
    key = _digest([base.name.encode(), _sources_digest(), sys.version.encode()])
    image = cache / f"root-{key}.img"
    if image.exists():
        return image
    with tempfile.TemporaryDirectory(dir=cache, prefix="rootfs-build-") as scratch:
        tree = Path(scratch) / "tree"
        _run(["cp", "-a", str(base), str(tree)], "copy of the base root file system")
        (tree / ".complete").unlink()
        _install_agent(tree)
        partial = Path(scratch) / "root.img"
        with partial.open("wb") as disk:
            disk.truncate(IMAGE_BYTES)
        _run(
            ["mkfs.ext4", "-q", "-F", "-L", "lightgate-root", "-d", str(tree), str(partial)],
            "mkfs.ext4",
        )
        partial.rename(image)
    return image


def guest_image(base: Path, node_id: str, folder: Path) -> Path:
    """Step 3: a guest's own copy of the image, its host name set to `node_id`."""
    if any(c.isspace() for c in str(folder)):  # debugfs -R splits its request on spaces
        raise RootfsError(f"{folder}: the guest folder's path cannot hold white space")
    image = folder / f"{node_id}.img"
    _run(["cp", "--sparse=always", str(base), str(image)], "copy of the root image")
    hostname = folder / f"{node_id}.hostname"
    hostname.write_text(node_id + "\n")
    _run(["debugfs", "-w", "-R", "rm /etc/hostname", str(image)], "debugfs rm")
    _run(["debugfs", "-w", "-R", f"write {hostname} /etc/hostname", str(image)], "debugfs write")
    return image


def _install_agent(tree: Path) -> None:
    _run(["chroot", str(tree), "python3", "-m", "venv", "--without-pip", VENV], "guest venv")
    (site,) = (tree / VENV.lstrip("/") / "lib").glob("python3.*/site-packages")
    host_site = (
        Path(sys.prefix)
        / "lib"
        / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        / "site-packages"
    )
    for entry in sorted(host_site.iterdir()):
        if _excluded(entry.name):
            continue
        if entry.is_dir():
            shutil.copytree(entry, site / entry.name, ignore=_NO_CACHE)
        else:
            shutil.copy2(entry, site / entry.name)
    for package in PROJECT_PACKAGES:
        shutil.copytree(REPO / package, site / package, ignore=_NO_CACHE)
    _write(tree / "usr/local/bin/lightgate-agent", _AGENT_SCRIPT, 0o755)
    systemd = REPO / "deploy" / "systemd"
    _write(
        tree / "etc/systemd/system/lightgate-attestor.service",
        (systemd / "lightgate-attestor.service").read_text(),
    )
    _write(
        tree / "usr/lib/sysusers.d/lightgate.conf",
        (systemd / "lightgate.sysusers.conf").read_text(),
    )
    _write(
        tree / "usr/lib/tmpfiles.d/lightgate-attestor.conf",
        (systemd / "lightgate-attestor.tmpfiles.conf").read_text(),
    )
    _write(tree / "etc/lightgate/agent.yaml", _AGENT_CONFIG)
    _write(tree / "etc/systemd/network/20-wired.network", _NETWORK)
    _write(tree / "etc/modules-load.d/lightgate.conf", "virtio_pci\nvirtio_net\n")
    # The journal on the serial console too: what the agent logs shows in console.log.
    _write(tree / "etc/systemd/journald.conf.d/console.conf", _JOURNAL_TO_CONSOLE)
    _write(tree / "etc/fstab", "/dev/nvme0n1 / ext4 rw,errors=remount-ro 0 1\n")
    _write(tree / "etc/hostname", "lightgate-guest\n")
    for unit, wanted_by in (
        ("/etc/systemd/system/lightgate-attestor.service", "multi-user.target"),
        ("/lib/systemd/system/systemd-networkd.service", "multi-user.target"),
        ("/lib/systemd/system/systemd-networkd-wait-online.service", "network-online.target"),
    ):
        wants = tree / "etc/systemd/system" / f"{wanted_by}.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / Path(unit).name
        if not link.is_symlink():
            link.symlink_to(unit)


def _excluded(name: str) -> bool:
    stem = name.split("-", maxsplit=1)[0].split(".", maxsplit=1)[0]
    return (
        name in EXCLUDED
        or stem in EXCLUDED
        or name.startswith("__editable__")
        or name.endswith(".pth")
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


_AGENT_SCRIPT: Final = f"""#!{VENV}/bin/python3
import sys

from attestor.__main__ import main

sys.exit(main())
"""

_AGENT_CONFIG: Final = textwrap.dedent(
    f"""\
    # The simulator's guests: the verifier is QEMU's forwarded address; node_id is the
    # host name (set per guest).
    verifier: {GUEST_VERIFIER[0]}:{GUEST_VERIFIER[1]}
    tcti: device:/dev/tpmrm0
    ek_kind: rsa
    ak_algorithm: ecc
    state_dir: /var/lib/lightgate-attestor
    interval_seconds: 5
    rpc_timeout_seconds: 30
    backoff_initial_seconds: 1
    backoff_max_seconds: 10
    """
)

_NETWORK: Final = textwrap.dedent(
    """\
    [Match]
    Name=en*

    [Network]
    DHCP=ipv4
    """
)

_JOURNAL_TO_CONSOLE: Final = textwrap.dedent(
    """\
    [Journal]
    ForwardToConsole=yes
    TTYPath=/dev/ttyS0
    MaxLevelConsole=info
    """
)

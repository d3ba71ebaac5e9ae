"""Fetch the Debian 12 packages a real boot needs, without installing them on the host.

`apt-get download` puts each .deb in a cache folder and `dpkg-deb -x` unpacks it next to
it.  A .deb already in the cache is used as it is, so a second run downloads nothing and
the recording stays pinned to the versions first fetched (delete the cache to move on).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Packages fetched by name.  The kernel metapackage only points at the versioned image.
PACKAGES: Final = ("ovmf", "shim-signed", "grub-efi-amd64-signed", "busybox-static")
KERNEL_METAPACKAGE: Final = "linux-image-cloud-amd64"
#: The repository's .cache/realboot (git-ignored).
DEFAULT_CACHE: Final = Path(__file__).resolve().parents[3] / ".cache" / "realboot"


class PackageError(Exception):
    """A package could not be downloaded or unpacked; the message has the tool's output."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    deb: Path
    sha256: str
    root: Path  # where the .deb is unpacked

    def manifest(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "deb": self.deb.name,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class BootFiles:
    """The host-side files of a boot, all inside the cache's unpacked trees."""

    ovmf_code_secboot: Path
    ovmf_code: Path
    ovmf_vars_ms: Path
    ovmf_vars: Path
    shim: Path
    grub: Path
    kernel: Path
    busybox: Path
    packages: tuple[Package, ...]

    def binaries(self) -> dict[str, Path]:
        return {
            "OVMF_CODE_4M.secboot.fd": self.ovmf_code_secboot,
            "OVMF_CODE_4M.fd": self.ovmf_code,
            "OVMF_VARS_4M.ms.fd": self.ovmf_vars_ms,
            "OVMF_VARS_4M.fd": self.ovmf_vars,
            "shimx64.efi.signed": self.shim,
            "grubx64.efi.signed": self.grub,
            self.kernel.name: self.kernel,
            "busybox": self.busybox,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run(argv: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PackageError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def _cached_deb(cache: Path, name: str) -> Path | None:
    found = sorted(cache.glob(f"{name}_*.deb"))
    if len(found) > 1:
        raise PackageError(f"more than one {name} .deb in {cache}: {[p.name for p in found]}")
    return found[0] if found else None


def fetch_package(name: str, cache: Path) -> Package:
    """Download `name` into `cache` (unless a .deb of it is there) and unpack it."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = _cached_deb(debs, name)
    if deb is None:
        if shutil.which("apt-get") is None:
            raise PackageError("apt-get not found: real boots need a Debian 12 host")
        # Root cannot hand the download to the _apt sandbox user in a private folder.
        _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", name], cwd=debs)
        deb = _cached_deb(debs, name)
        if deb is None:
            raise PackageError(f"apt-get download {name} left no .deb in {debs}")
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    root = cache / "unpacked" / f"{name}_{version}"
    if not (root / ".complete").exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        (root / ".complete").write_text(deb.name + "\n")
    return Package(name=name, version=version, deb=deb, sha256=sha256_file(deb), root=root)


def kernel_package_name(metapackage: Package) -> str:
    """The versioned linux-image package the metapackage depends on."""
    depends = _run(["dpkg-deb", "-f", str(metapackage.deb), "Depends"])
    for alternative in depends.split(","):
        name = alternative.split("|")[0].split("(")[0].strip()
        if name.startswith("linux-image-") and name.endswith("-cloud-amd64"):
            return name
    raise PackageError(f"{metapackage.name} depends on no linux-image: {depends!r}")


def _one(root: Path, pattern: str) -> Path:
    found = sorted(p for p in root.glob(pattern) if p.is_file())
    if len(found) != 1:
        raise PackageError(f"expected one {pattern} in {root}, found {found}")
    return found[0]


def fetch(cache: Path = DEFAULT_CACHE) -> BootFiles:
    """Download and unpack everything a boot needs; return where the files are."""
    fetched = {name: fetch_package(name, cache) for name in PACKAGES}
    meta = fetch_package(KERNEL_METAPACKAGE, cache)
    kernel_pkg = fetch_package(kernel_package_name(meta), cache)
    ovmf = fetched["ovmf"].root / "usr/share/OVMF"
    return BootFiles(
        ovmf_code_secboot=ovmf / "OVMF_CODE_4M.secboot.fd",
        ovmf_code=ovmf / "OVMF_CODE_4M.fd",
        ovmf_vars_ms=ovmf / "OVMF_VARS_4M.ms.fd",
        ovmf_vars=ovmf / "OVMF_VARS_4M.fd",
        shim=_one(fetched["shim-signed"].root, "usr/lib/shim/shimx64.efi.signed"),
        grub=_one(
            fetched["grub-efi-amd64-signed"].root,
            "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        ),
        kernel=_one(kernel_pkg.root, "boot/vmlinuz-*"),
        busybox=_one(fetched["busybox-static"].root, "bin/busybox"),
        packages=(*fetched.values(), meta, kernel_pkg),
    )

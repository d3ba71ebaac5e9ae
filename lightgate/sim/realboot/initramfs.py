"""A byte-identical initramfs: static busybox and an /init that exports TPM evidence.

grub measures the initrd it loads (PCR 9), so the archive must not change between
builds: entries are written in a fixed order with fixed inode numbers, uid/gid 0 and
mtime 0, and gzip gets mtime 0 and no file name.  Pure functions: bytes in, bytes out.

The guest's /init writes to the second serial port (/dev/ttyS1, QEMU's second
`-serial`) in the format `record.parse_evidence` reads:

    LIGHTGATE-EVIDENCE BEGIN
    UNAME <kernel release>
    CMDLINE <the kernel command line>
    EVENTLOG BEGIN <size> <sha256 hex>
    <base64 of binary_bios_measurements, 76 characters a line>
    EVENTLOG END
    PCR <bank> <index> <hex>          (every /sys/class/tpm/tpm0/pcr-<bank>/<index>)
    LIGHTGATE-EVIDENCE END

then powers the machine off.  Unless the machine has a root file system: when the NVMe
disk (`ROOT_DEVICE`) holds an ext4 file system with /sbin/init, /init mounts it and
switches to it instead (`attest sim run --vm`: a full guest whose agent reads the log
itself).  One initramfs for both, so a recording and a full guest measure the same boot.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

NEWC_MAGIC: Final = b"070701"
TRAILER: Final = "TRAILER!!!"
EVIDENCE_PORT: Final = "/dev/ttyS1"
ROOT_DEVICE: Final = "/dev/nvme0n1"
PCR_INDICES: Final = range(24)

INIT_SCRIPT: Final = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
root={ROOT_DEVICE}
i=0
while [ ! -b "$root" ] && [ "$i" -lt 25 ]; do sleep 0.2; i=$((i + 1)); done
if [ -b "$root" ] && mount -t ext4 "$root" /newroot 2>/dev/null; then
  if [ -L /newroot/sbin/init ] || [ -x /newroot/sbin/init ]; then
    echo "lightgate: switching to the root file system on $root"
    umount /sys/kernel/security
    mount --move /dev /newroot/dev
    mount --move /sys /newroot/sys
    mount --move /proc /newroot/proc
    exec switch_root /newroot /sbin/init
  fi
  umount /newroot
fi
log=/sys/kernel/security/tpm0/binary_bios_measurements
i=0
while [ ! -e "$log" ] && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
out={EVIDENCE_PORT}
stty -F "$out" raw -echo 2>/dev/null
{{
  echo "LIGHTGATE-EVIDENCE BEGIN"
  echo "UNAME $(uname -r)"
  echo "CMDLINE $(cat /proc/cmdline)"
  if [ -r "$log" ]; then
    cat "$log" > /eventlog.bin
    echo "EVENTLOG BEGIN $(wc -c < /eventlog.bin) $(sha256sum /eventlog.bin | cut -d ' ' -f 1)"
    base64 /eventlog.bin
    echo "EVENTLOG END"
  fi
  for bank in /sys/class/tpm/tpm0/pcr-*; do
    [ -d "$bank" ] || continue
    name="${{bank##*/pcr-}}"
    for n in {" ".join(str(n) for n in PCR_INDICES)}; do
      [ -r "$bank/$n" ] && echo "PCR $name $n $(cat "$bank/$n")"
    done
  done
  echo "LIGHTGATE-EVIDENCE END"
}} > "$out"
echo "lightgate: evidence written to $out"
sync
poweroff -f
"""


@dataclass(frozen=True)
class CpioEntry:
    """One newc member.  `data` is the file's bytes, or a symlink's target."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(length: int) -> bytes:
    return b"\x00" * (-length % 4)


def newc_archive(entries: Iterable[CpioEntry]) -> bytes:
    """An uncompressed newc ("070701") cpio archive with fixed metadata, then the trailer.

    Inode numbers count up from 1 in the order given; uid, gid and mtime are 0.
    """
    out = bytearray()
    members = [*entries, CpioEntry(TRAILER, 0)]
    for ino, entry in enumerate(members, start=1):
        name = entry.name.lstrip("/").encode()
        if not name:
            raise ValueError("a cpio entry needs a name")
        is_trailer = entry.name == TRAILER
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        fields = (
            0 if is_trailer else ino,
            entry.mode,
            0,  # uid
            0,  # gid
            0 if is_trailer else nlink,
            0,  # mtime
            len(entry.data),
            0,  # devmajor
            0,  # devminor
            entry.rdev[0],
            entry.rdev[1],
            len(name) + 1,
            0,  # check
        )
        header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
        out += header + name + b"\x00"
        out += _pad4(len(header) + len(name) + 1)
        out += entry.data + _pad4(len(entry.data))
    return bytes(out)


def gzip_deterministic(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name: the same input always gives the same bytes."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def initramfs_entries(busybox: bytes, init_script: str = INIT_SCRIPT) -> list[CpioEntry]:
    directory = stat.S_IFDIR | 0o755
    return [
        CpioEntry("bin", directory),
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox),
        CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        CpioEntry("dev", directory),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)),
        CpioEntry("init", stat.S_IFREG | 0o755, init_script.encode()),
        CpioEntry("newroot", directory),
        CpioEntry("proc", directory),
        CpioEntry("sys", directory),
        CpioEntry("tmp", directory | stat.S_ISVTX | 0o777),
    ]


def build_initramfs(busybox: bytes, init_script: str = INIT_SCRIPT) -> bytes:
    """The gzip'ed initramfs: the same busybox and script always give the same bytes."""
    return gzip_deterministic(newc_archive(initramfs_entries(busybox, init_script)))

"""The EFI System Partition image, built with mtools (no root, no loop mounts).

The disk has a GUID partition table written here in pure Python with fixed GUIDs (so
OVMF's EV_EFI_GPT_EVENT in PCR 5 is the same every build) and one partition, the
EFI System Partition, a FAT32 file system that mtools writes in place (`image@@offset`):

    /EFI/BOOT/BOOTX64.EFI   shim (signed by Microsoft's UEFI CA): the removable-media path
    /EFI/BOOT/grubx64.efi   Debian's signed monolithic grub, which shim loads next to itself
    /EFI/debian/grub.cfg    grub's embedded prefix is /EFI/debian: its built-in config
                            sources $prefix/grub.cfg from the device it was loaded from
    /vmlinuz                the signed Debian cloud kernel (shim verifies it for grub)
    /initrd.img             `initramfs.build_initramfs`

shim's fallback (fbx64.efi, which would write Boot#### entries and reset) is left out:
shim finds no fallback and goes on to grubx64.efi.  The FAT's directory timestamps are the
build time, but nothing in the image other than the GPT and the loaded files is measured.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import uuid
import zlib
from pathlib import Path
from typing import Final

#: The kernel command line, in one place: tests compare it with what the log claims.
KERNEL_CMDLINE: Final = "console=ttyS0 panic=-1"
KERNEL_PATH: Final = "/vmlinuz"
INITRD_PATH: Final = "/initrd.img"
GRUB_CFG_PATH: Final = "/EFI/debian/grub.cfg"
#: The disk's size; the files take about 22 MiB.
DISK_SIZE: Final = 64 * 1024 * 1024
SECTOR: Final = 512
#: The ESP starts at 1 MiB, as partitioning tools align it.
ESP_FIRST_LBA: Final = 2048
GPT_ENTRIES: Final = 128
GPT_ENTRY_SIZE: Final = 128
ESP_TYPE_GUID: Final = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
DISK_GUID: Final = uuid.UUID("4c474154-0000-4000-8000-6469736b0001")
ESP_PARTITION_GUID: Final = uuid.UUID("4c474154-0000-4000-8000-657370000001")
#: A fixed volume serial ("LGAT") so the FAT's boot sector is the same every build.
VOLUME_SERIAL: Final = "4c474154"

#: `linuxefi`, not `linux`: Debian's signed grub 2.06 hands over to the kernel's EFI stub
#: only when Secure Boot is on; with it off, `linux` jumps past the stub, which is what
#: copies the TCG2 event log into a config table, and Linux ends up with no
#: binary_bios_measurements.  `linuxefi` takes the EFI handover path in both modes.
GRUB_CFG: Final = f"""set timeout=0
set default=0
menuentry "Lightgate measured boot" {{
	linuxefi {KERNEL_PATH} {KERNEL_CMDLINE}
	initrdefi {INITRD_PATH}
}}
"""


class EspError(Exception):
    """mtools failed; the message has its output."""


def require_tools() -> None:
    missing = [tool for tool in ("mformat", "mmd", "mcopy") if shutil.which(tool) is None]
    if missing:
        raise EspError(f"{', '.join(missing)} not found: apt-get install mtools")


def _mtools(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EspError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")


def _gpt_header(
    *, current: int, backup: int, entries_lba: int, last_usable: int, entries_crc: int
) -> bytes:
    fields = [
        b"EFI PART",
        0x00010000,  # revision 1.0
        92,  # header size
        0,  # header CRC32, filled in below
        0,  # reserved
        current,
        backup,
        34,  # first usable LBA
        last_usable,
        DISK_GUID.bytes_le,
        entries_lba,
        GPT_ENTRIES,
        GPT_ENTRY_SIZE,
        entries_crc,
    ]
    layout = "<8sIIIIQQQQ16sQIII"
    header = struct.pack(layout, *fields)
    fields[3] = zlib.crc32(header)
    return struct.pack(layout, *fields).ljust(SECTOR, b"\x00")


def gpt(disk_size: int = DISK_SIZE) -> tuple[bytes, bytes, int, int]:
    """(the first 34 sectors, the last 33 sectors, ESP's first byte, ESP's size in bytes).

    A protective MBR, the primary header and entry array, and their backups: one EFI
    System Partition from LBA 2048 to the last usable LBA, every GUID fixed.
    """
    sectors = disk_size // SECTOR
    last_usable = sectors - 34
    entry = struct.pack(
        "<16s16sQQQ72s",
        ESP_TYPE_GUID.bytes_le,
        ESP_PARTITION_GUID.bytes_le,
        ESP_FIRST_LBA,
        last_usable,
        0,  # attributes
        "EFI System Partition".encode("utf-16-le"),
    )
    entries = entry.ljust(GPT_ENTRIES * GPT_ENTRY_SIZE, b"\x00")
    entries_crc = zlib.crc32(entries)
    mbr_entry = struct.pack(
        "<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, min(sectors - 1, 0xFFFFFFFF)
    )
    mbr = bytes(446) + mbr_entry + bytes(48) + b"\x55\xaa"
    primary = _gpt_header(
        current=1, backup=sectors - 1, entries_lba=2, last_usable=last_usable,
        entries_crc=entries_crc,
    )  # fmt: skip
    backup = _gpt_header(
        current=sectors - 1, backup=1, entries_lba=sectors - 33, last_usable=last_usable,
        entries_crc=entries_crc,
    )  # fmt: skip
    head = mbr + primary + entries
    tail = entries + backup
    size = (last_usable - ESP_FIRST_LBA + 1) * SECTOR
    return head, tail, ESP_FIRST_LBA * SECTOR, size


def build_esp(
    image: Path,
    *,
    shim: Path,
    grub: Path,
    kernel: Path,
    initrd: Path,
    grub_cfg: str = GRUB_CFG,
) -> dict[str, Path]:
    """Write the disk image (GPT + ESP) to `image`; return the ESP path of each file."""
    require_tools()
    image.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    head, tail, offset, size = gpt()
    with image.open("wb") as handle:
        handle.write(head)
        handle.truncate(DISK_SIZE - len(tail))
        handle.seek(DISK_SIZE - len(tail))
        handle.write(tail)
    img = f"{image}@@{offset}"
    sectors = str(size // SECTOR)
    _mtools("mformat", "-i", img, "-F", "-T", sectors, "-v", "ESP", "-N", VOLUME_SERIAL, "::")
    _mtools("mmd", "-i", img, "::/EFI", "::/EFI/BOOT", "::/EFI/debian")
    cfg = image.with_name(image.name + ".grub.cfg")
    cfg.write_text(grub_cfg)
    files = {
        "/EFI/BOOT/BOOTX64.EFI": shim,
        "/EFI/BOOT/grubx64.efi": grub,
        GRUB_CFG_PATH: cfg,
        KERNEL_PATH: kernel,
        INITRD_PATH: initrd,
    }
    for target, source in files.items():
        _mtools("mcopy", "-i", img, str(source), f"::{target}")
    return files

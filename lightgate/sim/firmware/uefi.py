"""UEFI structures the fixture builder writes into event data: bytes only, no I/O.

Layouts follow UEFI 2.10 and the TCG PC Client Platform Firmware Profile (PFP) 1.05,
section 10.2.  Integers are little-endian; GUIDs are written mixed-endian (EFI_GUID:
the first three fields little-endian), which is `uuid.UUID.bytes_le`.  UINTN is 8 bytes:
the logs declare uintnSize 2 (x64 firmware) in their Spec ID header.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from uuid import UUID

#: EFI_GLOBAL_VARIABLE (UEFI 2.10, 3.3): SecureBoot, PK, KEK, BootOrder, Boot####.
EFI_GLOBAL_VARIABLE: Final = UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
#: EFI_IMAGE_SECURITY_DATABASE_GUID (UEFI 2.10, 32.6.1): db, dbx.
EFI_IMAGE_SECURITY_DATABASE: Final = UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
#: shim's vendor GUID for its own variables (MokList, SbatLevel) and measurements.
SHIM_LOCK_GUID: Final = UUID("605dab50-e046-4300-abb6-3dd810dd8b23")
#: EFI_SIGNATURE_LIST types (UEFI 2.10, 32.4.1).
EFI_CERT_X509_GUID: Final = UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_SHA256_GUID: Final = UUID("c1c41626-504c-4092-aca9-41f936934328")
#: GPT partition types (UEFI 2.10, 5.3.3; the Discoverable Partitions Specification).
EFI_SYSTEM_PARTITION: Final = UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
LINUX_FILESYSTEM_DATA: Final = UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")

#: EFI_LOAD_OPTION.Attributes: LOAD_OPTION_ACTIVE (UEFI 2.10, 3.1.3).
LOAD_OPTION_ACTIVE: Final = 0x00000001

SECTOR_SIZE: Final = 512
_GPT_ENTRY_COUNT: Final = 128
_GPT_ENTRY_SIZE: Final = 128
_GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # EFI_PARTITION_TABLE_HEADER, 92 bytes
_GPT_ENTRY = struct.Struct("<16s16sQQQ72s")  # EFI_PARTITION_ENTRY, 128 bytes
_SIGNATURE_LIST_HEADER = struct.Struct("<16sIII")  # type, list size, header size, sig size


def ucs2(text: str, *, terminated: bool = True) -> bytes:
    """UEFI CHAR16 text: UTF-16LE, NUL-terminated unless told otherwise."""
    return (text + "\0" if terminated else text).encode("utf-16-le")


def variable_data(vendor: UUID, name: str, data: bytes) -> bytes:
    """UEFI_VARIABLE_DATA (PFP 10.2.6): the name is counted in CHAR16s, not terminated."""
    encoded = ucs2(name, terminated=False)
    return vendor.bytes_le + struct.pack("<QQ", len(encoded) // 2, len(data)) + encoded + data


def signature_data(owner: UUID, payload: bytes) -> bytes:
    """EFI_SIGNATURE_DATA (UEFI 2.10, 32.4.1): SignatureOwner, then the signature."""
    return owner.bytes_le + payload


def signature_list(signature_type: UUID, owner: UUID, payloads: Sequence[bytes]) -> bytes:
    """One EFI_SIGNATURE_LIST of same-sized entries; no entries gives no bytes."""
    if not payloads:
        return b""
    size = 16 + len(payloads[0])
    if any(16 + len(payload) != size for payload in payloads):
        raise ValueError("entries of one EFI_SIGNATURE_LIST must have the same size")
    total = _SIGNATURE_LIST_HEADER.size + size * len(payloads)
    header = _SIGNATURE_LIST_HEADER.pack(signature_type.bytes_le, total, 0, size)
    return header + b"".join(signature_data(owner, payload) for payload in payloads)


def x509_database(owner: UUID, certificates: Sequence[bytes]) -> bytes:
    """PK, KEK, db or MokList contents: one EFI_CERT_X509 list per certificate, since
    certificates differ in size (firmware and mokutil write them this way)."""
    return b"".join(signature_list(EFI_CERT_X509_GUID, owner, [der]) for der in certificates)


def sha256_database(owner: UUID, digests: Sequence[bytes]) -> bytes:
    """dbx or MokListX contents: one EFI_CERT_SHA256 list holding every digest."""
    return signature_list(EFI_CERT_SHA256_GUID, owner, digests)


# Device paths (UEFI 2.10, 10.3): nodes of type, sub-type, UINT16 length, body.


def _node(node_type: int, sub_type: int, body: bytes) -> bytes:
    return struct.pack("<BBH", node_type, sub_type, 4 + len(body)) + body


END_OF_DEVICE_PATH: Final = _node(0x7F, 0xFF, b"")


def acpi_pci_root(uid: int = 0) -> bytes:
    """ACPI_HID_DEVICE_PATH for PciRoot(uid): _HID PNP0A03 in EISA form."""
    return _node(0x02, 0x01, struct.pack("<II", 0x0A0341D0, uid))


def pci(device: int, function: int) -> bytes:
    """PCI_DEVICE_PATH: Function comes first, then Device."""
    return _node(0x01, 0x01, bytes([function, device]))


def file_path(path: str) -> bytes:
    """FILEPATH_DEVICE_PATH: a NUL-terminated CHAR16 path such as \\EFI\\debian\\shimx64.efi."""
    return _node(0x04, 0x04, ucs2(path))


@dataclass(frozen=True, slots=True)
class Partition:
    """One GPT partition: enough to write its GPT entry and its HARDDRIVE_DEVICE_PATH."""

    number: int  # 1-based, as in the device path
    type_guid: UUID
    unique_guid: UUID
    first_lba: int
    last_lba: int
    name: str

    @property
    def size_lba(self) -> int:
        return self.last_lba - self.first_lba + 1


def hard_drive(partition: Partition) -> bytes:
    """HARDDRIVE_DEVICE_PATH of a GPT partition (MBRType 2, SignatureType 2: a GUID)."""
    body = struct.pack(
        "<IQQ16sBB",
        partition.number,
        partition.first_lba,
        partition.size_lba,
        partition.unique_guid.bytes_le,
        0x02,
        0x02,
    )
    return _node(0x04, 0x01, body)


def load_option(description: str, file_paths: bytes, attributes: int = LOAD_OPTION_ACTIVE) -> bytes:
    """EFI_LOAD_OPTION (UEFI 2.10, 3.1.3), the contents of a Boot#### variable."""
    return struct.pack("<IH", attributes, len(file_paths)) + ucs2(description) + file_paths


def boot_order(numbers: Sequence[int]) -> bytes:
    """BootOrder: an array of UINT16 option numbers."""
    return struct.pack(f"<{len(numbers)}H", *numbers)


def image_load_event(location: int, length: int, device_path: bytes) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT (PFP 10.2.3) with 8-byte UINTNs; link-time address 0 as
    OVMF and shim log it."""
    return struct.pack("<QQQQ", location, length, 0, len(device_path)) + device_path


def platform_firmware_blob(base: int, length: int) -> bytes:
    """UEFI_PLATFORM_FIRMWARE_BLOB (PFP 10.2.4): BlobBase, BlobLength."""
    return struct.pack("<QQ", base, length)


def gpt_data(disk_guid: UUID, total_sectors: int, partitions: Sequence[Partition]) -> bytes:
    """UEFI_GPT_DATA (PFP 10.2.5): the partition table header, NumberOfPartitions, then
    the entries in use.  Both CRC32s are real, over a 128-entry array as on disk."""
    entries = b"".join(_gpt_entry(partition) for partition in partitions)
    array = entries + bytes(_GPT_ENTRY_SIZE * (_GPT_ENTRY_COUNT - len(partitions)))
    fields = [
        b"EFI PART",
        0x00010000,  # Revision 1.0
        _GPT_HEADER.size,  # HeaderSize: 92
        0,  # HeaderCRC32, computed with this field zero
        0,  # Reserved
        1,  # MyLBA
        total_sectors - 1,  # AlternateLBA: the backup header in the last sector
        34,  # FirstUsableLBA: after the header and a 16 KiB entry array
        total_sectors - 34,  # LastUsableLBA
        disk_guid.bytes_le,
        2,  # PartitionEntryLBA
        _GPT_ENTRY_COUNT,
        _GPT_ENTRY_SIZE,
        zlib.crc32(array),
    ]
    fields[3] = zlib.crc32(_GPT_HEADER.pack(*fields))
    return _GPT_HEADER.pack(*fields) + struct.pack("<Q", len(partitions)) + entries


def _gpt_entry(partition: Partition) -> bytes:
    name = ucs2(partition.name, terminated=False)
    if len(name) > 72:
        raise ValueError(f"partition name {partition.name!r} exceeds 36 CHAR16s")
    return _GPT_ENTRY.pack(
        partition.type_guid.bytes_le,
        partition.unique_guid.bytes_le,
        partition.first_lba,
        partition.last_lba,
        0,  # Attributes
        name.ljust(72, b"\0"),
    )

"""EFI device paths (UEFI 2.10, 10.2-10.3): bounds-checked node walk and a short rendering.

Device paths reach the verifier inside UEFI_IMAGE_LOAD_EVENT (TCG PC Client PFP 1.05,
10.2.3) and EFI_LOAD_OPTION (UEFI 2.10, 3.1.3).  They are not covered by any event digest
(an image's digest is its PE Authenticode hash), so what they say is a hint for tables and
findings, never evidence.  Every node length is checked; a short or inconsistent path
raises `EventDataMalformed`, and `device_path_text` never raises at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from verifier.evidence.errors import EventDataMalformed

# UEFI 2.10, 10.3.1: node types.
HARDWARE, ACPI, MESSAGING, MEDIA, BBS, END = 0x01, 0x02, 0x03, 0x04, 0x05, 0x7F
END_INSTANCE, END_ENTIRE = 0x01, 0xFF  # 10.3.1: End-of-instance / End-of-entire-path subtypes
MEDIA_FILE_PATH = 0x04  # 10.3.5.4
_NODE_HEADER = 4  # Type u8, SubType u8, Length u16 (the header counts in Length)
_EISA_PNP_PCI_ROOT = 0x0A0341D0  # EISA_PNP_ID(0x0A03): PCI root bridge (10.3.3)
_EISA_PNP_PCIE_ROOT = 0x0A0841D0  # EISA_PNP_ID(0x0A08): PCI Express root bridge


class LeReader:
    """A bounds-checked little-endian cursor over one UEFI/TCG structure; `event_data`
    reads its structures with it too (TPM structures are big endian: tpm_structures.Reader).
    Errors name the structure and the byte offset within it."""

    __slots__ = ("_buf", "_structure", "offset")

    def __init__(self, buf: bytes, structure: str) -> None:
        self._buf = buf
        self._structure = structure
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self._buf) - self.offset

    def fail(self, detail: str) -> EventDataMalformed:
        return EventDataMalformed(self._structure, self.offset, detail)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise self.fail(f"{what}: needs {n} bytes, {self.remaining} left")
        out = self._buf[self.offset : self.offset + n]
        self.offset += n
        return out

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "little")

    def u8(self, what: str) -> int:
        return self.uint(1, what)

    def u16(self, what: str) -> int:
        return self.uint(2, what)

    def u32(self, what: str) -> int:
        return self.uint(4, what)

    def u64(self, what: str) -> int:
        return self.uint(8, what)

    def guid(self, what: str) -> uuid.UUID:
        # EFI_GUID is mixed-endian: Data1-3 little endian, Data4 as bytes (UEFI 2.10, App. A).
        return uuid.UUID(bytes_le=self.take(16, what))

    def rest(self) -> bytes:
        return self.take(self.remaining, "remainder")

    def end(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} trailing bytes")


_Renderer = Callable[[LeReader], str]


@dataclass(frozen=True, slots=True)
class DevicePathNode:
    """One EFI_DEVICE_PATH_PROTOCOL node; `data` excludes the 4-byte header."""

    type: int
    subtype: int
    data: bytes


def parse_device_path(device_path: bytes) -> tuple[DevicePathNode, ...]:
    """The nodes up to End-of-entire-path (or the end of the bytes, if it is missing).

    End-of-instance nodes (0x7F/0x01) are kept, so a multi-instance path stays readable.
    """
    reader = LeReader(device_path, "EFI_DEVICE_PATH")
    nodes: list[DevicePathNode] = []
    while reader.remaining:
        node_type = reader.u8("Type")
        subtype = reader.u8("SubType")
        length = reader.u16("Length")
        if length < _NODE_HEADER:
            raise reader.fail(f"node length {length} is shorter than its 4-byte header")
        data = reader.take(length - _NODE_HEADER, f"node {node_type:#x}/{subtype:#x} data")
        if node_type == END and subtype == END_ENTIRE:
            break
        nodes.append(DevicePathNode(node_type, subtype, data))
    return tuple(nodes)


def file_path_of(nodes: tuple[DevicePathNode, ...]) -> str | None:
    """The media file path (10.3.5.4, UTF-16LE, NUL-terminated), nodes joined with '\\'."""
    parts = [
        _utf16z(node.data)
        for node in nodes
        if node.type == MEDIA and node.subtype == MEDIA_FILE_PATH
    ]
    parts = [part for part in parts if part]
    if not parts:
        return None
    path = parts[0]
    for part in parts[1:]:
        path = path.rstrip("\\") + "\\" + part.lstrip("\\")
    return path


def device_path_text(device_path: bytes) -> str:
    """A short rendering for tables, e.g. `PciRoot(0x0)/Pci(0x1d,0x0)/HD(1,GPT,…)/File(\\EFI\\…)`.

    Never raises: bytes that do not walk as a device path come back as `hex:<bytes>`.
    """
    try:
        nodes = parse_device_path(device_path)
    except EventDataMalformed:
        return f"hex:{device_path.hex()}"
    return "/".join(_node_text(node) for node in nodes) or "(empty)"


def _node_text(node: DevicePathNode) -> str:
    renderer = _RENDERERS.get((node.type, node.subtype))
    if renderer is not None:
        try:
            return renderer(LeReader(node.data, "device path node"))
        except EventDataMalformed:
            pass  # a node too short for its subtype is shown by number, like an unknown one
    return f"Node({node.type:#x},{node.subtype:#x})"


def _utf16z(data: bytes) -> str:
    """UTF-16LE up to the first NUL; undecodable units are replaced, never raised."""
    text = data.decode("utf-16-le", errors="replace")
    return text.split("\x00", 1)[0]


def _pci(reader: LeReader) -> str:
    function = reader.u8("Function")
    return f"Pci({reader.u8('Device'):#x},{function:#x})"


def _acpi(reader: LeReader) -> str:
    hid, uid = reader.u32("HID"), reader.u32("UID")
    if hid == _EISA_PNP_PCI_ROOT:
        return f"PciRoot({uid:#x})"
    if hid == _EISA_PNP_PCIE_ROOT:
        return f"PcieRoot({uid:#x})"
    return f"Acpi({hid:#x},{uid:#x})"


def _hard_drive(reader: LeReader) -> str:
    number = reader.u32("PartitionNumber")
    reader.take(16, "PartitionStart, PartitionSize")
    signature = reader.take(16, "PartitionSignature")
    reader.u8("PartitionFormat")
    signature_type = reader.u8("SignatureType")
    if signature_type == 2:  # 10.3.5.1: GUID signature (GPT)
        return f"HD({number},GPT,{uuid.UUID(bytes_le=signature)})"
    if signature_type == 1:  # MBR disk signature, first 4 bytes
        return f"HD({number},MBR,{int.from_bytes(signature[:4], 'little'):#010x})"
    return f"HD({number})"


def _file(reader: LeReader) -> str:
    return f"File({_utf16z(reader.rest())})"


def _offset(reader: LeReader) -> str:
    reader.u32("Reserved")
    start, end = reader.u64("StartingOffset"), reader.u64("EndingOffset")
    return f"Offset({start:#x},{end:#x})"


def _sata(reader: LeReader) -> str:
    port, multiplier, lun = reader.u16("HBAPort"), reader.u16("PortMultiplier"), reader.u16("LUN")
    return f"Sata({port:#x},{multiplier:#x},{lun:#x})"


def _nvme(reader: LeReader) -> str:
    return f"NVMe({reader.u32('NamespaceId'):#x},{reader.take(8, 'EUI-64').hex('-')})"


def _scsi(reader: LeReader) -> str:
    target = reader.u16("TargetId")
    return f"Scsi({target:#x},{reader.u16('LUN'):#x})"


def _mac(reader: LeReader) -> str:
    address = reader.take(32, "MacAddress")
    length = 6 if reader.u8("IfType") in (0, 1) else 32  # Ethernet: 6 (as edk2 renders it)
    return f"MAC({address[:length].hex()})"


def _bbs(reader: LeReader) -> str:
    reader.take(4, "DeviceType, StatusFlag")
    return f"BBS({reader.rest().decode('ascii', errors='replace').split(chr(0), 1)[0]})"


def _usb(reader: LeReader) -> str:
    port = reader.u8("ParentPortNumber")
    return f"USB({port:#x},{reader.u8('InterfaceNumber'):#x})"


def _vendor(kind: str) -> _Renderer:
    return lambda reader: f"{kind}({reader.guid('VendorGuid')})"


def _firmware_guid(kind: str) -> _Renderer:
    return lambda reader: f"{kind}({reader.guid('Name')})"


def _end_instance(_reader: LeReader) -> str:
    return ","


_RENDERERS: dict[tuple[int, int], _Renderer] = {
    (HARDWARE, 0x01): _pci,
    (HARDWARE, 0x04): _vendor("VenHw"),
    (ACPI, 0x01): _acpi,
    (MESSAGING, 0x02): _scsi,
    (MESSAGING, 0x05): _usb,
    (MESSAGING, 0x0B): _mac,
    (MESSAGING, 0x0C): lambda _reader: "IPv4",
    (MESSAGING, 0x0D): lambda _reader: "IPv6",
    (MESSAGING, 0x0A): _vendor("VenMsg"),
    (MESSAGING, 0x12): _sata,
    (MESSAGING, 0x17): _nvme,
    (MEDIA, 0x01): _hard_drive,
    (MEDIA, 0x03): _vendor("VenMedia"),
    (MEDIA, MEDIA_FILE_PATH): _file,
    (MEDIA, 0x06): _firmware_guid("FvFile"),  # PI 1.7 vol. 2, 8.3: firmware file
    (MEDIA, 0x07): _firmware_guid("Fv"),  # PI firmware volume
    (MEDIA, 0x08): _offset,  # 10.3.5.8: relative offset range
    (BBS, 0x01): _bbs,
    (END, END_INSTANCE): _end_instance,
}

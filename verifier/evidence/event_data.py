"""Event data of TCG PC Client PFP 1.05/1.06 measured-boot events: pure parsers, and the rule
for which event types define their digest as a hash of their data.

Every parser takes the bytes of one event's data and either returns a frozen value or
raises `EventDataMalformed` naming the structure and the byte offset; no IndexError,
struct.error, UnicodeDecodeError or ValueError escapes.  Integers are little endian and
EFI_GUIDs mixed-endian (UEFI 2.10, Appendix A).  The structures some of these carry have
their own modules: signature databases (EFI_SIGNATURE_LIST, UEFI 2.10 32.4.1, inside
UEFI_VARIABLE_DATA) in `uefi_signatures`, device paths (UEFI 2.10, 10.2-10.3) in
`uefi_device_path`.

Event data is evidence only where the event's digest covers it.  `data_digest_preimages`
(and `data_digest_candidates`, which names each variant) is the one place that says which
bytes a digest may cover; claims must read the preimage that matched, not the raw data,
because some accepted variants leave bytes of the data unmeasured (see each label).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass

from verifier.evidence.errors import EventDataMalformed
from verifier.evidence.event_types import EventType
from verifier.evidence.uefi_device_path import LeReader, file_path_of, parse_device_path

# --- variable vendor GUIDs (UEFI 2.10 3.3 and 32.4.1, shim lib/guid.c) --------------

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
SHIM_LOCK_GUID = uuid.UUID("605dab50-e046-4300-abb6-3dd810dd8b23")


# --- UEFI_VARIABLE_DATA (PFP 1.05, 10.2.6) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class UefiVariable:
    """UEFI_VARIABLE_DATA: the variable's vendor GUID, name (trailing NULs dropped) and data."""

    guid: uuid.UUID
    name: str
    data: bytes


def parse_uefi_variable(data: bytes, *, allow_trailing: bool = False) -> UefiVariable:
    """UEFI_VARIABLE_DATA of EV_EFI_VARIABLE_* events.  Bytes past the declared lengths are
    malformed unless `allow_trailing`, which is for the old-shim authority events that
    `data_digest_candidates` labels `shim-trailing-bytes` (their padding is meaningless)."""
    reader = LeReader(data, "UEFI_VARIABLE_DATA")
    variable = _read_uefi_variable(reader)
    if not allow_trailing:
        reader.end()
    return variable


def _read_uefi_variable(reader: LeReader) -> UefiVariable:
    guid = reader.guid("VariableName")
    name_length = reader.u64("UnicodeNameLength")
    data_length = reader.u64("VariableDataLength")
    name_offset = reader.offset
    raw_name = reader.take(2 * name_length, "UnicodeName")
    value = reader.take(data_length, "VariableData")
    try:
        name = raw_name.decode("utf-16-le")
    except UnicodeDecodeError as e:
        raise EventDataMalformed(
            "UEFI_VARIABLE_DATA", name_offset + e.start, "UnicodeName is not UTF-16"
        ) from None
    return UefiVariable(guid, name.rstrip("\x00"), value)


def _declared_variable_size(data: bytes) -> int:
    """Bytes the UEFI_VARIABLE_DATA at the start of `data` declares it has."""
    reader = LeReader(data, "UEFI_VARIABLE_DATA")
    _read_uefi_variable(reader)
    return reader.offset


# --- UEFI_IMAGE_LOAD_EVENT (PFP 1.05, 10.2.3) --------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT; `file_path` is the device path's media file path, if any."""

    location: int
    length: int
    link_time_address: int
    device_path: bytes
    file_path: str | None


def uintn_size_from_spec_id(spec_id_uintn_size: int) -> int:
    """Bytes in a UINTN for the Spec ID event's uintnSize field (PFP 1.05, 10.4.5.1)."""
    sizes = {1: 4, 2: 8}
    if spec_id_uintn_size not in sizes:
        raise EventDataMalformed(
            "TCG_EfiSpecIDEvent", 0, f"uintnSize {spec_id_uintn_size} is neither 1 nor 2"
        )
    return sizes[spec_id_uintn_size]


def parse_image_load(data: bytes, uintn_size: int | None = 8) -> ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT of EV_EFI_BOOT_SERVICES_APPLICATION/DRIVER and
    EV_EFI_RUNTIME_SERVICES_DRIVER.  With `uintn_size=None` (a legacy log without a Spec
    ID event), UINTN is whichever of 8 and 4 bytes makes the lengths add up exactly."""
    if uintn_size is None:
        for size in (8, 4):
            if _image_load_fits(data, size):
                return parse_image_load(data, size)
        raise EventDataMalformed(
            "UEFI_IMAGE_LOAD_EVENT", 0, "lengths add up with neither a 8- nor a 4-byte UINTN"
        )
    if uintn_size not in (4, 8):
        raise ValueError(f"uintn_size must be 4 or 8, not {uintn_size}")
    reader = LeReader(data, "UEFI_IMAGE_LOAD_EVENT")
    location = reader.u64("ImageLocationInMemory")
    length = reader.uint(uintn_size, "ImageLengthInMemory")
    link_time_address = reader.uint(uintn_size, "ImageLinkTimeAddress")
    device_path = reader.take(reader.uint(uintn_size, "LengthOfDevicePath"), "DevicePath")
    reader.end()
    file_path = file_path_of(parse_device_path(device_path))
    return ImageLoad(location, length, link_time_address, device_path, file_path)


def _image_load_fits(data: bytes, size: int) -> bool:
    header = 8 + 3 * size
    if len(data) < header:
        return False
    return header + int.from_bytes(data[header - size : header], "little") == len(data)


# --- EFI_LOAD_OPTION (UEFI 2.10, 3.1.3) and BootOrder ------------------------------------


@dataclass(frozen=True, slots=True)
class LoadOption:
    """EFI_LOAD_OPTION: the data of a Boot#### variable (EV_EFI_VARIABLE_BOOT, PCR 1)."""

    attributes: int
    description: str
    file_path_list: bytes
    optional_data: bytes


def parse_efi_load_option(data: bytes) -> LoadOption:
    reader = LeReader(data, "EFI_LOAD_OPTION")
    attributes = reader.u32("Attributes")
    file_path_list_length = reader.u16("FilePathListLength")
    units = []
    while (unit := reader.take(2, "Description (no NUL terminator)")) != b"\x00\x00":
        units.append(unit)
    description = b"".join(units).decode("utf-16-le", errors="replace")
    file_path_list = reader.take(file_path_list_length, "FilePathList")
    return LoadOption(attributes, description, file_path_list, reader.rest())


def parse_boot_order(data: bytes) -> tuple[int, ...]:
    """The BootOrder variable: an array of UINT16 Boot#### numbers (UEFI 2.10, 3.3)."""
    if len(data) % 2:
        raise EventDataMalformed("BootOrder", len(data) - 1, "odd length for an array of UINT16")
    return tuple(int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2))


# --- firmware blobs (PFP 1.05, 10.2.5) -------------------------


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2): where the measured code was; `description` from BLOB2."""

    base: int
    length: int
    description: str | None


_BLOB_EVENTS = frozenset(
    {EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, EventType.EV_POST_CODE, EventType.EV_S_CRTM_CONTENTS}
)


def parse_firmware_blob(data: bytes, event_type: int) -> FirmwareBlob:
    """EV_EFI_PLATFORM_FIRMWARE_BLOB (also EV_POST_CODE and EV_S_CRTM_CONTENTS, which may
    carry the same structure, PFP 1.05 Table 9) or EV_EFI_PLATFORM_FIRMWARE_BLOB2."""
    if event_type == EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2:
        reader = LeReader(data, "UEFI_PLATFORM_FIRMWARE_BLOB2")
        description: str | None = _ascii(
            reader.take(reader.u8("BlobDescriptionSize"), "BlobDescription")
        )
    elif event_type in _BLOB_EVENTS:
        reader, description = LeReader(data, "UEFI_PLATFORM_FIRMWARE_BLOB"), None
    else:
        raise EventDataMalformed(
            "UEFI_PLATFORM_FIRMWARE_BLOB", 0, f"event type {event_type:#x} carries no blob"
        )
    blob = FirmwareBlob(reader.u64("BlobBase"), reader.u64("BlobLength"), description)
    reader.end()
    return blob


# --- UEFI_GPT_DATA (PFP 1.05, 10.2.7) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class GptPartition:
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    name: str
    attributes: int


@dataclass(frozen=True, slots=True)
class GptTable:
    disk_guid: uuid.UUID
    partitions: tuple[GptPartition, ...]


_GPT_HEADER_MIN = 92  # UEFI 2.10, 5.3.2: EFI_PARTITION_TABLE_HEADER up to the array CRC
_GPT_ENTRY_MIN = 128  # 5.3.3: EFI_PARTITION_ENTRY


def parse_gpt(data: bytes) -> GptTable:
    """UEFI_GPT_DATA of EV_EFI_GPT_EVENT: the header (its own HeaderSize bytes), UINT64
    NumberOfPartitions, then that many entries of the header's SizeOfPartitionEntry."""
    reader = LeReader(data, "UEFI_GPT_DATA")
    if reader.take(8, "Signature") != b"EFI PART":
        raise EventDataMalformed("UEFI_GPT_DATA", 0, "header signature is not 'EFI PART'")
    reader.u32("Revision")
    header_size = reader.u32("HeaderSize")
    if header_size < _GPT_HEADER_MIN:
        raise EventDataMalformed(
            "UEFI_GPT_DATA", 12, f"HeaderSize {header_size} < {_GPT_HEADER_MIN}"
        )
    reader.take(40, "HeaderCRC32 .. LastUsableLBA")
    disk_guid = reader.guid("DiskGUID")
    reader.take(12, "PartitionEntryLBA, NumberOfPartitionEntries")
    entry_size = reader.u32("SizeOfPartitionEntry")
    if entry_size < _GPT_ENTRY_MIN:
        raise EventDataMalformed(
            "UEFI_GPT_DATA", 84, f"SizeOfPartitionEntry {entry_size} < {_GPT_ENTRY_MIN}"
        )
    reader.take(header_size - _GPT_HEADER_MIN + 4, "PartitionEntryArrayCRC32 and header padding")
    count = reader.u64("NumberOfPartitions")
    if count * entry_size != reader.remaining:
        raise reader.fail(
            f"{count} partitions of {entry_size} bytes != {reader.remaining} bytes left"
        )
    return GptTable(disk_guid, tuple(_gpt_partition(reader, entry_size) for _ in range(count)))


def _gpt_partition(reader: LeReader, entry_size: int) -> GptPartition:
    type_guid, unique_guid = reader.guid("PartitionTypeGUID"), reader.guid("UniquePartitionGUID")
    first_lba, last_lba = reader.u64("StartingLBA"), reader.u64("EndingLBA")
    attributes = reader.u64("Attributes")
    name = reader.take(72, "PartitionName").decode("utf-16-le", errors="replace")
    reader.take(entry_size - _GPT_ENTRY_MIN, "partition entry padding")
    name = name.split("\x00", 1)[0]
    return GptPartition(type_guid, unique_guid, first_lba, last_lba, name, attributes)


# --- strings ------------------------------------------------------------------------


def _ascii(data: bytes) -> str:
    return data.decode("ascii", errors="replace").rstrip("\x00")


def decode_text(data: bytes) -> str:
    """An event string for display: UTF-16LE when most code units look like UCS-2 text
    (EV_S_CRTM_VERSION, systemd's command lines), else UTF-8 (EV_EFI_ACTION, EV_IPL,
    EV_POST_CODE); trailing NULs stripped, undecodable bytes replaced.  Never raises."""
    even = data + b"\x00" if len(data) % 2 else data
    units = [even[i : i + 2] for i in range(0, len(even), 2)]
    while units and units[-1] == b"\x00\x00":
        units.pop()
    ucs2_like = sum(1 for unit in units if unit[1] == 0 and unit[0] != 0)
    if units and 2 * ucs2_like >= len(units):
        text = b"".join(units).decode("utf-16-le", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\x00")


# --- which bytes an event digest covers ------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestPreimage:
    """Bytes whose hash the event's digest may be, and why (`label`)."""

    label: str
    preimage: bytes


# The digest is the hash of the event data, as the data stands (PFP 1.05, Table 9 and 10.4):
_DATA_IS_PREIMAGE = frozenset(
    {
        EventType.EV_SEPARATOR,  # Table 9: UINT32 0; see _separator for errors
        EventType.EV_ACTION,  # Table 9 and 10.4.3: the action string
        EventType.EV_EFI_ACTION,  # 10.4.3 Table 17: the ASCII string, no NUL
        EventType.EV_S_CRTM_VERSION,  # Table 9: the version string (UCS-2 in practice)
        EventType.EV_NONHOST_INFO,  # Table 9: the information structure
        EventType.EV_OMIT_BOOT_DEVICE_EVENTS,  # Table 9: the fixed string
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,  # 10.2.6 / 3.3.4.2 and 3.3.4.8: UEFI_VARIABLE_DATA
        EventType.EV_EFI_GPT_EVENT,  # 10.2.7: UEFI_GPT_DATA
        EventType.EV_EFI_SPDM_DEVICE_POLICY,  # PFP 1.06: UEFI_VARIABLE_DATA (edk2 Tcg2Dxe agrees)
    }
)
_UEFI_VARIABLE_EVENTS = frozenset({EventType.EV_EFI_VARIABLE_BOOT, EventType.EV_EFI_VARIABLE_BOOT2})
# Linux's EFI stub logs EV_EVENT_TAG (PCR 9) whose digest is of the initrd or the load
# options, which are not in the log (drivers/firmware/efi/libstub, *_EVENT_TAG_ID).
_LINUX_STUB_TAG_IDS = frozenset({0x8F3B22EC, 0x8F3B22ED})
_IPL_DATA_PCRS = frozenset({8, 12})  # grub commands and command lines; systemd command line
_GRUB_PREFIX = re.compile(rb"\A[A-Za-z_]+:? ")  # "grub_cmd: ", "kernel_cmdline: ", "grub_cmd "
#: PFP 1.05, 10.4.4: UINT32 0 marks a normal transition (0xFFFFFFFF in TPM 1.2-era
#: firmware); UINT32 1 is what an error separator measures.
SEPARATOR_NORMAL = frozenset({bytes(4), b"\xff" * 4})
SEPARATOR_ERROR = (1).to_bytes(4, "little")


def data_digest_preimages(
    event_type: int, data: bytes, *, pcr_index: int | None = None
) -> tuple[bytes, ...] | None:
    """The byte strings whose hash the event's digest may legitimately be, spec first;
    None when the PFP does not define the digest as a hash of the data.  See
    `data_digest_candidates` for the rule and its variants."""
    candidates = data_digest_candidates(event_type, data, pcr_index=pcr_index)
    return None if candidates is None else tuple(c.preimage for c in candidates)


def data_digest_candidates(
    event_type: int, data: bytes, *, pcr_index: int | None = None
) -> tuple[DigestPreimage, ...] | None:
    """The one place for the rule: which bytes an event's digest is a hash of.

    None (nothing in the log to check the digest against) for, among others:
    EV_NO_ACTION (never extended, PFP 1.05 10.4.1); EV_POST_CODE, EV_S_CRTM_CONTENTS,
    EV_EFI_PLATFORM_FIRMWARE_BLOB(2), EV_CPU_MICROCODE, EV_NONHOST_CODE/CONFIG (the digest
    is of code or configuration the data only describes, Table 9); EV_EFI_BOOT_SERVICES_*
    and EV_EFI_RUNTIME_SERVICES_DRIVER (the PE Authenticode hash, 10.2.3);
    EV_EFI_HANDOFF_TABLES(2) (the tables themselves); EV_PLATFORM_CONFIG_FLAGS and
    EV_TABLE_OF_DEVICES (edk2 logs "ACPI DATA" or EFI_HANDOFF_TABLE_POINTERS and hashes
    the tables or CPU locations; real Dell, OVMF and Intel logs do the same);
    EV_COMPACT_HASH (Windows hashes its 4-byte data, Dell a configuration it only names);
    EV_EFI_HCRTM_EVENT, EV_EFI_GPT_EVENT2, EV_EFI_SPDM_* but DEVICE_POLICY; unknown and
    vendor types.  Pass `pcr_index`: EV_IPL outside PCRs 8 and 12 (grub's files in PCR 9,
    shim's MokList in PCR 14, systemd-stub's sections in PCR 11) is None as well.

    Otherwise the spec's preimage comes first (label `event-data`), then the variants real
    firmware and loaders are known to measure, each labelled and explained below.  A digest
    that matches none means the data is not what was measured: claims must not use it.
    """
    kind = int(event_type)
    if kind in _DATA_IS_PREIMAGE:
        return (
            _separator(data)
            if kind == EventType.EV_SEPARATOR
            else (DigestPreimage("event-data", data),)
        )
    if kind in _UEFI_VARIABLE_EVENTS:
        return _boot_variable(data)
    if kind == EventType.EV_EFI_VARIABLE_AUTHORITY:
        return _authority(data)
    if kind == EventType.EV_EVENT_TAG:
        return None if _is_linux_stub_tag(data) else (DigestPreimage("event-data", data),)
    if kind == EventType.EV_IPL and (pcr_index is None or pcr_index in _IPL_DATA_PCRS):
        return _ipl(data)
    return None


def _separator(data: bytes) -> tuple[DigestPreimage, ...]:
    # Normal separators are UINT32 0 (or 0xFFFFFFFF, the TCG 1.2-era value) and hash their
    # data.  On an error the firmware measures UINT32 1 and MAY log implementation-defined
    # data instead (TCG PC Client BIOS 1.21, 3.3.2.2; PFP "Error Conditions").  The error
    # preimage is offered only when the data is not a normal value, so an error separator
    # cannot pass for a normal one; claims read "error" from the matched preimage.
    out = [DigestPreimage("event-data", data)]
    if data not in SEPARATOR_NORMAL:
        out.append(DigestPreimage("error-separator", SEPARATOR_ERROR))
    return _unique(out)


def _boot_variable(data: bytes) -> tuple[DigestPreimage, ...]:
    # PFP 1.05, 10.2.6: the digest is of the whole UEFI_VARIABLE_DATA.  edk2 Tcg2Dxe
    # (MeasureVariable) and the firmware built on it hash VariableData only for every event
    # type but EV_EFI_VARIABLE_DRIVER_CONFIG; 84 of 112 Boot events in our real logs do.
    # Then the variable's name and GUID are not measured: claims must not trust them.
    out = [DigestPreimage("event-data", data)]
    with contextlib.suppress(EventDataMalformed):  # not a UEFI_VARIABLE_DATA: spec's only
        out.append(DigestPreimage("variable-data-only", parse_uefi_variable(data).data))
    return _unique(out)


def _authority(data: bytes) -> tuple[DigestPreimage, ...]:
    # Firmware and shim both hash the whole UEFI_VARIABLE_DATA (PFP 1.05, 3.3.4.8).  Shim
    # before rhboot/shim 8a27a48 sized its "Shim" vendor-certificate event by the C struct
    # (whose one-element UnicodeName/VariableData arrays add padding), logging a few bytes
    # past the declared lengths and hashing all but the last (go-attestation issue #157;
    # 7 events, each 6 bytes over, in 4 of our real logs).  Accepted only for a well-formed
    # UEFI_VARIABLE_DATA followed by 1-8 bytes (less than one 8-byte alignment unit).
    out = [DigestPreimage("event-data", data)]
    try:
        trailing = len(data) - _declared_variable_size(data)
    except EventDataMalformed:
        return tuple(out)
    if 1 <= trailing <= 8:
        out.append(DigestPreimage("shim-trailing-bytes", data[:-1]))
    return tuple(out)


def _is_linux_stub_tag(data: bytes) -> bool:
    return len(data) >= 4 and int.from_bytes(data[:4], "little") in _LINUX_STUB_TAG_IDS


def _ipl(data: bytes) -> tuple[DigestPreimage, ...]:
    # EV_IPL is deprecated for firmware (PFP 1.05 Table 9); OS loaders define its use.
    # grub (PCR 8) logs "grub_cmd: <command>\0" or "kernel_cmdline: <line>\0" and measures
    # only the text after the prefix, without the NUL (Fedora's older grub: with it), so the
    # prefix is never measured.  systemd measures its UTF-16 command line with the NUL; old
    # systemd-stub logged that NUL as one byte (goeventlog arch-linux-workstation, event 24).
    out = [DigestPreimage("event-data", data)]
    if data.endswith(b"\x00"):
        out.append(DigestPreimage("without-trailing-nul", data.rstrip(b"\x00")))
        if len(data) % 2:
            out.append(DigestPreimage("systemd-utf16-nul", data + b"\x00"))
    if prefix := _GRUB_PREFIX.match(data):
        text = data[prefix.end() :]
        out.append(DigestPreimage("grub-string", text.rstrip(b"\x00")))
        out.append(DigestPreimage("grub-string-with-nul", text))
    return _unique(out)


def _unique(candidates: list[DigestPreimage]) -> tuple[DigestPreimage, ...]:
    seen: set[bytes] = set()
    out = []
    for candidate in candidates:
        if candidate.preimage not in seen:
            seen.add(candidate.preimage)
            out.append(candidate)
    return tuple(out)

"""Event-data parsers and the digest rule: hand-built vectors, fuzzing, real firmware logs.

The parsers' contract (event_data docstring): any bytes either parse or raise
EventDataMalformed, never IndexError, struct.error, UnicodeDecodeError or ValueError.
Vectors are built here by small encoders that follow the specs independently of the
parsers; the certificate (`der`, conftest.py) is generated with `cryptography` for each
run.  Signature databases are tested in test_uefi_signatures.py; the real-log tests here
run their parsers too.  Real logs are read from /work/shared/firmware-logs (see its
SOURCES.md) by a minimal reader in this module and never copied into the repo; those
tests skip when the folder is absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.evidence.errors import EventDataMalformed
from verifier.evidence.event_data import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK_GUID,
    DigestPreimage,
    FirmwareBlob,
    UefiVariable,
    data_digest_candidates,
    data_digest_preimages,
    decode_text,
    parse_boot_order,
    parse_efi_load_option,
    parse_firmware_blob,
    parse_gpt,
    parse_image_load,
    parse_uefi_variable,
    uintn_size_from_spec_id,
)
from verifier.evidence.event_types import EventType
from verifier.evidence.uefi_device_path import device_path_text, parse_device_path
from verifier.evidence.uefi_signatures import parse_authority, parse_signature_lists

LOGS_DIR = Path("/work/shared/firmware-logs")
OWNER = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b")  # Microsoft's owner GUID

# --- encoders (UEFI 2.10 / PFP 1.05 layouts, written from the specs) ------------------


def u16(v: int) -> bytes:
    return v.to_bytes(2, "little")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


def variable(guid: uuid.UUID, name: str, data: bytes) -> bytes:
    """UEFI_VARIABLE_DATA (PFP 1.05, 10.2.6)."""
    unicode_name = utf16(name)  # UnicodeNameLength counts CHAR16s, not characters
    return guid.bytes_le + u64(len(unicode_name) // 2) + u64(len(data)) + unicode_name + data


def node(kind: int, subtype: int, data: bytes) -> bytes:
    return bytes([kind, subtype]) + u16(4 + len(data)) + data


END_NODE = node(0x7F, 0xFF, b"")
DISK = uuid.UUID("23cd39d1-42f9-4f6b-8991-3e9a03260b08")


def file_node(path: str) -> bytes:
    return node(4, 4, utf16(path + "\x00"))


def hd_node(number: int, disk: uuid.UUID) -> bytes:
    return node(4, 1, u32(number) + u64(2048) + u64(1 << 20) + disk.bytes_le + b"\x02\x02")


SHIM_PATH = hd_node(1, DISK) + file_node("\\EFI\\debian") + file_node("shimx64.efi") + END_NODE


def image_load(device_path: bytes, uintn: int = 8, location: int = 0x7E000) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT (PFP 1.05, 10.2.3)."""
    fields = (0x12000, 0, len(device_path))
    return u64(location) + b"".join(f.to_bytes(uintn, "little") for f in fields) + device_path


def load_option(description: str, file_path_list: bytes, optional: bytes = b"") -> bytes:
    """EFI_LOAD_OPTION (UEFI 2.10, 3.1.3)."""
    header = u32(1) + u16(len(file_path_list))
    return header + utf16(description + "\x00") + file_path_list + optional


def gpt(
    disk: uuid.UUID,
    partitions: list[tuple[uuid.UUID, str]],
    header_size: int = 92,
    entry_size: int = 128,
) -> bytes:
    """UEFI_GPT_DATA (PFP 1.05, 10.2.7): header, UINT64 count, entries."""
    header = b"EFI PART" + u32(0x10000) + u32(header_size) + bytes(24) + u64(34) + u64(1 << 20)
    header += disk.bytes_le + u64(2) + u32(128) + u32(entry_size) + u32(0)
    header += bytes(header_size - len(header))
    entries = b""
    for i, (unique, name) in enumerate(partitions):
        entry = (
            EFI_SYSTEM_PARTITION.bytes_le
            + unique.bytes_le
            + u64(2048 * (i + 1))
            + u64(2048 * (i + 2) - 1)
        )
        entry += u64(0) + utf16(name).ljust(72, b"\x00")
        entries += entry + bytes(entry_size - len(entry))
    return header + u64(len(partitions)) + entries


EFI_SYSTEM_PARTITION = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")


def each_truncation(data: bytes) -> Iterator[bytes]:
    for n in range(len(data)):
        yield data[:n]


def only_malformed(parse: Callable[[bytes], object], data: bytes) -> None:
    """`parse(data)` returns or raises EventDataMalformed; anything else fails the test."""
    with contextlib.suppress(EventDataMalformed):
        parse(data)


# --- UEFI_VARIABLE_DATA ------------------------------------------------------------

names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)


@given(guid=st.uuids(), name=names, data=st.binary(max_size=64))
def test_uefi_variable_round_trips(guid: uuid.UUID, name: str, data: bytes) -> None:
    assert parse_uefi_variable(variable(guid, name, data)) == UefiVariable(guid, name, data)


def test_uefi_variable_truncated_anywhere_is_malformed() -> None:
    encoded = variable(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    for prefix in each_truncation(encoded):
        with pytest.raises(EventDataMalformed):
            parse_uefi_variable(prefix)


def test_uefi_variable_trailing_bytes_are_malformed_unless_allowed() -> None:
    encoded = variable(SHIM_LOCK_GUID, "Shim", b"cert") + bytes(6)
    with pytest.raises(EventDataMalformed, match="6 trailing bytes"):
        parse_uefi_variable(encoded)
    assert parse_uefi_variable(encoded, allow_trailing=True).data == b"cert"


def test_uefi_variable_name_must_be_utf16() -> None:
    encoded = EFI_GLOBAL_VARIABLE.bytes_le + u64(1) + u64(0) + b"\x00\xd8"  # lone surrogate
    with pytest.raises(EventDataMalformed) as raised:
        parse_uefi_variable(encoded)
    assert raised.value.offset == 32


def test_uefi_variable_name_loses_trailing_nuls() -> None:
    encoded = variable(EFI_IMAGE_SECURITY_DATABASE, "db\x00", b"")
    assert parse_uefi_variable(encoded).name == "db"


def test_uefi_variable_huge_lengths_are_malformed_not_memory_errors() -> None:
    encoded = EFI_GLOBAL_VARIABLE.bytes_le + u64(2**63) + u64(2**64 - 1)
    with pytest.raises(EventDataMalformed):
        parse_uefi_variable(encoded)


# --- UEFI_IMAGE_LOAD_EVENT and device paths ----------------------------------------------


@pytest.mark.parametrize("uintn", [8, 4])
def test_image_load_round_trips(uintn: int) -> None:
    image = parse_image_load(image_load(SHIM_PATH, uintn), uintn)
    assert (image.location, image.length, image.link_time_address) == (0x7E000, 0x12000, 0)
    assert image.device_path == SHIM_PATH
    assert image.file_path == "\\EFI\\debian\\shimx64.efi"


@pytest.mark.parametrize("uintn", [8, 4])
def test_image_load_unknown_uintn_takes_the_size_that_adds_up(uintn: int) -> None:
    assert parse_image_load(image_load(SHIM_PATH, uintn), None).device_path == SHIM_PATH


def test_image_load_whose_lengths_add_up_for_neither_size() -> None:
    with pytest.raises(EventDataMalformed, match="neither"):
        parse_image_load(image_load(SHIM_PATH) + b"\x00", None)


def test_image_load_truncated_anywhere_is_malformed() -> None:
    for prefix in each_truncation(image_load(SHIM_PATH)):
        with pytest.raises(EventDataMalformed):
            parse_image_load(prefix)


def test_image_load_trailing_bytes_are_malformed() -> None:
    # Old shim logs 8-9 bytes after a zero-length device path; they are outside the structure.
    with pytest.raises(EventDataMalformed, match="9 trailing bytes"):
        parse_image_load(bytes(32) + bytes(9))


def test_image_load_without_file_path() -> None:
    firmware_volume = node(4, 7, DISK.bytes_le) + node(4, 6, OWNER.bytes_le) + END_NODE
    image = parse_image_load(image_load(firmware_volume))
    assert image.file_path is None
    assert device_path_text(image.device_path) == f"Fv({DISK})/FvFile({OWNER})"


def test_image_load_rejects_a_uintn_size_that_is_no_uintn() -> None:
    with pytest.raises(ValueError, match="4 or 8"):
        parse_image_load(image_load(SHIM_PATH), 2)


def test_uintn_size_from_spec_id() -> None:
    assert (uintn_size_from_spec_id(1), uintn_size_from_spec_id(2)) == (4, 8)
    with pytest.raises(EventDataMalformed):
        uintn_size_from_spec_id(3)


@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_device_path_node_shorter_than_its_header(length: int) -> None:
    with pytest.raises(EventDataMalformed, match="shorter than its 4-byte header"):
        parse_device_path(b"\x04\x04" + u16(length) + END_NODE)


def test_device_path_node_overrunning_the_path() -> None:
    with pytest.raises(EventDataMalformed):
        parse_device_path(b"\x04\x04" + u16(40) + b"x")


def test_device_path_stops_at_end_of_entire_path() -> None:
    assert len(parse_device_path(file_node("\\a") + END_NODE + b"\xff\xff\xff")) == 1


def test_device_path_text_known_answer() -> None:
    path = (
        node(2, 1, u32(0x0A0341D0) + u32(0))
        + node(1, 1, b"\x00\x1d")
        + node(3, 0x12, u16(0) + u16(0xFFFF) + u16(0))
        + hd_node(1, DISK)
        + file_node("\\EFI\\BOOT\\BOOTX64.EFI")
        + node(0x7F, 0x01, b"")
        + node(9, 9, b"??")
        + END_NODE
    )
    assert device_path_text(path) == (
        f"PciRoot(0x0)/Pci(0x1d,0x0)/Sata(0x0,0xffff,0x0)/HD(1,GPT,{DISK})"
        "/File(\\EFI\\BOOT\\BOOTX64.EFI)/,/Node(0x9,0x9)"
    )


def test_device_path_text_of_a_node_too_short_for_its_subtype() -> None:
    assert device_path_text(node(4, 1, b"\x01")) == "Node(0x4,0x1)"


def test_device_path_text_falls_back_to_hex() -> None:
    assert device_path_text(b"\x04\x04\x02\x00") == "hex:04040200"
    assert device_path_text(b"") == "(empty)"


@given(st.binary(max_size=300))
def test_device_path_text_never_raises(data: bytes) -> None:
    assert isinstance(device_path_text(data), str)


# --- EFI_LOAD_OPTION, BootOrder ------------------------------------------------------


def test_load_option_round_trips() -> None:
    option = parse_efi_load_option(load_option("debian", SHIM_PATH, b"\x01\x02"))
    assert (option.attributes, option.description) == (1, "debian")
    assert (option.file_path_list, option.optional_data) == (SHIM_PATH, b"\x01\x02")


def test_load_option_truncated_anywhere_is_malformed() -> None:
    for prefix in each_truncation(load_option("debian", SHIM_PATH)):
        with pytest.raises(EventDataMalformed):
            parse_efi_load_option(prefix)


def test_boot_order() -> None:
    assert parse_boot_order(b"\x02\x00\x01\x00\x0a\x00") == (2, 1, 10)
    assert parse_boot_order(b"") == ()
    with pytest.raises(EventDataMalformed):
        parse_boot_order(b"\x01\x00\x02")


# --- firmware blobs and GPT ------------------------------------------------------------


def test_firmware_blobs() -> None:
    blob = u64(0xFF000000) + u64(0x1000)
    assert parse_firmware_blob(blob, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB) == FirmwareBlob(
        0xFF000000, 0x1000, None
    )
    blob2 = b"\x0aPEI Volume" + blob
    assert parse_firmware_blob(blob2, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2) == FirmwareBlob(
        0xFF000000, 0x1000, "PEI Volume"
    )
    for prefix in each_truncation(blob2):
        with pytest.raises(EventDataMalformed):
            parse_firmware_blob(prefix, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2)
    with pytest.raises(EventDataMalformed, match="trailing"):
        parse_firmware_blob(blob + b"\x00", EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB)
    with pytest.raises(EventDataMalformed, match="carries no blob"):
        parse_firmware_blob(blob, EventType.EV_IPL)


@pytest.mark.parametrize(("header_size", "entry_size"), [(92, 128), (96, 256)])
def test_gpt_round_trips(header_size: int, entry_size: int) -> None:
    parts = [(uuid.UUID(int=1), "EFI System Partition"), (uuid.UUID(int=2), "root")]
    table = parse_gpt(gpt(DISK, parts, header_size, entry_size))
    assert table.disk_guid == DISK
    assert [(p.unique_guid, p.name) for p in table.partitions] == parts
    assert {p.type_guid for p in table.partitions} == {EFI_SYSTEM_PARTITION}
    assert (table.partitions[1].first_lba, table.partitions[1].last_lba) == (4096, 6143)


def test_gpt_truncated_anywhere_is_malformed() -> None:
    for prefix in each_truncation(gpt(DISK, [(uuid.UUID(int=1), "esp")])):
        with pytest.raises(EventDataMalformed):
            parse_gpt(prefix)


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (lambda b: b"EFI PARX" + b[8:], "signature"),
        (lambda b: b[:12] + u32(91) + b[16:], "HeaderSize 91"),
        (lambda b: b[:84] + u32(127) + b[88:], "SizeOfPartitionEntry 127"),
        (lambda b: b[:92] + u64(2) + b[100:], "2 partitions of 128 bytes"),
        (lambda b: b[:92] + u64(2**61) + b[100:], "partitions of 128 bytes"),
        (lambda b: b + b"\x00", "bytes left"),
    ],
)
def test_gpt_inconsistent(mutate: Callable[[bytes], bytes], detail: str) -> None:
    with pytest.raises(EventDataMalformed, match=detail):
        parse_gpt(mutate(gpt(DISK, [(uuid.UUID(int=1), "esp")])))


# --- decode_text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (utf16("N1EET86W \x00"), "N1EET86W "),  # EV_S_CRTM_VERSION, UCS-2
        (b"Exit Boot Services Invocation", "Exit Boot Services Invocation"),  # EV_EFI_ACTION
        (b"grub_cmd: set timeout=5\x00", "grub_cmd: set timeout=5"),  # EV_IPL
        (b"ACPI DATA", "ACPI DATA"),
        (utf16("initrd=\\x.img ro") + b"\x00", "initrd=\\x.img ro"),  # systemd, 1-byte NUL
        (b"\x00\x00", ""),
        (b"", ""),
        (b"caf\xc3\xa9 \xff", "café \ufffd"),
        (utf16("Ünïcødé"), "Ünïcødé"),
    ],
)
def test_decode_text(data: bytes, text: str) -> None:
    assert decode_text(data) == text


@given(st.binary(max_size=200))
def test_decode_text_never_raises(data: bytes) -> None:
    assert isinstance(decode_text(data), str)


# --- the digest rule -----------------------------------------------------------------


NOT_THE_DATA = [
    EventType.EV_NO_ACTION,
    EventType.EV_POST_CODE,
    EventType.EV_S_CRTM_CONTENTS,
    EventType.EV_CPU_MICROCODE,
    EventType.EV_NONHOST_CODE,
    EventType.EV_NONHOST_CONFIG,
    EventType.EV_PLATFORM_CONFIG_FLAGS,
    EventType.EV_TABLE_OF_DEVICES,
    EventType.EV_COMPACT_HASH,
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
    EventType.EV_EFI_BOOT_SERVICES_DRIVER,
    EventType.EV_EFI_RUNTIME_SERVICES_DRIVER,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EventType.EV_EFI_HANDOFF_TABLES,
    EventType.EV_EFI_HANDOFF_TABLES2,
    EventType.EV_EFI_HCRTM_EVENT,
    0x0000040E,  # a vendor's own type (ibmtss deb1.log)
]


@pytest.mark.parametrize("event_type", NOT_THE_DATA, ids=lambda t: f"{t:#x}")
def test_digest_is_not_of_the_data(event_type: int) -> None:
    assert data_digest_preimages(event_type, b"anything") is None


@pytest.mark.parametrize(
    "event_type",
    [
        EventType.EV_ACTION,
        EventType.EV_EFI_ACTION,
        EventType.EV_S_CRTM_VERSION,
        EventType.EV_NONHOST_INFO,
        EventType.EV_OMIT_BOOT_DEVICE_EVENTS,
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        EventType.EV_EFI_GPT_EVENT,
        EventType.EV_EVENT_TAG,
    ],
)
def test_digest_is_of_the_data(event_type: int) -> None:
    assert data_digest_preimages(event_type, b"Exit Boot Services Invocation") == (
        b"Exit Boot Services Invocation",
    )


def test_separators() -> None:
    for normal in (bytes(4), b"\xff" * 4):
        assert data_digest_preimages(EventType.EV_SEPARATOR, normal) == (normal,)
    candidates = data_digest_candidates(EventType.EV_SEPARATOR, b"ERR\x07")
    assert candidates == (
        DigestPreimage("event-data", b"ERR\x07"),
        DigestPreimage("error-separator", u32(1)),
    )


def test_attack_error_separator_cannot_pass_for_a_normal_one() -> None:
    # Firmware hit an error and measured UINT32 1; the log claims a normal separator.
    measured = hashlib.sha256(u32(1)).digest()
    preimages = data_digest_preimages(EventType.EV_SEPARATOR, bytes(4))
    assert preimages is not None
    assert all(hashlib.sha256(p).digest() != measured for p in preimages)


@pytest.mark.parametrize(
    "event_type", [EventType.EV_EFI_VARIABLE_BOOT, EventType.EV_EFI_VARIABLE_BOOT2]
)
def test_boot_variables_accept_edk2s_variable_data_only(event_type: int) -> None:
    option = load_option("debian", SHIM_PATH)
    data = variable(EFI_GLOBAL_VARIABLE, "Boot0001", option)
    assert data_digest_candidates(event_type, data) == (
        DigestPreimage("event-data", data),
        DigestPreimage("variable-data-only", option),
    )
    assert data_digest_preimages(event_type, b"not a variable") == (b"not a variable",)


def test_authority_of_old_shim_hashes_all_but_the_last_byte(der: bytes) -> None:
    data = variable(SHIM_LOCK_GUID, "Shim", der) + bytes(6)
    assert data_digest_candidates(EventType.EV_EFI_VARIABLE_AUTHORITY, data) == (
        DigestPreimage("event-data", data),
        DigestPreimage("shim-trailing-bytes", data[:-1]),
    )
    assert parse_uefi_variable(data[:-1], allow_trailing=True).data == der


def test_attack_authority_with_more_than_padding_appended_gets_no_variant(der: bytes) -> None:
    well_formed = variable(SHIM_LOCK_GUID, "Shim", der)
    assert data_digest_preimages(EventType.EV_EFI_VARIABLE_AUTHORITY, well_formed) == (well_formed,)
    padded = well_formed + bytes(9)
    assert data_digest_preimages(EventType.EV_EFI_VARIABLE_AUTHORITY, padded) == (padded,)


def test_grub_strings() -> None:
    data = b"grub_cmd: set timeout=5\x00"
    assert data_digest_candidates(EventType.EV_IPL, data, pcr_index=8) == (
        DigestPreimage("event-data", data),
        DigestPreimage("without-trailing-nul", b"grub_cmd: set timeout=5"),
        DigestPreimage("grub-string", b"set timeout=5"),
        DigestPreimage("grub-string-with-nul", b"set timeout=5\x00"),
    )
    older = b"grub_cmd set pager=1\x00"  # Fedora's grub, hash includes the NUL
    assert b"set pager=1\x00" in (data_digest_preimages(EventType.EV_IPL, older) or ())


def test_systemd_command_line_with_a_one_byte_nul() -> None:
    data = utf16("ro quiet") + b"\x00"
    assert utf16("ro quiet\x00") in (
        data_digest_preimages(EventType.EV_IPL, data, pcr_index=12) or ()
    )


@pytest.mark.parametrize("pcr", [9, 11, 14])
def test_ipl_in_pcrs_whose_digest_is_of_a_file_or_variable(pcr: int) -> None:
    assert (
        data_digest_preimages(
            EventType.EV_IPL, b"(hd0,gpt1)/EFI/ubuntu/grub.cfg\x00", pcr_index=pcr
        )
        is None
    )


def test_linux_stub_tagged_events_are_not_of_their_data() -> None:
    tagged = u32(0x8F3B22EC) + u32(13) + b"Linux initrd\x00"
    assert data_digest_preimages(EventType.EV_EVENT_TAG, tagged) is None


@given(
    event_type=st.integers(0, 2**32 - 1),
    data=st.binary(max_size=200),
    pcr=st.none() | st.integers(0, 23),
)
def test_digest_rule_never_raises(event_type: int, data: bytes, pcr: int | None) -> None:
    candidates = data_digest_candidates(event_type, data, pcr_index=pcr)
    preimages = data_digest_preimages(event_type, data, pcr_index=pcr)
    assert preimages == (None if candidates is None else tuple(c.preimage for c in candidates))
    if candidates is not None:
        assert candidates[0] == DigestPreimage("event-data", data)


# --- fuzzing: every parser raises only EventDataMalformed ---------------------------------

PARSERS: dict[str, Callable[[bytes], object]] = {
    "uefi_variable": parse_uefi_variable,
    "image_load_8": parse_image_load,
    "image_load_4": lambda d: parse_image_load(d, 4),
    "image_load_unknown": lambda d: parse_image_load(d, None),
    "device_path": parse_device_path,
    "load_option": parse_efi_load_option,
    "boot_order": parse_boot_order,
    "firmware_blob": lambda d: parse_firmware_blob(d, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB),
    "firmware_blob2": lambda d: parse_firmware_blob(d, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2),
    "gpt": parse_gpt,
}


def valid_samples() -> list[bytes]:
    return [
        variable(EFI_GLOBAL_VARIABLE, "Boot0001", load_option("debian", SHIM_PATH)),
        image_load(SHIM_PATH),
        load_option("debian", SHIM_PATH),
        gpt(DISK, [(uuid.UUID(int=1), "esp")]),
        b"\x0aPEI Volume" + u64(1) + u64(2),
    ]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid structure with a few bytes overwritten, cut or extended."""
    data = bytearray(draw(st.sampled_from(valid_samples())))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


fuzz_inputs = st.one_of(st.binary(max_size=400), mutated())


@pytest.mark.parametrize("name", sorted(PARSERS))
@given(data=fuzz_inputs)
def test_parsers_raise_only_event_data_malformed(name: str, data: bytes) -> None:
    only_malformed(PARSERS[name], data)


# --- real firmware logs (/work/shared/firmware-logs, see SOURCES.md) ----------------------

_DIGEST_SIZES = {0x0004: 20, 0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}
_HASH_NAMES = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512", 0x0012: "sm3"}

# Events whose digest is not the hash of their data although the PFP says it must be: the
# firmware's doing (tpm2_eventlog warns about the first too; SOURCES.md, note 6).
KNOWN_DEVIATIONS = {
    ("gotpmtools__gdc-host.bin", 3): "Dell EV_S_CRTM_VERSION '2.3.5'",
    ("keylime__binary_bios_measurements.bin", 21): "Intel CSME EV_NONHOST_INFO IntelCSxEEvent01",
}


@dataclass(frozen=True)
class RawEvent:
    number: int  # records counted from 0, the Spec ID event included (as tpm2_eventlog does)
    pcr: int
    event_type: int
    digests: dict[str, bytes]
    data: bytes


class LogCursor:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.offset = raw, 0

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.raw):
            raise ValueError("truncated log")
        self.offset += n
        return self.raw[self.offset - n : self.offset]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")


def read_log(raw: bytes) -> tuple[list[RawEvent], int | None]:
    """Records of a TCG log (legacy TCG_PCR_EVENT, or Spec ID + TCG_PCR_EVENT2) and the
    UINTN size (None for legacy logs).  Just enough for these tests; raises on a bad log."""
    log = LogCursor(raw)
    pcr, event_type, sha1, size = log.uint(4), log.uint(4), log.take(20), log.uint(4)
    first = RawEvent(0, pcr, event_type, {"sha1": sha1}, log.take(size))
    agile = event_type == EventType.EV_NO_ACTION and first.data.startswith(b"Spec ID Event03")
    events = [] if agile else [first]
    while log.offset < len(raw):
        pcr, event_type = log.uint(4), log.uint(4)
        if agile:
            digests = {}
            for _ in range(log.uint(4)):
                alg = log.uint(2)
                digests[_HASH_NAMES[alg]] = log.take(_DIGEST_SIZES[alg])
        else:
            digests = {"sha1": log.take(20)}
        events.append(
            RawEvent(len(events) + agile, pcr, event_type, digests, log.take(log.uint(4)))
        )
    return events, (uintn_size_from_spec_id(first.data[23]) if agile else None)


def real_logs() -> list[Path]:
    return sorted(LOGS_DIR.glob("*.bin")) if LOGS_DIR.is_dir() else []


def load(path: Path) -> tuple[list[RawEvent], int | None]:
    try:
        return read_log(path.read_bytes())
    except (ValueError, KeyError):
        pytest.skip(f"{path.name} is not a TCG log this reader understands (SOURCES.md marks it)")


needs_logs = pytest.mark.skipif(not LOGS_DIR.is_dir(), reason=f"{LOGS_DIR} is absent")


@needs_logs
@pytest.mark.parametrize("path", real_logs(), ids=lambda p: p.stem)
def test_real_log_digests_follow_the_rule(path: Path) -> None:
    events, _ = load(path)
    mismatches = []
    for event in events:
        preimages = data_digest_preimages(event.event_type, event.data, pcr_index=event.pcr)
        if preimages is None:
            continue
        for alg, digest in event.digests.items():
            if all(hashlib.new(alg, p).digest() != digest for p in preimages):
                mismatches.append((path.name, event.number))
                break
    assert set(mismatches) == {k for k in KNOWN_DEVIATIONS if k[0] == path.name}


@needs_logs
@pytest.mark.parametrize("path", real_logs(), ids=lambda p: p.stem)
def test_real_log_event_data_parses_or_is_malformed(path: Path) -> None:
    events, uintn = load(path)
    for event in events:
        kind = event.event_type
        if kind in (
            EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
            EventType.EV_EFI_BOOT_SERVICES_DRIVER,
        ):
            only_malformed(lambda d: parse_image_load(d, uintn), event.data)
        elif kind in (EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, EventType.EV_EFI_VARIABLE_BOOT):
            parsed = parse_uefi_variable(
                event.data
            )  # every such event in these logs is well formed
            only_malformed(parse_signature_lists, parsed.data)
            only_malformed(parse_efi_load_option, parsed.data)
        elif kind == EventType.EV_EFI_VARIABLE_AUTHORITY:
            parse_authority(parse_uefi_variable(event.data, allow_trailing=True))
        elif kind == EventType.EV_EFI_GPT_EVENT:
            parse_gpt(event.data)
        elif kind in (
            EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
            EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
        ):
            parse_firmware_blob(event.data, kind)
        decode_text(event.data)


def real_event(name: str, number: int) -> tuple[RawEvent, int | None]:
    path = LOGS_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    events, uintn = load(path)
    (event,) = [e for e in events if e.number == number]
    return event, uintn


def matched_label(event: RawEvent) -> str:
    candidates = data_digest_candidates(event.event_type, event.data, pcr_index=event.pcr) or ()
    alg, digest = next(iter(event.digests.items()))
    return next(c.label for c in candidates if hashlib.new(alg, c.preimage).digest() == digest)


@needs_logs
def test_real_old_shim_authority_matches_without_its_last_byte() -> None:
    event, _ = real_event("goattest__sb_cert_eventlog.bin", 12)
    assert matched_label(event) == "shim-trailing-bytes"
    shim = parse_uefi_variable(event.data, allow_trailing=True)
    (entry,) = parse_authority(shim)
    assert (shim.guid, shim.name, entry.owner) == (SHIM_LOCK_GUID, "Shim", None)
    assert entry.certificate_names is not None


@needs_logs
def test_real_systemd_command_line_with_a_one_byte_nul() -> None:
    event, _ = real_event("goeventlog__arch-linux-workstation.bin", 24)
    assert matched_label(event) == "systemd-utf16-nul"
    assert decode_text(event.data).startswith("initrd=\\intel-ucode.img ")


@needs_logs
def test_real_boot_variables_measured_as_variable_data_only() -> None:
    labels = set()
    for path in real_logs():
        events, _ = load(path)
        labels |= {
            matched_label(e) for e in events if e.event_type == EventType.EV_EFI_VARIABLE_BOOT
        }
    assert labels == {"event-data", "variable-data-only"}


@needs_logs
def test_real_boot_option_and_shim_path() -> None:
    events, _ = load(LOGS_DIR / "goattest__crypto_agile_eventlog.bin")
    options = {}
    for event in events:
        if event.event_type == EventType.EV_EFI_VARIABLE_BOOT:
            var = parse_uefi_variable(event.data)
            if var.name.startswith("Boot") and len(var.name) == 8:
                option = parse_efi_load_option(var.data)
                options[var.name] = (option.description, device_path_text(option.file_path_list))
    description, path = options["Boot0002"]
    assert description == "CentOS"
    assert path.endswith("/File(\\EFI\\centos\\shimx64.efi)")
    assert path.startswith("HD(1,GPT,23cd39d1-42f9-4f6b-8991-3e9a03260b08)")

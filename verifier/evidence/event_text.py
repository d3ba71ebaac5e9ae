"""One readable line per event, for `attest eventlog show`.  Pure; never raises."""

from __future__ import annotations

from verifier.evidence.errors import EventDataMalformed
from verifier.evidence.event_data import (
    SEPARATOR_ERROR,
    SEPARATOR_NORMAL,
    decode_text,
    parse_efi_load_option,
    parse_firmware_blob,
    parse_gpt,
    parse_image_load,
    parse_uefi_variable,
)
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import SPEC_ID_SIGNATURE, STARTUP_LOCALITY_SIGNATURE, Event
from verifier.evidence.uefi_device_path import device_path_text

_TEXT_EVENTS = frozenset(
    {
        EventType.EV_S_CRTM_VERSION,
        EventType.EV_EFI_ACTION,
        EventType.EV_ACTION,
        EventType.EV_IPL,
        EventType.EV_POST_CODE,
        EventType.EV_OMIT_BOOT_DEVICE_EVENTS,
        EventType.EV_COMPACT_HASH,
    }
)
_VARIABLE_EVENTS = frozenset(
    {
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        EventType.EV_EFI_VARIABLE_BOOT,
        EventType.EV_EFI_VARIABLE_BOOT2,
        EventType.EV_EFI_VARIABLE_AUTHORITY,
    }
)
_IMAGE_EVENTS = frozenset(
    {
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
        EventType.EV_EFI_BOOT_SERVICES_DRIVER,
        EventType.EV_EFI_RUNTIME_SERVICES_DRIVER,
    }
)


def describe_event(event: Event, uintn_size: int | None, limit: int = 100) -> str:
    try:
        text = _describe(event, uintn_size)
    except EventDataMalformed as exc:
        text = f"(malformed: {exc.message})"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(event: Event, uintn_size: int | None) -> str:
    kind = event.event_type
    data = event.data
    if kind == EventType.EV_NO_ACTION:
        if data.startswith(SPEC_ID_SIGNATURE):
            return "Spec ID Event03 (crypto-agile header)"
        if data.startswith(STARTUP_LOCALITY_SIGNATURE) and data:
            return f"StartupLocality {data[-1]}"
        return decode_text(data.split(b"\x00", 1)[0]) or f"{len(data)} bytes"
    if kind == EventType.EV_SEPARATOR:
        if data in SEPARATOR_NORMAL:
            return "normal" if data == bytes(4) else "normal (TPM 1.2-era value)"
        return "ERROR" if data == SEPARATOR_ERROR else data.hex()
    if kind in _TEXT_EVENTS:
        text = decode_text(data)
        return text if text.isprintable() and "\ufffd" not in text else data.hex()
    if kind in _VARIABLE_EVENTS:
        variable = parse_uefi_variable(data)
        detail = f"{len(variable.data)} bytes"
        if variable.name.startswith("Boot") and len(variable.name) == 8:
            detail = parse_efi_load_option(variable.data).description
        elif variable.name == "SecureBoot":
            detail = "enabled" if variable.data[:1] == b"\x01" else "disabled"
        return f"{variable.name} ({detail})"
    if kind in _IMAGE_EVENTS:
        image = parse_image_load(data, uintn_size)
        return image.file_path or device_path_text(image.device_path)
    if kind in (EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2):
        blob = parse_firmware_blob(data, kind)
        name = f"{blob.description} " if blob.description else ""
        return f"{name}base 0x{blob.base:x} length 0x{blob.length:x}"
    if kind == EventType.EV_EFI_GPT_EVENT:
        table = parse_gpt(data)
        return f"GPT disk {table.disk_guid}, {len(table.partitions)} partitions"
    return f"{len(data)} bytes"

"""The events of a boot description, in the order OVMF, shim 15.8 and grub 2.06 log them.

Order and shapes follow the TCG PC Client PFP 1.05 (sections 3.3.4 and 10) and, where the
specification leaves room, real logs of the same software (QEMU/OVMF with shim and grub:
secboot's eventlog1, keylime's secureboot and Secure-Boot-off logs, tpm2-tools'
event-moklisttrusted, ibmtss' deb1; see ../shared/firmware-logs/SOURCES.md):

1. PCR0: StartupLocality (EV_NO_ACTION, only when set), S-CRTM version, firmware volumes.
2. PCR7: SecureBoot, PK, KEK, db, dbx (EV_EFI_VARIABLE_DRIVER_CONFIG), then PCR7's
   separator: OVMF measures the Secure Boot configuration early and closes PCR7 at once.
3. PCR2: drivers; PCR1: BootOrder and each Boot#### in boot order.
4. PCR4: "Calling EFI Application from Boot Option", then the separators of PCRs 0-6.
5. Firmware loads shim: the db certificate that verified it (PCR7, Secure Boot only),
   the GPT (PCR5), shim's image (PCR4).
6. shim: MokList, MokListX (PCR14), SbatLevel (PCR7), MokListTrusted (PCR14); the
   certificate that verified grub (PCR7, Secure Boot only), grub's image (PCR4).
7. grub: grub.cfg (PCR9), its commands (PCR8), `linux` (PCR8), the kernel file (PCR9),
   the kernel image as loaded (PCR4, verified through shim), the kernel command line
   (PCR8), `initrd` (PCR8), the initrd file (PCR9).
8. PCR5: ExitBootServices invoked and returned.

Digests: where the specification defines the digest as a hash of the event data, it is
(separators, EFI actions, Secure Boot variables, authorities, GPT, S-CRTM version).
Elsewhere it is what the real software hashes: the variable's data for EV_EFI_VARIABLE_BOOT
(edk2), the variable contents for shim's PCR14 events, the string without grub's prefix
and NUL for PCR8, and a binary's `content` string where firmware hashes the image.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from lightgate.sim.firmware import uefi
from lightgate.sim.firmware.certificates import fixture_certificate
from lightgate.sim.firmware.description import BootDescription, LoaderImage
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    STARTUP_LOCALITY_SIGNATURE,
)
from verifier.evidence.eventlog_encode import EventRecord, encode_crypto_agile
from verifier.evidence.measured_boot import EXIT_BOOT_SERVICES_ACTIONS
from verifier.evidence.tpm_structures import HashAlg

#: SignatureOwner of every entry Lightgate's fixture firmware enrols in PK, KEK, db, dbx.
FIXTURE_OWNER_GUID: Final = uuid.UUID("30c86bfe-10ed-5fce-b768-dc8b705aea2f")

SEPARATOR_DATA: Final = bytes(4)  # PFP 10.4.4: 0x00000000 marks a normal transition
CALLING_BOOT_OPTION: Final = b"Calling EFI Application from Boot Option"
GRUB_COMMAND_PREFIX: Final = "grub_cmd: "
GRUB_CMDLINE_PREFIX: Final = "kernel_cmdline: "

# Where images sit in memory: stand-ins of the size OVMF uses on a 2 GiB QEMU guest.
_DRIVER_ADDRESS: Final = 0x7EF7F018
_SHIM_ADDRESS: Final = 0x7ED09018
_GRUB_ADDRESS: Final = 0x7E9C3018
_KERNEL_ADDRESS: Final = 0x79D2A040
# The disk's controller: PciRoot(0x0)/Pci(0x2,0x3)/Pci(0x0,0x0), a virtio-blk device
# behind a PCIe root port, as in secboot's and keylime's OVMF logs.
_DISK_CONTROLLER: Final = uefi.acpi_pci_root(0) + uefi.pci(2, 3) + uefi.pci(0, 0)


@dataclass(frozen=True, slots=True)
class _Measurer:
    """Turns event data into records with one digest per bank."""

    banks: tuple[HashAlg, ...]

    def event(
        self, pcr: int, event_type: EventType, data: bytes, measured: bytes | None = None
    ) -> EventRecord:
        """An event whose digest is the hash of `measured` (of `data` when None)."""
        payload = data if measured is None else measured
        digests = {bank: bank.digest(payload) for bank in self.banks}
        return EventRecord(pcr, event_type, digests, data)

    def not_extended(self, pcr: int, data: bytes) -> EventRecord:
        """An EV_NO_ACTION event: zero digests, never extended (PFP 10.4.5)."""
        digests = {bank: bytes(bank.digest_size) for bank in self.banks}
        return EventRecord(pcr, EventType.EV_NO_ACTION, digests, data)


@dataclass(frozen=True, slots=True)
class _Layout:
    """The boot disk's partitions and the device paths that point into them."""

    disk_guid: uuid.UUID
    total_sectors: int
    esp: uefi.Partition
    root: uefi.Partition

    def esp_file(self, path: str) -> bytes:
        """HD(1,GPT,...)/\\path: the short form Boot#### options use."""
        return uefi.hard_drive(self.esp) + uefi.file_path(path) + uefi.END_OF_DEVICE_PATH

    def esp_file_full(self, path: str) -> bytes:
        """PciRoot/Pci/Pci/HD/\\path: the full path of an image the firmware loads."""
        return _DISK_CONTROLLER + self.esp_file(path)

    def gpt(self) -> bytes:
        return uefi.gpt_data(self.disk_guid, self.total_sectors, (self.esp, self.root))


def disk_layout(description: BootDescription) -> _Layout:
    disk = description.disk
    sectors_per_mib = 1024 * 1024 // uefi.SECTOR_SIZE
    total = disk.size_mib * sectors_per_mib
    esp_first = sectors_per_mib  # 1 MiB alignment, as partitioners do
    esp_last = esp_first + disk.esp_size_mib * sectors_per_mib - 1
    esp = uefi.Partition(
        1,
        uefi.EFI_SYSTEM_PARTITION,
        _derived_guid(disk.name, "esp"),
        esp_first,
        esp_last,
        "EFI System Partition",
    )
    root = uefi.Partition(
        2,
        uefi.LINUX_FILESYSTEM_DATA,
        _derived_guid(disk.name, "root"),
        esp_last + 1,
        total - 34,
        "",
    )
    return _Layout(_derived_guid(disk.name, "disk"), total, esp, root)


def _derived_guid(name: str, role: str) -> uuid.UUID:
    """A random-looking (version 4) GUID that is the same on every build."""
    digest = hashlib.sha256(f"lightgate-fixture:{name}:{role}".encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


@dataclass(frozen=True, slots=True)
class _Boot:
    """What the event generators share: the description, its certificates, its disk."""

    description: BootDescription
    measure: _Measurer
    certificates: Mapping[str, bytes]
    layout: _Layout
    # (variable name, GUID, data) shim has measured: it logs each authority once.
    shim_measured: set[tuple[str, uuid.UUID, bytes]] = field(default_factory=set)


def build_event_log(description: BootDescription) -> bytes:
    """The crypto-agile event log of the boot `description` describes."""
    return encode_crypto_agile(description.banks, boot_events(description), uintn_size=8)


def boot_events(description: BootDescription) -> list[EventRecord]:
    """Every event of the boot, in log order (the Spec ID header is the encoder's)."""
    issuers = description.certificate_issuers()
    boot = _Boot(
        description=description,
        measure=_Measurer(description.banks),
        certificates={name: fixture_certificate(name, issuer) for name, issuer in issuers.items()},
        layout=disk_layout(description),
    )
    return [
        *_platform_firmware(boot),
        *_secure_boot_configuration(boot),
        *_drivers(boot),
        *_boot_variables(boot),
        *_ready_to_boot(boot),
        *_firmware_loads_shim(boot),
        *_shim_starts(boot),
        *_shim_loads_grub(boot),
        *_grub(boot),
        *_exit_boot_services(boot),
    ]


def _platform_firmware(boot: _Boot) -> Iterator[EventRecord]:
    firmware = boot.description.firmware
    locality = boot.description.startup_locality
    if locality is not None:
        # PFP 10.4.5.3: PCR0 starts at the locality TPM2_Startup ran in.
        yield boot.measure.not_extended(0, STARTUP_LOCALITY_SIGNATURE + bytes([locality]))
    # PFP 10.4.4 (EV_S_CRTM_VERSION): a UCS-2 string; OVMF hashes the event data.
    yield boot.measure.event(0, EventType.EV_S_CRTM_VERSION, uefi.ucs2(firmware.scrtm_version))
    for blob in firmware.blobs:
        data = uefi.platform_firmware_blob(blob.base, blob.length)
        yield boot.measure.event(
            0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, data, blob.content.encode()
        )


def _secure_boot_configuration(boot: _Boot) -> Iterator[EventRecord]:
    """PFP 3.3.4.8 and 10.4.4: SecureBoot, PK, KEK, db, dbx, each a UEFI_VARIABLE_DATA
    whose digest is the hash of the whole structure; empty variables have no data."""
    secure_boot = boot.description.secure_boot
    certs = boot.certificates
    owner = FIXTURE_OWNER_GUID
    variables = (
        (uefi.EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01" if secure_boot.enabled else b"\x00"),
        (uefi.EFI_GLOBAL_VARIABLE, "PK", _x509_database(owner, certs, secure_boot.pk)),
        (uefi.EFI_GLOBAL_VARIABLE, "KEK", _x509_database(owner, certs, secure_boot.kek)),
        (uefi.EFI_IMAGE_SECURITY_DATABASE, "db", _x509_database(owner, certs, secure_boot.db)),
        (uefi.EFI_IMAGE_SECURITY_DATABASE, "dbx", _sha256_database(owner, secure_boot.dbx_hashes)),
    )
    for vendor, name, value in variables:
        data = uefi.variable_data(vendor, name, value)
        yield boot.measure.event(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data)
    yield boot.measure.event(7, EventType.EV_SEPARATOR, SEPARATOR_DATA)


def _x509_database(owner: uuid.UUID, certs: Mapping[str, bytes], names: Sequence[str]) -> bytes:
    return uefi.x509_database(owner, [certs[name] for name in names])


def _sha256_database(owner: uuid.UUID, hex_digests: Sequence[str]) -> bytes:
    return uefi.sha256_database(owner, [bytes.fromhex(digest) for digest in hex_digests])


def _drivers(boot: _Boot) -> Iterator[EventRecord]:
    for index, driver in enumerate(boot.description.firmware.drivers):
        content = driver.content.encode()
        data = uefi.image_load_event(
            _DRIVER_ADDRESS - index * 0x100000, len(content), boot.layout.esp_file_full(driver.path)
        )
        yield boot.measure.event(2, EventType.EV_EFI_BOOT_SERVICES_DRIVER, data, content)


def _boot_variables(boot: _Boot) -> Iterator[EventRecord]:
    """PCR1: BootOrder, then each Boot#### in boot order.  edk2 (OVMF) hashes only the
    variable's data for EV_EFI_VARIABLE_BOOT, not the UEFI_VARIABLE_DATA around it: every
    OVMF log in the shared set does (EV_EFI_VARIABLE_BOOT2 hashes the whole structure)."""
    description = boot.description
    order = uefi.boot_order(description.boot_order)
    yield _boot_variable(boot, "BootOrder", order)
    options = description.boot_options_by_number()
    for number in description.boot_order:
        option = options[number]
        value = uefi.load_option(option.description, boot.layout.esp_file(option.path))
        yield _boot_variable(boot, f"Boot{number:04X}", value)


def _boot_variable(boot: _Boot, name: str, value: bytes) -> EventRecord:
    data = uefi.variable_data(uefi.EFI_GLOBAL_VARIABLE, name, value)
    return boot.measure.event(1, EventType.EV_EFI_VARIABLE_BOOT, data, value)


def _ready_to_boot(boot: _Boot) -> Iterator[EventRecord]:
    """PFP 3.3.4.5 and 8.2.4: the boot manager logs the action, then the separators of
    PCRs 0-6 as control passes to the OS loader (PCR7's came after its configuration)."""
    yield boot.measure.event(4, EventType.EV_EFI_ACTION, CALLING_BOOT_OPTION)
    for pcr in range(7):
        yield boot.measure.event(pcr, EventType.EV_SEPARATOR, SEPARATOR_DATA)


def _firmware_loads_shim(boot: _Boot) -> Iterator[EventRecord]:
    """OVMF's LoadImage: image verification logs the db entry that matched (PFP 3.3.4.8:
    EV_EFI_VARIABLE_AUTHORITY, the EFI_SIGNATURE_DATA), then the GPT of the disk the
    image is on (PCR5, once), then the image (PCR4)."""
    shim = boot.description.boot_chain.shim
    if boot.description.secure_boot.enabled:
        signer = uefi.signature_data(FIXTURE_OWNER_GUID, boot.certificates[shim.signed_by])
        data = uefi.variable_data(uefi.EFI_IMAGE_SECURITY_DATABASE, "db", signer)
        yield boot.measure.event(7, EventType.EV_EFI_VARIABLE_AUTHORITY, data)
    yield boot.measure.event(5, EventType.EV_EFI_GPT_EVENT, boot.layout.gpt())
    yield _application(boot, _SHIM_ADDRESS, shim, boot.layout.esp_file_full(shim.path))


def _application(boot: _Boot, address: int, image: LoaderImage, device_path: bytes) -> EventRecord:
    content = image.content.encode()
    data = uefi.image_load_event(address, len(content), device_path)
    return boot.measure.event(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, data, content)


def _shim_starts(boot: _Boot) -> Iterator[EventRecord]:
    """shim 15.8's import_mok_state (mok.c), in its table's order.  MokList and MokListX
    are logged to PCR14 as EV_IPL named by the variable (NUL-terminated), digest of the
    contents shim mirrors to the OS: its built-in vendor certificate as an
    EFI_SIGNATURE_LIST ahead of the NV variable, or one null SHA-256 entry when a key
    database would be empty.  SbatLevel goes to PCR7 as an authority, with or without
    Secure Boot (keylime's Secure-Boot-off log has it).  MokListTrusted: PCR14 only."""
    shim = boot.description.shim
    certs = boot.certificates
    vendor = uefi.x509_database(uefi.SHIM_LOCK_GUID, [certs[shim.vendor_cert]])
    moks = uefi.x509_database(uefi.SHIM_LOCK_GUID, [certs[name] for name in shim.mok_list])
    yield _shim_log(boot, "MokList", vendor + moks)
    revoked = [bytes.fromhex(digest) for digest in shim.mok_list_x] or [bytes(32)]
    yield _shim_log(boot, "MokListX", uefi.sha256_database(uefi.SHIM_LOCK_GUID, revoked))
    yield from _shim_authority(boot, "SbatLevel", shim.sbat_level.encode())
    if shim.mok_list_trusted:
        yield _shim_log(boot, "MokListTrusted", b"\x01")


def _shim_log(boot: _Boot, name: str, contents: bytes) -> EventRecord:
    # shim's tpm_log_event: EV_IPL, the description with its NUL as data.
    return boot.measure.event(14, EventType.EV_IPL, name.encode() + b"\0", contents)


def _shim_authority(boot: _Boot, name: str, value: bytes) -> Iterator[EventRecord]:
    """shim's tpm_measure_variable: a UEFI_VARIABLE_DATA under SHIM_LOCK_GUID, logged
    only the first time a (name, data) pair is measured."""
    key = (name, uefi.SHIM_LOCK_GUID, value)
    if key in boot.shim_measured:
        return
    boot.shim_measured.add(key)
    data = uefi.variable_data(uefi.SHIM_LOCK_GUID, name, value)
    yield boot.measure.event(7, EventType.EV_EFI_VARIABLE_AUTHORITY, data)


def _shim_verifies(boot: _Boot, signer: str) -> Iterator[EventRecord]:
    """The certificate shim verified an image with: its built-in one logs as "Shim", a
    MOK as "MokList" (README.tpm), the DER alone.  Nothing without Secure Boot."""
    if not boot.description.secure_boot.enabled:
        return
    name = "Shim" if signer == boot.description.shim.vendor_cert else "MokList"
    yield from _shim_authority(boot, name, boot.certificates[signer])


def _shim_loads_grub(boot: _Boot) -> Iterator[EventRecord]:
    """shim verifies grub, then measures it (PCR4) with the file path alone."""
    grub = boot.description.boot_chain.grub
    yield from _shim_verifies(boot, grub.signed_by)
    device_path = uefi.file_path(grub.path) + uefi.END_OF_DEVICE_PATH
    yield _application(boot, _GRUB_ADDRESS, grub, device_path)


def _grub(boot: _Boot) -> Iterator[EventRecord]:
    """grub's TPM verifier (grub-core/commands/tpm.c): files it reads go to PCR9, data
    the file name, digest the contents; commands and the kernel command line to PCR8."""
    grub = boot.description.grub
    kernel = boot.description.boot_chain.kernel
    kernel_line = f"{grub.kernel_path} {grub.kernel_cmdline}"
    yield _grub_file(boot, grub.config_path, grub.config_content)
    for command in grub.commands:
        yield _grub_string(boot, GRUB_COMMAND_PREFIX, command)
    yield _grub_string(boot, GRUB_COMMAND_PREFIX, f"linux {kernel_line}")
    yield _grub_file(boot, grub.kernel_path, kernel.content)
    # The kernel is then loaded through shim, which verifies it and measures the image;
    # it is loaded from memory, so no device path (as in keylime's and deb1's logs).
    yield from _shim_verifies(boot, kernel.signed_by)
    content = kernel.content.encode()
    data = uefi.image_load_event(_KERNEL_ADDRESS, len(content), b"")
    yield boot.measure.event(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, data, content)
    yield _grub_string(boot, GRUB_CMDLINE_PREFIX, kernel_line)
    yield _grub_string(boot, GRUB_COMMAND_PREFIX, f"initrd {grub.initrd_path}")
    yield _grub_file(boot, grub.initrd_path, grub.initrd_content)


def _grub_file(boot: _Boot, path: str, content: str) -> EventRecord:
    return boot.measure.event(9, EventType.EV_IPL, path.encode() + b"\0", content.encode())


def _grub_string(boot: _Boot, prefix: str, text: str) -> EventRecord:
    # grub logs prefix + text + NUL but hashes the text alone (grub_tpm_verify_string);
    # every grub log in the shared set agrees.
    data = (prefix + text).encode() + b"\0"
    return boot.measure.event(8, EventType.EV_IPL, data, text.encode())


def _exit_boot_services(boot: _Boot) -> Iterator[EventRecord]:
    if not boot.description.exit_boot_services:
        return
    for action in EXIT_BOOT_SERVICES_ACTIONS:  # PFP 10.4.4, EV_EFI_ACTION, PCR5
        yield boot.measure.event(5, EventType.EV_EFI_ACTION, action)

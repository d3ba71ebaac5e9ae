"""Typed boot claims from a measured-boot event log.

What the log says the node booted: platform firmware, Secure Boot state and keys, shim's
MOK state, the boot chain, grub's kernel command line and initrd, separators, whether
ExitBootServices ran, and a finding for every event whose data does not hash to its
digest where the event type says it must (PFP 1.05, 10.4.1).  Pure: no I/O.

Claims that reach appraisal come from `claims_of(verified)`, which reads only events in
PCRs the quote vouched for (STYLE: verified before used).  `extract_claims(log)` reads a
log nobody has verified, for `attest eventlog claims` and for learning golden values from
a known-good file.

Event data is firmware's prose: a structure that does not parse is a finding, never a
refusal of the log; the log's digests, which the quote proves, stay sound.

`claim_names` turns these claims into the named values golden values, deviations and
policy compare.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from verifier.evidence.errors import EventDataMalformed
from verifier.evidence.event_data import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK_GUID,
    data_digest_preimages,
    decode_text,
    parse_efi_load_option,
    parse_firmware_blob,
    parse_image_load,
    parse_uefi_variable,
)
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import Event, EventLog
from verifier.evidence.measured_boot import VerifiedEventLog
from verifier.evidence.tpm_structures import HashAlg
from verifier.evidence.uefi_signatures import (
    SignatureEntry,
    parse_authority,
    parse_signature_lists,
)

#: Banks by strength: a component is named by the strongest digest the log has.
_PREFERRED_BANKS: Final = (
    HashAlg.SHA256,
    HashAlg.SHA384,
    HashAlg.SHA512,
    HashAlg.SM3_256,
    HashAlg.SHA1,
)
_SEPARATOR_NORMAL: Final = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff")
_SEPARATOR_ERROR: Final = b"\x01\x00\x00\x00"
_CALLING_APPLICATION: Final = "Calling EFI Application from Boot Option"
_EBS_INVOCATION: Final = "Exit Boot Services Invocation"
_GRUB_CMD: Final = "grub_cmd: "
_GRUB_KERNEL_CMDLINE: Final = "kernel_cmdline: "


@dataclass(frozen=True, slots=True)
class Component:
    """A measured binary or blob, named by its strongest digest (`sha256:<hex>`)."""

    pcr: int
    event: int
    event_type: str
    digest: str
    description: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "pcr": self.pcr,
            "event": self.event,
            "type": self.event_type,
            "digest": self.digest,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class SignatureClaim:
    """One EFI_SIGNATURE_DATA: a certificate (by SHA-256 fingerprint) or a hash."""

    signature_type: str
    fingerprint: str
    owner: str
    subject: str | None = None

    @classmethod
    def of(cls, entry: SignatureEntry) -> SignatureClaim:
        names = entry.certificate_names
        owner = "" if entry.owner is None else str(entry.owner)
        subject = None if names is None else names.subject
        return cls(entry.signature_type, entry.fingerprint_sha256, owner, subject)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.signature_type, "fingerprint": self.fingerprint}
        out["owner"] = self.owner
        if self.subject is not None:
            out["subject"] = self.subject
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """Something in the log worth a policy's attention that does not stop replay."""

    name: str  # event-data-digest, event-data-malformed, separator-error, ...
    event: int
    pcr: int
    detail: str

    def describe(self) -> str:
        return f"{self.name}: event {self.event} (PCR{self.pcr}): {self.detail}"


@dataclass(frozen=True, slots=True)
class FirmwareClaims:
    scrtm_version: str | None = None
    scrtm_contents: tuple[Component, ...] = ()
    blobs: tuple[Component, ...] = ()  # firmware volumes, microcode, POST code
    drivers: tuple[Component, ...] = ()  # UEFI drivers and option ROMs
    handoff_tables: tuple[Component, ...] = ()


@dataclass(frozen=True, slots=True)
class SecureBootClaims:
    enabled: bool | None = None  # the SecureBoot variable; None when not measured
    variables: tuple[str, ...] = ()  # PCR7 configuration variables measured, in order
    pk: tuple[SignatureClaim, ...] = ()
    kek: tuple[SignatureClaim, ...] = ()
    db: tuple[SignatureClaim, ...] = ()
    dbx: tuple[SignatureClaim, ...] = ()
    authorities: tuple[SignatureClaim, ...] = ()  # what verified the loaded images


@dataclass(frozen=True, slots=True)
class ShimClaims:
    vendor_certificates: tuple[SignatureClaim, ...] = ()
    sbat_level: str | None = None
    mok_variables: tuple[Component, ...] = ()  # MokList, MokListX, MokListTrusted (PCR14)
    mok_authorities: tuple[SignatureClaim, ...] = ()


@dataclass(frozen=True, slots=True)
class KernelClaims:
    path: str | None = None
    cmdline: str | None = None
    initrd: str | None = None
    files: tuple[Component, ...] = ()  # what the boot loader read (grub's PCR9)
    commands: tuple[str, ...] = ()  # grub's commands (PCR8)


@dataclass(frozen=True, slots=True)
class BootClaims:
    log_sha256: str
    log_format: str
    banks: tuple[str, ...]
    firmware: FirmwareClaims = field(default_factory=FirmwareClaims)
    secure_boot: SecureBootClaims = field(default_factory=SecureBootClaims)
    shim: ShimClaims = field(default_factory=ShimClaims)
    boot_options: tuple[str, ...] = ()  # "Boot0001: debian (\EFI\debian\shimx64.efi)"
    boot_chain: tuple[Component, ...] = ()  # EV_EFI_BOOT_SERVICES_APPLICATION, in order
    kernel: KernelClaims = field(default_factory=KernelClaims)
    separators: tuple[int, ...] = ()  # PCRs with a normal separator
    exit_boot_services: bool = False
    findings: tuple[Finding, ...] = ()


def claims_of(verified: VerifiedEventLog) -> BootClaims:
    """Claims from the events of PCRs the quote verified, components named by the
    digests of a bank the quote verified.  (A log's other banks are the node's word
    only: a log can carry an honest sha1 bank, which an sha1-only quote matches, and an
    invented sha256 bank naming the golden kernel.)"""
    return _extract(verified.log, verified.events(), verified.verified_banks)


def extract_claims(log: EventLog) -> BootClaims:
    """Claims from every event of an unverified log (CLI, learning from a file)."""
    return _extract(log, log.events, log.banks)


def _extract(log: EventLog, events: Sequence[Event], banks: Sequence[HashAlg]) -> BootClaims:
    bank = next((b for b in _PREFERRED_BANKS if b in banks), None)
    builder = _ClaimsBuilder(log, bank)
    for event in events:
        builder.add(event)
    return builder.build()


class _ClaimsBuilder:
    """Accumulates claims event by event; one method per event family."""

    def __init__(self, log: EventLog, bank: HashAlg | None) -> None:
        self.log = log
        self.bank = bank  # the bank whose digests name components
        self.scrtm_version: str | None = None
        self.scrtm_contents: list[Component] = []
        self.blobs: list[Component] = []
        self.drivers: list[Component] = []
        self.handoff: list[Component] = []
        self.secure_boot: bool | None = None
        self.sb_variables: list[str] = []
        self.sb_lists: dict[str, tuple[SignatureClaim, ...]] = {}
        self.authorities: list[SignatureClaim] = []
        self.vendor_certs: list[SignatureClaim] = []
        self.mok_authorities: list[SignatureClaim] = []
        self.sbat_level: str | None = None
        self.mok_variables: list[Component] = []
        self.boot_options: list[str] = []
        self.boot_chain: list[Component] = []
        self.grub_commands: list[str] = []
        self.cmdline: str | None = None
        self.kernel_path: str | None = None
        self.files: list[Component] = []
        self.separators: list[int] = []
        self.exit_boot_services = False
        self.findings: list[Finding] = []

    def component(self, event: Event, description: str = "") -> Component:
        return Component(event.pcr, event.number, event.type_name, self.digest(event), description)

    def digest(self, event: Event) -> str:
        if self.bank is None:
            return ""
        value = event.digest(self.bank)
        return f"{self.bank.bank_name}:{value.hex()}" if value is not None else ""

    def finding(self, name: str, event: Event, detail: str) -> None:
        self.findings.append(Finding(name, event.number, event.pcr, detail))

    def add(self, event: Event) -> None:
        if not event.extends:
            return
        self.check_data_digest(event)
        handler = _HANDLERS.get(event.event_type)
        if handler is None:
            return
        try:
            handler(self, event)
        except EventDataMalformed as exc:
            self.finding("event-data-malformed", event, f"{event.type_name}: {exc.message}")

    def check_data_digest(self, event: Event) -> None:
        preimages = data_digest_preimages(event.event_type, event.data, pcr_index=event.pcr)
        if preimages is None:
            return
        for alg, logged in event.digests:
            try:
                bank = HashAlg(alg)
            except ValueError:
                continue
            if all(bank.digest(p) != logged for p in preimages):
                self.finding(
                    "event-data-digest",
                    event,
                    f"{event.type_name} {bank.bank_name} digest {logged.hex()} is not the hash "
                    "of its event data",
                )
                return

    # Handlers, one per event family.

    def on_scrtm_version(self, event: Event) -> None:
        # PFP 10.4.3: a UCS-2 string, or a GUID (16 bytes) naming the S-CRTM version.
        text = decode_text(event.data)
        if not text.isprintable():
            text = (
                str(uuid.UUID(bytes_le=event.data)) if len(event.data) == 16 else event.data.hex()
            )
        self.scrtm_version = text

    def on_scrtm_contents(self, event: Event) -> None:
        self.scrtm_contents.append(self.component(event, decode_text(event.data)))

    def on_firmware_blob(self, event: Event) -> None:
        blob = parse_firmware_blob(event.data, event.event_type)
        name = blob.description or f"base 0x{blob.base:x} length 0x{blob.length:x}"
        self.blobs.append(self.component(event, name))

    def on_opaque_blob(self, event: Event) -> None:
        self.blobs.append(self.component(event, decode_text(event.data)[:80]))

    def on_driver(self, event: Event) -> None:
        self.drivers.append(self.component(event, self.image_path(event)))

    def image_path(self, event: Event) -> str:
        """The image's file path, if its UEFI_IMAGE_LOAD_EVENT names one.  The digest (a
        PE hash) is the claim; old shim wrote load events with stray bytes after an empty
        device path, which costs only the path, so that is not a finding."""
        try:
            return parse_image_load(event.data, self.log.uintn_size).file_path or ""
        except EventDataMalformed:
            return ""

    def on_handoff_tables(self, event: Event) -> None:
        self.handoff.append(self.component(event))

    def on_driver_config(self, event: Event) -> None:
        variable = parse_uefi_variable(event.data)
        if event.pcr != 7:
            return
        self.sb_variables.append(variable.name)
        if variable.guid == EFI_GLOBAL_VARIABLE and variable.name == "SecureBoot":
            # UEFI 2.9, 3.3: SecureBoot is one byte, 1 when enforcing.  Some firmware
            # measures it with no data; that is "not enabled" (go-attestation agrees).
            self.secure_boot = variable.data[:1] == b"\x01"
        elif (variable.guid, variable.name) in _SIGNATURE_DATABASES:
            entries = parse_signature_lists(variable.data)
            self.sb_lists[variable.name] = tuple(SignatureClaim.of(e) for e in entries)

    def on_authority(self, event: Event) -> None:
        # Old shim logged its authorities with a few bytes too many (go-attestation #157);
        # the digest check above already judged that, the variable itself is sound.
        variable = parse_uefi_variable(event.data, allow_trailing=True)
        claims = tuple(SignatureClaim.of(e) for e in parse_authority(variable))
        if variable.guid == SHIM_LOCK_GUID and variable.name == "SbatLevel":
            self.sbat_level = decode_text(variable.data)
        elif variable.guid == SHIM_LOCK_GUID and variable.name in ("Shim", "vendor_db"):
            self.vendor_certs.extend(claims)
        elif variable.name.startswith("Mok"):
            self.mok_authorities.extend(claims)
        elif variable.guid == EFI_IMAGE_SECURITY_DATABASE and variable.name == "vendor_db":
            self.vendor_certs.extend(claims)
        else:
            self.authorities.extend(claims)

    def on_variable_boot(self, event: Event) -> None:
        variable = parse_uefi_variable(event.data)
        if variable.name.startswith("Boot") and len(variable.name) == 8:
            option = parse_efi_load_option(variable.data)
            self.boot_options.append(f"{variable.name}: {option.description}")

    def on_application(self, event: Event) -> None:
        self.boot_chain.append(self.component(event, self.image_path(event)))

    def on_action(self, event: Event) -> None:
        text = decode_text(event.data)
        if text == _EBS_INVOCATION and event.pcr == 5:
            self.exit_boot_services = True
        elif text == _CALLING_APPLICATION:
            pass  # the transition to the OS loader; the separators that follow show it

    def on_separator(self, event: Event) -> None:
        # PFP 1.05, 10.4.4 (and the PC Client BIOS spec before it): 0 marks the normal
        # transition (0xFFFFFFFF in TPM 1.2-era firmware); 1 marks an error on the way.
        if event.data in _SEPARATOR_NORMAL:
            self.separators.append(event.pcr)
        elif event.data == _SEPARATOR_ERROR:
            self.finding("separator-error", event, "firmware recorded an error separator")
        else:
            self.finding("separator-value", event, f"separator data {event.data.hex()}")

    def on_ipl(self, event: Event) -> None:
        if event.pcr == 14:
            # shim measures MokList, MokListX and MokListTrusted into PCR14 with the
            # variable name as data and the contents' hash as digest.
            self.mok_variables.append(self.component(event, decode_text(event.data)))
            return
        text = decode_text(event.data)
        if event.pcr == 8 and text.startswith(_GRUB_KERNEL_CMDLINE):
            path, _, cmdline = text[len(_GRUB_KERNEL_CMDLINE) :].partition(" ")
            self.kernel_path, self.cmdline = path, cmdline
        elif event.pcr == 8 and text.startswith(_GRUB_CMD):
            self.grub_commands.append(text[len(_GRUB_CMD) :])
        elif event.pcr == 9:
            self.files.append(self.component(event, text))
        elif event.pcr in (8, 12) and self.cmdline is None and _utf16(event.data):
            # systemd-boot measures the kernel command line as UTF-16 text.
            self.cmdline = text

    def build(self) -> BootClaims:
        sb = self.sb_lists
        return BootClaims(
            log_sha256=self.log.sha256.hex(),
            log_format=str(self.log.format),
            banks=tuple(b.bank_name for b in self.log.banks),
            firmware=FirmwareClaims(
                self.scrtm_version,
                tuple(self.scrtm_contents),
                tuple(self.blobs),
                tuple(self.drivers),
                tuple(self.handoff),
            ),
            secure_boot=SecureBootClaims(
                self.secure_boot,
                tuple(self.sb_variables),
                sb.get("PK", ()),
                sb.get("KEK", ()),
                sb.get("db", ()),
                sb.get("dbx", ()),
                tuple(self.authorities),
            ),
            shim=ShimClaims(
                tuple(self.vendor_certs),
                self.sbat_level,
                tuple(self.mok_variables),
                tuple(self.mok_authorities),
            ),
            boot_options=tuple(self.boot_options),
            boot_chain=tuple(self.boot_chain),
            kernel=KernelClaims(
                self.kernel_path,
                self.cmdline,
                _initrd(self.grub_commands),
                tuple(self.files),
                tuple(self.grub_commands),
            ),
            separators=tuple(sorted(set(self.separators))),
            exit_boot_services=self.exit_boot_services,
            findings=tuple(self.findings),
        )


_SIGNATURE_DATABASES: Final = {
    (EFI_GLOBAL_VARIABLE, "PK"),
    (EFI_GLOBAL_VARIABLE, "KEK"),
    (EFI_IMAGE_SECURITY_DATABASE, "db"),
    (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
}

_HANDLERS: dict[int, Callable[[_ClaimsBuilder, Event], None]] = {
    EventType.EV_S_CRTM_VERSION: _ClaimsBuilder.on_scrtm_version,
    EventType.EV_S_CRTM_CONTENTS: _ClaimsBuilder.on_scrtm_contents,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB: _ClaimsBuilder.on_firmware_blob,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _ClaimsBuilder.on_firmware_blob,
    EventType.EV_POST_CODE: _ClaimsBuilder.on_opaque_blob,
    EventType.EV_POST_CODE2: _ClaimsBuilder.on_opaque_blob,
    EventType.EV_CPU_MICROCODE: _ClaimsBuilder.on_opaque_blob,
    EventType.EV_EFI_BOOT_SERVICES_DRIVER: _ClaimsBuilder.on_driver,
    EventType.EV_EFI_RUNTIME_SERVICES_DRIVER: _ClaimsBuilder.on_driver,
    EventType.EV_EFI_HANDOFF_TABLES: _ClaimsBuilder.on_handoff_tables,
    EventType.EV_EFI_HANDOFF_TABLES2: _ClaimsBuilder.on_handoff_tables,
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG: _ClaimsBuilder.on_driver_config,
    EventType.EV_EFI_VARIABLE_AUTHORITY: _ClaimsBuilder.on_authority,
    EventType.EV_EFI_VARIABLE_BOOT: _ClaimsBuilder.on_variable_boot,
    EventType.EV_EFI_VARIABLE_BOOT2: _ClaimsBuilder.on_variable_boot,
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION: _ClaimsBuilder.on_application,
    EventType.EV_EFI_ACTION: _ClaimsBuilder.on_action,
    EventType.EV_SEPARATOR: _ClaimsBuilder.on_separator,
    EventType.EV_IPL: _ClaimsBuilder.on_ipl,
}


def _utf16(data: bytes) -> bool:
    return len(data) >= 4 and data[1] == 0 and data[3] == 0


def _initrd(commands: Iterable[str]) -> str | None:
    for command in commands:
        verb, _, rest = command.partition(" ")
        if verb in ("initrd", "initrd16", "initrdefi"):
            return rest.strip() or None
    return None

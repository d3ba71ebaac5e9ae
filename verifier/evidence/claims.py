"""Typed boot claims from a measured-boot event log (the types are in `claim_types`).

What the log says the node booted: platform firmware, Secure Boot state and keys, shim's
MOK state, the boot chain, grub's kernel command line and initrd, separators, whether
ExitBootServices ran, and a finding for every event whose data does not hash to its
digest where the event type says it must (PFP 1.05, 10.4.1).  Pure: no I/O.

Claims that reach appraisal come from `claims_of(verified)`, which reads only events in
PCRs the quote vouched for (STYLE: verified before used).  `extract_claims(log)` reads a
log nobody has verified, for `attest eventlog claims` and for learning golden values from
a known-good file.

Only measured bytes make claims.  Where the event type defines the digest as a hash of
the data (`event_data.data_digest_candidates`), a claim is read from the bytes that
matched the digest in the claims bank, never from the rest; an event whose data matches
no candidate makes no claim and is a finding (real firmware does this: policy decides).
Where the digest is of something else (an image, a firmware volume, a file), the digest
is the claim and the data (paths, addresses) only describes it.

The quote proves each PCR's sequence of events, not their interleaving across PCRs, and
an OS can extend PCRs 0-15 after boot.  So no claim is "the last one wins": single
values are the first occurrence (a later one is a finding), PCR7 configuration after the
PCR7 separator is refused as a claim (go-attestation's rule), and every family is also a
closed, ordered tuple of what was measured (`boot-chain`, `kernel.commands`,
`kernel.files`, `shim.mok-variables`, `separators`, `other-events`), so an appended or
unexpected event changes a named claim.  A structure that does not parse is a finding,
never a refusal of the log.

`claim_names` turns these claims into the named values golden values, deviations and
policy compare.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from verifier.evidence.claim_types import (
    BootClaims,
    Component,
    Finding,
    FirmwareClaims,
    KernelClaims,
    SecureBootClaims,
    ShimClaims,
    SignatureClaim,
)
from verifier.evidence.errors import EventDataMalformed
from verifier.evidence.event_data import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SEPARATOR_NORMAL,
    SHIM_LOCK_GUID,
    DigestPreimage,
    data_digest_candidates,
    decode_text,
    parse_efi_load_option,
    parse_firmware_blob,
    parse_image_load,
    parse_uefi_variable,
)
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import REPLAYABLE_BANKS, Event, EventLog
from verifier.evidence.measured_boot import (
    DEFAULT_LOG_PCRS,
    EXIT_BOOT_SERVICES_ACTIONS,
    PREFERRED_BANKS,
    VerifiedEventLog,
)
from verifier.evidence.tpm_structures import HashAlg
from verifier.evidence.uefi_signatures import parse_authority, parse_signature_lists

_EBS_ACTIONS: Final = frozenset(action.decode() for action in EXIT_BOOT_SERVICES_ACTIONS)
_KERNEL_VERBS: Final = frozenset({"linux", "linuxefi", "linux16"})
#: grub's tests and assignments: their measured text follows grubenv (boot_success,
#: recordfail, initrdfail), which changes between boots of one machine, so they are a
#: claim of their own (`kernel.grub-settings`) that an operator can choose not to judge.
_GRUB_SETTINGS: Final = frozenset({"[", "test", "set", "unset", "export"})
_INITRD_VERBS: Final = frozenset({"initrd", "initrdefi", "initrd16"})


def claims_of(verified: VerifiedEventLog) -> BootClaims:
    """Claims from the events of PCRs the quote verified in the claims bank, components
    named by that bank's digests.  (A log's other banks are the node's word only: a log
    can carry an honest sha1 bank, which an sha1-only quote matches, and an invented
    sha256 bank naming the golden kernel.)"""
    return _extract(verified.log, verified.events(), verified.claims_bank, verified.claims_pcrs)


def extract_claims(
    log: EventLog,
    selection: Mapping[HashAlg, Iterable[int]] | None = None,
    log_pcrs: frozenset[int] = DEFAULT_LOG_PCRS,
) -> BootClaims:
    """Claims from an unverified log (CLI, learning from a file), read as the verifier
    would read them from a quote over `selection` (every bank of the log, PCRs 0-23,
    when not given): the same claims bank and the same PCRs, so that golden values
    learned from a file match what appraisal sees."""
    wanted = selection if selection is not None else {b: range(24) for b in log.banks}
    bank = next((b for b in PREFERRED_BANKS if b in log.banks and b in wanted), None)
    extended = {e.pcr for e in log.events if e.extends}
    quoted = frozenset(wanted[bank]) if bank is not None else frozenset()
    pcrs = frozenset((log_pcrs | extended) & quoted)
    return _extract(log, [e for e in log.events if e.pcr in pcrs], bank, pcrs)


def _extract(
    log: EventLog, events: Sequence[Event], bank: HashAlg | None, pcrs: frozenset[int]
) -> BootClaims:
    builder = _ClaimsBuilder(log, bank, pcrs)
    for event in events:
        builder.add(event)
    return builder.build()


class _ClaimsBuilder:
    """Accumulates claims event by event; one method per event family.  A handler gets
    the measured bytes (None where the digest does not cover the data) and says whether
    it made a claim of the event; events without one go to `other_events`."""

    def __init__(self, log: EventLog, bank: HashAlg | None, pcrs: frozenset[int]) -> None:
        self.log = log
        self.bank = bank  # the bank whose digests name components
        self.pcrs = pcrs
        self.scrtm_versions: list[str] = []
        self.scrtm_contents: list[Component] = []
        self.blobs: list[Component] = []
        self.drivers: list[Component] = []
        self.handoff: list[Component] = []
        self.secure_boot: bool | None = None
        self.sb_variables: list[str] = []
        self.sb_seen: set[tuple[uuid.UUID, str]] = set()
        self.sb_lists: dict[str, tuple[SignatureClaim, ...]] = {}
        self.sb_actions: list[str] = []
        self.pcr7_separated = False
        self.authorities: list[SignatureClaim] = []
        self.vendor_certs: list[SignatureClaim] = []
        self.mok_authorities: list[SignatureClaim] = []
        self.sbat_levels: list[str] = []
        self.mok_variables: list[Component] = []
        self.boot_options: list[str] = []
        self.boot_chain: list[Component] = []
        self.commands: list[str] = []
        self.settings: list[str] = []
        self.labelled_cmdlines: list[str] = []
        self.utf16_cmdline: str | None = None
        self.files: list[Component] = []
        self.separators: list[str] = []
        self.exit_boot_services = False
        self.ebs_seen: set[str] = set()
        self.other: list[str] = []
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
        candidates = data_digest_candidates(event.event_type, event.data, pcr_index=event.pcr)
        measured: DigestPreimage | None = None
        if candidates is not None:
            measured = self.measured(event, candidates)
            if measured is None:
                self.other_event(event)
                return
        handler, pcrs = _HANDLERS.get(event.event_type, (None, frozenset()))
        claimed = False
        if handler is not None and event.pcr in pcrs:
            try:
                claimed = handler(self, event, measured)
            except EventDataMalformed as exc:
                self.finding("event-data-malformed", event, f"{event.type_name}: {exc.message}")
        if not claimed:
            self.other_event(event)

    def describe(self, event: Event) -> str:
        return f"PCR{event.pcr} {event.type_name} {self.digest(event)}"

    def other_event(self, event: Event) -> None:
        self.other.append(self.describe(event))

    def measured(
        self, event: Event, candidates: tuple[DigestPreimage, ...]
    ) -> DigestPreimage | None:
        """The candidate the claims bank's digest is the hash of; a finding (and None)
        when the data matches the digest in no bank or not in the claims bank."""
        matched: DigestPreimage | None = None
        for alg, logged in event.digests:
            if alg not in REPLAYABLE_BANKS:
                continue  # a bank this verifier cannot hash (SM3 without OpenSSL's)
            bank = HashAlg(alg)
            hit = next((c for c in candidates if bank.digest(c.preimage) == logged), None)
            if hit is None:
                self.finding(
                    "event-data-digest",
                    event,
                    f"{event.type_name} {bank.bank_name} digest {logged.hex()} is not the hash "
                    "of its event data",
                )
                return None
            if bank is self.bank:
                matched = hit
        return matched

    # Handlers, one per event family: (event, measured) -> made a claim.

    def on_scrtm_version(self, event: Event, measured: DigestPreimage | None) -> bool:
        # PFP 10.4.3: a UCS-2 string, or a GUID (16 bytes) naming the S-CRTM version.
        data = measured.preimage if measured else event.data
        text = decode_text(data)
        if not text.isprintable() or "\ufffd" in text:
            text = str(uuid.UUID(bytes_le=data)) if len(data) == 16 else data.hex()
        self.scrtm_versions.append(text)
        return True

    def on_scrtm_contents(self, event: Event, measured: DigestPreimage | None) -> bool:
        self.scrtm_contents.append(self.component(event, decode_text(event.data)[:80]))
        return True

    def on_firmware_blob(self, event: Event, measured: DigestPreimage | None) -> bool:
        blob = parse_firmware_blob(event.data, event.event_type)
        name = blob.description or f"base 0x{blob.base:x} length 0x{blob.length:x}"
        self.blobs.append(self.component(event, name))
        return True

    def on_opaque_blob(self, event: Event, measured: DigestPreimage | None) -> bool:
        self.blobs.append(self.component(event, decode_text(event.data)[:80]))
        return True

    def on_driver(self, event: Event, measured: DigestPreimage | None) -> bool:
        self.drivers.append(self.component(event, self.image_path(event)))
        return True

    def image_path(self, event: Event) -> str:
        """The image's file path, if its UEFI_IMAGE_LOAD_EVENT names one: a description
        only (the digest, a PE hash, is the claim; the path is not measured).  Old shim
        wrote load events with stray bytes after an empty device path: no path then."""
        try:
            return parse_image_load(event.data, self.log.uintn_size).file_path or ""
        except EventDataMalformed:
            return ""

    def on_handoff_tables(self, event: Event, measured: DigestPreimage | None) -> bool:
        self.handoff.append(self.component(event))
        return True

    def on_driver_config(self, event: Event, measured: DigestPreimage | None) -> bool:
        if event.pcr != 7 or measured is None:
            return False  # other PCRs' configuration is pinned through other-events
        variable = parse_uefi_variable(measured.preimage)
        key = (variable.guid, variable.name)
        if self.pcr7_separated:
            # go-attestation's rule: Secure Boot configuration is measured before the
            # PCR7 separator; after it, it is not the configuration the firmware used.
            self.finding("secure-boot-config-late", event, f"{variable.name} after the separator")
            return False
        if key in self.sb_seen:
            self.finding("secure-boot-config-repeated", event, f"{variable.name} measured twice")
            return False
        self.sb_seen.add(key)
        self.sb_variables.append(variable.name)
        if key != _SECURE_BOOT and key not in _SIGNATURE_DATABASES:
            return False  # AuditMode, DeployedMode, vendor variables: pinned by digest
        if key == _SECURE_BOOT:
            # UEFI 2.9, 3.3: one byte, 1 when enforcing.  Firmware that measures it with no
            # data is not enforcing (go-attestation agrees); anything else is malformed.
            if variable.data not in (b"", b"\x00", b"\x01"):
                self.finding("secure-boot-value", event, f"SecureBoot = {variable.data.hex()}")
            self.secure_boot = variable.data == b"\x01"
        else:
            entries = parse_signature_lists(variable.data)
            self.sb_lists[variable.name] = tuple(SignatureClaim.of(e) for e in entries)
        return True

    def on_authority(self, event: Event, measured: DigestPreimage | None) -> bool:
        if event.pcr != 7 or measured is None:
            return False
        # Old shim logged its authorities a few bytes long (go-attestation #157); the
        # digest covers all but the last byte, which is padding (`shim-trailing-bytes`).
        variable = parse_uefi_variable(
            measured.preimage, allow_trailing=measured.label == "shim-trailing-bytes"
        )
        claims = tuple(SignatureClaim.of(e) for e in parse_authority(variable))
        if variable.guid == SHIM_LOCK_GUID and variable.name == "SbatLevel":
            self.sbat_levels.append(decode_text(variable.data))
        elif variable.name in ("Shim", "vendor_db") and variable.guid in (
            SHIM_LOCK_GUID,
            EFI_IMAGE_SECURITY_DATABASE,
        ):
            self.vendor_certs.extend(claims)
        elif variable.name.startswith("Mok"):
            self.mok_authorities.extend(claims)
        else:
            self.authorities.extend(claims)
        return True

    def on_variable_boot(self, event: Event, measured: DigestPreimage | None) -> bool:
        # Display only: firmware often hashes VariableData alone, leaving the name
        # unmeasured; the event's digest is pinned through other-events.
        variable = parse_uefi_variable(event.data)
        if variable.name.startswith("Boot") and len(variable.name) == 8:
            option = parse_efi_load_option(variable.data)
            self.boot_options.append(f"{variable.name}: {option.description}")
        return False

    def on_application(self, event: Event, measured: DigestPreimage | None) -> bool:
        if event.pcr != 4:
            return False
        self.boot_chain.append(self.component(event, self.image_path(event)))
        return True

    def on_action(self, event: Event, measured: DigestPreimage | None) -> bool:
        if measured is None:
            return False
        text = decode_text(measured.preimage)
        if event.pcr == 5 and text in _EBS_ACTIONS and text not in self.ebs_seen:
            self.ebs_seen.add(text)  # a repeat claims nothing: it lands in other-events
            self.exit_boot_services = True
            return True
        if event.pcr == 7:
            self.sb_actions.append(text)
            return True
        return False

    def on_separator(self, event: Event, measured: DigestPreimage | None) -> bool:
        # PFP 1.05, 10.4.4: UINT32 0 marks the transition (0xFFFFFFFF in TPM 1.2-era
        # firmware); an error measures UINT32 1.  Windows logs "WBCL" in PCRs 12-14.
        if measured is not None and measured.label == "error-separator":
            self.finding("separator-error", event, "firmware recorded an error separator")
            self.separators.append(f"PCR{event.pcr}:error")
        elif event.data in SEPARATOR_NORMAL:
            self.separators.append(f"PCR{event.pcr}")
        else:
            self.separators.append(f"PCR{event.pcr}:{event.data.hex()}")
        if event.pcr == 7:
            self.pcr7_separated = True
        return True

    def on_ipl(self, event: Event, measured: DigestPreimage | None) -> bool:
        if event.pcr == 14:
            # shim measures MokList, MokListX and MokListTrusted into PCR14 with the
            # variable name as (unmeasured) data and the contents' hash as digest.
            self.mok_variables.append(self.component(event, decode_text(event.data)))
            return True
        if event.pcr == 9:
            # grub's files: the digest is the file's; the path is a description.
            self.files.append(self.component(event, decode_text(event.data)))
            return True
        if event.pcr not in (8, 12) or measured is None:
            return False
        text = decode_text(measured.preimage)
        if text.split(" ", 1)[0] in _GRUB_SETTINGS:
            self.settings.append(text)
        else:
            self.commands.append(text)
        if measured.label.startswith("grub-string") and event.data.startswith(b"kernel_cmdline"):
            self.labelled_cmdlines.append(text)
        elif _utf16(measured.preimage) and self.utf16_cmdline is None:
            self.utf16_cmdline = text  # systemd-boot measures the command line as UTF-16
        return True

    def build(self) -> BootClaims:
        sb = self.sb_lists
        path, cmdline = _kernel_command(self.commands, self.labelled_cmdlines)
        if cmdline is None:
            cmdline = self.utf16_cmdline
        return BootClaims(
            log_sha256=self.log.sha256.hex(),
            log_format=str(self.log.format),
            banks=tuple(b.bank_name for b in self.log.banks),
            firmware=FirmwareClaims(
                tuple(self.scrtm_versions),
                tuple(self.scrtm_contents),
                tuple(self.blobs),
                tuple(self.drivers),
                tuple(self.handoff),
            ),
            secure_boot=SecureBootClaims(
                self.secure_boot,
                tuple(self.sb_variables),
                tuple(self.sb_actions),
                sb.get("PK", ()),
                sb.get("KEK", ()),
                sb.get("db", ()),
                sb.get("dbx", ()),
                tuple(self.authorities),
            ),
            shim=ShimClaims(
                tuple(self.vendor_certs),
                tuple(self.sbat_levels),
                tuple(self.mok_variables),
                tuple(self.mok_authorities),
            ),
            boot_options=tuple(self.boot_options),
            boot_chain=tuple(self.boot_chain),
            kernel=KernelClaims(
                path,
                cmdline,
                _last_argument(self.commands, _INITRD_VERBS),
                tuple(self.files),
                tuple(self.commands),
                tuple(self.settings),
            ),
            separators=tuple(self.separators),
            exit_boot_services=self.exit_boot_services,
            other_events=tuple(self.other),
            pcrs=tuple(sorted(self.pcrs)),
            findings=tuple(self.findings),
        )


_SECURE_BOOT: Final = (EFI_GLOBAL_VARIABLE, "SecureBoot")
_SIGNATURE_DATABASES: Final = {
    (EFI_GLOBAL_VARIABLE, "PK"),
    (EFI_GLOBAL_VARIABLE, "KEK"),
    (EFI_IMAGE_SECURITY_DATABASE, "db"),
    (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
}

Handler = Callable[[_ClaimsBuilder, Event, DigestPreimage | None], bool]
_ANY_PCR: Final = frozenset(range(24))
#: Each family's handler and the PCRs it claims from (PFP 1.05, 3.3.4): an event of
#: that type anywhere else makes no claim and lands in other-events, so relabelling an
#: event's type cannot hide it in a family that is not judged for that PCR.  Separators
#: aside, every PCR here belongs to a family in `claim_types.FAMILY_PCRS`.
_HANDLERS: dict[int, tuple[Handler, frozenset[int]]] = {
    EventType.EV_S_CRTM_VERSION: (_ClaimsBuilder.on_scrtm_version, frozenset({0})),
    EventType.EV_S_CRTM_CONTENTS: (_ClaimsBuilder.on_scrtm_contents, frozenset({0})),
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB: (_ClaimsBuilder.on_firmware_blob, frozenset({0})),
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2: (_ClaimsBuilder.on_firmware_blob, frozenset({0})),
    EventType.EV_POST_CODE: (_ClaimsBuilder.on_opaque_blob, frozenset({0})),
    EventType.EV_POST_CODE2: (_ClaimsBuilder.on_opaque_blob, frozenset({0})),
    EventType.EV_EFI_BOOT_SERVICES_DRIVER: (_ClaimsBuilder.on_driver, frozenset({2})),
    EventType.EV_EFI_RUNTIME_SERVICES_DRIVER: (_ClaimsBuilder.on_driver, frozenset({2})),
    EventType.EV_EFI_HANDOFF_TABLES: (_ClaimsBuilder.on_handoff_tables, frozenset({1})),
    EventType.EV_EFI_HANDOFF_TABLES2: (_ClaimsBuilder.on_handoff_tables, frozenset({1})),
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG: (_ClaimsBuilder.on_driver_config, frozenset({7})),
    EventType.EV_EFI_VARIABLE_AUTHORITY: (_ClaimsBuilder.on_authority, frozenset({7})),
    EventType.EV_EFI_VARIABLE_BOOT: (_ClaimsBuilder.on_variable_boot, frozenset({1})),
    EventType.EV_EFI_VARIABLE_BOOT2: (_ClaimsBuilder.on_variable_boot, frozenset({1})),
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION: (_ClaimsBuilder.on_application, frozenset({4})),
    EventType.EV_EFI_ACTION: (_ClaimsBuilder.on_action, frozenset({5, 7})),
    EventType.EV_SEPARATOR: (_ClaimsBuilder.on_separator, _ANY_PCR),
    EventType.EV_IPL: (_ClaimsBuilder.on_ipl, frozenset({8, 9, 12, 14})),
}


def _utf16(data: bytes) -> bool:
    return len(data) >= 4 and data[1] == 0 and data[3] == 0


def _kernel_command(
    commands: Sequence[str], labelled: Sequence[str]
) -> tuple[str | None, str | None]:
    """The kernel and its command line, from the last `linux` command grub ran (each one
    replaces the one before); failing that, from grub's kernel_cmdline events."""
    for command in reversed(commands):
        verb, _, rest = command.strip().partition(" ")
        if verb in _KERNEL_VERBS:
            path, _, cmdline = rest.strip().partition(" ")
            return path or None, cmdline.strip()
    if labelled:
        path, _, cmdline = labelled[-1].strip().partition(" ")
        return path or None, cmdline.strip()
    return None, None


def _last_argument(commands: Iterable[str], verbs: frozenset[str]) -> str | None:
    """The argument of the last command with one of `verbs` (grub's `initrd` replaces
    the initrd each time it runs)."""
    found = None
    for command in commands:
        verb, _, rest = command.strip().partition(" ")
        if verb in verbs:
            found = rest.strip() or None
    return found

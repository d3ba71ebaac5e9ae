"""The typed boot claims and which PCRs each family claims from.

What `claims.py` extracts from a measured-boot event log, as frozen values: platform
firmware, Secure Boot state and keys, shim's MOK state, the boot chain, the kernel and
grub's commands, separators, and findings.  `FAMILY_PCRS` names the PCRs each family
claims from (TCG PC Client PFP 1.05, 3.3.4), which `claim_names` uses to decide which
families a quote covers; apart from separators (recorded from any PCR), the handlers in
`claims` claim from no PCR outside them.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from verifier.evidence.uefi_signatures import SignatureEntry


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
    scrtm_versions: tuple[str, ...] = ()  # every S-CRTM version PCR0 measured (usually one)
    scrtm_contents: tuple[Component, ...] = ()
    blobs: tuple[Component, ...] = ()  # firmware volumes, microcode, POST code
    drivers: tuple[Component, ...] = ()  # UEFI drivers and option ROMs
    handoff_tables: tuple[Component, ...] = ()


@dataclass(frozen=True, slots=True)
class SecureBootClaims:
    enabled: bool | None = None  # the SecureBoot variable; None when not measured
    variables: tuple[str, ...] = ()  # PCR7 configuration variables measured, in order
    actions: tuple[
        str, ...
    ] = ()  # PCR7 EV_EFI_ACTION: "UEFI Debug Mode", "DMA Protection Disabled"
    pk: tuple[SignatureClaim, ...] = ()
    kek: tuple[SignatureClaim, ...] = ()
    db: tuple[SignatureClaim, ...] = ()
    dbx: tuple[SignatureClaim, ...] = ()
    authorities: tuple[SignatureClaim, ...] = ()  # what verified the loaded images


@dataclass(frozen=True, slots=True)
class ShimClaims:
    vendor_certificates: tuple[SignatureClaim, ...] = ()
    sbat_levels: tuple[str, ...] = ()  # each SbatLevel shim measured (once per shim run)
    mok_variables: tuple[Component, ...] = ()  # MokList, MokListX, MokListTrusted (PCR14)
    mok_authorities: tuple[SignatureClaim, ...] = ()


@dataclass(frozen=True, slots=True)
class KernelClaims:
    path: str | None = None
    cmdline: str | None = None
    initrd: str | None = None
    files: tuple[Component, ...] = ()  # what the boot loader read (grub's PCR9)
    commands: tuple[str, ...] = ()  # grub's measured commands (PCR8/PCR12), in order
    settings: tuple[str, ...] = ()  # grub's tests and assignments: grubenv-dependent


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
    separators: tuple[str, ...] = ()  # "PCR4", "PCR4:error", "PCR12:5742434c", in order
    exit_boot_services: bool = False
    other_events: tuple[str, ...] = ()  # "PCR5 EV_EFI_GPT_EVENT sha256:…": no claim of own
    pcrs: tuple[int, ...] = ()  # the PCRs these claims come from
    findings: tuple[Finding, ...] = ()


#: The PCRs each named family claims from, for claim_names: a family is named (empty
#: if need be) whenever one of its PCRs is covered.
FAMILY_PCRS: Final = {
    "firmware": frozenset({0}),
    "drivers": frozenset({2}),
    "handoff": frozenset({1}),
    "secure-boot": frozenset({7}),
    "boot-chain": frozenset({4}),
    "commands": frozenset({8, 12}),
    "files": frozenset({9}),
    "mok": frozenset({14}),
    "exit-boot-services": frozenset({5}),
}

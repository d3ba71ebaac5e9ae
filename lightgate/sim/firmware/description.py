"""A declarative description of one measured boot, and how it is read from YAML.

A boot description says what the platform holds and loads (firmware volumes, Secure
Boot databases, shim, grub, kernel); `events.boot_events` turns it into the events real
OVMF, shim and grub would log.  Binaries are named by a `content` string that stands in
for the image: a binary's digest in every bank is the bank's hash of that string's UTF-8
bytes, where real firmware would log the PE Authenticode hash.

A YAML file may say `extends: good`: it is deep-merged over `good.yaml` from the same
folder (mappings merge key by key; lists and scalars replace), so a variant names only
what changes.  Everything is checked when loaded: unknown fields, malformed hex, names
of certificates that are not defined, a boot order naming options that do not exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from lightgate.sim.firmware.errors import BootDescriptionError
from verifier.evidence.tpm_structures import HashAlg

#: Banks a fixture may carry: those Python's hashlib computes everywhere.
SUPPORTED_BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)


def _sha256_hex(value: str) -> str:
    digest = value.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{value!r} is not a SHA-256 digest (64 hex digits)")
    return digest


def _uefi_path(value: str) -> str:
    if not value.startswith("\\") or "/" in value:
        raise ValueError(f"{value!r} is not a UEFI file path (\\EFI\\..., backslashes)")
    return value


def _grub_path(value: str) -> str:
    if not value or "\0" in value:
        raise ValueError(f"{value!r} is not a grub file name")
    return value


Sha256Hex = Annotated[str, AfterValidator(_sha256_hex)]
UefiPath = Annotated[str, AfterValidator(_uefi_path)]
GrubPath = Annotated[str, AfterValidator(_grub_path)]
Name = Annotated[str, Field(min_length=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FirmwareBlob(_Frozen):
    """A firmware volume measured into PCR0 (EV_EFI_PLATFORM_FIRMWARE_BLOB)."""

    name: Name
    base: int = Field(ge=0, lt=2**64)
    length: int = Field(gt=0, lt=2**64)
    content: str


class FirmwareDriver(_Frozen):
    """A UEFI driver loaded from a file, measured into PCR2 (EV_EFI_BOOT_SERVICES_DRIVER)."""

    path: UefiPath
    content: str


class Firmware(_Frozen):
    vendor: Name  # for readers: OVMF measures no vendor string
    scrtm_version: str
    blobs: tuple[FirmwareBlob, ...] = ()
    drivers: tuple[FirmwareDriver, ...] = ()


class Certificate(_Frozen):
    """A fixture certificate, derived from its name (see `certificates`)."""

    name: Name
    issuer: Name | None = None  # None: self-signed


class SecureBoot(_Frozen):
    """The Secure Boot state and databases measured into PCR7 before its separator."""

    enabled: bool
    setup_mode: bool = False
    pk: tuple[Name, ...] = ()
    kek: tuple[Name, ...] = ()
    db: tuple[Name, ...] = ()
    dbx_hashes: tuple[Sha256Hex, ...] = ()

    @model_validator(mode="after")
    def _setup_mode_has_no_pk(self) -> Self:
        # UEFI 2.10, 32.3: the platform is in setup mode exactly when PK is empty, and
        # SecureBoot is 1 only in user mode.
        if self.setup_mode and (self.enabled or self.pk):
            raise ValueError("setup_mode needs an empty pk and enabled: false")
        if not self.setup_mode and not self.pk:
            raise ValueError("pk is empty: say setup_mode: true")
        return self


class Shim(_Frozen):
    """shim's own state: the certificate built into it, the MOK databases, SBAT level."""

    vendor_cert: Name
    mok_list: tuple[Name, ...] = ()
    mok_list_x: tuple[Sha256Hex, ...] = ()
    #: MokListTrusted: shim measures 0x01 when its NV variable is absent (the default).
    mok_list_trusted: bool = True
    sbat_level: str = Field(min_length=1)


class Disk(_Frozen):
    """The boot disk: a GPT with an EFI system partition and a Linux root partition.
    Its GUIDs are derived from `name`, so variants keep the same disk."""

    name: Name = "disk0"
    size_mib: int = Field(default=20480, ge=64)
    esp_size_mib: int = Field(default=512, ge=1)

    @model_validator(mode="after")
    def _esp_fits(self) -> Self:
        if self.esp_size_mib + 2 > self.size_mib:
            raise ValueError("the EFI system partition does not fit on the disk")
        return self


class BootOption(_Frozen):
    """A Boot#### variable pointing at a file on the EFI system partition."""

    number: int = Field(ge=0, le=0xFFFF)
    description: Name
    path: UefiPath


class LoaderImage(_Frozen):
    """shim or grub: a file on the EFI system partition."""

    path: UefiPath
    content: str
    signed_by: Name


class KernelImage(_Frozen):
    """The kernel: grub reads it from `grub.kernel_path`; it is loaded from memory."""

    content: str
    signed_by: Name


class BootChain(_Frozen):
    """What runs, in order: the firmware starts shim, shim starts grub, grub the kernel."""

    shim: LoaderImage
    grub: LoaderImage
    kernel: KernelImage


class Grub(_Frozen):
    """grub's measured work: its configuration file, the commands it runs, then `linux`
    and `initrd` with the kernel and initrd named here."""

    config_path: GrubPath
    config_content: str
    commands: tuple[str, ...] = ()
    kernel_path: GrubPath
    kernel_cmdline: str
    initrd_path: GrubPath
    initrd_content: str

    @field_validator("commands", "kernel_cmdline")
    @classmethod
    def _no_nul(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        texts = (value,) if isinstance(value, str) else value
        if any("\0" in text for text in texts):
            raise ValueError("grub strings cannot hold NUL: grub logs them NUL-terminated")
        return value


class BootDescription(_Frozen):
    """One boot, from power-on to ExitBootServices."""

    name: Name
    description: str
    banks: tuple[HashAlg, ...] = (HashAlg.SHA1, HashAlg.SHA256)
    startup_locality: Literal[0, 3] | None = None  # PFP 10.4.5.3; OVMF logs none
    firmware: Firmware
    certificates: tuple[Certificate, ...]
    secure_boot: SecureBoot
    shim: Shim
    disk: Disk = Disk()
    boot_options: tuple[BootOption, ...]
    boot_order: tuple[int, ...]
    boot_chain: BootChain
    grub: Grub
    exit_boot_services: bool = True

    @field_validator("banks", mode="before")
    @classmethod
    def _bank_names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(HashAlg.from_name(v) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("banks")
    @classmethod
    def _supported_banks(cls, banks: tuple[HashAlg, ...]) -> tuple[HashAlg, ...]:
        if not banks or len(set(banks)) != len(banks):
            raise ValueError("banks must be non-empty and name each bank once")
        for bank in banks:
            if bank not in SUPPORTED_BANKS:
                raise ValueError(f"bank {bank.bank_name} is not supported for fixtures")
        return banks

    @model_validator(mode="after")
    def _certificates_defined(self) -> Self:
        names = [certificate.name for certificate in self.certificates]
        if len(set(names)) != len(names):
            raise ValueError("certificates: a name is defined twice")
        for field, name in self._certificate_references():
            if name not in names:
                raise ValueError(f"{field}: certificate {name!r} is not in certificates")
        return self

    def _certificate_references(self) -> Iterator[tuple[str, str]]:
        for certificate in self.certificates:
            if certificate.issuer is not None:
                yield f"certificates[{certificate.name}].issuer", certificate.issuer
        for field in ("pk", "kek", "db"):
            for name in getattr(self.secure_boot, field):
                yield f"secure_boot.{field}", name
        yield "shim.vendor_cert", self.shim.vendor_cert
        for name in self.shim.mok_list:
            yield "shim.mok_list", name
        for role in ("shim", "grub", "kernel"):
            yield f"boot_chain.{role}.signed_by", getattr(self.boot_chain, role).signed_by

    @model_validator(mode="after")
    def _boot_order_consistent(self) -> Self:
        numbers = [option.number for option in self.boot_options]
        if len(set(numbers)) != len(numbers):
            raise ValueError("boot_options: an option number is used twice")
        if not self.boot_order or len(set(self.boot_order)) != len(self.boot_order):
            raise ValueError("boot_order must be non-empty and name each option once")
        for number in self.boot_order:
            if number not in numbers:
                raise ValueError(f"boot_order: Boot{number:04X} is not in boot_options")
        first = self.boot_options_by_number()[self.boot_order[0]]
        if first.path != self.boot_chain.shim.path:
            raise ValueError(
                f"the first boot option ({first.path}) must be shim ({self.boot_chain.shim.path})"
            )
        return self

    @model_validator(mode="after")
    def _signers_trusted(self) -> Self:
        # With Secure Boot on, an image whose signer is not trusted does not boot at all;
        # a description of such a boot would describe no boot.
        if not self.secure_boot.enabled:
            return self
        chain = self.boot_chain
        if chain.shim.signed_by not in self.secure_boot.db:
            raise ValueError(f"boot_chain.shim.signed_by {chain.shim.signed_by!r} is not in db")
        shim_trusts = (self.shim.vendor_cert, *self.shim.mok_list)
        for role, image in (("grub", chain.grub), ("kernel", chain.kernel)):
            if image.signed_by not in shim_trusts:
                raise ValueError(
                    f"boot_chain.{role}.signed_by {image.signed_by!r} is neither "
                    "shim.vendor_cert nor in shim.mok_list"
                )
        return self

    def boot_options_by_number(self) -> Mapping[int, BootOption]:
        return {option.number: option for option in self.boot_options}

    def certificate_issuers(self) -> Mapping[str, str | None]:
        return {certificate.name: certificate.issuer for certificate in self.certificates}


def load_boot(path: Path) -> BootDescription:
    """Read a boot description, resolving `extends` relative to the file's folder."""
    document = _resolve(Path(path), ())
    try:
        return BootDescription.model_validate(document)
    except ValueError as exc:  # pydantic's ValidationError, naming every bad field
        raise BootDescriptionError(f"{path}: {exc}") from None


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(p.name for p in (*chain, resolved))
        raise BootDescriptionError(f"{path}: extends itself ({cycle})")
    document = _read_yaml(path)
    base_name = document.pop("extends", None)
    if base_name is None:
        return document
    if not isinstance(base_name, str) or not base_name:
        raise BootDescriptionError(f"{path}: extends must name a description, e.g. good")
    base_path = path.parent / (base_name if base_name.endswith(".yaml") else f"{base_name}.yaml")
    base = _resolve(base_path, (*chain, resolved))
    return deep_merge(base, document)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BootDescriptionError(f"cannot read {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise BootDescriptionError(f"{path}: the top level must be a mapping")
    return loaded


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged

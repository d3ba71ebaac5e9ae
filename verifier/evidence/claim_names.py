"""Boot claims as named values: what golden values, deviations and policy compare.

`flatten` names each claim of `BootClaims` (`boot-chain.kernel`, `secure-boot.db`,
`kernel.cmdline`, ...) with a `ClaimValue`: text (a digest as `sha256:<hex>`, a path, a
command line), a bool, or a tuple of text.  A claim the log does not make is an absent
name, never a default.  Every family also has a closed, ordered claim of what was
measured (`boot-chain`, `kernel.commands`, `kernel.files`, `other-events`, ...), so
golden values judge every measured event.  Boot applications are also named by role
(`boot_chain_roles`, by their unmeasured path where it says, else by position): a
convenience for readable deviations; the ordered `boot-chain` is what vouches.  `claims_json` is the
named values as results store them; `claims_document` is every claim, structured, with
the named values beside it.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Final

from verifier.evidence.claim_types import FAMILY_PCRS, BootClaims, Component

ClaimValue = str | bool | tuple[str, ...]

#: Roles of the boot applications by position when paths do not say (shim, then grub,
#: then the kernel grub hands to shim's verifier).
_CHAIN_ROLES: Final = ("shim", "grub", "kernel")


def boot_chain_roles(chain: Sequence[Component]) -> list[tuple[str, Component]]:
    """Name each boot application: by its path where it says, else by position."""
    named: list[tuple[str, Component]] = []
    used: set[str] = set()
    for position, component in enumerate(chain):
        role = _role_from_path(component.description)
        if role is None or role in used:
            role = _CHAIN_ROLES[position] if position < len(_CHAIN_ROLES) else None
        if role is None or role in used:
            role = f"application-{position}"
        used.add(role)
        named.append((role, component))
    return named


def _role_from_path(path: str) -> str | None:
    lowered = path.lower()
    if "shim" in lowered:
        return "shim"
    if "grub" in lowered:
        return "grub"
    if "vmlinuz" in lowered or "linux" in lowered or "kernel" in lowered:
        return "kernel"
    return None


def flatten(claims: BootClaims) -> dict[str, ClaimValue]:
    """The claims as named values.  A family is named whenever a PCR it claims from is
    covered, empty if need be (closed: a node that adds an event to an empty family
    deviates); `other-events.pcrN` names, per covered PCR, every event without a claim
    of its own, so that an operator can stop judging one volatile PCR (Windows' PCR12
    boot counter) without losing the rest."""
    covered = set(claims.pcrs)

    def family(name: str) -> bool:
        return bool(covered & FAMILY_PCRS[name])

    values: dict[str, ClaimValue] = {}
    firmware = claims.firmware
    if family("firmware"):
        values["firmware.scrtm-version"] = firmware.scrtm_versions
        values["firmware.scrtm-contents"] = _digests(firmware.scrtm_contents)
        values["firmware.blobs"] = _digests(firmware.blobs)
    if family("handoff"):
        values["firmware.handoff-tables"] = _digests(firmware.handoff_tables)
    if family("drivers"):
        values["firmware.drivers"] = _digests(firmware.drivers)
    sb, shim = claims.secure_boot, claims.shim
    if family("secure-boot"):
        if sb.enabled is not None:
            values["secure-boot.enabled"] = sb.enabled
        for name, entries in (("pk", sb.pk), ("kek", sb.kek), ("db", sb.db), ("dbx", sb.dbx)):
            if name.upper() in sb.variables or name in sb.variables:
                values[f"secure-boot.{name}"] = tuple(e.fingerprint for e in entries)
        values["secure-boot.actions"] = sb.actions
        values["secure-boot.authorities"] = tuple(e.fingerprint for e in sb.authorities)
        values["shim.vendor-certificates"] = tuple(e.fingerprint for e in shim.vendor_certificates)
        values["shim.mok-authorities"] = tuple(e.fingerprint for e in shim.mok_authorities)
        values["shim.sbat-level"] = shim.sbat_levels
    if family("mok"):
        values["shim.mok-variables"] = _digests(shim.mok_variables)
    if family("boot-chain"):
        values["boot-chain"] = _digests(claims.boot_chain)
        for role, component in boot_chain_roles(claims.boot_chain):
            values[f"boot-chain.{role}"] = component.digest
    kernel = claims.kernel
    if family("commands"):
        values["kernel.commands"] = kernel.commands
        values["kernel.grub-settings"] = kernel.settings
        if kernel.path is not None:
            values["kernel.path"] = kernel.path
        if kernel.cmdline is not None:
            values["kernel.cmdline"] = kernel.cmdline
        if kernel.initrd is not None:
            values["kernel.initrd"] = kernel.initrd
    if family("files"):
        values["kernel.files"] = _digests(kernel.files)
    values["separators"] = claims.separators
    if family("exit-boot-services"):
        values["exit-boot-services"] = claims.exit_boot_services
    for pcr in sorted(covered):
        prefix = f"PCR{pcr} "
        values[f"other-events.pcr{pcr}"] = tuple(
            line.removeprefix(prefix) for line in claims.other_events if line.startswith(prefix)
        )
    return values


def _digests(components: Sequence[Component]) -> tuple[str, ...]:
    return tuple(c.digest for c in components)


def claims_json(claims: BootClaims) -> dict[str, object]:
    """The named values as JSON (lists for tuples): what results store and policy reads."""
    return {name: list(v) if isinstance(v, tuple) else v for name, v in flatten(claims).items()}


def claims_document(claims: BootClaims) -> dict[str, object]:
    """Every claim, structured, as JSON: what `attest eventlog claims --json` prints."""
    document = asdict(claims)
    document["findings"] = [f.describe() for f in claims.findings]
    document["named"] = claims_json(claims)
    return document

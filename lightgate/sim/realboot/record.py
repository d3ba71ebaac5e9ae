"""Record a real measured boot: build, boot, parse the guest's evidence, check, write.

A recording is a folder:

    eventlog.bin    the guest's /sys/kernel/security/tpm0/binary_bios_measurements
    pcrs.json       {"banks": {"sha256": {"0": "<hex>", ...}, ...}}, every PCR of every bank
    console.log     the guest's first serial port (OVMF, shim, grub, Linux)
    manifest.json   packages and .deb SHA-256s, boot binaries' SHA-256s, the kernel command
                    line, Secure Boot on/off, QEMU and swtpm versions and command lines,
                    timings, the replay check and how to record again

    python -m lightgate.sim.realboot.record --out DIR [--mode sb-on|sb-off] [--cache DIR]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from lightgate.sim.realboot import esp, initramfs, packages, qemu
from lightgate.sim.realboot.qemu import BootMode
from lightgate.sim.realboot.shim_cert import vendor_certificate_fingerprint
from lightgate.sim.realboot.uefi_vars import VariableStoreMalformed, secure_boot_keys
from verifier.evidence.pe import PeImageMalformed, authenticode_digest
from verifier.evidence.uefi_signatures import parse_signature_lists

BEGIN: Final = "LIGHTGATE-EVIDENCE BEGIN"
END: Final = "LIGHTGATE-EVIDENCE END"
MANIFEST_VERSION: Final = 1
#: PCRs 17-22 start at all-ones (dynamic root of trust), the rest at zero.
DRTM_PCRS: Final = range(17, 23)


class EvidenceError(Exception):
    """The guest's serial output is missing, truncated or inconsistent."""


@dataclass(frozen=True)
class Evidence:
    eventlog: bytes
    pcrs: dict[str, dict[int, str]]  # bank name -> PCR index -> lowercase hex
    uname: str = ""
    cmdline: str = ""

    def pcrs_json(self) -> dict[str, dict[str, dict[str, str]]]:
        return {
            "banks": {
                bank: {str(pcr): value for pcr, value in sorted(values.items())}
                for bank, values in sorted(self.pcrs.items())
            }
        }


@dataclass(frozen=True)
class ReplayCheck:
    """Replay of the event log against the PCRs the guest read, bank by bank."""

    matched: dict[str, list[int]] = field(default_factory=dict)
    mismatched: dict[str, list[int]] = field(default_factory=dict)
    #: PCRs away from their reset value that the UEFI log does not extend (IMA's PCR 10).
    unlogged: dict[str, list[int]] = field(default_factory=dict)
    #: Banks the TPM has that the log carries no digests for, or the reverse.
    missing_banks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.missing_banks and bool(self.matched)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "matched": self.matched,
            "mismatched": self.mismatched,
            "unlogged": self.unlogged,
            "missing_banks": self.missing_banks,
        }


def parse_evidence(raw: bytes) -> Evidence:
    """Parse the framed text `initramfs.INIT_SCRIPT` writes to the second serial port.

    Carriage returns (a tty's ONLCR) and anything outside the BEGIN/END frame are ignored.
    """
    lines = [line.strip() for line in raw.decode("ascii", errors="replace").splitlines()]
    try:
        start = lines.index(BEGIN)
        stop = lines.index(END, start)
    except ValueError:
        raise EvidenceError("no complete LIGHTGATE-EVIDENCE frame in the serial output") from None
    uname = cmdline = ""
    pcrs: dict[str, dict[int, str]] = {}
    eventlog: bytes | None = None
    body = lines[start + 1 : stop]
    index = 0
    while index < len(body):
        line = body[index]
        index += 1
        keyword, _, rest = line.partition(" ")
        if keyword == "UNAME":
            uname = rest
        elif keyword == "CMDLINE":
            cmdline = rest
        elif keyword == "EVENTLOG":
            eventlog, index = _read_eventlog(rest, body, index)
        elif keyword == "PCR":
            bank, pcr, value = _pcr_line(line)
            pcrs.setdefault(bank, {})[pcr] = value
        elif line:
            raise EvidenceError(f"unexpected line in the evidence: {line[:80]!r}")
    if eventlog is None:
        raise EvidenceError("the guest sent no event log (no binary_bios_measurements)")
    if not pcrs:
        raise EvidenceError("the guest sent no PCRs (no /sys/class/tpm/tpm0/pcr-*)")
    return Evidence(eventlog=eventlog, pcrs=pcrs, uname=uname, cmdline=cmdline)


def _read_eventlog(header: str, body: Sequence[str], index: int) -> tuple[bytes, int]:
    parts = header.split()
    if len(parts) != 3 or parts[0] != "BEGIN" or not _small_number(parts[1], 9):
        raise EvidenceError(f"bad EVENTLOG header: {header[:120]!r}")
    size, digest = int(parts[1]), parts[2].lower()
    chunks: list[str] = []
    while index < len(body) and body[index] != "EVENTLOG END":
        chunks.append(body[index])
        index += 1
    if index == len(body):
        raise EvidenceError("EVENTLOG BEGIN without EVENTLOG END")
    try:
        data = base64.b64decode("".join(chunks), validate=True)
    except binascii.Error as exc:
        raise EvidenceError(f"event log base64 is damaged: {exc}") from None
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise EvidenceError(
            f"event log arrived as {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()};"
            f" the guest sent {size} bytes, sha256 {digest}"
        )
    return data, index + 1


def _pcr_line(line: str) -> tuple[str, int, str]:
    parts = line.split()
    if len(parts) != 4 or not _small_number(parts[2], 2):
        raise EvidenceError(f"bad PCR line: {line[:120]!r}")
    value = parts[3].lower()
    try:
        bytes.fromhex(value)
    except ValueError:
        raise EvidenceError(f"bad PCR value: {line!r}") from None
    return parts[1].lower(), int(parts[2]), value


def _small_number(text: str, digits: int) -> bool:
    """Decimal digits only, at most `digits` of them (int() of hostile text stays cheap)."""
    return text.isascii() and text.isdigit() and len(text) <= digits


def reset_value(pcr: int, size: int) -> str:
    return ("ff" if pcr in DRTM_PCRS else "00") * size


def check_replay(evidence: Evidence) -> ReplayCheck:
    """Replay the log with the project's parser and compare with every bank's PCRs."""
    from verifier.evidence.errors import EventLogMalformed
    from verifier.evidence.eventlog import parse_event_log, replay

    try:
        replayed = {
            bank.bank_name: values
            for bank, values in replay(parse_event_log(evidence.eventlog)).pcrs.items()
        }
    except EventLogMalformed as exc:
        raise EvidenceError(f"the guest's event log does not parse: {exc.reason}") from None
    check = ReplayCheck()
    for bank in sorted(set(replayed) ^ set(evidence.pcrs)):
        check.missing_banks.append(bank)
    for bank in sorted(set(replayed) & set(evidence.pcrs)):
        logged: Mapping[int, bytes] = replayed[bank]
        for pcr, value in sorted(evidence.pcrs[bank].items()):
            if pcr in logged:
                target = check.matched if logged[pcr].hex() == value else check.mismatched
                target.setdefault(bank, []).append(pcr)
            elif value != reset_value(pcr, len(value) // 2):
                check.unlogged.setdefault(bank, []).append(pcr)
    return check


def _replace_all(text: str, places: Sequence[tuple[str, str]]) -> str:
    for old, new in places:
        text = text.replace(old, new)
    return text


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(
    mode: BootMode,
    out_dir: Path,
    cache_dir: Path = packages.DEFAULT_CACHE,
    *,
    timeout: float = qemu.DEFAULT_TIMEOUT,
    kernel: Path | None = None,
) -> dict[str, Any]:
    """Build, boot once under `mode`, check and write a recording into `out_dir`.

    Returns the manifest.  Raises EvidenceError if the guest's evidence is incomplete or
    the log does not replay to the PCRs of every bank (the files are written first).
    `kernel` boots another kernel image than the package's (e.g. a modified one).
    """
    mode = BootMode(mode)
    timings: dict[str, float] = {}
    started = time.monotonic()
    files = packages.fetch(cache_dir)
    if kernel is not None:
        files = dataclasses.replace(files, kernel=kernel)
    timings["fetch_seconds"] = round(time.monotonic() - started, 3)
    with tempfile.TemporaryDirectory(prefix=f"realboot-{mode}-") as scratch:
        work = Path(scratch)
        started = time.monotonic()
        initrd = initramfs.build_initramfs(files.busybox.read_bytes())
        initrd_path = work / "initrd.img"
        initrd_path.write_bytes(initrd)
        esp_image = work / "esp.img"
        esp.build_esp(
            esp_image, shim=files.shim, grub=files.grub, kernel=files.kernel, initrd=initrd_path
        )
        timings["build_seconds"] = round(time.monotonic() - started, 3)
        result = qemu.boot(mode, files, esp_image, work / "run", timeout=timeout)
        timings["boot_seconds"] = round(result.seconds, 3)
        places = ((scratch, "$WORK"), (str(cache_dir), "$CACHE"))
        qemu_argv = [_replace_all(arg, places) for arg in result.qemu_argv]
        swtpm_argv = [_replace_all(arg, places) for arg in result.swtpm_argv]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "console.log").write_bytes(result.console)
    (out_dir / "evidence.log").write_bytes(result.evidence)
    evidence = parse_evidence(result.evidence)
    (out_dir / "eventlog.bin").write_bytes(evidence.eventlog)
    (out_dir / "pcrs.json").write_text(json.dumps(evidence.pcrs_json(), indent=2) + "\n")
    check = check_replay(evidence)
    binaries = {name: packages.sha256_file(path) for name, path in files.binaries().items()}
    binaries["initrd.img"] = _sha256(initrd)
    binaries["grub.cfg"] = _sha256(esp.GRUB_CFG.encode())
    code, vars_template = qemu.firmware_for(mode, files)
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "mode": str(mode),
        "secure_boot": mode is BootMode.SB_ON,
        "firmware": {"code": code.name, "vars": vars_template.name},
        "kernel_cmdline": esp.KERNEL_CMDLINE,
        "guest_cmdline": evidence.cmdline,
        "guest_kernel": evidence.uname,
        "grub_cfg": esp.GRUB_CFG,
        "esp_layout": {
            "/EFI/BOOT/BOOTX64.EFI": "shimx64.efi.signed",
            "/EFI/BOOT/grubx64.efi": "grubx64.efi.signed",
            esp.GRUB_CFG_PATH: "grub.cfg",
            esp.KERNEL_PATH: files.kernel.name,
            esp.INITRD_PATH: "initrd.img",
        },
        "packages": [package.manifest() for package in files.packages],
        "binaries_sha256": binaries,
        "eventlog_sha256": _sha256(evidence.eventlog),
        "oracles": oracles(files, vars_template),
        "tools": qemu.tool_versions(),
        "qemu_argv": qemu_argv,
        "swtpm_argv": swtpm_argv,
        "machine": {"accel": "tcg", "machine": "q35,smm=on", "memory_mb": qemu.MEMORY_MB},
        "timings": timings,
        "replay": check.to_json(),
        "rerecord": (
            f"python -m lightgate.sim.realboot.record --mode {mode} --out <DIR>"
            " [--cache DIR]  (default: the repository's .cache/realboot;"
            " a Debian 12 host with qemu-system-x86, swtpm, mtools;"
            " a cache holding the .debs above reproduces the same binaries)"
        ),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if not check.ok:
        raise EvidenceError(f"{mode}: replay does not match the TPM: {check.to_json()}")
    return manifest


def oracles(files: packages.BootFiles, vars_template: Path) -> dict[str, Any]:
    """What the boot's claims must show, computed from the files themselves: the
    Authenticode digest of each boot binary (what firmware and shim measure), the Secure
    Boot keys the firmware's variable store holds, and the certificate shim trusts."""
    keys = secure_boot_keys(vars_template.read_bytes())
    shim = files.shim.read_bytes()
    return {
        "authenticode_sha256": {
            "shim": authenticode_digest(shim).hex(),
            "grub": authenticode_digest(files.grub.read_bytes()).hex(),
            "kernel": authenticode_digest(files.kernel.read_bytes()).hex(),
        },
        "secure_boot_keys_sha256": {
            name: [entry.fingerprint_sha256 for entry in parse_signature_lists(data)]
            for name, data in keys.items()
        },
        "shim_vendor_certificate_sha256": vendor_certificate_fingerprint(shim),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightgate.sim.realboot.record",
        description="Record real measured boots under QEMU + swtpm (OVMF, shim, grub, Linux).",
    )
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/<mode>/")
    parser.add_argument("--mode", choices=[m.value for m in BootMode], action="append")
    parser.add_argument("--cache", type=Path, default=packages.DEFAULT_CACHE)
    parser.add_argument("--timeout", type=float, default=qemu.DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    status = 0
    for mode in args.mode or [m.value for m in BootMode]:
        try:
            manifest = record(BootMode(mode), args.out / mode, args.cache, timeout=args.timeout)
        except (
            EvidenceError,
            qemu.BootError,
            packages.PackageError,
            esp.EspError,
            PeImageMalformed,
            VariableStoreMalformed,
        ) as exc:
            print(f"{mode}: FAILED: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{mode}: {args.out / mode}  {json.dumps(manifest['timings'])}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""One boot: swtpm as the TPM, qemu-system-x86_64 (q35, TCG) running OVMF from the ESP.

swtpm runs as QEMU's TPM emulator backend (QEMU's docs/specs/tpm.rst) with a fresh,
unmanufactured TPM 2.0 state; OVMF sends TPM2_Startup itself.  swtpm's state goes away
with QEMU, so the guest reads its own PCRs and sends them out on the second serial port.

Secure Boot on: OVMF_CODE_4M.secboot.fd (needs SMM and a secure pflash) with a copy of
OVMF_VARS_4M.ms.fd (Microsoft's keys enrolled, Secure Boot enabled).  Off: the plain
OVMF_CODE_4M.fd with a copy of OVMF_VARS_4M.fd (no keys).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from lightgate.sim.realboot.packages import BootFiles

QEMU: Final = "qemu-system-x86_64"
SWTPM: Final = "swtpm"
DEFAULT_TIMEOUT: Final = 600.0
MEMORY_MB: Final = 1024
#: Every boot, recorded or a full guest, has the same machine: the ESP disk, an NVMe
#: disk (blank when recording, the root file system in a full guest) and a virtio NIC
#: with a fixed MAC and no option ROM.  OVMF makes boot options of all three (PCR 1), so
#: golden values learned from a recording hold for the full guest.
MAC: Final = "52:54:00:4c:47:01"
ROOT_SERIAL: Final = "lightgate-root"
#: Where a full guest finds the verifier: QEMU's user network forwards it to the host.
GUEST_VERIFIER: Final = ("10.0.2.100", 50051)
BLANK_ROOT_BYTES: Final = 1 << 20


class BootMode(StrEnum):
    SB_ON = "sb-on"
    SB_OFF = "sb-off"


class BootError(Exception):
    """QEMU or swtpm failed, or the boot timed out; the message says which."""


@dataclass(frozen=True)
class BootResult:
    mode: BootMode
    console: bytes
    evidence: bytes
    seconds: float
    qemu_argv: tuple[str, ...]
    swtpm_argv: tuple[str, ...]
    returncode: int


def require_tools() -> None:
    missing = [tool for tool in (QEMU, SWTPM, "socat") if shutil.which(tool) is None]
    if missing:
        raise BootError(
            f"{', '.join(missing)} not found: apt-get install qemu-system-x86 swtpm socat"
        )


def tool_versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (result.stdout or result.stderr).splitlines()[0].strip()

    return {"qemu": first_line([QEMU, "--version"]), "swtpm": first_line([SWTPM, "--version"])}


def firmware_for(mode: BootMode, files: BootFiles) -> tuple[Path, Path]:
    """(code, vars template) for the mode."""
    if mode is BootMode.SB_ON:
        return files.ovmf_code_secboot, files.ovmf_vars_ms
    return files.ovmf_code, files.ovmf_vars


def swtpm_argv(state: Path, socket_path: Path, log: Path) -> list[str]:
    return [
        SWTPM,
        "socket",
        "--tpm2",
        "--tpmstate",
        f"dir={state}",
        "--ctrl",
        f"type=unixio,path={socket_path}",
        "--log",
        f"file={log},level=1",
        "--terminate",
    ]


def qemu_argv(
    *,
    code: Path,
    vars_copy: Path,
    esp: Path,
    tpm_socket: Path,
    console_log: Path,
    evidence_log: Path,
    root_disk: Path,
    verifier_port: int | None = None,
) -> list[str]:
    """The machine (see MAC).  The root disk is opened copy-on-write (`snapshot=on`), so
    many guests share one image; with `verifier_port`, the guest's GUEST_VERIFIER address
    is forwarded to that port on the host's loopback."""
    for path in (code, vars_copy, esp, tpm_socket, console_log, evidence_log, root_disk):
        if "," in str(path):  # QEMU would read the rest as further options
            raise BootError(f"{path}: QEMU option paths cannot hold a comma")
    netdev = "user,id=n0,restrict=on"
    if verifier_port is not None:
        host, port = GUEST_VERIFIER
        # `cmd:` runs socat for each connection the guest opens; a `tcp:` chardev would
        # be one connection, opened when QEMU starts, that the verifier closes unused.
        netdev += f",guestfwd=tcp:{host}:{port}-cmd:socat - TCP:127.0.0.1:{verifier_port}"
    return [
        QEMU,
        "-machine",
        "q35,smm=on",
        "-accel",
        "tcg",
        "-m",
        str(MEMORY_MB),
        "-smp",
        "1",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-chardev",
        f"socket,id=chrtpm,path={tpm_socket}",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-tis,tpmdev=tpm0",
        "-drive",
        f"if=none,id=esp,format=raw,file={esp}",
        "-device",
        "virtio-blk-pci,drive=esp,bootindex=0",
        "-drive",
        f"if=none,id=root,format=raw,snapshot=on,file={root_disk}",
        "-device",
        f"nvme,drive=root,serial={ROOT_SERIAL}",
        "-netdev",
        netdev,
        "-device",
        f"virtio-net-pci,netdev=n0,mac={MAC},romfile=",
        "-serial",
        f"file:{console_log}",
        "-serial",
        f"file:{evidence_log}",
        "-display",
        "none",
        "-monitor",
        "none",
        "-parallel",
        "none",
        "-no-reboot",
    ]


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise BootError(f"swtpm exited with {process.returncode} before making {path}")
        if time.monotonic() > deadline:
            raise BootError(f"swtpm did not make {path} within {timeout} s")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def boot(
    mode: BootMode,
    files: BootFiles,
    esp: Path,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> BootResult:
    """Boot the ESP once under `mode`; return both serial ports' output and the time taken.

    `workdir` gets the vars copy, the swtpm state and logs; it is emptied first.
    """
    require_tools()
    if workdir.exists():
        shutil.rmtree(workdir)
    state = workdir / "tpm"
    state.mkdir(parents=True)
    code, vars_template = firmware_for(mode, files)
    vars_copy = workdir / "OVMF_VARS.fd"
    shutil.copyfile(vars_template, vars_copy)
    tpm_socket = workdir / "swtpm.sock"
    console_log = workdir / "console.log"
    evidence_log = workdir / "evidence.log"
    tpm_argv = swtpm_argv(state, tpm_socket, workdir / "swtpm.log")
    blank_root = workdir / "root.img"  # no file system: /init records and powers off
    with blank_root.open("wb") as disk:
        disk.truncate(BLANK_ROOT_BYTES)
    vm_argv = qemu_argv(
        code=code,
        vars_copy=vars_copy,
        esp=esp,
        tpm_socket=tpm_socket,
        console_log=console_log,
        evidence_log=evidence_log,
        root_disk=blank_root,
    )
    swtpm = subprocess.Popen(tpm_argv, stdin=subprocess.DEVNULL)
    try:
        wait_for_socket(tpm_socket, swtpm, 10.0)
        started = time.monotonic()
        qemu_out = workdir / "qemu.stderr"
        with qemu_out.open("wb") as stderr:
            vm = subprocess.Popen(vm_argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
            try:
                returncode = vm.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise BootError(
                    f"{mode} boot did not power off within {timeout} s; see {console_log}"
                ) from None
            finally:
                stop(vm)  # on a timeout, an error or Ctrl-C alike
        seconds = time.monotonic() - started
    finally:
        stop(swtpm)
    if returncode != 0:
        raise BootError(f"QEMU exited with {returncode}: {qemu_out.read_text(errors='replace')}")
    return BootResult(
        mode=mode,
        console=console_log.read_bytes() if console_log.exists() else b"",
        evidence=evidence_log.read_bytes() if evidence_log.exists() else b"",
        seconds=seconds,
        qemu_argv=tuple(vm_argv),
        swtpm_argv=tuple(tpm_argv),
        returncode=returncode,
    )

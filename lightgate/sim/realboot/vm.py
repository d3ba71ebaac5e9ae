"""Full guests (`attest sim run --vm N`): real x86 machines under QEMU, each with its own
manufactured swtpm, that boot Debian's OVMF, shim, grub and kernel with Secure Boot on,
switch to a Debian root file system, and run the Lightgate agent as the systemd service
of deploy/systemd/.  The agent enrolls over QEMU's user network with a verifier on the
host (loopback only: QEMU forwards the guest's GUEST_VERIFIER address to it), which
appraises each guest against golden values learned from the recorded boot.

Scenarios:
- `vm-good`: the recorded boot chain: affirming.
- `vm-changed-cmdline`: grub gives the kernel another command line: refused, naming
  `kernel.cmdline`.

Build steps are cached (`rootfs`); a second run only boots.  Each guest's verdict is the
first result the verifier stores for it; the time from starting QEMU to that result is
reported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lightgate.config import (
    AdminConfig,
    EnrollmentConfig,
    ResultsConfig,
    VerifierConfig,
)
from lightgate.sim.boot import import_golden
from lightgate.sim.firmware import FIXTURES_DIR
from lightgate.sim.fleet import run_folder
from lightgate.sim.realboot import esp, initramfs, packages, qemu, rootfs
from lightgate.sim.realboot.qemu import BootMode
from lightgate.sim.realboot.record import record
from lightgate.sim.swtpm import SimulatorCA, provision
from verifier.evidence.claims import extract_claims
from verifier.evidence.eventlog import parse_event_log
from verifier.golden.values import GoldenValues, learn
from verifier.server import RunningVerifier, start_verifier

RECORDED: Final = FIXTURES_DIR / "recorded" / "sb-on"
TPM_BANKS: Final = ("sha1", "sha256", "sha384", "sha512")  # as the recorded swtpm had
DEFAULT_TIMEOUT: Final = 900.0


@dataclass(frozen=True)
class VmScenario:
    name: str
    description: str
    expect: str | None  # the check that must refuse it; None: affirming
    detail: str | None
    cmdline: str


VM_SCENARIOS: Final = {
    s.name: s
    for s in (
        VmScenario(
            "vm-good", "boots the recorded chain and runs the agent", None, None, esp.KERNEL_CMDLINE
        ),
        VmScenario(
            "vm-changed-cmdline",
            "grub gives the kernel another command line",
            "golden-values",
            "kernel.cmdline",
            f"{esp.KERNEL_CMDLINE} lightgate.changed=1",
        ),
    )
}


@dataclass(frozen=True)
class GuestVerdict:
    node: str
    scenario: str
    status: str  # the first stored result's status, or "none" (no result in time)
    reason: str | None
    failed_checks: tuple[str, ...]
    expected: str
    as_expected: bool
    boot_to_verdict_seconds: float | None
    console_tail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "scenario": self.scenario,
            "status": self.status,
            "failed_checks": list(self.failed_checks),
            "reason": self.reason,
            "expected": self.expected,
            "as_expected": self.as_expected,
            "boot_to_verdict_seconds": self.boot_to_verdict_seconds,
        }


class GuestError(Exception):
    """A guest could not be built or started; says why."""


def missing_prerequisites() -> str | None:
    missing = [
        t for t in (qemu.QEMU, qemu.SWTPM, "mformat", "swtpm_setup") if shutil.which(t) is None
    ]
    if missing:
        return f"not installed: {', '.join(missing)} (make setup installs them)"
    return rootfs.missing_prerequisites()


def check_plan(plan: list[str]) -> None:
    unknown = [name for name in plan if name not in VM_SCENARIOS]
    if unknown:
        raise ValueError(
            f"unknown VM scenario(s): {', '.join(unknown)}; known: {', '.join(VM_SCENARIOS)}"
        )


def golden_for(
    files: packages.BootFiles, workdir: Path, note: Callable[[str], None]
) -> GoldenValues:
    """Golden values learned from the recorded Secure Boot boot, or, when the downloaded
    packages are not the recording's (Debian moved on), from a boot recorded now."""
    manifest = json.loads((RECORDED / "manifest.json").read_text())
    folder = RECORDED
    if manifest["packages"] != [p.manifest() for p in files.packages]:
        note("the packages differ from the recording's: recording a boot to learn from")
        folder = workdir / "recorded-sb-on"
        record(BootMode.SB_ON, folder)
    raw = (folder / "eventlog.bin").read_bytes()
    provenance = {"source": f"recorded boot {folder}", "tool": "lightgate.sim.realboot.vm"}
    return learn([extract_claims(parse_event_log(raw))], "recorded-sb-on", provenance)


def _verifier_config(root: Path) -> VerifierConfig:
    return VerifierConfig(
        listen="127.0.0.1:0",
        state_dir=root / "verifier",
        enrollment=EnrollmentConfig(mode="ek-chain", trust_store=root / "trust"),
        admin=AdminConfig(listen="127.0.0.1:0"),
        results=ResultsConfig(https_listen="127.0.0.1:0"),
    )


def run_guests(
    plan: list[str],
    *,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    parallel: int = 1,
) -> list[GuestVerdict]:
    """Boot one guest per entry of `plan` (VM scenario names), `parallel` at a time (one
    by default: a TCG guest needs a core to itself); return each guest's verdict."""
    check_plan(plan)
    why = missing_prerequisites()
    if why is not None:
        raise GuestError(why)
    note = progress or (lambda _message: None)
    with run_folder(workdir, prefix="lightgate-vm-") as root, contextlib.ExitStack() as stack:
        files = packages.fetch()
        started = time.monotonic()
        image = rootfs.agent_image(files)
        note(f"guest root file system {image.name} ready in {time.monotonic() - started:.0f} s")
        initrd = root / "initrd.img"
        initrd.write_bytes(initramfs.build_initramfs(files.busybox.read_bytes()))
        # What the verifier decides about each guest, kept with the run's files.
        handler = logging.FileHandler(root / "verifier.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        verifier_log = logging.getLogger("lightgate")
        verifier_log.addHandler(handler)
        verifier_log.setLevel(logging.INFO)
        stack.callback(verifier_log.removeHandler, handler)
        stack.callback(handler.close)
        ca = SimulatorCA(root / "ca")
        nodes = [f"vm-{i:02d}" for i in range(len(plan))]
        for node in nodes:  # manufactured: an EK certificate from the simulator's CA
            provision(root / "guests" / node / "tpm", ca, banks=TPM_BANKS)
        ca.export_trust(root / "trust")
        verifier = stack.enter_context(start_verifier(_verifier_config(root)))
        golden = golden_for(files, root, note)
        import_golden(verifier.store, golden)
        verifier.verifier.references.refresh()
        note(f"verifier on 127.0.0.1:{verifier.port}; golden values {golden.name!r}")
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="guest") as pool:
            futures = [
                pool.submit(
                    _run_guest,
                    VM_SCENARIOS[name],
                    node,
                    files,
                    image,
                    initrd,
                    ca,
                    verifier,
                    root,
                    timeout,
                    note,
                )
                for name, node in zip(plan, nodes, strict=True)
            ]
            return [future.result() for future in futures]


def _run_guest(
    scenario: VmScenario,
    node: str,
    files: packages.BootFiles,
    image: Path,
    initrd: Path,
    ca: SimulatorCA,
    verifier: RunningVerifier,
    root: Path,
    timeout: float,
    note: Callable[[str], None],
) -> GuestVerdict:
    folder = root / "guests" / node
    grub_cfg = esp.GRUB_CFG.replace(esp.KERNEL_CMDLINE, scenario.cmdline)
    disk = folder / "esp.img"
    esp.build_esp(
        disk,
        shim=files.shim,
        grub=files.grub,
        kernel=files.kernel,
        initrd=initrd,
        grub_cfg=grub_cfg,
    )
    root_disk = rootfs.guest_image(image, node, folder)
    state = folder / "tpm"
    code, vars_template = qemu.firmware_for(BootMode.SB_ON, files)
    vars_copy = folder / "OVMF_VARS.fd"
    shutil.copyfile(vars_template, vars_copy)
    tpm_socket, console = folder / "swtpm.sock", folder / "console.log"
    tpm = subprocess.Popen(
        qemu.swtpm_argv(state, tpm_socket, folder / "swtpm.log"), stdin=subprocess.DEVNULL
    )
    vm: subprocess.Popen[bytes] | None = None
    try:
        qemu.wait_for_socket(tpm_socket, tpm, 10.0)
        argv = qemu.qemu_argv(
            code=code,
            vars_copy=vars_copy,
            esp=disk,
            tpm_socket=tpm_socket,
            console_log=console,
            evidence_log=folder / "ttyS1.log",
            root_disk=root_disk,
            verifier_port=verifier.port,
        )
        note(f"{node}: booting ({scenario.name})")
        booted = time.monotonic()
        with (folder / "qemu.stderr").open("wb") as stderr:
            vm = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        result = _first_result(verifier, node, vm, booted + timeout)
        seconds = round(time.monotonic() - booted, 1)
    finally:
        for process in (vm, tpm):
            if process is not None:
                qemu.stop(process)
    tail = (
        "\n".join(console.read_text(errors="replace").splitlines()[-25:])
        if console.exists()
        else ""
    )
    if result is None:
        note(f"{node}: no result within {timeout:.0f} s")
        return _verdict(
            scenario, node, "none", f"no attestation within {timeout:.0f} s", (), None, tail
        )
    status, reason, checks = result
    note(f"{node}: {status} after {seconds} s")
    return _verdict(scenario, node, status, reason, checks, seconds, tail)


def _verdict(
    scenario: VmScenario,
    node: str,
    status: str,
    reason: str | None,
    checks: tuple[str, ...],
    seconds: float | None,
    tail: str,
) -> GuestVerdict:
    if scenario.expect is None:
        expected = status == "affirming"
    else:
        expected = (
            status != "affirming"
            and scenario.expect in checks
            and (scenario.detail is None or scenario.detail in (reason or ""))
        )
    return GuestVerdict(
        node,
        scenario.name,
        status,
        reason,
        checks,
        scenario.expect or "affirming",
        expected,
        seconds,
        tail,
    )


def _first_result(
    verifier: RunningVerifier, node: str, vm: subprocess.Popen[bytes], deadline: float
) -> tuple[str, str | None, tuple[str, ...]] | None:
    while time.monotonic() < deadline:
        results = verifier.store.results_for(node, limit=1)
        if results:
            newest = results[0]
            return newest.status, newest.reason, newest.failed_checks
        if vm.poll() is not None:
            return None
        time.sleep(1.0)
    return None

"""Software TPMs for the simulator and the tests: swtpm processes with real EK certificates.

Each simulator CA lives in a folder of its own (not swtpm's system-wide
/var/lib/swtpm-localca, which every run on the machine would share): `swtpm_setup`
is pointed at it through a private swtpm_setup.conf and swtpm-localca.conf, so the
EK certificates it writes into the TPM's NV chain to a root that only this run trusts.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SWTPM = "swtpm"
SWTPM_SETUP = "swtpm_setup"
SWTPM_LOCALCA = "/usr/bin/swtpm_localca"
_PR_SET_PDEATHSIG = 1


class SimulatorError(Exception):
    """swtpm could not be provisioned or started; the message has its output."""


def require_tools() -> None:
    missing = [tool for tool in (SWTPM, SWTPM_SETUP) if shutil.which(tool) is None]
    if missing:
        raise SimulatorError(
            f"{', '.join(missing)} not found: run `make setup` (apt swtpm swtpm-tools)"
        )


@dataclass(frozen=True)
class SimulatorCA:
    """A private swtpm_localca CA: root and issuer certificates created on first use."""

    directory: Path

    @property
    def root_certificate(self) -> Path:
        return self.directory / "swtpm-localca-rootca-cert.pem"

    @property
    def issuer_certificate(self) -> Path:
        return self.directory / "issuercert.pem"

    def setup_config(self, banks: tuple[str, ...]) -> Path:
        """Write the swtpm_setup.conf and swtpm-localca.conf that point at this CA."""
        self.directory.mkdir(parents=True, exist_ok=True)
        localca = self.directory / "swtpm-localca.conf"
        _write_atomic(
            localca,
            f"statedir = {self.directory}\n"
            f"signingkey = {self.directory / 'signkey.pem'}\n"
            f"issuercert = {self.issuer_certificate}\n"
            f"certserial = {self.directory / 'certserial'}\n",
        )
        options = self.directory / "swtpm-localca.options"
        _write_atomic(
            options,
            "--platform-manufacturer Lightgate\n--platform-version 2.1\n--platform-model sim\n",
        )
        setup = self.directory / f"swtpm_setup-{'_'.join(banks)}.conf"
        _write_atomic(
            setup,
            f"create_certs_tool = {SWTPM_LOCALCA}\n"
            f"create_certs_tool_config = {localca}\n"
            f"create_certs_tool_options = {options}\n"
            f"active_pcr_banks = {','.join(banks)}\n",
        )
        return setup

    def export_trust(self, trust_store: Path) -> None:
        """Copy this CA's root and issuer certificates into a verifier trust store."""
        trust_store.mkdir(parents=True, exist_ok=True)
        name = self.directory.name
        shutil.copy(self.root_certificate, trust_store / f"{name}-root.pem")
        shutil.copy(self.issuer_certificate, trust_store / f"{name}-issuer.pem")


def _write_atomic(path: Path, text: str) -> None:
    """Provisioning runs in parallel and rewrites the CA's configuration: a reader must
    see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def provision(
    state_dir: Path, ca: SimulatorCA, banks: tuple[str, ...] = ("sha1", "sha256")
) -> None:
    """Manufacture a TPM: EK (RSA-2048 and ECC), EK certificates in NV, PCR banks."""
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [
        SWTPM_SETUP,
        "--tpm2",
        "--tpmstate",
        str(state_dir),
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--overwrite",
        "--config",
        str(ca.setup_config(banks)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SimulatorError(
            f"swtpm_setup failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )


def _free_port_pair() -> int:
    """A port P such that P and P+1 are free on 127.0.0.1 now (swtpm's server and ctrl)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise SimulatorError("no free pair of loopback ports")


# Looked up here, not in the child: dlopen after fork() in a threaded process can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM the swtpm if the simulator dies without cleaning up."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Swtpm:
    """A running swtpm serving the TPM command protocol on 127.0.0.1:port."""

    state_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self, attempts: int = 5) -> Swtpm:
        last_error = ""
        for _ in range(attempts):
            self.port = _free_port_pair()
            command = [
                SWTPM,
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={self.state_dir}",
                "--server",
                f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
            ]
            log_path = self.state_dir / "swtpm.log"
            with log_path.open("ab") as log_file:
                self.process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,  # Ctrl-C reaches the simulator, which stops us
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
                )
            if self._wait_ready():
                return self
            last_error = self._stop_and_read_error()
        raise SimulatorError(f"swtpm did not start in {self.state_dir}: {last_error}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _stop_and_read_error(self) -> str:
        self.stop()
        log_path = self.state_dir / "swtpm.log"
        return log_path.read_text(errors="replace").strip()[-500:] if log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> Swtpm:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

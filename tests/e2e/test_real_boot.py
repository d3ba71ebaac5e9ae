"""A real x86 boot in the loop: Debian 12's OVMF, shim, grub and cloud kernel booted under
QEMU (TCG) with swtpm, recorded now, and judged by golden values learned from the
committed recordings (firmware-fixtures/recorded/).

Skipped, saying why, only when QEMU cannot run here.  The Debian packages are downloaded
into .cache/realboot on first use (about 25 MB), not installed.  When Debian has moved
on since the committed recording (a newer kernel, say), the golden values are learned
from a second boot of this run instead, so the test stays about the verifier.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lightgate.sim.boot import FIXTURES_DIR
from lightgate.sim.realboot import packages
from lightgate.sim.realboot.qemu import BootMode
from lightgate.sim.realboot.record import record
from verifier.appraisal import BootAppraiser
from verifier.evidence.claims import extract_claims
from verifier.evidence.eventlog import parse_event_log
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.pe import authenticode_digest
from verifier.golden.values import GoldenValues, learn

RECORDED = FIXTURES_DIR / "recorded"
TOOLS = ("qemu-system-x86_64", "swtpm", "mformat", "mcopy", "apt-get", "dpkg-deb")


def _why_qemu_cannot_run() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (make setup installs them)"
    done = subprocess.run(
        ["qemu-system-x86_64", "-machine", "help"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or "q35" not in done.stdout:
        return f"qemu-system-x86_64 cannot emulate a q35 machine here: {done.stderr.strip()}"
    return None


REASON = _why_qemu_cannot_run()
if REASON is not None:
    print(f"real-boot tests skipped: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def quoted(out: Path) -> PcrValues:
    return PcrValues.from_json(json.loads((out / "pcrs.json").read_text())["banks"])


def golden_of(folder: Path, name: str) -> GoldenValues:
    raw = (folder / "eventlog.bin").read_bytes()
    return learn([extract_claims(parse_event_log(raw))], name)


def same_packages(fresh: dict[str, Any], committed: Path) -> bool:
    before = json.loads((committed / "manifest.json").read_text())["packages"]
    return bool(before == fresh["packages"])


def test_a_re_recorded_secure_boot_matches_golden_values_of_the_recording(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "sb-on"
    manifest = record(BootMode.SB_ON, fresh)
    boot = BootAppraiser().appraise("vm", (fresh / "eventlog.bin").read_bytes(), quoted(fresh), [])
    assert boot.integrity_failures == ()  # replay equals what the guest read, every bank
    # The boot chain is the Authenticode digests of what was booted, from the files.
    files = packages.fetch()
    assert boot.claims is not None
    chain = [claim.digest for claim in boot.claims.boot_chain]
    expected = [authenticode_digest(p.read_bytes()).hex() for p in (files.shim, files.grub)]
    assert [d.removeprefix("sha256:") for d in chain[:2]] == expected

    if same_packages(manifest, RECORDED / "sb-on"):
        golden = golden_of(RECORDED / "sb-on", "recorded-sb-on")
    else:  # Debian moved on: learn from this boot, judge a second one
        golden = golden_of(fresh, "this-run-sb-on")
        fresh = tmp_path / "sb-on-again"
        record(BootMode.SB_ON, fresh)
    again = BootAppraiser().appraise(
        "vm", (fresh / "eventlog.bin").read_bytes(), quoted(fresh), [golden]
    )
    assert again.failures == (), [f.reason for f in again.failures]
    assert again.golden == golden.name


def test_a_different_kernel_is_refused_naming_only_the_kernel(tmp_path: Path) -> None:
    files = packages.fetch()
    other = tmp_path / "vmlinuz-other"
    # Another kernel build: the same image with data after it (still boots; every
    # measurement of it changes).
    other.write_bytes(files.kernel.read_bytes() + b"\0" * 4096)
    refused_dir = tmp_path / "other-kernel"
    manifest = record(BootMode.SB_OFF, refused_dir, kernel=other)
    if same_packages(manifest, RECORDED / "sb-off"):
        golden = golden_of(RECORDED / "sb-off", "recorded-sb-off")
    else:
        record(BootMode.SB_OFF, tmp_path / "sb-off")
        golden = golden_of(tmp_path / "sb-off", "this-run-sb-off")

    boot = BootAppraiser().appraise(
        "vm", (refused_dir / "eventlog.bin").read_bytes(), quoted(refused_dir), [golden]
    )

    assert boot.integrity_failures == ()  # genuine evidence of an unwanted boot
    assert boot.golden is None
    assert boot.outcome is not None
    (deviation,) = boot.outcome.deviations
    assert deviation.claim == "kernel.files"
    new = hashlib.sha256(other.read_bytes()).hexdigest()
    old = hashlib.sha256(files.kernel.read_bytes()).hexdigest()
    assert deviation.describe() == f"kernel.files: missing sha256:{old}; unexpected sha256:{new}"

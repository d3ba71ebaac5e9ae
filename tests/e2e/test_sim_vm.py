"""`attest sim run --vm 2 --json` as a user runs it: two full guests under QEMU boot
Debian's signed chain with Secure Boot, switch to a Debian root file system and run the
Lightgate agent as the systemd service of deploy/systemd/, which enrolls with the
verifier on the host over QEMU's user network.  The guest that boots the recorded chain
is affirming; the one whose grub changes the kernel command line is refused, naming it.

About two and a half minutes (each guest boots in software emulation, one at a time),
plus a minute for debootstrap the first time (cached in .cache/realboot).  Skipped,
saying why, when QEMU, debootstrap or root is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lightgate.sim.realboot.vm import missing_prerequisites

REASON = missing_prerequisites()
if REASON is not None:
    print(f"full-guest test skipped: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def test_full_guests_run_the_agent_as_a_service_and_are_judged_by_their_boot() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lightgate", "sim", "run", "--vm", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert "Traceback" not in done.stderr, done.stderr
    nodes = {node["scenario"]: node for node in json.loads(done.stdout)["nodes"]}
    assert done.returncode == 0, (nodes, done.stderr[-3000:])
    good, changed = nodes["vm-good"], nodes["vm-changed-cmdline"]
    assert (good["status"], good["failed_checks"], good["reason"]) == ("affirming", [], None)
    assert good["boot_to_verdict_seconds"] > 0
    assert changed["status"] == "contraindicated"
    assert changed["failed_checks"] == ["golden-values"]
    assert changed["reason"].startswith(
        "kernel.cmdline: console=ttyS0 panic=-1 lightgate.changed=1 is not among the golden "
        "values (console=ttyS0 panic=-1)"
    )

"""`attest sim demo --json` as a user runs it: good nodes trusted, every attack refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

if shutil.which("swtpm") is None:
    pytest.skip("swtpm is not installed (run `make setup`)", allow_module_level=True)

EXPECTED_REFUSALS = {
    "forged-ek": "ek-certificate-untrusted:",
    "foreign-ak": "credential-activation:",
    "replayed-nonce": "nonce-replayed:",
    "expired-nonce": "nonce-expired:",
    "tampered-pcr": "pcr-digest:",
    "bad-signature": "quote-signature:",
    "tampered-kernel": "golden-values:",
    "secure-boot-off": "golden-values:",
    "cmdline-changed": "golden-values:",
    "log-truncated": "event-log-replay:",
}
NAMED = {  # what the refusal must name, beyond its check
    "tampered-kernel": "boot-chain.kernel",
    "secure-boot-off": "secure-boot.enabled",
    "cmdline-changed": "kernel.cmdline",
    "log-truncated": "PCR",
}


def test_sim_demo_json() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lightgate", "sim", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    nodes = json.loads(done.stdout)["nodes"]
    assert all(set(node) == {"node", "scenario", "status", "reason"} for node in nodes)
    by_scenario: dict[str, list[dict[str, str]]] = {}
    for node in nodes:
        by_scenario.setdefault(node["scenario"], []).append(node)
    assert set(by_scenario) == {"good", *EXPECTED_REFUSALS}
    for node in by_scenario["good"]:
        assert node["status"] == "affirming" and node["reason"] is None
    for scenario, prefix in EXPECTED_REFUSALS.items():
        (node,) = by_scenario[scenario]
        assert node["status"] != "affirming", node
        assert node["reason"].startswith(prefix), node
        assert NAMED.get(node["scenario"], "") in node["reason"], node


def test_sim_run_unknown_scenario_is_one_error_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lightgate", "sim", "run", "--nodes", "1", "--scenario", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: unknown scenario(s): nope")
    assert "Traceback" not in done.stderr

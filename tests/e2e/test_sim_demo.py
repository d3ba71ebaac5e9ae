"""`attest sim demo --json` as a user runs it: good nodes trusted, every attack refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from lightgate.sim.containerd import missing_prerequisites
from lightgate.sim.fleet import run_fleet

if shutil.which("swtpm") is None:
    pytest.skip("swtpm is not installed (run `make setup`)", allow_module_level=True)

# The check that must refuse each hostile scenario: among the result's failed checks, or
# (for a refused enrollment, which has no result) at the start of the refusal.
EXPECTED_REFUSALS = {
    "forged-ek": "ek-certificate-untrusted",
    "foreign-ak": "credential-activation",
    "replayed-nonce": "nonce-replayed",
    "expired-nonce": "nonce-expired",
    "tampered-pcr": "pcr-digest",
    "bad-signature": "quote-signature",
    "tampered-kernel": "golden-values",
    "secure-boot-off": "golden-values",
    "cmdline-changed": "golden-values",
    "log-truncated": "event-log-replay",
    "wrong-location": "location",
    "expired": "expired",
    "revoked": "revoked",
    "unknown-image": "images",
}
NAMED = {  # what the refusal must name, beyond its check
    "tampered-kernel": "boot-chain.kernel",
    "secure-boot-off": "secure-boot.enabled",
    "cmdline-changed": "kernel.cmdline",
    "log-truncated": "PCR",
    "wrong-location": "observed dc=fra1",
    "expired": "trust lasted until",
    "revoked": "stolen",
    "unknown-image": "registry.lightgate.sim/miner:latest@sha256:",
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
    fields = {"node", "scenario", "status", "failed_checks", "reason", "admission", "containers"}
    assert all(set(node) == fields for node in nodes)
    for node in nodes:  # the scheduler and the credential gate follow trust
        admission = node["admission"]
        trusted = node["scenario"] == "good"
        assert admission["extender"]["admitted"] is trusted, node
        assert admission["certificate"]["issued"] is trusted, node
        if not trusted:
            assert admission["extender"]["reason"] and admission["certificate"]["reason"], node
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        by_scenario.setdefault(node["scenario"], []).append(node)
    assert set(by_scenario) == {"good", *EXPECTED_REFUSALS}
    for node in by_scenario["good"]:
        assert node["status"] == "affirming" and node["reason"] is None
    for scenario, check in EXPECTED_REFUSALS.items():
        (node,) = by_scenario[scenario]
        assert node["status"] != "affirming", node
        refused = check in node["failed_checks"] or node["reason"].startswith(f"{check}:")
        assert refused, node
        assert NAMED.get(node["scenario"], "") in node["reason"], node
    (unknown_image,) = by_scenario["unknown-image"]
    assert "registry.lightgate.sim/web" not in unknown_image["reason"]  # allowed: not blamed
    # It says where its images came from: a real containerd when this machine can run one.
    assert unknown_image["containers"].startswith("container images: ")
    if missing_prerequisites() is None:
        assert unknown_image["containers"].endswith("(real)")
    assert all(node["containers"] is None for node in nodes if node is not unknown_image)
    (expired,) = by_scenario["expired"]
    assert expired["status"] == "expired"
    # revoked mid-run: filtered out, and the certificate it held is on the CRL
    (revoked,) = by_scenario["revoked"]
    assert revoked["admission"]["revoked_certificate_on_crl"] is True
    assert "revoked" in revoked["admission"]["extender"]["reason"]
    (wrong,) = by_scenario["wrong-location"]
    assert not wrong["admission"]["extender"]["admitted"]


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


def test_without_containerd_the_images_are_declared_and_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback for machines that cannot run containerd: the node's agent measures
    declared image records, the verifier refuses the unknown one the same way, and the
    result says the images were not read from a runtime."""
    why = "containerd cannot run here (this test says so)"
    monkeypatch.setattr("lightgate.sim.images.missing_prerequisites", lambda: why)
    (result,) = run_fleet(["unknown-image"])
    assert result.as_expected, result
    assert result.failed_checks == ("images",)
    assert result.containers == f"container images: declared, not read from a runtime ({why})"

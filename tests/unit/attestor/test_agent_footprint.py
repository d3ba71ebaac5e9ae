"""What the agent loads: every node runs it, so its memory is bounded by what it imports
(issue 7: under 40 MB resident).  grpcio, pyca/cryptography, pydantic and tpm2-tss
would each take a large share of that; the agent has its own small replacements
(`lightgate.wire.channel`, `attestor.tpm2`, `lightgate.agent_config`), and a stray
import of a heavy module is caught here rather than on the nodes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "grpc",
    "cryptography",
    "pydantic",
    "pydantic_settings",
    "tpm2_pytss",
    "sqlalchemy",
    "typer",
    "rich",
    "regorus",
)

PROBE = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)
from attestor.agent import run_agent, open_channel
from lightgate.agent_config import AgentConfig
channel = open_channel(AgentConfig(verifier="127.0.0.1:1"))
print(json.dumps(sorted(sys.modules)))
"""


def loaded(*modules: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], check=True, capture_output=True, text=True
    )
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize(
    "entry",
    [
        ("attestor.__main__",),
        ("attestor.__main__", "attestor.collect.containers", "attestor.collect.runtime_log"),
    ],
)
def test_the_agent_loads_none_of_the_heavy_modules(entry: tuple[str, ...]) -> None:
    modules = loaded(*entry)
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    # A plaintext channel (and containerd over its socket) needs no TLS stack.
    assert "ssl" not in modules


def test_a_certificate_brings_cryptography_only_then() -> None:
    assert "cryptography" in loaded("attestor.credentials")


def test_the_guest_image_holds_everything_the_agent_loads() -> None:
    """`attest sim run --vm` copies the host's packages into the guest except those
    `rootfs.EXCLUDED` names: none of them may be one the agent loads."""
    from lightgate.sim.realboot.rootfs import _excluded

    modules = loaded("attestor.__main__", "attestor.collect.containers", "attestor.credentials")
    # The host venv's own path hooks (editable install, setuptools' shim) load first
    # there; the guest has Lightgate's packages copied in and needs neither.
    host_only = {"_distutils_hack", "__editable___lightgate_0_1_0_finder"}
    assert not {name for name in modules - host_only if _excluded(name)}

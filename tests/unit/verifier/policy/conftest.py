"""Policy inputs shaped like the spec's `input` document, and the repository's bundle."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from verifier.policy.bundle import PolicyBundle, default_policy_dir, load_bundle

_GOOD_INPUT: dict[str, object] = {
    "node": {
        "id": "node-1",
        "hardware": {"ek_chain_verified": True, "enrollment_mode": "ek-chain"},
        "rebooted": False,
    },
    "evidence": {
        "quote": {"verified": True, "banks": ["sha256"]},
        "event_log": {"present": True, "replayed": True, "workarounds": []},
        "runtime_log": {"present": True, "replayed": True},
    },
    "claims": {
        "secure-boot.enabled": True,
        "boot-chain.kernel": "sha256:" + "3a019391ae8864074d0594a7e6d27796" * 2,
        "kernel.cmdline": "root=UUID=6d931c60 ro quiet",
    },
    "findings": [],
    "golden": {
        "documents": ["good"],
        "expired": [],
        "matched": "good",
        "closest": "good",
        "deviations": [],
    },
    "location": {
        "assigned": {"region": "eu-west", "dc": "ams1"},
        "attested": {
            "attributes": {"region": "eu-west", "dc": "ams1"},
            "issued_at": "2026-01-01T00:00:00Z",
        },
        "attested_error": None,
        "observed": {
            "address": "127.0.0.5",
            "site": "ams1",
            "attributes": {"region": "eu-west", "dc": "ams1"},
        },
    },
}


def good_input(**changes: object) -> dict[str, object]:
    """A node that earns `affirming`, with top-level sections replaced by `changes`."""
    document = copy.deepcopy(_GOOD_INPUT)
    document.update(copy.deepcopy(changes))
    return document


def section(name: str, **fields: object) -> dict[str, object]:
    """The good input's section `name` with `fields` replaced."""
    value = copy.deepcopy(_GOOD_INPUT[name])
    assert isinstance(value, dict)
    value.update(fields)
    return value


@pytest.fixture(scope="session")
def bundle() -> PolicyBundle:
    return load_bundle(default_policy_dir())


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root

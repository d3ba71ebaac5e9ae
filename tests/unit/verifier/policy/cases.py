"""Inputs and the default policy's expected decisions, shared by the embedded and remote
engine tests so both engines decide the same inputs."""

from __future__ import annotations

from tests.unit.verifier.policy.conftest import good_input, section
from verifier.policy.engine import Status

KERNEL = {
    "claim": "boot-chain.kernel",
    "text": "boot-chain.kernel: sha256:0badc0de is not among the golden values (sha256:3a01)",
}

#: (name, input, status, failed checks): the spec's default-policy cases, shared with
#: test_remote.py so both engines decide the same inputs.
CASES: list[tuple[str, dict[str, object], Status, tuple[str, ...]]] = [
    ("affirming", good_input(), Status.AFFIRMING, ()),
    (
        "kernel-deviation",
        good_input(golden=section("golden", matched=None, deviations=[KERNEL])),
        Status.CONTRAINDICATED,
        ("golden-values",),
    ),
    (
        "secure-boot-off",
        good_input(claims={"secure-boot.enabled": False}),
        Status.CONTRAINDICATED,
        ("secure-boot",),
    ),
    (
        "no-golden-match",
        good_input(golden=section("golden", matched=None, closest=None)),
        Status.CONTRAINDICATED,
        ("golden-values",),
    ),
    (
        "wrong-location",
        good_input(
            location=section(
                "location",
                observed={"address": "127.0.0.9", "site": "fra1", "attributes": {"dc": "fra1"}},
            )
        ),
        Status.CONTRAINDICATED,
        ("location",),
    ),
    (
        "tag-missing",
        good_input(location=section("location", attested=None)),
        Status.WARNING,
        ("location",),
    ),
    (
        "workload-region",
        good_input(workload={"regions": ["us-east"]}),
        Status.CONTRAINDICATED,
        ("workload-location",),
    ),
    (
        "workload-region-allowed",
        good_input(workload={"regions": ["eu-west"]}),
        Status.AFFIRMING,
        (),
    ),
    (
        "tofu-hardware",
        good_input(node={"id": "n", "hardware": {"ek_chain_verified": False}}),
        Status.WARNING,
        ("hardware",),
    ),
    (
        "empty-input",
        {},
        Status.CONTRAINDICATED,
        ("golden-values", "hardware", "quote", "secure-boot"),
    ),
]

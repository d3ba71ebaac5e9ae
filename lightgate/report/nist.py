"""Lightgate's checks mapped to the trusted-compute-pool and trusted-location stages of
NIST IR 8320A, as data the report prints beside the fleet.

NIST IR 8320A builds a container platform prototype in stages: Stage 0, platform
attestation and measured boot (a platform that passes joins the trusted compute pool);
Stage 1, trusted placement of workloads on that pool; Stage 2, asset tagging and
trusted location; Stage 3, trust-based workload encryption; Stage 4, trust-based
workload access to information.  NIST IR 8320 describes the same use cases ("workload
placement on trusted platforms", "asset tagging and trusted location").

Each row says what the stage asks (paraphrased), what Lightgate's checks actually do
towards it, which named checks refuse trust for it (the names results carry in
`failed_checks`) and how far that goes.  Coverage is claimed only for what a check
decides; where Lightgate does less than the stage describes, `limits` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SOURCE: Final = (
    "NIST IR 8320A, Hardware-Enabled Security: Container Platform Security Prototype "
    "(June 2021), https://doi.org/10.6028/NIST.IR.8320A; use cases as in NIST IR 8320 "
    "(May 2022), https://doi.org/10.6028/NIST.IR.8320"
)

COVERED: Final = "covered"
PARTIAL: Final = "partial"
NOT_COVERED: Final = "not covered"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One capability of a NIST IR 8320A stage and what Lightgate does towards it."""

    id: str  # the stage as NIST IR 8320A numbers it, and the capability within it
    stage: str  # the stage's name in NIST IR 8320A
    asks: str  # what the stage asks for, paraphrased
    lightgate: str  # what Lightgate's checks do towards it
    checks: tuple[str, ...]  # failed-check names that refuse trust for it
    pool: bool  # judged by membership of the trusted compute pool (compliance) itself
    coverage: str  # covered | partial | not covered
    limits: str  # what Lightgate does not do here


STAGE_0: Final = "Stage 0: Platform attestation and measured boot"
STAGE_1: Final = "Stage 1: Trusted placement of workloads"
STAGE_2: Final = "Stage 2: Asset tagging and trusted location"
STAGE_3: Final = "Stage 3: Trust-based workload encryption"
STAGE_4: Final = "Stage 4: Trust-based workload access to information"

REQUIREMENTS: Final[tuple[Requirement, ...]] = (
    Requirement(
        id="8320A Stage 0 / root of trust",
        stage=STAGE_0,
        asks="Platform trust rests on a hardware root of trust (the TPM) whose identity "
        "the attestation service can verify.",
        lightgate="Enrollment checks the EK certificate chain to a trusted manufacturer CA "
        "(or an operator-pinned EK), binds the AK to that EK by credential activation, "
        "and checks the AK's attributes; every result's `hardware` check lowers trust "
        "when the EK chain was not verified.",
        checks=("hardware",),
        pool=False,
        coverage=COVERED,
        limits="Enrollment refusals (ek-certificate-untrusted, credential-activation, "
        "ak-attributes, ...) stop a node before it has results, so this report cannot "
        "count them; see the verifier's log.  Trust-on-first-use and join-token modes "
        "accept a TPM without a manufacturer chain and say so through `hardware`.",
    ),
    Requirement(
        id="8320A Stage 0 / measured boot attested",
        stage=STAGE_0,
        asks="The platform's boot is measured into the TPM and the measurements are "
        "reported to a remote attestation service that verifies them.",
        lightgate="Each attestation is a TPM quote over a single-use verifier nonce; the "
        "verifier checks the AK signature, quote type, nonce, PCR digest and clock "
        "counters, then replays the boot event log to the quoted PCRs.",
        checks=(
            "quote-signature",
            "quote-magic",
            "quote-type",
            "nonce-unknown",
            "nonce-mismatch",
            "nonce-replayed",
            "nonce-expired",
            "pcr-selection",
            "pcr-digest",
            "clock-rollback",
            "quote",
            "event-log",
            "event-log-missing",
            "event-log-malformed",
            "event-log-replay",
            "event-log-bank",
        ),
        pool=False,
        coverage=COVERED,
        limits="Boot measurements only (firmware to kernel and initrd); files measured "
        "after boot (IMA) are not appraised, so the trust vector's file-system claim "
        "stays 0.",
    ),
    Requirement(
        id="8320A Stage 0 / known-good measurements",
        stage=STAGE_0,
        asks="Measurements are compared with known-good (golden) values, and a platform "
        "that deviates is not trusted.",
        lightgate="The boot claims (firmware, Secure Boot state and keys, shim, boot "
        "chain, kernel, command line) are compared with the golden values in force; "
        "a deviation, no applicable or only expired golden values, or Secure Boot "
        "off or unmeasured refuse trust.",
        checks=("golden-values", "golden-values-missing", "secure-boot"),
        pool=False,
        coverage=COVERED,
        limits="Judges what the policy in force asks: an operator can set a deviation to "
        "warn (warning status) instead of refuse.",
    ),
    Requirement(
        id="8320A Stage 1 / trusted compute pool",
        stage=STAGE_1,
        asks="Workloads are placed only on platforms in the trusted compute pool, the "
        "platforms whose attestation currently succeeds.",
        lightgate="A node is in the pool while its newest result is affirming and has not "
        "expired; it leaves on a failing result, on expiry when it stops attesting, or "
        "on an operator's revocation.  NodeTrust Filter, the Kubernetes scheduler "
        "extender and the admission webhook admit only pool members (warning nodes "
        "only where a workload allows it).  This report's "
        "`compliant` is pool membership at --until; its trend is the pool's size.",
        checks=(),
        pool=True,
        coverage=PARTIAL,
        limits="The report shows pool membership over time, not where workloads ran: "
        "placement is enforced only where the scheduler uses the extender or webhook.",
    ),
    Requirement(
        id="8320A Stage 2 / asset tag attested",
        stage=STAGE_2,
        asks="An asset tag (location and other attributes) is provisioned to the platform "
        "and included in its attestation, so the tag can be trusted.",
        lightgate="The verifier signs the tag an operator assigns; the agent measures it "
        "into a configured PCR and records it in the runtime log; the verifier replays "
        "that log to the quote and checks the tag's signature and subject.  By the "
        "default policy a tag that is foreign or unusable refuses trust; a missing or "
        "stale one lowers it to warning.",
        checks=(
            "asset-tag",
            "location",
            "runtime-log",
            "runtime-log-replay",
            "runtime-log-digest",
            "runtime-log-bank",
            "runtime-log-pcr",
        ),
        pool=False,
        coverage=PARTIAL,
        limits="The agent measures the tag when it starts (PCR 22, where some products "
        "keep asset tags, cannot be extended at locality 0); firmware does not.  The "
        "quote proves the node measured this tag, not where the machine physically is.",
    ),
    Requirement(
        id="8320A Stage 2 / trusted location",
        stage=STAGE_2,
        asks="Workloads run only at locations their policy allows, decided from the "
        "platform's trusted location.",
        lightgate="The attested tag is compared with the site the verifier observes the "
        "attestation come from (network address mapped by the configured site table): "
        "by the default policy, disagreement refuses trust and an unconfirmed tag "
        "lowers it to warning; a workload's location requirements refuse nodes that "
        "attest another location.",
        checks=("location", "observed-address", "workload-location"),
        pool=False,
        coverage=PARTIAL,
        limits="The observed location is a network address, not a geolocation "
        "measurement: it is as good as the site table and the network it describes.",
    ),
    Requirement(
        id="8320A Stage 3",
        stage=STAGE_3,
        asks="Workload images are encrypted and decrypted only on trusted platforms.",
        lightgate="Lightgate does not encrypt or decrypt workloads.",
        checks=(),
        pool=False,
        coverage=NOT_COVERED,
        limits="Out of scope.",
    ),
    Requirement(
        id="8320A Stage 4",
        stage=STAGE_4,
        asks="Workloads reach keys and information only from trusted platforms.",
        lightgate="No check of Lightgate's controls access to data.  Its credential gate "
        "issues TPM-bound certificates and tokens only to nodes affirming at the time, "
        "and revokes them when trust is lost, which a relying party can require.",
        checks=(),
        pool=False,
        coverage=NOT_COVERED,
        limits="Access decisions belong to the relying party.",
    ),
)

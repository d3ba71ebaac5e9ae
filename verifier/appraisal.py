"""Measured-boot appraisal: event log + verified quote + golden values → findings.

Orchestration of pure parts (`evidence.eventlog`, `evidence.measured_boot`,
`evidence.claims`, `golden.values`) with one piece of state: a bounded cache keyed by the
log's SHA-256, so a node re-attesting with the same boot costs no re-parse, no replay
and no claims extraction.  No I/O: golden values are handed in.

Closed by default: a missing log (when required), a malformed log, a replay that does
not reach the quoted PCRs, no golden values, or a deviation from them each refuse trust
with a named check.  Event-data findings are reported, not refused: policy decides.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, Generic, TypeVar

from lightgate.errors import Refusal
from verifier.ar4si import TRUST_CLAIMS
from verifier.evidence.claim_names import claims_json
from verifier.evidence.claim_types import BootClaims
from verifier.evidence.claims import claims_of
from verifier.evidence.errors import (
    EventLogMalformed,
    EventLogMissing,
    EvidenceError,
    GoldenValuesDeviation,
    GoldenValuesMissing,
)
from verifier.evidence.eventlog import EventLog, Replay, parse_event_log, replay
from verifier.evidence.measured_boot import DEFAULT_LOG_PCRS, verify_event_log
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.runtime_log import VerifiedRuntimeLog
from verifier.evidence.tpm_structures import HashAlg
from verifier.golden.images import ImageAllowList, ImageVerdict
from verifier.golden.values import GoldenOutcome, GoldenValues, appraise
from verifier.policy.errors import PolicyError
from verifier.policy.memo import MemoisedEngine

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class BootAppraisal:
    """What the boot log added to an attestation."""

    failures: tuple[EvidenceError, ...]
    findings: tuple[str, ...]
    workarounds: tuple[str, ...]
    claims: BootClaims | None
    golden: str | None  # the golden-values document the claims matched
    # For policy: the comparison with the golden values in force, their names, and
    # which ones had expired; the claims as named values and what identifies them.
    outcome: GoldenOutcome | None = None
    active: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    claims_json: dict[str, object] | None = None
    claims_key: bytes = b""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def integrity_failures(self) -> tuple[EvidenceError, ...]:
        """The failures that make the evidence itself unusable (not golden values,
        which are the policy's to judge)."""
        return tuple(f for f in self.failures if not isinstance(f, GOLDEN_REFUSALS))


GOLDEN_REFUSALS = (GoldenValuesMissing, GoldenValuesDeviation)

_NO_LOG = BootAppraisal((), (), (), None, None)


@dataclass(frozen=True, slots=True)
class _Claims:
    claims: BootClaims
    json: dict[str, object]
    identity: bytes  # SHA-256 of what the claims were extracted from


@dataclass(frozen=True, slots=True)
class _Parsed:
    log: EventLog | None
    plain: Replay | None
    error: EventLogMalformed | None


class BootAppraiser:
    """Appraises boot logs; safe to share between the verifier's worker threads."""

    def __init__(
        self,
        *,
        require_event_log: bool = True,
        log_pcrs: frozenset[int] = DEFAULT_LOG_PCRS,
        max_event_log_bytes: int = 4 * 1024 * 1024,
        cache_entries: int = 1024,
        cache_log_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._require = require_event_log
        self._log_pcrs = log_pcrs
        self._max_bytes = max_event_log_bytes
        # Bounded by count and by the bytes of the logs behind the entries: a parsed log
        # costs about ten times its size, and any enrolled node can send distinct logs.
        self._parsed: BoundedCache[bytes, _Parsed] = BoundedCache(cache_entries, cache_log_bytes)
        self._claims: BoundedCache[ClaimsKey, _Claims] = BoundedCache(
            cache_entries, cache_log_bytes
        )
        self._outcomes: BoundedCache[tuple[bytes, tuple[tuple[str, bytes], ...]], GoldenOutcome] = (
            BoundedCache(cache_entries, cache_entries)
        )

    def clear(self) -> None:
        """Forget every parsed log, claims and golden-values outcome."""
        for cache in (self._parsed, self._claims, self._outcomes):
            cache.clear()

    def appraise(
        self,
        node_id: str,
        raw_log: bytes,
        quoted: PcrValues,
        golden: Sequence[GoldenValues],
        now: datetime | None = None,
    ) -> BootAppraisal:
        """Appraise one node's log against its verified quote and the golden values in
        force at `now` (the attestation's time; the clock when not given)."""
        if not raw_log:
            if not self._require:
                return _NO_LOG
            missing = EventLogMissing("the node sent no boot event log", node_id=node_id)
            return BootAppraisal((missing,), (), (), None, None)
        parsed = self._parse(raw_log)
        if parsed.error is not None or parsed.log is None:
            error = parsed.error or EventLogMalformed(0, 0, "unparsed")
            refusal = EventLogMalformed(error.offset, error.event, error.detail, node_id=node_id)
            return BootAppraisal((refusal,), (), (), None, None)
        try:
            verified = verify_event_log(
                parsed.log,
                quoted.banks,
                log_pcrs=self._log_pcrs,
                node_id=node_id,
                plain=parsed.plain,
            )
        except EvidenceError as refusal:
            return BootAppraisal((refusal,), (), (), None, None)
        # Everything claims_of reads: the log, the bank and PCRs it may use, workarounds.
        key = (
            parsed.log.sha256,
            verified.claims_bank,
            verified.claims_pcrs,
            verified.workarounds,
        )
        cached = self._claims.get(key)
        if cached is None:
            claims = claims_of(verified)
            identity = hashlib.sha256(
                b"".join((parsed.log.sha256, verified.claims_bank.to_bytes(2, "big")))
                + ",".join(map(str, sorted(verified.claims_pcrs))).encode()
                + "|".join(verified.workarounds).encode()
            ).digest()
            cached = _Claims(claims, claims_json(claims), identity)
            self._claims.put(key, cached, parsed.log.size)
        claims = cached.claims
        findings = tuple(f.describe() for f in claims.findings)
        failures: tuple[EvidenceError, ...] = ()
        moment = now or datetime.now(UTC)
        active = [g for g in golden if not g.expired(moment)]
        # The comparison depends only on the claims and the documents in force.
        outcome_key = (cached.identity, tuple((g.name, g.digest) for g in active))
        outcome = self._outcomes.get(outcome_key)
        if outcome is None:
            outcome = appraise(claims, active)
            self._outcomes.put(outcome_key, outcome, 1)
        if not golden:
            failures = (
                GoldenValuesMissing(
                    "no golden values are imported (attest golden import)", node_id=node_id
                ),
            )
        elif not any(g.judges_boot for g in active) and any(g.judges_boot for g in golden):
            boot_documents = [g for g in golden if g.judges_boot]
            names = ", ".join(f"{g.name} (valid until {g.valid_until})" for g in boot_documents)
            expired = GoldenValuesMissing(
                f"every golden-values document for boots has expired: {names}", node_id=node_id
            )
            failures = (expired,)
        elif outcome.closest is None:
            failures = (
                GoldenValuesMissing(
                    "no golden values for boots are in force (only image allow-lists)",
                    node_id=node_id,
                ),
            )
        elif outcome.matched is None:
            deviations = "; ".join(d.describe() for d in outcome.deviations)
            failures = (
                GoldenValuesDeviation(
                    f"closest golden values {outcome.closest!r}: {deviations}", node_id=node_id
                ),
            )
        deviation_lines = tuple(d.describe() for d in outcome.deviations)
        return BootAppraisal(
            failures,
            deviation_lines + findings,
            verified.workarounds,
            claims,
            outcome.matched,
            outcome=outcome,
            active=tuple(g.name for g in active if g.judges_boot),
            expired=tuple(g.name for g in golden if g.expired(moment)),
            claims_json=cached.json,
            claims_key=cached.identity,
        )

    def _parse(self, raw: bytes) -> _Parsed:
        key = hashlib.sha256(raw).digest()
        cached = self._parsed.get(key)
        if cached is not None:
            return cached
        try:
            log = parse_event_log(raw, max_size=self._max_bytes)
            parsed = _Parsed(log, replay(log), None)
        except EventLogMalformed as error:
            parsed = _Parsed(None, None, error)
        self._parsed.put(key, parsed, len(raw))
        return parsed


ClaimsKey = tuple[bytes, HashAlg, frozenset[int], tuple[str, ...]]


class BoundedCache(Generic[K, V]):
    """A thread-safe LRU bounded by entry count and by the summed cost of its entries."""

    def __init__(self, entries: int, cost: int) -> None:
        self._entries = entries
        self._cost = cost
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._total = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V, cost: int) -> None:
        if self._entries <= 0 or cost > self._cost:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= old[1]
            self._items[key] = (value, cost)
            self._total += cost
            while len(self._items) > self._entries or self._total > self._cost:
                _, (_, evicted) = self._items.popitem(last=False)
                self._total -= evicted


# --- the whole appraisal: evidence checks, then policy -------------------------------

#: Where a refusal of the evidence itself shows in the trust vector (AR4SI: 99 is
#: "cryptographic validation of the evidence failed", 96 "contraindicated").  Checks
#: not named here lower instance-identity: the evidence cannot be tied to the node.
EVIDENCE_CHECK_CLAIMS: Final = {
    "event-log-missing": "executables",
    "event-log-malformed": "executables",
    "event-log-replay": "executables",
    "event-log-bank": "executables",
    "runtime-log": "sourced-data",
    "runtime-log-replay": "sourced-data",
    "runtime-log-bank": "sourced-data",
    "runtime-log-digest": "sourced-data",
    "runtime-log-pcr": "sourced-data",
}
EVIDENCE_REFUSED: Final = 99
CONTRAINDICATED_VALUE: Final = 96
#: AR4SI -1: verifier malfunction (the verifier could not appraise: no policy decision).
VERIFIER_MALFUNCTION: Final = -1


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the verifier knows of the node apart from this evidence."""

    node_id: str
    enrollment_mode: str
    ek_chain_verified: bool
    ek_pinned: bool
    rebooted: bool


@dataclass(frozen=True, slots=True)
class Appraisal:
    """The verdict on verified evidence: EAR status and vector, reasons, failed checks,
    and what the record keeps (claims, the policy input without them, the site)."""

    status: str
    trust_vector: Mapping[str, int]
    reasons: Mapping[str, tuple[str, ...]]
    failed_checks: tuple[str, ...]
    reason: str | None
    findings: tuple[str, ...]
    workarounds: tuple[str, ...]
    claims: dict[str, object] | None
    policy_id: str | None
    appraisal_input: dict[str, object] | None
    site: str | None


def refused_evidence(failures: Sequence[Refusal], policy_id: str | None = None) -> Appraisal:
    """Evidence that failed a check: contraindicated, no policy consulted."""
    vector = dict.fromkeys(TRUST_CLAIMS, 0)
    reasons: dict[str, list[str]] = {}
    for failure in failures:
        claim = EVIDENCE_CHECK_CLAIMS.get(failure.check, "instance-identity")
        vector[claim] = EVIDENCE_REFUSED
        reasons.setdefault(claim, []).append(failure.reason)
    return Appraisal(
        status="contraindicated",
        trust_vector=vector,
        reasons={claim: tuple(lines) for claim, lines in reasons.items()},
        failed_checks=tuple(dict.fromkeys(f.check for f in failures)),
        reason="; ".join(f.reason for f in failures),
        findings=(),
        workarounds=(),
        claims=None,
        policy_id=policy_id,
        appraisal_input=None,
        site=None,
    )


NO_ALLOW_LIST: Final = ImageAllowList()


def policy_input(
    node: NodeFacts,
    boot: BootAppraisal,
    runtime: VerifiedRuntimeLog,
    location: Mapping[str, object],
    banks: Sequence[str],
    images: Sequence[ImageVerdict] = (),
    allowed: ImageAllowList = NO_ALLOW_LIST,
) -> dict[str, object]:
    """The policy's `input` without `claims` (policies/README.md).  `images` are the
    verdicts on the images the runtime log measured, against `allowed`."""
    outcome = boot.outcome
    return {
        "node": {
            "id": node.node_id,
            "hardware": {
                "ek_chain_verified": node.ek_chain_verified,
                "ek_pinned": node.ek_pinned,
                "enrollment_mode": node.enrollment_mode,
            },
            "rebooted": node.rebooted,
        },
        "evidence": {
            "quote": {"verified": True, "banks": list(banks)},
            "event_log": {
                "present": boot.claims is not None,
                "replayed": boot.claims is not None,
                "workarounds": list(boot.workarounds),
            },
            "runtime_log": {"present": runtime.present, "replayed": True},
        },
        "findings": [f for f in boot.findings if not _is_deviation(f, outcome)],
        "golden": {
            "documents": list(boot.active),
            "expired": list(boot.expired),
            "matched": None if outcome is None else outcome.matched,
            "closest": None if outcome is None else outcome.closest,
            "deviations": []
            if outcome is None or outcome.matched is not None
            else [{"claim": d.claim, "text": d.describe()} for d in outcome.deviations],
        },
        "location": dict(location),
        "images": {
            "allow_lists": list(allowed.documents),
            "measured": [verdict.to_json() for verdict in images],
        },
    }


def _is_deviation(line: str, outcome: GoldenOutcome | None) -> bool:
    return outcome is not None and any(line == d.describe() for d in outcome.deviations)


def decide(
    engine: MemoisedEngine,
    partial_input: dict[str, object],
    boot: BootAppraisal,
    site: str | None,
) -> Appraisal:
    """Run the policy over the input (memoised by the input's digest) and make the
    appraisal.  No decision (the engine failed) is no trust, and says why."""
    digest = hashlib.sha256(
        json.dumps(partial_input, sort_keys=True, separators=(",", ":")).encode() + boot.claims_key
    ).digest()
    full = partial_input | {"claims": boot.claims_json or {}}
    claims = recorded_claims(boot, partial_input)
    try:
        decision = engine.evaluate(full, digest)
    except PolicyError as failure:
        vector = dict.fromkeys(TRUST_CLAIMS, VERIFIER_MALFUNCTION)
        return Appraisal(
            status="none",
            trust_vector=vector,
            reasons={"instance-identity": (failure.reason,)},
            failed_checks=(failure.check,),
            reason=failure.reason,
            findings=boot.findings,
            workarounds=boot.workarounds,
            claims=claims,
            policy_id=engine.policy_id,
            appraisal_input=partial_input,
            site=site,
        )
    lines = [line for claim in sorted(decision.reasons) for line in decision.reasons[claim]]
    return Appraisal(
        status=str(decision.status),
        trust_vector=decision.trust_vector,
        reasons=decision.reasons,
        failed_checks=decision.failed_checks,
        reason="; ".join(lines) or None,
        findings=boot.findings,
        workarounds=boot.workarounds,
        claims=claims,
        policy_id=decision.policy_id,
        appraisal_input=partial_input,
        site=site,
    )


def recorded_claims(
    boot: BootAppraisal, partial_input: Mapping[str, object]
) -> dict[str, object] | None:
    """The claims a result keeps: the boot claims, and under `images` the images the
    runtime log measured with their verdicts (when it measured any)."""
    images = partial_input.get("images")
    measured = images.get("measured") if isinstance(images, Mapping) else None
    if not measured:
        return boot.claims_json
    return {**(boot.claims_json or {}), "images": measured}


def revoked_by_operator(appraisal: Appraisal, why: str) -> Appraisal:
    """A revoked node's appraisal: whatever its evidence, no trust until an operator
    restores it.  The evidence's own verdict stays in the reasons beside it."""
    reason = f"revoked: {why or 'revoked by an operator'}"
    reasons = dict(appraisal.reasons)
    reasons["instance-identity"] = (*reasons.get("instance-identity", ()), reason)
    vector = dict(appraisal.trust_vector)
    vector["instance-identity"] = max(vector.get("instance-identity", 0), CONTRAINDICATED_VALUE)
    return replace(
        appraisal,
        status="contraindicated",
        trust_vector=vector,
        reasons=reasons,
        failed_checks=(*appraisal.failed_checks, "revoked"),
        reason="; ".join(r for r in (reason, appraisal.reason) if r),
    )

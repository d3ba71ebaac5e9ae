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
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

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
from verifier.evidence.quote import PcrValues
from verifier.evidence.tpm_structures import HashAlg
from verifier.golden.values import GoldenValues, appraise

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

    @property
    def passed(self) -> bool:
        return not self.failures


_NO_LOG = BootAppraisal((), (), (), None, None)


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
        self._claims: BoundedCache[ClaimsKey, BootClaims] = BoundedCache(
            cache_entries, cache_log_bytes
        )

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
        claims = self._claims.get(key)
        if claims is None:
            claims = claims_of(verified)
            self._claims.put(key, claims, parsed.log.size)
        findings = tuple(f.describe() for f in claims.findings)
        failures: tuple[EvidenceError, ...] = ()
        moment = now or datetime.now(UTC)
        active = [g for g in golden if not g.expired(moment)]
        outcome = appraise(claims, active)
        if not golden:
            failures = (
                GoldenValuesMissing(
                    "no golden values are imported (attest golden import)", node_id=node_id
                ),
            )
        elif not active:
            names = ", ".join(f"{g.name} (valid until {g.valid_until})" for g in golden)
            expired = GoldenValuesMissing(
                f"every golden-values document has expired: {names}", node_id=node_id
            )
            failures = (expired,)
        elif outcome.matched is None:
            deviations = "; ".join(d.describe() for d in outcome.deviations)
            failures = (
                GoldenValuesDeviation(
                    f"closest golden values {outcome.closest!r}: {deviations}", node_id=node_id
                ),
            )
        deviation_lines = tuple(d.describe() for d in outcome.deviations)
        return BootAppraisal(
            failures, deviation_lines + findings, verified.workarounds, claims, outcome.matched
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

"""Admission decisions: may this node run this workload, or get a credential, now?

Pure functions over a node's entry in the trust index (`NodeTrust`) and a workload's
`Requirements`; the index, the gRPC servicer, the Kubernetes extender and webhook and
the credential gate all decide through `judge`, so every door gives the same answer for
the same node at the same moment.  No I/O, no clock: `now` is handed in.

A node may run a workload when
- its trust state at `now` is affirming (or warning, where the workload allows it): a
  lasting state past its expiry reads as expired even before the verifier's sweep;
- and, where the workload names location attributes, the location the node attested
  (its asset tag, measured into the quote and confirmed by policy) has each attribute
  with one of the allowed values.  A node that attested no location satisfies none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, NamedTuple

RefusalKind = Literal["untrusted", "expired", "wrong-location", "unknown", "revoked"]

AFFIRMING: Final = "affirming"
WARNING: Final = "warning"
EXPIRED: Final = "expired"
REVOKED: Final = "revoked"
LASTING: Final = frozenset({AFFIRMING, WARNING})
_AFFIRMING_ONLY: Final = frozenset({AFFIRMING})
#: The scheduler extender's score range (Kubernetes MaxExtenderPriority is 10).
MAX_SCORE: Final = 10


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a workload asks of its nodes."""

    workload: str = ""
    # attribute -> the values it may have (an empty mapping: anywhere)
    location: Mapping[str, frozenset[str]] = field(default_factory=dict)
    allow_warning: bool = False
    _described: str = field(default="", init=False, repr=False, compare=False)
    _key: tuple[object, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = "; ".join(
            f"{name} in {{{', '.join(sorted(values))}}}"
            for name, values in sorted(self.location.items())
        )
        object.__setattr__(self, "_described", where or "anywhere")
        location = tuple(sorted((name, tuple(sorted(v))) for name, v in self.location.items()))
        object.__setattr__(self, "_key", (self.workload, self.allow_warning, location))

    @property
    def key(self) -> tuple[object, ...]:
        """Equal for requirements that judge alike (hashable, unlike the mapping)."""
        return self._key

    def describe(self) -> str:
        return self._described


ANY_WORKLOAD: Final = Requirements()


@dataclass(frozen=True, slots=True)
class NodeTrust:
    """One node as the trust index holds it."""

    node_id: str
    state: str  # the stored trust state: enrolled, affirming, warning, ... revoked
    since: datetime | None = None
    expires_at: datetime | None = None  # set while the state is lasting
    reason: str | None = None
    status: str | None = None  # the latest result's status
    ear: str | None = None  # the latest signed result
    location: Mapping[str, str] = field(default_factory=dict)  # attested, confirmed
    site: str | None = None  # observed at the last attestation
    attested_at: datetime | None = None  # the last attestation
    version: int = 0  # the store's trust_version: higher is newer (store/versions.py)

    def state_at(self, now: datetime) -> str:
        """The state at `now`: a lasting state past its expiry reads as expired, and so
        does one without an expiry (closed: trust that never ends is not trust)."""
        if self.state in LASTING and (self.expires_at is None or now >= self.expires_at):
            return EXPIRED
        return self.state

    def reason_at(self, now: datetime) -> str:
        if self.state_at(now) == EXPIRED and self.state != EXPIRED:
            if self.expires_at is None:
                return "the trust has no recorded expiry"
            return f"no attestation accepted in time; trust lasted until {_iso(self.expires_at)}"
        return self.reason or self.state

    def trusted(self, now: datetime, allow_warning: bool = False) -> bool:
        state = self.state_at(now)
        return state == AFFIRMING or (allow_warning and state == WARNING)


class Verdict(NamedTuple):
    node_id: str
    allowed: bool
    kind: RefusalKind | None
    reason: str


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    allowed: tuple[str, ...]
    refused: tuple[Verdict, ...]


def judge(
    node_id: str, entry: NodeTrust | None, requirements: Requirements, now: datetime
) -> Verdict:
    """May `node_id` run a workload with `requirements` at `now`, and if not, why."""
    if entry is None:
        return Verdict(node_id, False, "unknown", f"node {node_id} is not enrolled here")
    state = entry.state_at(now)
    if state == REVOKED:
        return Verdict(node_id, False, "revoked", f"revoked: {entry.reason or 'by an operator'}")
    if state == EXPIRED:
        return Verdict(node_id, False, "expired", entry.reason_at(now))
    if not entry.trusted(now, requirements.allow_warning):
        why = entry.reason or ("it has not attested yet" if state == "enrolled" else state)
        return Verdict(node_id, False, "untrusted", f"trust is {state}: {why}")
    wrong = location_mismatch(entry.location, requirements)
    if wrong is not None:
        return Verdict(node_id, False, "wrong-location", wrong)
    return Verdict(node_id, True, None, f"trusted ({state}) until {_iso(entry.expires_at)}")


def location_mismatch(attested: Mapping[str, str], requirements: Requirements) -> str | None:
    """Why an attested location does not satisfy the workload's, or None when it does."""
    problems = []
    for name, allowed in sorted(requirements.location.items()):
        value = attested.get(name)
        if value is None:
            problems.append(f"the node attested no {name}")
        elif value not in allowed:
            problems.append(f"the node attested {name}={value}")
    if not problems:
        return None
    who = f"{requirements.workload} " if requirements.workload else "the workload "
    return f"{who}may run only where {requirements.describe()}: {'; '.join(problems)}"


class RefusalMemo:
    """Refused verdicts kept for the next Filter: a refusal's reason costs more to write
    than an admission costs to decide, and the same nodes are refused for the same
    reason request after request.  A verdict is reused only while the node's index
    entry is the very object it was made from and its expiry has not passed since (the
    only way time changes a verdict), for requirements with the same key.  Only
    refusals go through it: a node is admitted by the decision itself, never by a
    memory, so a stale entry here can at worst word a refusal, never admit."""

    def __init__(self, most: int = 65536) -> None:
        self._most = most
        self._verdicts: dict[tuple[str, tuple[object, ...]], tuple[NodeTrust, bool, Verdict]] = {}

    def judge(
        self, node_id: str, entry: NodeTrust | None, requirements: Requirements, now: datetime
    ) -> Verdict:
        if entry is None:
            return judge(node_id, entry, requirements, now)
        lapsed = entry.expires_at is not None and now >= entry.expires_at
        key = (node_id, requirements.key)
        kept = self._verdicts.get(key)
        if kept is not None and kept[0] is entry and kept[1] == lapsed:
            return kept[2]
        verdict = judge(node_id, entry, requirements, now)
        if len(self._verdicts) >= self._most:
            self._verdicts.clear()  # bounded; refilled by the next requests
        self._verdicts[key] = (entry, lapsed, verdict)
        return verdict


def filter_nodes(
    node_ids: Iterable[str],
    lookup: Callable[[str], NodeTrust | None],
    requirements: Requirements,
    now: datetime,
    memo: RefusalMemo | None = None,
) -> FilterOutcome:
    """The candidates that may run the workload, in the order given, and the refused
    ones with their verdicts.  A candidate named twice is judged once.

    The hot path of every scheduler's question: an admitted node costs a dict lookup
    and a few comparisons (the same rules as `judge`, inlined); only a refused node is
    passed to `judge` (through `memo`, when given) for its verdict and reason."""
    refuse = judge if memo is None else memo.judge
    allowed: list[str] = []
    refused: list[Verdict] = []
    states = LASTING if requirements.allow_warning else _AFFIRMING_ONLY
    wanted = tuple(requirements.location.items())
    # One location attribute is the common case (a region): checked without a loop.
    name, values = wanted[0] if len(wanted) == 1 else ("", frozenset[str]())
    append = allowed.append
    for node_id in dict.fromkeys(node_ids):  # in order, each once
        entry = lookup(node_id)
        if (
            entry is not None
            and entry.state in states
            and entry.expires_at is not None
            and now < entry.expires_at
            and (
                (name and entry.location.get(name) in values)
                or not wanted
                or (len(wanted) > 1 and _located(entry.location, wanted))
            )
        ):
            append(node_id)
        else:
            refused.append(refuse(node_id, entry, requirements, now))
    return FilterOutcome(tuple(allowed), tuple(refused))


def _located(location: Mapping[str, str], wanted: tuple[tuple[str, frozenset[str]], ...]) -> bool:
    return all(location.get(name) in values for name, values in wanted)


def score(entry: NodeTrust | None, requirements: Requirements, now: datetime) -> int:
    """How much to prefer a node (0..MAX_SCORE): refused nodes score 0; affirming nodes
    outrank warning ones (5..10 against 1..4), and among equals the node whose trust
    has longer to run (fresher evidence) scores higher."""
    if entry is None or not judge(entry.node_id, entry, requirements, now).allowed:
        return 0
    base = MAX_SCORE // 2 if entry.state_at(now) == AFFIRMING else 1
    if entry.expires_at is None or entry.attested_at is None:
        return base
    remaining = (entry.expires_at - now).total_seconds()
    total = (entry.expires_at - entry.attested_at).total_seconds()
    freshness = 0.0 if total <= 0 else max(0.0, min(1.0, remaining / total))
    top = MAX_SCORE if base == MAX_SCORE // 2 else MAX_SCORE // 2 - 1
    return base + round(freshness * (top - base))


@functools.lru_cache(maxsize=4096)
def _iso(moment: datetime | None) -> str:
    """Expiries repeat across many verdicts (every Filter names them again)."""
    return "(no expiry)" if moment is None else moment.isoformat(timespec="seconds")

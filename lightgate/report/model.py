"""What `attest report` says: a fleet's compliance at one moment (`until`) and its trust
over a window before it, as frozen values.  No I/O.

A node is *compliant* when its trust state at `until` is affirming (or warning, where
the auditor allows it, as the scheduler extender's `allow-warning` does).  Everything
else is out of compliance, including a node that never attested ('enrolled'): nothing
is compliant because nothing failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from verifier.store.records import TRUST_AFFIRMING, TRUST_STATES, TRUST_WARNING

#: More points than any chart or table can show; a window this fine is a mistake.
MAX_TREND_POINTS: Final = 2000


class ReportError(Exception):
    """The report cannot be made as asked (a usage or configuration error)."""


class WindowInvalid(ReportError):
    """The time window or its bucket size is not usable."""


class SelectionInvalid(ReportError):
    """A filter names something that cannot exist (a trust state, a tag)."""


class HistoryUnreadable(ReportError):
    """The store holds something the report cannot read (a value that is not JSON)."""


@dataclass(frozen=True, slots=True)
class Window:
    """The report is of the fleet at `until`; its trend runs from `since` to `until`
    with a point every `bucket`."""

    since: datetime
    until: datetime
    bucket: timedelta

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise WindowInvalid("the window's times must name their time zone (UTC)")
        if self.since >= self.until:
            raise WindowInvalid(
                f"--since ({self.since.isoformat()}) must be before --until "
                f"({self.until.isoformat()})"
            )
        if self.bucket <= timedelta(0):
            raise WindowInvalid("the bucket must be longer than zero")
        if (self.until - self.since) / self.bucket > MAX_TREND_POINTS:
            raise WindowInvalid(
                f"a {self.bucket} bucket over {self.until - self.since} makes more than "
                f"{MAX_TREND_POINTS} trend points; choose a longer --bucket"
            )

    def points(self) -> tuple[datetime, ...]:
        """since, since + bucket, ... and until itself (the last point is the report's
        moment, so the trend ends where the table stands)."""
        moments: list[datetime] = []
        moment = self.since
        while moment < self.until:
            moments.append(moment)
            moment += self.bucket
        moments.append(self.until)
        return tuple(moments)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which nodes the report covers: any of `sites`, every `tags` attribute, any of
    `statuses` (each filter applies only when given), judged as the nodes are at
    `until` (the site they were observed at, the tag assigned now, the state then); the
    trend follows the selected nodes back over the window.  `allow_warning` counts a
    warning node as compliant."""

    sites: frozenset[str] = frozenset()
    tags: tuple[tuple[str, str], ...] = ()
    statuses: frozenset[str] = frozenset()
    allow_warning: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(self.statuses - set(TRUST_STATES))
        if unknown:
            raise SelectionInvalid(
                f"unknown status {', '.join(unknown)} (one of {', '.join(TRUST_STATES)})"
            )
        for name, _ in self.tags:
            if not name:
                raise SelectionInvalid("a tag filter needs a name: KEY=VALUE")

    def compliant(self, status: str) -> bool:
        return status == TRUST_AFFIRMING or (self.allow_warning and status == TRUST_WARNING)

    def selects(self, node: NodeCompliance) -> bool:
        if self.sites and node.location.site not in self.sites:
            return False
        if self.statuses and node.status not in self.statuses:
            return False
        if not self.tags:
            return True
        assigned = node.location.assigned
        return all(assigned.get(name) == value for name, value in self.tags)


@dataclass(frozen=True, slots=True)
class BootFacts:
    """What the node's newest result says it booted (its stored named claims): the
    S-CRTM versions PCR0 measured, the kernel grub loaded, Secure Boot, and the
    container images when the result records them.  Empty when it made no claim."""

    firmware: tuple[str, ...] = ()
    kernel: str | None = None
    kernel_digest: str | None = None
    secure_boot: bool | None = None
    images: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Location:
    """Where the node is: the site the verifier observed its attestation come from,
    the asset tag an operator assigned, and the tag the node's quote proved."""

    site: str | None = None
    assigned: Mapping[str, str] = field(default_factory=dict)
    attested: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class NodeCompliance:
    """One node at `until`, and what its results in the window said."""

    node_id: str
    status: str  # the trust state at `until`
    compliant: bool
    since: datetime | None  # when it entered that state (None: enrolled, never changed)
    reason: str | None
    last_attested_at: datetime | None
    last_result: str | None  # the newest result's status
    failed_checks: tuple[str, ...]  # every check the newest result failed
    boot: BootFacts
    location: Location
    attestations: int  # results in the window
    refused: int  # results in the window that were not affirming
    window_failed_checks: Mapping[str, int]  # check -> results in the window failing it


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """The selected nodes' trust states at one moment; `nodes` counts those known then."""

    at: datetime
    nodes: int
    states: Mapping[str, int]

    @property
    def trusted(self) -> int:
        return self.states.get(TRUST_AFFIRMING, 0)


@dataclass(frozen=True, slots=True)
class FleetTotals:
    nodes: int
    compliant: int
    by_status: Mapping[str, int]
    attestations: int  # results in the window
    refused: int
    failed_checks: Mapping[str, int]  # check -> results in the window that failed it
    nodes_failing: Mapping[str, int]  # check -> nodes with such a result in the window

    @property
    def out_of_compliance(self) -> int:
        return self.nodes - self.compliant


@dataclass(frozen=True, slots=True)
class RequirementOutcome:
    """A NIST IR 8320A requirement, and the selected nodes that failed one of the
    checks mapped to it: in their newest result, and anywhere in the window."""

    requirement_id: str
    failing_now: int
    failing_in_window: int


@dataclass(frozen=True, slots=True)
class FleetReport:
    generated_at: datetime
    window: Window
    selection: Selection
    nodes: tuple[NodeCompliance, ...]
    totals: FleetTotals
    trend: tuple[TrendPoint, ...]
    requirements: tuple[RequirementOutcome, ...]

    @property
    def compliant(self) -> bool:
        """Every selected node is compliant (and there is one): what gates a pipeline."""
        return bool(self.nodes) and all(n.compliant for n in self.nodes)

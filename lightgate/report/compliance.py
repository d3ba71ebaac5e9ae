"""The report from the stored history: each node's state at `until`, what it booted,
where it is, what failed; the selection, the totals, the trend, and the NIST IR 8320A
outcome.  Pure: `history.py` reads, this decides.

A node's trust state at a moment is the state its last transition up to then moved it
to ('enrolled' before any).  The verifier records an expiry when its sweep runs, dated
when the trust lasted out; when no verifier ran since, the node's row still says
affirming (or warning) with an expiry in the past, and the report counts the node
expired from that moment, as `NodeRecord.trust_at` does.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from lightgate.report.history import NewestResult, NodeHistory, StateChange
from lightgate.report.model import (
    BootFacts,
    FleetReport,
    FleetTotals,
    Location,
    NodeCompliance,
    RequirementOutcome,
    Selection,
    Window,
)
from lightgate.report.nist import REQUIREMENTS
from lightgate.report.trend import trend
from verifier.store.records import TRUST_ENROLLED, TRUST_EXPIRED, TRUST_LASTING


def build_report(
    history: Iterable[NodeHistory], window: Window, selection: Selection, now: datetime
) -> FleetReport:
    """The report over the nodes of `history` that `selection` selects."""
    timelines: dict[str, tuple[StateChange, ...]] = {}
    nodes: list[NodeCompliance] = []
    created: dict[str, datetime] = {}
    for node in history:
        timeline = node_timeline(node, window.until)
        row = node_compliance(node, timeline, window, selection)
        if selection.selects(row):
            nodes.append(row)
            timelines[node.node_id] = timeline
            created[node.node_id] = node.created_at
    return FleetReport(
        generated_at=now,
        window=window,
        selection=selection,
        nodes=tuple(nodes),
        totals=totals(nodes),
        trend=trend(timelines, created, window.points()),
        requirements=requirement_outcomes(nodes),
    )


# --- trust over time -----------------------------------------------------------------


def node_timeline(node: NodeHistory, until: datetime) -> tuple[StateChange, ...]:
    """The node's trust states up to `until`, oldest first: the last one before the
    window, those inside it, and an expiry the verifier has not recorded yet."""
    timeline = ([node.before] if node.before is not None else []) + list(node.changes)
    expires = node.trust_expires_at
    if node.trust_state in TRUST_LASTING and expires is not None and expires <= until:
        # Not yet swept: trust lasted out at `expires` all the same.
        reason = f"no attestation accepted in time; trust lasted until {expires.isoformat()}"
        timeline.append(StateChange(expires, TRUST_EXPIRED, reason))
        timeline.sort(key=lambda change: change.at)
    return tuple(timeline)


def state_at(timeline: Sequence[StateChange], moment: datetime) -> StateChange | None:
    """The change in force at `moment`; None before the first (the node is 'enrolled')."""
    index = bisect.bisect_right([change.at for change in timeline], moment)
    return timeline[index - 1] if index else None


# --- one node ------------------------------------------------------------------------


def node_compliance(
    node: NodeHistory,
    timeline: Sequence[StateChange],
    window: Window,
    selection: Selection,
) -> NodeCompliance:
    current = state_at(timeline, window.until)
    status = current.state if current is not None else TRUST_ENROLLED
    newest = node.newest
    window_checks: dict[str, int] = {}
    for checks in node.refusals:
        for check in set(checks):
            window_checks[check] = window_checks.get(check, 0) + 1
    return NodeCompliance(
        node_id=node.node_id,
        status=status,
        compliant=selection.compliant(status),
        since=current.at if current is not None else None,
        reason=current.reason if current is not None else None,
        last_attested_at=newest.created_at if newest is not None else None,
        last_result=newest.status if newest is not None else None,
        failed_checks=newest.failed_checks if newest is not None else (),
        boot=boot_facts(newest),
        location=location_of(node),
        attestations=node.attestations,
        refused=len(node.refusals),
        window_failed_checks=dict(sorted(window_checks.items())) if window_checks else {},
    )


def boot_facts(newest: NewestResult | None) -> BootFacts:
    """What the newest result's stored claims say the node booted."""
    if newest is None:
        return BootFacts()
    return BootFacts(
        firmware=_texts(newest.firmware),
        kernel=newest.kernel if isinstance(newest.kernel, str) else None,
        kernel_digest=newest.kernel_digest if isinstance(newest.kernel_digest, str) else None,
        secure_boot=newest.secure_boot,
        images=images(newest.images),
    )


def images(value: object) -> tuple[str, ...]:
    """Container images as a result records them, each as one line of text: a list of
    references or digests, of {name|image|reference, digest} objects, or a mapping of
    name to digest.  Anything else shows nothing (the claim's shape is not settled)."""
    if isinstance(value, dict):
        return tuple(f"{name}@{digest}" for name, digest in value.items())
    if not isinstance(value, list):
        return ()
    shown: list[str] = []
    for item in value:
        if isinstance(item, str):
            shown.append(item)
        elif isinstance(item, dict):
            name = next((item[k] for k in ("name", "image", "reference", "ref") if k in item), None)
            digest = item.get("digest")
            parts = [str(part) for part in (name, digest) if part is not None]
            if parts:
                shown.append("@".join(parts))
    return tuple(shown)


def location_of(node: NodeHistory) -> Location:
    """The site the newest result observed (the node's last site when that result is
    the node's last), the assigned tag, and the tag the newest result attested."""
    newest = node.newest
    site = newest.observed_site if newest is not None else None
    if site is None and newest is not None and newest.result_id == node.last_result_id:
        site = node.last_site
    attested = newest.attested if newest is not None else None
    return Location(
        site=site,
        assigned=dict(node.tag),
        attested=_string_map(attested) if isinstance(attested, dict) else None,
    )


# --- the fleet -----------------------------------------------------------------------


def totals(nodes: Sequence[NodeCompliance]) -> FleetTotals:
    failed: Counter[str] = Counter()
    failing: Counter[str] = Counter()
    for node in nodes:
        failed.update(node.window_failed_checks)
        failing.update(node.window_failed_checks.keys())
    return FleetTotals(
        nodes=len(nodes),
        compliant=sum(node.compliant for node in nodes),
        by_status=dict(sorted(Counter(node.status for node in nodes).items())),
        attestations=sum(node.attestations for node in nodes),
        refused=sum(node.refused for node in nodes),
        failed_checks=dict(sorted(failed.items())),
        nodes_failing=dict(sorted(failing.items())),
    )


def requirement_outcomes(nodes: Sequence[NodeCompliance]) -> tuple[RequirementOutcome, ...]:
    """Per requirement, the nodes failing one of its checks now (for pool membership:
    out of compliance now), and those failing one of its checks in the window."""
    failing = [
        (frozenset(node.failed_checks), frozenset(node.window_failed_checks))
        for node in nodes
        if node.failed_checks or node.window_failed_checks
    ]
    out_of_pool = sum(not node.compliant for node in nodes)
    outcomes = []
    for requirement in REQUIREMENTS:
        checks = frozenset(requirement.checks)
        if requirement.pool:
            now = out_of_pool
        else:
            now = sum(not checks.isdisjoint(latest) for latest, _ in failing)
        in_window = sum(not checks.isdisjoint(window) for _, window in failing)
        outcomes.append(RequirementOutcome(requirement.id, now, in_window))
    return tuple(outcomes)


def _texts(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    return ()


def _string_map(value: dict[object, object]) -> dict[str, str]:
    return {str(name): str(attribute) for name, attribute in value.items()}

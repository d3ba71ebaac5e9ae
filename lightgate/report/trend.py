"""The fleet's trust over the window: at each point, how many selected nodes were in
each trust state (the trusted compute pool's size is the affirming count).  Pure.

A state held from one change to the next covers a run of consecutive points, found by
bisection; runs are added to per-state difference arrays and summed once at the end.
The cost is the transitions' (times log points) plus points x states, not nodes x
points: a month of daily points over 10^4 nodes stays a few tens of milliseconds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from lightgate.report.history import StateChange
from lightgate.report.model import TrendPoint
from verifier.store.records import TRUST_ENROLLED


def trend(
    timelines: Mapping[str, Sequence[StateChange]],
    created: Mapping[str, datetime],
    points: Sequence[datetime],
) -> tuple[TrendPoint, ...]:
    """The states at every point of the nodes in `timelines` known by then (a node
    counts from its `created` time, 'enrolled' until its first transition; a change
    counts from its own moment on)."""
    size = len(points)
    runs: dict[str, list[int]] = {}

    def hold(state: str, first: int, end: int) -> None:
        if first < end:
            run = runs.setdefault(state, [0] * (size + 1))
            run[first] += 1
            run[end] -= 1

    for node_id, timeline in timelines.items():
        begin = bisect_left(points, created[node_id])  # the first point the node is known
        state = TRUST_ENROLLED
        for change in timeline:
            takes_over = bisect_left(points, change.at)  # the first point at or after it
            if takes_over > begin:
                hold(state, begin, takes_over)
                begin = takes_over
            state = change.state
        hold(state, begin, size)
    totals = {state: _running_sums(run, size) for state, run in sorted(runs.items())}
    out = []
    for position, moment in enumerate(points):
        states = {s: counts[position] for s, counts in totals.items() if counts[position]}
        out.append(TrendPoint(at=moment, nodes=sum(states.values()), states=states))
    return tuple(out)


def _running_sums(run: Sequence[int], size: int) -> list[int]:
    sums, total = [], 0
    for position in range(size):
        total += run[position]
        sums.append(total)
    return sums


@dataclass(frozen=True, slots=True)
class TrendSummary:
    """The trusted (affirming) count at the first and last points, and its extremes."""

    first: int
    last: int
    lowest: int
    highest: int


def summarise(points: Sequence[TrendPoint]) -> TrendSummary:
    trusted = [point.trusted for point in points] or [0]
    return TrendSummary(trusted[0], trusted[-1], min(trusted), max(trusted))

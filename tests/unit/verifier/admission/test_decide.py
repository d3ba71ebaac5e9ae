"""Admission decisions: every node state, location requirements, ordering and scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from verifier.admission.decide import (
    MAX_SCORE,
    NodeTrust,
    RefusalMemo,
    Requirements,
    filter_nodes,
    judge,
    score,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EU = {"region": "eu-west", "dc": "ams1"}


def node(state: str, node_id: str = "n1", **changes: object) -> NodeTrust:
    fields: dict[str, object] = {
        "node_id": node_id,
        "state": state,
        "since": NOW - timedelta(minutes=5),
        "expires_at": NOW + timedelta(seconds=60) if state in ("affirming", "warning") else None,
        "reason": None if state == "affirming" else f"{state}: because",
        "status": state if state in ("affirming", "warning", "contraindicated") else None,
        "ear": "ear.jwt",
        "location": EU,
        "attested_at": NOW - timedelta(seconds=10),
    }
    fields.update(changes)
    return NodeTrust(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        (node("affirming"), None),
        (node("warning"), "untrusted"),
        (node("contraindicated"), "untrusted"),
        (node("enrolled", expires_at=None, reason=None, status=None), "untrusted"),
        (node("expired"), "expired"),
        (node("affirming", expires_at=NOW), "expired"),  # lasted out, before any sweep
        (node("revoked", reason="disk stolen"), "revoked"),
        (None, "unknown"),
    ],
)
def test_every_state(entry: NodeTrust | None, kind: str | None) -> None:
    verdict = judge("n1", entry, Requirements(), NOW)
    assert (verdict.allowed, verdict.kind) == (kind is None, kind)
    assert verdict.reason


def test_revocation_reason_and_expiry_are_named() -> None:
    assert (
        "disk stolen"
        in judge("n1", node("revoked", reason="disk stolen"), Requirements(), NOW).reason
    )
    lapsed = judge(
        "n1", node("affirming", expires_at=NOW - timedelta(seconds=1)), Requirements(), NOW
    )
    assert "lasted until" in lapsed.reason


def test_warning_only_where_the_workload_allows_it() -> None:
    assert judge("n1", node("warning"), Requirements(allow_warning=True), NOW).allowed
    assert not judge("n1", node("contraindicated"), Requirements(allow_warning=True), NOW).allowed


def test_location_requirements_use_the_attested_location() -> None:
    eu = Requirements("web", {"region": frozenset({"eu-west", "eu-central"})})
    us = Requirements("db", {"region": frozenset({"us-east"})})
    assert judge("n1", node("affirming"), eu, NOW).allowed
    refused = judge("n1", node("affirming"), us, NOW)
    assert refused.kind == "wrong-location"
    assert (
        refused.reason
        == "db may run only where region in {us-east}: the node attested region=eu-west"
    )
    untagged = judge("n1", node("affirming", location={}), eu, NOW)
    assert untagged.kind == "wrong-location" and "attested no region" in untagged.reason
    # Trust comes first: an untrusted node in the wrong place is refused as untrusted.
    assert judge("n1", node("contraindicated"), us, NOW).kind == "untrusted"


def test_filter_keeps_order_and_judges_each_candidate_once() -> None:
    entries = {
        "a": node("affirming", "a"),
        "b": node("revoked", "b"),
        "c": node("affirming", "c"),
    }
    outcome = filter_nodes(["c", "b", "a", "c", "zz"], entries.get, Requirements(), NOW)
    assert outcome.allowed == ("c", "a")
    assert [(v.node_id, v.kind) for v in outcome.refused] == [("b", "revoked"), ("zz", "unknown")]


def test_scores_rank_affirming_over_warning_and_fresh_over_stale() -> None:
    allow = Requirements(allow_warning=True)
    fresh = node("affirming", attested_at=NOW, expires_at=NOW + timedelta(seconds=60))
    stale = node(
        "affirming", attested_at=NOW - timedelta(seconds=55), expires_at=NOW + timedelta(seconds=5)
    )
    warning = node("warning", attested_at=NOW, expires_at=NOW + timedelta(seconds=60))
    assert score(fresh, allow, NOW) == MAX_SCORE
    assert score(warning, allow, NOW) < score(stale, allow, NOW) < score(fresh, allow, NOW)
    assert score(node("revoked"), allow, NOW) == 0
    assert score(None, allow, NOW) == 0
    assert score(warning, Requirements(), NOW) == 0  # not allowed at all


def test_the_refusal_memo_words_refusals_only_while_nothing_changed() -> None:
    """Filter reuses a refused verdict only for the same index entry on the same side of
    its expiry; a changed entry is judged again, and admission never comes from it."""
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    memo = RefusalMemo()
    eu = Requirements(workload="db", location={"region": frozenset({"eu-west"})})
    us = NodeTrust("n1", "affirming", since=now, expires_at=now + timedelta(minutes=5),
                   location={"region": "us-east"})  # fmt: skip
    index = {"n1": us}
    first = filter_nodes(["n1"], index.get, eu, now, memo)
    assert [v.kind for v in first.refused] == ["wrong-location"]
    again = filter_nodes(["n1"], index.get, eu, now, memo)
    assert again.refused[0] is first.refused[0]  # reused, not rewritten
    # the same entry past its expiry: judged again, now expired
    later = filter_nodes(["n1"], index.get, eu, now + timedelta(minutes=6), memo)
    assert [v.kind for v in later.refused] == ["expired"]
    # a new entry (the node attested in eu-west): decided afresh, and admitted
    index["n1"] = NodeTrust("n1", "affirming", since=now, expires_at=now + timedelta(minutes=5),
                            location={"region": "eu-west"})  # fmt: skip
    assert filter_nodes(["n1"], index.get, eu, now, memo).allowed == ("n1",)
    # other requirements are other verdicts
    other = Requirements(workload="web", location={"region": frozenset({"ap-south"})})
    index["n1"] = us
    assert "web" in filter_nodes(["n1"], index.get, other, now, memo).refused[0].reason

"""The Kubernetes scheduler extender's `filter` and `prioritize` verbs, as pure
functions over the trust index.

The extender (k8s.io/kube-scheduler/extender/v1, types.go) speaks Go structs without JSON
tags, so members are spelled as the Go fields: `Pod`, `Nodes`, `NodeNames` in;
`Nodes`/`NodeNames`, `FailedNodes`, `FailedAndUnresolvableNodes`, `Error` out;
`[{"Host", "Score"}]` for prioritize.  How kube-scheduler treats the answers
(pkg/scheduler/extender.go, schedule_one.go), and what we chose because of it:

- Filter: a non-200 answer and a non-empty `Error` both fail the pod's scheduling cycle
  when the extender is not `ignorable` (our manifest sets `ignorable: false`): no node is
  admitted, the pod is retried.  Malformed input is answered 200 with `Error` set and no
  node, because the scheduler copies `Error` into the pod's FailedScheduling event, where
  a 400 shows only "code 400".  A verifier malfunction is a 500 from the HTTPS layer:
  still no node.  Either way the scheduler fails closed.
- Every refusal goes to `FailedAndUnresolvableNodes`.  The two maps differ only in what
  the scheduler's preemption does: for a node in `FailedNodes` (Unschedulable) it may
  evict lower-priority pods there, re-running only its own filter plugins, never the
  extender; evicting pods cannot make a node trusted, enrolled, unrevoked or elsewhere, so
  such an eviction would always be in vain.  A node that re-attests is still picked up:
  an unschedulable pod is retried the same way whichever map named its nodes.
- Messages in the maps are one line per kind of refusal, without node names: the
  scheduler counts identical messages ("0/40 nodes are available: 40 lightgate: ...");
  each node's full reason is logged here, one event per decision.
- Prioritize: errors are ignored by the scheduler (no score from this extender), so
  malformed input is a plain 400.  Scores are advisory; the filter is what enforces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple

from lightgate.config import AdmissionConfig
from verifier.admission.decide import RefusalKind, Requirements, Verdict, filter_nodes, score
from verifier.admission.kubernetes import (
    Candidate,
    KubernetesInputMalformed,
    Lookup,
    PodRef,
    decode_object,
    kind_and_reason,
    kubernetes_node_id,
    member_object,
    member_strings,
    member_text,
    pod_ref,
    requirements_from_annotations,
    unmapped_reason,
)

FILTER_PATH: Final = "/scheduler/filter"
PRIORITIZE_PATH: Final = "/scheduler/prioritize"

#: One line per kind of refusal for the scheduler's per-node maps (see the module doc).
_KIND_SUMMARY: Final[Mapping[RefusalKind, str]] = {
    "unknown": "lightgate: node not enrolled",
    "revoked": "lightgate: node's trust revoked",
    "expired": "lightgate: node's trust expired (no recent attestation)",
    "untrusted": "lightgate: node not trusted (attestation not affirming)",
    "wrong-location": "lightgate: node's attested location is not allowed",
}
#: A node `node_id_source: label` cannot map: unknown, and the line says why.
_UNMAPPED_SUMMARY: Final = "lightgate: node has no Lightgate node id (no mapping or label)"


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    pod: PodRef
    candidates: tuple[Candidate, ...]
    full_nodes: bool  # `Nodes` was sent (nodeCacheCapable: false), not `NodeNames`


class Refused(NamedTuple):
    candidate: Candidate
    reason: str  # the node's full reason, for the log
    summary: str  # the one line the scheduler shows (see the module doc)


@dataclass(frozen=True, slots=True)
class ExtenderOutcome:
    passed: tuple[Candidate, ...]
    refused: tuple[Refused, ...]


# --- scheduler extender ---------------------------------------------------------------


def parse_extender_args(body: bytes, config: AdmissionConfig) -> ExtenderArgs:
    """ExtenderArgs as kube-scheduler sends it: `Pod`, and one of `Nodes` (a v1.NodeList)
    or `NodeNames`; the other is null."""
    document = decode_object(body, "ExtenderArgs")
    pod = pod_ref(member_object(document, "Pod", "ExtenderArgs"), "ExtenderArgs.Pod")
    nodes, names = document.get("Nodes"), document.get("NodeNames")
    if (nodes is None) == (names is None):
        raise KubernetesInputMalformed("ExtenderArgs needs exactly one of Nodes and NodeNames")
    candidates = _node_list(nodes, config) if nodes is not None else _node_names(names, config)
    return ExtenderArgs(pod, _first_of_each_name(candidates), full_nodes=nodes is not None)


def _node_list(nodes: object, config: AdmissionConfig) -> list[Candidate]:
    if not isinstance(nodes, dict):
        raise KubernetesInputMalformed("ExtenderArgs.Nodes is not a v1.NodeList")
    items = nodes.get("items") or []  # an empty Go slice is marshalled as null
    if not isinstance(items, list):
        raise KubernetesInputMalformed("ExtenderArgs.Nodes.items is not a list")
    candidates = []
    for index, node in enumerate(items):
        where = f"ExtenderArgs.Nodes.items[{index}]"
        if not isinstance(node, dict):
            raise KubernetesInputMalformed(f"{where} is not a v1.Node")
        metadata = member_object(node, "metadata", where)
        name = member_text(metadata, "name", f"{where}.metadata")
        if not name:
            raise KubernetesInputMalformed(f"{where}.metadata.name is empty")
        labels = member_strings(metadata, "labels", f"{where}.metadata")
        candidates.append(Candidate(name, kubernetes_node_id(name, labels, config), node))
    return candidates


def _node_names(names: object, config: AdmissionConfig) -> list[Candidate]:
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise KubernetesInputMalformed("ExtenderArgs.NodeNames is not a list of node names")
    return [Candidate(name, kubernetes_node_id(name, None, config)) for name in names]


def _first_of_each_name(candidates: Iterable[Candidate]) -> tuple[Candidate, ...]:
    seen: dict[str, Candidate] = {}
    for candidate in candidates:
        seen.setdefault(candidate.name, candidate)
    return tuple(seen.values())


def _ids_claimed_twice(candidates: Iterable[Candidate]) -> frozenset[str]:
    """Node ids more than one Kubernetes node maps to (a copied label, a bad table)."""
    first_name: dict[str, str] = {}
    twice: set[str] = set()
    for candidate in candidates:  # names are unique here (_first_of_each_name)
        if candidate.node_id is None:
            continue  # refused as unmapped, claims nothing
        if first_name.setdefault(candidate.node_id, candidate.name) != candidate.name:
            twice.add(candidate.node_id)
    return frozenset(twice)


def _claimed_twice(candidate: Candidate, candidates: Iterable[Candidate]) -> Refused:
    names = ", ".join(sorted(c.name for c in candidates if c.node_id == candidate.node_id))
    reason = f"node id {candidate.node_id} is claimed by Kubernetes nodes {names}"
    return Refused(candidate, reason, "lightgate: node id claimed by more than one node")


def _unmapped(candidate: Candidate) -> Refused:
    return Refused(candidate, f"unknown: {unmapped_reason(candidate.name)}", _UNMAPPED_SUMMARY)


def _refused(candidate: Candidate, verdict: Verdict, requirements: Requirements) -> Refused:
    summary = _KIND_SUMMARY[verdict.kind] if verdict.kind else "lightgate: refused"
    if verdict.kind == "wrong-location":
        summary += f" (needs {requirements.describe()})"
    return Refused(candidate, kind_and_reason(verdict), summary)


def filter_candidates(
    args: ExtenderArgs, requirements: Requirements, lookup: Lookup, now: datetime
) -> ExtenderOutcome:
    """Which candidates may run the pod (in the order given), and why the others not."""
    ambiguous = _ids_claimed_twice(args.candidates)
    judged = filter_nodes(
        (
            c.node_id
            for c in args.candidates
            if c.node_id is not None and c.node_id not in ambiguous
        ),
        lookup,
        requirements,
        now,
    )
    allowed = set(judged.allowed)
    verdicts = {verdict.node_id: verdict for verdict in judged.refused}
    passed: list[Candidate] = []
    refused: list[Refused] = []
    for candidate in args.candidates:
        if candidate.node_id is None:
            refused.append(_unmapped(candidate))
        elif candidate.node_id in ambiguous:
            refused.append(_claimed_twice(candidate, args.candidates))
        elif candidate.node_id in allowed:
            passed.append(candidate)
        else:
            refused.append(_refused(candidate, verdicts[candidate.node_id], requirements))
    return ExtenderOutcome(tuple(passed), tuple(refused))


def filter_result(args: ExtenderArgs, outcome: ExtenderOutcome) -> dict[str, object]:
    """ExtenderFilterResult: the passing nodes in the form they came in, and every
    refused one in FailedAndUnresolvableNodes (see the module doc)."""
    return {
        "Nodes": {"items": [c.node for c in outcome.passed]} if args.full_nodes else None,
        "NodeNames": None if args.full_nodes else [c.name for c in outcome.passed],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {r.candidate.name: r.summary for r in outcome.refused},
        "Error": "",
    }


def filter_error(message: str) -> dict[str, object]:
    """An ExtenderFilterResult admitting no node: the scheduler fails the cycle on
    `Error` and shows it in the pod's events."""
    return {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": f"lightgate: {message}",
    }


def prioritize_result(
    args: ExtenderArgs, requirements: Requirements, lookup: Lookup, now: datetime
) -> list[dict[str, object]]:
    """HostPriorityList: `decide.score` (0..10, kube-scheduler's MaxExtenderPriority)."""
    ambiguous = _ids_claimed_twice(args.candidates)
    return [
        {
            "Host": candidate.name,
            "Score": 0
            if candidate.node_id is None or candidate.node_id in ambiguous
            else score(lookup(candidate.node_id), requirements, now),
        }
        for candidate in args.candidates
    ]


def extender_requirements(args: ExtenderArgs, config: AdmissionConfig) -> Requirements:
    return requirements_from_annotations(
        args.pod.annotations, config.annotation_prefix, args.pod.workload
    )

"""The Kubernetes doors: the scheduler extender (filter, prioritize) and the validating
admission webhook, fed requests shaped as kube-scheduler and the API server send them
(k8s.io/kube-scheduler/extender/v1 types.go; admission.k8s.io/v1 AdmissionReview), and
the manifests in deploy/kubernetes/ that point Kubernetes at the routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from lightgate.config import AdmissionConfig, VerifierConfig
from lightgate.errors import Refusal
from verifier.admission.decide import NodeTrust, Requirements
from verifier.admission.extender import FILTER_PATH, PRIORITIZE_PATH, parse_extender_args
from verifier.admission.kubernetes import (
    KubernetesInputMalformed,
    RequirementsMalformed,
    kubernetes_node_id,
    requirements_from_annotations,
)
from verifier.admission.webhook import VALIDATE_PATH
from verifier.api.https import HttpsServer, Request, Response, Router
from verifier.api.kubernetes import add_kubernetes_routes

REPO = Path(__file__).resolve().parents[4]
DEPLOY = REPO / "deploy" / "kubernetes"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EU = {"region": "eu-west", "dc": "ams1"}
PREFIX = "lightgate.io/"
OPEN = AdmissionConfig(webhook_on_error="open")


def entry(state: str, node_id: str, **changes: Any) -> NodeTrust:
    fields: dict[str, Any] = {
        "node_id": node_id,
        "state": state,
        "since": NOW - timedelta(minutes=5),
        "expires_at": NOW + timedelta(seconds=50) if state in ("affirming", "warning") else None,
        "reason": None if state == "affirming" else f"{state}: PCR 7 differs from golden",
        "location": EU,
        "attested_at": NOW - timedelta(seconds=10),
    }
    fields.update(changes)
    return NodeTrust(**fields)


#: Kubernetes node name -> its trust entry (the node id is the name unless mapped).
INDEX: dict[str, NodeTrust] = {
    e.node_id: e
    for e in (
        entry("affirming", "worker-affirming"),
        entry("warning", "worker-warning"),
        entry("contraindicated", "worker-contraindicated"),
        entry("affirming", "worker-lapsed", expires_at=NOW - timedelta(seconds=1)),
        entry("expired", "worker-expired", reason="no attestation since 11:58"),
        entry("revoked", "worker-revoked", reason="chassis intrusion reported"),
        entry("enrolled", "worker-enrolled", reason=None),
        entry("affirming", "worker-us", location={"region": "us-east", "dc": "iad1"}),
        entry("affirming", "worker-nowhere", location={}),
        # older evidence: less of its trust left than worker-affirming's
        entry("affirming", "worker-stale", attested_at=NOW - timedelta(seconds=50)),
        entry("warning", "tpm-0c1f", location=EU),  # enrolled under its TPM's id
    )
}


def lookup(node_id: str) -> NodeTrust | None:
    return INDEX.get(node_id)


def clock() -> datetime:
    return NOW


# --- Kubernetes objects, as the API server serialises them ----------------------------


def pod(annotations: Mapping[str, str] | None = None, node_name: str | None = None) -> Any:
    """A v1.Pod of a Deployment, pending, as kube-scheduler holds it."""
    document: dict[str, Any] = {
        "metadata": {
            "name": "web-7d4b9c6f5-x2x9q",
            "generateName": "web-7d4b9c6f5-",
            "namespace": "shop",
            "uid": "5b1f1c55-3c2b-4a4e-9d0c-1f2e3d4c5b6a",
            "resourceVersion": "81234",
            "creationTimestamp": "2026-11-26T11:59:58Z",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c6f5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T08:00:00Z"}
            | dict(annotations or {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d4b9c6f5",
                    "uid": "0e6c1d2a-7b8c-4d9e-a0f1-2b3c4d5e6f70",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example/shop/web:1.4.2",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "schedulerName": "lightgate-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }
    if node_name is not None:
        document["spec"]["nodeName"] = node_name
    return document


def node(name: str, labels: Mapping[str, str] | None = None) -> Any:
    """A v1.Node as kube-scheduler holds it (nodeCacheCapable: false sends these)."""
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "80011",
            "creationTimestamp": "2026-10-01T09:00:00Z",
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": "eu-west-1a",
            }
            | dict(labels or {}),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {
            "capacity": {"cpu": "8", "memory": "32853560Ki", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32751160Ki", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": "2026-11-26T11:59:40Z",
                    "lastTransitionTime": "2026-10-01T09:01:00Z",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.1.0.21"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.34.2",
                "containerRuntimeVersion": "containerd://2.1.4",
                "kernelVersion": "6.8.0-49-generic",
                "osImage": "Ubuntu 24.04.1 LTS",
                "architecture": "amd64",
                "operatingSystem": "linux",
            },
        },
    }


def names_args(names: list[str], annotations: Mapping[str, str] | None = None) -> Any:
    """ExtenderArgs with nodeCacheCapable: true (Go marshals the nil NodeList as null)."""
    return {"Pod": pod(annotations), "Nodes": None, "NodeNames": names}


def nodes_args(nodes: list[Any], annotations: Mapping[str, str] | None = None) -> Any:
    """ExtenderArgs with nodeCacheCapable: false: a v1.NodeList, NodeNames null."""
    return {"Pod": pod(annotations), "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None}


def binding_review(
    node_name: str, annotations: Mapping[str, str] | None = None, uid: str = "b-1"
) -> Any:
    """What the API server sends for kube-scheduler's POST .../pods/<name>/binding."""
    metadata: dict[str, Any] = {
        "name": "web-7d4b9c6f5-x2x9q",
        "namespace": "shop",
        "uid": "5b1f1c55-3c2b-4a4e-9d0c-1f2e3d4c5b6a",
        "creationTimestamp": None,
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Binding"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "binding",
            "requestKind": {"group": "", "version": "v1", "kind": "Binding"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "requestSubResource": "binding",
            "name": "web-7d4b9c6f5-x2x9q",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:kube-scheduler",
                "groups": ["system:authenticated"],
            },
            "object": {
                "kind": "Binding",
                "apiVersion": "v1",
                "metadata": metadata,
                "target": {"kind": "Node", "name": node_name},
            },
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def legacy_binding_review(node_name: str, uid: str = "lb-1") -> Any:
    """POST /api/v1/namespaces/shop/bindings: the `bindings` resource, no subresource."""
    document = binding_review(node_name, uid=uid)
    request = document["request"]
    for field in ("resource", "requestResource"):
        request[field] = {"group": "", "version": "v1", "resource": "bindings"}
    for field in ("subResource", "requestSubResource"):
        del request[field]  # the API server leaves an empty subresource out
    return document


def pod_review(
    node_name: str | None,
    annotations: Mapping[str, str] | None = None,
    operation: str = "CREATE",
    uid: str = "p-1",
) -> Any:
    """What the API server sends for POST .../namespaces/shop/pods."""
    created = pod(annotations, node_name)
    created["metadata"].pop("resourceVersion")
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web-7d4b9c6f5-x2x9q",
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": created,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


# --- calling the routes ---------------------------------------------------------------


def routes(
    config: AdmissionConfig | None = None, trust: Callable[[str], NodeTrust | None] = lookup
) -> Router:
    router = Router()
    add_kubernetes_routes(router, trust, clock, config or AdmissionConfig())
    return router


def call(path: str, document: Any, router: Router | None = None) -> tuple[int, Any]:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    handler = (router or routes()).routes[("POST", path)]
    request = Request("POST", path, "", {"content-type": "application/json"}, body, "10.0.0.1")
    response: Response = handler(request)
    assert response.content_type == "application/json"
    return response.status, json.loads(response.body)


def review(document: Any, config: AdmissionConfig | None = None) -> Any:
    status, answer = call(VALIDATE_PATH, document, routes(config))
    assert status == 200
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    return answer["response"]


# --- annotations ----------------------------------------------------------------------


def test_requirements_from_annotations() -> None:
    requirements = requirements_from_annotations(
        {
            "lightgate.io/location.region": "eu-west, eu-central",
            "lightgate.io/location.dc": "ams1",
            "lightgate.io/allow-warning": "true",
            "lightgate.io/owner": "team-shop",  # ours, but not a requirement
            "example.com/location.region": "us-east",  # not ours
            "kubectl.kubernetes.io/restartedAt": "2026-11-20T08:00:00Z",
        },
        PREFIX,
        "pod shop/web",
    )
    assert requirements == Requirements(
        workload="pod shop/web",
        location={"region": frozenset({"eu-west", "eu-central"}), "dc": frozenset({"ams1"})},
        allow_warning=True,
    )


def test_no_annotations_ask_for_an_affirming_node_anywhere() -> None:
    requirements = requirements_from_annotations({"app": "web"}, PREFIX, "pod shop/web")
    assert (dict(requirements.location), requirements.allow_warning) == ({}, False)
    assert not requirements_from_annotations(
        {"lightgate.io/allow-warning": "false"}, PREFIX, "w"
    ).allow_warning


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lightgate.io/location.region", ""),
        ("lightgate.io/location.region", " , "),
        ("lightgate.io/location.region", "eu-west,,eu-central"),
        ("lightgate.io/location.region", "eu-west,"),
        ("lightgate.io/location.", "eu-west"),  # no attribute
        ("lightgate.io/location", "eu-west"),
        ("lightgate.io/location-region", "eu-west"),  # a misspelt requirement
        ("lightgate.io/locations.region", "eu-west"),
        ("lightgate.io/location.Region", "eu-west"),  # not an asset tag attribute name
        ("lightgate.io/location.re gion", "eu-west"),
        ("lightgate.io/location.region", "eu\x00west"),
        ("lightgate.io/location.region", "x" * 129),
        ("lightgate.io/allow-warning", "yes"),
        ("lightgate.io/allow-warning", "True"),
        ("lightgate.io/allow-warning", ""),
    ],
)
def test_malformed_annotations_are_refused(key: str, value: str) -> None:
    with pytest.raises(RequirementsMalformed) as caught:
        requirements_from_annotations({key: value}, PREFIX, "pod shop/web")
    assert isinstance(caught.value, Refusal)
    assert caught.value.check == "workload-annotations"
    assert key in caught.value.reason


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=6))
def test_any_annotations_read_or_refuse(annotations: dict[str, str]) -> None:
    keys = {f"{PREFIX}{key}": value for key, value in annotations.items()}
    try:
        requirements = requirements_from_annotations(keys, PREFIX, "w")
    except RequirementsMalformed:
        return
    for values in requirements.location.values():
        assert values and all(values)


# --- node names -----------------------------------------------------------------------


def test_node_id_from_the_table_then_the_label_then_the_name() -> None:
    config = AdmissionConfig(node_names={"worker-7": "tpm-0c1f"}, node_label="example/id")
    assert kubernetes_node_id("worker-7", {"example/id": "other"}, config) == "tpm-0c1f"
    assert kubernetes_node_id("worker-8", {"example/id": "tpm-9a9a"}, config) == "tpm-9a9a"
    assert kubernetes_node_id("worker-8", {"example/id": ""}, config) == "worker-8"
    assert kubernetes_node_id("worker-8", None, config) == "worker-8"


def test_label_source_maps_by_the_table_then_the_label_and_never_the_name() -> None:
    config = AdmissionConfig(
        node_id_source="label", node_names={"worker-7": "tpm-0c1f"}, node_label="example/id"
    )
    assert kubernetes_node_id("worker-7", None, config) == "tpm-0c1f"
    assert kubernetes_node_id("worker-8", {"example/id": "tpm-9a9a"}, config) == "tpm-9a9a"
    assert kubernetes_node_id("worker-8", {"example/id": ""}, config) is None
    assert kubernetes_node_id("worker-8", {}, config) is None
    assert kubernetes_node_id("worker-8", None, config) is None


# --- extender: filter -----------------------------------------------------------------

ALL_NODES = [*sorted(INDEX), "worker-unknown"]

#: name -> (allowed for a pod without annotations, the scheduler's line when refused)
FILTERED: dict[str, tuple[bool, str]] = {
    "worker-affirming": (True, ""),
    "worker-stale": (True, ""),
    "worker-us": (True, ""),
    "worker-nowhere": (True, ""),
    "worker-warning": (False, "lightgate: node not trusted (attestation not affirming)"),
    "tpm-0c1f": (False, "lightgate: node not trusted (attestation not affirming)"),
    "worker-contraindicated": (False, "lightgate: node not trusted (attestation not affirming)"),
    "worker-enrolled": (False, "lightgate: node not trusted (attestation not affirming)"),
    "worker-lapsed": (False, "lightgate: node's trust expired (no recent attestation)"),
    "worker-expired": (False, "lightgate: node's trust expired (no recent attestation)"),
    "worker-revoked": (False, "lightgate: node's trust revoked"),
    "worker-unknown": (False, "lightgate: node not enrolled"),
}


def test_filter_node_names_every_state() -> None:
    status, result = call(FILTER_PATH, names_args(ALL_NODES))
    assert status == 200
    assert result["Error"] == ""
    assert result["Nodes"] is None
    assert result["NodeNames"] == [name for name in ALL_NODES if FILTERED[name][0]]
    assert result["FailedNodes"] == {}
    assert result["FailedAndUnresolvableNodes"] == {
        name: line for name, (allowed, line) in FILTERED.items() if not allowed
    }


@pytest.mark.parametrize("name", sorted(FILTERED))
def test_filter_one_node_in_each_state(name: str) -> None:
    _, result = call(FILTER_PATH, names_args([name]))
    allowed, line = FILTERED[name]
    assert result["NodeNames"] == ([name] if allowed else [])
    assert result["FailedAndUnresolvableNodes"] == ({} if allowed else {name: line})


def test_filter_warning_nodes_when_the_pod_allows_them() -> None:
    args = names_args(
        ["worker-warning", "worker-contraindicated"], {f"{PREFIX}allow-warning": "true"}
    )
    _, result = call(FILTER_PATH, args)
    assert result["NodeNames"] == ["worker-warning"]
    assert list(result["FailedAndUnresolvableNodes"]) == ["worker-contraindicated"]


def test_filter_by_attested_location() -> None:
    args = names_args(
        ["worker-affirming", "worker-us", "worker-nowhere"],
        {f"{PREFIX}location.region": "eu-west,eu-central"},
    )
    _, result = call(FILTER_PATH, args)
    assert result["NodeNames"] == ["worker-affirming"]
    line = (
        "lightgate: node's attested location is not allowed (needs region in {eu-central, eu-west})"
    )
    assert result["FailedAndUnresolvableNodes"] == {"worker-us": line, "worker-nowhere": line}


def test_filter_full_nodes_mapped_by_label() -> None:
    config = AdmissionConfig(node_label="node-restriction.kubernetes.io/lightgate-node-id")
    label = {config.node_label: "tpm-0c1f"}
    nodes = [node("worker-affirming"), node("gpu-3", label), node("worker-revoked")]
    annotations = {f"{PREFIX}allow-warning": "true"}
    status, result = call(FILTER_PATH, nodes_args(nodes, annotations), routes(config))
    assert status == 200
    assert result["NodeNames"] is None
    # The passing nodes go back exactly as they came.
    assert result["Nodes"] == {"items": [nodes[0], nodes[1]]}
    assert result["FailedAndUnresolvableNodes"] == {
        "worker-revoked": "lightgate: node's trust revoked"
    }


@pytest.mark.parametrize("name", sorted(FILTERED))
def test_filter_full_nodes_every_state(name: str) -> None:
    _, result = call(FILTER_PATH, nodes_args([node(name)]))
    allowed, line = FILTERED[name]
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ([name] if allowed else [])
    assert result["FailedAndUnresolvableNodes"] == ({} if allowed else {name: line})


def test_filter_label_ignored_without_full_nodes_and_table_first() -> None:
    config = AdmissionConfig(node_names={"gpu-3": "worker-affirming"})
    _, result = call(FILTER_PATH, names_args(["gpu-3", "gpu-4"]), routes(config))
    assert result["NodeNames"] == ["gpu-3"]
    assert result["FailedAndUnresolvableNodes"] == {"gpu-4": "lightgate: node not enrolled"}


LABEL_SOURCE = AdmissionConfig(node_id_source="label", node_names={"gpu-3": "worker-affirming"})
UNMAPPED_LINE = "lightgate: node has no Lightgate node id (no mapping or label)"


def test_label_source_never_takes_a_node_name_for_a_node_id_full_nodes() -> None:
    """`node_id_source: label`: a node neither listed nor labelled is refused, even when
    its name is the id of a trusted node (a node picks its own id at enrollment)."""
    label = {LABEL_SOURCE.node_label: "worker-stale"}
    empty = {LABEL_SOURCE.node_label: ""}
    nodes = [node("worker-affirming"), node("labelled", label), node("gpu-3"), node("x", empty)]
    _, result = call(FILTER_PATH, nodes_args(nodes), routes(LABEL_SOURCE))
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["labelled", "gpu-3"]
    assert result["FailedAndUnresolvableNodes"] == {
        "worker-affirming": UNMAPPED_LINE,
        "x": UNMAPPED_LINE,
    }


def test_label_source_never_takes_a_node_name_for_a_node_id_node_names() -> None:
    names = names_args(["gpu-3", "worker-affirming", "worker-revoked"])
    _, result = call(FILTER_PATH, names, routes(LABEL_SOURCE))
    assert result["NodeNames"] == ["gpu-3"]
    assert result["FailedAndUnresolvableNodes"] == {
        "worker-affirming": UNMAPPED_LINE,
        "worker-revoked": UNMAPPED_LINE,
    }


def test_label_source_logs_why_a_node_is_unmapped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="lightgate.verifier.admission"):
        call(FILTER_PATH, names_args(["worker-affirming"]), routes(LABEL_SOURCE))
    [record] = [r for r in caplog.records if r.getMessage() == "extender filter"]
    [entry] = record.__dict__["fields"]["refused"]
    assert entry["node_id"] is None
    assert "worker-affirming has no Lightgate node id" in entry["reason"]


def test_label_source_scores_an_unmapped_node_zero() -> None:
    names = names_args(["worker-affirming", "gpu-3"])
    _, result = call(PRIORITIZE_PATH, names, routes(LABEL_SOURCE))
    scores = {entry["Host"]: entry["Score"] for entry in result}
    assert scores["worker-affirming"] == 0
    assert scores["gpu-3"] > 0
    label = {LABEL_SOURCE.node_label: "worker-stale"}
    _, full = call(
        PRIORITIZE_PATH,
        nodes_args([node("x", label), node("worker-affirming")]),
        routes(LABEL_SOURCE),
    )
    assert [entry["Score"] > 0 for entry in full] == [True, False]


@pytest.mark.parametrize(
    "document",
    [
        binding_review("worker-affirming"),
        legacy_binding_review("worker-affirming"),
        pod_review("worker-affirming"),
    ],
)
def test_label_source_webhook_refuses_a_node_it_cannot_map(document: Any) -> None:
    """The webhook never sees labels: only `node_names` maps a node for it."""
    refused = review(document, LABEL_SOURCE)
    assert not refused["allowed"]
    assert refused["status"]["code"] == 403
    message = refused["status"]["message"]
    assert "on node worker-affirming: unknown: Kubernetes node worker-affirming has no" in message
    assert "Lightgate node id" in message
    placed = json.loads(json.dumps(document).replace("worker-affirming", "gpu-3"))
    assert review(placed, LABEL_SOURCE)["allowed"]


def test_filter_logs_one_event_with_every_node(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="lightgate.verifier.admission")
    call(FILTER_PATH, names_args(["worker-affirming", "worker-revoked"]))
    [record] = [r for r in caplog.records if r.getMessage() == "extender filter"]
    fields = record.__dict__["fields"]
    assert fields["allowed"] == 1  # counted; every refused node is named
    [refused] = fields["refused"]
    assert refused["node_id"] == "worker-revoked"
    assert refused["reason"] == "revoked: chassis intrusion reported"


def test_two_nodes_claiming_one_node_id_are_both_refused() -> None:
    """A label copied onto another node must not lend it the first node's trust."""
    config = AdmissionConfig()
    copied = {config.node_label: "worker-affirming"}
    nodes = [node("worker-affirming"), node("impostor", copied), node("worker-stale")]
    _, result = call(FILTER_PATH, nodes_args(nodes), routes(config))
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["worker-stale"]
    assert result["FailedAndUnresolvableNodes"] == {
        "worker-affirming": "lightgate: node id claimed by more than one node",
        "impostor": "lightgate: node id claimed by more than one node",
    }


def test_filter_input_read_as_kubernetes_sends_it() -> None:
    args = parse_extender_args(json.dumps(names_args(["a", "b", "a"])).encode(), AdmissionConfig())
    assert [c.name for c in args.candidates] == ["a", "b"]  # a name twice is one candidate
    assert args.pod.workload == "pod shop/web-7d4b9c6f5-x2x9q"
    assert not args.full_nodes
    empty = {"Pod": pod(), "Nodes": {"metadata": {}, "items": None}, "NodeNames": None}
    assert parse_extender_args(json.dumps(empty).encode(), AdmissionConfig()).candidates == ()


def malformed_args() -> list[Any]:
    no_name = node("x")
    del no_name["metadata"]["name"]
    bad_labels = node("x")
    bad_labels["metadata"]["labels"] = {"a": 1}
    bad_annotations = pod()
    bad_annotations["metadata"]["annotations"] = {"lightgate.io/allow-warning": True}
    return [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        {"Nodes": None, "NodeNames": ["worker-affirming"]},  # no Pod
        {"Pod": None, "Nodes": None, "NodeNames": ["worker-affirming"]},
        {"Pod": pod(), "Nodes": None, "NodeNames": None},
        {"Pod": pod()},
        {"Pod": pod(), "Nodes": {"items": [node("worker-affirming")]}, "NodeNames": ["x"]},
        {"Pod": pod(), "Nodes": None, "NodeNames": "worker-affirming"},
        {"Pod": pod(), "Nodes": None, "NodeNames": ["worker-affirming", 7]},
        {"Pod": pod(), "Nodes": None, "NodeNames": [""]},
        {"Pod": pod(), "Nodes": [node("worker-affirming")], "NodeNames": None},
        {"Pod": pod(), "Nodes": {"items": {"a": 1}}, "NodeNames": None},
        {"Pod": pod(), "Nodes": {"items": ["worker-affirming"]}, "NodeNames": None},
        {"Pod": pod(), "Nodes": {"items": [no_name]}, "NodeNames": None},
        {"Pod": pod(), "Nodes": {"items": [bad_labels]}, "NodeNames": None},
        {"Pod": bad_annotations, "Nodes": None, "NodeNames": ["worker-affirming"]},
        # lower-case member names are not what kube-scheduler sends
        {"pod": pod(), "nodes": None, "nodenames": ["worker-affirming"]},
        names_args(["worker-affirming"], {f"{PREFIX}location.region": ""}),
    ]


@pytest.mark.parametrize("document", malformed_args())
def test_malformed_filter_input_admits_no_node(document: Any) -> None:
    """200 with Error set: kube-scheduler fails the pod's cycle and shows the reason."""
    status, result = call(FILTER_PATH, document)
    assert status == 200
    assert result["Error"].startswith("lightgate: ")
    assert result["Nodes"] is None and result["NodeNames"] is None


def test_malformed_annotation_reason_reaches_the_scheduler() -> None:
    args = names_args(["worker-affirming"], {f"{PREFIX}allow-warning": "yes"})
    _, result = call(FILTER_PATH, args)
    assert "lightgate.io/allow-warning" in result["Error"]
    assert "workload-annotations" in result["Error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={"Pod": json_values, "Nodes": json_values, "NodeNames": json_values},
    )
)
def test_any_filter_input_is_judged_or_refused(document: dict[str, Any]) -> None:
    try:
        args = parse_extender_args(json.dumps(document).encode(), AdmissionConfig())
    except KubernetesInputMalformed:
        return
    assert all(c.name and c.node_id for c in args.candidates)


# --- extender: prioritize -------------------------------------------------------------


def test_prioritize_prefers_affirming_and_fresh() -> None:
    names = ["worker-warning", "worker-stale", "worker-revoked", "worker-affirming", "nobody"]
    args = names_args(names, {f"{PREFIX}allow-warning": "true"})
    status, result = call(PRIORITIZE_PATH, args)
    assert status == 200
    assert [entry["Host"] for entry in result] == names  # HostPriorityList, in order
    scores = {entry["Host"]: entry["Score"] for entry in result}
    assert all(isinstance(value, int) and 0 <= value <= 10 for value in scores.values())
    assert scores["worker-affirming"] > scores["worker-stale"] > scores["worker-warning"] > 0
    assert scores["worker-revoked"] == scores["nobody"] == 0


def test_prioritize_scores_refused_nodes_zero_and_uses_full_nodes() -> None:
    nodes = [node("worker-warning"), node("worker-affirming")]
    _, result = call(PRIORITIZE_PATH, nodes_args(nodes))
    assert result == [
        {"Host": "worker-warning", "Score": 0},
        {"Host": "worker-affirming", "Score": 9},
    ]


@pytest.mark.parametrize("document", malformed_args())
def test_malformed_prioritize_input_is_a_400(document: Any) -> None:
    """kube-scheduler ignores a failed prioritize: the filter is what enforces."""
    status, result = call(PRIORITIZE_PATH, document)
    assert status == 400
    assert result["error"]


# --- webhook --------------------------------------------------------------------------

#: name -> the refusal kind the webhook names (None: allowed)
REVIEWED: dict[str, str | None] = {
    "worker-affirming": None,
    "worker-stale": None,
    "worker-us": None,
    "worker-warning": "untrusted",
    "worker-contraindicated": "untrusted",
    "worker-enrolled": "untrusted",
    "worker-lapsed": "expired",
    "worker-expired": "expired",
    "worker-revoked": "revoked",
    "worker-unknown": "unknown",
}


@pytest.mark.parametrize("name", sorted(REVIEWED))
def test_binding_in_each_state(name: str) -> None:
    response = review(binding_review(name, uid=f"uid-{name}"))
    kind = REVIEWED[name]
    assert response["uid"] == f"uid-{name}"
    assert response["allowed"] is (kind is None)
    if kind is None:
        assert "status" not in response
        return
    assert response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    message = response["status"]["message"]
    assert f"on node {name}: {kind}: " in message
    assert "binding pod shop/web-7d4b9c6f5-x2x9q" in message


@pytest.mark.parametrize("name", sorted(REVIEWED))
def test_legacy_binding_in_each_state(name: str) -> None:
    """The older bindings resource places a pod as pods/binding does: judged the same."""
    response = review(legacy_binding_review(name, uid=f"uid-{name}"))
    kind = REVIEWED[name]
    assert response["allowed"] is (kind is None)
    if kind is not None:
        assert response["status"]["code"] == 403
        message = response["status"]["message"]
        assert f"binding pod shop/web-7d4b9c6f5-x2x9q on node {name}: {kind}: " in message


@pytest.mark.parametrize("name", sorted(REVIEWED))
def test_pod_created_on_a_node_in_each_state(name: str) -> None:
    response = review(pod_review(name))
    kind = REVIEWED[name]
    assert response["allowed"] is (kind is None)
    if kind is not None:
        assert response["status"]["code"] == 403
        assert (
            f"creating pod shop/web-7d4b9c6f5-x2x9q on node {name}: {kind}"
            in (response["status"]["message"])
        )


def test_pod_created_on_a_node_keeps_its_location_and_allow_warning() -> None:
    eu = {f"{PREFIX}location.region": "eu-west"}
    refused = review(pod_review("worker-us", eu))
    assert not refused["allowed"]
    assert "wrong-location" in refused["status"]["message"]
    assert "region=us-east" in refused["status"]["message"]
    assert review(pod_review("worker-affirming", eu))["allowed"]
    warned = {f"{PREFIX}allow-warning": "true"}
    assert review(pod_review("worker-warning", warned))["allowed"]


def test_pod_named_by_generate_name_and_the_request_namespace() -> None:
    document = pod_review("worker-revoked")
    metadata = document["request"]["object"]["metadata"]
    del metadata["name"], metadata["namespace"]
    message = review(document)["status"]["message"]
    assert "creating pod shop/web-7d4b9c6f5-* on node worker-revoked" in message


def test_revocation_reason_is_named() -> None:
    message = review(pod_review("worker-revoked"))["status"]["message"]
    assert message.endswith("on node worker-revoked: revoked: chassis intrusion reported")


def test_binding_uses_the_binding_annotations_only() -> None:
    """A Binding carries no pod annotations: without its own, no location is asked, and
    warning nodes are refused (the extender enforces the pod's own requirements)."""
    assert review(binding_review("worker-us"))["allowed"]
    assert not review(binding_review("worker-warning"))["allowed"]
    eu = {f"{PREFIX}location.region": "eu-west"}
    assert not review(binding_review("worker-us", eu))["allowed"]
    assert review(binding_review("worker-warning", {f"{PREFIX}allow-warning": "true"}))["allowed"]


def test_binding_to_a_node_mapped_in_the_table() -> None:
    config = AdmissionConfig(node_names={"gpu-3": "worker-affirming"})
    assert review(binding_review("gpu-3"), config)["allowed"]
    refused = review(binding_review("gpu-4"), config)
    assert "unknown" in refused["status"]["message"]
    mapped = review(binding_review("gpu-9"), AdmissionConfig(node_names={"gpu-9": "nobody"}))
    assert "node gpu-9 (Lightgate node nobody)" in mapped["status"]["message"]


def other_requests() -> list[Any]:
    unplaced = pod_review(None)
    update = pod_review("worker-revoked", operation="UPDATE")
    status = binding_review("worker-revoked")
    status["request"]["subResource"] = "status"
    deployment = pod_review("worker-revoked")
    deployment["request"]["resource"] = {
        "group": "apps",
        "version": "v1",
        "resource": "deployments",
    }
    node_update = binding_review("worker-revoked")
    node_update["request"]["resource"] = {"group": "", "version": "v1", "resource": "nodes"}
    empty_node = pod_review("")
    return [unplaced, update, status, deployment, node_update, empty_node]


@pytest.mark.parametrize("document", other_requests())
def test_requests_that_place_no_pod_are_allowed(document: Any) -> None:
    response = review(document)
    assert response == {"uid": document["request"]["uid"], "allowed": True}


def test_pod_without_a_node_is_allowed_even_with_bad_annotations() -> None:
    """It is placed later, through a binding (and the extender refuses it then)."""
    assert review(pod_review(None, {f"{PREFIX}allow-warning": "maybe"}))["allowed"]


def malformed_reviews() -> list[Any]:
    no_target = binding_review("worker-affirming")
    del no_target["request"]["object"]["target"]
    pod_target = binding_review("worker-affirming")
    pod_target["request"]["object"]["target"]["kind"] = "Pod"
    empty_target = binding_review("")
    no_object = pod_review("worker-affirming")
    no_object["request"]["object"] = None
    no_metadata = pod_review("worker-affirming")
    del no_metadata["request"]["object"]["metadata"]
    bad_node_name = pod_review("worker-affirming")
    bad_node_name["request"]["object"]["spec"]["nodeName"] = ["worker-affirming"]
    no_resource = pod_review("worker-affirming")
    del no_resource["request"]["resource"]
    old_version = binding_review("worker-affirming")
    old_version["apiVersion"] = "admission.k8s.io/v1beta1"
    not_a_review = binding_review("worker-affirming")
    not_a_review["kind"] = "TokenReview"
    return [
        no_target,
        pod_target,
        empty_target,
        no_object,
        no_metadata,
        bad_node_name,
        no_resource,
        old_version,
        not_a_review,
    ]


@pytest.mark.parametrize("document", malformed_reviews())
def test_malformed_review_is_refused(document: Any) -> None:
    response = review(document)
    assert response["uid"] == document["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert response["status"]["message"].startswith("lightgate refused this, unable to decide: ")


@pytest.mark.parametrize("document", malformed_reviews())
def test_malformed_review_admitted_with_a_warning_when_open(document: Any) -> None:
    response = review(document, OPEN)
    assert response["allowed"] is True
    assert "status" not in response
    [warning] = response["warnings"]
    assert warning.startswith("lightgate admitted this without a trust check: ")
    assert len(warning) <= 256


BAD_ANNOTATION = {f"{PREFIX}location.region": ","}


def test_malformed_annotation_refuses_the_pod() -> None:
    response = review(pod_review("worker-affirming", BAD_ANNOTATION))
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert (
        "workload-annotations: annotation lightgate.io/location.region"
        in (response["status"]["message"])
    )
    assert not review(binding_review("worker-affirming", BAD_ANNOTATION))["allowed"]


def test_open_judges_the_node_without_a_malformed_annotation() -> None:
    response = review(pod_review("worker-affirming", BAD_ANNOTATION), OPEN)
    assert response["allowed"] is True
    [warning] = response["warnings"]
    assert warning.startswith("lightgate judged the node without the pod's requirements: ")


@pytest.mark.parametrize("name", ["worker-revoked", "worker-unknown", "worker-warning"])
def test_a_malformed_annotation_does_not_open_the_door_to_an_untrusted_node(name: str) -> None:
    """The pod's author writes its annotations; in "open" a bad one must not be a way
    past the node's check."""
    for document in (pod_review(name, BAD_ANNOTATION), binding_review(name, BAD_ANNOTATION)):
        response = review(document, OPEN)
        assert response["allowed"] is False
        assert response["status"]["code"] == 403
        assert "warnings" not in response


def test_open_never_admits_a_node_it_judged() -> None:
    """webhook_on_error concerns failures to decide, not decisions."""
    response = review(binding_review("worker-revoked"), OPEN)
    assert response["allowed"] is False
    assert "warnings" not in response


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
        json.dumps({"request": {"uid": ""}}).encode(),
        json.dumps({"request": {"uid": 42}}).encode(),
        json.dumps({"request": "b-1"}).encode(),
    ],
)
def test_review_without_a_uid_is_a_400(body: bytes) -> None:
    """Nothing to answer to; the API server applies failurePolicy: Fail."""
    status, answer = call(VALIDATE_PATH, body)
    assert status == 400
    assert answer["error"].startswith("admission-review: ")


def failing_lookup(node_id: str) -> NodeTrust | None:
    raise RuntimeError("trust index unavailable")


def test_malfunction_refuses_the_pod() -> None:
    router = routes(trust=failing_lookup)
    status, answer = call(VALIDATE_PATH, binding_review("worker-affirming"), router)
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "verifier malfunction (RuntimeError)" in response["status"]["message"]


def test_malfunction_admits_with_a_warning_when_open() -> None:
    router = routes(OPEN, failing_lookup)
    _, answer = call(VALIDATE_PATH, binding_review("worker-affirming"), router)
    assert answer["response"]["allowed"] is True
    assert "verifier malfunction" in answer["response"]["warnings"][0]


def test_extender_malfunction_is_a_500_that_admits_no_node() -> None:
    """The HTTPS layer answers a handler's exception 500; with ignorable: false the
    scheduler fails the pod's cycle."""
    handler = routes(trust=failing_lookup).routes[("POST", FILTER_PATH)]
    body = json.dumps(names_args(["worker-affirming"])).encode()
    with pytest.raises(RuntimeError):
        handler(Request("POST", FILTER_PATH, "", {}, body, "10.0.0.1"))


# --- over HTTP ------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[HttpsServer]:
    router = routes()
    https = HttpsServer("127.0.0.1:0", router, timeout_seconds=5)
    https.start()
    yield https
    https.stop()


def post(server: HttpsServer, path: str, document: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_routes_over_http(server: HttpsServer) -> None:
    status, result = post(server, FILTER_PATH, names_args(["worker-affirming", "worker-revoked"]))
    assert status == 200
    assert result["NodeNames"] == ["worker-affirming"]
    assert list(result["FailedAndUnresolvableNodes"]) == ["worker-revoked"]

    status, result = post(server, PRIORITIZE_PATH, names_args(["worker-affirming"]))
    assert (status, result[0]["Host"]) == (200, "worker-affirming")

    status, answer = post(server, VALIDATE_PATH, binding_review("worker-revoked", uid="u-77"))
    assert status == 200
    assert answer["response"]["uid"] == "u-77"
    assert answer["response"]["allowed"] is False

    status, answer = post(server, VALIDATE_PATH, {"request": {}})
    assert status == 400


# --- manifests ------------------------------------------------------------------------


def manifests(name: str) -> list[Any]:
    with (DEPLOY / name).open() as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


def one(documents: list[Any], kind: str) -> Any:
    [found] = [document for document in documents if document["kind"] == kind]
    return found


def test_manifests_parse() -> None:
    kinds = {
        name: [d["kind"] for d in manifests(name)]
        for name in sorted(path.name for path in DEPLOY.glob("*.yaml"))
    }
    assert kinds == {
        "scheduler-extender.yaml": ["KubeSchedulerConfiguration"],
        "validating-webhook.yaml": ["ValidatingWebhookConfiguration"],
        "verifier-deployment.yaml": [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "Deployment",
        ],
    }


def test_extender_configuration_calls_the_routes() -> None:
    scheduler = one(manifests("scheduler-extender.yaml"), "KubeSchedulerConfiguration")
    assert scheduler["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    [extender] = scheduler["extenders"]
    assert "/" + extender["filterVerb"] == FILTER_PATH
    assert "/" + extender["prioritizeVerb"] == PRIORITIZE_PATH
    assert extender["ignorable"] is False  # an error must fail scheduling, not skip us
    assert extender["enableHTTPS"] is True
    assert extender["weight"] > 0
    assert "managedResources" not in extender  # consulted for every pod
    service = one(manifests("verifier-deployment.yaml"), "Service")
    https_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "https")
    assert extender["urlPrefix"] == f"https://{service['spec']['clusterIP']}:{https_port}"
    assert extender["tlsConfig"]["serverName"] == "lightgate-verifier.lightgate.svc"


def test_webhook_configuration_calls_the_route() -> None:
    configuration = one(manifests("validating-webhook.yaml"), "ValidatingWebhookConfiguration")
    [webhook] = configuration["webhooks"]
    assert webhook["clientConfig"]["service"]["path"] == VALIDATE_PATH
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert 1 <= webhook["timeoutSeconds"] <= 30
    [rule] = webhook["rules"]
    assert rule["operations"] == ["CREATE"]
    assert set(rule["resources"]) == {"pods", "pods/binding", "bindings"}
    # every binding reaches the verifier, by subresource or by the older resource
    [condition] = webhook["matchConditions"]
    assert "request.subResource == 'binding'" in condition["expression"]
    assert "request.resource.resource == 'bindings'" in condition["expression"]
    service = one(manifests("verifier-deployment.yaml"), "Service")
    target = webhook["clientConfig"]["service"]
    assert (target["namespace"], target["name"]) == (
        service["metadata"]["namespace"],
        service["metadata"]["name"],
    )
    assert target["port"] in [p["port"] for p in service["spec"]["ports"]]
    exempt = webhook["namespaceSelector"]["matchExpressions"][0]
    assert exempt["operator"] == "NotIn"
    assert service["metadata"]["namespace"] in exempt["values"]  # never blocks itself


def test_verifier_configuration_is_valid_and_serves_the_routes_over_tls() -> None:
    documents = manifests("verifier-deployment.yaml")
    config = VerifierConfig(**yaml.safe_load(one(documents, "ConfigMap")["data"]["verifier.yaml"]))
    assert config.tls_cert is not None and config.tls_key is not None
    assert config.results.https_listen is not None
    assert config.results.https_listen.endswith(":8443")
    assert config.admission.webhook_on_error == "closed"
    assert config.admission.node_label.startswith("node-restriction.kubernetes.io/")
    assert config.admission.issuer == "https://lightgate-verifier.lightgate.svc:8443"
    assert config.admission.node_id_source == "name"
    assert config.admission.token_audiences == ()  # closed until an operator lists some
    deployment = one(documents, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] + container["args"][:2] == ["attest", "verifier", "serve"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LIGHTGATE_VERIFIER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "lightgate-verifier-tls"
    assert volumes["config"]["configMap"]["name"] == one(documents, "ConfigMap")["metadata"]["name"]


@pytest.mark.parametrize("listen", ["0.0.0.0:8443", "[::]:8443", ":8443"])
def test_a_listener_on_every_address_needs_the_public_url(listen: str) -> None:
    """Otherwise tokens would name an issuer (and certificates a CRL) nobody can reach."""
    with pytest.raises(ValueError, match=r"set admission\.issuer"):
        VerifierConfig(results={"https_listen": listen})
    named = VerifierConfig(results={"https_listen": listen}, admission={"issuer": "https://v"})
    assert named.admission.issuer == "https://v"

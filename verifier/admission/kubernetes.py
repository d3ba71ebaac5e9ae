"""Kubernetes doors to the admission decision, the parts both share: the pod's
requirements (from its annotations), Kubernetes node names as Lightgate node ids, and
reading the JSON Kubernetes sends into small typed values.  The scheduler extender is
`extender.py`, the validating admission webhook `webhook.py`, their HTTPS routes
`verifier/api/kubernetes.py`.

Each request is read into small typed values first, then judged by
`verifier.admission.decide` (the same `judge` every other door uses), then rendered in
the wire shape Kubernetes expects.  Nothing here opens a socket or reads a clock.

Node names become Lightgate node ids (`kubernetes_node_id`): `AdmissionConfig.node_names`
first, then the Node's `node_label` when the scheduler sent full Node objects, else the
name; with `node_id_source: label` never the name: a node neither listed nor labelled
has no node id and is refused as unknown.  The label is seen only in full-node mode,
never by the webhook (a Binding names only the node): a cluster running the webhook
maps names in `node_names` or enrolls nodes under their Kubernetes names.  A label is
only as trustworthy as whoever may write it: the kubelet may set most labels on its own
Node, so use a label under `node-restriction.kubernetes.io/` (which the NodeRestriction
admission plugin keeps from kubelets).  Two Kubernetes nodes claiming one node id in one
request are both refused: at most one of them is the machine that attested.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, NamedTuple

from lightgate.config import AdmissionConfig
from verifier.admission.decide import NodeTrust, Requirements, Verdict
from verifier.errors import VerifierError
from verifier.location import AssetTagInvalid, validate_attributes

LOCATION_KEY: Final = "location."
ALLOW_WARNING_KEY: Final = "allow-warning"

Lookup = Callable[[str], NodeTrust | None]


class KubernetesInputMalformed(VerifierError):
    """A scheduler or API-server request that cannot be read as Kubernetes sends it."""

    check: ClassVar[str] = "kubernetes-input"
    status = "INVALID_ARGUMENT"


class RequirementsMalformed(KubernetesInputMalformed):
    """A pod's `<prefix>location.*` or `<prefix>allow-warning` annotation is malformed.
    Refused rather than skipped: a requirement read as absent would let the pod run
    anywhere."""

    check = "workload-annotations"


class ReviewUnreadable(KubernetesInputMalformed):
    """An AdmissionReview without even a request uid: nothing can be answered to."""

    check = "admission-review"


# --- typed values ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    annotations: Mapping[str, str]
    node_name: str  # "" until the pod is placed

    @property
    def workload(self) -> str:
        return f"pod {self.namespace}/{self.name}"


class Candidate(NamedTuple):
    """A node the scheduler offers: its Kubernetes name, the Lightgate node id it maps
    to, and (full-node mode) the v1.Node as sent, to be echoed back unchanged.  A tuple:
    a filter request makes one per node, thousands at a time."""

    name: str
    node_id: str | None  # None: unmapped (`node_id_source: label`), refused as unknown
    node: Mapping[str, object] | None = None


# --- reading JSON ---------------------------------------------------------------------


def decode_object(body: bytes, what: str) -> Mapping[str, object]:
    try:
        document: object = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise KubernetesInputMalformed(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KubernetesInputMalformed(f"{what} is not a JSON object")
    return document


def member_object(document: Mapping[str, object], key: str, where: str) -> Mapping[str, object]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise KubernetesInputMalformed(f"{where}.{key} is not an object")
    return value


def member_text(document: Mapping[str, object], key: str, where: str) -> str:
    """An optional string member ("" when absent or null)."""
    value = document.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise KubernetesInputMalformed(f"{where}.{key} is not a string")
    return value


def member_strings(document: Mapping[str, object], key: str, where: str) -> Mapping[str, str]:
    """An optional map of strings (annotations, labels): {} when absent or null."""
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise KubernetesInputMalformed(f"{where}.{key} is not a map of strings")
    return value


def pod_ref(document: Mapping[str, object], where: str, namespace: str = "") -> PodRef:
    """A v1.Pod's identity, annotations and node; a CREATE may carry only generateName,
    and its namespace only in the review request."""
    metadata = member_object(document, "metadata", where)
    spec = document.get("spec")
    node_name = member_text(spec, "nodeName", f"{where}.spec") if isinstance(spec, dict) else ""
    name = member_text(metadata, "name", f"{where}.metadata")
    return PodRef(
        namespace=member_text(metadata, "namespace", f"{where}.metadata") or namespace,
        name=name or member_text(metadata, "generateName", f"{where}.metadata") + "*",
        annotations=member_strings(metadata, "annotations", f"{where}.metadata"),
        node_name=node_name,
    )


# --- workload requirements and node names ---------------------------------------------


def requirements_from_annotations(
    annotations: Mapping[str, str], prefix: str, workload: str
) -> Requirements:
    """A workload's requirements from its annotations: `<prefix>location.<attribute>:
    "v1,v2"` and `<prefix>allow-warning: "true"|"false"`.  Annotations without the prefix
    are not ours and are ignored; RequirementsMalformed for an unreadable one of ours."""
    location: dict[str, frozenset[str]] = {}
    allow_warning = False
    for key, value in sorted(annotations.items()):
        name = key.removeprefix(prefix) if key.startswith(prefix) else None
        # Anything spelled like a location ("location-region", "locations.dc") must be
        # one: a misspelt requirement read as none would let the pod run anywhere.
        if name is not None and name.startswith("location"):
            attribute = _location_attribute(key, name)
            location[attribute] = _allowed_values(key, attribute, value)
        elif name == ALLOW_WARNING_KEY:
            allow_warning = _boolean(key, value)
    return Requirements(workload=workload, location=location, allow_warning=allow_warning)


def _location_attribute(key: str, name: str) -> str:
    if not name.startswith(LOCATION_KEY) or name == LOCATION_KEY:
        raise RequirementsMalformed(f"annotation {key}: expected <prefix>location.<attribute>")
    return name.removeprefix(LOCATION_KEY)


def _allowed_values(key: str, attribute: str, value: str) -> frozenset[str]:
    """The comma-separated values; each must be one an asset tag can carry (the same
    rule as `verifier.location.validate_attributes`), or no node could ever match."""
    values = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in values):
        raise RequirementsMalformed(f"annotation {key}: {value!r} has an empty value")
    for item in values:
        try:
            validate_attributes({attribute: item})
        except AssetTagInvalid as exc:
            raise RequirementsMalformed(f"annotation {key}: {exc.message}") from None
    return frozenset(values)


def _boolean(key: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise RequirementsMalformed(f'annotation {key}: {value!r} is not "true" or "false"')
    return value == "true"


def kubernetes_node_id(
    node_name: str, labels: Mapping[str, str] | None, config: AdmissionConfig
) -> str | None:
    """The Lightgate node id of a Kubernetes node: configured name first, then the
    node's `node_label` (only when the full Node was sent), else the name itself.  With
    `node_id_source: label` never the name: None, a node that cannot be mapped, which
    every caller refuses as unknown (`unmapped_reason`)."""
    configured = config.node_names.get(node_name)
    if configured:
        return configured
    if labels is not None and labels.get(config.node_label):
        return labels[config.node_label]
    return node_name if config.node_id_source == "name" else None


def unmapped_reason(node_name: str) -> str:
    """Why a node `kubernetes_node_id` could not map is refused."""
    return (
        f"Kubernetes node {node_name} has no Lightgate node id: it is not in"
        " admission.node_names and carries no node id label (node_id_source: label)"
    )


def kind_and_reason(verdict: Verdict) -> str:
    """`kind: reason`, once: judge's revoked reason already starts "revoked: "."""
    if verdict.reason.startswith(f"{verdict.kind}:"):
        return verdict.reason
    return f"{verdict.kind}: {verdict.reason}"

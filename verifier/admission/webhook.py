"""The validating admission webhook (admission.k8s.io/v1 AdmissionReview), as pure
functions over the trust index.

The webhook (admission.k8s.io/v1 AdmissionReview) judges every way a pod reaches a
node: the `pods/binding` subresource (how schedulers place pods), the older `bindings`
resource (POST /api/v1/namespaces/{ns}/bindings, which binds the same way), and a Pod
created with `spec.nodeName` already set (which skips the scheduler, and so the
extender).

A Binding does not carry the pod's annotations (kube-scheduler's binder sends only
namespace, name and uid), and a webhook has no API client to fetch the pod: a binding
is judged by the Binding's own `metadata.annotations` when present, else with no
location requirement and without allow-warning.  The extender is where a pod's
location and allow-warning are enforced; the binding check adds that nothing is bound to
a node that is unknown, revoked, expired or not affirming, whoever the binder is.  So a
pod that allows warning nodes cannot be bound to one through the webhook unless its
binder copies `allow-warning` onto the Binding.

The webhook sees a node's name, never its labels: with `node_id_source: label` only a
node listed in `node_names` has a Lightgate node id here; any other is refused as
unknown (a Kubernetes name is never taken for a Lightgate id in that mode).

A review that cannot be read, or a verifier malfunction, is refused with the reason
(`webhook_on_error: closed`), or admitted with a warning (`open`).  Only a body without
a request uid is answered HTTP 400: nothing else can be answered to, and the API server
then applies the webhook's `failurePolicy` (Fail).  A malformed requirement annotation
is written by whoever creates the pod, so even in `open` it is no way past the node's
check: the node is judged without the pod's requirements, and admitted with a warning
only if it is trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Final, Literal

from lightgate.config import AdmissionConfig
from verifier.admission.decide import Requirements, Verdict, judge
from verifier.admission.kubernetes import (
    KubernetesInputMalformed,
    Lookup,
    PodRef,
    RequirementsMalformed,
    ReviewUnreadable,
    decode_object,
    kind_and_reason,
    kubernetes_node_id,
    member_object,
    member_text,
    pod_ref,
    requirements_from_annotations,
    unmapped_reason,
)

log = logging.getLogger("lightgate.verifier.admission")

VALIDATE_PATH: Final = "/admission/validate"
ADMISSION_API: Final = "admission.k8s.io/v1"
#: Kubernetes asks webhooks to keep warnings short; longer ones may be truncated.
MAX_WARNING_CHARS: Final = 256
_STATUS_REASON: Final = {400: "BadRequest", 403: "Forbidden", 500: "InternalError"}


@dataclass(frozen=True, slots=True)
class Placement:
    """A pod about to run on a node, as the webhook sees it."""

    via: Literal["binding", "pod"]
    pod: PodRef  # for a binding: the Binding's name, namespace and annotations
    node_name: str
    node_id: str | None  # None: unmapped (`node_id_source: label`), refused as unknown


@dataclass(frozen=True, slots=True)
class Review:
    uid: str
    is_v1: bool  # an admission.k8s.io/v1 AdmissionReview, the only version answered
    request: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ReviewAnswer:
    allowed: bool
    code: int  # HTTP status carried in response.status when refused
    message: str
    warnings: tuple[str, ...] = ()


# --- admission webhook ----------------------------------------------------------------


def review_request(body: bytes) -> Review:
    """The uid and `request` of an AdmissionReview; ReviewUnreadable without a uid."""
    try:
        document = decode_object(body, "AdmissionReview")
        request = member_object(document, "request", "AdmissionReview")
    except KubernetesInputMalformed as exc:
        raise ReviewUnreadable(exc.message) from None
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewUnreadable("AdmissionReview.request.uid is missing")
    version = document.get("apiVersion") == ADMISSION_API
    return Review(uid, version and document.get("kind") == "AdmissionReview", request)


def placement_of(request: Mapping[str, object], config: AdmissionConfig) -> Placement | None:
    """The pod and node a review would place, or None when it places nothing: only a
    CREATE of `pods/binding` or `bindings`, or of a Pod with `spec.nodeName`, puts a pod
    on a node (`spec.nodeName` cannot be changed by an update, only set through a
    binding)."""
    resource = member_object(request, "resource", "request")
    if (
        member_text(request, "operation", "request") != "CREATE"
        or member_text(resource, "group", "request.resource") != ""
    ):
        return None
    kind = member_text(resource, "resource", "request.resource")
    namespace = member_text(request, "namespace", "request")
    subresource = member_text(request, "subResource", "request")
    if kind == "bindings" and subresource == "":
        # POST /api/v1/namespaces/{ns}/bindings: the older way to bind, still served.
        return _binding(member_object(request, "object", "request"), namespace, config)
    if kind != "pods":
        return None
    if subresource == "binding":
        return _binding(member_object(request, "object", "request"), namespace, config)
    if subresource == "":
        pod = pod_ref(member_object(request, "object", "request"), "request.object", namespace)
        if not pod.node_name:
            return None  # the scheduler will place it, through the extender
        node_id = kubernetes_node_id(pod.node_name, None, config)
        return Placement("pod", pod, pod.node_name, node_id)
    return None


def _binding(binding: Mapping[str, object], namespace: str, config: AdmissionConfig) -> Placement:
    """A v1.Binding: `target` names the node (kind Node, or empty: the API server's own
    validation accepts both); its metadata names the pod."""
    target = member_object(binding, "target", "request.object")
    node_name = member_text(target, "name", "request.object.target")
    if not node_name or member_text(target, "kind", "request.object.target") not in ("", "Node"):
        raise KubernetesInputMalformed("request.object.target does not name a Node")
    pod = pod_ref(binding, "request.object", namespace)
    return Placement("binding", pod, node_name, kubernetes_node_id(node_name, None, config))


def judge_placement(
    placement: Placement, requirements: Requirements, lookup: Lookup, now: datetime
) -> tuple[Verdict, ReviewAnswer]:
    node_id = placement.node_id
    if node_id is None:
        verdict = Verdict("", False, "unknown", unmapped_reason(placement.node_name))
    else:
        verdict = judge(node_id, lookup(node_id), requirements, now)
    if verdict.allowed:
        return verdict, ReviewAnswer(True, HTTPStatus.OK, verdict.reason)
    node = placement.node_name
    if node_id is not None and node_id != node:
        node += f" (Lightgate node {node_id})"
    doing = "binding" if placement.via == "binding" else "creating"
    message = (
        f"lightgate refused {doing} {placement.pod.workload} on node {node}: "
        f"{kind_and_reason(verdict)}"
    )
    return verdict, ReviewAnswer(False, HTTPStatus.FORBIDDEN, message)


def undecided(message: str, code: int, config: AdmissionConfig) -> ReviewAnswer:
    """No decision could be made: refused (`webhook_on_error: closed`, the default), or
    admitted with a warning the client sees (`open`)."""
    if config.webhook_on_error == "open":
        warning = f"lightgate admitted this without a trust check: {message}"
        return ReviewAnswer(True, HTTPStatus.OK, message, (warning[:MAX_WARNING_CHARS],))
    return ReviewAnswer(False, code, f"lightgate refused this, unable to decide: {message}")


def review_response(uid: str, answer: ReviewAnswer) -> dict[str, object]:
    response: dict[str, object] = {"uid": uid, "allowed": answer.allowed}
    if not answer.allowed:
        response["status"] = {
            "code": answer.code,
            "reason": _STATUS_REASON.get(answer.code, "Forbidden"),
            "message": answer.message,
        }
    if answer.warnings:
        response["warnings"] = list(answer.warnings)
    return {"apiVersion": ADMISSION_API, "kind": "AdmissionReview", "response": response}


def decide_review(
    review: Review, lookup: Lookup, now: datetime, config: AdmissionConfig
) -> ReviewAnswer:
    """Read, then judge, a review's request; a failure to do either is `undecided`."""
    try:
        if not review.is_v1:
            raise KubernetesInputMalformed(f"not an {ADMISSION_API} AdmissionReview")
        placement = placement_of(review.request, config)
    except KubernetesInputMalformed as exc:
        return undecided(exc.reason, HTTPStatus.BAD_REQUEST, config)
    if placement is None:
        return ReviewAnswer(True, HTTPStatus.OK, "places no pod on a node")
    prefix, workload = config.annotation_prefix, placement.pod.workload
    try:
        requirements = requirements_from_annotations(placement.pod.annotations, prefix, workload)
    except RequirementsMalformed as exc:
        if config.webhook_on_error == "closed":
            return undecided(exc.reason, HTTPStatus.BAD_REQUEST, config)
        # Whoever creates the pod writes its annotations: in "open" a malformed one
        # must not skip the node's check too, so the node is judged without them.
        answer = _judged(placement, Requirements(workload=workload), lookup, now, config)
        return answer if not answer.allowed else _warned(answer, exc.reason)
    return _judged(placement, requirements, lookup, now, config)


def _judged(
    placement: Placement,
    requirements: Requirements,
    lookup: Lookup,
    now: datetime,
    config: AdmissionConfig,
) -> ReviewAnswer:
    try:
        verdict, answer = judge_placement(placement, requirements, lookup, now)
    except Exception as exc:  # a malfunction is refused (or, by config, warned), and logged
        log.exception("admission review failed", extra={"fields": {"node": placement.node_id}})
        malfunction = f"verifier malfunction ({type(exc).__name__})"
        return undecided(malfunction, HTTPStatus.INTERNAL_SERVER_ERROR, config)
    log.info(
        "admission review",
        extra={
            "fields": {
                "via": placement.via,
                "pod": placement.pod.workload,
                "node": placement.node_id,
                "allowed": verdict.allowed,
                "kind": verdict.kind,
                "reason": verdict.reason,
            }
        },
    )
    return answer


def _warned(answer: ReviewAnswer, unread: str) -> ReviewAnswer:
    warning = f"lightgate judged the node without the pod's requirements: {unread}"
    return ReviewAnswer(True, answer.code, answer.message, (warning[:MAX_WARNING_CHARS],))

"""The Kubernetes doors as routes on the verifier's HTTPS listener: the scheduler
extender's verbs and the admission webhook.  Thin: read the body, call the pure
functions of `verifier.admission.extender` and `.webhook`, answer, log each decision."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus

from lightgate.config import AdmissionConfig
from verifier.admission.extender import (
    FILTER_PATH,
    PRIORITIZE_PATH,
    ExtenderArgs,
    ExtenderOutcome,
    extender_requirements,
    filter_candidates,
    filter_error,
    filter_result,
    parse_extender_args,
    prioritize_result,
)
from verifier.admission.kubernetes import KubernetesInputMalformed, Lookup, ReviewUnreadable
from verifier.admission.webhook import VALIDATE_PATH, decide_review, review_request, review_response
from verifier.api.https import Request, Response, Router, json_response

log = logging.getLogger("lightgate.verifier.admission")


def add_kubernetes_routes(
    router: Router, lookup: Lookup, clock: Callable[[], datetime], config: AdmissionConfig
) -> None:
    """`POST /scheduler/filter`, `POST /scheduler/prioritize` (the extender's verbs) and
    `POST /admission/validate` (the webhook).  `lookup` reads the trust index."""

    def scheduler_filter(request: Request) -> Response:
        try:
            args = parse_extender_args(request.body, config)
            requirements = extender_requirements(args, config)
        except KubernetesInputMalformed as exc:
            log.info("extender filter refused", extra={"fields": {"reason": exc.reason}})
            return json_response(HTTPStatus.OK, filter_error(exc.reason))
        outcome = filter_candidates(args, requirements, lookup, clock())
        _log_filter(args, outcome)
        return json_response(HTTPStatus.OK, filter_result(args, outcome))

    def scheduler_prioritize(request: Request) -> Response:
        try:
            args = parse_extender_args(request.body, config)
            requirements = extender_requirements(args, config)
        except KubernetesInputMalformed as exc:
            return json_response(HTTPStatus.BAD_REQUEST, {"error": exc.reason})
        return json_response(HTTPStatus.OK, prioritize_result(args, requirements, lookup, clock()))

    def admission_validate(request: Request) -> Response:
        try:
            review = review_request(request.body)
        except ReviewUnreadable as exc:
            return json_response(HTTPStatus.BAD_REQUEST, {"error": exc.reason})
        answer = decide_review(review, lookup, clock(), config)
        return json_response(HTTPStatus.OK, review_response(review.uid, answer))

    router.post(FILTER_PATH, scheduler_filter)
    router.post(PRIORITIZE_PATH, scheduler_prioritize)
    router.post(VALIDATE_PATH, admission_validate)


def _log_filter(args: ExtenderArgs, outcome: ExtenderOutcome) -> None:
    log.info(
        "extender filter",
        extra={
            "fields": {
                "pod": args.pod.workload,
                "allowed": len(outcome.passed),  # every refused node is named, with why
                "refused": [
                    {"node": r.candidate.name, "node_id": r.candidate.node_id, "reason": r.reason}
                    for r in outcome.refused
                ],
            }
        },
    )

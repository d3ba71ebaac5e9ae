"""The fleet's history as the report reads it from the verifier's store: SQLAlchemy Core
over `verifier.store.models`, read-only, in one transaction.  The edge of the report;
`compliance.py` turns what this returns into the report without I/O.

Four statements, each index-backed or one pass over the window, so a report over 10^4
nodes and a month of results takes no more than a few seconds on SQLite:

1. every enrolled node known by `until`, with its asset tag, its newest result up to
   `until` (correlated: `results (node_id, created_at)`) and its last trust transition
   up to `since` (`trust_transitions (node_id, at)`);
2. the trust transitions inside the window;
3. how many results each node had in the window;
4. the failed checks of the window's results that were not affirming (an affirming
   result fails no check: the verifier refuses a decision that says otherwise).

Of a result's claims and policy input only the few values the report shows are read,
by JSON path, not the whole documents (kilobytes per result); they come back as JSON
text, decoded once per distinct text (a fleet's firmware versions, tags and failed
checks repeat from node to node: decoding 10^4 copies cost more than the SQL).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Text,
    and_,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy.engine import Row

from lightgate.report.model import HistoryUnreadable
from verifier.store.models import ASSET_TAGS, NODES, RESULTS, TRUST_TRANSITIONS
from verifier.store.records import NODE_ENROLLED, STATUS_AFFIRMING

#: Named claims the report shows (`verifier.evidence.claim_names`), and where another
#: change will put container images (`images`); a result without them shows nothing.
FIRMWARE_CLAIM: Final = "firmware.scrtm-version"
KERNEL_CLAIM: Final = "kernel.path"
KERNEL_DIGEST_CLAIM: Final = "boot-chain.kernel"
SECURE_BOOT_CLAIM: Final = "secure-boot.enabled"
IMAGES_CLAIM: Final = "images"
#: Where the policy input (`policies/README.md`) keeps the location the report shows.
OBSERVED_SITE: Final = ("location", "observed", "site")
ATTESTED_TAG: Final = ("location", "attested", "attributes")


@dataclass(frozen=True, slots=True)
class StateChange:
    """A node's trust state from `at` on, and why."""

    at: datetime
    state: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class NewestResult:
    """The node's newest result up to `until`, with the claims the report shows as
    stored (JSON values, parsed in `compliance.py`)."""

    result_id: int
    created_at: datetime
    status: str
    failed_checks: tuple[str, ...]
    reason: str | None
    firmware: object = None
    kernel: object = None
    kernel_digest: object = None
    secure_boot: bool | None = None
    images: object = None
    observed_site: str | None = None  # where the verifier saw the attestation come from
    attested: object = None  # the attributes of the asset tag the quote proved


@dataclass(frozen=True, slots=True)
class NodeHistory:
    """One node as stored, and its history up to `until`."""

    node_id: str
    created_at: datetime
    trust_state: str  # now
    trust_expires_at: datetime | None
    last_site: str | None
    last_result_id: int | None
    tag: dict[str, str]
    newest: NewestResult | None
    before: StateChange | None  # the last transition at or before `since`
    changes: tuple[StateChange, ...] = ()  # transitions after `since`, up to `until`
    attestations: int = 0  # results in [since, until]
    refusals: tuple[tuple[str, ...], ...] = field(default=())  # their failed checks, if any


def _text(value: ColumnElement[Any]) -> ColumnElement[str]:
    """A JSON value as its text, for `JsonTexts` to decode (both backends' CAST)."""
    return cast(value, Text)


_newest_result = (
    select(RESULTS.c.id)
    .where(RESULTS.c.node_id == NODES.c.node_id, RESULTS.c.created_at <= bindparam("until"))
    .order_by(RESULTS.c.created_at.desc(), RESULTS.c.id.desc())
    .limit(1)
    .correlate(NODES)
    .scalar_subquery()
)
_last_transition = (
    select(TRUST_TRANSITIONS.c.id)
    .where(
        TRUST_TRANSITIONS.c.node_id == NODES.c.node_id,
        TRUST_TRANSITIONS.c.at <= bindparam("since"),
    )
    .order_by(TRUST_TRANSITIONS.c.at.desc(), TRUST_TRANSITIONS.c.id.desc())
    .limit(1)
    .correlate(NODES)
    .scalar_subquery()
)
_fleet = (
    select(
        NODES.c.node_id,
        NODES.c.created_at,
        NODES.c.trust_state,
        NODES.c.trust_expires_at,
        NODES.c.last_site,
        NODES.c.last_result_id,
        _newest_result.label("newest_result_id"),
        _last_transition.label("last_transition_id"),
    )
    .where(and_(NODES.c.state == NODE_ENROLLED, NODES.c.created_at <= bindparam("until")))
    .subquery("fleet")
)
_before = TRUST_TRANSITIONS.alias("before")
NODES_AT = (
    select(
        _fleet,
        _text(ASSET_TAGS.c.attributes).label("tag"),
        RESULTS.c.created_at.label("result_at"),
        RESULTS.c.status,
        _text(RESULTS.c.failed_checks).label("failed_checks"),
        RESULTS.c.reason,
        _text(RESULTS.c.claims[FIRMWARE_CLAIM]).label("firmware"),
        RESULTS.c.claims[KERNEL_CLAIM].as_string().label("kernel"),
        RESULTS.c.claims[KERNEL_DIGEST_CLAIM].as_string().label("kernel_digest"),
        # as_boolean: SQLite's JSON_EXTRACT returns a JSON true as the integer 1.
        RESULTS.c.claims[SECURE_BOOT_CLAIM].as_boolean().label("secure_boot"),
        _text(RESULTS.c.claims[IMAGES_CLAIM]).label("images"),
        RESULTS.c.appraisal_input[OBSERVED_SITE].as_string().label("observed_site"),
        _text(RESULTS.c.appraisal_input[ATTESTED_TAG]).label("attested"),
        _before.c.at.label("before_at"),
        _before.c.to_state.label("before_state"),
        _before.c.reason.label("before_reason"),
    )
    .select_from(
        _fleet.outerjoin(ASSET_TAGS, ASSET_TAGS.c.node_id == _fleet.c.node_id)
        .outerjoin(RESULTS, RESULTS.c.id == _fleet.c.newest_result_id)
        .outerjoin(_before, _before.c.id == _fleet.c.last_transition_id)
    )
    .order_by(_fleet.c.node_id)
)
CHANGES_IN_WINDOW = (
    select(
        TRUST_TRANSITIONS.c.node_id,
        TRUST_TRANSITIONS.c.at,
        TRUST_TRANSITIONS.c.to_state,
        TRUST_TRANSITIONS.c.reason,
    )
    .where(
        TRUST_TRANSITIONS.c.at > bindparam("since"),
        TRUST_TRANSITIONS.c.at <= bindparam("until"),
    )
    .order_by(TRUST_TRANSITIONS.c.node_id, TRUST_TRANSITIONS.c.at, TRUST_TRANSITIONS.c.id)
)
_in_window = and_(
    RESULTS.c.created_at >= bindparam("since"), RESULTS.c.created_at <= bindparam("until")
)
ATTESTATIONS_IN_WINDOW = (
    select(RESULTS.c.node_id, func.count().label("attestations"))
    .where(_in_window)
    .group_by(RESULTS.c.node_id)
)
REFUSALS_IN_WINDOW = select(
    RESULTS.c.node_id, _text(RESULTS.c.failed_checks).label("failed_checks")
).where(_in_window, RESULTS.c.status != STATUS_AFFIRMING)


def read_history(connection: Connection, since: datetime, until: datetime) -> list[NodeHistory]:
    """Every enrolled node known by `until`, ordered by node id, with its history in
    the window [since, until].  Run it in one transaction, so all four reads see one
    state of the store (REPEATABLE READ on PostgreSQL; SQLite's read transaction)."""
    window = {"since": since, "until": until}
    decode = JsonTexts()
    rows = connection.execute(NODES_AT, window).all()
    changes: dict[str, list[StateChange]] = {}
    for change in connection.execute(CHANGES_IN_WINDOW, window):
        changes.setdefault(change.node_id, []).append(
            StateChange(change.at, change.to_state, change.reason)
        )
    attestations = {
        row.node_id: int(row.attestations)
        for row in connection.execute(ATTESTATIONS_IN_WINDOW, window)
    }
    refusals: dict[str, list[tuple[str, ...]]] = {}
    for refusal in connection.execute(REFUSALS_IN_WINDOW, window):
        refusals.setdefault(refusal.node_id, []).append(_checks(decode(refusal.failed_checks)))
    return [
        _node_history(
            row,
            decode,
            changes.get(row.node_id, ()),
            attestations.get(row.node_id, 0),
            refusals.get(row.node_id, ()),
        )
        for row in rows
    ]


def _node_history(
    row: Row[Any],
    decode: JsonTexts,
    changes: Iterable[StateChange],
    attestations: int,
    refusals: Sequence[tuple[str, ...]],
) -> NodeHistory:
    newest = None
    if row.newest_result_id is not None:
        newest = NewestResult(
            result_id=int(row.newest_result_id),
            created_at=row.result_at,
            status=row.status,
            failed_checks=_checks(decode(row.failed_checks)),
            reason=row.reason,
            firmware=decode(row.firmware),
            kernel=row.kernel,
            kernel_digest=row.kernel_digest,
            secure_boot=row.secure_boot,
            images=decode(row.images),
            observed_site=row.observed_site,
            attested=decode(row.attested),
        )
    before = None
    if row.last_transition_id is not None:
        before = StateChange(row.before_at, row.before_state, row.before_reason)
    return NodeHistory(
        node_id=row.node_id,
        created_at=row.created_at,
        trust_state=row.trust_state,
        trust_expires_at=row.trust_expires_at,
        last_site=row.last_site,
        last_result_id=row.last_result_id,
        tag=_attributes(decode(row.tag)),
        newest=newest,
        before=before,
        changes=tuple(changes),
        attestations=attestations,
        refusals=tuple(refusals),
    )


class JsonTexts:
    """Decodes JSON texts, each distinct text once.  The values it returns are shared
    between the rows that had the same text: read them, never change them."""

    def __init__(self) -> None:
        self._decoded: dict[str, object] = {}

    def __call__(self, text: str | None) -> object:
        if text is None:
            return None
        try:
            return self._decoded[text]
        except KeyError:
            pass
        try:
            value = self._decoded[text] = json.loads(text)
        except ValueError:
            raise HistoryUnreadable(f"a stored JSON value does not parse: {text[:80]!r}") from None
        return value


def _checks(value: object) -> tuple[str, ...]:
    return tuple(str(check) for check in value) if isinstance(value, list) else ()


def _attributes(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(name): str(attribute) for name, attribute in value.items()}


def read_fleet(engine: Engine, since: datetime, until: datetime) -> list[NodeHistory]:
    """`read_history` in a read transaction of its own on `engine`."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # READ COMMITTED would give each of the four statements its own snapshot.
            connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            return read_history(connection, since, until)

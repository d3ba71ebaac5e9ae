"""Operator actions: tag, revoke and restore nodes, change golden values and the policy,
rotate the result-signing key; and what operators read (nodes, history, audit log).

Every change is written with its audit entry (who, when, what) in one transaction, and
this replica's references are refreshed at once.  Who the operator is was decided by
the admin API's authentication (`verifier/api/admin.py`) or, for the local CLI, by the
Unix account holding the database credentials; this module only records it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from lightgate.config import VerifierConfig
from verifier.errors import MalformedRequest, UnknownNode, VerifierError
from verifier.golden.corim import CorimInvalid, import_corim, load_trusted_key
from verifier.golden.values import GoldenValues, GoldenValuesInvalid, from_yaml
from verifier.keyring import KeyRing, rotate
from verifier.location import issue_asset_tag, validate_attributes
from verifier.policy import EmbeddedEngine, PolicyError, run_tests
from verifier.policy.bundle import bundle_from_files
from verifier.references import References, StoreKeys
from verifier.store import (
    AssetTagRecord,
    AuditRecord,
    NodeRecord,
    Store,
    TransitionRecord,
)
from verifier.store import UnknownNode as StoreUnknownNode

log = logging.getLogger("lightgate.verifier")


class OperatorRefused(VerifierError):
    check = "operator"
    status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class PolicySet:
    policy_id: str
    digest: str
    tests_passed: int


class Operators:
    def __init__(
        self,
        store: Store,
        config: VerifierConfig,
        references: References,
        clock: Callable[[], datetime],
        trust_changed: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._references = references
        self._now = clock
        # Told the node whose trust an operator changed (the admission trust index).
        self._trust_changed = trust_changed or (lambda node_id: None)

    # Nodes

    def tag(self, actor: str, node_id: str, attributes: Mapping[str, str]) -> AssetTagRecord:
        checked = validate_attributes(attributes)
        now = self._now()
        key = self._references.keys.active

        def sign(serial: int) -> str:
            return issue_asset_tag(node_id, checked, key, now, serial)

        try:
            record = self._store.put_asset_tag(node_id, checked, sign, actor, now)
        except StoreUnknownNode:
            raise UnknownNode("no such node", node_id=node_id) from None
        self._references.refresh()
        _log("tag", actor, node_id, attributes=checked, serial=record.serial)
        return record

    def revoke(self, actor: str, node_id: str, reason: str) -> TransitionRecord:
        if not reason.strip():
            raise MalformedRequest("a revocation needs a reason", node_id=node_id)
        try:
            transition = self._store.revoke(node_id, reason, actor, self._now())
        except StoreUnknownNode:
            raise UnknownNode("no such node", node_id=node_id) from None
        self._trust_changed(node_id)
        _log("revoke", actor, node_id, reason=reason)
        return transition

    def restore(self, actor: str, node_id: str, reason: str) -> TransitionRecord:
        node = self._store.get_node(node_id)
        if node is None:
            raise UnknownNode("no such node", node_id=node_id)
        if node.trust_state != "revoked":
            raise OperatorRefused(f"node is {node.trust_state}, not revoked", node_id=node_id)
        transition = self._store.restore(node_id, reason or "restored", actor, self._now())
        self._trust_changed(node_id)
        _log("restore", actor, node_id, reason=reason)
        return transition

    def nodes(self) -> list[NodeRecord]:
        return self._store.list_nodes()

    def tag_of(self, node_id: str) -> dict[str, str] | None:
        record = self._references.asset_tag(node_id)
        return None if record is None else dict(record.attributes)

    def history(
        self, node_id: str, since: datetime | None = None, limit: int = 1000
    ) -> list[TransitionRecord]:
        try:
            return self._store.transitions(node_id, since, limit)
        except StoreUnknownNode:
            raise UnknownNode("no such node", node_id=node_id) from None

    def audit_log(self, since: datetime | None = None, limit: int = 1000) -> list[AuditRecord]:
        return self._store.audit_log(since, limit)

    # Golden values

    def import_golden(self, actor: str, document: bytes, kind: str, source: str) -> GoldenValues:
        golden = self._parse_golden(document, kind)
        now = self._now()
        origin = source or f"{kind}:{hashlib.sha256(document).hexdigest()[:16]}"
        audit = AuditRecord(now, actor, "golden-import", golden.name, origin)
        self._store.put_golden_values(
            golden.name, golden.to_document(), golden.digest, origin, now, audit
        )
        self._references.refresh()
        _log("golden-import", actor, golden.name, source=origin)
        return golden

    def _parse_golden(self, document: bytes, kind: str) -> GoldenValues:
        try:
            if kind == "corim":
                paths = self._config.measured_boot.corim_trust
                trust = [load_trusted_key(path.read_bytes()) for path in paths]
                return import_corim(document, trust)
            if kind in ("", "yaml", "json"):
                return from_yaml(document.decode("utf-8", errors="replace"))
        except (GoldenValuesInvalid, CorimInvalid) as exc:
            raise MalformedRequest(f"{exc.check}: {exc.message}") from None
        raise MalformedRequest(f"golden values format {kind!r} is not yaml or corim")

    def remove_golden(self, actor: str, name: str) -> bool:
        audit = AuditRecord(self._now(), actor, "golden-remove", name, "")
        removed = self._store.drop_golden_values(name, audit)
        self._references.refresh()
        return removed

    # Policy and keys

    def set_policy(self, actor: str, files: Mapping[str, bytes]) -> PolicySet:
        """Put a policy bundle in force for every replica.  Refused unless it compiles,
        has the result rule, and its own Rego tests pass."""
        if self._config.policy.engine != "embedded" or self._config.policy.bundle is not None:
            raise OperatorRefused(
                "the policy is pinned by configuration (policy.bundle or a remote engine)"
            )
        try:
            bundle = bundle_from_files(files)
            EmbeddedEngine(bundle)
            report = run_tests(bundle)
        except PolicyError as exc:
            raise MalformedRequest(f"policy refused: {exc.message}") from None
        if not report.ok:
            failed = [r.rule for r in report.results if r.outcome != "pass"]
            raise MalformedRequest(f"policy refused: its tests fail: {', '.join(failed)}")
        texts = {path: content.decode("utf-8") for path, content in files.items()}
        self._store.put_policy_bundle(bundle.digest, texts, actor, self._now())
        self._references.refresh()
        _log("set-policy", actor, "policy", policy=bundle.policy_id)
        return PolicySet(bundle.policy_id, bundle.digest, len(report.results))

    def rotate_signing_key(self, actor: str) -> KeyRing:
        now = self._now()
        grace = timedelta(seconds=self._config.results.retired_key_grace_seconds)
        ring = rotate(StoreKeys(self._store), now, grace)
        self._store.audit(AuditRecord(now, actor, "rotate-key", ring.active.kid, ""))
        # Asset tags are signed by the same keys: once the retired key's grace ends, a
        # tag it signed no longer verifies.  Each tag is signed again with the new key
        # (same attributes, next serial); agents take it with their next challenge.
        reissued = 0
        for node_id, record in self._store.asset_tags().items():
            attributes = dict(record.attributes)

            def sign(
                serial: int, node_id: str = node_id, attributes: dict[str, str] = attributes
            ) -> str:
                return issue_asset_tag(node_id, attributes, ring.active, now, serial)

            try:
                self._store.put_asset_tag(node_id, attributes, sign, actor, now)
            except StoreUnknownNode:
                continue  # the node went away since it was listed
            reissued += 1
        self._references.refresh()
        _log("rotate-key", actor, ring.active.kid, tags_reissued=reissued)
        return ring


def _log(action: str, actor: str, target: str, **fields: object) -> None:
    log.info(
        "operator action",
        extra={"fields": {"action": action, "actor": actor, "target": target, **fields}},
    )

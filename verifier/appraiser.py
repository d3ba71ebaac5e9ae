"""From a verified quote to a signed result: the boot log, the runtime log and the
location, then the appraisal policy, then the EAR.

`EvidenceAppraiser.appraise` takes only a quote `verify_authenticated_quote` accepted
(verified before used); `refuse` signs the result of evidence that failed a check.
What it reads of the operators' references (golden values, asset tags, policy, keys)
comes from `References`; what it keeps between attestations (parsed logs, claims,
verified tags, runtime-log verdicts, decisions) is kept by exactly what it depends on.
No I/O of its own.
"""

from __future__ import annotations

import copy as copy_module
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Final, cast

from lightgate.config import VerifierConfig
from lightgate.errors import Refusal
from verifier.appraisal import (
    Appraisal,
    BootAppraiser,
    BoundedCache,
    NodeFacts,
    decide,
    policy_input,
    refused_evidence,
    revoked_by_operator,
)
from verifier.ar4si import StatusName
from verifier.enrollment import Endorsement
from verifier.evidence.errors import EvidenceError
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.quote import VerifiedQuote
from verifier.evidence.runtime_log import VerifiedRuntimeLog, verify_runtime_log
from verifier.evidence.tpm_structures import HashAlg
from verifier.golden.images import ImageAllowList, ImageVerdict, allow_list, appraise_images
from verifier.golden.values import GoldenValues
from verifier.keyring import KeyRing
from verifier.location import (
    AssetTag,
    ObservedLocation,
    SiteTable,
    location_input,
    observe,
    parse_networks,
    verify_asset_tag,
)
from verifier.references import References, Snapshot
from verifier.results import AttestationResult, eat_nonce, sign_result
from verifier.store import AttestationRecord, NodeRecord
from verifier.store.records import TRUST_REVOKED

AFFIRMING: Final = "affirming"
#: The policy id of results decided by the evidence checks alone (no policy ran).
EVIDENCE_CHECKS_POLICY: Final = "lightgate:evidence-checks"

TagVerdict = tuple[AssetTag | None, str | None]
RuntimeVerdict = tuple[VerifiedRuntimeLog | None, EvidenceError | None]


class EvidenceAppraiser:
    """Appraises verified evidence; safe to share between the verifier's threads."""

    def __init__(self, config: VerifierConfig, references: References) -> None:
        self._config = config
        self._references = references
        boot = config.measured_boot
        self._boot = BootAppraiser(
            require_event_log=boot.require_event_log,
            log_pcrs=frozenset(boot.log_pcrs),
            max_event_log_bytes=boot.max_event_log_bytes,
            cache_entries=boot.replay_cache_entries,
            cache_log_bytes=boot.replay_cache_bytes,
        )
        self._tags: BoundedCache[tuple[str, str, tuple[str, ...]], TagVerdict] = BoundedCache(
            boot.replay_cache_entries, boot.replay_cache_entries
        )
        self._runtime_logs: BoundedCache[
            tuple[bytes, tuple[tuple[HashAlg, bytes | None], ...]], RuntimeVerdict
        ] = BoundedCache(boot.replay_cache_entries, boot.replay_cache_bytes)
        self._allow_lists: BoundedCache[tuple[tuple[str, bytes], ...], ImageAllowList] = (
            BoundedCache(16, 16)
        )
        self._image_verdicts: BoundedCache[
            tuple[bytes, tuple[tuple[str, bytes], ...]], tuple[ImageVerdict, ...]
        ] = BoundedCache(boot.replay_cache_entries, boot.replay_cache_bytes)
        location = config.location
        self._sites = SiteTable.from_rules(location.sites)
        self._proxies = parse_networks(location.trusted_proxies)
        self._trust_lifetime = timedelta(seconds=config.results.trust_lifetime())

    def forget(self) -> None:
        """Forget everything kept between attestations (the next one starts cold)."""
        self._boot.clear()
        self._tags.clear()
        self._runtime_logs.clear()
        self._allow_lists.clear()
        self._image_verdicts.clear()
        self._references.policy.clear()

    def refuse(
        self, record: AttestationRecord, failures: Sequence[Refusal], references: Snapshot
    ) -> AttestationRecord:
        """Evidence that failed a check: contraindicated, signed, no policy consulted."""
        return self._signed(record, refused_evidence(failures), references)

    def appraise(
        self,
        node: NodeRecord,
        record: AttestationRecord,
        verified: VerifiedQuote,
        metadata: Mapping[str, str],
        endorsement: Endorsement,
        references: Snapshot,
    ) -> AttestationRecord:
        """The record of a verified quote, appraised and signed; `endorsement` is what
        the node's enrollment proves of its TPM; `references` what operators set, as
        read before the attestation's store transaction."""
        boot = self._boot.appraise(
            node.node_id,
            record.event_log or b"",
            verified.pcr_values,
            references.golden,
            now=record.received_at,
        )
        failures: tuple[Refusal, ...] = boot.integrity_failures
        runtime, runtime_refusal = self._runtime_log(
            node.node_id, record.runtime_log, verified.pcr_values
        )
        if runtime_refusal is not None:
            failures += (runtime_refusal,)
        if failures or runtime is None:
            refused = replace(record, workarounds=boot.workarounds, findings=boot.findings)
            return self.refuse(refused, failures, references)
        facts = NodeFacts(
            node_id=node.node_id,
            enrollment_mode=self._config.enrollment.mode,
            ek_chain_verified=endorsement.ek_chain_verified,
            ek_pinned=endorsement.ek_pinned,
            rebooted=verified.rebooted,
        )
        location = self._location(node.node_id, runtime, record.peer, metadata, references)
        banks = [bank.bank_name for bank in verified.pcr_values.banks]
        allowed, images = self._image_appraisal(
            runtime, tuple(g for g in references.golden if not g.expired(record.received_at))
        )
        partial = policy_input(facts, boot, runtime, location, banks, images, allowed)
        appraisal = decide(references.policy, partial, boot, location_site(location))
        if node.trust_state == TRUST_REVOKED:
            appraisal = revoked_by_operator(appraisal, node.trust_reason or "")
        signed = self._signed(record, appraisal, references)
        if appraisal.status == AFFIRMING:
            return replace(signed, clock=verified.clock_info, rebooted=verified.rebooted)
        return signed

    def _image_appraisal(
        self, runtime: VerifiedRuntimeLog, documents: tuple[GoldenValues, ...]
    ) -> tuple[ImageAllowList, tuple[ImageVerdict, ...]]:
        """The allow-list of the documents in force and the verdicts on the measured
        images, each kept by what it depends on: the documents' digests, and the log with
        them (a node sends the same log until a container uses a new image)."""
        documents_key = tuple((g.name, g.digest) for g in documents)
        allowed = self._allow_lists.get(documents_key)
        if allowed is None:
            allowed = allow_list(documents)
            self._allow_lists.put(documents_key, allowed, 1)
        if not runtime.images:
            return allowed, ()
        key = (runtime.sha256 or b"", documents_key)
        verdicts = self._image_verdicts.get(key)
        if verdicts is None:
            verdicts = appraise_images(runtime.images, allowed)
            self._image_verdicts.put(key, verdicts, len(runtime.images))
        return allowed, verdicts

    def _location(
        self,
        node_id: str,
        runtime: VerifiedRuntimeLog,
        peer: str,
        metadata: Mapping[str, str],
        references: Snapshot,
    ) -> dict[str, object]:
        """The location input: the tag the operator set, the tag the quote proves (its
        signature checked), and the site the attestation came from."""
        assigned = references.asset_tag(node_id)
        attested, attested_error = None, None
        token = runtime.current_asset_tag
        if token is not None:  # no tag measured is no claim, which policy weighs
            attested, attested_error = self._verified_tag(node_id, token, references.keys)
        try:
            observed = observe(peer, metadata, self._proxies, self._sites)
        except Refusal as refusal:
            observed = ObservedLocation(None, None)
            attested_error = attested_error or f"observed address: {refusal.message}"
        attributes = None if assigned is None else assigned.attributes
        return location_input(attributes, attested, attested_error, observed)

    def _runtime_log(
        self, node_id: str, raw: bytes | None, quoted: PcrValues
    ) -> tuple[VerifiedRuntimeLog | None, EvidenceError | None]:
        """The runtime log verified against the quoted runtime PCR.  The verdict depends
        only on the log and that PCR's quoted values, so it is kept by them: a node
        sends the same log with every quote until it measures something new."""
        pcr = self._config.location.runtime_pcr
        log = raw or b""
        key = (
            hashlib.sha256(log).digest(),
            tuple((bank, values.get(pcr)) for bank, values in quoted.banks.items()),
        )
        known = self._runtime_logs.get(key)
        if known is not None:
            runtime, refusal = known
            if refusal is not None:  # the refusal names the node it was made for
                refusal = replace_node(refusal, node_id)
            return runtime, refusal
        try:
            verdict: tuple[VerifiedRuntimeLog | None, EvidenceError | None] = (
                verify_runtime_log(
                    log,
                    quoted.banks,
                    pcr,
                    node_id=node_id,
                    max_bytes=self._config.location.max_runtime_log_bytes,
                ),
                None,
            )
        except EvidenceError as failure:
            verdict = (None, failure)
        self._runtime_logs.put(key, verdict, len(log) + 1)
        return verdict

    def _verified_tag(
        self, node_id: str, token: str, ring: KeyRing
    ) -> tuple[AssetTag | None, str | None]:
        """The measured tag if this verifier signed it for this node, else why not.
        Kept by (node, token, keys in force): a node measures one tag for many quotes."""
        key = (node_id, token, ring.kids)
        known = self._tags.get(key)
        if known is not None:
            return known
        try:
            verdict: tuple[AssetTag | None, str | None] = (
                verify_asset_tag(token, ring.verification_keys(), node_id),
                None,
            )
        except Refusal as refusal:
            verdict = (None, refusal.message)
        self._tags.put(key, verdict, 1)
        return verdict

    def _signed(
        self, record: AttestationRecord, appraisal: Appraisal, references: Snapshot
    ) -> AttestationRecord:
        """The record with the appraisal and its EAR, signed with the active key."""
        expires_at = record.received_at + self._trust_lifetime
        result = AttestationResult(
            node_id=record.node_id,
            status=cast(StatusName, appraisal.status),  # AttestationResult checks it
            trust_vector=appraisal.trust_vector,
            policy_id=appraisal.policy_id or EVIDENCE_CHECKS_POLICY,
            nonce=eat_nonce(record.nonce or b""),
            issued_at=record.received_at,
            expires_at=expires_at,
            evidence_digest=record.evidence_digest or b"",
            reasons=appraisal.reasons,
            verifier_id=self._config.results.verifier_id,
            failed_checks=appraisal.failed_checks,
        )
        return replace(
            record,
            status=appraisal.status,
            failed_checks=appraisal.failed_checks,
            reason=appraisal.reason,
            findings=appraisal.findings or record.findings,
            workarounds=appraisal.workarounds or record.workarounds,
            claims=appraisal.claims,
            trust_vector=dict(appraisal.trust_vector),
            policy_id=appraisal.policy_id,
            ear=sign_result(result, references.keys.active),
            expires_at=expires_at,
            appraisal_input=appraisal.appraisal_input,
            site=appraisal.site,
        )


def replace_node(refusal: EvidenceError, node_id: str) -> EvidenceError:
    """A kept refusal, naming the node it now refuses (the same evidence, sent by
    another node, is refused for the same reason)."""
    if refusal.node_id == node_id:
        return refusal
    copy = copy_module.copy(refusal)
    copy.node_id = node_id
    return copy


def location_site(location: Mapping[str, object]) -> str | None:
    observed = location.get("observed")
    if isinstance(observed, Mapping):
        site = observed.get("site")
        return site if isinstance(site, str) else None
    return None

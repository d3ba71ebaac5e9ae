"""The verifier's decisions: enroll, activate, challenge, attest.

Orchestration only: the checks are the pure functions of `verifier.enrollment`,
`verifier.credential` and `verifier.evidence.quote`; the store is passed in.  Nothing
here knows about gRPC (see `verifier.api`).

Closed by default: a node is trusted only by an attestation whose every check passed;
an error in a check never yields `affirming`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import cast

from lightgate.config import VerifierConfig
from verifier.admission.decide import NodeTrust
from verifier.admission.index import entry_after_attestation, entry_of_node
from verifier.appraiser import EvidenceAppraiser
from verifier.ar4si import StatusName
from verifier.credential import Credential, CredentialError, make_credential
from verifier.enrollment import (
    Endorsement,
    TrustStore,
    check_ak,
    check_allowlist,
    check_ek_matches_certificate,
    ek_fingerprint,
    endorsement_of,
    load_ek_certificate,
    verify_ek_chain,
)
from verifier.errors import (
    ActivationExpired,
    ActivationFailed,
    EkCertificateUntrusted,
    EkChanged,
    JoinTokenInvalid,
    MalformedRequest,
    NodeNotEnrolled,
    NoPendingEnrollment,
    ResultWithdrawn,
    UnknownNode,
)
from verifier.evidence.errors import (
    ChecksFailed,
    EvidenceError,
    QuoteSignatureInvalid,
    TpmStructureMalformed,
)
from verifier.evidence.keys import AttestationKey
from verifier.evidence.nonce import issued_at as nonce_issued_at
from verifier.evidence.nonce import mint_nonce, read_nonce
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.quote import (
    AuthenticatedQuote,
    NonceRecord,
    Quote,
    QuoteExpectations,
    authenticate_quote,
    verify_authenticated_quote,
)
from verifier.evidence.tpm_public import PublicArea, parse_public
from verifier.evidence.tpm_structures import PcrSelection
from verifier.references import References, Snapshot
from verifier.results import (
    ResultFormat,
    ResultView,
    sign_result_cose,
    verify_result,
)
from verifier.store import (
    AttestationRecord,
    AttestationTransaction,
    ChallengeNotAnswered,
    EnrollmentNotPending,
    NodeRecord,
    PendingEnrollment,
    Store,
)
from verifier.store.records import TRUST_ENROLLED, TRUST_LASTING, TRUST_REVOKED, ResultRecord

log = logging.getLogger("lightgate.verifier")


NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
NONCE_KEY = "nonce-hmac-sha256"
CREDENTIAL_BYTES = 32
ENROLLED_CACHE_SECONDS = 30.0
ENDORSEMENT_CACHE = 1 << 16

AFFIRMING = "affirming"
CONTRAINDICATED = "contraindicated"


@dataclass(frozen=True)
class EnrollRequest:
    node_id: str
    ek_public: bytes
    ak_public: bytes
    ek_certificate: bytes | None = None
    ek_intermediates: tuple[bytes, ...] = ()
    join_token: str | None = None


@dataclass(frozen=True)
class EnrollChallenge:
    credential: Credential
    expires_at: datetime


@dataclass(frozen=True)
class NonceChallenge:
    nonce: bytes
    pcr_selection: PcrSelection
    expires_at: datetime
    asset_tag: str = ""  # the node's signed asset tag, for it to measure


@dataclass(frozen=True)
class AttestOutcome:
    node_id: str
    status: str
    failed_checks: tuple[str, ...]
    reason: str | None
    result_id: int
    rebooted: bool
    attested_at: datetime
    workarounds: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    result: str = ""  # the signed EAR (JWT)
    expires_at: datetime | None = None


def utc_now() -> datetime:
    return datetime.now(UTC)


class Verifier:
    def __init__(
        self,
        store: Store,
        config: VerifierConfig,
        trust: TrustStore,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._config = config
        self._trust = trust
        self._now = clock
        self._selection = config.attestation.selection()
        self._nonce_ttl = timedelta(seconds=config.attestation.nonce_ttl_seconds)
        self._activation_ttl = timedelta(seconds=config.enrollment.activation_ttl_seconds)
        # Parsing an AK and loading its key costs more than verifying a signature;
        # enrolled AKs are immutable, so they are cached by their exact bytes.
        self._ak_cache: Callable[[bytes], AttestationKey] = lru_cache(maxsize=1 << 16)(
            AttestationKey.from_bytes
        )
        self._enrolled_seen: dict[str, float] = {}
        self._nonce_key = store.shared_secret(NONCE_KEY, lambda: os.urandom(32), clock())
        self.references = References(store, config, clock)
        self._appraiser = EvidenceAppraiser(config, self.references)
        self._endorsements: dict[tuple[str, bytes, datetime | None], Endorsement] = {}
        self._trust_listeners: list[Callable[[NodeTrust], object]] = []

    # --- enrollment --------------------------------------------------------------------

    def enroll(self, request: EnrollRequest) -> EnrollChallenge:
        node_id = _valid_node_id(request.node_id)
        now = self._now()
        ek = _parse_public(request.ek_public, "EK", node_id)
        ak = _parse_public(request.ak_public, "AK", node_id)
        check_ak(ak)
        self._check_endorsement(node_id, ek, request, now)
        fingerprint = ek_fingerprint(ek)
        existing = self._store.get_node(node_id)
        # Only an enrolled node's EK is its identity; a node id that someone began to
        # enroll and never activated can be claimed by the TPM that does activate.
        if (
            existing is not None
            and existing.state == "enrolled"
            and (existing.ek_fingerprint != fingerprint)
        ):
            raise EkChanged(
                f"node is enrolled with EK {existing.ek_fingerprint}, not {fingerprint}",
                node_id=node_id,
            )
        if self._config.enrollment.mode == "join-token":
            self._consume_join_token(request.join_token, node_id, now)
        secret = os.urandom(CREDENTIAL_BYTES)
        try:
            credential = make_credential(ek, ak.name, secret)
        except CredentialError as exc:
            raise MalformedRequest(str(exc), node_id=node_id) from None
        expires_at = now + self._activation_ttl
        self._store.begin_enrollment(
            PendingEnrollment(
                node_id=node_id,
                ek_certificate=request.ek_certificate or None,
                ek_public=ek.raw,
                ek_fingerprint=fingerprint,
                ak_public=ak.raw,
                ak_name=ak.name,
                secret_digest=hashlib.sha256(secret).digest(),
                created_at=now,
                expires_at=expires_at,
            )
        )
        _log_decision("enroll-challenge", node_id, ek=fingerprint, ak_name=ak.name.hex())
        return EnrollChallenge(credential, expires_at)

    def _check_endorsement(
        self, node_id: str, ek: PublicArea, request: EnrollRequest, now: datetime
    ) -> None:
        config = self._config.enrollment
        certificate = None
        if request.ek_certificate:
            certificate = load_ek_certificate(request.ek_certificate)
            check_ek_matches_certificate(ek, certificate)
        if config.mode == "allowlist":
            check_allowlist(ek, request.ek_certificate, config)
            return
        if config.mode == "join-token" and not config.require_ek_chain:
            return
        if certificate is None:
            raise EkCertificateUntrusted("no EK certificate presented", node_id=node_id)
        intermediates = [load_ek_certificate(der) for der in request.ek_intermediates]
        try:
            verify_ek_chain(certificate, intermediates, self._trust, now)
        except EkCertificateUntrusted as exc:
            raise exc.__class__(exc.message, node_id=node_id) from None

    def _consume_join_token(self, token: str | None, node_id: str, now: datetime) -> None:
        if not token:
            raise JoinTokenInvalid(
                "this verifier enrolls by join token; none was given", node_id=node_id
            )
        digest = hashlib.sha256(token.encode()).digest()
        if not self._store.consume_join_token(digest, node_id, now):
            raise JoinTokenInvalid("join token is unknown, used or expired", node_id=node_id)

    def create_join_token(self, ttl: timedelta, note: str = "") -> str:
        token = secrets.token_urlsafe(32)
        now = self._now()
        self._store.add_join_token(hashlib.sha256(token.encode()).digest(), now, now + ttl, note)
        return token

    def activate(self, node_id: str, secret: bytes) -> NodeRecord:
        """Complete the enrollment whose challenge `secret` answers.  The answer is
        checked by the store in the transaction that completes it, against the challenge
        pending then; a wrong answer leaves the challenge pending (it cannot be guessed,
        and dropping it would let anyone cancel a node's enrollment)."""
        node_id = _valid_node_id(node_id)
        answer = hashlib.sha256(secret).digest()
        try:
            node = self._store.complete_enrollment(node_id, self._now(), answer)
        except EnrollmentNotPending:
            if self._store.get_node(node_id) is None:
                raise UnknownNode("node never started enrolling", node_id=node_id) from None
            raise NoPendingEnrollment(
                "no credential challenge is outstanding", node_id=node_id
            ) from None
        except ChallengeNotAnswered as exc:
            _log_decision("enroll-refused", node_id, check=ActivationFailed.check)
            if exc.expired:
                raise ActivationExpired(exc.why, node_id=node_id) from None
            raise ActivationFailed(
                "the secret returned is not the one sealed to the EK for this AK", node_id=node_id
            ) from None
        _log_decision("enrolled", node_id, ek=node.ek_fingerprint)
        for listener in self._trust_listeners:
            listener(entry_of_node(node))
        return node

    # --- attestation -------------------------------------------------------------------

    def challenge(self, node_id: str) -> NonceChallenge:
        node_id = self._known_enrolled(node_id)
        now = self._now()
        nonce = mint_nonce(self._nonce_key, node_id, now, self._nonce_ttl, os.urandom(3))
        tag = self.references.asset_tag(node_id)
        return NonceChallenge(
            nonce, self._selection, now + self._nonce_ttl, "" if tag is None else tag.token
        )

    def _known_enrolled(self, node_id: str) -> str:
        """Challenges are only for enrolled nodes.  A node seen enrolled recently is not
        looked up again: the answer can only go stale towards "enrolled" for a node
        that lost its enrollment since, and that node's attestation reads the store
        and fails there (closed)."""
        node_id = _valid_node_id(node_id)
        seen = self._enrolled_seen.get(node_id)
        if seen is not None and time.monotonic() - seen < ENROLLED_CACHE_SECONDS:
            return node_id
        _require_enrolled(self._store.get_node(node_id), node_id)
        self._enrolled_seen[node_id] = time.monotonic()
        return node_id

    def attest(
        self,
        node_id: str,
        message: bytes,
        signature: bytes,
        pcr_values: PcrValues,
        peer: str = "",
        event_log: bytes = b"",
        runtime_log: bytes = b"",
        metadata: Mapping[str, str] | None = None,
    ) -> AttestOutcome:
        """Judge one quote, in one store transaction: the node's row (locked), the
        nonce spent, evidence and result written together, or nothing at all."""
        node_id = _valid_node_id(node_id)
        try:
            quote = Quote.parse(message, signature)
        except TpmStructureMalformed as exc:
            raise MalformedRequest(exc.message, node_id=node_id) from None
        now = self._now()
        references = self.references.snapshot()
        with self._store.attestation(node_id) as transaction:
            node = _require_enrolled(transaction.node, node_id)
            record = AttestationRecord(
                node_id=node_id,
                received_at=now,
                nonce=quote.nonce,
                quote_message=message,
                quote_signature=signature,
                pcr_values=pcr_values.to_json(),
                peer=peer,
                status=CONTRAINDICATED,
                failed_checks=(),
                reason=None,
                clock=None,
                rebooted=False,
                event_log=event_log or None,
                runtime_log=runtime_log or None,
                evidence_digest=_evidence_digest(
                    message, signature, pcr_values, event_log, runtime_log
                ),
            )
            assert node.ak_public is not None  # _require_enrolled guarantees an active AK
            try:
                authenticated = authenticate_quote(self._ak_cache(node.ak_public), quote, node_id)
            except QuoteSignatureInvalid as forged:
                # Not the node's evidence: anyone can send it, so it changes nothing of
                # the node's (status, counters, history) and is only logged.
                record = _refused(record, (forged,))
                _log_decision("attestation-unauthenticated", node_id, check=forged.check, peer=peer)
                return _outcome(record, result_id=0)
            record = self._judge(
                transaction, node, authenticated, pcr_values, record, metadata or {}, references
            )
            result = transaction.record(record)
        _log_decision(
            "attestation",
            node_id,
            status=record.status,
            checks=list(record.failed_checks),
            rebooted=record.rebooted,
            peer=peer,
            result_id=result.id,
            workarounds=list(record.workarounds),
            findings=len(record.findings),
        )
        self._tell_trust(record, result)
        return _outcome(record, result.id)

    def on_trust_change(self, listener: Callable[[NodeTrust], object]) -> None:
        """Call `listener` with a node's trust right after each of its attestations
        commits (the admission trust index)."""
        self._trust_listeners.append(listener)

    def _tell_trust(self, record: AttestationRecord, result: ResultRecord) -> None:
        if not self._trust_listeners or result.trust_state is None:
            return
        state = result.trust_state
        entry = entry_after_attestation(
            node_id=record.node_id,
            state=state,
            since=result.trust_since,
            expires_at=record.expires_at if state in TRUST_LASTING else None,
            reason=result.trust_reason,
            status=record.status,
            ear=record.ear,
            appraisal_input=record.appraisal_input,
            site=record.site,
            attested_at=record.received_at,
            version=result.trust_version or 0,
        )
        for listener in self._trust_listeners:
            listener(entry)

    def forget_cached(self) -> None:
        """Appraise the next attestations from nothing kept (benchmarks, tests)."""
        self._appraiser.forget()

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The result-signing keys in force, as a JWKS (after rotations elsewhere too)."""
        return self.references.keys.jwks()

    def latest_result(self, node_id: str, result_format: ResultFormat) -> ResultView | None:
        """The node's newest signed result (JWT as signed, or re-signed as COSE), with
        its trust state now; None for an unknown node or one without a result."""
        node = self._store.get_node(node_id)
        results = self._store.results_for(node_id, 1) if node is not None else []
        if node is None or not results or not results[0].ear or results[0].expires_at is None:
            return None
        newest = results[0]
        assert newest.ear is not None and newest.expires_at is not None
        if (
            node.trust_state in (TRUST_REVOKED, TRUST_ENROLLED)
            and node.trust_since is not None
            and newest.created_at < node.trust_since
        ):
            # The signed EAR still verifies until it expires; handing it out after a
            # revocation would let a relying party trust what the operator withdrew.
            raise ResultWithdrawn(
                f"the node was {'revoked' if node.trust_state == TRUST_REVOKED else 'restored'}"
                f" at {node.trust_since.isoformat()} ({node.trust_reason or 'no reason given'})"
                f"; its last result ({newest.status}, issued {newest.created_at.isoformat()})"
                " no longer holds",
                node_id=node_id,
            )
        cose = None
        if result_format == "cose":
            keys = self.references.keys
            result = verify_result(newest.ear, keys.verification_keys(), newest.created_at)
            cose = sign_result_cose(result, keys.active)
        return ResultView(
            node_id=node_id,
            state=node.trust_at(self._now()),
            status=cast(StatusName, newest.status),
            jwt=newest.ear if result_format == "jwt" else None,
            cose=cose,
            issued_at=newest.created_at,
            expires_at=newest.expires_at,
        )

    def expire(self) -> int:
        """Record the expiry of every node whose trust lasted out; how many expired."""
        expired = self._store.expire_trust(self._now())
        for transition in expired:
            _log_decision("trust-expired", transition.node_id, since=transition.at.isoformat())
        return len(expired)

    def _judge(
        self,
        transaction: AttestationTransaction,
        node: NodeRecord,
        authenticated: AuthenticatedQuote,
        pcr_values: PcrValues,
        record: AttestationRecord,
        metadata: Mapping[str, str],
        references: Snapshot,
    ) -> AttestationRecord:
        """Checks 2-6 of a quote the node's AK signed, then the logs, then the policy.
        The nonce is spent only now, so a forged message cannot burn a nonce issued to
        someone else."""
        try:
            nonce = self._spend(
                transaction, authenticated.quote.nonce, node.node_id, record.received_at
            )
            expectations = QuoteExpectations(
                node.node_id, nonce, self._selection, node.last_clock, record.received_at
            )
            verified = verify_authenticated_quote(authenticated, pcr_values, expectations)
        except EvidenceError as refusal:
            checks = refusal.failures if isinstance(refusal, ChecksFailed) else (refusal,)
            return self._appraiser.refuse(record, checks, references)
        return self._appraiser.appraise(
            node, record, verified, metadata, self._endorsement(node), references
        )

    def _endorsement(self, node: NodeRecord) -> Endorsement:
        """What the node's enrollment proves of its TPM, from the EK it enrolled with:
        whether that EK's certificate chains to a root this verifier trusts (checked at
        the enrollment's time, so a root the operator removes since stops counting) and
        whether it is on the allow-list now.  Kept per EK: neither changes per quote."""
        key = (node.ek_fingerprint, node.ek_certificate or b"", node.enrolled_at)
        known = self._endorsements.get(key)
        if known is None:
            known = endorsement_of(node, self._trust, self._config.enrollment)
            if len(self._endorsements) >= ENDORSEMENT_CACHE:
                self._endorsements.clear()
            self._endorsements[key] = known
        return known

    def _spend(
        self, transaction: AttestationTransaction, value: bytes, node_id: str, now: datetime
    ) -> NonceRecord | None:
        """Read the nonce; if it is this node's, spend it (whatever else the quote's
        fate) and say whether an earlier attestation had spent it already."""
        nonce = read_nonce(self._nonce_key, value, node_id)
        if nonce is None or nonce.node_id != node_id:
            return nonce
        first_use = transaction.spend_nonce(nonce, nonce_issued_at(value), now)
        return replace(nonce, used=not first_use)


def _outcome(record: AttestationRecord, result_id: int) -> AttestOutcome:
    return AttestOutcome(
        record.node_id,
        record.status,
        record.failed_checks,
        record.reason,
        result_id,
        record.rebooted,
        record.received_at,
        record.workarounds,
        record.findings,
        record.ear or "",
        record.expires_at,
    )


def _evidence_digest(
    message: bytes, signature: bytes, pcr_values: PcrValues, event_log: bytes, runtime_log: bytes
) -> bytes:
    """SHA-256 over the evidence as received, each part length-prefixed, so a result
    names exactly the evidence it judged (and no two evidence sets share a digest)."""
    digest = hashlib.sha256()
    pcrs = json.dumps(pcr_values.to_json(), sort_keys=True, separators=(",", ":")).encode()
    for part in (message, signature, pcrs, event_log, runtime_log):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def _require_enrolled(node: NodeRecord | None, node_id: str) -> NodeRecord:
    if node is None:
        raise UnknownNode("no such node", node_id=node_id)
    if node.state != "enrolled" or node.ak_public is None:
        raise NodeNotEnrolled("node has not activated its AK", node_id=node_id)
    return node


def _refused(record: AttestationRecord, failures: tuple[EvidenceError, ...]) -> AttestationRecord:
    return replace(
        record,
        status=CONTRAINDICATED,
        failed_checks=tuple(f.check for f in failures),
        reason="; ".join(f.reason for f in failures),
    )


def _valid_node_id(node_id: str) -> str:
    if not NODE_ID.match(node_id or ""):
        raise MalformedRequest(
            f"node id {node_id[:64]!r} must be 1-128 characters of A-Z a-z 0-9 . _ : @ -"
        )
    return node_id


def _parse_public(blob: bytes, what: str, node_id: str) -> PublicArea:
    try:
        return parse_public(blob)
    except TpmStructureMalformed as exc:
        raise MalformedRequest(f"{what} public area: {exc.message}", node_id=node_id) from None


def _log_decision(event: str, node_id: str, **fields: object) -> None:
    log.info(event, extra={"fields": {"node": node_id, **fields}})

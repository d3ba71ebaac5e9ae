"""The credential gate: certificates and tokens for a key in the node's TPM, only while
the node's attestation holds, and revoked the moment it stops holding.

A request is granted only when, in this order:
1. the nonce is one this verifier issued to this node for credentials (domain-separated
   from attestation nonces), unexpired, and spent now for the first time;
2. the node's enrolled AK signed both a TPM2_Certify and a TPM2_CertifyCreation of the
   key over that nonce (`verifier.evidence.certify`): the key is in the same TPM as the
   AK, was created there and cannot leave it; and the TPM has not been reset (rebooted)
   since the quote that earned the node its trust (the certification's clockInfo against
   the last accepted quote's): a reboot may have started anything;
3. for a certificate, the CSR is signed by that key and asks for exactly that key;
4. the trust index says the node is affirming now (warning is not enough for a
   credential) and, where the request names requirements, allowed for them;
5. after the credential is recorded, the index still says so: a trust loss that raced
   the request either sees the record (and revokes it) or is seen here (and the
   credential is revoked and refused).

Lifetimes never reach past the node's trust expiry.  When the index reports a node lost
trust (lost, expired or revoked), its live credentials are revoked by a background
worker: certificates go on the CRL, tokens simply run out (they live minutes, and no
longer than the trust that vouched for them).  A revocation that fails (the database is
away) is tried again with backoff, and every `RECONCILE_SECONDS` the worker revokes the
live credentials of any node the index does not trust now, so no loss is missed for
good: not one whose event failed, nor one that raced an issue, nor one another replica
saw first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lightgate.config import AdmissionConfig
from verifier.admission.ca import (
    CertificateAuthority,
    CertificateOrder,
    TokenIssuer,
    audience_refusal,
    new_serial,
)
from verifier.admission.decide import Requirements, judge
from verifier.admission.index import TrustChange, TrustIndex
from verifier.errors import UnknownNode, VerifierError
from verifier.evidence.certify import (
    CertifiedKey,
    KeyCertification,
    verify_csr,
    verify_key_certification,
)
from verifier.evidence.errors import EvidenceError
from verifier.evidence.keys import AttestationKey
from verifier.evidence.nonce import issued_at as nonce_issued_at
from verifier.evidence.nonce import mint_nonce, read_nonce
from verifier.evidence.quote import check_clock
from verifier.jose import b64url, thumbprint
from verifier.store import CredentialRecord, Store
from verifier.store.records import (
    CREDENTIAL_CERTIFICATE,
    CREDENTIAL_TOKEN,
    NODE_ENROLLED,
    NodeRecord,
)

log = logging.getLogger("lightgate.verifier.credentials")

NONCE_SECRET: Final = "credential-nonce-hmac-sha256"  # noqa: S105 (a stored secret's name)
LOSSES: Final = frozenset({"lost", "expired", "revoked"})
#: How often the revocation worker checks every live credential against the index.
RECONCILE_SECONDS: Final = 5.0
#: The longest wait before a failed revocation is tried again.
MOST_BACKOFF_SECONDS: Final = 5.0
#: A CRL is made again at least this often (it says when the next one is due).
CRL_REMADE: Final = timedelta(minutes=5)


class CredentialRefused(VerifierError):
    """The node may not have this credential now; the reason says why."""

    check = "credential-refused"
    status = "PERMISSION_DENIED"


class CredentialProofInvalid(VerifierError):
    """The key's certification, its nonce or the CSR did not verify."""

    check = "credential-proof"
    status = "PERMISSION_DENIED"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    der: bytes
    chain: tuple[bytes, ...]
    serial: int
    not_after: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime
    jti: str


class CredentialGate:
    """Safe to share between threads."""

    def __init__(
        self,
        *,
        store: Store,
        index: TrustIndex,
        ca: CertificateAuthority,
        tokens: TokenIssuer,
        config: AdmissionConfig,
        nonce_key: bytes,
        node_of: Callable[[str], NodeRecord | None],
        clock: Callable[[], datetime],
        crl_url: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._store = store
        self._index = index
        self._ca = ca
        self._tokens = tokens
        self._config = config
        self._nonce_key = nonce_key
        self._node_of = node_of
        self._now = clock
        self._crl_url = crl_url
        self._revocations: queue.Queue[TrustChange | None] = queue.Queue()
        self._failed: list[TrustChange] = []  # revocations to try again
        self._stopping = threading.Event()
        self._crl_lock = threading.Lock()
        self._crl: tuple[tuple[int, datetime | None], datetime, bytes] | None = None
        self._worker: threading.Thread | None = None
        index.add_listener(self._on_change)

    @property
    def issuer(self) -> str:
        return self._tokens.issuer

    @property
    def ca_chain(self) -> tuple[bytes, ...]:
        return self._ca.chain

    # --- requests ------------------------------------------------------------------

    def challenge(self, node_id: str) -> tuple[bytes, datetime]:
        if self._index.get(node_id) is None:
            raise UnknownNode("no such node", node_id=node_id)
        now = self._now()
        ttl = timedelta(seconds=self._config.challenge_ttl_seconds)
        nonce = mint_nonce(self._nonce_key, node_id, now, ttl, os.urandom(3))
        return nonce, now + ttl

    def issue_certificate(
        self,
        node_id: str,
        certification: KeyCertification,
        nonce: bytes,
        csr_der: bytes,
        requirements: Requirements,
    ) -> IssuedCertificate:
        key = self._proven_key(node_id, certification, nonce, csr_der)
        now = self._now()
        ear, status, not_after = self._vouched(node_id, requirements, now, self._certificate_life)
        serial = new_serial()
        order = CertificateOrder(
            serial=serial,
            node_id=node_id,
            public_key=key.public_key,
            not_before=now - timedelta(minutes=1),
            not_after=not_after,
            ear_digest=hashlib.sha256(ear.encode()).digest(),
            trust_status=status,
            crl_url=self._crl_url(),
        )
        der = self._ca.issue(order)
        self._record(
            node_id,
            CREDENTIAL_CERTIFICATE,
            serial,
            now,
            not_after,
            node_id,
            order,
            key,
            requirements=requirements,
        )
        log.info(
            "certificate issued",
            extra={
                "fields": {"node": node_id, "serial": f"{serial:x}", "until": not_after.isoformat()}
            },
        )
        return IssuedCertificate(der, self._ca.chain, serial, not_after)

    def issue_token(
        self,
        node_id: str,
        certification: KeyCertification,
        nonce: bytes,
        audience: Sequence[str],
        requirements: Requirements,
        lifetime_seconds: float = 0.0,
    ) -> IssuedToken:
        # Before the proof is checked: the nonce is not spent on a request that cannot
        # succeed.
        refusal = audience_refusal(audience, self._config.token_audiences)
        if refusal is not None:
            raise CredentialRefused(refusal, node_id=node_id)
        key = self._proven_key(node_id, certification, nonce)
        now = self._now()
        limit = self._config.token_lifetime_seconds
        asked = timedelta(seconds=min(lifetime_seconds or limit, limit))
        ear, status, expires_at = self._vouched(node_id, requirements, now, asked)
        jti = str(uuid.uuid4())
        ear_digest = hashlib.sha256(ear.encode()).digest()
        claims: dict[str, object] = {
            "iss": self._tokens.issuer,
            "sub": node_id,
            "aud": audience[0] if len(audience) == 1 else list(audience),
            "client_id": node_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
            # RFC 7800 confirmation: the token is for whoever holds the TPM key
            # (its RFC 7638 thumbprint, as in RFC 9449's `jkt`).
            "cnf": {"jkt": key_thumbprint(key)},
            "lightgate": {"ear_digest": b64url(ear_digest), "status": status},
        }
        token = self._tokens.issue(claims)
        serial = int(uuid.UUID(jti))
        self._record(
            node_id,
            CREDENTIAL_TOKEN,
            serial,
            now,
            expires_at,
            ",".join(audience),
            None,
            key,
            ear_digest,
            requirements=requirements,
        )
        log.info(
            "token issued", extra={"fields": {"node": node_id, "jti": jti, "aud": list(audience)}}
        )
        return IssuedToken(token, expires_at, jti)

    @property
    def _certificate_life(self) -> timedelta:
        return timedelta(seconds=self._config.certificate_lifetime_seconds)

    def _proven_key(
        self,
        node_id: str,
        certification: KeyCertification,
        nonce: bytes,
        csr_der: bytes | None = None,
    ) -> CertifiedKey:
        """Checks 1 to 3: the nonce, the AK's word for the key, the CSR (if any); the
        nonce is spent only when all of them passed."""
        node = self._node_of(node_id)
        if node is None or node.state != NODE_ENROLLED or node.ak_public is None:
            raise UnknownNode("no enrolled node with that id", node_id=node_id)
        record = read_nonce(self._nonce_key, nonce, node_id)
        if record is None or record.node_id != node_id:
            raise CredentialProofInvalid(
                "the nonce was not issued to this node by Credentials.Challenge", node_id=node_id
            )
        now = self._now()
        if now >= record.expires_at:
            raise CredentialProofInvalid(
                f"the nonce expired at {record.expires_at.isoformat()}", node_id=node_id
            )
        try:
            key = verify_key_certification(
                AttestationKey.from_bytes(node.ak_public), certification, nonce, node_id=node_id
            )
            rebooted = node.last_clock is None or check_clock(
                node.last_clock, key.clock_info, node_id
            )
            if csr_der is not None:
                verify_csr(csr_der, key, node_id=node_id)
        except EvidenceError as refusal:
            raise CredentialProofInvalid(refusal.message, node_id=node_id) from None
        if rebooted:
            raise CredentialRefused(
                "the TPM was reset (rebooted) since the quote that vouches for the node, or"
                " no quote with this AK was accepted yet: it must attest again first",
                node_id=node_id,
            )
        # Spent only once the AK's signatures (and the CSR) checked, so that someone who
        # saw a nonce cannot burn it for the node.
        if not self._store.spend_nonce(record, nonce_issued_at(nonce), now):
            raise CredentialProofInvalid("the nonce was used before (a replay)", node_id=node_id)
        return key

    def _vouched(
        self, node_id: str, requirements: Requirements, now: datetime, lifetime: timedelta
    ) -> tuple[str, str, datetime]:
        """Check 4: (the EAR, its status, until when a credential may last)."""
        strict = replace(requirements, allow_warning=False)
        entry = self._index.get(node_id)
        verdict = judge(node_id, entry, strict, now)
        if not verdict.allowed or entry is None or entry.ear is None or entry.expires_at is None:
            raise CredentialRefused(
                f"not trusted for credentials ({verdict.kind or 'untrusted'}): {verdict.reason}",
                node_id=node_id,
            )
        until = min(now + lifetime, entry.expires_at)
        if until - now < timedelta(seconds=self._config.min_credential_seconds):
            raise CredentialRefused(
                f"the node's trust ends at {entry.expires_at.isoformat()}: too soon for a"
                " credential; it must attest again first",
                node_id=node_id,
            )
        return entry.ear, entry.status or "affirming", until

    def _record(
        self,
        node_id: str,
        kind: str,
        serial: int,
        now: datetime,
        not_after: datetime,
        subject: str,
        order: CertificateOrder | None,
        key: CertifiedKey,
        ear_digest: bytes | None = None,
        *,
        requirements: Requirements,
    ) -> None:
        """Record the credential, then check 5: the node is still trusted for it, by the
        same judgement as check 4 (state and location)."""
        digest = order.ear_digest if order is not None else ear_digest or b""
        record = CredentialRecord(
            serial=f"{serial:x}",
            node_id=node_id,
            kind=kind,
            issued_at=now,
            not_after=not_after,
            subject=subject,
            ear_digest=digest,
            key_name=key.name,
        )
        self._store.record_credential(record)
        strict = replace(requirements, allow_warning=False)
        if not judge(node_id, self._index.get(node_id), strict, self._now()).allowed:
            reason = "trust was lost while the credential was being issued"
            # This credential only: the node's others are the revocation worker's to
            # judge (a node trusted elsewhere keeps them; one that lost trust does not).
            self._store.revoke_credentials(node_id, reason, self._now(), record.serial)
            raise CredentialRefused(reason, node_id=node_id)

    # --- revocation ----------------------------------------------------------------

    def _on_change(self, change: TrustChange) -> None:
        """Index listener: queue the revocation of a node that lost trust."""
        if change.kind in LOSSES:
            self._revocations.put(change)

    def start(self) -> None:
        self._worker = threading.Thread(target=self._revoke_loop, name="revoker", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stopping.set()
        self._revocations.put(None)  # wakes the worker
        if self._worker is not None:
            self._worker.join(timeout=5)

    def revoke_pending(self, timeout: float = 0.0) -> int:
        """Process the revocations that failed before and those queued (waiting up to
        `timeout` seconds for one when there is nothing to do); how many were done.
        One that fails is kept for the next call."""
        changes: list[TrustChange | None] = list(self._failed)
        self._failed = []
        try:
            if changes or timeout <= 0:
                changes.append(self._revocations.get_nowait())
            else:
                changes.append(self._revocations.get(timeout=timeout))
            while True:
                changes.append(self._revocations.get_nowait())
        except queue.Empty:
            pass
        return sum(self._try_revoke(change) for change in changes if change is not None)

    def reconcile(self) -> list[str]:
        """Revoke the live credentials of every node the index does not trust now (a
        loss whose revocation failed, or raced an issue, or that another replica
        recorded); the nodes whose credentials were revoked."""
        now = self._now()
        revoked = []
        for node_id in self._store.nodes_with_live_credentials(now):
            entry = self._index.get(node_id)
            if entry is not None and entry.trusted(now):
                continue
            state = "unknown" if entry is None else entry.state_at(now)
            reason = "no longer enrolled" if entry is None else entry.reason_at(now)
            change = TrustChange(node_id, "lost", state, reason, now, 0)
            if self._revoke(change):
                revoked.append(node_id)
        return revoked

    @property
    def failed_revocations(self) -> int:
        return len(self._failed)

    def _try_revoke(self, change: TrustChange) -> int:
        try:
            self._revoke(change)
        except Exception:  # the database is away: kept, and tried again
            log.exception(
                "credential revocation failed", extra={"fields": {"node": change.node_id}}
            )
            self._failed.append(change)
            return 0
        return 1

    def _revoke_loop(self) -> None:
        backoff = 0.0
        next_reconcile = time.monotonic() + RECONCILE_SECONDS
        while not self._stopping.is_set():
            wait = next_reconcile - time.monotonic()
            if self._failed:
                wait = min(wait, backoff)
            self.revoke_pending(timeout=max(0.001, wait))
            if not self._stopping.is_set() and time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + RECONCILE_SECONDS
                try:
                    self.reconcile()
                except Exception:  # the database is away: sooner, with the backoff
                    log.exception("credential reconciliation failed")
                    next_reconcile = time.monotonic() + max(backoff, 0.1)
            backoff = min(MOST_BACKOFF_SECONDS, backoff * 2 or 0.1) if self._failed else 0.0

    def _revoke(self, change: TrustChange) -> list[str]:
        reason = f"{change.kind}: {change.reason}"
        serials = self._store.revoke_credentials(change.node_id, reason, self._now())
        if serials:
            log.info(
                "credentials revoked",
                extra={"fields": {"node": change.node_id, "serials": serials, "reason": reason}},
            )
        return serials

    def crl(self) -> bytes:
        """The CRL (DER) of certificates revoked and not yet expired; made again when
        the store's revocations changed (by any replica), or after five minutes."""
        now = self._now()
        state = self._store.revocation_state(CREDENTIAL_CERTIFICATE)
        with self._crl_lock:
            cached = self._crl
            if cached is not None and cached[0] == state and now - cached[1] < CRL_REMADE:
                return cached[2]
        revoked = [
            (int(c.serial, 16), c.revoked_at)
            for c in self._store.revoked_credentials(now, CREDENTIAL_CERTIFICATE)
            if c.revoked_at is not None
        ]
        der = self._ca.crl(revoked, now)
        with self._crl_lock:
            self._crl = (state, now, der)
        return der


def key_thumbprint(key: CertifiedKey) -> str:
    """RFC 7638 JWK SHA-256 thumbprint of the certified key."""
    public = key.public_key
    if isinstance(public, ec.EllipticCurvePublicKey):
        return thumbprint(public)
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        canonical = json.dumps(
            {"e": b64url(e), "kty": "RSA", "n": b64url(n)}, separators=(",", ":"), sort_keys=True
        )
        return b64url(hashlib.sha256(canonical.encode()).digest())
    raise TypeError(f"no thumbprint for {type(public).__name__}")

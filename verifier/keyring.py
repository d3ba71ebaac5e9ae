"""Result-signing keys and their rotation: which key signs now, which keys verify.

The store keeps every key the verifier has signed with (`StoredSigningKey`).  A
`KeyRing` is a view of them at one moment:

- `active`: the newest key not retired: it signs every new result;
- `published`: the active key, every other key not retired, and the keys retired less
  than `grace` ago, so a result signed just before a rotation still verifies until it
  expires (keep `grace` at or above the trust lifetime).  Keys retired longer ago are
  dropped: a stolen old key cannot mint results anyone accepts.

`rotate` adds a new key first and only then retires the others, so there is never a
moment without an active key.  Replicas sharing one store may race in `ensure_key`:
each may add a first key.  Nothing is lost: every unretired key is published, and
every replica that reads the store picks the same active key (newest `created_at`,
then the greatest kid).  A store that refuses a duplicate kid raises
`SigningKeyExists`; the loser re-reads and uses what the winner stored.

Pure apart from the store handed in: no globals; the time is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from lightgate.errors import Refusal
from verifier.jose import SigningKey, jwks_document

log = logging.getLogger("lightgate.verifier.keyring")

#: How long a retired key stays published (ResultsConfig.retired_key_grace_seconds).
DEFAULT_GRACE: Final = timedelta(days=7)


class KeyRingInvalid(Refusal):
    """The stored keys cannot make a key ring (no active key, a kid that is not its
    key's thumbprint, a PEM that is not a P-256 private key)."""

    check = "signing-key"


class SigningKeyExists(Exception):
    """Raised by a KeyStore's `add_signing_key` for a kid it already holds."""


@dataclass(frozen=True, slots=True)
class StoredSigningKey:
    """One result-signing key as the store persists it.  `kid` is the RFC 7638
    thumbprint of the key in `private_pem` (PKCS#8, unencrypted)."""

    kid: str
    private_pem: bytes
    created_at: datetime
    retired_at: datetime | None = None

    @classmethod
    def of(cls, key: SigningKey, created_at: datetime) -> StoredSigningKey:
        return cls(key.kid, key.to_pem(), created_at, None)


class KeyStore(Protocol):
    """What the key ring needs from the verifier's store."""

    def signing_keys(self) -> list[StoredSigningKey]: ...

    def add_signing_key(self, key: StoredSigningKey) -> None:
        """Store a new key; raises SigningKeyExists if its kid is already stored."""

    def retire_signing_keys(self, except_kid: str, at: datetime) -> None:
        """Set `retired_at = at` on every unretired key but `except_kid`."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    active: SigningKey
    #: Public keys that verify results now: the active key first.
    published: tuple[ec.EllipticCurvePublicKey, ...]
    kids: tuple[str, ...]

    @classmethod
    def of(
        cls, stored: Sequence[StoredSigningKey], now: datetime, grace: timedelta = DEFAULT_GRACE
    ) -> KeyRing:
        """The ring the stored keys make at `now`; KeyRingInvalid if none is active."""
        unretired = [k for k in stored if k.retired_at is None or k.retired_at > now]
        if not unretired:
            raise KeyRingInvalid("no unretired result-signing key is stored")
        newest = max(unretired, key=lambda k: (k.created_at, k.kid))
        recent = [k for k in stored if k.retired_at is not None and now - k.retired_at <= grace]
        keep = [newest, *sorted({*unretired, *recent} - {newest}, key=_newest_first)]
        loaded = [_load(k) for k in keep]
        return cls(loaded[0], tuple(key.public_key for key in loaded), tuple(k.kid for k in keep))

    def verification_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        """kid → public key, for verify_result / verify_result_cose."""
        return dict(zip(self.kids, self.published, strict=True))

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The published keys as a JWKS document (RFC 7517, 5)."""
        return jwks_document(list(self.published))


def _newest_first(key: StoredSigningKey) -> tuple[float, str]:
    return (-key.created_at.timestamp(), key.kid)


def _load(stored: StoredSigningKey) -> SigningKey:
    try:
        key = SigningKey.from_pem(stored.private_pem)
    except Refusal as exc:
        raise KeyRingInvalid(f"stored key {stored.kid}: {exc.message}") from None
    if key.kid != stored.kid:
        # The kid is what verifiers select by: a row whose name and key disagree would
        # publish one key under another's name.
        raise KeyRingInvalid(f"stored key {stored.kid} is in fact key {key.kid}")
    return key


def load(store: KeyStore, now: datetime, grace: timedelta = DEFAULT_GRACE) -> KeyRing:
    """The ring as the store holds it now (raises KeyRingInvalid without an active key)."""
    return KeyRing.of(store.signing_keys(), now, grace)


def ensure_key(store: KeyStore, now: datetime, grace: timedelta = DEFAULT_GRACE) -> KeyRing:
    """The ring, creating the first key when the store has no active one."""
    stored = store.signing_keys()
    if any(k.retired_at is None or k.retired_at > now for k in stored):
        return KeyRing.of(stored, now, grace)
    _add(store, SigningKey.generate(), now)
    return load(store, now, grace)


def rotate(store: KeyStore, now: datetime, grace: timedelta = DEFAULT_GRACE) -> KeyRing:
    """A new active key; the previous ones retire at `now` and stay published for
    `grace`, so results they signed keep verifying."""
    key = SigningKey.generate()
    _add(store, key, now)  # added before the others retire: never without an active key
    store.retire_signing_keys(key.kid, now)
    log.info("signing key rotated", extra={"fields": {"kid": key.kid}})
    return load(store, now, grace)


def _add(store: KeyStore, key: SigningKey, now: datetime) -> None:
    try:
        store.add_signing_key(StoredSigningKey.of(key, now))
    except SigningKeyExists:
        # Another replica stored this kid first; reading the store gives us its key.
        log.info("signing key already stored", extra={"fields": {"kid": key.kid}})
        return
    log.info("signing key created", extra={"fields": {"kid": key.kid}})

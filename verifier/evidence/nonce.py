"""Verifier nonces: self-authenticating, bound to one node, single use (pure, no I/O).

A challenge costs the verifier no write: the nonce carries its own expiry, a tag of
the node it was issued to, and a MAC under a key only the verifier replicas share.
Single use is enforced when the nonce is spent: the attestation that spends it records
it, in the same transaction as its result, and a second spend finds it recorded.

Layout, 32 bytes (TPM2B_DATA holds sizeof(TPMT_HA): 34 bytes on SHA-256-only TPMs, so
a nonce must stay at or under 34 to fit every TPM's qualifyingData):

    expires_ms(6) | ttl_ms(3) | node_tag(4) | entropy(3) | mac(16)

- expires_ms: Unix time in milliseconds when the nonce stops being acceptable;
- ttl_ms: its lifetime, so the issue time is recoverable for the record;
- node_tag: SHA-256(node id)[:4], to tell "another node's nonce" from a forgery;
- entropy: random, so two nonces for one node in one millisecond still differ;
- mac: HMAC-SHA-256(key, "lightgate nonce v1" | node id | the 16 bytes above)[:16].
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from verifier.evidence.quote import NonceRecord

NONCE_BYTES = 32
_BODY = 16
_DOMAIN = b"lightgate nonce v1\0"
MAX_TTL_MS = (1 << 24) - 1  # what 3 bytes hold: about 4.6 hours
_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, datetime's last millisecond


def node_tag(node_id: str) -> bytes:
    return hashlib.sha256(node_id.encode()).digest()[:4]


def _mac(key: bytes, node_id: str, body: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + node_id.encode() + b"\0" + body, hashlib.sha256).digest()[:16]


def mint_nonce(
    key: bytes, node_id: str, issued_at: datetime, ttl: timedelta, entropy: bytes
) -> bytes:
    """A nonce for `node_id`, valid from `issued_at` for `ttl` (at most MAX_TTL_MS)."""
    ttl_ms = round(ttl.total_seconds() * 1000)
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise ValueError(f"nonce lifetime {ttl} is outside 1 ms .. {MAX_TTL_MS} ms")
    if len(entropy) != 3:
        raise ValueError("nonce entropy is 3 bytes")
    expires_ms = _unix_ms(issued_at) + ttl_ms
    body = expires_ms.to_bytes(6, "big") + ttl_ms.to_bytes(3, "big") + node_tag(node_id) + entropy
    return body + _mac(key, node_id, body)


def read_nonce(key: bytes, value: bytes, node_id: str) -> NonceRecord | None:
    """What `value` says, as seen by `node_id`: None when this verifier did not issue it
    (wrong size or MAC); a record with node_id None when it was issued to another node;
    otherwise the record for `node_id` (unused: spending is the store's part)."""
    if len(value) != NONCE_BYTES:
        return None
    body, mac = value[:_BODY], value[_BODY:]
    expires_ms = int.from_bytes(body[:6], "big")
    if expires_ms > _LAST_MS:
        return None  # no verifier mints that: past the year 9999
    expires_at = _from_unix_ms(expires_ms)
    if not hmac.compare_digest(body[9:13], node_tag(node_id)):
        return NonceRecord(value, None, expires_at, used=False)
    if not hmac.compare_digest(mac, _mac(key, node_id, body)):
        return None
    return NonceRecord(value, node_id, expires_at, used=False)


def issued_at(value: bytes) -> datetime:
    """When a nonce (already read) was issued: its expiry less its lifetime."""
    expires_ms = int.from_bytes(value[:6], "big")
    return _from_unix_ms(expires_ms - int.from_bytes(value[6:9], "big"))


def _unix_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _from_unix_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)

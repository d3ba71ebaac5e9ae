"""Self-authenticating nonces: bound to a node and a verifier key, carrying their expiry."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.evidence.errors import NonceExpired, NonceMismatch, NonceUnknown
from verifier.evidence.nonce import (
    MAX_TTL_MS,
    NONCE_BYTES,
    issued_at,
    mint_nonce,
    read_nonce,
)
from verifier.evidence.quote import check_nonce

KEY = bytes(range(32))
NOW = datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)
TTL = timedelta(seconds=60)


def _mint(node: str = "node-a", key: bytes = KEY, entropy: bytes = b"\x01\x02\x03") -> bytes:
    return mint_nonce(key, node, NOW, TTL, entropy)


def test_round_trip() -> None:
    nonce = _mint()
    assert len(nonce) == NONCE_BYTES == 32  # fits TPM2B_DATA even on SHA-256-only TPMs
    record = read_nonce(KEY, nonce, "node-a")
    assert record is not None and record.node_id == "node-a" and not record.used
    assert record.expires_at == NOW + TTL
    assert issued_at(nonce) == NOW
    check_nonce(record, nonce, "node-a", NOW + TTL - timedelta(milliseconds=1))


def test_entropy_makes_nonces_distinct() -> None:
    assert _mint(entropy=b"\x00\x00\x01") != _mint(entropy=b"\x00\x00\x02")


def test_another_nodes_nonce_is_a_mismatch() -> None:
    record = read_nonce(KEY, _mint("node-a"), "node-b")
    assert record is not None and record.node_id is None
    with pytest.raises(NonceMismatch, match="another node"):
        check_nonce(record, _mint("node-a"), "node-b", NOW)


@pytest.mark.parametrize("position", [0, 5, 8, 13, 15, 16, 31])
def test_any_altered_byte_is_refused(position: int) -> None:
    forged = bytearray(_mint())
    forged[position] ^= 0x80
    record = read_nonce(KEY, bytes(forged), "node-a")
    if record is not None:  # only a changed node tag reads as "another node's"
        assert record.node_id is None and 9 <= position < 13
    with pytest.raises((NonceUnknown, NonceMismatch)):
        check_nonce(record, bytes(forged), "node-a", NOW)


def test_another_verifiers_nonce_is_unknown() -> None:
    assert read_nonce(os.urandom(32), _mint(), "node-a") is None


@pytest.mark.parametrize("size", [0, 20, 31, 33, 64])
def test_wrong_size_is_unknown(size: int) -> None:
    assert read_nonce(KEY, bytes(size), "node-a") is None


def test_expiry_to_the_millisecond() -> None:
    nonce = _mint()
    record = read_nonce(KEY, nonce, "node-a")
    assert record is not None
    check_nonce(record, nonce, "node-a", NOW + TTL - timedelta(milliseconds=1))
    with pytest.raises(NonceExpired):
        check_nonce(record, nonce, "node-a", NOW + TTL)


def test_lifetime_bounds() -> None:
    mint_nonce(KEY, "n", NOW, timedelta(milliseconds=MAX_TTL_MS), b"abc")
    for ttl in (timedelta(0), timedelta(milliseconds=MAX_TTL_MS + 1)):
        with pytest.raises(ValueError, match="lifetime"):
            mint_nonce(KEY, "n", NOW, ttl, b"abc")


@given(st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES))
def test_random_bytes_are_never_this_nodes_nonce(value: bytes) -> None:
    record = read_nonce(KEY, value, "node-a")
    assert record is None or record.node_id is None

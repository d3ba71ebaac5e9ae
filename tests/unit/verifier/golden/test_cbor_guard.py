"""The CBOR guard's entry point, on its own: what it decodes, what it refuses, and that it
raises nothing but CborInvalid.  Through CoRIM the guard is tested in test_corim.py."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.golden.cbor_guard import CborInvalid, checked_loads

TAGS = frozenset({1, 18})


def test_decodes_what_it_accepts() -> None:
    value = {1: [b"\x00", "text", True, None, -7], "k": cbor2.CBORTag(18, "signed")}
    assert checked_loads(cbor2.dumps(value), what="item", allowed_tags=TAGS) == value


@pytest.mark.parametrize(
    ("encoded", "detail"),
    [
        (b"", "truncated at byte 0"),
        (b"\x01\x02", "1 bytes after the CBOR item"),
        (b"\xbf\x01\x02\xff", "indefinite length"),
        (b"\xa2\x01\x02\x01\x03", "duplicate map key at byte 3"),
        (b"\xa1\x41\x00\x01", "not an integer or text"),
        (b"\xd8\x20\x60", "CBOR tag 32 at byte 0"),
        (b"\xc1\x60", "epoch time at byte 0"),
        (b"\xf9\x3c\x00", "float or simple value"),
        (b"\x81" * 18 + b"\x00", "nested deeper than 16"),
        (b"\x62\xff\xfe", "item: "),  # cbor2's own refusal (not UTF-8) is CborInvalid too
    ],
    ids=[
        "empty",
        "trailing",
        "indefinite",
        "duplicate",
        "bytes-key",
        "tag",
        "epoch",
        "float",
        "deep",
        "cbor2",
    ],
)
def test_refusals_name_the_bytes(encoded: bytes, detail: str) -> None:
    with pytest.raises(CborInvalid, match=detail) as raised:
        checked_loads(encoded, what="item", allowed_tags=TAGS)
    assert raised.value.message.startswith("item: ")


def test_only_the_callers_tags() -> None:
    tagged = cbor2.dumps(cbor2.CBORTag(18, []))
    with pytest.raises(CborInvalid, match="CBOR tag 18"):
        checked_loads(tagged, what="item", allowed_tags=frozenset())


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_cbor_invalid(encoded: bytes) -> None:
    with contextlib.suppress(CborInvalid):
        checked_loads(encoded, what="item", allowed_tags=TAGS)

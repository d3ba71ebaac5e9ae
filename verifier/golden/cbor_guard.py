"""A guard in front of the CBOR decoder, for bytes nobody has vouched for yet.

A signed CoRIM (`corim`) is decoded before its signature is checked: the COSE_Sign1
envelope and its protected header.  Those bytes are the attacker's, and cbor2 builds
whatever they describe, so `checked_loads` walks them first and decodes only what this
verifier's formats use:

- definite lengths only, and no string or container longer than the bytes left;
- map keys that are integers or text, without duplicates (RFC 9052, 3: labels are
  unique; any other key type lets crafted hash collisions make decoding quadratic);
- only the tags the caller names (cbor2 would build bignums, bigfloats, regexes and
  shared references from others), and an epoch time (tag 1, RFC 8949 3.4.2) only as an
  integer;
- no floats and no simple values but false, true and null;
- nothing nested deeper than 16 levels, and nothing after the one item.

Every refusal is a `CborInvalid` whose message starts with the caller's name for the
bytes (`what`) and gives the byte offset.  Pure: bytes in, a decoded value out.
"""

from __future__ import annotations

from typing import Final

import cbor2

from lightgate.errors import Refusal

_TAG_EPOCH: Final = 1
_MAX_DEPTH: Final = 16
_FALSE, _TRUE, _NULL = 20, 21, 22


class CborInvalid(Refusal):
    """Bytes are not one CBOR item of the shape `checked_loads` accepts."""

    check = "cbor-invalid"


def checked_loads(encoded: bytes, *, what: str, allowed_tags: frozenset[int]) -> object:
    """`encoded` decoded by cbor2, once a walk over its bytes found nothing to refuse.

    `what` names the bytes in every message ("protected header"); `allowed_tags` are the
    CBOR tags the caller's format uses, every other tag is refused.  Raises CborInvalid,
    also for what cbor2 itself cannot decode."""
    end = _walk(encoded, 0, 0, what, allowed_tags)
    if end != len(encoded):
        raise CborInvalid(f"{what}: {len(encoded) - end} bytes after the CBOR item")
    try:
        return cbor2.loads(encoded)
    except cbor2.CBORDecodeError as exc:
        raise CborInvalid(f"{what}: {exc}") from None


def _head(encoded: bytes, at: int, what: str) -> tuple[int, int, int, int]:
    """(major type, additional info, argument, offset after the head)."""
    if at >= len(encoded):
        raise CborInvalid(f"{what}: truncated at byte {at}")
    major, info = encoded[at] >> 5, encoded[at] & 0x1F
    if info < 24:
        return major, info, info, at + 1
    if info > 27:
        raise CborInvalid(f"{what}: indefinite length or reserved head at byte {at}")
    end = at + 1 + (1 << (info - 24))
    if end > len(encoded):
        raise CborInvalid(f"{what}: truncated at byte {at}")
    return major, info, int.from_bytes(encoded[at + 1 : end], "big"), end


def _walk(encoded: bytes, at: int, depth: int, what: str, tags: frozenset[int]) -> int:
    """The offset after the item at `at`, refusing what this format does not use."""
    if depth > _MAX_DEPTH:
        raise CborInvalid(f"{what}: nested deeper than {_MAX_DEPTH} at byte {at}")
    major, info, argument, after = _head(encoded, at, what)
    if major in (0, 1):
        return after
    if major in (2, 3):
        if argument > len(encoded) - after:
            raise CborInvalid(f"{what}: string at byte {at} runs past the end")
        return after + argument
    if major in (4, 5) and argument > len(encoded) - after:
        raise CborInvalid(f"{what}: container at byte {at} has more items than bytes left")
    if major == 4:
        for _ in range(argument):
            after = _walk(encoded, after, depth + 1, what, tags)
        return after
    if major == 5:
        return _walk_map(encoded, after, argument, depth, what, tags)
    if major == 6:
        if argument not in tags:
            raise CborInvalid(f"{what}: CBOR tag {argument} at byte {at} is not used here")
        if argument == _TAG_EPOCH and _head(encoded, after, what)[0] not in (0, 1):
            raise CborInvalid(f"{what}: an epoch time at byte {at} is not an integer")
        return _walk(encoded, after, depth + 1, what, tags)
    if info < 24 and argument in (_FALSE, _TRUE, _NULL):
        return after
    raise CborInvalid(f"{what}: float or simple value at byte {at} is not used here")


def _walk_map(
    encoded: bytes, at: int, pairs: int, depth: int, what: str, tags: frozenset[int]
) -> int:
    seen: set[tuple[int, int | bytes]] = set()
    for _ in range(pairs):
        major, _info, argument, after = _head(encoded, at, what)
        if major in (0, 1):
            key: tuple[int, int | bytes] = (major, argument)
        elif major == 3:
            if argument > len(encoded) - after:
                raise CborInvalid(f"{what}: map key at byte {at} runs past the end")
            key = (major, encoded[after : after + argument])
            after += argument
        else:
            raise CborInvalid(f"{what}: map key at byte {at} is not an integer or text")
        if key in seen:
            raise CborInvalid(f"{what}: duplicate map key at byte {at}")
        seen.add(key)
        at = _walk(encoded, after, depth + 1, what, tags)
    return at

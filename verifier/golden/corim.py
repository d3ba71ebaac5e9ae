"""Golden values as a signed CoRIM (draft-ietf-rats-corim), and back.

`export_corim` signs golden values as a COSE_Sign1 (RFC 9052) over an unsigned CoRIM that
holds one CoMID.  `import_corim` checks the signature against trusted keys before it
decodes the payload, and returns the same golden values.  Every CBOR decode goes through
`cbor_guard.checked_loads` (strict, bounded, only this format's tags), whose refusals are
CorimInvalid.  Pure: bytes in, bytes out.

Layout (draft-ietf-rats-corim keys; `L` marks Lightgate-private keys: negative, as the
draft's "Extensibility" section reserves non-negative ones for IANA, and scoped by PROFILE):

    signed-corim = #6.18([
      protected: bstr .cbor {
        1: alg,                                ; -7 ES256, -35 ES384, -8 EdDSA
        3: "application/rim+cbor",             ; content-type
        ? 4: kid,                              ; when given; see cose.key_id_of
        8: bstr .cbor {                        ; corim-meta
          0: {0: signer-name},                 ; signer
          ? 1: {? 0: not-before, 1: not-after} ; signature-validity, #6.1(int)
        }
      },
      unprotected: {},
      payload: bstr .cbor #6.501({             ; unsigned-corim-map
        0: corim-id,                           ; tstr, by default a random UUID (16 bytes)
        1: [#6.506(bstr .cbor comid)],         ; tags: one CoMID
        3: #6.32(PROFILE)                      ; profile
      }),
      signature: bstr                          ; ECDSA as r || s (RFC 9053, 2.1)
    ])
    comid = {
      1: {0: tag-id},                          ; "lightgate:golden-values:<name>:sha256:<hex>"
      4: {0: [+ reference-triple]},            ; triples: reference-triples
      -1: name,                                ; L: the golden values' name
      -2: {* tstr => tstr}                     ; L: provenance
    }
    reference-triple = [
      {0: {1: "lightgate", 2: claim-name}},    ; environment: class vendor / model
      [{1: mval}]                              ; one anonymous measurement
    ]
    mval = {2: [[alg, bytes]]}                 ; "sha256:<hex>"...: digests, IANA named-info
         / {4: #6.560(utf-8 bytes)}            ; other text: raw-value
         / {-1: bool}                          ; L: a boolean claim
         / {-2: [* tstr]}                      ; L: a list-valued claim, entries as text

Each allowed alternative is its own triple for the claim's environment: the draft matches
all measurements of one triple together (several need distinct mkeys), while separate
triples for one environment are alternative reference states.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import cbor2

from lightgate.errors import Refusal
from verifier.evidence.claim_names import ClaimValue
from verifier.golden import cose
from verifier.golden.cbor_guard import CborInvalid, checked_loads
from verifier.golden.values import KIND, VERSION, GoldenValues, GoldenValuesInvalid, from_document

CONTENT_TYPE: Final = "application/rim+cbor"
PROFILE: Final = "tag:lightgate,2026:corim/golden-values/1"
VENDOR: Final = "lightgate"
MAX_CORIM_BYTES: Final = 4 * 1024 * 1024

# COSE header labels (RFC 9052, 3.1) and the CoRIM corim-meta label.
_ALG, _CRIT, _CONTENT_TYPE, _KID, _CORIM_META = 1, 2, 3, 4, 8
_TAG_SIGN1, _TAG_URI, _TAG_EPOCH = 18, 32, 1
_TAG_CORIM, _TAG_COMID, _TAG_BYTES = 501, 506, 560
# Lightgate-private keys of the CoMID and of measurement-values-map.
_L_NAME, _L_PROVENANCE = -1, -2
_L_BOOL, _L_TEXT_LIST = -1, -2
_DIGESTS, _RAW_VALUE = 2, 4

# Claim prefix -> (named-information id, digest size).  SHA-1 has no entry in that
# registry; CoRIM's digest alg may be text, so it goes by its hash name.
_DIGEST_ALGS: Final[dict[str, tuple[int | str, int]]] = {
    "sha1": ("sha-1", 20),
    "sha256": (1, 32),
    "sha384": (7, 48),
    "sha512": (8, 64),
}
_DIGEST_PREFIXES: Final[dict[int | str, str]] = {
    **{alg: prefix for prefix, (alg, _) in _DIGEST_ALGS.items()},
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
_DIGEST_TEXT: Final = re.compile(r"(sha1|sha256|sha384|sha512):((?:[0-9a-f]{2})+)")


class CorimInvalid(Refusal):
    """A CoRIM (or a key for one) does not hold to the format Lightgate reads and writes."""

    check = "corim-invalid"


class CorimSignatureInvalid(Refusal):
    """A CoRIM's signature does not verify with any trusted key."""

    check = "corim-signature"


class CorimOutsideValidity(CorimSignatureInvalid):
    """The signature's validity (corim-meta signature-validity) does not cover now."""

    check = "corim-validity"


# Keys: cose.py loads them; its refusals are this module's CorimInvalid.


def load_signing_key(pem: bytes) -> cose.SigningKey:
    """A PEM private key (unencrypted): P-256, P-384 or Ed25519."""
    with _key_refusals():
        return cose.load_signing_key(pem)


def load_trusted_key(pem: bytes) -> cose.TrustedKey:
    """A PEM public key, or the key of a PEM X.509 certificate: P-256, P-384 or Ed25519.

    A private key is refused: a verifier's trust list holds no signing material."""
    with _key_refusals():
        return cose.load_trusted_key(pem)


@contextmanager
def _key_refusals() -> Iterator[None]:
    """cose.CoseKeyInvalid as CorimInvalid, message unchanged: this module's public
    functions refuse with CorimInvalid / CorimSignatureInvalid only."""
    try:
        yield
    except cose.CoseKeyInvalid as exc:
        raise CorimInvalid(exc.message) from None


# Export.


def export_corim(
    golden: GoldenValues,
    key: cose.SigningKey,
    *,
    key_id: bytes | None = None,
    corim_id: str | None = None,
    signer_name: str = "lightgate",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> bytes:
    """The golden values as a signed CoRIM; `not_after` (and `not_before`) bound the
    signature's validity, which import then checks."""
    golden = _checked(golden)
    with _key_refusals():
        alg = cose.alg_for(key.public_key())
    protected: dict[int, object] = {_ALG: alg.cose, _CONTENT_TYPE: CONTENT_TYPE}
    if key_id is not None:
        protected[_KID] = bytes(key_id)
    protected[_CORIM_META] = cbor2.dumps(_corim_meta(signer_name, not_before, not_after))
    corim_map = {
        0: corim_id if corim_id is not None else uuid.uuid4().bytes,
        1: [cbor2.CBORTag(_TAG_COMID, cbor2.dumps(_comid(golden)))],
        3: cbor2.CBORTag(_TAG_URI, PROFILE),
    }
    header = cbor2.dumps(protected)
    payload = cbor2.dumps(cbor2.CBORTag(_TAG_CORIM, corim_map))
    with _key_refusals():
        signature = cose.sign(key, alg, _to_be_signed(header, payload))
    return cbor2.dumps(cbor2.CBORTag(_TAG_SIGN1, [header, {}, payload, signature]))


def _checked(golden: GoldenValues) -> GoldenValues:
    """The golden values as their document reads back: what import can return exactly."""
    return from_document(golden.to_document())


def _corim_meta(
    signer_name: str, not_before: datetime | None, not_after: datetime | None
) -> dict[int, object]:
    meta: dict[int, object] = {0: {0: signer_name}}
    if not_before is not None and not_after is None:
        raise CorimInvalid("a signature validity needs not_after (validity-map not-after)")
    if not_after is not None:
        bounds = {0: not_before, 1: not_after}
        meta[1] = {key: _epoch(moment) for key, moment in bounds.items() if moment is not None}
    return meta


def _epoch(moment: datetime) -> cbor2.CBORTag:
    if moment.tzinfo is None:
        raise CorimInvalid(f"{moment.isoformat()} has no time zone")
    return cbor2.CBORTag(_TAG_EPOCH, math.floor(moment.timestamp()))


def _comid(golden: GoldenValues) -> dict[int, object]:
    tag_id = f"lightgate:golden-values:{golden.name}:sha256:{golden.digest.hex()}"
    triples = [
        _reference_triple(claim, value)
        for claim, alternatives in sorted(golden.reference.items())
        for value in alternatives
    ]
    return {
        1: {0: tag_id},
        4: {0: triples},
        _L_NAME: golden.name,
        _L_PROVENANCE: dict(golden.provenance),
    }


def _reference_triple(claim: str, value: ClaimValue) -> list[object]:
    environment = {0: {1: VENDOR, 2: claim}}
    return [environment, [{1: _measurement_values(value)}]]


def _measurement_values(value: ClaimValue) -> dict[int, object]:
    if isinstance(value, bool):
        return {_L_BOOL: value}
    if isinstance(value, tuple):
        return {_L_TEXT_LIST: list(value)}
    digest = _DIGEST_TEXT.fullmatch(value)
    if digest is not None:
        alg, size = _DIGEST_ALGS[digest[1]]
        if len(digest[2]) == 2 * size:
            return {_DIGESTS: [[alg, bytes.fromhex(digest[2])]]}
    return {_RAW_VALUE: cbor2.CBORTag(_TAG_BYTES, value.encode())}


def _to_be_signed(protected: bytes, payload: bytes) -> bytes:
    """Sig_structure for COSE_Sign1, no external AAD (RFC 9052, 4.4)."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


# Import: envelope, signature, then payload.


@dataclass(frozen=True, slots=True)
class _Envelope:
    protected: bytes
    alg: cose.Alg
    kid: bytes | None
    corim_meta: bytes
    payload: bytes
    signature: bytes


def import_corim(
    data: bytes, trusted: Sequence[cose.TrustedKey], *, now: datetime | None = None
) -> GoldenValues:
    """Golden values from a signed CoRIM, once its signature verifies with a trusted key.

    Raises CorimInvalid (malformed), CorimSignatureInvalid (no trusted key signed it) or
    CorimOutsideValidity (a signature validity that `now` is outside, or no `now`)."""
    envelope = _open(data)
    _verify(envelope, trusted)
    _check_validity(_decode(envelope.corim_meta, "corim-meta"), now)
    return _golden_values(envelope.payload)


def _open(data: bytes) -> _Envelope:
    if not isinstance(data, bytes | bytearray):
        raise CorimInvalid(f"a CoRIM is bytes, not {type(data).__name__}")
    if len(data) > MAX_CORIM_BYTES:
        raise CorimInvalid(f"{len(data)} bytes is over the {MAX_CORIM_BYTES}-byte limit")
    outer = _decode(bytes(data), "signed CoRIM")
    if not isinstance(outer, cbor2.CBORTag) or outer.tag != _TAG_SIGN1:
        raise CorimInvalid("a signed CoRIM is a COSE_Sign1 with CBOR tag 18")
    items = _list(outer.value, "COSE_Sign1")
    if len(items) != 4:
        raise CorimInvalid(f"COSE_Sign1 has 4 items, not {len(items)}")
    protected, unprotected, payload, signature = items
    if payload is None:
        raise CorimInvalid("detached payloads are not supported: the payload must be inline")
    protected = _bytes(protected, "protected header")
    alg, kid, corim_meta = _read_protected(protected)
    _check_unprotected(_map(unprotected, "unprotected header"))
    return _Envelope(
        protected,
        alg,
        kid,
        corim_meta,
        _bytes(payload, "payload"),
        _bytes(signature, "signature"),
    )


_PROTECTED_LABELS: Final = frozenset({_ALG, _CONTENT_TYPE, _KID, _CORIM_META})


def _read_protected(protected: bytes) -> tuple[cose.Alg, bytes | None, bytes]:
    """(alg, kid, corim-meta bytes) of the protected header.  Closed: a label Lightgate
    does not know (crit among them, RFC 9052, 3.1) is refused rather than ignored."""
    if not protected:
        raise CorimInvalid("the protected header is empty: alg must be protected")
    header = _map(_decode(protected, "protected header"), "protected header")
    unknown = sorted(repr(label) for label in header if label not in _PROTECTED_LABELS)
    if unknown:
        raise CorimInvalid(f"protected header: unsupported labels {', '.join(unknown)}")
    if _ALG not in header:
        raise CorimInvalid("the protected header has no alg (1)")
    alg = header[_ALG]
    if not _is_int(alg) or alg not in cose.ALGS:
        raise CorimSignatureInvalid(f"alg {alg!r} is not ES256 (-7), ES384 (-35) or EdDSA (-8)")
    if header.get(_CONTENT_TYPE) != CONTENT_TYPE:
        raise CorimInvalid(f"content-type {header.get(_CONTENT_TYPE)!r} is not {CONTENT_TYPE!r}")
    if _CORIM_META not in header:
        raise CorimInvalid("the protected header has no corim-meta (8)")
    kid = header.get(_KID)
    return (
        cose.ALGS[alg],
        None if kid is None else _bytes(kid, "kid"),
        _bytes(header[_CORIM_META], "corim-meta (8)"),
    )


def _check_unprotected(unprotected: Mapping[object, object]) -> None:
    """The parameters that decide how the CoRIM is read live only in the protected header:
    an unprotected copy could be altered without breaking the signature."""
    for label in (_ALG, _CRIT, _CONTENT_TYPE, _KID, _CORIM_META):
        if label in unprotected:
            raise CorimInvalid(f"header label {label} must not be in the unprotected header")


def _verify(envelope: _Envelope, trusted: Sequence[cose.TrustedKey]) -> None:
    alg = envelope.alg
    keys = [key for key in trusted if alg.matches(key)]
    if envelope.kid is not None:
        keys = [key for key in keys if cose.key_id_of(key) == envelope.kid] or keys
    if not keys:
        raise CorimSignatureInvalid(f"no trusted key for {alg.name} ({len(trusted)} trusted)")
    to_be_signed = _to_be_signed(envelope.protected, envelope.payload)
    if not any(cose.verifies(key, alg, to_be_signed, envelope.signature) for key in keys):
        raise CorimSignatureInvalid(
            f"the {alg.name} signature verifies with none of the {len(keys)} trusted keys"
        )


def _check_validity(meta_value: object, now: datetime | None) -> None:
    meta = _map(meta_value, "corim-meta")
    _only(meta, {0, 1}, "corim-meta")
    signer = _map(meta.get(0), "corim-meta signer (0)")
    _only(signer, {0, 1}, "corim-meta signer")
    _text(signer.get(0), "signer-name")
    if 1 in signer:
        _text(signer[1], "signer-uri")
    if 1 not in meta:
        return
    validity = _map(meta[1], "signature-validity (1)")
    _only(validity, {0, 1}, "signature-validity")
    not_after = _time(validity.get(1), "not-after")
    not_before = _time(validity[0], "not-before") if 0 in validity else None
    if now is None:
        raise CorimOutsideValidity("the signature has a validity and no current time was given")
    if now.tzinfo is None:
        raise CorimInvalid(f"the current time {now.isoformat()} has no time zone")
    if now > not_after or (not_before is not None and now < not_before):
        start = not_before.isoformat() if not_before else "-"
        raise CorimOutsideValidity(
            f"{now.isoformat()} is outside the signature's validity {start} .. "
            f"{not_after.isoformat()}"
        )


def _golden_values(payload: bytes) -> GoldenValues:
    corim = _decode(payload, "payload")
    if not isinstance(corim, cbor2.CBORTag) or corim.tag != _TAG_CORIM:
        raise CorimInvalid("the payload is not an unsigned CoRIM (CBOR tag 501)")
    corim_map = _map(corim.value, "corim-map")
    _only(corim_map, {0, 1, 3}, "corim-map")
    if corim_map.get(3) != cbor2.CBORTag(_TAG_URI, PROFILE):
        raise CorimInvalid(f"profile {corim_map.get(3)!r} is not {PROFILE!r}")
    corim_id = corim_map.get(0)
    if not isinstance(corim_id, str) and not (isinstance(corim_id, bytes) and len(corim_id) == 16):
        raise CorimInvalid("corim id (0) is text or a 16-byte UUID")
    tags = _list(corim_map.get(1), "corim tags (1)")
    if len(tags) != 1 or not isinstance(tags[0], cbor2.CBORTag) or tags[0].tag != _TAG_COMID:
        raise CorimInvalid("corim tags (1) must hold exactly one CoMID (CBOR tag 506)")
    comid = _map(_decode(_bytes(tags[0].value, "CoMID"), "CoMID"), "CoMID")
    try:
        return from_document(_document(comid))
    except GoldenValuesInvalid as exc:
        raise CorimInvalid(f"the CoMID's golden values: {exc.message}") from None


def _document(comid: Mapping[object, object]) -> dict[str, object]:
    _only(comid, {1, 4, _L_NAME, _L_PROVENANCE}, "CoMID")
    identity = _map(comid.get(1), "tag-identity (1)")
    tag_id = identity.get(0)
    if not isinstance(tag_id, str) and not (isinstance(tag_id, bytes) and len(tag_id) == 16):
        raise CorimInvalid("tag-id is text or a 16-byte UUID")
    triples = _map(comid.get(4), "triples (4)")
    _only(triples, {0}, "triples")
    reference: dict[str, list[object]] = {}
    for number, triple in enumerate(_list(triples.get(0), "reference-triples (0)")):
        claim, value = _reference_value(triple, f"reference triple {number}")
        reference.setdefault(claim, []).append(value)
    provenance = _map(comid.get(_L_PROVENANCE, {}), "provenance (-2)")
    return {
        "kind": KIND,
        "version": VERSION,
        "name": _text(comid.get(_L_NAME), "name (-1)"),
        "provenance": {
            _text(k, "provenance key"): _text(v, f"provenance {k!r}") for k, v in provenance.items()
        },
        "reference": reference,
    }


def _reference_value(triple: object, where: str) -> tuple[str, object]:
    record = _list(triple, where)
    if len(record) != 2:
        raise CorimInvalid(f"{where}: a reference triple is [environment, measurements]")
    environment = _map(record[0], f"{where} environment")
    _only(environment, {0}, f"{where} environment")
    class_map = _map(environment.get(0), f"{where} class")
    _only(class_map, {1, 2}, f"{where} class")
    if class_map.get(1) != VENDOR:
        raise CorimInvalid(f"{where}: vendor {class_map.get(1)!r} is not {VENDOR!r}")
    claim = _text(class_map.get(2), f"{where} model (claim name)")
    measurements = _list(record[1], f"{where} measurements")
    if len(measurements) != 1:
        raise CorimInvalid(
            f"{where} ({claim}): one measurement per triple, not {len(measurements)}"
        )
    measurement = _map(measurements[0], f"{where} measurement")
    _only(measurement, {1}, f"{where} measurement")
    return claim, _claim_value(_map(measurement.get(1), f"{where} mval"), f"{where} ({claim})")


def _claim_value(mval: Mapping[object, object], where: str) -> object:
    if len(mval) != 1:
        raise CorimInvalid(f"{where}: mval holds exactly one of digests, raw-value, -1, -2")
    ((key, value),) = mval.items()
    if key == _DIGESTS and _is_int(key):
        return _digest_text(value, where)
    if key == _RAW_VALUE and _is_int(key):
        if not isinstance(value, cbor2.CBORTag) or value.tag != _TAG_BYTES:
            raise CorimInvalid(f"{where}: raw-value is tagged-bytes (CBOR tag 560)")
        try:
            return _bytes(value.value, f"{where} raw-value").decode()
        except UnicodeDecodeError:
            raise CorimInvalid(f"{where}: raw-value is not UTF-8 text") from None
    if key == _L_BOOL and isinstance(value, bool):
        return value
    if key == _L_TEXT_LIST and _is_int(key):
        return [_text(entry, f"{where} list entry") for entry in _list(value, where)]
    raise CorimInvalid(f"{where}: mval {key!r} => {type(value).__name__} is not supported")


def _digest_text(value: object, where: str) -> str:
    digests = _list(value, f"{where} digests")
    if len(digests) != 1:
        raise CorimInvalid(f"{where}: one digest per measurement, not {len(digests)}")
    entry = _list(digests[0], f"{where} digest")
    if len(entry) != 2:
        raise CorimInvalid(f"{where}: a digest is [alg, value]")
    alg = entry[0]
    if isinstance(alg, bool) or not isinstance(alg, int | str) or alg not in _DIGEST_PREFIXES:
        raise CorimInvalid(f"{where}: digest algorithm {alg!r} is not supported")
    prefix = _DIGEST_PREFIXES[alg]
    digest = _bytes(entry[1], f"{where} digest")
    if len(digest) != _DIGEST_ALGS[prefix][1]:
        raise CorimInvalid(f"{where}: a {prefix} digest of {len(digest)} bytes")
    return f"{prefix}:{digest.hex()}"


# Decoded CBOR, checked by type.


def _map(value: object, what: str) -> Mapping[object, object]:
    if not isinstance(value, Mapping):
        raise CorimInvalid(f"{what} is not a map")
    return value


def _list(value: object, what: str) -> Sequence[object]:
    if not isinstance(value, list | tuple):
        raise CorimInvalid(f"{what} is not an array")
    return value


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise CorimInvalid(f"{what} is not a byte string")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise CorimInvalid(f"{what} is not a text string")
    return value


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise CorimInvalid(f"{what} is not an epoch time (CBOR tag 1)")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _only(mapping: Mapping[object, object], keys: set[int], what: str) -> None:
    """Closed maps: a key Lightgate does not know could change the meaning it ignores."""
    unknown = sorted(repr(key) for key in mapping if not _is_int(key) or key not in keys)
    if unknown:
        raise CorimInvalid(f"{what}: unsupported keys {', '.join(unknown)}")


# CBOR decoding.  Everything before the signature check is attacker's bytes, so every
# decode goes through the guard, which refuses all tags but the ones this format uses.

_ALLOWED_TAGS: Final = frozenset(
    {_TAG_EPOCH, _TAG_SIGN1, _TAG_URI, _TAG_CORIM, _TAG_COMID, _TAG_BYTES}
)


def _decode(encoded: bytes, what: str) -> object:
    try:
        return checked_loads(encoded, what=what, allowed_tags=_ALLOWED_TAGS)
    except CborInvalid as exc:
        raise CorimInvalid(exc.message) from None

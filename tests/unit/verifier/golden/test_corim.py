"""Golden values as a signed CoRIM: round trips, the CBOR layout, and one test per attack.

COSE_Sign1 messages for the attack tests are built here, independently of the module
(`_sign1`), so that each test breaks exactly one thing behind an otherwise valid signature.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import cbor2
import pytest
from cbor2 import CBORTag
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightgate.errors import Refusal
from verifier.golden.corim import (
    MAX_CORIM_BYTES,
    PROFILE,
    CorimInvalid,
    CorimOutsideValidity,
    CorimSignatureInvalid,
    export_corim,
    import_corim,
    load_signing_key,
    load_trusted_key,
)
from verifier.golden.cose import SigningKey, key_id_of
from verifier.golden.images import allow_list_document
from verifier.golden.values import GoldenValues

P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
ED25519 = ed25519.Ed25519PrivateKey.generate()
UNTRUSTED = ec.generate_private_key(ec.SECP256R1())
KEYS: dict[str, SigningKey] = {"p256": P256, "p384": P384, "ed25519": ED25519}
COSE_ALGS = {"p256": -7, "p384": -35, "ed25519": -8}

KERNEL_A = "sha256:" + "4f" * 32
KERNEL_B = "sha256:" + "a0" * 32
SHIM_SHA1 = "sha1:" + "5e" * 20
SCRTM_SHA384 = "sha384:" + "c3" * 48
INITRD_SHA512 = "sha512:" + "1d" * 64
NOT_A_DIGEST = "sha256:XYZ"  # digest-shaped text that is no digest: stays text
GOLDEN = GoldenValues(
    "debian12-ovmf",
    {
        "boot-chain.kernel": (KERNEL_A, KERNEL_B),
        "boot-chain.shim": (SHIM_SHA1,),
        "firmware.scrtm-contents": ((SCRTM_SHA384, KERNEL_A),),
        "kernel.file:/boot/initrd.img": (INITRD_SHA512,),
        "secure-boot.enabled": (True, False),
        "exit-boot-services": (True,),
        "secure-boot.db": (("a1" * 32, "b2" * 20), ()),
        "kernel.cmdline": ("root=/dev/vda2 ro quiet", ""),
        "firmware.scrtm-version": ("EDK II ✓ 1.0",),
        "shim.sbat-level": (NOT_A_DIGEST,),
    },
    {"source": "eventlog:good.bin", "author": "Zoë Ångström ✓ 測試", "created": "2026-01-02"},
)


def _cbor(item: object) -> bytes:
    return cbor2.dumps(item, canonical=True)


def _sign1(
    key: SigningKey,
    protected: bytes,
    payload: bytes | None,
    unprotected: dict[object, object] | None = None,
    *,
    der: bool = False,
) -> bytes:
    """A COSE_Sign1 (RFC 9052, 4.4) built without the module under test."""
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(to_be_signed)
    else:
        size = (key.curve.key_size + 7) // 8
        digest = hashes.SHA256() if size == 32 else hashes.SHA384()
        signature = key.sign(to_be_signed, ec.ECDSA(digest))
        if not der:
            r, s = decode_dss_signature(signature)
            signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return cbor2.dumps(CBORTag(18, [protected, unprotected or {}, payload, signature]))


def _meta(**validity: int) -> bytes:
    meta: dict[int, object] = {0: {0: "test signer"}}
    if validity:
        meta[1] = {0 if k == "not_before" else 1: CBORTag(1, v) for k, v in validity.items()}
    return _cbor(meta)


def _header(alg: object = -7, **labels: object) -> bytes:
    header: dict[object, object] = {1: alg, 3: "application/rim+cbor", 8: _meta()}
    header.update({int(k.removeprefix("l")): v for k, v in labels.items()})
    return _cbor({k: v for k, v in header.items() if v is not None})


def _parts(corim: bytes) -> tuple[bytes, dict[object, object], bytes, bytes]:
    outer = cbor2.loads(corim)
    assert isinstance(outer, CBORTag)
    assert outer.tag == 18
    protected, unprotected, payload, signature = outer.value
    assert isinstance(protected, bytes)
    assert isinstance(payload, bytes)
    assert isinstance(signature, bytes)
    return protected, dict(unprotected), payload, signature


def _signed_payload(golden: GoldenValues = GOLDEN) -> bytes:
    return _parts(export_corim(golden, P256))[2]


def _comid_of(corim: bytes) -> dict[object, object]:
    payload = cbor2.loads(_parts(corim)[2])
    assert isinstance(payload, CBORTag)
    comid = cbor2.loads(payload.value[1][0].value)
    assert isinstance(comid, dict)
    return comid


def _triples(corim: bytes) -> list[tuple[str, dict[object, object]]]:
    """(claim name, measurement values) of each reference triple, in order."""
    triples = _comid_of(corim)[4][0]  # type: ignore[index]
    return [(env[0][2], measurements[0][1]) for env, measurements in triples]


# Round trips.


@pytest.mark.parametrize("name", KEYS)
def test_round_trip_is_exact(name: str) -> None:
    key = KEYS[name]
    imported = import_corim(export_corim(GOLDEN, key), [key.public_key()])
    assert imported.to_document() == GOLDEN.to_document()
    assert list(imported.provenance) == list(GOLDEN.provenance)  # order kept for YAML
    assert imported.reference["boot-chain.kernel"] == (KERNEL_A, KERNEL_B)


def test_round_trip_with_kid_validity_and_corim_id() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    corim = export_corim(
        GOLDEN,
        P384,
        key_id=key_id_of(P384.public_key()),
        corim_id="debian12-ovmf-2026-01",
        signer_name="Example Ops",
        not_before=start,
        not_after=start + timedelta(days=90),
    )
    trusted = [P256.public_key(), P384.public_key()]
    imported = import_corim(corim, trusted, now=start + timedelta(days=1))
    assert imported.to_document() == GOLDEN.to_document()


_claim_values = st.one_of(
    st.text(max_size=40),
    st.booleans(),
    st.sampled_from(["sha1", "sha256", "sha384", "sha512"]).flatmap(
        lambda alg: st.binary(min_size=1, max_size=64).map(lambda b: f"{alg}:{b.hex()}")
    ),
    st.lists(st.text(max_size=20), max_size=4).map(tuple),
)


@settings(max_examples=60)
@given(
    name=st.text(min_size=1, max_size=128),
    reference=st.dictionaries(
        st.text(max_size=30),
        st.lists(_claim_values, min_size=1, max_size=4).map(tuple),
        min_size=1,
        max_size=6,
    ),
    provenance=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
)
def test_round_trip_of_any_golden_values(
    name: str, reference: dict[str, tuple[object, ...]], provenance: dict[str, str]
) -> None:
    golden = GoldenValues(name, reference, provenance)  # type: ignore[arg-type]
    imported = import_corim(export_corim(golden, ED25519), [ED25519.public_key()])
    assert imported.to_document() == golden.to_document()


# The CBOR layout.


def test_format_is_a_cose_sign1_over_an_unsigned_corim_with_one_comid() -> None:
    corim = export_corim(GOLDEN, P256, corim_id="golden-1")
    assert corim[:1] == b"\xd2"  # tag 18, COSE_Sign1
    protected, unprotected, payload, signature = _parts(corim)
    assert unprotected == {}
    assert len(signature) == 64
    assert cbor2.loads(protected)[1] == -7
    unsigned = cbor2.loads(payload)
    assert isinstance(unsigned, CBORTag)
    assert unsigned.tag == 501
    assert set(unsigned.value) == {0, 1, 3}
    assert unsigned.value[0] == "golden-1"
    assert unsigned.value[3] == CBORTag(32, PROFILE)
    (comid_tag,) = unsigned.value[1]
    assert isinstance(comid_tag, CBORTag)
    assert comid_tag.tag == 506
    comid = cbor2.loads(comid_tag.value)
    assert set(comid) == {1, 4, -1, -2}
    assert comid[1][0].startswith("lightgate:golden-values:debian12-ovmf:sha256:")
    assert comid[1][0].endswith(GOLDEN.digest.hex())
    assert comid[-1] == "debian12-ovmf"
    assert comid[-2] == dict(GOLDEN.provenance)
    assert set(comid[4]) == {0}
    environment, measurements = comid[4][0][0]
    assert environment == {0: {1: "lightgate", 2: "boot-chain.kernel"}}
    assert measurements == [{1: {2: [[1, bytes.fromhex(KERNEL_A[7:])]]}}]


def test_format_without_corim_id_uses_a_random_uuid() -> None:
    first, second = (cbor2.loads(_parts(export_corim(GOLDEN, P256))[2]) for _ in range(2))
    assert len(first.value[0]) == len(second.value[0]) == 16
    assert first.value[0] != second.value[0]


def test_format_each_alternative_is_its_own_triple_for_the_same_environment() -> None:
    triples = _triples(export_corim(GOLDEN, P256))
    assert len(triples) == sum(len(v) for v in GOLDEN.reference.values())
    kernel = [mval for claim, mval in triples if claim == "boot-chain.kernel"]
    assert kernel == [
        {2: [[1, bytes.fromhex(KERNEL_A[7:])]]},
        {2: [[1, bytes.fromhex(KERNEL_B[7:])]]},
    ]


def test_format_digests_use_named_information_ids_and_sha1_by_name() -> None:
    triples = dict(_triples(export_corim(GOLDEN, P256)))
    assert triples["boot-chain.shim"] == {2: [["sha-1", bytes.fromhex("5e" * 20)]]}
    assert triples["kernel.file:/boot/initrd.img"] == {2: [[8, bytes.fromhex("1d" * 64)]]}
    lists = [m for c, m in _triples(export_corim(GOLDEN, P256)) if c == "firmware.scrtm-contents"]
    assert lists == [{-2: [SCRTM_SHA384, KERNEL_A]}]


def test_format_text_booleans_and_lists() -> None:
    triples = _triples(export_corim(GOLDEN, P256))
    by_claim: dict[str, list[dict[object, object]]] = {}
    for claim, mval in triples:
        by_claim.setdefault(claim, []).append(mval)
    assert by_claim["kernel.cmdline"] == [
        {4: CBORTag(560, b"root=/dev/vda2 ro quiet")},
        {4: CBORTag(560, b"")},
    ]
    assert by_claim["firmware.scrtm-version"] == [{4: CBORTag(560, "EDK II ✓ 1.0".encode())}]
    assert by_claim["shim.sbat-level"] == [{4: CBORTag(560, NOT_A_DIGEST.encode())}]
    assert by_claim["secure-boot.enabled"] == [{-1: True}, {-1: False}]
    assert by_claim["secure-boot.db"] == [{-2: ["a1" * 32, "b2" * 20]}, {-2: []}]


@pytest.mark.parametrize("name", KEYS)
def test_format_protected_header(name: str) -> None:
    key = KEYS[name]
    kid = key_id_of(key.public_key())
    until = datetime(2027, 1, 1, tzinfo=UTC)
    corim = export_corim(GOLDEN, key, key_id=kid, signer_name="Example Ops", not_after=until)
    header = cbor2.loads(_parts(corim)[0])
    assert set(header) == {1, 3, 4, 8}
    assert header[1] == COSE_ALGS[name]
    assert header[3] == "application/rim+cbor"
    assert header[4] == kid
    meta = cbor2.loads(header[8])
    assert meta == {0: {0: "Example Ops"}, 1: {1: until}}
    assert set(cbor2.loads(_parts(export_corim(GOLDEN, key))[0])) == {1, 3, 8}


@pytest.mark.parametrize("name", KEYS)
def test_signature_is_raw_r_s_over_the_sig_structure(name: str) -> None:
    """Checked with cryptography directly, not through the module (RFC 9053, 2.1)."""
    key = KEYS[name]
    protected, _, payload, signature = _parts(export_corim(GOLDEN, key))
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, to_be_signed)
        return
    size = len(signature) // 2
    assert size == {"p256": 32, "p384": 48}[name]
    der = _der(signature)
    public.verify(der, to_be_signed, ec.ECDSA(hashes.SHA256() if size == 32 else hashes.SHA384()))


def _der(raw: bytes) -> bytes:
    size = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:size]), int.from_bytes(raw[size:]))


# Attacks on the signature and the headers.


def test_attack_signed_by_an_untrusted_key_is_refused() -> None:
    with pytest.raises(CorimSignatureInvalid, match="none of the 1 trusted"):
        import_corim(export_corim(GOLDEN, UNTRUSTED), [P256.public_key()])


def test_attack_no_trusted_keys_is_refused() -> None:
    with pytest.raises(CorimSignatureInvalid, match="no trusted key"):
        import_corim(export_corim(GOLDEN, P256), [])


def test_attack_digest_byte_changed_after_signing_is_refused() -> None:
    corim = bytearray(export_corim(GOLDEN, P256))
    at = corim.index(bytes.fromhex(KERNEL_B[7:]))
    corim[at + 5] ^= 0x01
    with pytest.raises(CorimSignatureInvalid):
        import_corim(bytes(corim), [P256.public_key()])


def test_attack_signature_byte_changed_is_refused() -> None:
    corim = bytearray(export_corim(GOLDEN, ED25519))
    corim[-1] ^= 0x80
    with pytest.raises(CorimSignatureInvalid):
        import_corim(bytes(corim), [ED25519.public_key()])


def test_attack_ecdsa_signature_in_der_form_is_refused() -> None:
    corim = _sign1(P256, _header(-7), _signed_payload(), der=True)
    with pytest.raises(CorimSignatureInvalid):
        import_corim(corim, [P256.public_key()])


@pytest.mark.parametrize(("signer", "swapped"), [("p256", -35), ("p256", -8), ("p384", -7)])
def test_attack_protected_alg_swapped_is_refused(signer: str, swapped: int) -> None:
    key = KEYS[signer]
    protected, unprotected, payload, signature = _parts(export_corim(GOLDEN, key))
    header = cbor2.loads(protected)
    header[1] = swapped
    forged = cbor2.dumps(CBORTag(18, [_cbor(header), unprotected, payload, signature]))
    with pytest.raises(CorimSignatureInvalid):
        import_corim(forged, [k.public_key() for k in KEYS.values()])


@pytest.mark.parametrize("claimed", [-35, -8])
def test_attack_alg_for_another_key_type_is_refused_even_when_signed(claimed: int) -> None:
    """The header names ES384/EdDSA, the P-256 key signs it: no key of that type is trusted."""
    corim = _sign1(P256, _header(claimed), _signed_payload())
    with pytest.raises(CorimSignatureInvalid, match="no trusted key"):
        import_corim(corim, [P256.public_key()])


@pytest.mark.parametrize("alg", [-257, -36, "ES256", None])
def test_attack_unsupported_alg_is_refused(alg: object) -> None:
    corim = _sign1(P256, _header(alg), _signed_payload())
    with pytest.raises((CorimInvalid, CorimSignatureInvalid)):
        import_corim(corim, [P256.public_key()])


def test_attack_alg_only_in_the_unprotected_header_is_refused() -> None:
    corim = _sign1(P256, _header(None), _signed_payload(), {1: -7})
    with pytest.raises(CorimInvalid):
        import_corim(corim, [P256.public_key()])


@pytest.mark.parametrize(
    "label", [1, 2, 3, 4, 8], ids=["alg", "crit", "content-type", "kid", "corim-meta"]
)
def test_attack_corim_header_parameter_in_the_unprotected_header_is_refused(label: int) -> None:
    value = {1: -8, 2: [99], 3: "text/plain", 4: b"other", 8: _meta()}[label]
    corim = _sign1(P256, _header(-7), _signed_payload(), {label: value})
    with pytest.raises(CorimInvalid, match="unprotected"):
        import_corim(corim, [P256.public_key()])


def test_attack_critical_or_unknown_protected_label_is_refused() -> None:
    corim = _sign1(P256, _header(-7, l2=[99], l99=1), _signed_payload())
    with pytest.raises(CorimInvalid, match="unsupported labels"):
        import_corim(corim, [P256.public_key()])


def test_attack_duplicate_protected_label_is_refused() -> None:
    """{1: -7, 1: -8, ...}: two parsers could read two algs (RFC 9052, 3)."""
    header = _header(-7)
    duplicated = bytes([header[0] + 1]) + b"\x01\x26\x01\x27" + header[3:]
    corim = _sign1(P256, duplicated, _signed_payload())
    with pytest.raises(CorimInvalid, match="duplicate"):
        import_corim(corim, [P256.public_key()])


def test_attack_wrong_content_type_is_refused() -> None:
    corim = _sign1(P256, _header(-7, l3="application/cbor"), _signed_payload())
    with pytest.raises(CorimInvalid, match="content-type"):
        import_corim(corim, [P256.public_key()])


def test_attack_detached_payload_is_refused() -> None:
    with pytest.raises(CorimInvalid, match="detached"):
        import_corim(_sign1(P256, _header(-7), None), [P256.public_key()])


@pytest.mark.parametrize("tag", [None, 17, 98, 501])
def test_attack_not_tag_18_is_refused(tag: int | None) -> None:
    items = list(_parts(export_corim(GOLDEN, P256)))
    corim = cbor2.dumps(items if tag is None else CBORTag(tag, items))
    with pytest.raises(CorimInvalid):
        import_corim(corim, [P256.public_key()])


def test_attack_kid_of_another_trusted_key_is_refused() -> None:
    corim = export_corim(GOLDEN, P256, key_id=key_id_of(UNTRUSTED.public_key()))
    with pytest.raises(CorimSignatureInvalid):
        import_corim(corim, [P256.public_key(), UNTRUSTED.public_key()])


def test_kid_selects_the_key_and_an_unknown_kid_tries_every_key() -> None:
    trusted = [UNTRUSTED.public_key(), P256.public_key()]
    by_kid = export_corim(GOLDEN, P256, key_id=key_id_of(P256.public_key()))
    assert import_corim(by_kid, trusted).to_document() == GOLDEN.to_document()
    unknown = export_corim(GOLDEN, P256, key_id=b"key-2026")
    assert import_corim(unknown, trusted).to_document() == GOLDEN.to_document()


# Attacks on the signature validity.

_START = datetime(2026, 3, 1, tzinfo=UTC)
_END = _START + timedelta(days=30)


@pytest.mark.parametrize(
    "now",
    [_START - timedelta(seconds=1), _END + timedelta(seconds=1), None],
    ids=["not-yet-valid", "expired", "no-clock"],
)
def test_attack_outside_the_signature_validity_is_refused(now: datetime | None) -> None:
    corim = export_corim(GOLDEN, P256, not_before=_START, not_after=_END)
    with pytest.raises(CorimOutsideValidity) as refused:
        import_corim(corim, [P256.public_key()], now=now)
    assert refused.value.check == "corim-validity"
    assert isinstance(refused.value, CorimSignatureInvalid)
    inside = import_corim(corim, [P256.public_key()], now=_START + timedelta(days=1))
    assert inside.to_document() == GOLDEN.to_document()


def test_validity_is_signed() -> None:
    """Dropping the validity from corim-meta changes the protected header: refused."""
    corim = export_corim(GOLDEN, P256, not_after=_END)
    protected, unprotected, payload, signature = _parts(corim)
    header = cbor2.loads(protected)
    header[8] = _meta()
    forged = cbor2.dumps(CBORTag(18, [_cbor(header), unprotected, payload, signature]))
    with pytest.raises(CorimSignatureInvalid):
        import_corim(forged, [P256.public_key()])


# Attacks on the decoder: refused before cbor2 builds anything from them.


def test_attack_colliding_bignum_map_keys_are_refused_before_decoding() -> None:
    """Keys equal modulo 2**61 - 1 share a Python hash: a dict of them builds in quadratic
    time (about 6 s for these 40,000 keys in cbor2)."""
    prime = (1 << 61) - 1
    count = 40_000
    hostile = bytearray(b"\xd2\x84\x40\xba" + count.to_bytes(4, "big"))
    for k in range(count):
        key = (5 + (k + (1 << 70)) * prime).to_bytes(17, "big")
        hostile += b"\xc2\x51" + key + b"\x00"
    hostile += b"\x40\x40"
    started = time.monotonic()
    with pytest.raises(CorimInvalid, match="not an integer or text"):
        import_corim(bytes(hostile), [P256.public_key()])
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "unprotected",
    [
        b"\xa1\x82\x01\x02\x00",  # an array as a map key
        b"\xa1\x05\xc5\x82\x1a\x3b\x9a\xca\x00\x01",  # bigfloat 1 * 2**1e9
        b"\xa1\x05\xd8\x23\x61\x61",  # regular expression
        b"\xa1\x05\xd8\x1c\x81\xd8\x1d\x00",  # shared reference: a self-containing list
        b"\xa1\x05\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # float
        b"\xbf\x05\x00\xff",  # indefinite-length map
    ],
    ids=["array-key", "bigfloat", "regex", "shared-ref", "float", "indefinite"],
)
def test_attack_cbor_the_format_does_not_use_is_refused(unprotected: bytes) -> None:
    protected, _, payload, signature = _parts(export_corim(GOLDEN, P256))
    corim = (
        b"\xd2\x84"
        + cbor2.dumps(protected)
        + unprotected
        + cbor2.dumps(payload)
        + cbor2.dumps(signature)
    )
    with pytest.raises(CorimInvalid):
        import_corim(corim, [P256.public_key()])


def test_attack_deep_nesting_is_refused() -> None:
    corim = b"\xd2\x84\x40" + b"\xa1\x05" * 40 + b"\x00" + b"\x40\x40"
    with pytest.raises(CorimInvalid, match="deeper"):
        import_corim(corim, [P256.public_key()])


def test_attack_trailing_bytes_are_refused() -> None:
    with pytest.raises(CorimInvalid, match="after the CBOR item"):
        import_corim(export_corim(GOLDEN, P256) + b"\x00", [P256.public_key()])


def test_attack_oversized_input_is_refused_before_decoding() -> None:
    with pytest.raises(CorimInvalid, match="limit"):
        import_corim(b"\xd2" + b"\x00" * MAX_CORIM_BYTES, [P256.public_key()])


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\xd2", b"\xd2\x84", b"garbage \xff\xfe", b"\xd2\x80", "text"]
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(CorimInvalid):
        import_corim(data, [P256.public_key()])


def test_every_truncation_is_refused() -> None:
    corim = export_corim(GOLDEN, P256)
    for length in range(len(corim)):
        with pytest.raises(CorimInvalid):
            import_corim(corim[:length], [P256.public_key()])


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_corim_refusals(data: bytes) -> None:
    with pytest.raises((CorimInvalid, CorimSignatureInvalid)):
        import_corim(data, [P256.public_key()])


_VALID = export_corim(GOLDEN, P256)


@settings(max_examples=300)
@given(st.data())
def test_mutated_corim_is_refused_or_reads_the_same(data: st.DataObject) -> None:
    corim = bytearray(_VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(corim) - 1))
        corim[at] = data.draw(st.integers(0, 255))
    try:
        imported = import_corim(bytes(corim), [P256.public_key()])
    except (CorimInvalid, CorimSignatureInvalid):
        return
    assert imported.to_document() == GOLDEN.to_document()


# A valid signature over something that is not a Lightgate CoRIM.

_cbor_items = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-3, 5) | st.text(max_size=3), inner, max_size=4)
        | st.builds(CBORTag, st.sampled_from([1, 32, 501, 506, 560, 2, 24]), inner)
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_cbor_items)
def test_signed_arbitrary_payload_raises_only_corim_invalid(payload: object) -> None:
    corim = _sign1(P256, _header(-7), cbor2.dumps(payload))
    with pytest.raises(CorimInvalid):
        import_corim(corim, [P256.public_key()])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.integers(-3, 9) | st.text(max_size=3), _cbor_items, max_size=5),
    st.lists(_cbor_items, max_size=4),
)
def test_random_cose_envelopes_raise_only_corim_refusals(
    header: dict[object, object], items: list[object]
) -> None:
    corim = cbor2.dumps(CBORTag(18, [cbor2.dumps(header), *items]))
    with pytest.raises((CorimInvalid, CorimSignatureInvalid)):
        import_corim(corim, [P256.public_key()])


def _payload(comid: object = None, **corim_map: object) -> bytes:
    """An unsigned CoRIM around `comid` (a valid one by default), map entries replaced."""
    if comid is None:
        comid = _comid()
    entries: dict[object, object] = {
        0: "id",
        1: [CBORTag(506, comid if isinstance(comid, bytes) else _cbor(comid))],
        3: CBORTag(32, PROFILE),
    }
    for key, value in corim_map.items():
        entries[int(key.removeprefix("k"))] = value
    return _cbor(CBORTag(501, {k: v for k, v in entries.items() if v is not None}))


def _comid(mval: object = None, *, triple: object = None, **extra: object) -> dict[object, object]:
    if mval is None:
        mval = {2: [[1, bytes(32)]]}
    if triple is None:
        triple = [{0: {1: "lightgate", 2: "boot-chain.kernel"}}, [{1: mval}]]
    comid: dict[object, object] = {1: {0: "tag"}, 4: {0: [triple]}, -1: "n", -2: {}}
    for key, value in extra.items():
        comid[-int(key[1:]) if key.startswith("m") else int(key[1:])] = value
    return {k: v for k, v in comid.items() if v is not None}


def test_the_payload_builder_makes_a_valid_corim() -> None:
    golden = import_corim(_sign1(P256, _header(-7), _payload()), [P256.public_key()])
    assert golden.reference == {"boot-chain.kernel": ("sha256:" + "00" * 32,)}


_ENV = {0: {1: "lightgate", 2: "c"}}
NOT_A_CORIM: dict[str, bytes] = {
    "not-cbor": b"\xff\x00",
    "an-integer": _cbor(5),
    "untagged-corim-map": _cbor({0: "id", 1: [], 3: CBORTag(32, PROFILE)}),
    "tag-502": _cbor(CBORTag(502, {})),
    "other-profile": _payload(k3=CBORTag(32, "http://arm.com/psa/iot/1")),
    "no-profile": _payload(k3=None),
    "rim-validity": _payload(k4={1: CBORTag(1, 0)}),
    "no-tags": _payload(k1=[]),
    "two-comids": _payload(k1=[CBORTag(506, _cbor(_comid()))] * 2),
    "coswid-not-comid": _payload(k1=[CBORTag(505, _cbor(_comid()))]),
    "comid-not-cbor": _payload(b"\xff"),
    "comid-not-a-map": _payload([1, 2]),
    "comid-entities": _payload(_comid(k2=[{0: "x", 2: [0]}])),
    "comid-no-name": _payload(_comid(m1=None)),
    "comid-empty-name": _payload(_comid(m1="")),
    "provenance-not-text": _payload(_comid(m2={"created": 2026})),
    "no-triples": _payload(_comid(k4={0: []})),
    "endorsed-triples": _payload(_comid(k4={1: []})),
    "triple-not-a-pair": _payload(_comid(triple=[_ENV])),
    "two-measurements": _payload(_comid(triple=[_ENV, [{1: {-1: True}}, {1: {-1: False}}]])),
    "mkey": _payload(_comid(triple=[_ENV, [{0: "pcr0", 1: {-1: True}}]])),
    "instance-environment": _payload(_comid(triple=[{1: CBORTag(560, b"x")}, [{1: {-1: 1}}]])),
    "other-vendor": _payload(_comid(triple=[{0: {1: "acme", 2: "c"}}, [{1: {-1: True}}]])),
    "mval-two-values": _payload(_comid({-1: True, 4: CBORTag(560, b"x")})),
    "mval-svn": _payload(_comid({1: CBORTag(552, 1)})),
    "digest-short": _payload(_comid({2: [[1, bytes(31)]]})),
    "digest-sha3": _payload(_comid({2: [[9, bytes(28)]]})),
    "digest-alg-true": _payload(_comid({2: [[True, bytes(32)]]})),
    "two-digests": _payload(_comid({2: [[1, bytes(32)], [7, bytes(48)]]})),
    "raw-value-untagged": _payload(_comid({4: b"x"})),
    "raw-value-not-utf8": _payload(_comid({4: CBORTag(560, b"\xff")})),
    "bool-as-integer": _payload(_comid({-1: 1})),
    "list-with-integer": _payload(_comid({-2: ["a", 1]})),
    "float": _payload(_comid({-1: 1.5})),
}


@pytest.mark.parametrize("payload", NOT_A_CORIM.values(), ids=NOT_A_CORIM.keys())
def test_valid_signature_over_a_payload_that_is_not_a_lightgate_corim(payload: bytes) -> None:
    with pytest.raises(CorimInvalid):
        import_corim(_sign1(P256, _header(-7), payload), [P256.public_key()])


def test_signed_corim_meta_that_is_malformed_is_refused() -> None:
    for meta in (_cbor({}), _cbor({0: {0: 5}}), _cbor({0: {0: "x"}, 1: {0: CBORTag(1, 0)}})):
        corim = _sign1(P256, _header(-7, l8=meta), _signed_payload())
        with pytest.raises(CorimInvalid):
            import_corim(corim, [P256.public_key()], now=_START)


# Keys.


def _pem_private(key: SigningKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(key: SigningKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _certificate(key: SigningKey | rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "golden-values signer")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("name", KEYS)
def test_keys_load_from_pem_and_certificates(name: str) -> None:
    key = KEYS[name]
    signing = load_signing_key(_pem_private(key))
    corim = export_corim(GOLDEN, signing)
    for trusted in (load_trusted_key(_pem_public(key)), load_trusted_key(_certificate(key))):
        assert import_corim(corim, [trusted]).to_document() == GOLDEN.to_document()


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P521 = ec.generate_private_key(ec.SECP521R1())


@pytest.mark.parametrize(
    "pem",
    [
        _pem_private(RSA),
        _pem_private(P521),
        _pem_public(P256),
        _certificate(P256),
        P256.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"",
    ],
    ids=["rsa", "p521", "public-key", "certificate", "encrypted", "bad-pem", "empty"],
)
def test_unsupported_signing_keys_are_refused(pem: bytes) -> None:
    with pytest.raises(CorimInvalid):
        load_signing_key(pem)


@pytest.mark.parametrize(
    "pem",
    [
        _pem_public(RSA),
        _pem_public(P521),
        _certificate(RSA),
        _pem_private(P256),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"not a key",
    ],
    ids=["rsa", "p521", "rsa-certificate", "private-key", "bad-certificate", "garbage"],
)
def test_unsupported_trusted_keys_are_refused(pem: bytes) -> None:
    with pytest.raises(CorimInvalid):
        load_trusted_key(pem)


def test_export_refuses_what_it_cannot_sign_or_date() -> None:
    for unsupported in (P521, ed448.Ed448PrivateKey.generate()):
        with pytest.raises(CorimInvalid, match="unsupported key"):
            export_corim(GOLDEN, unsupported)  # type: ignore[arg-type]
    with pytest.raises(CorimInvalid, match="time zone"):
        export_corim(GOLDEN, P256, not_after=datetime(2027, 1, 1))
    with pytest.raises(CorimInvalid, match="not_after"):
        export_corim(GOLDEN, P256, not_before=_START)


def test_refusals_are_named_checks() -> None:
    assert issubclass(CorimInvalid, Refusal)
    assert issubclass(CorimSignatureInvalid, Refusal)
    assert (CorimInvalid.check, CorimSignatureInvalid.check) == ("corim-invalid", "corim-signature")


def test_untrusted_key_types_in_the_trust_list_are_skipped() -> None:
    trusted: list[object] = [RSA.public_key(), "not a key", P256.public_key()]
    corim = export_corim(GOLDEN, P256)
    assert import_corim(corim, trusted).to_document() == GOLDEN.to_document()  # type: ignore[arg-type]


def test_an_image_allow_list_round_trips_as_digests() -> None:
    images = allow_list_document(
        "prod-images",
        ["registry.example/web:1.4@sha256:" + "a1" * 32],
        ["sha256:" + "b0" * 32],
    )
    corim = export_corim(images, P256)
    imported = import_corim(corim, [P256.public_key()])
    assert imported.to_document() == images.to_document()
    # Each allowed image travels as a CoRIM digest measurement, not as text.
    assert ("images.repository.registry.example/web", {2: [[1, bytes.fromhex("a1" * 32)]]}) in (
        _triples(corim)
    )

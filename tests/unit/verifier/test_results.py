"""Signed EAR results: round trips in both forms, the claims' names and labels as the EAR
draft spells them, and one named test per way a token is forged, broken or stale."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from verifier.ar4si import tier_of
from verifier.jose import SigningKey, b64url, b64url_decode
from verifier.results import (
    PROFILE,
    TRUST_CLAIMS,
    AttestationResult,
    ResultExpired,
    ResultInvalid,
    ResultKeyUnknown,
    ResultNotYetValid,
    ResultRefused,
    ResultSignatureInvalid,
    ear_cbor,
    ear_claims,
    eat_nonce,
    evidence_digest,
    sign_result,
    sign_result_cose,
    verify_result,
    verify_result_cose,
)

ISSUED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = ISSUED + timedelta(seconds=10)
KEY = SigningKey.generate()
OTHER = SigningKey.generate()
KEYS = {KEY.kid: KEY.public_key}


def make_result(**changes: object) -> AttestationResult:
    result = AttestationResult(
        node_id="node-1",
        status="warning",
        trust_vector={
            "instance-identity": 2,
            "configuration": 2,
            "executables": 33,
            "file-system": 0,
            "hardware": 2,
            "runtime-opaque": 0,
            "storage-opaque": 2,
            "sourced-data": 2,
        },
        policy_id="sha256:5f1d",
        nonce=bytes(range(32)),
        issued_at=ISSUED,
        expires_at=ISSUED + timedelta(seconds=60),
        evidence_digest=evidence_digest(b"quote + event log"),
        reasons={"executables": ("boot-chain.kernel: sha256:aa.. not among golden values",)},
        verifier_id="lightgate-test",
        failed_checks=("golden-values",),
    )
    return replace(result, **changes)  # type: ignore[arg-type]  # test overrides


def resign(
    token: str, header: dict[str, object] | None = None, payload: bytes | None = None
) -> str:
    """A token with its header or payload changed and re-signed by KEY: only the change
    under test differs."""
    head, body, _ = token.split(".")
    new_head = b64url(json.dumps(header).encode()) if header is not None else head
    new_body = b64url(payload) if payload is not None else body
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from verifier.jose import _ECDSA

    der = KEY.private_key.sign(f"{new_head}.{new_body}".encode(), _ECDSA)
    r, s = decode_dss_signature(der)
    return f"{new_head}.{new_body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# --- round trips and shape ------------------------------------------------------------


def test_jwt_round_trip() -> None:
    result = make_result()
    assert verify_result(sign_result(result, KEY), KEYS, NOW) == result


def test_cose_round_trip() -> None:
    result = make_result()
    assert verify_result_cose(sign_result_cose(result, KEY), KEYS, NOW) == result


def test_round_trip_without_nonce_or_reasons() -> None:
    result = make_result(
        nonce=b"", reasons={}, failed_checks=(), status="affirming", trust_vector={"hardware": 2}
    )
    assert verify_result(sign_result(result, KEY), KEYS, NOW) == result
    assert verify_result_cose(sign_result_cose(result, KEY), KEYS, NOW) == result


def test_times_are_whole_seconds_and_never_extended() -> None:
    result = make_result(expires_at=ISSUED + timedelta(seconds=60, milliseconds=900))
    verified = verify_result(sign_result(result, KEY), KEYS, NOW)
    assert verified.expires_at == ISSUED + timedelta(seconds=60)


def test_json_claims_use_the_ear_names() -> None:
    claims = ear_claims(make_result())
    assert claims["eat_profile"] == PROFILE == "tag:github.com,2023:veraison/ear"
    assert claims["iat"] == int(ISSUED.timestamp())
    assert claims["exp"] == int(ISSUED.timestamp()) + 60
    verifier_id = claims["ear.verifier-id"]
    assert isinstance(verifier_id, dict) and verifier_id["developer"] == "lightgate-test"
    assert verifier_id["build"].startswith("lightgate ")
    assert base64.urlsafe_b64decode(str(claims["eat_nonce"]) + "==") == bytes(range(32))
    submods = claims["submods"]
    assert isinstance(submods, dict) and list(submods) == ["node-1"]
    appraisal = submods["node-1"]
    assert appraisal["ear.status"] == "warning"
    assert appraisal["ear.trustworthiness-vector"]["executables"] == 33
    assert set(appraisal["ear.trustworthiness-vector"]) == set(TRUST_CLAIMS)
    assert appraisal["ear.appraisal-policy-id"] == "sha256:5f1d"
    # Lightgate's extensions live under a private prefix (draft-fv-rats-ear, 4.1).
    private = {
        name
        for name in appraisal
        if not name.startswith(("ear.status", "ear.trust", "ear.appraisal"))
    }
    assert private == {
        "ear.lightgate.evidence-digest",
        "ear.lightgate.reasons",
        "ear.lightgate.failed-checks",
    }
    assert (
        b64url_decode(appraisal["ear.lightgate.evidence-digest"])
        == hashlib.sha256(b"quote + event log").digest()
    )


def test_jwt_header_is_es256_jwt_with_the_kid() -> None:
    header = json.loads(b64url_decode(sign_result(make_result(), KEY).split(".")[0]))
    assert header == {"alg": "ES256", "kid": KEY.kid, "typ": "JWT"}


def test_cbor_uses_the_ear_integer_labels() -> None:
    claims = cbor2.loads(ear_cbor(make_result()))
    assert claims[265] == PROFILE  # eat_profile
    assert claims[6] == int(ISSUED.timestamp())  # iat
    assert claims[4] == int(ISSUED.timestamp()) + 60  # exp
    assert claims[10] == bytes(range(32))  # eat_nonce
    assert claims[1004][0] == "lightgate-test"  # ear.verifier-id: developer
    appraisal = claims[266]["node-1"]  # submods
    assert appraisal[1000] == 32  # ear.status: warning as its tier value
    assert appraisal[1001] == {0: 2, 1: 2, 2: 33, 3: 0, 4: 2, 5: 0, 6: 2, 7: 2}
    assert appraisal[1003] == "sha256:5f1d"
    assert all(label < -65536 for label in appraisal if label not in (1000, 1001, 1003))


def test_cose_protected_header_carries_alg_and_kid() -> None:
    outer = cbor2.loads(sign_result_cose(make_result(), KEY))
    assert outer.tag == 18
    assert cbor2.loads(outer.value[0]) == {1: -7, 4: KEY.kid.encode()}


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (0, "none"),
        (1, "none"),
        (-1, "none"),
        (2, "affirming"),
        (31, "affirming"),
        (-2, "affirming"),
        (-32, "affirming"),
        (-96, "warning"),
        (-97, "contraindicated"),
        (32, "warning"),
        (95, "warning"),
        (-33, "warning"),
        (96, "contraindicated"),
        (127, "contraindicated"),
        (-128, "contraindicated"),
    ],
)
def test_tiers_follow_ar4si_bands(value: int, tier: str) -> None:
    assert tier_of(value) == tier


@pytest.mark.parametrize("size", [0, 1, 7, 65, 200])
def test_a_nonce_no_result_can_carry_is_left_out(size: int) -> None:
    # A refused quote's extraData can be any length; its result is still signed.
    assert eat_nonce(b"\x01" * size) == b""
    result = make_result(nonce=eat_nonce(b"\x01" * size))
    assert verify_result(sign_result(result, KEY), KEYS, NOW).nonce == b""


@pytest.mark.parametrize("size", [8, 32, 64])
def test_a_valid_nonce_is_echoed(size: int) -> None:
    assert eat_nonce(b"\x02" * size) == b"\x02" * size


# --- results that cannot be built -----------------------------------------------------


def test_status_more_trusting_than_the_vector_is_refused() -> None:
    with pytest.raises(ResultInvalid, match="claims more trust"):
        make_result(status="affirming")


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "trusted"},
        {"trust_vector": {"firmware": 2}},
        {"trust_vector": {"hardware": 200}},
        {"evidence_digest": b"short"},
        {"nonce": b"1234"},
        {"issued_at": datetime(2026, 3, 1, 12, 0, 0)},
        {"expires_at": ISSUED},
        {"node_id": ""},
    ],
)
def test_malformed_results_are_refused_when_built(changes: dict[str, object]) -> None:
    with pytest.raises(ResultInvalid):
        make_result(**changes)


# --- attacks and stale tokens: JWT ----------------------------------------------------


def test_tampered_payload_is_refused() -> None:
    token = sign_result(make_result(), KEY)
    head, body, sig = token.split(".")
    claims = json.loads(b64url_decode(body))
    claims["submods"]["node-1"]["ear.status"] = "affirming"
    claims["submods"]["node-1"]["ear.trustworthiness-vector"]["executables"] = 2
    forged = f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"
    with pytest.raises(ResultSignatureInvalid, match="does not verify"):
        verify_result(forged, KEYS, NOW)


def test_alg_none_is_refused() -> None:
    token = sign_result(make_result(), KEY)
    _, body, _ = token.split(".")
    head = b64url(json.dumps({"alg": "none", "kid": KEY.kid, "typ": "JWT"}).encode())
    with pytest.raises(ResultSignatureInvalid, match="'none' is not accepted"):
        verify_result(f"{head}.{body}.", KEYS, NOW)
    with pytest.raises(ResultSignatureInvalid):
        verify_result(f"{head}.{body}.AAAA", KEYS, NOW)


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    """The classic confusion: an HMAC whose secret is the verifier's public key."""
    token = sign_result(make_result(), KEY)
    _, body, _ = token.split(".")
    head = b64url(json.dumps({"alg": "HS256", "kid": KEY.kid, "typ": "JWT"}).encode())
    secret = KEY.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(ResultSignatureInvalid, match="HS256"):
        verify_result(f"{head}.{body}.{b64url(mac)}", KEYS, NOW)


def test_header_naming_another_kid_is_refused() -> None:
    token = sign_result(make_result(), KEY)
    _, body, sig = token.split(".")
    swapped = b64url(json.dumps({"alg": "ES256", "kid": OTHER.kid, "typ": "JWT"}).encode())
    both = {KEY.kid: KEY.public_key, OTHER.kid: OTHER.public_key}
    with pytest.raises(ResultSignatureInvalid, match="does not verify"):
        verify_result(f"{swapped}.{body}.{sig}", both, NOW)


def test_wrong_typ_is_refused() -> None:
    token = resign(
        sign_result(make_result(), KEY), header={"alg": "ES256", "kid": KEY.kid, "typ": "at+jwt"}
    )
    with pytest.raises(ResultSignatureInvalid, match="typ"):
        verify_result(token, KEYS, NOW)


def test_signed_by_a_key_not_in_the_jwks_is_refused() -> None:
    with pytest.raises(ResultKeyUnknown, match="not trusted"):
        verify_result(sign_result(make_result(), OTHER), KEYS, NOW)


def test_wrong_key_under_the_right_kid_is_refused() -> None:
    """A JWKS that maps our kid to another key (a verifier that trusts a swapped key
    set) still refuses: the signature is checked, not the name."""
    with pytest.raises(ResultSignatureInvalid, match="does not verify"):
        verify_result(sign_result(make_result(), KEY), {KEY.kid: OTHER.public_key}, NOW)


def test_expired_is_refused() -> None:
    token = sign_result(make_result(), KEY)
    with pytest.raises(ResultExpired, match="expired") as caught:
        verify_result(token, KEYS, ISSUED + timedelta(seconds=60))
    assert caught.value.node_id == "node-1"
    assert caught.value.check == "result-expired"


def test_not_yet_valid_is_refused() -> None:
    token = sign_result(make_result(), KEY)
    with pytest.raises(ResultNotYetValid):
        verify_result(token, KEYS, ISSUED - timedelta(seconds=31))
    # Within the allowed clock skew it counts.
    assert verify_result(token, KEYS, ISSUED - timedelta(seconds=29)).node_id == "node-1"


@pytest.mark.parametrize("cut", [1, 10, 40, -1, -20])
def test_truncated_token_is_refused(cut: int) -> None:
    token = sign_result(make_result(), KEY)
    with pytest.raises(ResultRefused):
        verify_result(token[:cut], KEYS, NOW)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "..", "not a token", "é.é.é"])
def test_garbage_is_refused_as_malformed(token: str) -> None:
    with pytest.raises(ResultInvalid):
        verify_result(token, KEYS, NOW)


def test_other_profile_is_refused_even_when_signed() -> None:
    claims = ear_claims(make_result())
    claims["eat_profile"] = "tag:ietf.org,2026:rats/ear#04"
    token = resign(sign_result(make_result(), KEY), payload=json.dumps(claims).encode())
    with pytest.raises(ResultInvalid, match="eat_profile"):
        verify_result(token, KEYS, NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(exp=float(c["exp"])),  # RFC 9711 4.3.1: no floating-point times
        lambda c: c.pop("exp"),  # a result that never expires is not a Lightgate result
        lambda c: c["submods"].update({"node-2": c["submods"]["node-1"]}),
        lambda c: c["submods"]["node-1"].update({"ear.status": "fine"}),
        lambda c: c["submods"]["node-1"].pop("ear.lightgate.evidence-digest"),
        lambda c: c["submods"]["node-1"]["ear.trustworthiness-vector"].update(hardware="2"),
    ],
)
def test_signed_but_malformed_claims_are_refused(mutate: object) -> None:
    claims = json.loads(json.dumps(ear_claims(make_result())))
    mutate(claims)  # type: ignore[operator]
    token = resign(sign_result(make_result(), KEY), payload=json.dumps(claims).encode())
    with pytest.raises(ResultInvalid):
        verify_result(token, KEYS, NOW)


def test_unknown_claims_are_ignored() -> None:
    """draft-fv-rats-ear, 4: a receiver MUST ignore any unknown claim."""
    claims = ear_claims(make_result())
    claims["ear.veraison.policy-claims"] = {"x": 1}
    token = resign(sign_result(make_result(), KEY), payload=json.dumps(claims).encode())
    assert verify_result(token, KEYS, NOW) == make_result()


# --- attacks and stale tokens: COSE ---------------------------------------------------


def _sign1(data: bytes) -> list[Any]:
    return list(cbor2.loads(data).value)


def test_cose_tampered_payload_is_refused() -> None:
    parts = _sign1(sign_result_cose(make_result(), KEY))
    claims = cbor2.loads(parts[2])
    claims[266]["node-1"][1000] = 2
    claims[266]["node-1"][1001][2] = 2
    parts[2] = cbor2.dumps(claims)
    with pytest.raises(ResultSignatureInvalid):
        verify_result_cose(cbor2.dumps(cbor2.CBORTag(18, parts)), KEYS, NOW)


def test_cose_other_alg_is_refused() -> None:
    parts = _sign1(sign_result_cose(make_result(), KEY))
    parts[0] = cbor2.dumps({1: 5, 4: KEY.kid.encode()})  # HMAC 256/256
    with pytest.raises(ResultSignatureInvalid, match="alg"):
        verify_result_cose(cbor2.dumps(cbor2.CBORTag(18, parts)), KEYS, NOW)


def test_cose_unprotected_kid_beside_the_protected_one_is_refused() -> None:
    parts = _sign1(sign_result_cose(make_result(), KEY))
    parts[1] = {4: OTHER.kid.encode()}
    with pytest.raises(ResultInvalid, match="both protected and unprotected"):
        verify_result_cose(cbor2.dumps(cbor2.CBORTag(18, parts)), KEYS, NOW)


def test_cose_key_not_trusted_is_refused() -> None:
    with pytest.raises(ResultKeyUnknown):
        verify_result_cose(sign_result_cose(make_result(), OTHER), KEYS, NOW)


def test_cose_expired_and_not_yet_valid_are_refused() -> None:
    signed = sign_result_cose(make_result(), KEY)
    with pytest.raises(ResultExpired):
        verify_result_cose(signed, KEYS, ISSUED + timedelta(hours=1))
    with pytest.raises(ResultNotYetValid):
        verify_result_cose(signed, KEYS, ISSUED - timedelta(hours=1))


@pytest.mark.parametrize("cut", [1, 5, 50, -1, -70])
def test_cose_truncated_is_refused(cut: int) -> None:
    signed = sign_result_cose(make_result(), KEY)
    with pytest.raises(ResultRefused):
        verify_result_cose(signed[:cut], KEYS, NOW)


def test_cose_untagged_or_jwt_bytes_are_refused() -> None:
    parts = _sign1(sign_result_cose(make_result(), KEY))
    with pytest.raises(ResultInvalid, match="tag"):
        verify_result_cose(cbor2.dumps(parts), KEYS, NOW)
    with pytest.raises(ResultInvalid):
        verify_result_cose(sign_result(make_result(), KEY).encode(), KEYS, NOW)

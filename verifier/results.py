"""Signed attestation results: EAR (EAT Attestation Results) as a JWT and as COSE_Sign1.

An `AttestationResult` is what appraisal concluded about one node: the AR4SI trust
vector, the overall status, the policy that judged, the nonce that made the evidence
fresh, when the result was issued and until when it vouches, and the SHA-256 of the
evidence it judged.  This module turns it into an EAR claims-set and back:

- JSON (`ear_claims`, signed by `sign_result` as a compact JWS with typ "JWT"), in the
  profile `tag:github.com,2023:veraison/ear` that Veraison's `ear` libraries implement
  (draft-fv-rats-ear / draft-ietf-rats-ear-00..02: claim names `ear.status`,
  `ear.trustworthiness-vector`, `ear.appraisal-policy-id`, `ear.verifier-id`);
- CBOR (`ear_cbor`, signed by `sign_result_cose` as a COSE_Sign1, RFC 9052 4.2) with
  the draft's integer labels and numeric trust tiers.

The node's appraisal is the one entry of `submods` (RFC 9711 4.2.18), labelled by its
node id.  Lightgate adds three private claims to it (draft-ietf-rats-ear, 4.1: private
names for JWT, labels below -65536 for CWT): the evidence digest, the reasons per
trust-vector claim and the names of the failed checks.

Verification checks the signature first and only then reads the claims; a result is
refused with a typed `ResultRefused` naming the check: malformed, signature, unknown
key, expired, not yet valid.  Pure: no I/O; keys and the time are handed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Final, Literal

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from lightgate.errors import Refusal
from verifier.ar4si import TRUST_CLAIMS, tier_of
from verifier.ar4si import StatusName as Status
from verifier.golden import cose
from verifier.golden.cbor_guard import CborInvalid, checked_loads
from verifier.jose import (
    ALG,
    MAX_TOKEN_BYTES,
    JwsInvalid,
    SigningKey,
    b64url,
    b64url_decode,
    sign_jws,
    verify_jws,
)

#: The EAT profile (RFC 9711, 6) of the claims-set (draft-fv-rats-ear, 3).
PROFILE: Final = "tag:github.com,2023:veraison/ear"
#: Trust tiers and their CBOR values (draft-fv-rats-ear, "Trust Tiers").
STATUSES: Final[dict[Status, int]] = {
    "none": 0,
    "affirming": 2,
    "warning": 32,
    "contraindicated": 96,
}
_STATUS_BY_NAME: Final[dict[object, Status]] = {name: name for name in STATUSES}
_STATUS_BY_VALUE: Final[dict[int, Status]] = {value: name for name, value in STATUSES.items()}
ResultFormat = Literal["jwt", "cose"]

#: A trust result is never honoured past its `exp`; this much clock skew is allowed on
#: `iat` only, so a result from a verifier whose clock runs a little ahead still counts.
DEFAULT_LEEWAY_SECONDS: Final = 30.0
DIGEST_BYTES: Final = 32
_NONCE_SIZES: Final = range(8, 65)  # RFC 9711 4.1: an eat_nonce is 8 to 64 bytes


def eat_nonce(nonce: bytes) -> bytes:
    """The nonce a result may carry: the evidence's own when it is a valid eat_nonce,
    else none (a refused quote's extraData can be any length; the result still says
    what was refused, it just cannot echo that value)."""
    return nonce if len(nonce) in _NONCE_SIZES else b""


# JSON claim names (draft-fv-rats-ear, "JSON Serialisation"; RFC 7519 4.1).
_J_PROFILE, _J_IAT, _J_EXP, _J_NONCE = "eat_profile", "iat", "exp", "eat_nonce"
_J_VERIFIER, _J_SUBMODS = "ear.verifier-id", "submods"
_J_STATUS, _J_VECTOR, _J_POLICY = (
    "ear.status",
    "ear.trustworthiness-vector",
    "ear.appraisal-policy-id",
)
# Lightgate's private claims, named like Veraison's `ear.veraison.*` (draft-fv-rats-ear,
# 4.5): collision-resistant because the `ear.lightgate.` prefix is ours.
_J_DIGEST = "ear.lightgate.evidence-digest"
_J_REASONS = "ear.lightgate.reasons"
_J_FAILED = "ear.lightgate.failed-checks"

# CBOR labels: RFC 8392 3.1 (iat 6, exp 4), RFC 9711 (eat_nonce 10, eat_profile 265,
# submods 266), draft-fv-rats-ear "CBOR Serialisation" (1000-1004); verifier-id keys
# developer 0, build 1 (draft-ietf-rats-ar4si).
_C_IAT, _C_EXP, _C_NONCE, _C_PROFILE, _C_SUBMODS = 6, 4, 10, 265, 266
_C_STATUS, _C_VECTOR, _C_POLICY, _C_VERIFIER = 1000, 1001, 1003, 1004
_C_DEVELOPER, _C_BUILD = 0, 1
# Private-use labels: "integer values less than -65536 for CWT" (draft-fv-rats-ear, 4.1).
_C_DIGEST, _C_REASONS, _C_FAILED = -65537, -65538, -65539

# COSE (RFC 9052): protected header labels alg 1, crit 2, kid 4; COSE_Sign1 is tag 18.
_COSE_ALG, _COSE_CRIT, _COSE_KID = 1, 2, 4
_COSE_SIGN1_TAG: Final = 18
_ES256: Final = cose.ALGS[-7]


def _build() -> str:
    try:
        return f"lightgate {version('lightgate')}"
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "lightgate (unpackaged)"


#: `build` of `ear.verifier-id` (draft-ietf-rats-ar4si, 2.2.2): this software's release.
BUILD: Final = _build()


class ResultRefused(Refusal):
    """A signed result that is not to be relied on; subclasses say why."""

    check = "result"


class ResultInvalid(ResultRefused):
    """Not an EAR this verifier issues: bad shape, profile, claim or encoding."""

    check = "result-malformed"


class ResultSignatureInvalid(ResultRefused):
    """Signed with another algorithm, or a signature that does not verify."""

    check = "result-signature"


class ResultKeyUnknown(ResultSignatureInvalid):
    """Signed (so it says) by a key that is not among the trusted ones."""

    check = "result-key-unknown"


class ResultExpired(ResultRefused):
    check = "result-expired"


class ResultNotYetValid(ResultRefused):
    """Issued in the future, beyond the allowed clock skew."""

    check = "result-not-yet-valid"


_TRUST_RANK: Final = {"affirming": 0, "warning": 1, "contraindicated": 2}


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """One node's appraisal, checked when built.

    `issued_at` and `expires_at` are carried as whole seconds (RFC 7519 NumericDate,
    RFC 9711 4.3.1 forbids fractions): a signed result's times are floored, so a
    verified result never lives longer than the one that was signed.  `verifier_id`
    is the `developer` of `ear.verifier-id`, the deployment that vouches."""

    node_id: str
    status: Status
    trust_vector: Mapping[str, int]
    policy_id: str
    nonce: bytes
    issued_at: datetime
    expires_at: datetime
    evidence_digest: bytes
    reasons: Mapping[str, tuple[str, ...]]
    verifier_id: str
    failed_checks: tuple[str, ...]
    verifier_build: str = BUILD

    def __post_init__(self) -> None:
        node = self.node_id or None
        if not self.node_id:
            raise ResultInvalid("a result names its node")
        if self.status not in STATUSES:
            raise ResultInvalid(f"status {self.status!r} is not an EAR trust tier", node_id=node)
        for claim, value in self.trust_vector.items():
            if claim not in TRUST_CLAIMS:
                raise ResultInvalid(f"{claim!r} is not an AR4SI trust claim", node_id=node)
            if type(value) is not int or not -128 <= value <= 127:
                raise ResultInvalid(f"{claim} = {value!r} is not in -128..127", node_id=node)
        self._check_status_within_vector()
        if len(self.evidence_digest) != DIGEST_BYTES:
            raise ResultInvalid(
                f"the evidence digest is SHA-256 ({DIGEST_BYTES} bytes), "
                f"not {len(self.evidence_digest)} bytes",
                node_id=node,
            )
        if self.nonce and len(self.nonce) not in _NONCE_SIZES:
            raise ResultInvalid(f"a nonce is 8 to 64 bytes, not {len(self.nonce)}", node_id=node)
        if self.issued_at.tzinfo is None or self.expires_at.tzinfo is None:
            raise ResultInvalid("issued_at and expires_at must carry a time zone", node_id=node)
        if self.expires_at <= self.issued_at:
            raise ResultInvalid(
                f"expires at {self.expires_at.isoformat()}, not after it was issued "
                f"({self.issued_at.isoformat()})",
                node_id=node,
            )

    def _check_status_within_vector(self) -> None:
        """draft-fv-rats-ear, 3.1: `ear.status` MUST be no more trusting than the worst
        claim of the vector.  ("none" claims nothing, so it never over-trusts.)"""
        if self.status == "none":
            return
        rank = _TRUST_RANK[self.status]
        for claim, value in self.trust_vector.items():
            tier = tier_of(value)
            if tier != "none" and _TRUST_RANK[tier] > rank:
                raise ResultInvalid(
                    f"status {self.status} claims more trust than {claim} = {value} ({tier})",
                    node_id=self.node_id,
                )


@dataclass(frozen=True, slots=True)
class ResultView:
    """A node's latest signed result as the Results API hands it out: the node's trust
    state now (which may be expired or revoked since), and the result in the format
    asked for (the other is None)."""

    node_id: str
    state: str
    status: Status
    jwt: str | None
    cose: bytes | None
    issued_at: datetime
    expires_at: datetime


def evidence_digest(evidence: bytes) -> bytes:
    """The digest a result carries of the evidence it judged."""
    return hashlib.sha256(evidence).digest()


# --- JSON / JWT -----------------------------------------------------------------------


def ear_claims(result: AttestationResult) -> dict[str, object]:
    """The EAR claims-set in its JSON form."""
    appraisal: dict[str, object] = {
        _J_STATUS: result.status,
        _J_VECTOR: dict(result.trust_vector),
        _J_POLICY: result.policy_id,
        _J_DIGEST: b64url(result.evidence_digest),
        _J_REASONS: {claim: list(lines) for claim, lines in result.reasons.items()},
        _J_FAILED: list(result.failed_checks),
    }
    claims: dict[str, object] = {
        _J_PROFILE: PROFILE,
        _J_IAT: int(result.issued_at.timestamp()),
        _J_EXP: int(result.expires_at.timestamp()),
        _J_VERIFIER: {"developer": result.verifier_id, "build": result.verifier_build},
        _J_SUBMODS: {result.node_id: appraisal},
    }
    if result.nonce:
        # RFC 9711 4.1 / draft-fv-rats-ear 3: in JSON a nonce is base64url text.
        claims[_J_NONCE] = b64url(result.nonce)
    return claims


def sign_result(result: AttestationResult, key: SigningKey) -> str:
    """The result as an EAR JWT (RFC 7519), signed ES256 with `key` (kid in the header)."""
    payload = json.dumps(ear_claims(result), separators=(",", ":"), ensure_ascii=False)
    return sign_jws(payload.encode(), key, "JWT")


def verify_result(
    token: str,
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    now: datetime,
    *,
    leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
) -> AttestationResult:
    """The result an EAR JWT carries, once its signature verifies under one of `keys`
    (kid → key) and it is valid at `now`.  Raises a ResultRefused subclass otherwise."""
    _classify_jws(token, keys)
    try:
        verified = verify_jws(token, keys, typ="JWT")
    except JwsInvalid as exc:
        raise ResultSignatureInvalid(exc.message) from None
    try:
        claims = json.loads(verified.payload)
    except (ValueError, UnicodeDecodeError):
        raise ResultInvalid("the JWT payload is not JSON") from None
    result = _result_from_json(claims)
    _check_times(result, now, leeway_seconds)
    return result


def _classify_jws(token: str, keys: Mapping[str, ec.EllipticCurvePublicKey]) -> None:
    """Say early, by name, what makes a token unusable before its signature is checked:
    its shape, its algorithm, its key.  `verify_jws` checks all of this again; this only
    gives the refusal its precise class."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise ResultInvalid(f"a result token is a string of at most {MAX_TOKEN_BYTES} bytes")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ResultInvalid(f"a JWT has 3 parts, this has {len(parts)}")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except (JwsInvalid, ValueError, UnicodeDecodeError):
        raise ResultInvalid("the JWT header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise ResultInvalid("the JWT header is not a JSON object")
    if header.get("alg") != ALG:
        # RFC 8725 3.1: the algorithm is ours to choose, never the token's ("none",
        # HS256 keyed with the public key, ...).
        raise ResultSignatureInvalid(f"alg {header.get('alg')!r} is not accepted; only {ALG}")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        known = ", ".join(sorted(keys)) or "none"
        raise ResultKeyUnknown(f"signed by key {kid!r}, which is not trusted (trusted: {known})")


def _result_from_json(claims: object) -> AttestationResult:
    if not isinstance(claims, dict):
        raise ResultInvalid("the EAR claims-set is not a JSON object")
    _expect(claims.get(_J_PROFILE) == PROFILE, f"eat_profile is not {PROFILE}")
    verifier = _mapping(claims.get(_J_VERIFIER), _J_VERIFIER)
    node_id, appraisal = _one_submod(claims.get(_J_SUBMODS))
    nonce_text = claims.get(_J_NONCE)
    nonce = b"" if nonce_text is None else _b64(nonce_text, _J_NONCE)
    return _build_result(
        node_id=node_id,
        status=_status(_STATUS_BY_NAME.get(appraisal.get(_J_STATUS)), appraisal.get(_J_STATUS)),
        vector=_mapping(appraisal.get(_J_VECTOR, {}), _J_VECTOR),
        policy_id=appraisal.get(_J_POLICY, ""),
        nonce=nonce,
        iat=claims.get(_J_IAT),
        exp=claims.get(_J_EXP),
        digest=_b64(appraisal.get(_J_DIGEST), _J_DIGEST),
        reasons=_mapping(appraisal.get(_J_REASONS, {}), _J_REASONS),
        developer=verifier.get("developer"),
        build=verifier.get("build"),
        failed=appraisal.get(_J_FAILED, []),
    )


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise ResultInvalid(f"{name} is not base64url text")
    try:
        return b64url_decode(value)
    except JwsInvalid:
        raise ResultInvalid(f"{name} is not base64url text") from None


# --- CBOR / COSE ----------------------------------------------------------------------


def _cbor_claims(result: AttestationResult) -> dict[int, object]:
    appraisal: dict[int, object] = {
        _C_STATUS: STATUSES[result.status],
        _C_VECTOR: {TRUST_CLAIMS.index(c): v for c, v in result.trust_vector.items()},
        _C_POLICY: result.policy_id,
        _C_DIGEST: result.evidence_digest,
        _C_REASONS: {claim: list(lines) for claim, lines in result.reasons.items()},
        _C_FAILED: list(result.failed_checks),
    }
    claims: dict[int, object] = {
        _C_PROFILE: PROFILE,
        _C_IAT: int(result.issued_at.timestamp()),
        _C_EXP: int(result.expires_at.timestamp()),
        _C_VERIFIER: {_C_DEVELOPER: result.verifier_id, _C_BUILD: result.verifier_build},
        _C_SUBMODS: {result.node_id: appraisal},
    }
    if result.nonce:
        claims[_C_NONCE] = result.nonce
    return claims


def ear_cbor(result: AttestationResult) -> bytes:
    """The EAR claims-set in its CBOR form (integer labels, numeric tiers)."""
    return cbor2.dumps(_cbor_claims(result))


def _protected_header(kid: str) -> bytes:
    # RFC 9052 3.1: kid is a bstr; ours is the UTF-8 of the key's RFC 7638 thumbprint,
    # the same name the JWKS gives it, so one key ring verifies both formats.
    return cbor2.dumps({_COSE_ALG: _ES256.cose, _COSE_KID: kid.encode("ascii")})


def _to_be_signed(protected: bytes, payload: bytes) -> bytes:
    # RFC 9052 4.4: Sig_structure for COSE_Sign1, with empty external_aad.
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign_result_cose(result: AttestationResult, key: SigningKey) -> bytes:
    """The result as a tagged COSE_Sign1 (RFC 9052 4.2) over `ear_cbor`, ES256, with the
    kid in the protected header."""
    protected = _protected_header(key.kid)
    payload = ear_cbor(result)
    signature = cose.sign(key.private_key, _ES256, _to_be_signed(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(_COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def verify_result_cose(
    data: bytes,
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    now: datetime,
    *,
    leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
) -> AttestationResult:
    """The result a COSE_Sign1 EAR carries, once its signature verifies under one of
    `keys` (kid → key) and it is valid at `now`.  Raises a ResultRefused subclass."""
    if len(data) > MAX_TOKEN_BYTES:
        raise ResultInvalid(f"a result is at most {MAX_TOKEN_BYTES} bytes")
    protected, unprotected, payload, signature = _sign1_parts(data)
    header = _guarded(protected, "protected header")
    if not isinstance(header, dict):
        raise ResultInvalid("the protected header is not a map")
    if header.get(_COSE_ALG) != _ES256.cose:
        raise ResultSignatureInvalid(
            f"COSE alg {header.get(_COSE_ALG)!r} is not accepted; only {_ES256.cose} (ES256)"
        )
    if _COSE_CRIT in header:
        raise ResultSignatureInvalid("critical header parameters are not understood")
    if set(unprotected) & set(header):
        # RFC 9052 3: a label MUST NOT occur in both buckets; an unprotected kid or alg
        # beside the protected one is an attempt to confuse.
        raise ResultInvalid("a header label occurs both protected and unprotected")
    kid_bytes = header.get(_COSE_KID)
    kid = kid_bytes.decode("ascii", "replace") if isinstance(kid_bytes, bytes) else None
    if kid is None or kid not in keys:
        known = ", ".join(sorted(keys)) or "none"
        raise ResultKeyUnknown(f"signed by key {kid!r}, which is not trusted (trusted: {known})")
    if not cose.verifies(keys[kid], _ES256, _to_be_signed(protected, payload), signature):
        raise ResultSignatureInvalid(f"the COSE signature does not verify under key {kid}")
    result = _result_from_cbor(_guarded(payload, "EAR claims"))
    _check_times(result, now, leeway_seconds)
    return result


def _guarded(encoded: bytes, what: str) -> object:
    try:
        return checked_loads(encoded, what=what, allowed_tags=frozenset())
    except CborInvalid as exc:
        raise ResultInvalid(exc.message) from None


def _sign1_parts(data: bytes) -> tuple[bytes, Mapping[object, object], bytes, bytes]:
    try:
        value = checked_loads(data, what="COSE_Sign1", allowed_tags=frozenset({_COSE_SIGN1_TAG}))
    except CborInvalid as exc:
        raise ResultInvalid(exc.message) from None
    if not isinstance(value, cbor2.CBORTag) or value.tag != _COSE_SIGN1_TAG:
        raise ResultInvalid("not a tagged COSE_Sign1 (CBOR tag 18)")
    parts = value.value
    # cbor2 decodes a tag's content immutably: the array as a tuple, maps as frozendicts.
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise ResultInvalid("a COSE_Sign1 is an array of 4 items")
    protected, unprotected, payload, signature = parts
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, Mapping)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise ResultInvalid("a COSE_Sign1 is [bstr, map, bstr, bstr] (detached payloads unused)")
    return protected, unprotected, payload, signature


def _result_from_cbor(claims: object) -> AttestationResult:
    if not isinstance(claims, dict):
        raise ResultInvalid("the EAR claims-set is not a CBOR map")
    _expect(claims.get(_C_PROFILE) == PROFILE, f"eat_profile is not {PROFILE}")
    verifier = _mapping(claims.get(_C_VERIFIER), "ear.verifier-id")
    node_id, appraisal = _one_submod(claims.get(_C_SUBMODS))
    status_value = appraisal.get(_C_STATUS)
    status = _status(
        _STATUS_BY_VALUE.get(status_value) if type(status_value) is int else None, status_value
    )
    named: dict[object, object] = {}
    for label, value in _mapping(appraisal.get(_C_VECTOR, {}), _J_VECTOR).items():
        if type(label) is not int or not 0 <= label < len(TRUST_CLAIMS):
            raise ResultInvalid(f"trust-vector label {label!r} is not an AR4SI claim (0..7)")
        named[TRUST_CLAIMS[label]] = value
    nonce = claims.get(_C_NONCE, b"")
    if not isinstance(nonce, bytes):
        raise ResultInvalid("eat_nonce is not a byte string")
    digest = appraisal.get(_C_DIGEST)
    if not isinstance(digest, bytes):
        raise ResultInvalid("the evidence digest is not a byte string")
    return _build_result(
        node_id=node_id,
        status=status,
        vector=named,
        policy_id=appraisal.get(_C_POLICY, ""),
        nonce=nonce,
        iat=claims.get(_C_IAT),
        exp=claims.get(_C_EXP),
        digest=digest,
        reasons=_mapping(appraisal.get(_C_REASONS, {}), "ear.lightgate.reasons"),
        developer=verifier.get(_C_DEVELOPER),
        build=verifier.get(_C_BUILD),
        failed=appraisal.get(_C_FAILED, []),
    )


# --- shared by both forms -------------------------------------------------------------


def _status(status: Status | None, raw: object) -> Status:
    if status is None:
        raise ResultInvalid(f"ear.status {raw!r} is not a trust tier")
    return status


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ResultInvalid(message)


def _mapping(value: object, name: str) -> Mapping[object, object]:
    if not isinstance(value, Mapping):
        raise ResultInvalid(f"{name} is not a map")
    return value


def _one_submod(submods: object) -> tuple[str, Mapping[object, object]]:
    """Lightgate results appraise one node: `submods` holds exactly its appraisal."""
    if not isinstance(submods, Mapping) or len(submods) != 1:
        raise ResultInvalid("submods must hold exactly one appraisal (the node's)")
    ((node_id, appraisal),) = submods.items()
    if not isinstance(node_id, str):
        raise ResultInvalid("the submod label (node id) is not text")
    return node_id, _mapping(appraisal, f"the appraisal of {node_id}")


def _strings(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ResultInvalid(f"{name} is not a list of text")
    return tuple(value)


def _build_result(
    *,
    node_id: str,
    status: Status,
    vector: Mapping[object, object],
    policy_id: object,
    nonce: bytes,
    iat: object,
    exp: object,
    digest: bytes,
    reasons: Mapping[object, object],
    developer: object,
    build: object,
    failed: object,
) -> AttestationResult:
    # RFC 9711 4.3.1 and draft-fv-rats-ear 3: iat and exp are integers, never floats.
    if type(iat) is not int or type(exp) is not int:
        raise ResultInvalid("iat and exp must be integer NumericDates", node_id=node_id)
    if not isinstance(policy_id, str):
        raise ResultInvalid("ear.appraisal-policy-id is not text", node_id=node_id)
    if not isinstance(developer, str) or not isinstance(build, str):
        raise ResultInvalid("ear.verifier-id needs developer and build text", node_id=node_id)
    trust_vector: dict[str, int] = {}
    for claim, value in vector.items():
        if not isinstance(claim, str) or type(value) is not int:
            raise ResultInvalid(f"trust vector entry {claim!r}: {value!r}", node_id=node_id)
        trust_vector[claim] = value
    reason_lines: dict[str, tuple[str, ...]] = {}
    for claim, lines in reasons.items():
        if not isinstance(claim, str):
            raise ResultInvalid("reasons are keyed by claim name", node_id=node_id)
        reason_lines[claim] = _strings(lines, f"reasons of {claim}")
    try:
        issued_at = datetime.fromtimestamp(iat, UTC)
        expires_at = datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise ResultInvalid("iat or exp is out of range", node_id=node_id) from None
    return AttestationResult(
        node_id=node_id,
        status=status,
        trust_vector=trust_vector,
        policy_id=policy_id,
        nonce=nonce,
        issued_at=issued_at,
        expires_at=expires_at,
        evidence_digest=digest,
        reasons=reason_lines,
        verifier_id=developer,
        failed_checks=_strings(failed, "ear.lightgate.failed-checks"),
        verifier_build=build,
    )


def _check_times(result: AttestationResult, now: datetime, leeway_seconds: float) -> None:
    """RFC 7519 4.1.4: not accepted at or after `exp` (no leeway: trust fails closed);
    4.1.6: an `iat` in the future beyond the allowed skew is refused too."""
    if now.tzinfo is None:
        raise ValueError("`now` must carry a time zone")
    if now >= result.expires_at:
        raise ResultExpired(
            f"expired at {result.expires_at.isoformat()} (checked at {now.isoformat()})",
            node_id=result.node_id,
        )
    if (result.issued_at - now).total_seconds() > leeway_seconds:
        raise ResultNotYetValid(
            f"issued at {result.issued_at.isoformat()}, later than {now.isoformat()} "
            f"plus {leeway_seconds:g}s of allowed clock skew",
            node_id=result.node_id,
        )

"""`attest result`: check a signed attestation result (EAR) offline, or look inside one.

`verify` is a verdict: exit 0 only when the signature verifies under the JWKS and the
result has not expired; otherwise one `error:` line naming the check, exit 1.  `show`
decodes without verifying and says so on every line of output it prints.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lightgate.cli_common import CliError, JsonOption, err, fail, out, read_file
from lightgate.errors import Refusal

if TYPE_CHECKING:  # loaded lazily so `attest --help` stays fast
    from cryptography.hazmat.primitives.asymmetric import ec

    from verifier.results import AttestationResult

result_app = typer.Typer(no_args_is_help=True, help="Signed attestation results (EAR).")

JWKS_FETCH_TIMEOUT_SECONDS = 10.0
MAX_JWKS_BYTES = 1 << 20
COSE_SIGN1_FIRST_BYTE = 0xD2  # CBOR tag 18 (COSE_Sign1)
# RFC 7515 7.1: three base64url parts; anything else on the command line is a path.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

TokenArgument = Annotated[
    str, typer.Argument(help="The result: a JWT, a file holding a JWT or COSE_Sign1, or - (stdin).")
]


@result_app.command("verify")
def verify(
    token: TokenArgument,
    jwks: Annotated[str, typer.Option("--jwks", help="JWKS file, or its http(s) URL.")],
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA certificate (PEM) for an https JWKS URL.")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Check validity at this RFC 3339 time, not now.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a result's signature against the verifier's keys and that it has not
    expired; print what it says."""
    from verifier.results import verify_result, verify_result_cose

    try:
        now = _moment(at)
        keys = _keys(jwks, ca)
        signed = _read_token(token)
        if signed[:1] == bytes([COSE_SIGN1_FIRST_BYTE]):
            result = verify_result_cose(signed, keys, now)
        else:
            result = verify_result(_text(signed), keys, now)
    except (CliError, Refusal) as exc:
        err.print(f"error: {_one_line(exc)}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps({"verified": True, **_document(result)}))
        return
    _print(result, "verified")


@result_app.command("show")
def show(token: TokenArgument, as_json: JsonOption = False) -> None:
    """Decode a result WITHOUT verifying it: anyone can write these claims."""
    signed = _read_token(token)
    if signed[:1] == bytes([COSE_SIGN1_FIRST_BYTE]):
        header, claims = _decode_cose(signed)
    else:
        header, claims = _decode_jwt(_text(signed))
    if as_json:
        document = {"verified": False, "header": header, "claims": claims}
        out.print_json(json.dumps(document, default=_jsonable))
        return
    out.print("UNVERIFIED: decoded without checking the signature", style="bold red")
    out.print_json(json.dumps({"header": header, "claims": claims}, default=_jsonable))


# --- inputs ---------------------------------------------------------------------------


def _read_token(token: str) -> bytes:
    from verifier.jose import MAX_TOKEN_BYTES

    if token == "-":  # noqa: S105 (stdin, not a password)
        data = sys.stdin.buffer.read(MAX_TOKEN_BYTES + 1)
    elif _COMPACT_JWS.fullmatch(token.strip()):
        data = token.encode()
    else:
        data = read_file(Path(token), MAX_TOKEN_BYTES)
    if len(data) > MAX_TOKEN_BYTES:
        fail(f"the result is larger than {MAX_TOKEN_BYTES} bytes")
    if data[:1] == bytes([COSE_SIGN1_FIRST_BYTE]):
        return data
    return data.strip()


def _text(signed: bytes) -> str:
    try:
        return signed.decode("ascii")
    except UnicodeDecodeError:
        fail("the result is neither a JWT (ASCII) nor a COSE_Sign1")


def _moment(at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        fail(f"--at {at!r} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _keys(source: str, ca: Path | None) -> dict[str, ec.EllipticCurvePublicKey]:
    from verifier.jose import JwsInvalid, keys_of_jwks

    if source.startswith(("https://", "http://")):
        raw = _fetch(source, ca)
    else:
        raw = read_file(Path(source), MAX_JWKS_BYTES)
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        fail(f"the JWKS at {source} is not JSON")
    try:
        return keys_of_jwks(document)
    except JwsInvalid as exc:
        fail(f"the JWKS at {source} is unusable: {exc.message}")


def _fetch(url: str, ca: Path | None) -> bytes:
    if ca is not None and not url.startswith("https://"):
        fail("--ca applies to an https:// JWKS URL")
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    try:
        with urllib.request.urlopen(  # noqa: S310 (the scheme is checked above: http(s) only)
            url, timeout=JWKS_FETCH_TIMEOUT_SECONDS, context=context
        ) as response:
            data: bytes = response.read(MAX_JWKS_BYTES + 1)
    except urllib.error.HTTPError as exc:
        fail(f"cannot fetch the JWKS from {url}: HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        fail(f"cannot fetch the JWKS from {url}: {reason}")
    if len(data) > MAX_JWKS_BYTES:
        fail(f"the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes")
    return data


# --- outputs --------------------------------------------------------------------------


def _document(result: AttestationResult) -> dict[str, object]:
    return {
        "node_id": result.node_id,
        "status": result.status,
        "trust_vector": dict(result.trust_vector),
        "policy_id": result.policy_id,
        "issued_at": result.issued_at.isoformat(),
        "expires_at": result.expires_at.isoformat(),
        "nonce": result.nonce.hex(),
        "evidence_digest": result.evidence_digest.hex(),
        "failed_checks": list(result.failed_checks),
        "reasons": {claim: list(lines) for claim, lines in result.reasons.items()},
        "verifier": {"developer": result.verifier_id, "build": result.verifier_build},
    }


def _print(result: AttestationResult, label: str) -> None:
    from verifier.ar4si import TRUST_CLAIMS, tier_of

    out.print(f"{label}: node {result.node_id} is {result.status}", highlight=False)
    out.print(f"policy: {result.policy_id or '(none)'}", highlight=False)
    out.print(
        f"issued {result.issued_at.isoformat()}, expires {result.expires_at.isoformat()}",
        highlight=False,
    )
    table = Table("claim", "value", "tier", "reasons")
    for claim in TRUST_CLAIMS:
        if claim in result.trust_vector:
            value = result.trust_vector[claim]
            reasons = "\n".join(result.reasons.get(claim, ()))
            table.add_row(claim, str(value), tier_of(value), reasons)
    out.print(table)
    if result.failed_checks:
        out.print(f"failed checks: {', '.join(result.failed_checks)}", highlight=False)
    out.print(f"evidence sha256: {result.evidence_digest.hex()}", highlight=False)


def _decode_jwt(token: str) -> tuple[object, object]:
    from verifier.jose import JwsInvalid, b64url_decode

    parts = token.split(".")
    if len(parts) != 3:
        fail(f"a JWT has 3 parts, this has {len(parts)}")
    try:
        return json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
    except (JwsInvalid, ValueError, UnicodeDecodeError):
        fail("the JWT header or payload is not base64url JSON")


def _decode_cose(data: bytes) -> tuple[object, object]:
    from verifier.golden.cbor_guard import CborInvalid, checked_loads

    try:
        outer = checked_loads(data, what="COSE_Sign1", allowed_tags=frozenset({18}))
        items = getattr(outer, "value", None)
        if not isinstance(items, list | tuple) or len(items) != 4:
            fail("not a COSE_Sign1 (an array of 4 items under CBOR tag 18)")
        protected, _unprotected, payload, _signature = items
        header = checked_loads(protected, what="protected header", allowed_tags=frozenset())
        claims = checked_loads(payload, what="EAR claims", allowed_tags=frozenset())
    except (CborInvalid, TypeError) as exc:
        fail(f"cannot decode the COSE_Sign1: {getattr(exc, 'message', exc)}")
    return header, claims


def _jsonable(value: object) -> object:
    """CBOR values JSON has no word for (byte strings), for printing."""
    return value.hex() if isinstance(value, bytes) else str(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "reason", None) or exc).split())

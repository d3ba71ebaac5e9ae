"""`attest result verify | show` as a user runs them: exit 0 only for a verified, unexpired
result; one `error:` line naming the check otherwise."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lightgate.cli_result import result_app
from verifier.api.https import HttpsServer, Router, add_key_routes
from verifier.jose import SigningKey, b64url, b64url_decode, jwks_document
from verifier.results import AttestationResult, evidence_digest, sign_result, sign_result_cose

KEY = SigningKey.generate()
OTHER = SigningKey.generate()
# The CLI judges expiry by the real clock: results here last a day past collection, so
# a long test run never sees them expire (the expiry test names its own instant).
NOW = datetime.now(UTC).replace(microsecond=0)
LASTS = timedelta(days=1)
runner = CliRunner()


def result(expires_in: timedelta = LASTS) -> AttestationResult:
    return AttestationResult(
        node_id="node-7",
        status="contraindicated",
        trust_vector={"hardware": 2, "configuration": 96, "executables": 2},
        policy_id="policies@sha256:9a1c",
        nonce=b"\x02" * 32,
        issued_at=NOW - timedelta(seconds=5),
        expires_at=NOW + expires_in,
        evidence_digest=evidence_digest(b"evidence"),
        reasons={"configuration": ("secure-boot.enabled: false",)},
        verifier_id="lightgate",
        failed_checks=("secure-boot",),
    )


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document([KEY.public_key])))
    return path


@pytest.fixture
def jwks_url() -> Iterator[str]:
    router = Router()
    add_key_routes(router, lambda: jwks_document([KEY.public_key]))
    server = HttpsServer("127.0.0.1:0", router)
    server.start()
    yield f"{server.url}/.well-known/jwks.json"
    server.stop()


def test_verify_ok(jwks_file: Path) -> None:
    outcome = runner.invoke(
        result_app, ["verify", sign_result(result(), KEY), "--jwks", str(jwks_file)]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "verified: node node-7 is contraindicated" in outcome.stdout
    assert "policies@sha256:9a1c" in outcome.stdout
    assert "secure-boot" in outcome.stdout


def test_verify_json(jwks_file: Path) -> None:
    outcome = runner.invoke(
        result_app, ["verify", sign_result(result(), KEY), "--jwks", str(jwks_file), "--json"]
    )
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    assert document["verified"] is True
    assert document["node_id"] == "node-7"
    assert document["trust_vector"] == {"hardware": 2, "configuration": 96, "executables": 2}
    assert document["expires_at"] == (NOW + LASTS).isoformat()


def test_verify_from_a_file_and_from_stdin(jwks_file: Path, tmp_path: Path) -> None:
    token = sign_result(result(), KEY)
    path = tmp_path / "result.jwt"
    path.write_text(token + "\n")
    assert runner.invoke(result_app, ["verify", str(path), "--jwks", str(jwks_file)]).exit_code == 0
    outcome = runner.invoke(result_app, ["verify", "-", "--jwks", str(jwks_file)], input=token)
    assert outcome.exit_code == 0, outcome.output


def test_verify_cose_file(jwks_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "result.cose"
    path.write_bytes(sign_result_cose(result(), KEY))
    outcome = runner.invoke(result_app, ["verify", str(path), "--jwks", str(jwks_file)])
    assert outcome.exit_code == 0, outcome.output
    assert "node node-7" in outcome.stdout


def test_verify_tampered_token_fails(jwks_file: Path) -> None:
    head, body, sig = sign_result(result(), KEY).split(".")
    claims = json.loads(b64url_decode(body))
    claims["submods"]["node-7"]["ear.status"] = "affirming"
    forged = f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"
    outcome = runner.invoke(result_app, ["verify", forged, "--jwks", str(jwks_file)])
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("error: result-signature:")
    assert "Traceback" not in outcome.output


def test_verify_with_a_key_not_in_the_jwks_fails(jwks_file: Path) -> None:
    outcome = runner.invoke(
        result_app, ["verify", sign_result(result(), OTHER), "--jwks", str(jwks_file)]
    )
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("error: result-key-unknown:")


def test_verify_expired_fails(jwks_file: Path) -> None:
    token = sign_result(result(), KEY)
    later = (NOW + LASTS + timedelta(hours=1)).isoformat()
    outcome = runner.invoke(result_app, ["verify", token, "--jwks", str(jwks_file), "--at", later])
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("error: result-expired:")
    assert "node-7" in outcome.stderr


def test_verify_with_jwks_by_url(jwks_url: str) -> None:
    outcome = runner.invoke(result_app, ["verify", sign_result(result(), KEY), "--jwks", jwks_url])
    assert outcome.exit_code == 0, outcome.output
    assert "verified: node node-7" in outcome.stdout


def test_verify_with_an_unreachable_jwks_url_fails() -> None:
    outcome = runner.invoke(
        result_app,
        ["verify", sign_result(result(), KEY), "--jwks", "http://127.0.0.1:9/jwks.json"],
    )
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("error: cannot fetch the JWKS")


def test_verify_with_a_missing_token_file_fails(jwks_file: Path, tmp_path: Path) -> None:
    outcome = runner.invoke(
        result_app, ["verify", str(tmp_path / "nope"), "--jwks", str(jwks_file)]
    )
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("error: cannot read")


def test_verify_with_a_bad_at_fails(jwks_file: Path) -> None:
    token = sign_result(result(), KEY)
    outcome = runner.invoke(result_app, ["verify", token, "--jwks", str(jwks_file), "--at", "soon"])
    assert outcome.exit_code == 1
    assert "RFC 3339" in outcome.stderr


def test_show_is_labelled_unverified() -> None:
    outcome = runner.invoke(result_app, ["show", sign_result(result(), OTHER)])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout.startswith("UNVERIFIED")
    assert "node-7" in outcome.stdout


def test_show_json_and_cose(tmp_path: Path) -> None:
    outcome = runner.invoke(result_app, ["show", sign_result(result(), KEY), "--json"])
    document = json.loads(outcome.stdout)
    assert document["verified"] is False
    assert document["header"]["kid"] == KEY.kid
    assert document["claims"]["submods"]["node-7"]["ear.status"] == "contraindicated"
    path = tmp_path / "result.cose"
    path.write_bytes(sign_result_cose(result(), KEY))
    outcome = runner.invoke(result_app, ["show", str(path), "--json"])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    assert document["header"]["1"] == -7  # alg ES256, JSON keys are text
    assert document["claims"]["266"]["node-7"]["1000"] == 96

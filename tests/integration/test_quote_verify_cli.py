"""`attest quote verify` on quotes made by tpm2-tools (an independent TSS) on swtpm."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SwtpmFactory = VerifierFactory = AgentFactory = VerifierHandle = Any

if shutil.which("tpm2_quote") is None:
    pytest.skip("tpm2-tools is not installed (run `make setup`)", allow_module_level=True)

NONCE = "5eed" * 8
PCRS = "0,1,2,3,7,16"


def _tools(swtpm_tcti: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm_tcti, "TSS2_LOG": "all+NONE"}
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, check=True)
    # No resource manager in front of swtpm: free the transient objects each tool left
    # loaded (a TPM has only a few slots), as tpm2-abrmd would.
    subprocess.run(["tpm2_flushcontext", "-t"], cwd=cwd, env=env, capture_output=True, check=True)
    return done.stdout


def _pcr_json(pcrread_output: str, bank: str) -> dict[str, dict[str, str]]:
    values = dict(re.findall(r"^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)", pcrread_output, re.MULTILINE))
    return {bank: {index: digest.lower() for index, digest in values.items()}}


@pytest.fixture(params=[("rsa", "rsassa", "sha256"), ("ecc", "ecdsa", "sha256")])
def recorded(request: pytest.FixtureRequest, make_swtpm: SwtpmFactory, tmp_path: Path) -> Path:
    key_alg, scheme, digest = request.param
    tcti = make_swtpm().tcti
    _tools(tcti, "tpm2_pcrextend", f"7:sha256={'ab' * 32}", cwd=tmp_path)
    _tools(tcti, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub", cwd=tmp_path)
    _tools(
        tcti,
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        key_alg,
        "-g",
        digest,
        "-s",
        scheme,
        "-u",
        "ak.pub",
        cwd=tmp_path,
    )
    _tools(tcti, "tpm2_readpublic", "-c", "ak.ctx", "-f", "pem", "-o", "ak.pem", cwd=tmp_path)
    _tools(
        tcti,
        "tpm2_quote",
        "-c",
        "ak.ctx",
        "-l",
        f"sha256:{PCRS}",
        "-q",
        NONCE,
        "-g",
        digest,
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-o",
        "quote.pcrs",
        cwd=tmp_path,
    )
    pcrread = _tools(tcti, "tpm2_pcrread", f"sha256:{PCRS}", cwd=tmp_path)
    (tmp_path / "pcrs.json").write_text(json.dumps(_pcr_json(pcrread, "sha256")))
    # The independent verifier agrees these files are a good quote.
    _tools(
        tcti,
        "tpm2_checkquote",
        "-u",
        "ak.pem",
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-f",
        "quote.pcrs",
        "-g",
        digest,
        "-q",
        NONCE,
        cwd=tmp_path,
    )
    return tmp_path


def attest_quote_verify(
    workdir: Path,
    *extra: str,
    ak: str = "ak.pub",
    pcrs: str = "pcrs.json",
    nonce: str = NONCE,
    signature: str = "quote.sig",
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lightgate",
            "quote",
            "verify",
            "--ak",
            ak,
            "--message",
            "quote.msg",
            "--signature",
            signature,
            "--pcrs",
            pcrs,
            "--nonce",
            nonce,
            *extra,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )


def test_verifies_tpm2_tools_quote(recorded: Path) -> None:
    for ak in ("ak.pub", "ak.pem"):  # TPM2B_PUBLIC and PEM
        done = attest_quote_verify(recorded, "--json", ak=ak)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["verified"] is True and report["nonce"] == NONCE


def test_refuses_wrong_nonce(recorded: Path) -> None:
    done = attest_quote_verify(recorded, nonce="00" * 32)
    assert done.returncode == 1
    assert done.stderr.startswith("error: nonce-mismatch:")
    assert "Traceback" not in done.stderr


def test_refuses_tampered_pcr(recorded: Path) -> None:
    document = json.loads((recorded / "pcrs.json").read_text())
    document["sha256"]["7"] = "00" * 32
    (recorded / "tampered.json").write_text(json.dumps(document))
    done = attest_quote_verify(recorded, pcrs="tampered.json")
    assert done.returncode == 1
    assert done.stderr.startswith("error: pcr-digest:")


def test_refuses_missing_pcr(recorded: Path) -> None:
    document = json.loads((recorded / "pcrs.json").read_text())
    del document["sha256"]["16"]
    (recorded / "short.json").write_text(json.dumps(document))
    done = attest_quote_verify(recorded, pcrs="short.json")
    assert done.stderr.startswith("error: pcr-selection:")


def test_refuses_bad_signature(recorded: Path) -> None:
    signature = bytearray((recorded / "quote.sig").read_bytes())
    signature[-1] ^= 1
    (recorded / "bad.sig").write_bytes(bytes(signature))
    done = attest_quote_verify(recorded, signature="bad.sig")
    assert done.returncode == 1
    assert done.stderr.startswith("error: quote-signature:")


def test_malformed_input_is_one_error_line(recorded: Path) -> None:
    (recorded / "junk.pub").write_bytes(b"\x00\x23junk")
    done = attest_quote_verify(recorded, ak="junk.pub")
    assert done.returncode == 1
    assert done.stderr.startswith("error: malformed:")
    assert done.stderr.count("\n") == 1

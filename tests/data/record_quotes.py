"""Record TPM2_Quote evidence from a fresh swtpm into tests/data/quotes/*.json.

Run from the repository root with the project's venv:

    .venv/bin/python tests/data/record_quotes.py

The script provisions a throwaway swtpm (EK certificates from a local CA made inside a
temporary directory, PCR banks sha1, sha256 and sha384), starts it on a free TCP port,
extends a few PCRs so the quoted values are not all zero, and writes one JSON file per
case.  Every run makes new keys, so every run rewrites every file; the unit tests only
depend on the files being internally consistent (the AK signed the message, the PCR
values hash to pcrDigest).

Two kinds of AK are recorded:
- the AKs Lightgate's attestor makes (`attestor.tpm.Tpm.create_ak`), children of the
  RSA EK with schemes ECDSA-SHA256 (P-256) and RSASSA-SHA256 (RSA-2048);
- restricted signing primaries in the endorsement hierarchy, made here with tpm2-pytss,
  with the other schemes a TPM offers: RSAPSS-SHA256, RSASSA-SHA384, RSASSA-SHA1 and
  ECDSA-SHA384 (P-384).  A restricted signing key must name its scheme (the TPM
  refuses TPM_ALG_NULL: TPM_RC_SCHEME), so each scheme needs its own key;
- one unrestricted signing key with scheme NULL, quoting with an RSAPSS-SHA256
  inScheme: the only way to make a TPM choose the quote's scheme at quote time.  It is
  not an acceptable AK (ak_problems refuses it) and is recorded for that reason too.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_SCHEME_HASH,
    TPMT_HA,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMU_HA,
    TPMU_SIG_SCHEME,
)

from attestor.tpm import Tpm
from verifier.evidence.tpm_structures import HashAlg, PcrSelection

SCRIPT = "tests/data/record_quotes.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "quotes"

ALL_PCRS = list(range(24))
SHA256_ALL = PcrSelection.of({HashAlg.SHA256: ALL_PCRS})
THREE_BANKS = PcrSelection.of(
    {HashAlg.SHA1: [0, 1, 2, 3, 4, 7], HashAlg.SHA256: [0, 1, 2, 3, 4, 7, 14],
     HashAlg.SHA384: [0, 1, 4, 7, 23]}
)  # fmt: skip
EXTENDED_PCRS = (0, 1, 4, 7, 14, 16, 23)

AK_ATTRIBUTES = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)


def nonce_for(case: str) -> bytes:
    """A fixed 32-byte nonce per case, so re-recording keeps the nonces."""
    return hashlib.sha256(f"lightgate recorded quote {case}".encode()).digest()


# --- swtpm provisioning and process -------------------------------------------------


def provision(workdir: Path) -> Path:
    """swtpm_setup with EK certificates from a local CA kept inside `workdir`."""
    state, ca = workdir / "state", workdir / "ca"
    state.mkdir()
    ca.mkdir()
    localca_conf = workdir / "swtpm-localca.conf"
    localca_conf.write_text(
        f"statedir = {ca}\n"
        f"signingkey = {ca}/signkey.pem\n"
        f"issuercert = {ca}/issuercert.pem\n"
        f"certserial = {ca}/certserial\n"
    )
    setup_conf = workdir / "swtpm_setup.conf"
    setup_conf.write_text(
        "create_certs_tool = /usr/bin/swtpm_localca\n"
        f"create_certs_tool_config = {localca_conf}\n"
        "create_certs_tool_options = /etc/swtpm-localca.options\n"
        "active_pcr_banks = sha1,sha256,sha384\n"
    )
    subprocess.run(
        ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--createek", "--create-ek-cert",
         "--lock-nvram", "--overwrite", "--config", str(setup_conf)],
        check=True, capture_output=True,
    )  # fmt: skip
    return state


def free_port_pair() -> int:
    """A port P with P and P+1 both free on 127.0.0.1 (server and control channel)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


@contextmanager
def running_swtpm(state: Path) -> Iterator[int]:
    port = free_port_pair()
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--flags", "not-need-init,startup-clear"],
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"swtpm exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port + 1), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"swtpm did not listen on port {port + 1} within {timeout}s")


def swtpm_version() -> str:
    version = subprocess.run(["swtpm", "--version"], capture_output=True, text=True, check=True)
    line = version.stdout.splitlines()[0].split(",")[0]
    libtpms = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "libtpms0"],
        check=False,
        capture_output=True,
        text=True,
    )
    if libtpms.returncode == 0 and libtpms.stdout:
        line += f", libtpms {libtpms.stdout}"
    return line


# --- recording -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    case: str
    ak: str
    ak_public: bytes
    message: bytes
    signature: bytes
    nonce: bytes
    selection: PcrSelection
    pcrs: dict[HashAlg, dict[int, bytes]]

    def document(self, source: dict[str, str]) -> dict[str, object]:
        return {
            "source": {**source, "ak": self.ak},
            "ak_public": self.ak_public.hex(),
            "message": self.message.hex(),
            "signature": self.signature.hex(),
            "nonce": self.nonce.hex(),
            "selection": self.selection.as_dict(),
            "pcrs": {
                bank.bank_name: {str(i): v.hex() for i, v in sorted(values.items())}
                for bank, values in self.pcrs.items()
            },
        }


def extend_pcrs(tcti: str) -> None:
    """Extend EXTENDED_PCRS in every bank so quoted values are not all zero.

    Done with tpm2-pytss directly: attestor.tpm.Tpm.extend_pcr passes the digest bytes
    straight to TPMT_HA(digest=...), which tpm2-pytss 3.0 refuses (TPMU_HA wanted).
    """
    esapi = ESAPI(tcti)
    try:
        for pcr in EXTENDED_PCRS:
            measurement = f"lightgate test measurement for PCR {pcr}".encode()
            digests = TPML_DIGEST_VALUES(
                [
                    TPMT_HA(
                        hashAlg=int(alg), digest=TPMU_HA(**{alg.bank_name: alg.digest(measurement)})
                    )
                    for alg in (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384)
                ]
            )
            esapi.pcr_extend(ESYS_TR.parse(f"pcr{pcr}"), digests)
    finally:
        esapi.close()


def record_attestor_aks(tcti: str) -> list[Recording]:
    """Quotes by the AKs the attestor makes (children of the RSA EK)."""
    recordings = []
    with Tpm(tcti, "rsa") as tpm:
        for algorithm, label in (
            ("ecc", "ecc-p256-ecdsa-sha256"),
            ("rsa", "rsa2048-rsassa-sha256"),
        ):
            ak = tpm.create_ak(algorithm)
            ak_note = f"attestor.tpm.Tpm.create_ak({algorithm!r}), child of the RSA EK"
            cases = (
                (f"{label}-sha256-all", SHA256_ALL),
                (f"{label}-sha256-all-second", SHA256_ALL),
                (f"{label}-three-banks", THREE_BANKS),
            )
            for case, selection in cases:
                nonce = nonce_for(case)
                message, signature, pcrs = tpm.quote_with_pcrs(ak, selection, nonce)
                recordings.append(
                    Recording(case, ak_note, ak.tpmt_public, message, signature, nonce,
                              selection, pcrs)
                )  # fmt: skip
    return recordings


def pytss_selection(selection: PcrSelection) -> TPML_PCR_SELECTION:
    spec = "+".join(
        f"{bank.bank.bank_name}:{','.join(map(str, bank.pcrs))}" for bank in selection.banks
    )
    return TPML_PCR_SELECTION.parse(spec)


def read_pcrs(esapi: ESAPI, selection: PcrSelection) -> dict[HashAlg, dict[int, bytes]]:
    values: dict[HashAlg, dict[int, bytes]] = {}
    for bank in selection.banks:
        values[bank.bank] = {}
        for start in range(0, len(bank.pcrs), 8):  # PCR_Read returns at most 8 digests
            batch = bank.pcrs[start : start + 8]
            spec = f"{bank.bank.bank_name}:{','.join(map(str, batch))}"
            _, _, digests = esapi.pcr_read(TPML_PCR_SELECTION.parse(spec))
            values[bank.bank].update(zip(batch, (bytes(d) for d in digests), strict=True))
    return values


def sig_scheme(scheme: TPM2_ALG, hash_alg: TPM2_ALG) -> TPMT_SIG_SCHEME:
    return TPMT_SIG_SCHEME(
        scheme=scheme, details=TPMU_SIG_SCHEME(any=TPMS_SCHEME_HASH(hashAlg=hash_alg))
    )


# (case label, tpm2-pytss algorithm string, attributes, quote inScheme or None)
PRIMARY_AKS = (
    ("rsa2048-rsapss-sha256", "rsa2048:rsapss-sha256:null", AK_ATTRIBUTES, None),
    ("rsa2048-rsassa-sha384", "rsa2048:rsassa-sha384:null", AK_ATTRIBUTES, None),
    ("rsa2048-rsassa-sha1", "rsa2048:rsassa-sha1:null", AK_ATTRIBUTES, None),
    ("ecc-p384-ecdsa-sha384", "ecc384:ecdsa-sha384:null", AK_ATTRIBUTES, None),
    ("rsa2048-null-unrestricted-rsapss-sha256", "rsa2048:null:null",
     AK_ATTRIBUTES & ~TPMA_OBJECT.RESTRICTED, (TPM2_ALG.RSAPSS, TPM2_ALG.SHA256)),
)  # fmt: skip


def record_primary_aks(tcti: str) -> list[Recording]:
    """Quotes with the other signature schemes, by signing primaries made here."""
    recordings = []
    esapi = ESAPI(tcti)
    try:
        for label, algorithm, attributes, in_scheme in PRIMARY_AKS:
            template = TPM2B_PUBLIC(
                publicArea=TPMT_PUBLIC.parse(
                    alg=algorithm, objectAttributes=attributes, nameAlg="sha256"
                )
            )
            handle, public, _, _, _ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
            ak_note = f"TPM2_CreatePrimary(endorsement, {algorithm!r}) in {SCRIPT}"
            if in_scheme is not None:
                ak_note += f", quoted with inScheme {in_scheme[0]}-{in_scheme[1]}"
            scheme = sig_scheme(*in_scheme) if in_scheme else TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
            case = f"{label}-sha256-all"
            nonce = nonce_for(case)
            try:
                pcrs = read_pcrs(esapi, SHA256_ALL)
                attest, signature = esapi.quote(
                    handle, pytss_selection(SHA256_ALL), TPM2B_DATA(nonce), in_scheme=scheme
                )
                if read_pcrs(esapi, SHA256_ALL) != pcrs:
                    raise RuntimeError("PCRs changed during the quote")
            finally:
                esapi.flush_context(handle)
            recordings.append(
                Recording(case, ak_note, public.publicArea.marshal(), attest.marshal()[2:],
                          signature.marshal(), nonce, SHA256_ALL, pcrs)
            )  # fmt: skip
    finally:
        esapi.close()
    return recordings


def to_json(document: dict[str, object]) -> str:
    """Indented JSON with each PCR index list on one line (smaller diffs on re-recording)."""
    text = json.dumps(document, indent=1)
    return re.sub(r"\[\s*([0-9,\s]*?)\s*\]", lambda m: f"[{' '.join(m[1].split())}]", text) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for tool in ("swtpm", "swtpm_setup", "swtpm_localca"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    source = {
        "tpm": swtpm_version(),
        "recorded": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "script": SCRIPT,
    }
    with tempfile.TemporaryDirectory(prefix="lightgate-record-") as tmp:
        state = provision(Path(tmp))
        with running_swtpm(state) as port:
            tcti = f"swtpm:host=127.0.0.1,port={port}"
            extend_pcrs(tcti)
            recordings = record_attestor_aks(tcti) + record_primary_aks(tcti)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.json"):
        old.unlink()
    for recording in recordings:
        path = args.out / f"swtpm-{recording.case}.json"
        path.write_text(to_json(recording.document(source)))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

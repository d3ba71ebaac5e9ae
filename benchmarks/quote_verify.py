"""Pure quote verification on one pinned core: what the verifier spends per attestation
on the quote itself, with the AK already loaded, beside Keylime 7.14.3 on the same quotes.

    .venv/bin/python benchmarks/quote_verify.py [--json] [--iterations N] [--rounds R]
        [--cpu K] [--quick] [--source swtpm|recorded] [--baseline keylime|none | --no-baseline]

Inputs (default `--source swtpm`): a throw-away swtpm per AK algorithm, provisioned with a
private simulator CA; the attestor's own AKs (`attestor.tpm.Tpm.create_ak`, ECC P-256 /
ECDSA-SHA256 and RSA-2048 / RSASSA-SHA256, children of the EK); a few PCRs extended so
the values are not all zero; then N quotes per AK and PCR selection (sha256 0-15 and
sha256 0-23), EACH WITH ITS OWN NONCE (32 random alphanumeric characters, so Keylime can
take the same nonce as the str its verifier uses).  The PCR values are read once before
and once after (they must not change).  The swtpms are stopped before timing starts.
`--source recorded` cycles the few quotes in tests/data/quotes instead (no swtpm needed).

Operations (ours; one quote per call, each quote once per round):
  parse, parse_rsa2048      Quote.parse(TPMS_ATTEST, TPMT_SIGNATURE)
  pcr_values                PcrValues.from_json({"sha256": {"0": hex, ...}}) (16 PCRs)
  verify_quote_only_ecc_p256  verify_quote alone on a parsed quote and built PCR values
  verify_ecc_p256           the verifier's pure path per attestation: Quote.parse +
  verify_rsa2048            PcrValues.from_json + verify_quote(ak, quote, values,
                            QuoteExpectations(node, NonceRecord(unused, unexpired),
                            required selection, previous ClockInfo, now)), AK loaded once
                            (AttestationKey.from_bytes; the verifier caches it); sha256 0-15
  verify_*_pcrs24           the same over sha256 0-23
  ecdsa_verify_floor        cryptography's bare ECDSA P-256 verify of the same signatures
  rsa_verify_floor          cryptography's bare RSASSA-PKCS1v15 verify of the same signatures

Baseline (Keylime 7.14.3 in /tmp/klvenv, a subprocess pinned to the same core, run
interleaved with ours round by round, on the same quotes in Keylime's agent format):
  verify_rsa2048[_pcrs24]   Tpm._tpm2_checkquote(ak_tpm2b_b64, quote, nonce, "sha256", False)
  verify_rsa2048_core       tpm_util.checkquote(ak_pem, nonce, sig, attest, pcrs, "sha256")
  verify_ecc_p256           Tpm._tpm2_checkquote with the ECC AK (Keylime accepts ECDSA AKs)
ratio = Keylime median / our median; verify_rsa2048_core is divided by our verify_rsa2048.
Keylime's PCR blob (tpm2_quote -o -F serialized) is built from the PCR values and checked
once against `tpm2_pcrread -F serialized` from the same swtpm (the same tpm2-tools
writer).  Before timing, every quote must pass on both sides, and both must refuse another
quote's nonce and a changed PCR value (`checks`).  Without /tmp/klvenv, or if Keylime
fails, the run ships without the baseline and `baseline_info.status` says why.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.evidence.errors import EvidenceError, NonceUnknown, PcrDigestMismatch
from verifier.evidence.keys import AttestationKey
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.quote import (
    NonceRecord,
    Quote,
    QuoteExpectations,
    verify_quote,
)
from verifier.evidence.tpm_structures import ClockInfo, HashAlg, PcrSelection

NAME = "quote_verify"
DEFAULT_ITERATIONS = 2000
QUICK_ITERATIONS = 20
KEYLIME_PYTHON = Path("/tmp/klvenv/bin/python")
WORKER = Path(__file__).resolve().parent / "_keylime_worker.py"
RECORDED = Path(h.REPO) / "tests" / "data" / "quotes"
NODE_ID = "bench-node"
NONCE_CHARS = string.ascii_letters + string.digits
NONCE_LENGTH = 32  # the verifier issues 32-byte nonces
EXTENDED_PCRS = (0, 1, 2, 4, 7, 14, 16, 23)
PCRS_16 = tuple(range(16))
PCRS_24 = tuple(range(24))


@dataclass
class QuoteSet:
    """N quotes by one AK over one selection, with the PCR values they cover."""

    label: str
    algorithm: str  # "ecc" | "rsa"
    ak_tpm2b: bytes  # TPM2B_PUBLIC (Keylime's ak_tpm); TPMT_PUBLIC is ak_tpm2b[2:]
    selection: PcrSelection
    pcrs: dict[int, bytes]  # sha256 bank
    quotes: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # nonce, msg, sig

    @property
    def ak_tpmt(self) -> bytes:
        return self.ak_tpm2b[2:]

    def pcr_document(self) -> dict[str, dict[str, str]]:
        return {"sha256": {str(i): v.hex() for i, v in sorted(self.pcrs.items())}}


# --- inputs: fresh swtpm quotes ------------------------------------------------------


def new_nonce() -> bytes:
    return "".join(secrets.choice(NONCE_CHARS) for _ in range(NONCE_LENGTH)).encode()


def _extend_pcrs(tcti: str) -> None:
    """Extend a few PCRs in the sha256 bank so the quoted values are not all zero."""
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

    esapi = ESAPI(tcti)
    try:
        for pcr in EXTENDED_PCRS:
            digest = HashAlg.SHA256.digest(f"lightgate benchmark measurement {pcr}".encode())
            values = TPML_DIGEST_VALUES(
                [TPMT_HA(hashAlg=int(HashAlg.SHA256), digest=TPMU_HA(sha256=digest))]
            )
            esapi.pcr_extend(ESYS_TR.parse(f"pcr{pcr}"), values)
    finally:
        esapi.close()


def _serialized_pcrread(tcti: str, pcrs: tuple[int, ...]) -> bytes | None:
    """tpm2_pcrread -F serialized: the same writer as tpm2_quote -o -F serialized."""
    if shutil.which("tpm2_pcrread") is None:
        return None
    with tempfile.NamedTemporaryFile(prefix="lightgate-bench-pcrs.") as out:
        done = subprocess.run(
            ["tpm2_pcrread", "-T", tcti, "sha256:" + ",".join(map(str, pcrs)),
             "-o", out.name, "-F", "serialized"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        return Path(out.name).read_bytes() if done.returncode == 0 else None


def _record_one(
    algorithm: str, count: int, root: Path, ca: Any, out: dict[str, Any], errors: list[str]
) -> None:
    from attestor.tpm import Tpm
    from lightgate.sim.swtpm import Swtpm, provision

    try:
        state = root / f"tpm-{algorithm}"
        provision(state, ca)
        with Swtpm(state).start() as swtpm:
            _extend_pcrs(swtpm.tcti)
            sets = []
            with Tpm(swtpm.tcti) as tpm:
                ak = tpm.create_ak(algorithm)  # type: ignore[arg-type]
                everything = PcrSelection.of({HashAlg.SHA256: PCRS_24})
                before = tpm.read_pcrs(everything)[HashAlg.SHA256]
                name = "ecc_p256" if algorithm == "ecc" else "rsa2048"
                for suffix, pcrs in (("", PCRS_16), ("_pcrs24", PCRS_24)):
                    selection = PcrSelection.of({HashAlg.SHA256: pcrs})
                    qs = QuoteSet(
                        name + suffix, algorithm, ak.public, selection,
                        {i: before[i] for i in pcrs},
                    )  # fmt: skip
                    for _ in range(count):
                        nonce = new_nonce()
                        message, signature = tpm.quote(ak, selection, nonce)
                        qs.quotes.append((nonce, message, signature))
                    sets.append(qs)
                if tpm.read_pcrs(everything)[HashAlg.SHA256] != before:
                    raise RuntimeError("PCR values changed while quoting")
            # The Keylime input is built from our values; check the builder against
            # tpm2-tools' own serialized writer once (the Tpm session is closed now).
            out[f"{algorithm}.pcr_blob"] = _serialized_pcrread(swtpm.tcti, PCRS_16)
        out[algorithm] = sets
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        errors.append(f"{algorithm}: {type(exc).__name__}: {exc}")


def record_quotes(count: int, root: Path) -> tuple[list[QuoteSet], dict[str, Any]]:
    """Record `count` quotes per AK algorithm and selection, the two AKs on two swtpms
    in parallel (quoting is the TPM's work, so this is not timed)."""
    from lightgate.sim.swtpm import SimulatorCA, require_tools

    require_tools()
    ca = SimulatorCA(root / "ca")
    out: dict[str, Any] = {}
    errors: list[str] = []
    # The CA is created by the first provisioning; make it before the parallel pair.
    from lightgate.sim.swtpm import provision

    provision(root / "tpm-ca-bootstrap", ca)
    threads = [
        threading.Thread(target=_record_one, args=(alg, count, root, ca, out, errors))
        for alg in ("ecc", "rsa")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    sets = out["ecc"] + out["rsa"]
    reference = out.get("rsa.pcr_blob")
    rsa16 = next(s for s in sets if s.label == "rsa2048")
    crosscheck = None if reference is None else reference == tpm2tools_pcr_blob(rsa16)
    info = {
        "tpm": h.tool_version(["swtpm", "--version"]),
        "pcr_blob_matches_tpm2_pcrread": crosscheck,
    }
    if crosscheck is False:
        raise RuntimeError("the Keylime PCR blob built here differs from tpm2_pcrread's")
    return sets, info


def load_recorded(count: int) -> tuple[list[QuoteSet], dict[str, Any]]:
    """The recorded swtpm quotes (sha256 0-23), cycled to `count` per set."""
    sets = []
    for algorithm, name, pattern in (
        ("ecc", "ecc_p256_pcrs24", "swtpm-ecc-p256-ecdsa-sha256-sha256-all*.json"),
        ("rsa", "rsa2048_pcrs24", "swtpm-rsa2048-rsassa-sha256-sha256-all*.json"),
    ):
        documents = [json.loads(p.read_text()) for p in sorted(RECORDED.glob(pattern))]
        if not documents:
            raise RuntimeError(f"no recorded quotes {pattern} in {RECORDED}")
        first = documents[0]
        pcrs = {int(k): bytes.fromhex(v) for k, v in first["pcrs"]["sha256"].items()}
        tpmt = bytes.fromhex(first["ak_public"])
        qs = QuoteSet(
            name, algorithm, len(tpmt).to_bytes(2, "big") + tpmt,
            PcrSelection.of({HashAlg.SHA256: tuple(sorted(pcrs))}), pcrs,
        )  # fmt: skip
        for i in range(count):
            doc = documents[i % len(documents)]
            qs.quotes.append(
                (bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["message"]),
                 bytes.fromhex(doc["signature"]))
            )  # fmt: skip
        sets.append(qs)
    distinct = {s.label: len({q[0] for q in s.quotes}) for s in sets}
    return sets, {"tpm": documents[0]["source"]["tpm"], "distinct_quotes": distinct}


# --- Keylime's input format ----------------------------------------------------------


def tpm2tools_pcr_blob(qs: QuoteSet) -> bytes:
    """tpm2_quote -o FILE -F serialized: the in-memory (little-endian) TPML_PCR_SELECTION
    (count + 16 TPMS_PCR_SELECTION of hash u16, sizeofSelect u8, pcrSelect[4], padding)
    then a u32 count of TPML_DIGEST, each a u32 count + 8 TPM2B_DIGEST (u16 size + 64-byte
    buffer), 8 PCRs per TPML_DIGEST as TPM2_PCR_Read returns them.  This is what Keylime's
    tpm_util.__get_pcrs_from_blob reads."""
    selection = bytearray(struct.pack("<I", len(qs.selection.banks)))
    digests: list[bytes] = []
    for index in range(16):
        if index < len(qs.selection.banks):
            bank = qs.selection.banks[index]
            bitmap = bytearray(4)
            for pcr in bank.pcrs:
                bitmap[pcr // 8] |= 1 << (pcr % 8)
            selection += struct.pack("<HB", bank.hash_alg, 3) + bytes(bitmap) + b"\0"
            digests += [qs.pcrs[pcr] for pcr in bank.pcrs]
        else:
            selection += bytes(8)
    groups = [digests[i : i + 8] for i in range(0, len(digests), 8)]
    out = bytearray(selection)
    out += struct.pack("<I", len(groups))
    for group in groups:
        out += struct.pack("<I", len(group))
        for slot in range(8):
            value = group[slot] if slot < len(group) else b""
            out += struct.pack("<H", len(value)) + value.ljust(64, b"\0")
    return bytes(out)


def keylime_quote(qs: QuoteSet, message: bytes, signature: bytes) -> str:
    parts = (message, signature, tpm2tools_pcr_blob(qs))
    return "r" + ":".join(base64.b64encode(p).decode() for p in parts)


# --- ours ------------------------------------------------------------------------------


@dataclass
class Plan:
    """One of our operations: a callable and its argument tuples (one per quote)."""

    fn: Any
    args: list[tuple[Any, ...]]


def _verify_path(qs: QuoteSet) -> tuple[Any, list[tuple[Any, ...]]]:
    """The verifier's pure per-attestation path over one quote set."""
    ak = AttestationKey.from_bytes(qs.ak_tpmt)  # the verifier's AK cache holds this
    required = qs.selection
    document = qs.pcr_document()
    first = Quote.parse(qs.quotes[0][1], qs.quotes[0][2]).attest.clock_info
    clocks = [Quote.parse(m, s).attest.clock_info.clock for _, m, s in qs.quotes]
    # The last accepted quote: same boot, an earlier clock (not a reboot, no rollback).
    previous = ClockInfo(min(clocks), first.reset_count, first.restart_count, True)
    expires_at = datetime.now(UTC) + timedelta(hours=1)

    def verify(message: bytes, signature: bytes, pcr_document: dict[str, Any], nonce: bytes):
        quote = Quote.parse(message, signature)
        pcr_values = PcrValues.from_json(pcr_document)
        expect = QuoteExpectations(
            NODE_ID,
            NonceRecord(nonce, NODE_ID, expires_at, False),
            required,
            previous,
            datetime.now(UTC),
        )
        return verify_quote(ak, quote, pcr_values, expect)

    args = [(m, s, document, n) for n, m, s in qs.quotes]
    return verify, args


def _verify_quote_only(qs: QuoteSet) -> Plan:
    """verify_quote alone (quote parsed and PCR values built beforehand): the checks,
    the signature included, without the decoding."""
    ak = AttestationKey.from_bytes(qs.ak_tpmt)
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    values = PcrValues.from_json(qs.pcr_document())
    first = Quote.parse(qs.quotes[0][1], qs.quotes[0][2]).attest.clock_info
    previous = ClockInfo(0, first.reset_count, first.restart_count, True)

    def only(quote: Quote, nonce: bytes) -> object:
        expect = QuoteExpectations(
            NODE_ID,
            NonceRecord(nonce, NODE_ID, expires_at, False),
            qs.selection,
            previous,
            datetime.now(UTC),
        )
        return verify_quote(ak, quote, values, expect)

    return Plan(only, [(Quote.parse(m, s), n) for n, m, s in qs.quotes])


def check_ours(qs: QuoteSet, verify: Any, args: list[tuple[Any, ...]]) -> dict[str, bool]:
    """Every quote verifies; a wrong nonce and a changed PCR value are refused."""
    for a in args:
        verified = verify(*a)
        if verified.rebooted or verified.node_id != NODE_ID:
            raise RuntimeError(f"{qs.label}: unexpected verdict {verified}")
    message, signature, document, nonce = args[0]
    checks = {}
    try:
        verify(message, signature, document, args[1][3])
        checks[f"{qs.label}.wrong_nonce_rejected"] = False
    except NonceUnknown:
        checks[f"{qs.label}.wrong_nonce_rejected"] = True
    changed = json.loads(json.dumps(document))
    value = bytearray.fromhex(changed["sha256"]["0"])
    value[-1] ^= 1
    changed["sha256"]["0"] = value.hex()
    try:
        verify(message, signature, changed, nonce)
        checks[f"{qs.label}.changed_pcr_rejected"] = False
    except PcrDigestMismatch:
        checks[f"{qs.label}.changed_pcr_rejected"] = True
    except EvidenceError:
        checks[f"{qs.label}.changed_pcr_rejected"] = False
    if not all(checks.values()):
        raise RuntimeError(f"{qs.label}: a bad quote was accepted: {checks}")
    return checks


def our_plans(sets: list[QuoteSet]) -> tuple[dict[str, Plan], dict[str, bool]]:
    plans: dict[str, Plan] = {}
    checks: dict[str, bool] = {}
    by_label = {s.label: s for s in sets}
    ecc = by_label.get("ecc_p256") or by_label["ecc_p256_pcrs24"]
    rsa_set = by_label.get("rsa2048") or by_label["rsa2048_pcrs24"]

    plans["parse"] = Plan(Quote.parse, [(m, s) for _, m, s in ecc.quotes])
    plans["parse_rsa2048"] = Plan(Quote.parse, [(m, s) for _, m, s in rsa_set.quotes])
    plans["pcr_values"] = Plan(PcrValues.from_json, [(ecc.pcr_document(),)] * len(ecc.quotes))
    for qs in sets:
        verify, args = _verify_path(qs)
        checks.update(check_ours(qs, verify, args))
        plans[f"verify_{qs.label}"] = Plan(verify, args)
    plans["verify_quote_only_ecc_p256"] = _verify_quote_only(ecc)

    # The floor: the bare signature check the full path has to make anyway.
    ecc_key = AttestationKey.from_bytes(ecc.ak_tpmt).key
    assert isinstance(ecc_key, ec.EllipticCurvePublicKey)
    ecdsa = ec.ECDSA(hashes.SHA256())
    ecc_args = []
    for _, message, signature in ecc.quotes:
        parsed = Quote.parse(message, signature).signature
        der = encode_dss_signature(
            int.from_bytes(parsed.ecdsa_r, "big"), int.from_bytes(parsed.ecdsa_s, "big")
        )
        ecc_args.append((der, message, ecdsa))
    plans["ecdsa_verify_floor"] = Plan(ecc_key.verify, ecc_args)
    rsa_key = AttestationKey.from_bytes(rsa_set.ak_tpmt).key
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    rsa_args = [
        (Quote.parse(m, s).signature.rsa_signature, m, pkcs1, sha256) for _, m, s in rsa_set.quotes
    ]
    plans["rsa_verify_floor"] = Plan(rsa_key.verify, rsa_args)
    return plans, checks


# --- Keylime baseline ------------------------------------------------------------------


class KeylimeWorker:
    """The Keylime worker subprocess, pinned to our core, driven round by round."""

    def __init__(self, sets: list[QuoteSet], cpu: int, workdir: Path) -> None:
        job_sets = {}
        for qs in sets:
            ops: dict[str, str | None] = {"full": f"verify_{qs.label}", "core": None}
            if qs.label.startswith("rsa2048"):
                ops["core"] = f"verify_{qs.label}_core"
            job_sets[qs.label] = {
                "ak_tpm2b_b64": base64.b64encode(qs.ak_tpm2b).decode(),
                "quotes": [[n.hex(), keylime_quote(qs, m, s)] for n, m, s in qs.quotes],
                "pcrs": {str(i): v.hex() for i, v in qs.pcrs.items()},
                "ops": ops,
            }
        self.stderr_path = workdir / "keylime-worker.stderr"
        self._stderr = self.stderr_path.open("wb")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self.process = subprocess.Popen(
            [str(KEYLIME_PYTHON), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=str(workdir),  # Keylime looks for config files relative to nothing here
            env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),  # noqa: PLW1509
        )
        self.ready = self._send(json.dumps({"sets": job_sets, "warmup": 3}))
        if not self.ready.get("ready"):
            raise RuntimeError(f"keylime worker did not start: {self.ready}")

    def _send(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            self.process.wait(timeout=10)
            tail = self.stderr_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(
                f"keylime worker exited ({self.process.returncode}): {' | '.join(tail)}"
            )
        result: dict[str, Any] = json.loads(answer)
        return result

    def run_round(self) -> dict[str, list[int]]:
        samples: dict[str, list[int]] = self._send("run")["samples"]
        return samples

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.write(b"quit\n")
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


# --- main ------------------------------------------------------------------------------


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lightgate-bench-qv-"))
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield path
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(path, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    h.common_arguments(parser, default_iterations=DEFAULT_ITERATIONS)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, quick 1)")
    parser.add_argument(
        "--source",
        choices=("swtpm", "recorded"),
        default=None,
        help="fresh swtpm quotes (default when swtpm is installed) or tests/data/quotes",
    )
    parser.add_argument(
        "--baseline",
        choices=("keylime", "none"),
        default=None,
        help=f"default: keylime when {KEYLIME_PYTHON} exists",
    )
    parser.add_argument("--no-baseline", dest="baseline", action="store_const", const="none")
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = QUICK_ITERATIONS if args.quick else DEFAULT_ITERATIONS
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.iterations < 4 or args.rounds < 1:
        parser.error("--iterations must be at least 4 and --rounds at least 1")
    if args.source is None:
        have_swtpm = shutil.which("swtpm") and shutil.which("swtpm_setup")
        args.source = "swtpm" if have_swtpm else "recorded"
    if args.baseline is None:
        args.baseline = "keylime" if KEYLIME_PYTHON.exists() else "none"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    baseline_info: dict[str, Any] = {"name": "keylime 7.14.3", "requested": args.baseline}
    with workdir() as root:
        started = time.monotonic()
        if args.source == "swtpm":
            h.progress(f"recording {args.iterations} quotes x 4 sets on 2 swtpms")
            sets, source_info = record_quotes(args.iterations, root)
        else:
            sets, source_info = load_recorded(args.iterations)
            notes.append("recorded quotes are cycled: few distinct quotes, nonces repeat")
        source_info["source"] = args.source
        source_info["input_seconds"] = round(time.monotonic() - started, 1)
        h.progress(f"inputs ready in {source_info['input_seconds']} s")

        cpu = args.cpu if args.cpu is not None else h.least_busy_cpu()
        h.pin(cpu)
        plans, checks = our_plans(sets)

        worker = None
        if args.baseline == "keylime":
            if not KEYLIME_PYTHON.exists():
                baseline_info["status"] = (
                    f"unavailable: {KEYLIME_PYTHON} not found "
                    "(bash ../shared/anchors/keylime/setup.sh builds it)"
                )
            else:
                try:
                    h.progress("starting the Keylime worker (checks every quote once)")
                    worker = KeylimeWorker(sets, cpu, root)
                    baseline_info["status"] = "ok"
                    baseline_info["versions"] = worker.ready["versions"]
                    checks.update({f"keylime.{k}": v for k, v in worker.ready["checks"].items()})
                except Exception as exc:  # noqa: BLE001 - ship without the baseline
                    baseline_info["status"] = f"failed: {exc}"
                    h.progress(f"Keylime baseline unavailable: {exc}")
        else:
            baseline_info["status"] = "skipped (--no-baseline)"

        ours: dict[str, list[int]] = {op: [] for op in plans}
        theirs: dict[str, list[int]] = {}
        before = h.cpu_times()
        try:
            for round_index in range(args.rounds):
                h.progress(f"round {round_index + 1}/{args.rounds}: ours")
                for op, plan in plans.items():
                    ours[op] += h.time_calls(plan.fn, plan.args)
                if worker is not None:
                    h.progress(f"round {round_index + 1}/{args.rounds}: keylime")
                    for op, samples in worker.run_round().items():
                        theirs.setdefault(op, []).extend(samples)
        finally:
            if worker is not None:
                worker.close()
        utilisation = h.cpu_util(before, h.cpu_times())

    results = {op: h.stats(samples) for op, samples in ours.items()}
    baseline = {op: h.stats(samples) for op, samples in theirs.items()}
    ratio = h.ratios(
        baseline, results, {op: op.removesuffix("_core") for op in baseline if op.endswith("_core")}
    )
    overhead = {}
    if "verify_ecc_p256" in results:
        ecc = results["verify_ecc_p256"]["median_us"]
        floor = results["ecdsa_verify_floor"]["median_us"]
        overhead["verify_ecc_p256_minus_ecdsa_floor_us"] = round(ecc - floor, 2)
        overhead["ecdsa_floor_share_of_verify_ecc_p256"] = round(floor / ecc, 3)
        # The overhead, by step (medians of the steps timed alone).
        overhead["of_which_parse_us"] = results["parse"]["median_us"]
        overhead["of_which_pcr_values_us"] = results["pcr_values"]["median_us"]
        overhead["of_which_checks_beyond_signature_us"] = round(
            results["verify_quote_only_ecc_p256"]["median_us"] - floor, 2
        )
    if "verify_rsa2048" in results:
        rsa_median = results["verify_rsa2048"]["median_us"]
        overhead["verify_rsa2048_minus_rsa_floor_us"] = round(
            rsa_median - results["rsa_verify_floor"]["median_us"], 2
        )
    distinct = "distinct " if args.source == "swtpm" else ""
    notes += [
        f"pinned to core {cpu}; {args.iterations} {distinct}quotes per set, each verified "
        f"once per round, {args.rounds} round(s), ours and Keylime interleaved per round",
        "verify_* = Quote.parse + PcrValues.from_json + verify_quote with the AK loaded once",
        "ratio = Keylime median / ours; verify_rsa2048_core is Keylime's tpm_util.checkquote "
        "(blobs decoded, PEM given) over our verify_rsa2048",
    ]
    if baseline_info["status"] != "ok":
        notes.append(f"baseline: {baseline_info['status']}")
    document = h.report(
        NAME,
        h.machine_info(
            pinned_cpu=cpu,
            cpu_util_during_run=utilisation,
            swtpm=source_info.get("tpm"),
        ),
        results,
        baseline,
        ratio,
        baseline_info=baseline_info,
        config={
            "iterations": args.iterations,
            "rounds": args.rounds,
            "pcr_selections": {s.label: s.selection.as_dict() for s in sets},
            "inputs": source_info,
        },
        checks=checks,
        overhead=overhead,
        notes=notes,
    )
    h.emit(document, args.json, notes + [f"{k}: {v}" for k, v in overhead.items()])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        h.progress("interrupted")
        sys.exit(130)

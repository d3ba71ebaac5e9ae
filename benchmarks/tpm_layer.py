"""The agent's TPM commands: `attestor.tpm2` (its own marshalling) against tpm2-tss
through tpm2-pytss (what the agent used before), on one swtpm.

    .venv/bin/python benchmarks/tpm_layer.py [--json] [--iterations N] [--quick] [--no-baseline]

Operations, each the same TPM command sequence on both sides:
- pcr_read_24: the 24 SHA-256 PCRs (three TPM2_PCR_Read of 8).
- quote_24: TPM2_Quote over them by an ECC P-256 restricted signing key.
- pcr_extend_2_banks: TPM2_PCR_Extend of PCR 16 in SHA-1 and SHA-256.
- open_and_ek: open the TPM, read the EK certificate's NV index and recreate the RSA EK
  (what every agent start does), then close.
Most of each figure is swtpm's own work (RSA key generation dominates open_and_ek); the
difference is the client's.  `memory` is each client's import cost: the peak resident
set (VmHWM) of a fresh interpreter after importing it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attestor.tpm import Tpm
from benchmarks._harness import common_arguments, emit, machine_info, measure, progress, report
from lightgate.sim.boot import GOOD_BOOT, fixture_path, measure_boot
from lightgate.sim.swtpm import SimulatorCA, Swtpm, provision, require_tools
from verifier.evidence.tpm_structures import HashAlg, PcrSelection

ALL_PCRS = PcrSelection.of({HashAlg.SHA256: list(range(24))})
EXTEND = {HashAlg.SHA1: b"\x01" * 20, HashAlg.SHA256: b"\x02" * 32}
NONCE = b"\x5a" * 32

PEAK_AFTER_IMPORT = """
import sys
for name in sys.argv[1:]:
    __import__(name)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
"""


def import_peak_mb(*modules: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_AFTER_IMPORT, *modules],
        check=True,
        capture_output=True,
        text=True,
    )
    return round(float(out.stdout), 1)


def ours(tcti: str, iterations: int) -> dict[str, Any]:
    calls = [()] * iterations
    with Tpm(tcti) as tpm:
        ak = tpm.create_ak("ecc")
        results = {
            "pcr_read_24": measure(lambda: tpm.read_pcrs(ALL_PCRS), calls),
            "quote_24": measure(lambda: tpm.quote(ak, ALL_PCRS, NONCE), calls),
            "pcr_extend_2_banks": measure(lambda: tpm.extend_pcr(16, EXTEND), calls),
        }

    def open_and_ek() -> None:
        with Tpm(tcti) as tpm:
            tpm.endorsement()

    results["open_and_ek"] = measure(open_and_ek, [()] * max(3, iterations // 10), warmup=1)
    return results


def tpm2_pytss(tcti: str, iterations: int) -> dict[str, Any]:
    os.environ.setdefault("TSS2_LOG", "all+NONE")  # it logs every absent NV index probed
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
    from tpm2_pytss.types import (
        TPM2B_DATA,
        TPM2B_PUBLIC,
        TPML_DIGEST_VALUES,
        TPML_PCR_SELECTION,
        TPMT_HA,
        TPMT_PUBLIC,
        TPMU_HA,
    )
    from tpm2_pytss.utils import NVReadEK, create_ek_template

    calls = [()] * iterations
    batches = [
        TPML_PCR_SELECTION.parse("sha256:" + ",".join(str(i) for i in range(start, start + 8)))
        for start in (0, 8, 16)
    ]
    selection = TPML_PCR_SELECTION.parse("sha256:" + ",".join(str(i) for i in range(24)))
    values = TPML_DIGEST_VALUES(
        [
            TPMT_HA(hashAlg=int(alg), digest=TPMU_HA(**{alg.bank_name: digest}))
            for alg, digest in EXTEND.items()
        ]
    )
    attributes = (
        TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
    )
    template = TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC.parse(
            alg="ecc256:ecdsa-sha256:null", objectAttributes=attributes, nameAlg="sha256"
        )
    )
    ectx = ESAPI(tcti)
    try:
        ak, _, _, _, _ = ectx.create_primary(None, template, ESYS_TR.OWNER)

        def read() -> None:
            for batch in batches:
                ectx.pcr_read(batch)

        results = {
            "pcr_read_24": measure(read, calls),
            "quote_24": measure(lambda: ectx.quote(ak, selection, TPM2B_DATA(NONCE)), calls),
            "pcr_extend_2_banks": measure(lambda: ectx.pcr_extend(ESYS_TR.PCR16, values), calls),
        }
        ectx.flush_context(ak)
    finally:
        ectx.close()

    def open_and_ek() -> None:
        context = ESAPI(tcti)
        try:
            _, ek_template = create_ek_template("EK-RSA2048", NVReadEK(context))
            handle, _, _, _, _ = context.create_primary(None, ek_template, ESYS_TR.ENDORSEMENT)
            context.flush_context(handle)
        finally:
            context.close()

    results["open_and_ek"] = measure(open_and_ek, [()] * max(3, iterations // 10), warmup=1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, default_iterations=200)
    parser.add_argument("--no-baseline", action="store_true", help="skip tpm2-pytss")
    args = parser.parse_args()
    iterations = 5 if args.quick else (args.iterations or 200)
    require_tools()
    with tempfile.TemporaryDirectory(prefix="lightgate-bench-tpm-") as tmp:
        root = Path(tmp)
        provision(root / "tpm", SimulatorCA(root / "ca"))
        with Swtpm(root / "tpm").start() as swtpm:
            with Tpm(swtpm.tcti) as tpm:
                measure_boot(tpm, fixture_path(GOOD_BOOT).read_bytes())
            progress(f"attestor.tpm2: {iterations} calls per operation")
            results = ours(swtpm.tcti, iterations)
            baseline: dict[str, Any] = {}
            if not args.no_baseline:
                progress(f"tpm2-pytss: {iterations} calls per operation")
                baseline = tpm2_pytss(swtpm.tcti, iterations)
    memory = {
        "attestor.tpm": import_peak_mb("attestor.tpm"),
        "tpm2_pytss": import_peak_mb("tpm2_pytss", "tpm2_pytss.utils"),
    }
    document = report("tpm_layer", machine_info(), results, baseline, memory_mb=memory)
    notes: list[str] = [
        "baseline: tpm2-tss 4 (ESAPI) through tpm2-pytss 3.0.0, the agent's TPM stack before",
        f"import peak (VmHWM): attestor.tpm {memory['attestor.tpm']} MB,"
        f" tpm2_pytss {memory['tpm2_pytss']} MB",
    ]
    emit(document, args.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

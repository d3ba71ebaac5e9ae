"""Keylime 7.14.3's quote check, timed on quotes handed over by benchmarks/quote_verify.py.

Runs under Keylime's own interpreter (/tmp/klvenv/bin/python, built by
../shared/anchors/keylime/setup.sh), already pinned by the parent to the core the
parent measures on.  It imports nothing from Lightgate.

Protocol: JSON lines.  stdin line 1 is the job
    {"sets": {LABEL: {"ak_tpm2b_b64": ..., "quotes": [[nonce_hex, quote], ...],
                      "pcrs": {"0": hex, ...}, "ops": {"full": OP, "core": OP}}}, "warmup": 3}
where `quote` is Keylime's agent format "r" + b64(TPMS_ATTEST) + ":" + b64(TPMT_SIGNATURE)
+ ":" + b64(pcrs, tpm2_quote -F serialized).  The worker checks every quote once (and that
Keylime rejects a wrong nonce and a changed PCR value), answers {"ready": ...}, then for
every "run" line answers {"samples": {OP: [ns, ...]}} and exits on "quit" or EOF.

Timed like ../shared/anchors/keylime/bench.py: wall clock (perf_counter_ns) per call,
GC on, Keylime logging off (logging.disable(CRITICAL)).
"""

import base64
import gc
import json
import logging
import sys
import time


def _nonce(nonce_hex):
    """Keylime's verifier hands its nonce over as a str (random_password(20)); quotes
    made with an ASCII nonce get it back as that str, any other nonce as bytes."""
    raw = bytes.fromhex(nonce_hex)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return raw
    return text if text.isalnum() else raw


def _tamper_pcr_blob(quote):
    """The same quote with the last byte of the first PCR digest flipped."""
    head, sig, pcrs = quote[1:].split(":")
    blob = bytearray(base64.b64decode(pcrs))
    # TPML_PCR_SELECTION (4 + 16 * 8) + TPML_DIGEST count (4) + TPML_DIGEST.count (4) + size (2)
    first = 4 + 16 * 8 + 4 + 4 + 2
    blob[first + 31] ^= 0x01
    return "r" + ":".join((head, sig, base64.b64encode(bytes(blob)).decode()))


def main():
    from importlib.metadata import version

    from cryptography.hazmat.primitives import serialization
    from keylime.tpm import tpm2_objects, tpm_util
    from keylime.tpm.tpm_main import Tpm

    logging.disable(logging.CRITICAL)
    job = json.loads(sys.stdin.readline())
    warmup = int(job.get("warmup", 3))

    plans = {}  # op -> (function, [args])
    checks = {}
    for label, spec in job["sets"].items():
        ak_b64 = spec["ak_tpm2b_b64"]
        quotes = [(_nonce(n), q) for n, q in spec["quotes"]]
        expected = {int(k): v for k, v in spec["pcrs"].items()}

        # Every quote passes, and Keylime reads back the PCR values the node reported.
        for nonce, quote in quotes:
            pcrs, err = Tpm._tpm2_checkquote(ak_b64, quote, nonce, "sha256", False)
            if err or pcrs != expected:
                raise SystemExit(f"{label}: keylime refused a good quote: {err or pcrs}")
        # Negative controls (as bench.py): another quote's nonce, and a changed PCR value.
        _, err = Tpm._tpm2_checkquote(ak_b64, quotes[0][1], quotes[1][0], "sha256", False)
        checks[f"{label}.wrong_nonce_rejected"] = bool(err)
        _, err = Tpm._tpm2_checkquote(
            ak_b64, _tamper_pcr_blob(quotes[0][1]), quotes[0][0], "sha256", False
        )
        checks[f"{label}.changed_pcr_rejected"] = bool(err)
        if not all(v for k, v in checks.items() if k.startswith(label + ".")):
            raise SystemExit(f"{label}: keylime accepted a bad quote: {checks}")

        def full(nonce, quote, ak_b64=ak_b64):
            _, err = Tpm._tpm2_checkquote(ak_b64, quote, nonce, "sha256", False)
            if err:
                raise RuntimeError(err)

        plans[spec["ops"]["full"]] = (full, quotes)
        if spec["ops"].get("core"):
            ak_pem = tpm2_objects.pubkey_from_tpm2b_public(base64.b64decode(ak_b64)).public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            decoded = []
            for nonce, quote in quotes:
                attest, sig, pcrs = Tpm._get_quote_parameters(quote, False)
                decoded.append((ak_pem, nonce, sig, attest, pcrs, "sha256"))
            plans[spec["ops"]["core"]] = (tpm_util.checkquote, decoded)

    ready = {
        "ready": True,
        "checks": checks,
        "versions": {
            "keylime": version("keylime"),
            "cryptography": version("cryptography"),
            "python": sys.version.split()[0],
        },
    }
    print(json.dumps(ready), flush=True)

    clock = time.perf_counter_ns
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command != "run":
            raise SystemExit(f"unknown command {command!r}")
        samples = {}
        for op, (fn, args_list) in plans.items():
            for args in args_list[:warmup]:
                fn(*args)
            gc.collect()
            out = []
            for args in args_list:
                start = clock()
                fn(*args)
                out.append(clock() - start)
            samples[op] = out
        print(json.dumps({"samples": samples}), flush=True)


if __name__ == "__main__":
    main()

"""Fuzz the measured-boot event-log parser and replay with atheris (libFuzzer for Python).

    .venv/bin/python fuzz/eventlog_fuzz.py [-seed_dir=DIR] [libFuzzer flags] [CORPUS_DIR ...]

`make fuzz` installs atheris and runs this for FUZZ_SECONDS (default 60) with the shared
firmware logs as seeds; fuzz/README.md says more.  `-seed_dir=DIR` (ours, not
libFuzzer's) seeds the run with every `*.bin` in DIR, read in place: libFuzzer writes new
inputs only into the first CORPUS_DIR, so a read-only folder such as
../shared/firmware-logs is safe to name.

Each input is parsed and replayed.  `EventLogMalformed` is the one expected refusal;
any other exception is a finding (libFuzzer stops and writes the input as crash-*).
A parsed log must also keep these invariants:
- `log.size` is the input's length and every event's digests have their declared sizes;
- replay gives PCRs only for events that extend, of the bank's digest size;
- the log verifies against its own replay (as a quote) with no workaround applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]  # atheris ships no type hints

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python fuzz/eventlog_fuzz.py` from anywhere
    sys.path.insert(0, str(REPO))

# Coverage feedback for Lightgate's own modules only (not hashlib or cryptography).
with atheris.instrument_imports(include=["verifier", "lightgate"]):
    from verifier.evidence.errors import EventLogMalformed
    from verifier.evidence.eventlog import EventLog, parse_event_log, replay
    from verifier.evidence.measured_boot import verify_event_log

SEED_DIR_FLAG = "-seed_dir="


def TestOneInput(data: bytes) -> None:  # the name atheris documents
    try:
        log = parse_event_log(data)
    except EventLogMalformed:
        return
    check_invariants(data, log)


def check_invariants(data: bytes, log: EventLog) -> None:
    if log.size != len(data):
        raise AssertionError(f"log.size {log.size} for {len(data)} bytes")
    # Legacy records and the crypto-agile header carry one SHA-1 digest (TCG_PCR_EVENT);
    # TCG_PCR_EVENT2 records carry one digest per algorithm the header declares.
    sizes = dict(log.spec_id.algorithms) if log.spec_id else {0x0004: 20}
    for event in log.events:
        is_header = log.spec_id is not None and event.number == 0
        for alg, digest in event.digests:
            if is_header:
                if (alg, len(digest)) != (0x0004, 20):
                    raise AssertionError("Spec ID header digest is not one SHA-1")
                continue
            if len(digest) != sizes[alg]:
                raise AssertionError(f"event {event.number}: 0x{alg:04x} digest size")
    result = replay(log)
    extended = {event.pcr for event in log.events if event.extends}
    for bank, values in result.pcrs.items():
        if not set(values) <= extended:
            raise AssertionError(f"{bank.bank_name}: PCRs {sorted(values)} not all extended")
        if any(len(value) != bank.digest_size for value in values.values()):
            raise AssertionError(f"{bank.bank_name}: a PCR value of the wrong size")
    if result.pcrs:
        verified = verify_event_log(log, result.pcrs)
        if verified.workarounds:
            raise AssertionError(f"own replay needed workarounds {verified.workarounds}")


def libfuzzer_arguments(argv: list[str]) -> list[str]:
    """argv with `-seed_dir=DIR` turned into libFuzzer's `-seed_inputs=FILE,FILE,...`."""
    out: list[str] = []
    for argument in argv:
        if not argument.startswith(SEED_DIR_FLAG):
            out.append(argument)
            continue
        folder = Path(argument.removeprefix(SEED_DIR_FLAG))
        seeds = sorted(str(p) for p in folder.glob("*.bin") if p.is_file())
        if seeds:
            out.append("-seed_inputs=" + ",".join(seeds))
        else:
            print(f"eventlog_fuzz: no *.bin seeds in {folder}", file=sys.stderr)
    return out


def main() -> None:
    atheris.Setup(libfuzzer_arguments(sys.argv), TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

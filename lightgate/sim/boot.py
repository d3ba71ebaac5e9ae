"""Simulated boots: a fixture event log replayed into a swtpm's PCRs, and its golden values.

A real node's firmware extends each measurement as it boots and keeps the log; a swtpm
node gets the same by replaying a fixture log (firmware-fixtures/, built by
`lightgate.sim.firmware`) into its PCRs at start, so quote and log agree exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from attestor.tpm import Tpm
from lightgate.sim.firmware import FIXTURES_DIR
from verifier.evidence.claims import extract_claims
from verifier.evidence.eventlog import REPLAYABLE_BANKS, parse_event_log
from verifier.evidence.tpm_structures import HashAlg
from verifier.golden.values import GoldenValues, learn
from verifier.store import Store

GOOD_BOOT = "good"


def fixture_path(name: str) -> Path:
    path = FIXTURES_DIR / f"{name}.bin"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in FIXTURES_DIR.glob("*.bin")))
        raise FileNotFoundError(f"no boot fixture {name!r} in {FIXTURES_DIR} (known: {known})")
    return path


def measure_boot(tpm: Tpm, raw_log: bytes) -> int:
    """Extend every measurement of the log into the TPM, as firmware would have; the
    number of events extended.  The TPM ignores digests of banks it has not allocated."""
    log = parse_event_log(raw_log)
    extended = 0
    for event in log.events:
        if not event.extends:
            continue
        digests = {HashAlg(alg): d for alg, d in event.digests if alg in REPLAYABLE_BANKS}
        tpm.extend_pcr(event.pcr, digests)
        extended += 1
    return extended


def golden_from_fixture(name: str = GOOD_BOOT) -> GoldenValues:
    """Golden values learned from a fixture boot, as `attest golden learn --log` would."""
    path = fixture_path(name)
    log = parse_event_log(path.read_bytes())
    provenance = {
        "source": f"eventlog:{path.name} sha256:{log.sha256.hex()}",
        "author": "lightgate simulator",
        "tool": "lightgate.sim.boot",
    }
    return learn([extract_claims(log)], f"sim-{name}", provenance)


def import_golden(store: Store, golden: GoldenValues, source: str = "simulator") -> None:
    store.put_golden_values(
        golden.name, golden.to_document(), golden.digest, source, datetime.now(UTC)
    )

"""Boot claims: from the fixture boots (whose contents are known by construction) and
from the real logs of ../shared/firmware-logs (skipped when that folder is absent)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lightgate.sim.boot import fixture_path
from verifier.evidence import claims
from verifier.evidence.claim_names import flatten
from verifier.evidence.claim_types import FAMILY_PCRS
from verifier.evidence.claims import claims_of, extract_claims
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import parse_event_log, replay
from verifier.evidence.measured_boot import verify_event_log
from verifier.evidence.tpm_structures import HashAlg

SHARED = Path(__file__).resolve().parents[4] / ".." / "shared" / "firmware-logs"


def _claims(name: str):  # type: ignore[no-untyped-def]
    return extract_claims(parse_event_log(fixture_path(name).read_bytes()))


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_good_fixture_claims_name_its_boot() -> None:
    claims = _claims("good")
    assert claims.secure_boot.enabled is True
    assert claims.boot_chain[0].description.endswith("shimx64.efi")
    named = flatten(claims)
    assert named["boot-chain.kernel"] == _sha256("vmlinuz-6.1.0-28-amd64 6.1.119-1")
    assert named["kernel.cmdline"] == "root=UUID=6d931c60-2c25-4604-b06d-79c34630e16e ro quiet"
    assert named["exit-boot-services"] is True
    assert claims.kernel.initrd is not None
    assert sorted(claims.separators) == [f"PCR{pcr}" for pcr in range(8)]
    assert claims.findings == ()  # every digest the spec defines over data matches


def test_secure_boot_keys_are_certificate_fingerprints() -> None:
    claims = _claims("good")
    assert claims.secure_boot.pk and claims.secure_boot.db
    assert all(len(entry.fingerprint) == 64 for entry in claims.secure_boot.db)
    assert all(
        entry.subject and entry.subject.startswith("CN=") for entry in claims.secure_boot.kek
    )
    assert claims.secure_boot.authorities  # the db certificate that verified shim
    assert claims.shim.vendor_certificates and claims.shim.sbat_levels


def test_variants_differ_exactly_in_their_claims() -> None:
    good = flatten(_claims("good"))
    for variant, changed in {
        "tampered-kernel": {"boot-chain", "boot-chain.kernel", "kernel.files"},
        "cmdline-changed": {"kernel.cmdline", "kernel.commands"},
    }.items():
        other = flatten(_claims(variant))
        assert {k for k in good.keys() | other.keys() if good.get(k) != other.get(k)} == changed
    off = flatten(_claims("secure-boot-off"))
    assert off["secure-boot.enabled"] is False
    assert off["secure-boot.authorities"] == ()


def test_claims_of_a_verified_log_use_only_quoted_pcrs() -> None:
    """Events of PCRs the quote did not cover never become claims."""
    log = parse_event_log(fixture_path("good").read_bytes())
    sha256 = replay(log).pcrs[HashAlg.SHA256]
    quoted = {HashAlg.SHA256: {pcr: sha256[pcr] for pcr in (0, 1, 2, 3, 5, 6, 7)}}
    verified = verify_event_log(log, quoted, log_pcrs=frozenset({0, 1, 2, 3, 5, 6, 7}))
    claims = claims_of(verified)
    assert claims.boot_chain == ()  # PCR4 was not quoted
    assert claims.kernel.cmdline is None  # PCR8 neither
    assert claims.secure_boot.enabled is True


def test_every_pcr_a_handler_claims_from_names_a_family() -> None:
    """A handler claims only from PCRs some family in FAMILY_PCRS is named for, so a
    claim never comes from a PCR that `claim_names` would not cover (separators are
    recorded from any PCR and judged on their own)."""
    family = frozenset().union(*FAMILY_PCRS.values())
    for event_type, (_, pcrs) in claims._HANDLERS.items():
        if event_type == EventType.EV_SEPARATOR:
            continue
        assert pcrs <= family, f"{EventType(event_type).name}: PCRs {sorted(pcrs - family)}"


def test_digest_mismatch_is_a_finding_and_makes_no_claim() -> None:
    """Firmware that logs data not matching its digest (gdc-host's S-CRTM version) gets a
    named finding; the log still parses and replays, but the unmeasured data claims
    nothing: the event is pinned by its digest in other-events."""
    path = SHARED / "gotpmtools__gdc-host.bin"
    if not path.is_file():
        pytest.skip("shared firmware logs are not present")
    claims = extract_claims(parse_event_log(path.read_bytes()))
    names = [(f.name, f.event) for f in claims.findings]
    assert ("event-data-digest", 3) in names
    assert claims.firmware.scrtm_versions == ()
    assert any(line.startswith("PCR0 EV_S_CRTM_VERSION sha256:") for line in claims.other_events)


REAL = {
    # stem: (secure boot, last boot application path suffix or None, cmdline fragment)
    "keylime__binary_bios_measurements-secureboot": (True, "grubx64.efi", "rhgb quiet"),
    "ibmtss__deb1": (True, "grubx64.efi", "root=UUID=d4b018ac"),
    "goeventlog__arch-linux-workstation": (False, "vmlinuz-linux-lts", "cryptdevice="),
    "goattest__windows_gcp_shielded_vm": (True, "bootmgfw.efi", None),
    "fwupd__binary_bios_measurements-v2": (True, "shimx64.efi", "vt.handoff=7"),
}


@pytest.mark.parametrize("stem", sorted(REAL))
def test_real_log_claims(stem: str) -> None:
    path = SHARED / f"{stem}.bin"
    if not path.is_file():
        pytest.skip("shared firmware logs are not present")
    secure_boot, application, cmdline = REAL[stem]
    claims = extract_claims(parse_event_log(path.read_bytes()))
    assert claims.secure_boot.enabled is secure_boot
    paths = [c.description for c in claims.boot_chain if c.description]
    assert any(p.endswith(application) for p in paths), paths
    if cmdline is None:
        assert claims.kernel.cmdline is None
    else:
        assert claims.kernel.cmdline is not None and cmdline in claims.kernel.cmdline
    assert not [f for f in claims.findings if f.name == "event-data-malformed"]


def test_claims_name_components_by_a_verified_bank_only() -> None:
    """An sha1-only quote verifies the log's sha1 bank; the sha256 digests the log also
    carries are the node's word and must not name the kernel."""
    log = parse_event_log(fixture_path("good").read_bytes())
    sha1 = replay(log).pcrs[HashAlg.SHA1]
    verified = verify_event_log(log, {HashAlg.SHA1: dict(sha1)})
    named = flatten(claims_of(verified))
    assert str(named["boot-chain.kernel"]).startswith("sha1:")
    assert verified.verified_banks == (HashAlg.SHA1,)

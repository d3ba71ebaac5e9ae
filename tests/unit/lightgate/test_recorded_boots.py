"""Real measured boots recorded under QEMU (firmware-fixtures/recorded/, `make
fixtures-real`), checked against oracles that come from the boot's own binaries, not
from the log: the PCRs the guest read from its TPM, the Authenticode digests of the shim,
grub and kernel that were booted, the Secure Boot keys OVMF's variable store holds, the
certificate inside shim, and the command line grub was given.

The manifest holds the oracles as computed from the files when recording; when the
download cache is here (`.cache/realboot`), they are computed again from the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lightgate.sim.boot import FIXTURES_DIR
from lightgate.sim.realboot import esp
from lightgate.sim.realboot.shim_cert import vendor_certificate_fingerprint
from lightgate.sim.realboot.uefi_vars import secure_boot_keys
from verifier.appraisal import BootAppraiser
from verifier.evidence.claim_names import flatten
from verifier.evidence.claims import extract_claims
from verifier.evidence.eventlog import parse_event_log, replay
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.pe import authenticode_digest
from verifier.evidence.tpm_structures import HashAlg
from verifier.evidence.uefi_signatures import parse_signature_lists
from verifier.golden.values import learn

RECORDED = FIXTURES_DIR / "recorded"
MODES = sorted(p.name for p in RECORDED.iterdir() if p.is_dir()) if RECORDED.is_dir() else []
CACHE = Path(__file__).resolve().parents[3] / ".cache" / "realboot" / "unpacked"

pytestmark = pytest.mark.skipif(not MODES, reason="no recorded boots (make fixtures-real)")


def load(mode: str) -> tuple[bytes, dict[str, dict[int, str]], dict[str, Any]]:
    folder = RECORDED / mode
    pcrs = json.loads((folder / "pcrs.json").read_text())["banks"]
    return (
        (folder / "eventlog.bin").read_bytes(),
        {bank: {int(pcr): value for pcr, value in values.items()} for bank, values in pcrs.items()},
        json.loads((folder / "manifest.json").read_text()),
    )


def quoted(pcrs: dict[str, dict[int, str]]) -> PcrValues:
    """The PCRs the guest read, as a quote over all of them would carry them."""
    return PcrValues(
        {
            HashAlg.from_name(bank): {pcr: bytes.fromhex(value) for pcr, value in values.items()}
            for bank, values in pcrs.items()
        }
    )


def claims_of_recording(mode: str) -> dict[str, Any]:
    raw, _, _ = load(mode)
    return dict(flatten(extract_claims(parse_event_log(raw))))


@pytest.mark.parametrize("mode", MODES)
def test_replay_equals_the_pcrs_the_guest_read_in_every_bank(mode: str) -> None:
    raw, pcrs, _ = load(mode)
    replayed = replay(parse_event_log(raw)).pcrs
    assert (
        {bank.bank_name for bank in replayed}
        == set(pcrs)
        == {
            "sha1",
            "sha256",
            "sha384",
            "sha512",
        }
    )
    for bank, values in replayed.items():
        for pcr, value in values.items():
            assert value.hex() == pcrs[bank.bank_name][pcr], (bank.bank_name, pcr)
    # Every PCR the firmware, shim and grub measure is in the log (10 is the kernel's IMA).
    logged = set(next(iter(replayed.values())))
    assert logged == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}


@pytest.mark.parametrize("mode", MODES)
def test_the_verifier_accepts_the_log_against_those_pcrs(mode: str) -> None:
    raw, pcrs, _ = load(mode)
    boot = BootAppraiser().appraise("vm", raw, quoted(pcrs), [])
    assert boot.integrity_failures == ()
    assert boot.findings == ()


@pytest.mark.parametrize("mode", MODES)
def test_the_boot_chain_is_the_authenticode_digests_of_the_binaries_booted(mode: str) -> None:
    _, _, manifest = load(mode)
    digests = manifest["oracles"]["authenticode_sha256"]
    claims = claims_of_recording(mode)
    chain = [digest.removeprefix("sha256:") for digest in claims["boot-chain"]]
    if manifest["secure_boot"]:
        # Firmware measures shim and grub; shim verifies the kernel grub hands it and
        # measures it (it shows twice: shim's verify and the stub's LoadImage).
        assert chain == [digests["shim"], digests["grub"], digests["kernel"], digests["kernel"]]
        assert claims["boot-chain.kernel"] == f"sha256:{digests['kernel']}"
    else:
        # Nothing verifies the kernel: firmware measures shim and grub only.
        assert chain == [digests["shim"], digests["grub"]]


@pytest.mark.parametrize("mode", MODES)
def test_secure_boot_keys_are_those_ovmfs_variables_hold(mode: str) -> None:
    _, _, manifest = load(mode)
    keys = manifest["oracles"]["secure_boot_keys_sha256"]
    claims = claims_of_recording(mode)
    assert claims["secure-boot.enabled"] is manifest["secure_boot"]
    if not manifest["secure_boot"]:
        assert keys == {}  # OVMF_VARS_4M.fd enrols nothing
        assert claims["secure-boot.db"] == ()
        return
    for name in ("PK", "KEK", "db", "dbx"):
        assert list(claims[f"secure-boot.{name.lower()}"]) == keys[name], name


@pytest.mark.parametrize("mode", [m for m in MODES if m == "sb-on"])
def test_shim_trusts_the_certificate_inside_shim(mode: str) -> None:
    _, _, manifest = load(mode)
    vendor = manifest["oracles"]["shim_vendor_certificate_sha256"]
    claims = claims_of_recording(mode)
    # shim 16 measures its built-in certificate as part of MokListRT (PCR 14) and, when it
    # verified grub with it, as the PCR 7 authority "MokListRT".
    assert vendor in claims["shim.mok-authorities"]


@pytest.mark.parametrize("mode", MODES)
def test_the_kernel_command_line_is_the_one_grub_was_given(mode: str) -> None:
    _, _, manifest = load(mode)
    claims = claims_of_recording(mode)
    assert claims["kernel.cmdline"] == esp.KERNEL_CMDLINE == manifest["kernel_cmdline"]
    assert manifest["guest_cmdline"] == f"BOOT_IMAGE={esp.KERNEL_PATH} {esp.KERNEL_CMDLINE}"


def test_golden_values_of_one_mode_refuse_the_other_naming_secure_boot() -> None:
    if set(MODES) != {"sb-on", "sb-off"}:
        pytest.skip("needs both recordings")
    on_raw, on_pcrs, _ = load("sb-on")
    off_raw, off_pcrs, _ = load("sb-off")
    golden = learn([extract_claims(parse_event_log(on_raw))], "sb-on")
    accepted = BootAppraiser().appraise("vm", on_raw, quoted(on_pcrs), [golden])
    assert accepted.golden == "sb-on"
    refused = BootAppraiser().appraise("vm", off_raw, quoted(off_pcrs), [golden])
    assert refused.golden is None
    deviating = {d.claim for d in refused.outcome.deviations} if refused.outcome else set()
    assert "secure-boot.enabled" in deviating


# --- the oracles themselves, from the files (when the download cache is here) ------------


def _cached(pattern: str) -> Path:
    found = sorted(CACHE.glob(pattern))
    if not found:
        pytest.skip(f"no {pattern} in {CACHE} (make fixtures-real downloads it)")
    return found[-1]


@pytest.mark.parametrize("mode", MODES)
def test_the_manifests_oracles_are_what_the_files_say(mode: str) -> None:
    _, _, manifest = load(mode)
    oracles = manifest["oracles"]
    shim = _cached("shim-signed_*/usr/lib/shim/shimx64.efi.signed").read_bytes()
    grub = _cached("grub-efi-amd64-signed_*/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
    kernel = _cached("linux-image-*-cloud-amd64_*/boot/vmlinuz-*")
    vars_file = _cached(f"ovmf_*/usr/share/OVMF/{manifest['firmware']['vars']}")
    assert oracles["authenticode_sha256"] == {
        "shim": authenticode_digest(shim).hex(),
        "grub": authenticode_digest(grub.read_bytes()).hex(),
        "kernel": authenticode_digest(kernel.read_bytes()).hex(),
    }
    assert oracles["shim_vendor_certificate_sha256"] == vendor_certificate_fingerprint(shim)
    assert oracles["secure_boot_keys_sha256"] == {
        name: [entry.fingerprint_sha256 for entry in parse_signature_lists(data)]
        for name, data in secure_boot_keys(vars_file.read_bytes()).items()
    }

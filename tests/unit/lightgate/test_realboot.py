"""The pure parts of the real-boot recorder: cpio, ESP config, evidence parsing, replay check."""

from __future__ import annotations

import base64
import gzip
import hashlib
import stat
from pathlib import Path

import pytest

from lightgate.sim.realboot import esp, initramfs
from lightgate.sim.realboot.record import (
    BEGIN,
    END,
    Evidence,
    EvidenceError,
    check_replay,
    parse_evidence,
    reset_value,
)
from verifier.evidence.eventlog import parse_event_log, replay

FIXTURE_LOG = Path(__file__).parents[3] / "firmware-fixtures" / "good.bin"
BUSYBOX = b"\x7fELF" + bytes(range(256)) * 7


def read_newc(archive: bytes) -> list[tuple[str, int, bytes, int]]:
    """(name, mode, data, mtime) of every member, checking the newc framing."""
    members: list[tuple[str, int, bytes, int]] = []
    offset = 0
    while True:
        header = archive[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = offset + 110
        name = archive[name_start : name_start + namesize - 1].decode()
        assert archive[name_start + namesize - 1] == 0
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        assert data_start % 4 == 0
        data = archive[data_start : data_start + filesize]
        offset = data_start + filesize + (-filesize % 4)
        assert fields[2] == fields[3] == 0  # uid, gid
        if name == initramfs.TRAILER:
            assert offset == len(archive)
            return members
        members.append((name, fields[1], data, fields[5]))


def test_newc_archive_round_trips_with_fixed_metadata() -> None:
    archive = initramfs.newc_archive(initramfs.initramfs_entries(BUSYBOX))
    members = read_newc(archive)
    names = [name for name, *_ in members]
    assert names == ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "dev/null",
                     "init", "newroot", "proc", "sys", "tmp"]  # fmt: skip
    by_name = {name: (mode, data, mtime) for name, mode, data, mtime in members}
    assert by_name["bin/busybox"][1] == BUSYBOX
    assert stat.S_ISLNK(by_name["bin/sh"][0]) and by_name["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(by_name["dev/console"][0])
    assert by_name["init"][1].decode() == initramfs.INIT_SCRIPT
    assert by_name["init"][0] & 0o111
    assert all(mtime == 0 for *_, mtime in members)


def test_initramfs_is_byte_identical_across_builds() -> None:
    first = initramfs.build_initramfs(BUSYBOX)
    assert first == initramfs.build_initramfs(BUSYBOX)
    assert first[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME
    assert gzip.decompress(first) == initramfs.newc_archive(initramfs.initramfs_entries(BUSYBOX))
    assert first != initramfs.build_initramfs(BUSYBOX + b"x")


def test_init_script_writes_to_the_evidence_port_and_powers_off() -> None:
    script = initramfs.INIT_SCRIPT
    assert script.startswith("#!/bin/busybox sh\n")
    assert f"out={initramfs.EVIDENCE_PORT}" in script
    assert BEGIN in script and END in script
    assert "binary_bios_measurements" in script
    assert script.rstrip().endswith("poweroff -f")


def test_grub_cfg_uses_the_one_kernel_command_line() -> None:
    assert f"linuxefi {esp.KERNEL_PATH} {esp.KERNEL_CMDLINE}\n" in esp.GRUB_CFG
    assert f"initrdefi {esp.INITRD_PATH}\n" in esp.GRUB_CFG
    assert esp.GRUB_CFG_PATH == "/EFI/debian/grub.cfg"


def frame(log: bytes, pcr_lines: list[str], *, size: int | None = None) -> bytes:
    encoded = base64.encodebytes(log).decode()
    lines = [
        "OVMF noise before the frame",
        BEGIN,
        "UNAME 6.1.0-56-cloud-amd64",
        f"CMDLINE BOOT_IMAGE=/vmlinuz {esp.KERNEL_CMDLINE}",
        f"EVENTLOG BEGIN {len(log) if size is None else size} {hashlib.sha256(log).hexdigest()}",
        *encoded.splitlines(),
        "EVENTLOG END",
        *pcr_lines,
        END,
        "after",
    ]
    return "\r\n".join(lines).encode()


def test_parse_evidence_reads_the_frame() -> None:
    log = bytes(range(200)) * 3
    evidence = parse_evidence(
        frame(
            log,
            ["PCR sha256 7 " + "AB" * 32, "PCR sha1 0 " + "00" * 20, "PCR sha256 0 " + "cd" * 32],
        )
    )
    assert evidence.eventlog == log
    assert evidence.pcrs == {"sha256": {7: "ab" * 32, 0: "cd" * 32}, "sha1": {0: "00" * 20}}
    assert evidence.cmdline.endswith(esp.KERNEL_CMDLINE)
    assert evidence.uname == "6.1.0-56-cloud-amd64"
    assert evidence.pcrs_json() == {
        "banks": {"sha1": {"0": "00" * 20}, "sha256": {"0": "cd" * 32, "7": "ab" * 32}}
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"no frame at all", "no complete"),
        (frame(b"log", ["PCR sha256 7 " + "00" * 32], size=4), "arrived as 3 bytes"),
        (frame(b"log", ["PCR sha256 x 00"]), "bad PCR line"),
        (frame(b"log", ["PCR sha256 7 zz"]), "bad PCR value"),
        (frame(b"log", []), "no PCRs"),
        (f"{BEGIN}\nPCR sha1 0 {'00' * 20}\n{END}\n".encode(), "no event log"),
        (f"{BEGIN}\nEVENTLOG BEGIN 3 00\nAAAA\n{END}\n".encode(), "without EVENTLOG END"),
        (frame(b"log", ["PCR sha1 0 00", "garbage"]), "unexpected line"),
    ],
)
def test_parse_evidence_refuses_damaged_output(raw: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        parse_evidence(raw)


def fixture_evidence() -> Evidence:
    raw = FIXTURE_LOG.read_bytes()
    replayed = replay(parse_event_log(raw)).pcrs
    pcrs: dict[str, dict[int, str]] = {}
    for bank, values in replayed.items():
        size = bank.digest_size
        pcrs[bank.bank_name] = {n: reset_value(n, size) for n in range(24)}
        pcrs[bank.bank_name].update({n: v.hex() for n, v in values.items()})
    return Evidence(eventlog=raw, pcrs=pcrs)


def test_check_replay_matches_every_bank() -> None:
    evidence = fixture_evidence()
    check = check_replay(evidence)
    assert check.ok, check.to_json()
    assert set(check.matched) == set(evidence.pcrs)
    assert not check.unlogged


def test_check_replay_reports_mismatches_unlogged_pcrs_and_missing_banks() -> None:
    evidence = fixture_evidence()
    bank = sorted(evidence.pcrs)[0]
    logged = check_replay(evidence).matched[bank]
    evidence.pcrs[bank][logged[0]] = "11" * (len(evidence.pcrs[bank][logged[0]]) // 2)
    unlogged = next(n for n in range(17) if n not in logged)
    evidence.pcrs[bank][unlogged] = "22" * (len(evidence.pcrs[bank][unlogged]) // 2)
    evidence.pcrs["sm3_256"] = {0: "00" * 32}
    check = check_replay(evidence)
    assert not check.ok
    assert check.mismatched == {bank: [logged[0]]}
    assert check.unlogged == {bank: [unlogged]}
    assert check.missing_banks == ["sm3_256"]
    assert check.to_json()["ok"] is False


def test_reset_values() -> None:
    assert reset_value(0, 2) == "0000"
    assert reset_value(17, 2) == "ffff"
    assert reset_value(23, 2) == "0000"


def test_gpt_is_fixed_and_self_consistent() -> None:
    import struct
    import zlib

    head, tail, offset, size = esp.gpt()
    assert (head, tail) == esp.gpt()[:2]
    assert len(head) == 34 * esp.SECTOR and len(tail) == 33 * esp.SECTOR
    assert head[510:512] == b"\x55\xaa" and head[450] == 0xEE
    primary, backup = head[512:1024], tail[-512:]
    for header in (primary, backup):
        assert header[:8] == b"EFI PART"
        fields = bytearray(header[:92])
        crc = struct.unpack_from("<I", fields, 16)[0]
        fields[16:20] = bytes(4)
        assert zlib.crc32(bytes(fields)) == crc
        assert struct.unpack_from("<I", header, 88)[0] == zlib.crc32(head[1024:])
    assert head[1024:] == tail[:-512]
    assert head[1024:1040] == esp.ESP_TYPE_GUID.bytes_le
    assert offset == esp.ESP_FIRST_LBA * esp.SECTOR
    assert offset + size == esp.DISK_SIZE - 33 * esp.SECTOR


def test_what_is_not_a_variable_store_is_refused() -> None:
    from lightgate.sim.realboot.uefi_vars import VariableStoreMalformed, read_variables

    with pytest.raises(VariableStoreMalformed, match="_FVH"):
        read_variables(bytes(4096))
    volume = bytearray(4096)
    volume[40:44] = b"_FVH"
    volume[48:50] = (72).to_bytes(2, "little")
    with pytest.raises(VariableStoreMalformed, match="authenticated variable store"):
        read_variables(bytes(volume))


def test_a_pe_without_a_vendor_certificate_is_not_a_shim() -> None:
    from lightgate.sim.realboot.shim_cert import vendor_certificate
    from verifier.evidence.pe import PeImageMalformed

    with pytest.raises(PeImageMalformed):
        vendor_certificate(b"MZ" + bytes(200))


def test_guest_verdicts_follow_the_scenario() -> None:
    from lightgate.sim.realboot.vm import VM_SCENARIOS, _verdict

    good, changed = VM_SCENARIOS["vm-good"], VM_SCENARIOS["vm-changed-cmdline"]
    assert _verdict(good, "vm-00", "affirming", None, (), 60.0, "").as_expected
    assert not _verdict(good, "vm-00", "none", "no attestation", (), None, "").as_expected
    refused = "kernel.cmdline: console=ttyS0 panic=-1 lightgate.changed=1 is not among ..."
    assert _verdict(
        changed, "vm-01", "contraindicated", refused, ("golden-values",), 61.0, ""
    ).as_expected
    # Refused for another reason is not the scenario's refusal.
    other = "secure-boot.enabled: Secure Boot is off"
    assert not _verdict(
        changed, "vm-01", "contraindicated", other, ("secure-boot",), 61.0, ""
    ).as_expected
    assert changed.cmdline != good.cmdline


def test_unknown_vm_scenarios_are_refused_by_name() -> None:
    from lightgate.sim.realboot.vm import check_plan

    with pytest.raises(ValueError, match=r"unknown VM scenario.*vm-bad"):
        check_plan(["vm-good", "vm-bad"])


def test_the_guest_image_leaves_out_what_the_agent_never_imports() -> None:
    from lightgate.sim.realboot.rootfs import _excluded

    for name in (
        "mypy",
        "mypy-1.13.0.dist-info",
        "grpc_tools",
        "sqlalchemy",
        "__editable__.x.pth",
        "pytest",
        "grpc",
        "grpcio-1.85.1.dist-info",
        "tpm2_pytss",
        "pydantic",
    ):
        assert _excluded(name), name
    for name in ("cryptography", "yaml", "h2", "hpack", "hyperframe", "google", "protobuf"):
        assert not _excluded(name), name


@pytest.mark.parametrize(
    "line",
    ["EVENTLOG BEGIN " + "9" * 5000 + " ab", "EVENTLOG BEGIN ١٢ ab"],
)
def test_hostile_evidence_numbers_are_refused_cheaply(line: str) -> None:
    from lightgate.sim.realboot.record import EvidenceError, parse_evidence

    raw = f"LIGHTGATE-EVIDENCE BEGIN\n{line}\nEVENTLOG END\nLIGHTGATE-EVIDENCE END\n"
    with pytest.raises(EvidenceError, match="bad EVENTLOG header"):
        parse_evidence(raw.encode())

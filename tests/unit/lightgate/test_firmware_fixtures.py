"""The measured-boot fixtures: current, parseable, shaped as the specification and real
firmware shape them, and different from the good boot exactly where a variant should be."""

from __future__ import annotations

import hashlib
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from lightgate.sim.firmware import (
    FIXTURES_DIR,
    BootDescriptionError,
    FixturesOutdated,
    build_event_log,
    build_fixtures,
    load_boot,
    write_fixtures,
)
from lightgate.sim.firmware.__main__ import main
from lightgate.sim.firmware.certificates import fixture_certificate, fixture_key
from lightgate.sim.firmware.uefi import (
    EFI_CERT_X509_GUID,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    EFI_SYSTEM_PARTITION,
    LINUX_FILESYSTEM_DATA,
    SHIM_LOCK_GUID,
)
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import Event, EventLog, LogFormat, parse_event_log, replay
from verifier.evidence.tpm_structures import HashAlg

FIXTURES = ("good", "tampered-kernel", "secure-boot-off", "cmdline-changed")
GOOD_YAML = FIXTURES_DIR / "boots" / "good.yaml"


@pytest.fixture(scope="module")
def logs() -> dict[str, EventLog]:
    return {name: parse_event_log((FIXTURES_DIR / f"{name}.bin").read_bytes()) for name in FIXTURES}


def _events(log: EventLog, event_type: EventType) -> list[Event]:
    return [event for event in log.events if event.event_type == event_type]


def _variable(event: Event) -> tuple[uuid.UUID, str, bytes]:
    """UEFI_VARIABLE_DATA: (VariableName, UnicodeName, VariableData), lengths checked."""
    guid = uuid.UUID(bytes_le=event.data[:16])
    name_length, data_length = struct.unpack_from("<QQ", event.data, 16)
    name_end = 32 + 2 * name_length
    assert name_end + data_length == len(event.data), f"event {event.number}: lengths"
    return guid, event.data[32:name_end].decode("utf-16-le"), event.data[name_end:]


def _changed_pcrs(a: EventLog, b: EventLog) -> set[int]:
    ours, theirs = replay(a).pcrs, replay(b).pcrs
    changed: set[int] = set()
    for bank in a.banks:
        for pcr in set(ours[bank]) | set(theirs[bank]):
            if ours[bank].get(pcr) != theirs[bank].get(pcr):
                changed.add(pcr)
    return changed


# Committed and current.


def test_committed_fixtures_are_current() -> None:
    write_fixtures(check=True)
    for path, log in build_fixtures().items():
        assert path.read_bytes() == log, f"{path.name} is stale: run `make fixtures`"


def test_every_description_has_a_fixture_and_nothing_else() -> None:
    assert {path.stem for path in FIXTURES_DIR.glob("*.bin")} == set(FIXTURES)
    assert {path.stem for path in (FIXTURES_DIR / "boots").glob("*.yaml")} == set(FIXTURES)


def test_cli_check_reports_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert "current:" in capsys.readouterr().out


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parses_as_crypto_agile(name: str, logs: dict[str, EventLog]) -> None:
    log = logs[name]
    assert log.format is LogFormat.CRYPTO_AGILE
    assert log.banks == (HashAlg.SHA1, HashAlg.SHA256)
    assert log.uintn_size == 8
    assert log.startup_locality is None  # OVMF logs no StartupLocality


# The good boot's event sequence (PCR, type), as OVMF + shim 15.8 + grub 2.06 log it.

CONFIG = "EV_EFI_VARIABLE_DRIVER_CONFIG"
AUTHORITY = "EV_EFI_VARIABLE_AUTHORITY"
APPLICATION = "EV_EFI_BOOT_SERVICES_APPLICATION"
GOOD_SEQUENCE = [
    (0, "EV_S_CRTM_VERSION"),
    (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
    (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
    *[(7, CONFIG)] * 5,  # SecureBoot, PK, KEK, db, dbx
    (7, "EV_SEPARATOR"),
    (2, "EV_EFI_BOOT_SERVICES_DRIVER"),
    *[(1, "EV_EFI_VARIABLE_BOOT")] * 3,  # BootOrder, Boot0001, Boot0002
    (4, "EV_EFI_ACTION"),  # Calling EFI Application from Boot Option
    *[(pcr, "EV_SEPARATOR") for pcr in range(7)],
    (7, AUTHORITY),  # db: the certificate that verified shim
    (5, "EV_EFI_GPT_EVENT"),
    (4, APPLICATION),  # shim
    (14, "EV_IPL"),  # MokList
    (14, "EV_IPL"),  # MokListX
    (7, AUTHORITY),  # SbatLevel
    (14, "EV_IPL"),  # MokListTrusted
    (7, AUTHORITY),  # Shim: the vendor certificate that verified grub
    (4, APPLICATION),  # grub
    (9, "EV_IPL"),  # grub.cfg
    *[(8, "EV_IPL")] * 8,  # grub_cmd: ...
    (8, "EV_IPL"),  # grub_cmd: linux ...
    (9, "EV_IPL"),  # the kernel file
    (4, APPLICATION),  # the kernel image
    (8, "EV_IPL"),  # kernel_cmdline: ...
    (8, "EV_IPL"),  # grub_cmd: initrd ...
    (9, "EV_IPL"),  # the initrd file
    (5, "EV_EFI_ACTION"),  # Exit Boot Services Invocation
    (5, "EV_EFI_ACTION"),  # Exit Boot Services Returned with Success
]


def test_good_event_sequence(logs: dict[str, EventLog]) -> None:
    assert [(event.pcr, event.type_name) for event in logs["good"].events[1:]] == GOOD_SEQUENCE


# Digests.

HASH_OF_DATA = {
    EventType.EV_SEPARATOR,
    EventType.EV_EFI_ACTION,
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
    EventType.EV_EFI_VARIABLE_AUTHORITY,
    EventType.EV_EFI_GPT_EVENT,
    EventType.EV_S_CRTM_VERSION,
}


@pytest.mark.parametrize("name", FIXTURES)
def test_digests_the_spec_defines_as_hash_of_data(name: str, logs: dict[str, EventLog]) -> None:
    log = logs[name]
    checked = [event for event in log.events[1:] if event.event_type in HASH_OF_DATA]
    assert len(checked) >= 15
    for event in checked:
        for bank in log.banks:
            assert event.digest(bank) == bank.digest(event.data), (
                f"{name} event {event.number} {event.type_name} PCR{event.pcr} {bank.bank_name}"
            )


def test_separators_and_actions_have_the_spec_data(logs: dict[str, EventLog]) -> None:
    log = logs["good"]
    assert {event.data for event in _events(log, EventType.EV_SEPARATOR)} == {bytes(4)}
    assert [event.data for event in _events(log, EventType.EV_EFI_ACTION)] == [
        b"Calling EFI Application from Boot Option",
        b"Exit Boot Services Invocation",
        b"Exit Boot Services Returned with Success",
    ]
    (version,) = _events(log, EventType.EV_S_CRTM_VERSION)
    assert version.data == "2022.11-6+deb12u1\0".encode("utf-16-le")


@pytest.mark.parametrize("name", FIXTURES)
def test_boot_variable_digests_hash_the_variable_data(name: str, logs: dict[str, EventLog]) -> None:
    # edk2 (OVMF) hashes only VariableData for EV_EFI_VARIABLE_BOOT; every OVMF log in
    # the shared set does.
    log = logs[name]
    for event in _events(log, EventType.EV_EFI_VARIABLE_BOOT):
        guid, _, value = _variable(event)
        assert guid == EFI_GLOBAL_VARIABLE
        for bank in log.banks:
            assert event.digest(bank) == bank.digest(value)


@pytest.mark.parametrize("name", FIXTURES)
def test_grub_strings_hash_without_prefix_or_nul(name: str, logs: dict[str, EventLog]) -> None:
    log = logs[name]
    strings = [event for event in log.events if event.pcr == 8]
    assert strings
    for event in strings:
        assert event.event_type == EventType.EV_IPL and event.data.endswith(b"\0")
        text = event.data[:-1]
        prefix = b"grub_cmd: " if text.startswith(b"grub_cmd: ") else b"kernel_cmdline: "
        assert text.startswith(prefix)
        for bank in log.banks:
            assert event.digest(bank) == bank.digest(text[len(prefix) :])


def test_kernel_command_line_matches_the_linux_command(logs: dict[str, EventLog]) -> None:
    texts = [event.data[:-1].decode() for event in logs["good"].events if event.pcr == 8]
    linux = next(text for text in texts if text.startswith("grub_cmd: linux "))
    cmdline = next(text for text in texts if text.startswith("kernel_cmdline: "))
    assert linux.removeprefix("grub_cmd: linux ") == cmdline.removeprefix("kernel_cmdline: ")
    assert cmdline == (
        "kernel_cmdline: /boot/vmlinuz-6.1.0-28-amd64 "
        "root=UUID=6d931c60-2c25-4604-b06d-79c34630e16e ro quiet"
    )


def test_binary_digests_are_hashes_of_content() -> None:
    description = load_boot(GOOD_YAML)
    log = parse_event_log(build_event_log(description))
    shim, grub, kernel = _events(log, EventType.EV_EFI_BOOT_SERVICES_APPLICATION)
    chain = description.boot_chain
    for event, content in ((shim, chain.shim.content), (grub, chain.grub.content)):
        assert event.digest(HashAlg.SHA256) == hashlib.sha256(content.encode()).digest()
    assert kernel.digest(HashAlg.SHA1) == hashlib.sha1(chain.kernel.content.encode()).digest()
    kernel_file = next(e for e in log.events if e.pcr == 9 and e.data.startswith(b"/boot/vmlinuz"))
    assert kernel_file.digests == kernel.digests


# Structures.


def test_variable_events_are_well_formed(logs: dict[str, EventLog]) -> None:
    log = logs["good"]
    config = [_variable(event) for event in _events(log, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)]
    assert [(guid, name) for guid, name, _ in config] == [
        (EFI_GLOBAL_VARIABLE, "SecureBoot"),
        (EFI_GLOBAL_VARIABLE, "PK"),
        (EFI_GLOBAL_VARIABLE, "KEK"),
        (EFI_IMAGE_SECURITY_DATABASE, "db"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
    ]
    assert config[0][2] == b"\x01"
    authorities = [_variable(event) for event in _events(log, EventType.EV_EFI_VARIABLE_AUTHORITY)]
    assert [(guid, name) for guid, name, _ in authorities] == [
        (EFI_IMAGE_SECURITY_DATABASE, "db"),
        (SHIM_LOCK_GUID, "SbatLevel"),
        (SHIM_LOCK_GUID, "Shim"),
    ]
    assert authorities[1][2] == b"sbat,1,2023012900\nshim,2\ngrub,3\ngrub.debian,4\n"
    boot = [_variable(event)[1] for event in _events(log, EventType.EV_EFI_VARIABLE_BOOT)]
    assert boot == ["BootOrder", "Boot0001", "Boot0002"]


def test_dbx_is_one_sha256_signature_list(logs: dict[str, EventLog]) -> None:
    dbx = _variable(_events(logs["good"], EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)[4])[2]
    sig_type = uuid.UUID(bytes_le=dbx[:16])
    list_size, header_size, sig_size = struct.unpack_from("<III", dbx, 16)
    assert str(sig_type) == "c1c41626-504c-4092-aca9-41f936934328"
    assert (list_size, header_size, sig_size) == (len(dbx), 0, 48)
    assert dbx[28 + 16 : 28 + 48].hex() == (
        "ec04ec157f13f1712494b7d1e17c985ae1eef8262c03cae00064c508527d533e"
    )


def test_gpt_event_is_a_valid_partition_table(logs: dict[str, EventLog]) -> None:
    (gpt,) = _events(logs["good"], EventType.EV_EFI_GPT_EVENT)
    header = gpt.data[:92]
    assert header[:8] == b"EFI PART"
    revision, size, crc = struct.unpack_from("<III", header, 8)
    assert (revision, size) == (0x00010000, 92)
    assert zlib.crc32(header[:16] + bytes(4) + header[20:]) == crc
    (count,) = struct.unpack_from("<Q", gpt.data, 92)
    assert count == 2 and len(gpt.data) == 100 + 128 * count
    types = [uuid.UUID(bytes_le=gpt.data[100 + 128 * i : 116 + 128 * i]) for i in range(2)]
    assert types == [EFI_SYSTEM_PARTITION, LINUX_FILESYSTEM_DATA]


def _device_path_nodes(path: bytes) -> Iterator[tuple[int, int, bytes]]:
    offset = 0
    while offset < len(path):
        node_type, sub_type, length = struct.unpack_from("<BBH", path, offset)
        assert length >= 4
        yield node_type, sub_type, path[offset + 4 : offset + length]
        offset += length
    assert offset == len(path)


def test_image_load_events_carry_their_device_paths(logs: dict[str, EventLog]) -> None:
    log = logs["good"]
    images = [
        *_events(log, EventType.EV_EFI_BOOT_SERVICES_DRIVER),
        *_events(log, EventType.EV_EFI_BOOT_SERVICES_APPLICATION),
    ]
    files: list[str | None] = []
    for event in images:
        _location, _length, _link, path_length = struct.unpack_from("<QQQQ", event.data)
        path = event.data[32:]
        assert path_length == len(path)
        nodes = list(_device_path_nodes(path))
        if nodes:
            assert nodes[-1][:2] == (0x7F, 0xFF)  # End of Hardware Device Path
            files.append(nodes[-2][2].decode("utf-16-le").rstrip("\0"))
        else:
            files.append(None)  # the kernel: loaded from memory, as real logs show
    assert files == [
        "\\EFI\\drivers\\VirtioGpuDxe.efi",
        "\\EFI\\debian\\shimx64.efi",
        "\\EFI\\debian\\grubx64.efi",
        None,
    ]


# Variants.


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("tampered-kernel", {4, 9}), ("secure-boot-off", {7}), ("cmdline-changed", {8})],
)
def test_variant_differs_from_good_only_where_it_should(
    variant: str, expected: set[int], logs: dict[str, EventLog]
) -> None:
    assert _changed_pcrs(logs["good"], logs[variant]) == expected


def test_secure_boot_off_measures_zero_and_no_certificate_authorities(
    logs: dict[str, EventLog],
) -> None:
    log = logs["secure-boot-off"]
    secure_boot = _variable(_events(log, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)[0])
    assert secure_boot[1:] == ("SecureBoot", b"\x00")
    # No image is verified, so neither db nor shim logs a certificate.  SbatLevel stays:
    # shim measures it whether or not Secure Boot is on (keylime's Secure-Boot-off log).
    authorities = [_variable(e)[1] for e in _events(log, EventType.EV_EFI_VARIABLE_AUTHORITY)]
    assert authorities == ["SbatLevel"]


# Certificates.


def _x509_database(value: bytes) -> list[x509.Certificate]:
    certificates, offset = [], 0
    while offset < len(value):
        sig_type = uuid.UUID(bytes_le=value[offset : offset + 16])
        list_size, header_size, sig_size = struct.unpack_from("<III", value, offset + 16)
        assert sig_type == EFI_CERT_X509_GUID and header_size == 0
        entries = value[offset + 28 : offset + list_size]
        for start in range(0, len(entries), sig_size):
            der = entries[start + 16 : start + sig_size]
            certificates.append(x509.load_der_x509_certificate(der))
        offset += list_size
    assert offset == len(value)
    return certificates


def _common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_secure_boot_certificates_parse_and_chain(logs: dict[str, EventLog]) -> None:
    variables = {
        _variable(event)[1]: _variable(event)[2]
        for event in _events(logs["good"], EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)
    }
    expected = {
        "PK": ("Lightgate Fixture PK", "Lightgate Fixture PK"),
        "KEK": ("Lightgate Fixture KEK", "Lightgate Fixture PK"),
        "db": ("Lightgate Fixture UEFI CA", "Lightgate Fixture KEK"),
    }
    for variable, (subject, issuer) in expected.items():
        (certificate,) = _x509_database(variables[variable])
        assert _common_name(certificate.subject) == subject
        assert _common_name(certificate.issuer) == issuer
        issuer_key = fixture_key(issuer).public_key()
        assert isinstance(issuer_key, Ed25519PublicKey)
        issuer_key.verify(certificate.signature, certificate.tbs_certificate_bytes)


def test_authority_certificates_are_the_enrolled_ones(logs: dict[str, EventLog]) -> None:
    log = logs["good"]
    db_authority, _sbat, shim_authority = (
        _variable(event)[2] for event in _events(log, EventType.EV_EFI_VARIABLE_AUTHORITY)
    )
    # db: one EFI_SIGNATURE_DATA (owner, DER); Shim: the DER alone.
    db_value = _variable(_events(log, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)[3])[2]
    assert db_authority == db_value[28:]
    vendor = x509.load_der_x509_certificate(shim_authority)
    assert _common_name(vendor.subject) == "Lightgate Fixture Debian Secure Boot CA"


def test_certificate_der_is_deterministic() -> None:
    first = fixture_certificate("Lightgate Fixture KEK", "Lightgate Fixture PK")
    assert fixture_certificate("Lightgate Fixture KEK", "Lightgate Fixture PK") == first
    # Pinned: a new cryptography release that encoded differently would change every
    # fixture; this names the cause.
    assert hashlib.sha256(first).hexdigest() == (
        "1f6bcc7cfeb4101a488fa6c6f02314cb0370dcf908eaa035d37fa1e083abebfe"
    )
    assert fixture_certificate("Lightgate Fixture PK") != fixture_certificate("Other PK")


# Options the fixtures do not use.


def test_startup_locality_is_logged_first_and_sets_pcr0() -> None:
    good = load_boot(GOOD_YAML)
    log = parse_event_log(build_event_log(good.model_copy(update={"startup_locality": 3})))
    assert log.startup_locality == 3
    first = log.events[1]
    assert (first.pcr, first.event_type, first.data) == (
        0,
        EventType.EV_NO_ACTION,
        b"StartupLocality\x00\x03",
    )
    assert _changed_pcrs(parse_event_log(build_event_log(good)), log) == {0}


def test_banks_follow_the_description() -> None:
    good = load_boot(GOOD_YAML)
    banks = (HashAlg.SHA256, HashAlg.SHA384)
    log = parse_event_log(build_event_log(good.model_copy(update={"banks": banks})))
    assert log.banks == banks


def test_no_exit_boot_services_events_when_not_reached() -> None:
    good = load_boot(GOOD_YAML)
    log = parse_event_log(build_event_log(good.model_copy(update={"exit_boot_services": False})))
    assert _events(log, EventType.EV_EFI_ACTION)[-1].data.startswith(b"Calling")


# Bad descriptions give clear errors.


@pytest.fixture
def boots(tmp_path: Path) -> Path:
    folder = tmp_path / "boots"
    folder.mkdir()
    shutil.copy(GOOD_YAML, folder / "good.yaml")
    return folder


def _variant(boots: Path, body: str, name: str = "bad") -> Path:
    path = boots / f"{name}.yaml"
    path.write_text(f"extends: good\nname: {name}\ndescription: test\n{body}")
    return path


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("secure_boot: {colour: blue}\n", "colour"),
        ("secure_boot: {dbx_hashes: [xyz]}\n", "SHA-256"),
        ("shim: {mok_list_x: ['" + "g" * 64 + "']}\n", "SHA-256"),
        ("secure_boot: {db: [Nobody]}\n", "Nobody"),
        ("banks: [md5]\n", "md5"),
        ("boot_order: [7]\n", "Boot0007"),
        ("boot_chain: {shim: {path: EFI/shim.efi}}\n", "UEFI file path"),
        ("boot_chain: {grub: {signed_by: Lightgate Fixture PK}}\n", "vendor_cert"),
        ("secure_boot: {setup_mode: true}\n", "setup_mode"),
        ("startup_locality: 2\n", "startup_locality"),
    ],
)
def test_bad_description_is_a_clear_value_error(boots: Path, body: str, needle: str) -> None:
    path = _variant(boots, body)
    with pytest.raises(ValueError, match=needle) as caught:
        load_boot(path)
    assert isinstance(caught.value, BootDescriptionError)
    assert str(path) in str(caught.value)


def test_unreadable_documents_are_clear(boots: Path) -> None:
    (boots / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(BootDescriptionError, match="mapping"):
        load_boot(boots / "list.yaml")
    (boots / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(BootDescriptionError, match="cannot read"):
        load_boot(boots / "broken.yaml")
    with pytest.raises(BootDescriptionError, match="cannot read"):
        load_boot(_variant(boots, "", name="orphan").with_name("missing.yaml"))


def test_extends_cycles_and_missing_bases_are_refused(boots: Path) -> None:
    (boots / "a.yaml").write_text("extends: b\n")
    (boots / "b.yaml").write_text("extends: a\n")
    with pytest.raises(BootDescriptionError, match="extends itself"):
        load_boot(boots / "a.yaml")
    (boots / "c.yaml").write_text("extends: nowhere\n")
    with pytest.raises(BootDescriptionError, match=r"nowhere\.yaml"):
        load_boot(boots / "c.yaml")


def test_variant_merges_deeply(boots: Path) -> None:
    variant = load_boot(_variant(boots, "grub: {kernel_cmdline: quiet}\n", name="merged"))
    good = load_boot(boots / "good.yaml")
    assert variant.grub.kernel_cmdline == "quiet"
    assert variant.grub.kernel_path == good.grub.kernel_path
    assert variant.secure_boot == good.secure_boot


def test_write_then_check_in_a_scratch_folder(boots: Path) -> None:
    folder = boots.parent
    with pytest.raises(FixturesOutdated, match=r"good\.bin"):
        write_fixtures(check=True, directory=folder)
    assert write_fixtures(directory=folder) == [folder / "good.bin"]
    write_fixtures(check=True, directory=folder)
    (folder / "good.bin").write_bytes(b"stale")
    (folder / "gone.bin").write_bytes(b"")
    with pytest.raises(FixturesOutdated, match=r"good\.bin, gone\.bin"):
        write_fixtures(check=True, directory=folder)


def test_fixture_name_must_match_its_file(boots: Path) -> None:
    _variant(boots, "", name="renamed").write_text("extends: good\n")
    with pytest.raises(BootDescriptionError, match="stem"):
        build_fixtures(boots.parent)

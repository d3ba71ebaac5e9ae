"""`attest eventlog` and `attest golden` as a user runs them: exit codes, output, and one
`error:` line (never a traceback) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lightgate.cli import main
from lightgate.sim.boot import fixture_path
from verifier.evidence.eventlog import parse_event_log, replay

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "firmware-logs"
GOOD = fixture_path("good")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_replay_json_is_the_replay(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eventlog", "replay", str(GOOD), "--json")
    assert code == 0
    assert json.loads(out) == replay(parse_event_log(GOOD.read_bytes())).to_json()


def test_replay_of_a_real_log_starts_pcr0_at_its_locality(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = SHARED / "goeventlog__glinux-alex.bin"
    if not path.is_file():
        pytest.skip("shared firmware logs are not present")
    code, out, _ = run(capsys, "eventlog", "replay", str(path), "--json")
    banks = json.loads(out)["banks"]
    assert code == 0
    assert banks["sha1"]["0"] == "29d236609a5f9cc6912af44ba5f57b13a17c8a84"
    assert banks["sha256"]["0"] == (
        "0e5ea849d7647a1ac1becc096fee4df98f00f8015f934afadaab0b8aa20b38a5"
    )


def test_show_lists_every_event(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eventlog", "show", str(GOOD), "--json")
    document = json.loads(out)
    assert code == 0
    assert len(document["events"]) == len(parse_event_log(GOOD.read_bytes()).events)
    assert document["events"][0]["description"].startswith("Spec ID Event03")
    code, table, _ = run(capsys, "eventlog", "show", str(GOOD), "--pcr", "4")
    assert code == 0 and "EV_EFI_BOOT_SERVICES_APPLICATION" in table


def test_claims_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eventlog", "claims", str(GOOD), "--json")
    document = json.loads(out)
    assert code == 0
    assert document["named"]["secure-boot.enabled"] is True
    assert document["findings"] == []


@pytest.mark.parametrize("command", ["show", "replay", "claims"])
def test_malformed_log_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(b"this is not an event log at all\n")
    code, out, err = run(capsys, "eventlog", command, str(bogus))
    assert code == 1 and out == ""
    assert err.startswith("error: event-log-malformed: event 0 at byte 0")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_database_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "verifier.yaml"
    config.write_text(f"state_dir: {tmp_path / 'nowhere'}\n")
    code, _, err = run(capsys, "golden", "list", "-c", str(config))
    assert code == 1 and err.startswith("error: cannot open the verifier's database")
    assert err.count("\n") == 1


def test_missing_file_is_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "eventlog", "show", str(tmp_path / "nope.bin"))
    assert code == 1 and err.startswith("error: cannot read") and err.count("\n") == 1


def _learn(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> Path:
    target = tmp_path / f"{name}.yaml"
    code, _, err = run(
        capsys, "golden", "learn", "--name", name, "--log", str(fixture_path(name)),
        "-o", str(target), "--author", "tests",
    )  # fmt: skip
    assert code == 0, err
    return target


def test_learn_diff_export_import_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = _learn(capsys, tmp_path, "good")
    tampered = _learn(capsys, tmp_path, "tampered-kernel")
    assert "author: tests" in good.read_text()
    code, out, _ = run(capsys, "golden", "diff", str(good), str(tampered), "--json")
    changes = json.loads(out)["changes"]
    assert code == 0 and {c["claim"] for c in changes} == {
        "boot-chain",
        "boot-chain.kernel",
        "kernel.files",
    }

    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = tmp_path / "signer.pem"
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = tmp_path / "signer.pub.pem"
    public_pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    corim = tmp_path / "good.corim"
    code, _, err = run(
        capsys, "golden", "export", str(good), "--corim", "--key", str(key_pem), "-o", str(corim)
    )
    assert code == 0, err

    config = tmp_path / "verifier.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    code, _, err = run(capsys, "golden", "import", str(corim), "-c", str(config))
    assert code == 1 and "--trust" in err  # a CoRIM is never taken unsigned-checked
    code, out, err = run(
        capsys, "golden", "import", str(corim), "--trust", str(public_pem), "-c", str(config)
    )
    assert code == 0, err
    code, out, _ = run(capsys, "golden", "list", "-c", str(config), "--json")
    listed = json.loads(out)["golden_values"]
    assert [row["name"] for row in listed] == ["good"]
    assert listed[0]["source"] == "corim:good.corim"


def test_corim_signed_by_another_key_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = _learn(capsys, tmp_path, "good")
    signer, stranger = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    key_pem = tmp_path / "signer.pem"
    key_pem.write_bytes(
        signer.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    trusted = tmp_path / "stranger.pem"
    trusted.write_bytes(
        stranger.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    corim = tmp_path / "good.corim"
    assert run(capsys, "golden", "export", str(good), "--corim", "--key", str(key_pem))[0] == 0
    config = tmp_path / "verifier.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    (tmp_path / "state").mkdir()
    code, _, err = run(
        capsys, "golden", "import", str(corim), "--trust", str(trusted), "-c", str(config)
    )
    assert code == 1 and err.startswith("error: corim-signature")
    code, out, _ = run(capsys, "golden", "list", "-c", str(config), "--json")
    assert json.loads(out)["golden_values"] == []  # nothing was accepted


def test_golden_images_writes_an_allow_list_the_verifier_imports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from verifier.evidence.images import ImageRecord
    from verifier.golden.images import allow_list, judge_image
    from verifier.golden.values import from_yaml

    web = "sha256:" + "a1" * 32
    base = "sha256:" + "b0" * 32
    target = tmp_path / "prod-images.yaml"
    code, out, _ = run(
        capsys,
        "golden", "images", "--name", "prod-images",
        "--image", f"busybox:1.36@{web}", "--digest", base, "-o", str(target),
    )  # fmt: skip
    assert (code, out) == (0, f"wrote {target}\n")
    allowed = allow_list([from_yaml(target.read_text())])
    assert judge_image(
        ImageRecord("docker.io/library/busybox:latest", web, "docker"), allowed
    ).allowed
    assert judge_image(ImageRecord("other.example/x:1", base, "podman"), allowed).allowed
    assert not judge_image(ImageRecord("other.example/x:1", web, "podman"), allowed).allowed


@pytest.mark.parametrize(
    "argv",
    [
        ["--image", "busybox"],
        ["--image", "busybox@sha256:abc"],
        ["--digest", "sha1:" + "a" * 40],
        [],
    ],
)
def test_golden_images_refuses_what_is_not_an_image_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, "golden", "images", "--name", "x", *argv)
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1

"""Configuration: file, environment over file, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightgate.config import AgentConfig, ConfigError, VerifierConfig, load_config
from verifier.evidence.tpm_structures import HashAlg


def test_defaults_are_closed(tmp_path: Path) -> None:
    config = load_config(VerifierConfig, None)
    assert config.enrollment.mode == "ek-chain" and config.enrollment.trust_store is None
    assert config.attestation.selection().banks[0].bank is HashAlg.SHA256


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("listen: 127.0.0.1:7000\nenrollment:\n  mode: allowlist\n")
    monkeypatch.setenv("LIGHTGATE_VERIFIER_LISTEN", "127.0.0.1:7001")
    config = load_config(VerifierConfig, path)
    assert config.listen == "127.0.0.1:7001"
    assert config.enrollment.mode == "allowlist"
    assert config.database() == "sqlite:////var/lib/lightgate/verifier.db"


def test_nested_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTGATE_AGENT_TCTI", "swtpm:host=127.0.0.1,port=2321")
    monkeypatch.setenv("LIGHTGATE_VERIFIER_ATTESTATION__NONCE_TTL_SECONDS", "5")
    assert load_config(AgentConfig, None).tcti.startswith("swtpm:")
    assert load_config(VerifierConfig, None).attestation.nonce_ttl_seconds == 5


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ("enrollment:\n  mode: anyone\n", "mode"),
        ("attestation:\n  pcr_selection: {md5: [0]}\n", "md5"),
        ("attestation:\n  pcr_selection: {sha256: [99]}\n", "0-23"),
        ("unknown_key: 1\n", "unknown_key"),
        ("- a list\n", "mapping"),
        ("listen: [unclosed\n", "cannot read"),
    ],
)
def test_invalid_configuration_is_a_config_error(
    tmp_path: Path, document: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError, match=needle):
        load_config(VerifierConfig, path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(AgentConfig, tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("selection", "needle"),
    [("{}", "at least one bank"), ("{sha256: [0], SHA256: [1]}", "named twice")],
)
def test_pcr_selection_must_quote_something_once(
    tmp_path: Path, selection: str, needle: str
) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(f"attestation:\n  pcr_selection: {selection}\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(VerifierConfig, path)

"""The agent's configuration without pydantic: same defaults, coercion, bounds and
sources as the pydantic model it replaced, and nothing heavy imported."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lightgate import config as verifier_config
from lightgate.agent_config import (
    DEFAULT_RUNTIME_PCR,
    AgentConfig,
    ConfigError,
    ContainerSource,
    load_agent_config,
)


def test_defaults() -> None:
    config = AgentConfig()
    assert config.node_id == socket.gethostname()
    assert config.verifier == "127.0.0.1:50051"
    assert config.tls_ca is None and config.tls_server_name is None
    assert config.tcti == "device:/dev/tpmrm0"
    assert (config.ek_kind, config.ak_algorithm) == ("rsa", "ecc")
    assert config.state_dir == Path("/var/lib/lightgate-attestor")
    assert config.join_token is None and config.source_address is None
    assert config.interval_seconds == 30.0 and config.rpc_timeout_seconds == 10.0
    assert (config.backoff_initial_seconds, config.backoff_max_seconds) == (1.0, 60.0)
    assert config.event_log == Path("/sys/kernel/security/tpm0/binary_bios_measurements")
    assert config.runtime_pcr == DEFAULT_RUNTIME_PCR == 13
    assert config.certificate is False
    assert not config.containers
    assert config.container_timeout_seconds == 5.0


def test_the_old_module_re_exports_the_same_objects() -> None:
    assert verifier_config.AgentConfig is AgentConfig
    assert verifier_config.ContainerSource is ContainerSource
    assert verifier_config.ConfigError is ConfigError
    assert verifier_config.DEFAULT_RUNTIME_PCR == DEFAULT_RUNTIME_PCR


def test_keyword_construction_coerces_like_pydantic_lax_mode(tmp_path: Path) -> None:
    socket_path = tmp_path / "containerd.sock"
    config = AgentConfig(
        verifier="127.0.0.1:5",
        tcti="swtpm:host=127.0.0.1,port=2321",
        state_dir=str(tmp_path / "s"),  # type: ignore[arg-type]
        event_log=None,
        interval_seconds=3,
        rpc_timeout_seconds="2.5",  # type: ignore[arg-type]
        runtime_pcr="12",  # type: ignore[arg-type]
        certificate="yes",  # type: ignore[arg-type]
        tls_ca=str(tmp_path / "ca.pem"),  # type: ignore[arg-type]
        containers=[
            ContainerSource(runtime="containerd", socket=socket_path, namespace="x"),
            {"runtime": "docker", "socket": "/run/docker.sock"},  # type: ignore[list-item]
        ],
    )
    assert config.state_dir == tmp_path / "s" and config.tls_ca == tmp_path / "ca.pem"
    assert config.event_log is None
    assert isinstance(config.interval_seconds, float) and config.interval_seconds == 3.0
    assert config.rpc_timeout_seconds == 2.5
    assert config.runtime_pcr == 12 and config.certificate is True
    assert list(config.containers) == [
        ContainerSource(runtime="containerd", socket=socket_path, namespace="x"),
        ContainerSource(runtime="docker", socket=Path("/run/docker.sock")),
    ]
    assert config.containers[1].namespace == "k8s.io"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("False", False), ("1", True), ("0", False), ("yes", True), ("no", False)],
)
def test_booleans_from_text(text: str, expected: bool) -> None:
    assert AgentConfig(certificate=text).certificate is expected  # type: ignore[arg-type]


def test_frozen_and_replaceable() -> None:
    config = AgentConfig(node_id="n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node_id = "other"  # type: ignore[misc]
    moved = dataclasses.replace(config, verifier="127.0.0.1:9")
    assert (moved.node_id, moved.verifier) == ("n", "127.0.0.1:9")


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"interval_seconds": 0}, "interval_seconds: must be greater than 0"),
        ({"rpc_timeout_seconds": -1}, "rpc_timeout_seconds: must be greater than 0"),
        ({"backoff_initial_seconds": 0}, "backoff_initial_seconds: must be greater than 0"),
        ({"backoff_max_seconds": "0"}, "backoff_max_seconds: must be greater than 0"),
        ({"interval_seconds": float("nan")}, "interval_seconds: must be greater than 0"),
        ({"interval_seconds": "soon"}, "interval_seconds: must be a number"),
        ({"container_timeout_seconds": 0}, "container_timeout_seconds: must be greater than 0"),
        ({"container_timeout_seconds": 61}, "container_timeout_seconds: must be less than or"),
        ({"runtime_pcr": 16}, "runtime_pcr: must be less than or equal to 15"),
        ({"runtime_pcr": -1}, "runtime_pcr: must be greater than or equal to 0"),
        ({"runtime_pcr": 13.5}, "runtime_pcr: must be an integer"),
        ({"ek_kind": "ECC"}, "ek_kind: must be one of rsa, ecc"),
        ({"ak_algorithm": "dsa"}, "ak_algorithm: must be one of ecc, rsa"),
        ({"certificate": "maybe"}, "certificate: must be a boolean"),
        ({"node_id": 7}, "node_id: must be a string"),
        ({"state_dir": 7}, "state_dir: must be a path"),
        ({"containers": "x"}, "containers: must be a list"),
        ({"containers": ["x"]}, r"containers\[0\]: must be a mapping"),
        (
            {"containers": [{"runtime": "cri-o", "socket": "/s"}]},
            r"containers\[0\]\.runtime: must be one of containerd, docker, podman",
        ),
        ({"containers": [{"runtime": "docker"}]}, r"containers\[0\]\.socket: required"),
        (
            {"containers": [{"runtime": "docker", "socket": "/s", "zone": 1}]},
            r"containers\[0\]\.zone: unknown key",
        ),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"rpc_timeout_seconds": 1e300}, "rpc_timeout_seconds: must be less than or equal"),
        ({"interval_seconds": 10**9}, "interval_seconds: must be less than or equal"),
        ({"verifier": "verifier.example"}, "verifier: bad target .*host:port"),
        ({"verifier": "[::1"}, r"verifier: bad target .*\[ipv6-address\]:port"),
        ({"verifier": "host:https"}, "verifier: bad target .*port"),
    ],
)
def test_invalid_values_name_the_field(settings: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        AgentConfig.from_mapping(settings)


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        AgentConfig(interval_seconds=0, ek_kind="x")  # type: ignore[arg-type]
    assert "interval_seconds" in str(caught.value) and "ek_kind" in str(caught.value)


def test_a_container_source_refuses_bad_values_itself() -> None:
    with pytest.raises(ConfigError, match="runtime: must be one of"):
        ContainerSource(runtime="lxc", socket=Path("/s"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="zone: unknown key"):
        ContainerSource.from_mapping({"runtime": "docker", "socket": "/s", "zone": "a"})


def test_yaml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "node_id: node-7\n"
        "verifier: verifier.example:50051\n"
        "tls_ca: /etc/lightgate/ca.pem\n"
        "ek_kind: ecc\n"
        "interval_seconds: 15\n"
        "event_log: null\n"
        "certificate: yes\n"
        "containers:\n"
        "  - runtime: containerd\n"
        "    socket: /run/containerd/containerd.sock\n"
        "  - runtime: podman\n"
        "    socket: /run/podman/podman.sock\n"
        "    namespace: ignored\n"
    )
    config = load_agent_config(path, environ={})
    assert config.node_id == "node-7" and config.verifier == "verifier.example:50051"
    assert config.tls_ca == Path("/etc/lightgate/ca.pem") and config.ek_kind == "ecc"
    assert config.interval_seconds == 15.0 and config.event_log is None
    assert config.certificate is True
    assert list(config.containers) == [
        ContainerSource(runtime="containerd", socket=Path("/run/containerd/containerd.sock")),
        ContainerSource(
            runtime="podman", socket=Path("/run/podman/podman.sock"), namespace="ignored"
        ),
    ]


def test_file_keys_match_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("TCTI: swtpm:port=1\n")
    assert load_agent_config(path, environ={}).tcti == "swtpm:port=1"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("tcti: from-file\nnode_id: file-node\ninterval_seconds: 5\n")
    environ = {
        "LIGHTGATE_AGENT_TCTI": "from-env",
        "lightgate_agent_interval_seconds": "7",  # names match in any case
        "LIGHTGATE_AGENT_CERTIFICATE": "true",
        "LIGHTGATE_AGENT_JOIN_TOKEN": "",  # as pydantic-settings: an empty string
        "LIGHTGATE_AGENT_UNRELATED": "ignored",
        "LIGHTGATE_AGENT_TCTI__NESTED": "ignored",
        "LIGHTGATE_VERIFIER_LISTEN": "ignored",
    }
    config = load_agent_config(path, environ=environ)
    assert (config.tcti, config.node_id) == ("from-env", "file-node")
    assert config.interval_seconds == 7.0 and config.certificate is True
    assert config.join_token == ""


def test_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTGATE_AGENT_NODE_ID", "env-node")
    assert load_agent_config(None).node_id == "env-node"
    assert verifier_config.load_config(AgentConfig, None).node_id == "env-node"


def test_containers_from_json_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("containers:\n  - runtime: docker\n    socket: /run/docker.sock\n")
    sources = [{"runtime": "containerd", "socket": "/run/c.sock", "namespace": "moby"}]
    environ = {"LIGHTGATE_AGENT_CONTAINERS": json.dumps(sources)}
    config = load_agent_config(path, environ=environ)
    assert list(config.containers) == [
        ContainerSource(runtime="containerd", socket=Path("/run/c.sock"), namespace="moby")
    ]
    assert not load_agent_config(path, environ={"LIGHTGATE_AGENT_CONTAINERS": "[]"}).containers


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"LIGHTGATE_AGENT_CONTAINERS": "[{"}, "LIGHTGATE_AGENT_CONTAINERS is not JSON"),
        ({"LIGHTGATE_AGENT_CONTAINERS": ""}, "LIGHTGATE_AGENT_CONTAINERS is not JSON"),
        ({"LIGHTGATE_AGENT_CONTAINERS": '{"runtime": "docker"}'}, "containers: must be a list"),
        (
            {"LIGHTGATE_AGENT_CONTAINERS": '[{"runtime": "docker", "socket": "/s", "x": 1}]'},
            r"containers\[0\]\.x: unknown key",
        ),
        ({"LIGHTGATE_AGENT_CONTAINERS__0__RUNTIME": "docker"}, "JSON list"),
        ({"LIGHTGATE_AGENT_INTERVAL_SECONDS": ""}, "interval_seconds: must be a number"),
        ({"LIGHTGATE_AGENT_RUNTIME_PCR": "16"}, "runtime_pcr: must be less than or equal"),
    ],
)
def test_invalid_environment(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid configuration \(environment\): .*" + needle):
        load_agent_config(None, environ=environ)


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ("- a list\n", "mapping"),
        ("tcti: [unclosed\n", "cannot read"),
        ("unknown_key: 1\n", r"\(.*bad\.yaml\): unknown_key: unknown key"),
        ("interval_seconds: 0\n", r"\(.*bad\.yaml\): interval_seconds: must be greater than 0"),
        ("1: one\n", "1: unknown key"),
    ],
)
def test_invalid_file(tmp_path: Path, document: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError, match=needle):
        load_agent_config(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_agent_config(tmp_path / "nope.yaml", environ={})


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_agent_config(path, environ={}) == AgentConfig(node_id=socket.gethostname())


def test_imports_nothing_heavy() -> None:
    """The agent's memory budget: its configuration must not pull pydantic, grpc or
    cryptography into the process."""
    heavy = ("pydantic", "pydantic_settings", "cryptography", "grpc", "tpm2_pytss")
    script = (
        "import sys, lightgate.agent_config\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_a_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"node_id: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_agent_config(path, environ={})


@pytest.mark.parametrize("target", ["127.0.0.1:50051", "[::1]:5", "unix:/run/v.sock"])
def test_verifier_targets_the_channel_dials(target: str) -> None:
    assert AgentConfig(verifier=target).verifier == target

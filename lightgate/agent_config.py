"""The node agent's configuration, with no pydantic, cryptography or grpc behind it.

The agent runs on every node and must stay small: pydantic and pydantic-settings alone
cost it about 12 MB resident.  This module keeps to the standard library and PyYAML,
and validates exactly what the pydantic model it replaces did (lax mode: numbers from
strings, booleans from "yes"/"no", paths from strings; unknown keys refused).

Sources, strongest first: the environment (`LIGHTGATE_AGENT_<FIELD>`, the field name
in any case; `LIGHTGATE_AGENT_CONTAINERS` is a JSON list), then the YAML file given
with `--config`, then the defaults below.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(Exception):
    """The configuration file or environment is invalid; the message says where."""


class _Invalid(ConfigError):
    """Values refused by a constructor: every problem, each naming its field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


#: The PCR the agent extends with its runtime events (asset tag, container images).  PCRs
#: 0-15 cannot be reset at locality 0; 0-7 are the firmware's, 8-9 grub's, 10 IMA's and
#: 14 shim's; 11, 12 and 15 hold systemd-stub and systemd measurements on UKI boots.
#: 13 is used only by systemd-stub for system-extension images of a UKI's initrd.
DEFAULT_RUNTIME_PCR = 13

ContainerRuntime = Literal["containerd", "docker", "podman"]
EkKind = Literal["rsa", "ecc"]
AkAlgorithm = Literal["ecc", "rsa"]

ENV_PREFIX = "LIGHTGATE_AGENT_"
_NESTED = "__"
# What pydantic's lax mode read as a boolean (compared lower-case).
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


_WEEK = 7 * 24 * 3600  # longer intervals and timeouts are mistakes, and overflow sockets


class _Fields:
    """Coerces an instance's fields in place (lax, as pydantic did), collecting every
    refusal so that one error names all the bad fields."""

    def __init__(self, owner: object, prefix: str = "") -> None:
        self.owner = owner
        self.prefix = prefix
        self.problems: list[str] = []

    def _coerce(self, name: str, convert: Callable[[Any], object], optional: bool) -> None:
        value = getattr(self.owner, name)
        if value is None and optional:
            return
        try:
            coerced = convert(value)
        except ValueError as exc:
            self.problems.append(f"{self.prefix}{name}: {exc}")
            return
        object.__setattr__(self.owner, name, coerced)  # frozen: only while constructing

    def text(self, name: str, *, optional: bool = False) -> None:
        self._coerce(name, _text, optional)

    def path(self, name: str, *, optional: bool = False) -> None:
        self._coerce(name, _path, optional)

    def flag(self, name: str) -> None:
        self._coerce(name, _flag, False)

    def choice(self, name: str, options: tuple[str, ...]) -> None:
        self._coerce(name, lambda value: _choice(value, options), False)

    def number(self, name: str, *, gt: float, le: float | None = None) -> None:
        self._coerce(name, lambda value: _bounded(_number(value), gt=gt, le=le), False)

    def target(self, name: str) -> None:
        """A gRPC target the agent's channel can dial (host:port, [v6]:port, unix:)."""
        from lightgate.wire.channel import parse_target

        value = getattr(self.owner, name)
        if isinstance(value, str):
            try:
                parse_target(value)
            except ValueError as exc:
                self.problems.append(f"{self.prefix}{name}: {exc}")

    def integer(self, name: str, *, ge: int, le: int) -> None:
        self._coerce(name, lambda value: _bounded(_integer(value), ge=ge, le=le), False)

    def done(self) -> None:
        if self.problems:
            raise _Invalid(self.problems)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    return value


def _path(value: Any) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ValueError(f"must be a path, not {value!r}")
    return Path(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be a boolean (true/false, yes/no, 1/0), not {value!r}")


def _choice(value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"must be one of {', '.join(options)}, not {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, int | float):  # bool included, as pydantic's lax mode
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"must be a number, not {value!r}")


def _integer(value: Any) -> int:
    number: float | None = None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                number = None
    if number is not None and math.isfinite(number) and number.is_integer():
        return int(number)
    raise ValueError(f"must be an integer, not {value!r}")


def _bounded(
    value: float, *, gt: float | None = None, ge: float | None = None, le: float | None = None
) -> float:
    """The value itself (an int stays an int), if within the bounds."""
    # NaN compares false with everything: refused by every lower bound, as pydantic did.
    if gt is not None and not value > gt:
        raise ValueError(f"must be greater than {gt:g}")
    if ge is not None and not value >= ge:
        raise ValueError(f"must be greater than or equal to {ge:g}")
    if le is not None and not value <= le:
        raise ValueError(f"must be less than or equal to {le:g}")
    return value


def _names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


@dataclass(frozen=True, kw_only=True)
class ContainerSource:
    """A container runtime whose containers' images the agent measures (its own API on
    its Unix socket: containerd's gRPC API, or the Engine API of Docker or Podman)."""

    runtime: ContainerRuntime
    socket: Path
    # containerd only: the namespace read (Kubernetes' CRI uses k8s.io, Docker moby).
    namespace: str = "k8s.io"

    def __post_init__(self) -> None:
        check = _Fields(self)
        check.choice("runtime", ("containerd", "docker", "podman"))
        check.path("socket")
        check.text("namespace")
        check.done()

    @classmethod
    def from_mapping(cls, document: Mapping[Any, Any]) -> ContainerSource:
        """One entry of `containers` in the YAML file or the environment's JSON."""
        return cls(**_keywords(cls, document))


def _keywords(cls: type, document: Mapping[Any, Any]) -> dict[str, Any]:
    """The mapping as keyword arguments, unknown and missing keys refused by name."""
    known = _names(cls)
    problems = [f"{key}: unknown key" for key in document if key not in known]
    required = {f.name for f in fields(cls) if f.default is f.default_factory is MISSING}
    problems += [f"{name}: required" for name in sorted(required - set(document))]
    if problems:
        raise _Invalid(problems)
    return {str(key): value for key, value in document.items()}


def _sources(value: Any) -> tuple[ContainerSource, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _Invalid([f"containers: must be a list, not {value!r}"])
    sources: list[ContainerSource] = []
    problems: list[str] = []
    for index, entry in enumerate(value):
        try:
            if isinstance(entry, ContainerSource):
                sources.append(entry)
            elif isinstance(entry, Mapping):
                sources.append(ContainerSource.from_mapping(entry))
            else:
                problems.append(f"containers[{index}]: must be a mapping, not {entry!r}")
        except _Invalid as exc:
            problems += [f"containers[{index}].{problem}" for problem in exc.problems]
    if problems:
        raise _Invalid(problems)
    return tuple(sources)


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """What the node agent does, validated on construction (ConfigError names the field).

    Constructing one reads no environment: `load_agent_config` does.
    """

    node_id: str = field(default_factory=socket.gethostname)
    verifier: str = "127.0.0.1:50051"
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    tcti: str = "device:/dev/tpmrm0"
    ek_kind: EkKind = "rsa"
    ak_algorithm: AkAlgorithm = "ecc"
    state_dir: Path = Path("/var/lib/lightgate-attestor")
    join_token: str | None = None
    interval_seconds: float = 30.0
    rpc_timeout_seconds: float = 10.0
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    # The UEFI measured-boot log; None sends none (the verifier may then refuse).
    event_log: Path | None = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
    # The PCR for runtime events (asset tag, images); see DEFAULT_RUNTIME_PCR.
    runtime_pcr: int = DEFAULT_RUNTIME_PCR
    # Connect to the verifier from this local address (multi-homed nodes; the
    # simulator gives each node its own loopback address).
    source_address: str | None = None
    # Keep a certificate for a TPM-bound key in the state directory (certificate.pem,
    # ca.pem), renewed at half its life while the node is affirming.
    certificate: bool = False
    # Container runtimes to read before each quote: every image a container started
    # from is measured into the runtime PCR once per boot.  None configured: no images.
    # Mappings (from YAML or JSON) become ContainerSource; kept as a tuple.
    containers: Sequence[ContainerSource] = ()
    container_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        check = _Fields(self)
        for name in ("node_id", "verifier", "tcti"):
            check.text(name)
        for name in ("tls_server_name", "join_token", "source_address"):
            check.text(name, optional=True)
        check.path("state_dir")
        check.path("tls_ca", optional=True)
        check.path("event_log", optional=True)
        check.choice("ek_kind", ("rsa", "ecc"))
        check.choice("ak_algorithm", ("ecc", "rsa"))
        for name in ("interval_seconds", "backoff_initial_seconds", "backoff_max_seconds"):
            check.number(name, gt=0, le=_WEEK)
        check.number("rpc_timeout_seconds", gt=0, le=3600)
        check.number("container_timeout_seconds", gt=0, le=60)
        check.integer("runtime_pcr", ge=0, le=15)
        check.flag("certificate")
        check.target("verifier")
        try:
            object.__setattr__(self, "containers", _sources(self.containers))
        except _Invalid as exc:
            check.problems += exc.problems
        check.done()

    @classmethod
    def from_mapping(cls, document: Mapping[Any, Any]) -> AgentConfig:
        """The YAML file's (or environment's) keys, unknown ones refused by name."""
        return cls(**_keywords(cls, document))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The YAML file's top-level mapping (empty for an empty file)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded or {}


def agent_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """`LIGHTGATE_AGENT_*` variables as configuration keys, as pydantic-settings read
    them: names in any case, values as given (an empty string stays one), variables
    naming no field ignored, `LIGHTGATE_AGENT_CONTAINERS` parsed as JSON."""
    known = _names(AgentConfig)
    found: dict[str, Any] = {}
    for variable in sorted(environ):
        lowered = variable.lower()
        if not lowered.startswith(ENV_PREFIX.lower()):
            continue
        name, nested, _ = lowered.removeprefix(ENV_PREFIX.lower()).partition(_NESTED)
        if name not in known:
            continue
        value = environ[variable]
        if name == "containers":
            if nested:
                raise ConfigError(
                    f"invalid configuration (environment): {variable}: containers is a list;"
                    f" set {ENV_PREFIX}CONTAINERS to a JSON list instead"
                )
            try:
                found[name] = json.loads(value)
            except ValueError as exc:
                raise ConfigError(
                    f"invalid configuration (environment): {variable} is not JSON: {exc}"
                ) from None
        elif not nested:  # `__` below a scalar names nothing: ignored, as before
            found[name] = value
    return found


def load_agent_config(path: Path | None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the YAML file (if any), overlay the environment (`os.environ` unless given),
    validate."""
    document: dict[str, Any] = {}
    if path is not None:
        for key, value in read_yaml_mapping(path).items():
            # Top-level keys, like the environment's, are matched in any case.
            document[key.lower() if isinstance(key, str) else key] = value
    document.update(agent_environment(os.environ if environ is None else environ))
    try:
        return AgentConfig.from_mapping(document)
    except ConfigError as exc:
        where = f"{path}" if path else "environment"
        raise ConfigError(f"invalid configuration ({where}): {exc}") from None

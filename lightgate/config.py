"""Typed configuration for the verifier and the agent, loaded once at the edge.

Sources, strongest first: environment (`LIGHTGATE_VERIFIER_*` / `LIGHTGATE_AGENT_*`,
nested keys joined by `__`, e.g. `LIGHTGATE_VERIFIER_ENROLLMENT__MODE=join-token`),
then the YAML file given with `--config`, then the defaults below.

The agent's configuration lives in `lightgate.agent_config` (no pydantic: the agent on
every node stays small) and is re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, overload

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from lightgate.agent_config import (
    DEFAULT_RUNTIME_PCR,
    AgentConfig,
    ConfigError,
    ContainerRuntime,
    ContainerSource,
    load_agent_config,
    read_yaml_mapping,
)
from verifier.evidence.tpm_structures import HashAlg, PcrSelection

__all__ = [
    # The agent's, re-exported from lightgate.agent_config.
    "DEFAULT_RUNTIME_PCR",
    "AgentConfig",
    "ConfigError",
    "ContainerRuntime",
    "ContainerSource",
    # The verifier's.
    "AdminConfig",
    "AdminToken",
    "AdmissionConfig",
    "AttestationConfig",
    "EnrollmentConfig",
    "EnrollmentMode",
    "LocationConfig",
    "MeasuredBootConfig",
    "PolicyConfig",
    "ResultsConfig",
    "SiteRule",
    "VerifierConfig",
    "load_config",
]


class _EnvFirst(BaseSettings):
    """Environment overrides the file; the file is passed as init arguments."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


EnrollmentMode = Literal["ek-chain", "allowlist", "join-token"]


class EnrollmentConfig(BaseModel):
    """Who may enroll.

    - ek-chain: any TPM whose EK certificate chains to a root in `trust_store`.
    - allowlist: only EKs whose certificate or public key SHA-256 is in `allowlist`
      (for TPMs without EK certificates, or to pin a known fleet).
    - join-token: holders of a one-time token from `attest node join-token`; the EK
      certificate must still chain to the trust store when `require_ek_chain`.
    Credential activation is required in every mode.
    """

    mode: EnrollmentMode = "ek-chain"
    trust_store: Path | None = None
    allowlist: list[str] = Field(default_factory=list)
    require_ek_chain: bool = True
    activation_ttl_seconds: float = Field(default=60.0, gt=0)

    @field_validator("allowlist")
    @classmethod
    def _hex_digests(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            digest = value.strip().lower().removeprefix("sha256:")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"allowlist entry {value!r} is not a SHA-256 hex digest")
            out.append(digest)
        return out


def _default_selection() -> dict[str, list[int]]:
    return {"sha256": list(range(24))}


class AttestationConfig(BaseModel):
    # Nonces carry their lifetime in 3 bytes of milliseconds (verifier/evidence/nonce.py).
    nonce_ttl_seconds: float = Field(default=60.0, ge=0.001, le=16_000)
    pcr_selection: dict[str, list[int]] = Field(default_factory=_default_selection)

    @field_validator("pcr_selection")
    @classmethod
    def _valid_selection(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        if not value:
            raise ValueError("at least one bank must be quoted; an empty selection proves nothing")
        banks = [HashAlg.from_name(bank) for bank in value]
        if len(set(banks)) != len(banks):
            raise ValueError(f"a bank is named twice in {sorted(value)}")
        for bank, pcrs in value.items():
            if not pcrs or any(not 0 <= p < 24 for p in pcrs):
                raise ValueError(f"bank {bank}: PCR indices must be 0-23 and not empty")
        return value

    def selection(self) -> PcrSelection:
        return PcrSelection.of(
            {HashAlg.from_name(bank): tuple(pcrs) for bank, pcrs in self.pcr_selection.items()}
        )


class MeasuredBootConfig(BaseModel):
    """How the UEFI boot event log is checked (verifier/evidence/measured_boot.py).

    With `require_event_log` (the default) a node that sends no log is refused, and a
    log's claims are appraised against the active golden values (`attest golden
    import`); with no golden values imported, nodes are refused and the reason says so.
    """

    require_event_log: bool = True
    log_pcrs: list[int] = Field(default_factory=lambda: list(range(10)))
    max_event_log_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    replay_cache_entries: int = Field(default=1024, ge=0)
    replay_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Public keys or certificates (PEM) whose signature a CoRIM needs to be imported.
    corim_trust: list[Path] = Field(default_factory=list)

    @field_validator("log_pcrs")
    @classmethod
    def _valid_pcrs(cls, value: list[int]) -> list[int]:
        if any(not 0 <= pcr <= 23 for pcr in value) or len(set(value)) != len(value):
            raise ValueError("log_pcrs must be distinct PCR indices 0-23")
        return value


class SiteRule(BaseModel):
    """A network the verifier maps to a site: the observed location of a node."""

    cidr: str
    site: str
    attributes: dict[str, str] = Field(default_factory=dict)


class LocationConfig(BaseModel):
    """Where nodes are: the asset tag they attest and the network they come from."""

    runtime_pcr: int = Field(default=DEFAULT_RUNTIME_PCR, ge=0, le=15)
    # Peers whose X-Forwarded-For (gRPC metadata `x-forwarded-for`) is believed.
    trusted_proxies: list[str] = Field(default_factory=list)
    sites: list[SiteRule] = Field(default_factory=list)
    max_runtime_log_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)


class ResultsConfig(BaseModel):
    """Signed attestation results (EAR) and how long trust lasts."""

    verifier_id: str = "lightgate"
    # How long an affirming result vouches for a node; None: twice the agents' interval.
    trust_seconds: float | None = Field(default=None, gt=0)
    agent_interval_seconds: float = Field(default=30.0, gt=0)
    # A retired signing key stays in the JWKS this long, so its results still verify.
    retired_key_grace_seconds: float = Field(default=7 * 86400.0, ge=0)
    # Where results, JWKS and (later) admission hooks are served over HTTPS; HTTP is
    # allowed only on a loopback address when no TLS certificate is configured.
    https_listen: str | None = "127.0.0.1:8443"

    def trust_lifetime(self) -> float:
        return self.trust_seconds or 2 * self.agent_interval_seconds


class PolicyConfig(BaseModel):
    """The Rego appraisal policy: a bundle directory, or a remote OPA server."""

    engine: Literal["embedded", "remote"] = "embedded"
    # None: the bundle an operator set with `attest policy apply`, else policies/.
    bundle: Path | None = None
    opa_url: str | None = None
    opa_token: str | None = None
    opa_timeout_seconds: float = Field(default=2.0, gt=0)
    decision_cache_entries: int = Field(default=4096, ge=1)


class AdminToken(BaseModel):
    operator: str
    # SHA-256 (hex) of the bearer token; the token itself is never configured.
    sha256: str


class AdminConfig(BaseModel):
    """The operator API: its own listener, mTLS or bearer tokens, never open."""

    listen: str | None = "127.0.0.1:50052"
    auth: Literal["token", "mtls"] = "token"
    tokens: list[AdminToken] = Field(default_factory=list)
    # mTLS: the CA that issues operator client certificates; the server's certificate
    # is tls_cert/tls_key of the verifier.
    client_ca: Path | None = None


class AdmissionConfig(BaseModel):
    """Who may run where, and who gets credentials: the scheduler extender and admission
    webhook (routes on the HTTPS listener) and the credential gate."""

    #: The longest token audience a node may ask for (and an operator may list).
    MAX_AUDIENCE_CHARS: ClassVar[int] = 512

    # Kubernetes node name -> Lightgate node id; a name not listed is looked up by the
    # node's label `node_label` (full-node extender mode), else (`node_id_source:
    # name`) taken as the node id; with `label`, a node neither listed nor labelled is
    # unknown, and refused.
    node_names: dict[str, str] = Field(default_factory=dict)
    node_id_source: Literal["name", "label"] = "name"
    # A label under node-restriction.kubernetes.io/, which the NodeRestriction admission
    # plugin keeps kubelets from setting on their own Node: a compromised node cannot
    # claim another node's identity (and with it, its trust).
    node_label: str = "node-restriction.kubernetes.io/lightgate-node-id"
    # Pod annotations with this prefix carry the workload's requirements:
    # `<prefix>location.<attribute>: v1,v2` and `<prefix>allow-warning: "true"`.
    annotation_prefix: str = "lightgate.io/"
    # Refuse a Pod whose requirements cannot be read, or when the webhook cannot decide
    # (fail closed); "open" admits it with a warning instead.
    webhook_on_error: Literal["closed", "open"] = "closed"
    # Certificates and tokens never outlive the node's trust, nor these lifetimes.
    certificate_lifetime_seconds: float = Field(
        default=3600.0, gt=0, le=90 * 86400.0, allow_inf_nan=False
    )
    token_lifetime_seconds: float = Field(default=600.0, gt=0, le=86400.0, allow_inf_nan=False)
    # A credential that could last less than this (the node's trust ends sooner) is
    # refused until the node attests again.
    min_credential_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    # The audiences tokens may be issued for (`aud`), each 1-512 characters, compared
    # exactly ("*" is an audience like any other); none: no token is issued at all.
    token_audiences: tuple[str, ...] = ()
    # The OIDC issuer (the `iss` of tokens); None: the HTTPS listener's URL.
    issuer: str | None = None
    ca_common_name: str = "Lightgate node CA"
    # How long a credential challenge nonce may be used.
    challenge_ttl_seconds: float = Field(default=60.0, gt=0, le=3600.0, allow_inf_nan=False)
    # Watch: changes queued per watcher before it counts as slow and is dropped.
    watch_queue: int = Field(default=4096, ge=16, le=1 << 20)
    # How often trust changes made by other replicas are read from the store.
    sync_seconds: float = Field(default=0.5, gt=0, le=60.0, allow_inf_nan=False)

    @field_validator("token_audiences")
    @classmethod
    def _audiences_requestable(cls, audiences: tuple[str, ...]) -> tuple[str, ...]:
        for audience in audiences:
            if not 0 < len(audience) <= cls.MAX_AUDIENCE_CHARS:
                raise ValueError(
                    f"token audience {audience[:40]!r} must be 1-{cls.MAX_AUDIENCE_CHARS}"
                    " characters"
                )
        return audiences

    @model_validator(mode="after")
    def _credentials_can_last(self) -> AdmissionConfig:
        """A minimum no lifetime reaches would refuse every certificate or token."""
        minimum = self.min_credential_seconds
        for name, lifetime in (
            ("certificate_lifetime_seconds", self.certificate_lifetime_seconds),
            ("token_lifetime_seconds", self.token_lifetime_seconds),
        ):
            if minimum >= lifetime:
                raise ValueError(
                    f"min_credential_seconds ({minimum}) must be below {name} ({lifetime}):"
                    " otherwise no such credential could ever be issued"
                )
        return self


class VerifierConfig(_EnvFirst):
    model_config = SettingsConfigDict(
        env_prefix="LIGHTGATE_VERIFIER_", env_nested_delimiter="__", extra="forbid"
    )

    listen: str = "127.0.0.1:50051"
    state_dir: Path = Path("/var/lib/lightgate")
    database_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_message_bytes: int = Field(default=5 << 20, gt=1024)
    workers: int = Field(default=8, ge=1)
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)
    attestation: AttestationConfig = Field(default_factory=AttestationConfig)
    measured_boot: MeasuredBootConfig = Field(default_factory=MeasuredBootConfig)
    location: LocationConfig = Field(default_factory=LocationConfig)
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)

    @model_validator(mode="after")
    def _public_url_known(self) -> VerifierConfig:
        """Tokens' `iss` and certificates' CRL address must be a URL relying parties can
        reach: a listener on every address is none."""
        listen = self.results.https_listen
        if self.admission.issuer is None and listen is not None:
            host = listen.rsplit(":", 1)[0].strip("[]")
            if host in ("", "0.0.0.0", "::"):  # noqa: S104 (recognised, not bound)
                raise ValueError(
                    f"results.https_listen {listen} listens on every address: set"
                    " admission.issuer to the verifier's public HTTPS URL (the tokens' iss,"
                    " the base of certificates' CRL address)"
                )
        return self

    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'verifier.db'}"


@overload
def load_config(kind: type[VerifierConfig], path: Path | None) -> VerifierConfig: ...
@overload
def load_config(kind: type[AgentConfig], path: Path | None) -> AgentConfig: ...
def load_config(
    kind: type[VerifierConfig] | type[AgentConfig], path: Path | None
) -> VerifierConfig | AgentConfig:
    """Read the YAML file (if any), overlay the environment, validate."""
    if issubclass(kind, AgentConfig):
        return load_agent_config(path)
    document = {} if path is None else read_yaml_mapping(path)
    try:
        return kind(**document)
    except ValueError as exc:
        where = f"{path}" if path else "environment"
        raise ConfigError(f"invalid configuration ({where}): {exc}") from None

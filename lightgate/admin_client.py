"""The operator's side of the Admin API: a channel with the operator's credentials.

Credentials, by what the verifier's `admin.auth` asks for: a bearer token (option,
`LIGHTGATE_ADMIN_TOKEN`, or a file) or a client certificate and key (mTLS).  The token
goes only over TLS, or in clear text to a loopback address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc

from lightgate.wire.v1 import admin_pb2_grpc as pb_grpc

TOKEN_ENV = "LIGHTGATE_ADMIN_TOKEN"  # noqa: S105  # the variable's name, not a token
ADDRESS_ENV = "LIGHTGATE_ADMIN"
DEFAULT_ADDRESS = "127.0.0.1:50052"


class AdminClientError(Exception):
    """The operator's credentials or address cannot make a connection."""


@dataclass(frozen=True)
class AdminCredentials:
    address: str = DEFAULT_ADDRESS
    token: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    @classmethod
    def resolve(
        cls,
        address: str | None,
        token_file: Path | None,
        ca: Path | None,
        cert: Path | None,
        key: Path | None,
        server_name: str | None = None,
    ) -> AdminCredentials:
        token = os.environ.get(TOKEN_ENV)
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as exc:
                raise AdminClientError(f"cannot read {token_file}: {exc.strerror}") from None
        return cls(
            address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
            token or None,
            ca,
            cert,
            key,
            server_name,
        )


def new_token() -> tuple[str, str]:
    """A new operator token and the SHA-256 (hex) the verifier's configuration holds."""
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


def admin_stub(credentials: AdminCredentials) -> tuple[pb_grpc.AdminStub, grpc.Channel]:
    channel = _channel(credentials)
    return pb_grpc.AdminStub(channel), channel


def call_metadata(credentials: AdminCredentials) -> list[tuple[str, str]]:
    if credentials.token is None:
        return []
    return [("authorization", f"Bearer {credentials.token}")]


def _channel(credentials: AdminCredentials) -> grpc.Channel:
    tls = credentials.ca is not None or credentials.cert is not None
    if not tls:
        host = credentials.address.rsplit(":", 1)[0].strip("[]")
        if credentials.token is not None and not _loopback(host):
            raise AdminClientError(
                f"refusing to send a bearer token in clear text to {credentials.address}; "
                "give --ca for TLS"
            )
        return grpc.insecure_channel(credentials.address)
    try:
        root = credentials.ca.read_bytes() if credentials.ca else None
        chain = credentials.cert.read_bytes() if credentials.cert else None
        private = credentials.key.read_bytes() if credentials.key else None
    except OSError as exc:
        raise AdminClientError(f"cannot read a TLS file: {exc}") from None
    options = []
    if credentials.server_name:
        options.append(("grpc.ssl_target_name_override", credentials.server_name))
    return grpc.secure_channel(
        credentials.address,
        grpc.ssl_channel_credentials(root, private, chain),
        options=options,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Transports to a TPM: send one marshalled command, get its response.  The only I/O of
`attestor.tpm2`.

TCTI strings follow tpm2-tools' form (`TPM2TOOLS_TCTI`), for the two transports an agent
uses:

- `device:/dev/tpmrm0` (or `device`): a character device, normally the kernel's
  resource manager, which swaps transient objects and sessions per open file so that
  several programs can share the TPM.  A raw `/dev/tpm0` works too, for one user.
- `swtpm:host=127.0.0.1,port=2321` (or `swtpm:path=/run/swtpm.sock`, or `swtpm`): the
  data channel of a swtpm TCP or Unix socket, which speaks the raw TPM command protocol
  (the control channel, for power and locality, is not needed).

tpm2-abrmd (`tabrmd:`) and the Microsoft simulator (`mssim:`) are refused by name: the
kernel's resource manager replaced the first, and swtpm serves the second's role.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Final, Protocol

HEADER_SIZE: Final = 10  # tag (2), size (4), code (4): Part 1, 18.
MAX_RESPONSE: Final = 64 * 1024  # a TPM response buffer is 4 kB; anything past 64 kB is wrong
DEFAULT_DEVICE: Final = "/dev/tpmrm0"
DEFAULT_SWTPM_PORT: Final = 2321
#: RSA key generation on a slow TPM takes tens of seconds; a TPM that has not answered
#: in two minutes is not going to.
DEFAULT_TIMEOUT_SECONDS: Final = 120.0


class TctiError(Exception):
    """The TPM cannot be reached or answered with something that is not a response."""


class Transport(Protocol):
    def transact(self, command: bytes) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TctiSpec:
    """A parsed TCTI string."""

    kind: str  # "device" or "swtpm"
    path: str = ""
    host: str = ""
    port: int = 0

    def describe(self) -> str:
        if self.kind == "swtpm" and not self.path:
            return f"swtpm at {self.host}:{self.port}"
        return f"{self.kind} {self.path}"


def parse_tcti(tcti: str) -> TctiSpec:
    """Parse `device[:path]` or `swtpm[:host=H,port=P | :path=P]`; ValueError otherwise."""
    name, _, conf = tcti.strip().partition(":")
    if name == "device":
        return TctiSpec("device", path=conf or DEFAULT_DEVICE)
    if name == "swtpm":
        options: dict[str, str] = {}
        for item in filter(None, conf.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in ("host", "port", "path") or not value:
                raise ValueError(f"TCTI {tcti!r}: {item!r} is not host=, port= or path=")
            options[key] = value
        if "path" in options:
            if {"host", "port"} & options.keys():
                raise ValueError(f"TCTI {tcti!r}: path= excludes host= and port=")
            return TctiSpec("swtpm", path=options["path"])
        port_text = options.get("port", str(DEFAULT_SWTPM_PORT))
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"TCTI {tcti!r}: port {port_text!r} is not a TCP port")
        return TctiSpec("swtpm", host=options.get("host", "localhost"), port=int(port_text))
    if name in ("tabrmd", "mssim", "libtpms", "cmd", "spi-helper", "i2c-helper"):
        raise ValueError(
            f"TCTI {name!r} is not supported: use device:/dev/tpmrm0 (the kernel's resource"
            " manager) or swtpm:host=H,port=P"
        )
    raise ValueError(f"TCTI {tcti!r}: expected device:PATH or swtpm:host=H,port=P")


def open_transport(tcti: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Transport:
    """Open the transport a TCTI string names; TctiError when it cannot be opened."""
    try:
        spec = parse_tcti(tcti)
    except ValueError as exc:
        raise TctiError(str(exc)) from None
    if spec.kind == "device":
        return DeviceTransport(spec.path)
    return SocketTransport(spec, timeout)


def check_response_header(header: bytes, where: str) -> int:
    """The total size a response header announces, checked for sanity."""
    if len(header) < HEADER_SIZE:
        raise TctiError(f"{where}: response of {len(header)} bytes is shorter than a header")
    size = int.from_bytes(header[2:6], "big")
    if not HEADER_SIZE <= size <= MAX_RESPONSE:
        raise TctiError(f"{where}: response announces {size} bytes")
    return size


class DeviceTransport:
    """A TPM character device: one write per command, one read per response."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise TctiError(f"cannot open {path}: {exc.strerror}") from None

    def transact(self, command: bytes) -> bytes:
        try:
            written = os.write(self._fd, command)
            if written != len(command):
                raise TctiError(f"{self.path}: wrote {written} of {len(command)} bytes")
            response = os.read(self._fd, MAX_RESPONSE)
        except OSError as exc:
            raise TctiError(f"{self.path}: {exc.strerror}") from None
        size = check_response_header(response, self.path)
        if size != len(response):
            raise TctiError(f"{self.path}: response announces {size} bytes, read {len(response)}")
        return response

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SocketTransport:
    """swtpm's data channel over TCP or a Unix socket (raw TPM commands)."""

    def __init__(self, spec: TctiSpec, timeout: float) -> None:
        self.where = spec.describe()
        try:
            if spec.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(spec.path)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((spec.host, spec.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise TctiError(f"cannot connect to {self.where}: {exc}") from None
        self._sock: socket.socket | None = sock

    def transact(self, command: bytes) -> bytes:
        if self._sock is None:
            raise TctiError(f"{self.where}: connection closed")
        try:
            self._sock.sendall(command)
            header = self._read(HEADER_SIZE)
            size = check_response_header(header, self.where)
            return header + self._read(size - HEADER_SIZE)
        except OSError as exc:  # socket.timeout included
            self.close()  # a half-read response leaves the stream unusable
            raise TctiError(f"{self.where}: {exc or type(exc).__name__}") from None

    def _read(self, count: int) -> bytes:
        assert self._sock is not None
        chunks: list[bytes] = []
        while count:
            chunk = self._sock.recv(count)
            if not chunk:
                self.close()
                raise TctiError(f"{self.where}: connection closed mid-response")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

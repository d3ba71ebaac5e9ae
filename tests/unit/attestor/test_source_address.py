"""The loopback relay that lets the agent leave from a chosen source address, against a
real TCP server on 127.0.0.1 (loopback owns all of 127.0.0.0/8, so 127.0.0.7 is ours)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from attestor.source_address import SourceAddressError, SourceAddressRelay, split_host_port


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _EchoServer)
        server.peers.append(self.client_address[0])
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.peers: list[str] = []


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _target(server: _EchoServer) -> str:
    return f"127.0.0.1:{server.server_address[1]}"


def _connect(relay: SourceAddressRelay) -> socket.socket:
    return socket.create_connection(("127.0.0.1", relay.port), timeout=10)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        data = sock.recv(min(65536, size - len(chunks)))
        assert data, f"connection closed after {len(chunks)} of {size} bytes"
        chunks += data
    return bytes(chunks)


def test_server_sees_the_source_address(echo: _EchoServer) -> None:
    with SourceAddressRelay(_target(echo), "127.0.0.7") as relay, _connect(relay) as client:
        client.sendall(b"hello")
        assert _recv_exactly(client, 5) == b"hello"
    assert echo.peers == ["127.0.0.7"]


def test_each_connection_is_relayed_from_the_source(echo: _EchoServer) -> None:
    with SourceAddressRelay(_target(echo), "127.0.0.8") as relay:
        for n in range(3):
            with _connect(relay) as client:
                client.sendall(b"round %d" % n)
                assert _recv_exactly(client, 7) == b"round %d" % n
    assert echo.peers == ["127.0.0.8"] * 3


def test_large_transfer_both_ways_with_backpressure(echo: _EchoServer) -> None:
    """Four megabytes through a relay that buffers at most 256 KiB per direction."""
    payload = os.urandom(4 * 1024 * 1024)
    received = bytearray()
    with SourceAddressRelay(_target(echo), "127.0.0.7") as relay, _connect(relay) as client:

        def read_all() -> None:
            received.extend(_recv_exactly(client, len(payload)))

        reader = threading.Thread(target=read_all)
        reader.start()
        client.sendall(payload)
        reader.join(timeout=30)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_half_close_is_passed_on(echo: _EchoServer) -> None:
    """The agent's end of stream reaches the verifier; its reply still comes back."""
    with SourceAddressRelay(_target(echo), "127.0.0.7") as relay, _connect(relay) as client:
        client.sendall(b"last words")
        client.shutdown(socket.SHUT_WR)
        assert _recv_exactly(client, 10) == b"last words"
        assert client.recv(1) == b""  # the server saw EOF, closed, and that came back


def test_unreachable_verifier_closes_the_agent_side() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SourceAddressRelay(f"127.0.0.1:{port}", "127.0.0.7") as relay, _connect(relay) as client:
        client.settimeout(10)
        # Closed with data unread is a reset, which is as final as an end of stream.
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""


def test_relay_keeps_serving_after_a_failed_connection(echo: _EchoServer) -> None:
    with SourceAddressRelay(_target(echo), "127.0.0.7") as relay:
        with _connect(relay) as client:
            client.close()  # the agent gives up at once
        with _connect(relay) as client:
            client.sendall(b"again")
            assert _recv_exactly(client, 5) == b"again"


def test_close_ends_open_connections(echo: _EchoServer) -> None:
    relay = SourceAddressRelay(_target(echo), "127.0.0.7").start()
    client = _connect(relay)
    client.sendall(b"x")
    assert _recv_exactly(client, 1) == b"x"
    relay.close()
    client.settimeout(10)
    assert client.recv(1) == b""
    client.close()
    relay.close()  # twice is harmless


def test_source_address_not_on_this_host_is_refused_at_start(echo: _EchoServer) -> None:
    with pytest.raises(SourceAddressError, match=r"192\.0\.2\.1"):
        SourceAddressRelay(_target(echo), "192.0.2.1").start()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("verifier.example:443", ("verifier.example", 443)),
        ("[::1]:50051", ("::1", 50051)),
    ],
)
def test_verifier_addresses(target: str, expected: tuple[str, int]) -> None:
    assert split_host_port(target) == expected


@pytest.mark.parametrize(
    "target", ["dns:///verifier:443", "unix:/run/v.sock", "verifier", "host:0", "host:99999", ":1"]
)
def test_verifier_addresses_the_relay_cannot_dial(target: str) -> None:
    with pytest.raises(SourceAddressError):
        split_host_port(target)


def test_bad_source_address_is_refused() -> None:
    with pytest.raises(SourceAddressError):
        SourceAddressRelay("127.0.0.1:1", "not-an-address")

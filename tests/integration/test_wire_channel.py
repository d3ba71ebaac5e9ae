"""lightgate.wire.channel against a real grpcio server in this process (loopback TCP, a
unix socket, TLS with a CA minted here), plus a scripted HTTP/2 server for the protocol
corners a grpcio server never produces (HTTP errors, RST_STREAM, GOAWAY, bad framing).

Nothing here asserts a duration: waits are on events or sockets, timeouts only bound them.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import random
import select
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lightgate.wire.channel import Channel, RpcError, StatusCode
from lightgate.wire.clients import AttestationClient, ContainersClient
from lightgate.wire.containerd import containers_pb2
from lightgate.wire.containerd import containers_pb2_grpc as containers_grpc
from lightgate.wire.v1 import attestation_pb2 as pb
from lightgate.wire.v1 import attestation_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
NON_ASCII = "nœud refusé: 🔒 100% «sûr»\nline two"
BIG = 8 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


class Attestation(pb_grpc.AttestationServicer):
    """Behaviour chosen by the request's node_id."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.slow_started = threading.Event()
        self.metadata: list[tuple[str, str]] = []

    def Challenge(self, request: pb.ChallengeRequest, context: Any) -> pb.ChallengeResponse:
        self.metadata = [(m.key, m.value) for m in context.invocation_metadata()]
        node = request.node_id
        if node.startswith("abort:"):
            context.abort(getattr(grpc.StatusCode, node.split(":", 1)[1]), NON_ASCII)
        if node == "slow":
            self.slow_started.set()
            self.release.wait(30)
        if node.startswith("big:"):
            return pb.ChallengeResponse(nonce=payload(int(node[4:])))
        return pb.ChallengeResponse(
            nonce=hashlib.sha256(node.encode()).digest(), asset_tag=f"tag-{node}"
        )

    def Attest(self, request: pb.AttestRequest, context: Any) -> pb.AttestResponse:
        return pb.AttestResponse(
            status=pb.TRUST_STATUS_AFFIRMING,
            reason=hashlib.sha256(request.event_log).hexdigest(),
            result_id=len(request.event_log),
        )


class Containers(containers_grpc.ContainersServicer):
    def List(self, request: Any, context: Any) -> containers_pb2.ListContainersResponse:
        namespace = dict(context.invocation_metadata()).get("containerd-namespace", "")
        return containers_pb2.ListContainersResponse(
            containers=[containers_pb2.Container(id=f"{namespace}/c1", image="img")]
        )


@dataclass
class Server:
    servicer: Attestation
    address: str
    options: list[tuple[str, Any]]
    credentials: Any = None
    server: Any = None
    port: int = 0

    def start(self) -> Server:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=self.options)
        pb_grpc.add_AttestationServicer_to_server(self.servicer, server)
        containers_grpc.add_ContainersServicer_to_server(Containers(), server)
        if self.credentials is not None:
            port = server.add_secure_port(self.address, self.credentials)
        else:
            port = server.add_insecure_port(self.address)
        assert port or self.address.startswith("unix:")
        if not self.address.startswith("unix:"):
            self.port = port
            self.address = f"127.0.0.1:{port}"
        server.start()
        self.server = server
        return self

    def stop(self) -> None:
        self.server.stop(None).wait(10)


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(
        address: str = "127.0.0.1:0", options: list[tuple[str, Any]] | None = None, **kw: Any
    ) -> Server:
        server = Server(Attestation(), address, [*SERVER_OPTIONS, *(options or [])], **kw)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.servicer.release.set()
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


def rpc_error(call: Callable[[], object]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        call()
    return caught.value


# --- calls against grpcio -------------------------------------------------------------


def test_call_returns_fields(server: Server) -> None:
    with Channel(server.address) as channel:
        client = AttestationClient(channel)
        response = client.Challenge(pb.ChallengeRequest(node_id="n1"), timeout=5)
        assert response.nonce == hashlib.sha256(b"n1").digest()
        assert response.asset_tag == "tag-n1"
        again = client.Challenge(pb.ChallengeRequest(node_id="n2"))  # default timeout
        assert again.asset_tag == "tag-n2"


@pytest.mark.parametrize(
    "code",
    ["INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "FAILED_PRECONDITION",
     "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "ABORTED"],
)  # fmt: skip
def test_abort_code_and_non_ascii_details(server: Server, code: str) -> None:
    with Channel(server.address) as channel:
        error = rpc_error(
            lambda: AttestationClient(channel).Challenge(
                pb.ChallengeRequest(node_id=f"abort:{code}"), timeout=5
            )
        )
        assert error.code == StatusCode[code]
        assert error.details == NON_ASCII
        assert str(error) == f"{code}: {NON_ASCII}"
        # The connection survives an error status.
        assert AttestationClient(channel).Challenge(pb.ChallengeRequest(node_id="x"), timeout=5)


def test_unknown_method_is_unimplemented(server: Server) -> None:
    with Channel(server.address) as channel:
        error = rpc_error(lambda: channel.unary("/lightgate.v1.Nope/Nothing", b"", timeout=5))
        assert error.code == StatusCode.UNIMPLEMENTED


def test_deadline_exceeded_then_channel_still_works(server: Server) -> None:
    with Channel(server.address) as channel:
        client = AttestationClient(channel)
        error = rpc_error(lambda: client.Challenge(pb.ChallengeRequest(node_id="slow"), 0.2))
        assert error.code == StatusCode.DEADLINE_EXCEEDED
        assert server.servicer.slow_started.is_set()
        assert client.Challenge(pb.ChallengeRequest(node_id="after"), 5).asset_tag == "tag-after"
        server.servicer.release.set()


def test_server_stopped_then_restarted_on_same_port(make_server: Callable[..., Server]) -> None:
    first = make_server()
    with Channel(first.address) as channel:
        client = AttestationClient(channel)
        assert client.Challenge(pb.ChallengeRequest(node_id="a"), 5).asset_tag == "tag-a"
        first.stop()
        error = rpc_error(lambda: client.Challenge(pb.ChallengeRequest(node_id="b"), 5))
        assert error.code == StatusCode.UNAVAILABLE
        assert first.address in error.details
        make_server(address=first.address)
        assert client.Challenge(pb.ChallengeRequest(node_id="c"), 5).asset_tag == "tag-c"


def test_server_restart_between_calls_is_transparent(make_server: Callable[..., Server]) -> None:
    first = make_server()
    with Channel(first.address) as channel:
        client = AttestationClient(channel)
        assert client.Challenge(pb.ChallengeRequest(node_id="a"), 5).asset_tag == "tag-a"
        first.stop()
        make_server(address=first.address)
        assert client.Challenge(pb.ChallengeRequest(node_id="b"), 5).asset_tag == "tag-b"


def test_idle_connection_closed_by_server_is_replaced(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(options=[("grpc.max_connection_idle_ms", 100)])
    with Channel(server.address) as channel:
        client = AttestationClient(channel)
        assert client.Challenge(pb.ChallengeRequest(node_id="a"), 5).asset_tag == "tag-a"
        old = channel._connection
        assert old is not None
        # Wait for the server's GOAWAY to arrive (an event, bounded, not timed).
        readable, _, _ = select.select([old.sock], [], [], 30)
        assert readable, "the server never closed the idle connection"
        assert client.Challenge(pb.ChallengeRequest(node_id="b"), 5).asset_tag == "tag-b"
        assert channel._connection is not old


def test_large_request_and_response_round_trip(server: Server) -> None:
    log = payload(BIG)
    with Channel(server.address, max_response_bytes=2 * BIG) as channel:
        client = AttestationClient(channel)
        response = client.Attest(pb.AttestRequest(node_id="n", event_log=log), timeout=30)
        assert response.result_id == len(log)
        assert response.reason == hashlib.sha256(log).hexdigest()
        big = client.Challenge(pb.ChallengeRequest(node_id=f"big:{BIG}"), timeout=30)
        assert big.nonce == payload(BIG)
        # and again on the same connection (windows were replenished)
        assert client.Attest(pb.AttestRequest(event_log=log), 30).result_id == len(log)


def test_response_over_the_cap_is_resource_exhausted(server: Server) -> None:
    with Channel(server.address, max_response_bytes=1024 * 1024) as channel:
        client = AttestationClient(channel)
        error = rpc_error(lambda: client.Challenge(pb.ChallengeRequest(node_id=f"big:{BIG}"), 10))
        assert error.code == StatusCode.RESOURCE_EXHAUSTED
        assert client.Challenge(pb.ChallengeRequest(node_id="ok"), 10).asset_tag == "tag-ok"


def test_metadata_reaches_the_server(server: Server) -> None:
    with Channel(server.address) as channel:
        response = ContainersClient(channel).List(
            containers_pb2.ListContainersRequest(),
            timeout=5,
            metadata=[("containerd-namespace", "k8s.io")],
        )
        assert [c.id for c in response.containers] == ["k8s.io/c1"]
        AttestationClient(channel).Challenge(
            pb.ChallengeRequest(node_id="m"), 5, metadata=[("X-Trace", "abc")]
        )
        metadata = dict(server.servicer.metadata)
        assert metadata["x-trace"] == "abc"
        assert metadata["user-agent"].startswith("lightgate-agent")


def test_unix_socket_target(make_server: Callable[..., Server], tmp_path: Path) -> None:
    path = tmp_path / "verifier.sock"
    make_server(address=f"unix:{path}")
    for target in (f"unix:{path}", f"unix://{path}"):
        with Channel(target) as channel:
            response = AttestationClient(channel).Challenge(pb.ChallengeRequest(node_id="u"), 5)
            assert response.asset_tag == "tag-u"


def test_connection_refused_and_missing_socket_are_unavailable(tmp_path: Path) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound, not listening: refused
        with Channel(f"127.0.0.1:{port}") as channel:
            error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=5))
    assert error.code == StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{port}" in error.details
    assert "refused" in error.details.lower()
    missing = tmp_path / "nothing.sock"
    with Channel(f"unix:{missing}") as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=5))
    assert error.code == StatusCode.UNAVAILABLE
    assert str(missing) in error.details
    assert "No such file" in error.details


def test_plaintext_client_imports_neither_grpc_nor_ssl(server: Server) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from lightgate.wire.channel import Channel
        from lightgate.wire.clients import AttestationClient
        from lightgate.wire.v1 import attestation_pb2 as pb
        heavy = ("grpc", "cryptography", "pydantic", "tpm2_pytss", "ssl")
        def loaded():
            return sorted(m for m in sys.modules if m.split(".")[0] in heavy)
        assert not loaded(), loaded()
        with Channel("{server.address}") as channel:
            reply = AttestationClient(channel).Challenge(pb.ChallengeRequest(node_id="s"), 5)
        assert reply.asset_tag == "tag-s"
        assert not loaded(), loaded()
        from lightgate.wire.channel import RpcError
        try:
            Channel("{server.address}", tls_ca=b"").unary("/a.B/C", b"", timeout=5)
        except RpcError as error:
            assert "TLS" in error.details, error
        assert loaded() == ["ssl"], loaded()  # only now, and nothing else
        print("clean")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


# --- TLS ------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    other_ca_pem: bytes = field(default=b"")


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca_key, ca_cert = _ca("Lightgate test CA")
    _, other_cert = _ca("Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verifier.test")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("verifier.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Pki(
        ca_pem=ca_cert.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        other_ca_pem=other_cert.public_bytes(pem),
    )


@pytest.fixture
def tls_server(make_server: Callable[..., Server], pki: Pki) -> Server:
    credentials = grpc.ssl_server_credentials([(pki.key_pem, pki.cert_pem)])
    return make_server(credentials=credentials)


def test_tls_call_with_server_name(tls_server: Server, pki: Pki) -> None:
    with Channel(tls_server.address, tls_ca=pki.ca_pem, server_name="verifier.test") as channel:
        client = AttestationClient(channel)
        assert client.Challenge(pb.ChallengeRequest(node_id="t"), 5).asset_tag == "tag-t"
        assert client.Challenge(pb.ChallengeRequest(node_id="u"), 5).asset_tag == "tag-u"
        log = payload(2 * 1024 * 1024)
        assert client.Attest(pb.AttestRequest(event_log=log), 30).result_id == len(log)


def test_tls_wrong_ca_refused(tls_server: Server, pki: Pki) -> None:
    with Channel(
        tls_server.address, tls_ca=pki.other_ca_pem, server_name="verifier.test"
    ) as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=5))
    assert error.code == StatusCode.UNAVAILABLE
    assert "TLS" in error.details
    assert "certificate" in error.details


@pytest.mark.parametrize("server_name", [None, "evil.test"])
def test_tls_wrong_server_name_refused(tls_server: Server, pki: Pki, server_name: str) -> None:
    # The certificate names verifier.test; the target's host (127.0.0.1) is not in it.
    with Channel(tls_server.address, tls_ca=pki.ca_pem, server_name=server_name) as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=5))
    assert error.code == StatusCode.UNAVAILABLE
    assert "TLS" in error.details
    assert "mismatch" in error.details or "match" in error.details


def test_tls_to_plaintext_server_fails_cleanly(server: Server, pki: Pki) -> None:
    with Channel(server.address, tls_ca=pki.ca_pem, server_name="verifier.test") as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=5))
    assert error.code == StatusCode.UNAVAILABLE
    assert "TLS" in error.details


# --- a scripted HTTP/2 server, for what grpcio never sends -----------------------------

Reply = Callable[[h2.connection.H2Connection, int, int], None]


def grpc_headers(**extra: str) -> list[tuple[str, str]]:
    return [(":status", "200"), ("content-type", "application/grpc"), *extra.items()]


def ok_trailers(conn: h2.connection.H2Connection, stream: int) -> None:
    conn.send_headers(stream, [("grpc-status", "0")], end_stream=True)


class Scripted:
    """Serves each request with the next reply in `replies` (connection number, stream)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.on_event: Callable[[h2.events.Event], object] = lambda _: None
        self.settings: dict[int, int] = {}
        self.received: dict[int, bytearray] = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with sock:
                self._connection(sock, self.connections)

    def _connection(self, sock: socket.socket, number: int) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        if self.settings:
            conn.update_settings(self.settings)
        sock.sendall(conn.data_to_send())
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for event in conn.receive_data(data):
                self.on_event(event)
                if isinstance(event, h2.events.DataReceived) and event.stream_id:
                    self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if isinstance(event, h2.events.StreamEnded) and self.replies:
                    self.replies.pop(0)(conn, number, event.stream_id)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            if conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
                return

    def close(self) -> None:
        self.replies.clear()
        self.listener.close()


def message(data: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(data).to_bytes(4, "big") + data


def reply_ok(body: bytes = b"hello") -> Reply:
    def reply(conn: h2.connection.H2Connection, _: int, stream: int) -> None:
        conn.send_headers(stream, grpc_headers())
        conn.send_data(stream, message(body))
        ok_trailers(conn, stream)

    return reply


def reply_headers(headers: list[tuple[str, str]], body: bytes = b"") -> Reply:
    def reply(conn: h2.connection.H2Connection, _: int, stream: int) -> None:
        conn.send_headers(stream, headers, end_stream=not body)
        if body:
            conn.send_data(stream, body, end_stream=True)

    return reply


def reply_body(body: bytes, status: str | None = "0") -> Reply:
    def reply(conn: h2.connection.H2Connection, _: int, stream: int) -> None:
        conn.send_headers(stream, grpc_headers())
        if body:
            conn.send_data(stream, body)
        trailers = [("grpc-status", status)] if status is not None else [("x-other", "1")]
        conn.send_headers(stream, trailers, end_stream=True)

    return reply


def reply_reset(code: h2.errors.ErrorCodes) -> Reply:
    def reply(conn: h2.connection.H2Connection, _: int, stream: int) -> None:
        conn.reset_stream(stream, code)

    return reply


def reply_goaway(last_stream: int) -> Reply:
    def reply(conn: h2.connection.H2Connection, _: int, stream: int) -> None:
        conn.close_connection(last_stream_id=last_stream)

    return reply


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Reply]], Scripted]]:
    servers: list[Scripted] = []

    def make(replies: list[Reply]) -> Scripted:
        servers.append(Scripted(replies))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


CASES = [
    ("http 503", reply_headers([(":status", "503")]), StatusCode.UNAVAILABLE),
    ("http 404", reply_headers([(":status", "404")]), StatusCode.UNIMPLEMENTED),
    ("http 401", reply_headers([(":status", "401")]), StatusCode.UNAUTHENTICATED),
    ("http 418", reply_headers([(":status", "418")]), StatusCode.UNKNOWN),
    ("text/html", reply_headers([(":status", "200"), ("content-type", "text/html")], b"<p>"),
     StatusCode.UNKNOWN),
    ("no grpc-status", reply_body(message(b"x"), status=None), StatusCode.INTERNAL),
    ("compressed", reply_body(message(b"x", flag=1)), StatusCode.INTERNAL),
    ("truncated", reply_body(message(b"xyz")[:-1]), StatusCode.INTERNAL),
    ("two messages", reply_body(message(b"x") + message(b"y")), StatusCode.INTERNAL),
    ("no message", reply_body(b""), StatusCode.UNIMPLEMENTED),
    ("rst cancel", reply_reset(h2.errors.ErrorCodes.CANCEL), StatusCode.CANCELLED),
    ("rst internal", reply_reset(h2.errors.ErrorCodes.INTERNAL_ERROR), StatusCode.INTERNAL),
    ("goaway processed", reply_goaway(1), StatusCode.UNAVAILABLE),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_protocol_errors(
    scripted: Callable[[list[Reply]], Scripted], reply: Reply, code: StatusCode
) -> None:
    server = scripted([reply])
    with Channel(server.address) as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"req", timeout=5))
    assert error.code == code, error


def test_trailers_only_status(scripted: Callable[[list[Reply]], Scripted]) -> None:
    headers = grpc_headers(**{"grpc-status": "7", "grpc-message": "no%20way%E2%9C%93"})
    server = scripted([reply_headers(headers)])
    with Channel(server.address) as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=5))
    assert (error.code, error.details) == (StatusCode.PERMISSION_DENIED, "no way✓")


@pytest.mark.parametrize(
    "first",
    [reply_reset(h2.errors.ErrorCodes.REFUSED_STREAM), reply_goaway(0)],
    ids=["refused stream", "goaway unprocessed"],
)
def test_unprocessed_stream_is_retried_once(
    scripted: Callable[[list[Reply]], Scripted], first: Reply
) -> None:
    server = scripted([first, reply_ok(b"second try")])
    with Channel(server.address) as channel:
        assert channel.unary("/a.B/C", b"", timeout=5) == b"second try"


def test_unprocessed_twice_is_unavailable(scripted: Callable[[list[Reply]], Scripted]) -> None:
    server = scripted([reply_goaway(0), reply_goaway(0), reply_ok()])
    with Channel(server.address) as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=5))
        assert error.code == StatusCode.UNAVAILABLE
        assert "GOAWAY" in error.details
        assert channel.unary("/a.B/C", b"", timeout=5) == b"hello"


def test_graceful_goaway_lets_the_call_finish(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    def drain(conn: h2.connection.H2Connection, number: int, stream: int) -> None:
        conn.close_connection(last_stream_id=2**31 - 1)
        conn.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN  # keep sending
        reply_ok(b"finished")(conn, number, stream)

    server = scripted([drain, reply_ok(b"new connection")])
    with Channel(server.address) as channel:
        assert channel.unary("/a.B/C", b"", timeout=5) == b"finished"
        assert channel.unary("/a.B/C", b"", timeout=5) == b"new connection"
    assert server.connections == 2


def test_ping_is_answered(scripted: Callable[[list[Reply]], Scripted]) -> None:
    # The second reply is sent only after the server processed the PING ack (same socket).
    acked = threading.Event()

    def ping_then_reply(conn: h2.connection.H2Connection, number: int, stream: int) -> None:
        conn.ping(b"12345678")
        reply_ok(b"pong")(conn, number, stream)

    server = scripted([ping_then_reply, reply_ok(b"again")])
    server.on_event = lambda e: isinstance(e, h2.events.PingAckReceived) and acked.set()
    with Channel(server.address) as channel:
        assert channel.unary("/a.B/C", b"", timeout=5) == b"pong"
        assert channel.unary("/a.B/C", b"", timeout=5) == b"again"
    assert acked.is_set()


def test_client_deadline_resets_the_stream_and_replaces_the_connection(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    resets: list[int] = []

    def silent(conn: h2.connection.H2Connection, number: int, stream: int) -> None:
        conn.send_headers(stream, grpc_headers())  # ... and never finishes

    server = scripted([silent, reply_ok(b"next")])
    server.on_event = lambda e: (
        isinstance(e, h2.events.StreamReset) and resets.append(int(e.error_code or 0))
    )
    with Channel(server.address) as channel:
        error = rpc_error(lambda: channel.unary("/a.B/C", b"", timeout=0.2))
        assert error.code == StatusCode.DEADLINE_EXCEEDED
        assert channel.unary("/a.B/C", b"", timeout=5) == b"next"
    assert resets == [h2.errors.ErrorCodes.CANCEL]
    # A peer that let a deadline pass may be gone: the next call dials again.
    assert server.connections == 2


def test_tiny_peer_window_splits_the_request(scripted: Callable[[list[Reply]], Scripted]) -> None:
    """A 3-byte stream window splits even the 5-byte message prefix across frames."""

    def echo(conn: h2.connection.H2Connection, number: int, stream: int) -> None:
        body = bytes(server.received[stream])
        assert body[:5] == b"\x00" + (len(body) - 5).to_bytes(4, "big")
        reply_ok(body[5:])(conn, number, stream)

    frames: list[int] = []
    server = scripted([reply_ok(b"settings known"), echo])
    server.settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 3}
    server.on_event = lambda e: isinstance(e, h2.events.DataReceived) and frames.append(len(e.data))
    request = bytes(range(256)) * 2
    with Channel(server.address) as channel:
        assert channel.unary("/a.B/C", b"", timeout=10) == b"settings known"
        frames.clear()
        assert channel.unary("/a.B/C", request, timeout=10) == request
    assert max(frames) <= 3
    assert sum(frames) == len(request) + 5


def test_early_error_reply_stops_the_upload(scripted: Callable[[list[Reply]], Scripted]) -> None:
    """A server may refuse a request before reading all of it; the client stops sending,
    reports the status and keeps the connection."""

    def refuse_at_headers(conn: h2.connection.H2Connection, _: int, stream: int) -> None:
        raise AssertionError("not reached")

    class Early(Scripted):
        def _connection(self, sock: socket.socket, number: int) -> None:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            answered: set[int] = set()
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id or 0
                        )
                    if isinstance(event, h2.events.RequestReceived):
                        if len(answered) == 0:  # first request: refuse without reading
                            headers = grpc_headers(**{"grpc-status": "8", "grpc-message": "big"})
                            conn.send_headers(event.stream_id, headers, end_stream=True)
                            answered.add(event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id not in (
                        answered
                    ):
                        reply_ok(b"second")(conn, number, event.stream_id)
                        answered.add(event.stream_id)
                sock.sendall(conn.data_to_send())

    server = Early([refuse_at_headers])
    try:
        with Channel(server.address) as channel:
            error = rpc_error(lambda: channel.unary("/a.B/C", b"x" * 1_000_000, timeout=10))
            assert (error.code, error.details) == (StatusCode.RESOURCE_EXHAUSTED, "big")
            assert channel.unary("/a.B/C", b"", timeout=10) == b"second"
        assert server.connections == 1
    finally:
        server.close()

"""lightgate.wire.channel's pure helpers and lightgate.wire.clients' contract with the
protos, without a server."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

import pytest
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from lightgate.wire import clients
from lightgate.wire.channel import (
    Channel,
    RpcError,
    StatusCode,
    Target,
    decode_grpc_message,
    encode_timeout,
    frame_message,
    parse_target,
    status_from_http,
    status_from_rst_stream,
    unframe_messages,
)
from lightgate.wire.containerd import containers_pb2, images_pb2, tasks_pb2
from lightgate.wire.v1 import admission_pb2, attestation_pb2

REPO = Path(__file__).resolve().parents[3]

# --- status codes ---------------------------------------------------------------------


def test_status_codes_match_grpc() -> None:
    grpc = pytest.importorskip("grpc")
    assert {c.name: c.value for c in StatusCode} == {c.name: c.value[0] for c in grpc.StatusCode}


def test_rpc_error_text() -> None:
    error = RpcError(StatusCode.NOT_FOUND, "no node n1")
    assert (error.code, error.details, str(error)) == (StatusCode.NOT_FOUND, "no node n1",
                                                       "NOT_FOUND: no node n1")  # fmt: skip


# --- timeout --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (1.5, "1500m"),
        (30, "30000m"),
        (0.1, "100m"),
        (0.0001, "1m"),  # rounded up: the server must not give up first
        (0.0015, "2m"),
        (99_999.999, "99999999m"),
        (100_000, "100000S"),
        (10**9, "16666667M"),
        (10**10, "2777778H"),
        (10**12, "99999999H"),  # the largest the header can say
    ],
)
def test_encode_timeout(seconds: float, header: str) -> None:
    assert encode_timeout(seconds) == header
    digits = header[:-1]
    assert digits.isdigit() and len(digits) <= 8


@pytest.mark.parametrize("seconds", [0, -1])
def test_encode_timeout_refuses_non_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        encode_timeout(seconds)


def test_expired_timeout_is_deadline_exceeded_without_connecting() -> None:
    channel = Channel("127.0.0.1:1")
    with pytest.raises(RpcError) as caught:
        channel.unary("/a.B/C", b"", timeout=0)
    assert caught.value.code == StatusCode.DEADLINE_EXCEEDED


# --- grpc-message ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain text", "plain text"),
        (b"100%25 sure", "100% sure"),
        (b"n%C5%93ud refus%C3%A9 %F0%9F%94%92", "nœud refusé 🔒"),
        (b"line%0Atwo", "line\ntwo"),
        (b"bad %zz escape", "bad %zz escape"),  # kept as-is (the spec's advice)
        (b"trailing %4", "trailing %4"),
        (b"trailing %", "trailing %"),
        (b"%FF invalid utf-8", "\ufffd invalid utf-8"),
        (b"", ""),
    ],
)
def test_decode_grpc_message(raw: bytes, text: str) -> None:
    assert decode_grpc_message(raw) == text


# --- framing --------------------------------------------------------------------------


def test_frame_and_unframe_round_trip() -> None:
    assert frame_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert frame_message(b"") == b"\x00\x00\x00\x00\x00"
    body = frame_message(b"one") + frame_message(b"") + frame_message(b"x" * 70000)
    assert unframe_messages(body) == [b"one", b"", b"x" * 70000]
    assert unframe_messages(b"") == []


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"\x00\x00\x00", StatusCode.INTERNAL, "truncated message header"),
        (b"\x00\x00\x00\x00\x05abc", StatusCode.INTERNAL, "truncated response message"),
        (frame_message(b"ok") + b"\x00", StatusCode.INTERNAL, "truncated message header"),
        (b"\x01\x00\x00\x00\x01x", StatusCode.INTERNAL, "compressed"),
        (b"\x07\x00\x00\x00\x01x", StatusCode.INTERNAL, "bad message flag"),
        (b"\x00\x7f\xff\xff\xff", StatusCode.RESOURCE_EXHAUSTED, "exceeds the limit"),
    ],
)
def test_unframe_errors(body: bytes, code: StatusCode, words: str) -> None:
    with pytest.raises(RpcError) as caught:
        unframe_messages(body, max_size=1024)
    assert caught.value.code == code
    assert words in caught.value.details


# --- HTTP and RST_STREAM mapping ------------------------------------------------------


@pytest.mark.parametrize(
    ("http", "code"),
    [
        (400, StatusCode.INTERNAL),
        (401, StatusCode.UNAUTHENTICATED),
        (403, StatusCode.PERMISSION_DENIED),
        (404, StatusCode.UNIMPLEMENTED),
        (429, StatusCode.UNAVAILABLE),
        (502, StatusCode.UNAVAILABLE),
        (503, StatusCode.UNAVAILABLE),
        (504, StatusCode.UNAVAILABLE),
        (500, StatusCode.UNKNOWN),
        (301, StatusCode.UNKNOWN),
        (418, StatusCode.UNKNOWN),
    ],
)
def test_status_from_http(http: int, code: StatusCode) -> None:
    assert status_from_http(http) == code


@pytest.mark.parametrize(
    ("rst", "code"),
    [
        (0x0, StatusCode.INTERNAL),  # NO_ERROR
        (0x1, StatusCode.INTERNAL),  # PROTOCOL_ERROR
        (0x2, StatusCode.INTERNAL),  # INTERNAL_ERROR
        (0x7, StatusCode.UNAVAILABLE),  # REFUSED_STREAM (retried first)
        (0x8, StatusCode.CANCELLED),  # CANCEL
        (0xB, StatusCode.RESOURCE_EXHAUSTED),  # ENHANCE_YOUR_CALM
        (0xC, StatusCode.PERMISSION_DENIED),  # INADEQUATE_SECURITY
        (0x99, StatusCode.INTERNAL),
    ],
)
def test_status_from_rst_stream(rst: int, code: StatusCode) -> None:
    assert status_from_rst_stream(rst) == code


# --- targets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("verifier.example:8443", Target("verifier.example", 8443, None, "verifier.example:8443")),
        ("127.0.0.1:50051", Target("127.0.0.1", 50051, None, "127.0.0.1:50051")),
        ("[::1]:50051", Target("::1", 50051, None, "[::1]:50051")),
        ("[fe80::1%eth0]:1", Target("fe80::1%eth0", 1, None, "[fe80::1%eth0]:1")),
        ("dns:///verifier:443", Target("verifier", 443, None, "verifier:443")),
        ("unix:///run/containerd/containerd.sock",
         Target(None, None, "/run/containerd/containerd.sock", "localhost")),
        ("unix:/run/x.sock", Target(None, None, "/run/x.sock", "localhost")),
        ("unix:relative.sock", Target(None, None, "relative.sock", "localhost")),
    ],
)  # fmt: skip
def test_parse_target(target: str, parsed: Target) -> None:
    assert parse_target(target) == parsed


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("verifier", "expected host:port"),
        ("", "expected host:port"),
        (":443", "empty host"),
        ("host:", "port must be"),
        ("host:http", "port must be"),
        ("host:0", "port must be"),
        ("host:65536", "port must be"),
        ("::1:50051", "IPv6 address must be in brackets"),
        ("[::1]50051", "expected [ipv6-address]:port"),
        ("[::1", "expected [ipv6-address]:port"),
        ("[]:1", "empty host"),
        ("unix:", "empty unix socket path"),
        ("unix://", "absolute path"),
        ("unix://run/x.sock", "absolute path"),
    ],
)
def test_bad_targets(target: str, words: str) -> None:
    with pytest.raises(ValueError, match=r"bad target") as caught:
        parse_target(target)
    assert words in str(caught.value)
    with pytest.raises(ValueError, match=r"bad target"):
        Channel(target)


def test_reserved_metadata_is_refused() -> None:
    channel = Channel("127.0.0.1:1")
    for key in ("grpc-timeout", ":path", "content-type", "TE"):
        with pytest.raises(ValueError, match="reserved"):
            channel.unary("/a.B/C", b"", timeout=1, metadata=[(key, "x")])


# --- clients against the protos -------------------------------------------------------


class RecordingChannel:
    """Stands in for Channel: records the call, answers an empty response."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, float, Sequence[tuple[str, str]]]] = []

    def unary(
        self,
        method: str,
        request: bytes,
        *,
        timeout: float,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        self.calls.append((method, request, timeout, metadata))
        return b""


SERVICES = [
    (clients.AttestationClient, attestation_pb2, "Attestation", True),
    (clients.CredentialsClient, admission_pb2, "Credentials", True),
    (clients.ContainersClient, containers_pb2, "Containers", False),
    (clients.ImagesClient, images_pb2, "Images", False),
    (clients.TasksClient, tasks_pb2, "Tasks", False),
]


@pytest.mark.parametrize(
    ("client_type", "module", "service", "complete"),
    SERVICES,
    ids=[s[2] for s in SERVICES],
)
def test_client_methods_match_the_proto(
    client_type: type, module: typing.Any, service: str, complete: bool
) -> None:
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[service]
    rpcs = {m.name: m for m in descriptor.methods}
    ours = {
        name
        for name, member in inspect.getmembers(client_type, inspect.isfunction)
        if not name.startswith("_")
    }
    assert ours <= set(rpcs), f"{client_type.__name__} has methods the proto lacks"
    if complete:
        assert ours == set(rpcs), f"{client_type.__name__} misses {set(rpcs) - ours}"
    for name in sorted(ours):
        rpc = rpcs[name]
        assert not rpc.client_streaming and not rpc.server_streaming
        function = getattr(client_type, name)
        hints = typing.get_type_hints(function)
        request_type, response_type = hints["request"], hints["return"]
        assert request_type.DESCRIPTOR is rpc.input_type, name
        assert response_type.DESCRIPTOR is rpc.output_type, name
        parameters = inspect.signature(function).parameters
        assert parameters["timeout"].default is None
        assert parameters["metadata"].default == ()

        channel = RecordingChannel()
        client = client_type(channel)
        request = request_type()
        response = getattr(client, name)(request, timeout=7, metadata=[("k", "v")])
        assert isinstance(response, response_type)
        assert channel.calls == [
            (f"/{descriptor.full_name}/{rpc.name}", request.SerializeToString(), 7, [("k", "v")])
        ]
        getattr(client, name)(request)
        assert channel.calls[-1][2] == clients.DEFAULT_TIMEOUT


def test_unparsable_response_is_internal() -> None:
    class Garbage(RecordingChannel):
        def unary(self, *args: typing.Any, **kwargs: typing.Any) -> bytes:
            return b"\xff\xff\xff"

    client = clients.AttestationClient(Garbage())  # type: ignore[arg-type]
    with pytest.raises(RpcError) as caught:
        client.Challenge(attestation_pb2.ChallengeRequest())
    assert caught.value.code == StatusCode.INTERNAL
    assert "/lightgate.v1.Attestation/Challenge" in caught.value.details


def test_response_types_are_messages() -> None:
    for client_type, *_ in SERVICES:
        for name, function in inspect.getmembers(client_type, inspect.isfunction):
            if not name.startswith("_"):
                assert issubclass(typing.get_type_hints(function)["return"], Message)


# --- imports --------------------------------------------------------------------------


def test_importing_the_clients_pulls_no_heavy_module() -> None:
    script = """
import sys
import lightgate.wire.clients
from lightgate.wire.channel import Channel
Channel("127.0.0.1:1", tls_ca=b"not used until a call")
heavy = ("grpc", "cryptography", "pydantic", "tpm2_pytss", "ssl")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "pair", [("bad key", "x"), ("", "x"), ("ключ", "x"), ("k", "line\nbreak"), ("k", "é")]
)
def test_bad_metadata_is_refused(pair: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="metadata"):
        Channel("127.0.0.1:1").unary("/a.B/C", b"", timeout=1, metadata=[pair])


def test_ca_files_of_any_bytes_are_handed_to_ssl_as_they_are() -> None:
    from lightgate.wire.channel import _ca_data

    pem = "# Certificat racine \u00e9mis par \u00c9\n-----BEGIN CERTIFICATE-----\n".encode(
        "latin-1"
    )
    assert _ca_data(pem) == pem.decode("latin-1")
    assert _ca_data(b"\x30\x82\x01\x0a") == b"\x30\x82\x01\x0a"  # DER stays bytes

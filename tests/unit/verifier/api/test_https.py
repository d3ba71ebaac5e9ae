"""The HTTPS listener: JWKS over HTTP on loopback and over TLS, routing, limits, and the
refusal to serve plain HTTP beyond loopback."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from verifier.api.https import (
    HttpsServer,
    ListenRefused,
    Request,
    Response,
    Router,
    TlsFiles,
    add_key_routes,
    is_loopback,
    json_response,
    parse_listen,
)
from verifier.jose import SigningKey, jwks_document, keys_of_jwks

KEY = SigningKey.generate()


def jwks() -> dict[str, list[dict[str, str]]]:
    return jwks_document([KEY.public_key])


def self_signed(directory: Path) -> TlsFiles:
    """A P-256 certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightgate test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(cert_path, key_path)


def echo(request: Request) -> Response:
    return json_response(200, {"length": len(request.body), "query": request.query})


def boom(request: Request) -> Response:
    raise RuntimeError("a handler bug")


@pytest.fixture
def router() -> Router:
    routes = Router()
    add_key_routes(routes, jwks)
    routes.post("/echo", echo)
    routes.get("/boom", boom)
    return routes


@pytest.fixture
def plain(router: Router) -> Iterator[HttpsServer]:
    server = HttpsServer("127.0.0.1:0", router, max_body_bytes=1024, timeout_seconds=2)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls(router: Router, tmp_path: Path) -> Iterator[tuple[HttpsServer, Path]]:
    files = self_signed(tmp_path)
    server = HttpsServer("127.0.0.1:0", router, files, timeout_seconds=2)
    server.start()
    yield server, files.cert
    server.stop()


def fetch(
    server: HttpsServer, method: str, path: str, body: bytes | None = None, **headers: str
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request(method, path, body=body, headers=headers)
    return connection.getresponse()


def test_jwks_over_http_on_loopback(plain: HttpsServer) -> None:
    response = fetch(plain, "GET", "/.well-known/jwks.json")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/jwk-set+json"
    assert response.getheader("Cache-Control") == "public, max-age=60"
    assert list(keys_of_jwks(json.loads(response.read()))) == [KEY.kid]
    assert plain.url.startswith("http://127.0.0.1:")


def test_jwks_over_https_with_a_self_signed_certificate(tls: tuple[HttpsServer, Path]) -> None:
    server, cert = tls
    context = ssl.create_default_context(cafile=str(cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
    connection.request("GET", "/.well-known/jwks.json")
    response = connection.getresponse()
    assert response.status == 200
    assert list(keys_of_jwks(json.loads(response.read()))) == [KEY.kid]
    assert server.url.startswith("https://")


def test_https_refuses_a_client_that_does_not_trust_it(tls: tuple[HttpsServer, Path]) -> None:
    server, _ = tls
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=ssl.create_default_context(), timeout=5
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("GET", "/healthz")


def test_a_plain_http_client_on_the_tls_port_gets_nothing(tls: tuple[HttpsServer, Path]) -> None:
    server, _ = tls
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        fetch(server, "GET", "/healthz").read()
    # ... and the server keeps serving TLS clients.
    context = ssl.create_default_context(cafile=str(tls[1]))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200


def test_healthz(plain: HttpsServer) -> None:
    response = fetch(plain, "GET", "/healthz")
    assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}


def test_unknown_path_and_wrong_method(plain: HttpsServer) -> None:
    assert fetch(plain, "GET", "/nope").status == 404
    response = fetch(plain, "POST", "/.well-known/jwks.json", b"{}")
    assert response.status == 405 and response.getheader("Allow") == "GET"


def test_post_body_within_the_limit_reaches_the_handler(plain: HttpsServer) -> None:
    response = fetch(plain, "POST", "/echo?x=1", b"a" * 1000)
    assert response.status == 200
    assert json.loads(response.read()) == {"length": 1000, "query": "x=1"}


def test_post_body_beyond_the_limit_is_refused_unread(plain: HttpsServer) -> None:
    assert fetch(plain, "POST", "/echo", b"a" * 1025).status == 413


def test_post_without_length_and_chunked_are_refused(plain: HttpsServer) -> None:
    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as raw:
        raw.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 411")
    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as raw:
        raw.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 501")


def test_a_handler_bug_is_a_500_without_details(plain: HttpsServer) -> None:
    response = fetch(plain, "GET", "/boom")
    assert response.status == 500
    assert b"a handler bug" not in response.read()


def test_plain_http_beyond_loopback_is_refused_before_binding(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_bind(self: socket.socket, address: object) -> None:
        raise AssertionError(f"bound {address} before refusing")

    monkeypatch.setattr(socket.socket, "bind", no_bind)
    with pytest.raises(ListenRefused, match=r"refusing plain HTTP on 0\.0\.0\.0:8443"):
        HttpsServer("0.0.0.0:8443", router)
    for address in ("[::]:8443", "10.0.0.5:8443", "verifier.example:8443"):
        with pytest.raises(ListenRefused):
            HttpsServer(address, router)


def test_port_in_use_is_a_clear_refusal(plain: HttpsServer, router: Router) -> None:
    second = HttpsServer(f"127.0.0.1:{plain.port}", router)
    with pytest.raises(ListenRefused, match="cannot listen"):
        second.start()


def test_missing_certificate_is_a_clear_refusal(router: Router, tmp_path: Path) -> None:
    with pytest.raises(ListenRefused, match="TLS certificate"):
        HttpsServer("0.0.0.0:0", router, TlsFiles(tmp_path / "no.pem", tmp_path / "no.key"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.1", False),
        ("example.org", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_parse_listen() -> None:
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in ("8443", "host:", ":80", "host:99999", "host:http"):
        with pytest.raises(ListenRefused):
            parse_listen(bad)


def test_routes_are_registered_once() -> None:
    routes = Router()
    routes.post("/webhook", echo)
    with pytest.raises(ValueError, match="already routed"):
        routes.post("/webhook", echo)
    with pytest.raises(ValueError, match="starts with"):
        routes.get("webhook", echo)

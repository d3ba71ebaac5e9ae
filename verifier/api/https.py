"""The verifier's HTTPS listener: a route table over the standard library's server.

Relying parties fetch the result-signing keys here (`GET /.well-known/jwks.json`);
issue 6 adds the scheduler extender, the admission webhook and the CRL as more routes
(`Router.get` / `Router.post`).  Handlers are plain functions `Request -> Response`;
this module does the HTTP: routing, limits, TLS, logging.

Limits, because anyone who can reach the port can send anything:
- a request body only with a Content-Length no larger than `max_body_bytes` (411
  without one, 413 beyond it; chunked bodies are refused: 501), read only for POST;
- request line and headers are bounded by http.server (64 KiB line, 100 headers);
- every connection has a socket timeout, so a client that stalls (slowloris) or never
  finishes its TLS handshake holds one worker thread for at most `timeout_seconds`;
- the TLS handshake happens on the connection's own thread, never on the accept loop.

Plain HTTP is allowed only on a loopback address (127.0.0.0/8, ::1): anywhere else,
JWKS over HTTP lets anyone on the path swap the keys results are checked with.  The
check runs when the server is built, before any socket is bound.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from lightgate.errors import Refusal

log = logging.getLogger("lightgate.verifier.https")

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
#: Relying parties may cache the JWKS this long; a rotation publishes the new key before
#: it signs anything only if caches are short (the old key stays published for days).
JWKS_MAX_AGE_SECONDS: Final = 60
JSON: Final = "application/json"
_POLL_SECONDS: Final = 0.1  # how soon `stop` is noticed by the accept loop


class ListenRefused(Refusal):
    """The HTTPS listener cannot start as configured."""

    check = "https-listen"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes
    client: str  # the peer's address
    #: The client's certificate as `ssl.SSLSocket.getpeercert()` gives it, when the
    #: listener asks for one (`client_ca`); None otherwise.
    peer_certificate: Mapping[str, object] | None = None


class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


def json_response(status: int, document: object, *headers: tuple[str, str]) -> Response:
    return Response(status, JSON, json.dumps(document, separators=(",", ":")).encode(), headers)


@dataclass
class Router:
    """Path → handler, per method.  Paths match exactly (no patterns): every route an
    HTTPS client can reach is listed here by name."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)

    def get(self, path: str, handler: Handler) -> None:
        self._add("GET", path, handler)

    def post(self, path: str, handler: Handler) -> None:
        self._add("POST", path, handler)

    def _add(self, method: str, path: str, handler: Handler) -> None:
        if not path.startswith("/"):
            raise ValueError(f"a route path starts with '/': {path!r}")
        if (method, path) in self.routes:
            raise ValueError(f"{method} {path} is already routed")
        self.routes[(method, path)] = handler

    def methods(self, path: str) -> list[str]:
        return sorted(method for method, routed in self.routes if routed == path)


def add_key_routes(router: Router, jwks: Callable[[], Mapping[str, object]]) -> None:
    """`GET /.well-known/jwks.json` (RFC 8615 well-known URI; RFC 7517 JWKS) and
    `GET /healthz`.  `jwks` is called per request, so a rotation shows at once."""

    def get_jwks(request: Request) -> Response:
        cache = ("Cache-Control", f"public, max-age={JWKS_MAX_AGE_SECONDS}")
        document = jwks()
        return Response(
            HTTPStatus.OK,
            "application/jwk-set+json",  # RFC 7517, 8.5.1
            json.dumps(document, separators=(",", ":")).encode(),
            (cache,),
        )

    def healthz(request: Request) -> Response:
        return json_response(HTTPStatus.OK, {"status": "ok"}, ("Cache-Control", "no-store"))

    router.get("/.well-known/jwks.json", get_jwks)
    router.get("/healthz", healthz)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    #: When set, clients must present a certificate issued by this CA (mTLS).
    client_ca: Path | None = None


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ListenRefused(f"listen address {listen!r} is not host:port")
    port = int(port_text)
    if port > 65535:
        raise ListenRefused(f"listen port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def is_loopback(host: str) -> bool:
    """True only for a literal loopback address or `localhost`; a name that merely
    resolves to loopback today is not trusted to keep doing so."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpsServer:
    """A threaded HTTP(S) server over a Router.  Building it checks the configuration
    (and raises ListenRefused) without binding; `start` binds and serves on a thread."""

    def __init__(
        self,
        listen: str,
        router: Router,
        tls: TlsFiles | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._host, self._port = parse_listen(listen)
        if tls is None and not is_loopback(self._host):
            raise ListenRefused(
                f"refusing plain HTTP on {listen}: without a TLS certificate "
                "(tls_cert/tls_key) the HTTPS listener may only bind a loopback address "
                "(127.0.0.0/8 or ::1), or anyone on the network could swap the JWKS"
            )
        self._router = router
        self._context = _tls_context(tls) if tls is not None else None
        self._max_body = max_body_bytes
        self._timeout = timeout_seconds
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._context is not None else "http"

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0); the configured one
        before `start`."""
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the HTTPS server is already started")
        handler = _handler_class(self._router, self._max_body, self._timeout)
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family})
        server = server_class((self._host, self._port), handler, bind_and_activate=False)
        try:
            server.server_bind()
            server.server_activate()
        except OSError as exc:
            server.server_close()
            raise ListenRefused(
                f"cannot listen on {self._host}:{self._port}: {exc.strerror or exc}"
            ) from None
        if self._context is not None:
            # The handshake is deferred to the connection's thread (see the module doc).
            server.socket = self._context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name="lightgate-https",
            daemon=True,
        )
        self._thread.start()
        log.info("https listening", extra={"fields": {"url": self.url}})

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver would print a traceback to stderr; a connection's failure is one
        # log line (handler bugs never get here: _dispatch answers them with a 500).
        log.warning("https connection failed", exc_info=True)


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert, tls.key)
        if tls.client_ca is not None:
            context.load_verify_locations(cafile=tls.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ListenRefused(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def _handler_class(router: Router, max_body: int, timeout: float) -> type[BaseHTTPRequestHandler]:
    class RouteHandler(_RouteHandler):
        pass

    RouteHandler.router = router
    RouteHandler.max_body = max_body
    RouteHandler.timeout = timeout
    return RouteHandler


class _RouteHandler(BaseHTTPRequestHandler):
    router: Router
    max_body: int
    protocol_version = "HTTP/1.1"
    server_version = "lightgate"
    sys_version = ""

    def handle(self) -> None:
        try:
            if isinstance(self.connection, ssl.SSLSocket):
                # Deferred from accept (see the module doc); bounded by the socket timeout.
                self.connection.do_handshake()
            super().handle()
        except (ssl.SSLError, TimeoutError, ConnectionError) as exc:
            # A client that fails its handshake, stalls or hangs up: nothing to answer.
            log.debug("https connection dropped", extra={"fields": {"reason": str(exc)}})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        target = urlsplit(self.path)
        handler = self.router.routes.get((method, target.path))
        if handler is None:
            allowed = self.router.methods(target.path)
            if allowed:
                self._send(
                    json_response(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"}),
                    ("Allow", ", ".join(allowed)),
                )
            else:
                self._send(json_response(HTTPStatus.NOT_FOUND, {"error": "no such path"}))
            return
        body = self._body(method)
        if body is None:
            return
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        request = Request(
            method=method,
            path=target.path,
            query=target.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client=str(self.client_address[0]),
            peer_certificate=peer or None,
        )
        try:
            response = handler(request)
        except Exception:  # the HTTP boundary: report a malfunction, never a decision
            log.exception("https handler failed", extra={"fields": {"path": target.path}})
            response = json_response(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "verifier malfunction; see the verifier's log"},
            )
        self._send(response)

    def _body(self, method: str) -> bytes | None:
        """The request body within limits, or None once a refusal has been sent."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(json_response(HTTPStatus.NOT_IMPLEMENTED, {"error": "chunked bodies"}))
            return None
        length_text = self.headers.get("Content-Length")
        if method == "GET":
            if length_text not in (None, "0"):
                self.close_connection = True  # an unread body would desync the stream
                self._send(json_response(HTTPStatus.BAD_REQUEST, {"error": "GET with a body"}))
                return None
            return b""
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            self._send(json_response(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length"}))
            return None
        length = int(length_text)
        if length > self.max_body:
            self.close_connection = True
            self._send(
                json_response(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {"error": f"body larger than {self.max_body} bytes"},
                )
            )
            return None
        return self.rfile.read(length)

    def _send(self, response: Response, *extra: tuple[str, str]) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (*response.headers, *extra):
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        # http.server's own complaints (bad request lines, timeouts): one line, no body.
        log.info("https " + format % args, extra={"fields": {"client": self.client_address[0]}})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info(
            "https request",
            extra={
                "fields": {
                    "client": self.client_address[0],
                    "request": self.requestline[:200],
                    "status": int(code) if str(code).isdigit() else code,
                }
            },
        )

"""A small unary-only gRPC client over HTTP/2 (`h2`), for the node agent.

Why not grpcio: importing it costs about 20 MB of resident memory and the agent must stay
under 40 MB.  The agent makes only unary calls, one at a time, so a blocking socket, one
HTTP/2 connection and the `h2` state machine are enough.  The verifier keeps grpcio.

What it implements of the gRPC-over-HTTP/2 protocol (PROTOCOL-HTTP2.md): request headers
with grpc-timeout, length-prefixed messages without compression, status from trailers or
a trailers-only response, HTTP status and RST_STREAM mapping, flow control in both
directions, GOAWAY handling with one transparent retry of a stream the server did not
process, and lazy (re)connection.  `ssl` is imported only when TLS is configured.

A Channel serves one call at a time (a lock serializes them): the agent never needs
concurrency, and a single in-flight stream keeps the event handling simple.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "USER_AGENT",
    "Channel",
    "RpcError",
    "StatusCode",
    "Target",
    "decode_grpc_message",
    "encode_timeout",
    "frame_message",
    "parse_target",
    "status_from_http",
    "status_from_rst_stream",
    "unframe_messages",
]

USER_AGENT = "lightgate-agent"
# grpcio's default receive limit: a response is held several times over while it is
# unframed and parsed, and the agent must stay small whatever a peer sends.
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Reads of pending input before a reused connection is given up (a peer that keeps
#: sending while the agent is idle must not keep it busy).
_IDLE_READS = 64
# Larger than h2's 64 KiB defaults so a multi-MB response is not throttled by a window
# update per round trip.
_STREAM_WINDOW = 4 * 1024 * 1024
_CONNECTION_WINDOW = 16 * 1024 * 1024
_MAX_FRAME_SIZE = 1024 * 1024
_RECV_BYTES = 256 * 1024
_SEND_CHUNK = 64 * 1024
_HEADER = struct.Struct(">BI")
_KEY_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz-_."
_RESERVED_METADATA = frozenset({"content-type", "te", "user-agent", "host", "connection"})


class StatusCode(enum.IntEnum):
    """gRPC status codes, with grpcio's names."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """A call that did not end with OK: the server's status, or one the client derived."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


class _Retry(RpcError):
    """The server did not process the stream (GOAWAY above it, REFUSED_STREAM): safe to
    send again on a fresh connection."""


# --- pure helpers --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to connect, parsed from grpc's target forms."""

    host: str | None  # None for a unix socket
    port: int | None
    path: str | None  # unix socket path
    authority: str  # default :authority


def parse_target(target: str) -> Target:
    """Parse "host:port", "[v6addr]:port", "dns:///host:port", "unix:/path" or
    "unix:///path"; a clear ValueError otherwise (no default port: say which one)."""
    if target.startswith("unix:"):
        rest = target[len("unix:") :]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise ValueError(
                    f"bad target {target!r}: unix:// must be followed by an absolute path "
                    "(unix:///run/x.sock), or use unix:relative/path"
                )
        if not rest:
            raise ValueError(f"bad target {target!r}: empty unix socket path")
        return Target(None, None, rest, "localhost")
    text = target.removeprefix("dns:///")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"bad target {target!r}: expected [ipv6-address]:port")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad target {target!r}: expected host:port, [v6addr]:port or unix:")
        if ":" in host:
            raise ValueError(f"bad target {target!r}: an IPv6 address must be in brackets")
    if not host:
        raise ValueError(f"bad target {target!r}: empty host")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad target {target!r}: port must be a number in 1..65535")
    return Target(host, int(port_text), None, text)


_TIMEOUT_UNITS = (("m", 1_000), ("S", 1_000_000), ("M", 60_000_000), ("H", 3_600_000_000))


def encode_timeout(seconds: float) -> str:
    """The grpc-timeout value: at most 8 digits and a unit, rounded up (a server must
    not give up before the client does).  Milliseconds unless too many digits."""
    if seconds <= 0:
        raise ValueError("timeout must be positive")
    micros = round(seconds * 1_000_000)
    for unit, per in _TIMEOUT_UNITS:
        value = max(1, -(-micros // per))
        if value <= 99_999_999:
            return f"{value}{unit}"
    return "99999999H"


_HEX = frozenset(b"0123456789abcdefABCDEF")


def decode_grpc_message(raw: bytes) -> str:
    """Percent-decode grpc-message (UTF-8); a malformed escape is kept as-is, as the
    spec asks, and invalid UTF-8 is replaced rather than losing the whole message."""
    if b"%" not in raw:
        return raw.decode("utf-8", "replace")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8", "replace")


def frame_message(message: bytes) -> bytes:
    """gRPC length-prefixed message: flag 0 (uncompressed) and 4-byte big-endian length."""
    return _HEADER.pack(0, len(message)) + message


def unframe_messages(data: bytes, max_size: int = DEFAULT_MAX_RESPONSE_BYTES) -> list[bytes]:
    """Split a response body into messages; RpcError for anything we did not ask for
    (compression) or a body cut short."""
    messages: list[bytes] = []
    view = memoryview(data)
    offset, total = 0, len(data)
    while offset < total:
        if total - offset < _HEADER.size:
            raise RpcError(StatusCode.INTERNAL, "truncated message header in response")
        flag, length = _HEADER.unpack_from(view, offset)
        if flag == 1:
            raise RpcError(
                StatusCode.INTERNAL,
                "compressed response message, but only identity encoding was accepted",
            )
        if flag != 0:
            raise RpcError(StatusCode.INTERNAL, f"bad message flag {flag} in response")
        if length > max_size:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"response message of {length} bytes exceeds the limit of {max_size}",
            )
        offset += _HEADER.size
        if total - offset < length:
            raise RpcError(
                StatusCode.INTERNAL,
                f"truncated response message: {total - offset} of {length} bytes",
            )
        messages.append(bytes(view[offset : offset + length]))
        offset += length
    return messages


def status_from_http(status: int) -> StatusCode:
    """gRPC's mapping of a non-200 HTTP status (doc/http-grpc-status-mapping.md)."""
    return {
        400: StatusCode.INTERNAL,
        401: StatusCode.UNAUTHENTICATED,
        403: StatusCode.PERMISSION_DENIED,
        404: StatusCode.UNIMPLEMENTED,
        429: StatusCode.UNAVAILABLE,
        502: StatusCode.UNAVAILABLE,
        503: StatusCode.UNAVAILABLE,
        504: StatusCode.UNAVAILABLE,
    }.get(status, StatusCode.UNKNOWN)


def status_from_rst_stream(error_code: int) -> StatusCode:
    """gRPC's mapping of RST_STREAM error codes (PROTOCOL-HTTP2.md, "Errors")."""
    codes = h2.errors.ErrorCodes
    if error_code == codes.REFUSED_STREAM:
        return StatusCode.UNAVAILABLE
    if error_code == codes.CANCEL:
        return StatusCode.CANCELLED
    if error_code == codes.ENHANCE_YOUR_CALM:
        return StatusCode.RESOURCE_EXHAUSTED
    if error_code == codes.INADEQUATE_SECURITY:
        return StatusCode.PERMISSION_DENIED
    return StatusCode.INTERNAL


# --- connection ----------------------------------------------------------------------


class _DrainingStateMachine(h2.connection.H2ConnectionStateMachine):
    """h2 refuses every frame after a GOAWAY, but a graceful GOAWAY (grpc sends one with
    the last stream id 2^31-1 on shutdown) lets streams below its last id finish.  This
    accepts what such a stream needs; opening new streams stays refused, and the Channel
    never reuses a connection that received a GOAWAY."""

    def __init__(self) -> None:
        super().__init__()
        closed = h2.connection.ConnectionState.CLOSED
        inputs = h2.connection.ConnectionInputs
        self._transitions = {
            **self._transitions,
            **{
                (closed, i): (None, closed)
                for i in (
                    inputs.RECV_HEADERS,
                    inputs.RECV_DATA,
                    inputs.RECV_WINDOW_UPDATE,
                    inputs.RECV_PING,
                    inputs.RECV_SETTINGS,
                    inputs.RECV_RST_STREAM,
                    inputs.RECV_PRIORITY,
                    inputs.SEND_WINDOW_UPDATE,
                    inputs.SEND_PING,
                    inputs.SEND_SETTINGS,
                    inputs.SEND_RST_STREAM,
                    inputs.SEND_DATA,
                )
            },
        }


class _Connection:
    """One socket and its h2 state.  `usable` is False once the server said GOAWAY, the
    socket failed or hit EOF: the next call opens a new one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            # Our headers are built and checked here; h2's per-header validation of
            # them costs more CPU than the rest of a small call.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.state_machine = _DrainingStateMachine()
        self.h2.initiate_connection()
        # Applied by h2 when the server acknowledges them, as the protocol requires.
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: _MAX_FRAME_SIZE,
            }
        )
        self.h2.increment_flow_control_window(_CONNECTION_WINDOW - 65_535)
        self.usable = True
        self.goaway_last_stream: int | None = None

    def flush(self) -> None:
        """Write what h2 queued; a failed or timed-out write leaves the peer's view of
        the connection unknown, so the connection is not reused."""
        data = self.h2.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except BaseException:
                self.usable = False
                raise

    def close(self) -> None:
        self.usable = False
        with contextlib.suppress(OSError):
            self.sock.close()


class _Call:
    """What one stream has received so far."""

    def __init__(self, stream_id: int, max_response: int) -> None:
        self.stream_id = stream_id
        self.max_response = max_response
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.body = bytearray()
        self.ended = False
        self.reset_code: int | None = None


class Channel:
    """A gRPC client channel for unary calls over one lazily opened HTTP/2 connection.

    One call at a time: calls from several threads are serialized by a lock (the agent
    makes one call at a time anyway).  The connection is reused; one the server closed
    while idle (GOAWAY, EOF) is noticed before sending and replaced, and a call the
    server refused unprocessed is sent once more on a new connection.  Every call has a
    deadline; the clients in `lightgate.wire.clients` default it to 30 s.
    `max_response_bytes` bounds a response message (RESOURCE_EXHAUSTED above it).
    """

    def __init__(
        self,
        target: str,
        *,
        tls_ca: bytes | None = None,
        server_name: str | None = None,
        authority: str | None = None,
        connect_timeout: float = 10.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._target_text = target
        self._target = parse_target(target)
        self._tls_ca = tls_ca
        self._server_name = server_name or self._target.host or "localhost"
        self._authority = (authority or self._target.authority).encode("ascii")
        self._scheme = b"https" if tls_ca is not None else b"http"
        self._connect_timeout = connect_timeout
        self._max_response = max_response_bytes
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._ssl_context: ssl.SSLContext | None = None

    # -- public -----------------------------------------------------------------------

    def unary(
        self,
        method: str,
        request: bytes,
        *,
        timeout: float,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """Send one request message and return the one response message (RpcError if
        the status is not OK).  `timeout` is the whole call's deadline in seconds."""
        if not method.startswith("/"):
            raise ValueError(f"method must be a path like /package.Service/Method: {method!r}")
        headers = self._request_headers(method, timeout, metadata)
        deadline = time.monotonic() + timeout
        with self._lock:
            try:
                return self._attempt(method, headers, request, deadline)
            except _Retry:
                try:
                    return self._attempt(method, headers, request, deadline)
                except _Retry as again:
                    raise RpcError(StatusCode.UNAVAILABLE, again.details) from None

    def close(self) -> None:
        """Close the connection (the next call would open a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Channel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- request ----------------------------------------------------------------------

    def _request_headers(
        self, method: str, timeout: float, metadata: Sequence[tuple[str, str]]
    ) -> list[tuple[bytes, bytes]]:
        if timeout <= 0:
            raise RpcError(StatusCode.DEADLINE_EXCEEDED, "deadline already expired")
        headers = [
            (b":method", b"POST"),
            (b":scheme", self._scheme),
            (b":path", method.encode("ascii")),
            (b":authority", self._authority),
            (b"te", b"trailers"),
            (b"content-type", b"application/grpc"),
            (b"grpc-accept-encoding", b"identity"),
            (b"user-agent", USER_AGENT.encode()),
            (b"grpc-timeout", encode_timeout(timeout).encode()),
        ]
        for key, value in metadata:
            name = key.lower()
            if name.startswith((":", "grpc-")) or name in _RESERVED_METADATA:
                raise ValueError(f"metadata key {key!r} is reserved")
            if not name or name.strip(_KEY_CHARS):
                raise ValueError(f"metadata key {key!r}: only 0-9 a-z - _ . are allowed")
            if not (value.isascii() and value.isprintable()):
                raise ValueError(f"metadata {key!r}: the value must be printable ASCII")
            headers.append((name.encode(), value.encode()))
        return headers

    # -- one attempt ------------------------------------------------------------------

    def _attempt(
        self, method: str, headers: list[tuple[bytes, bytes]], request: bytes, deadline: float
    ) -> bytes:
        conn = self._connect(deadline)
        call: _Call | None = None
        try:
            stream_id = conn.h2.get_next_available_stream_id()
            call = _Call(stream_id, self._max_response)
            conn.h2.send_headers(stream_id, headers)
            self._send_body(conn, call, request, deadline)
            while not call.ended and call.reset_code is None:
                self._pump(conn, call, deadline)
        except TimeoutError:
            self._cancel(conn, call)  # a peer that went silent may be half-open: not reused
            raise RpcError(
                StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded calling {method}"
            ) from None
        except _Retry:
            self._drop()
            raise
        except RpcError as error:
            if error.code == StatusCode.RESOURCE_EXHAUSTED:
                self._cancel(conn, call)
            else:
                self._drop()
            raise
        except h2.exceptions.H2Error as exc:
            self._drop()
            raise RpcError(
                StatusCode.INTERNAL, f"HTTP/2 protocol error with {self._target_text}: {exc}"
            ) from None
        except OSError as exc:
            self._drop()
            raise RpcError(
                StatusCode.UNAVAILABLE, f"connection to {self._target_text} failed: {exc}"
            ) from None
        except BaseException:
            self._drop()  # e.g. KeyboardInterrupt: the stream's state is unknown
            raise
        return self._result(method, call)

    def _send_body(self, conn: _Connection, call: _Call, request: bytes, deadline: float) -> None:
        """Send the length-prefixed request within the peer's flow-control windows (a
        multi-MB event log needs several WINDOW_UPDATEs), noticing an early reply.

        In chunks of at most 64 KiB, each written at once: h2 copies every frame twice,
        and small buffers are reused where MB-sized ones cost page faults each call.
        """
        prefix = _HEADER.pack(0, len(request))
        view = memoryview(request)
        offset, total = 0, len(prefix) + len(request)
        while offset < total:
            if call.reset_code is not None:
                return
            if call.ended:  # the server answered (an error) before reading everything
                conn.h2.reset_stream(call.stream_id, h2.errors.ErrorCodes.NO_ERROR)
                conn.flush()
                return
            window = conn.h2.local_flow_control_window(call.stream_id)
            if window <= 0:
                self._pump(conn, call, deadline)
                continue
            size = min(window, conn.h2.max_outbound_frame_size, _SEND_CHUNK, total - offset)
            end = offset + size
            if offset >= len(prefix):
                chunk: bytes | memoryview = view[offset - len(prefix) : end - len(prefix)]
            else:
                chunk = prefix[offset:end] + view[: max(0, end - len(prefix))].tobytes()
            conn.h2.send_data(call.stream_id, chunk, end_stream=end == total)
            offset = end
            self._set_timeout(conn, deadline)
            conn.flush()

    def _set_timeout(self, conn: _Connection, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline")
        conn.sock.settimeout(remaining)

    def _pump(self, conn: _Connection, call: _Call, deadline: float) -> None:
        """Read once (until the deadline) and handle the events."""
        self._set_timeout(conn, deadline)
        data = conn.sock.recv(_RECV_BYTES)
        if not data:
            conn.usable = False
            if conn.goaway_last_stream is not None and call.stream_id > conn.goaway_last_stream:
                raise _Retry(StatusCode.UNAVAILABLE, self._goaway_text(conn))
            raise RpcError(
                StatusCode.UNAVAILABLE,
                f"connection to {self._target_text} closed before the call completed",
            )
        self._handle(conn, conn.h2.receive_data(data), call)
        conn.flush()

    def _handle(self, conn: _Connection, events: list[h2.events.Event], call: _Call | None) -> None:
        sid = call.stream_id if call is not None else -1
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                if event.stream_id is not None:
                    conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if call is not None and event.stream_id == sid and event.data:
                    call.body += event.data
                    self._check_size(call)
            elif isinstance(event, h2.events.ResponseReceived):
                if call is not None and event.stream_id == sid:
                    call.headers = list(event.headers or [])
            elif isinstance(event, h2.events.TrailersReceived):
                if call is not None and event.stream_id == sid:
                    call.trailers = list(event.headers or [])
            elif isinstance(event, h2.events.StreamEnded):
                if call is not None and event.stream_id == sid:
                    call.ended = True
            elif isinstance(event, h2.events.StreamReset):
                if call is not None and event.stream_id == sid:
                    call.reset_code = int(event.error_code or 0)
                    if call.reset_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                        raise _Retry(
                            StatusCode.UNAVAILABLE,
                            f"{self._target_text} refused the stream (REFUSED_STREAM)",
                        )
            elif isinstance(event, h2.events.ConnectionTerminated):
                conn.usable = False
                conn.goaway_last_stream = event.last_stream_id or 0
                if call is not None and not call.ended and sid > conn.goaway_last_stream:
                    raise _Retry(StatusCode.UNAVAILABLE, self._goaway_text(conn))

    def _goaway_text(self, conn: _Connection) -> str:
        return (
            f"{self._target_text} closed the connection (GOAWAY, last stream "
            f"{conn.goaway_last_stream}) before processing the call"
        )

    def _check_size(self, call: _Call) -> None:
        if len(call.body) >= _HEADER.size:
            _, length = _HEADER.unpack_from(call.body)
            if length > call.max_response:
                raise RpcError(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"response message of {length} bytes exceeds the limit of {call.max_response}",
                )
        if len(call.body) > call.max_response + _HEADER.size:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"response larger than the limit of {call.max_response} bytes",
            )

    def _cancel(self, conn: _Connection, call: _Call | None) -> None:
        """Reset the stream so the server stops work (best effort), then drop the
        connection: after a deadline the peer may be gone, and after an oversized
        response the unread data's flow-control window is never returned."""
        if call is not None and conn.usable:
            with contextlib.suppress(OSError, h2.exceptions.H2Error):
                conn.h2.reset_stream(call.stream_id, h2.errors.ErrorCodes.CANCEL)
                conn.sock.settimeout(1.0)
                conn.flush()
        self._drop()

    # -- response ---------------------------------------------------------------------

    def _result(self, method: str, call: _Call) -> bytes:
        if call.reset_code is not None and not (call.ended and call.trailers is not None):
            code = status_from_rst_stream(call.reset_code)
            name = _error_name(call.reset_code)
            raise RpcError(code, f"stream reset by {self._target_text} ({name})")
        headers = dict(call.headers or [])
        http_status = headers.get(b":status", b"")
        if http_status != b"200":
            try:
                code = status_from_http(int(http_status))
            except ValueError:
                code = StatusCode.INTERNAL
            raise RpcError(code, f"HTTP status {http_status.decode(errors='replace')} from server")
        content_type = headers.get(b"content-type", b"")
        if not content_type.startswith(b"application/grpc"):
            raise RpcError(
                StatusCode.UNKNOWN,
                f"response content-type is {content_type.decode(errors='replace')!r}, "
                "not application/grpc",
            )
        status_headers = dict(call.trailers) if call.trailers is not None else headers
        raw_status = status_headers.get(b"grpc-status")
        if raw_status is None:
            raise RpcError(StatusCode.INTERNAL, f"{method}: response without grpc-status")
        try:
            code = StatusCode(int(raw_status))
        except ValueError:
            code = StatusCode.UNKNOWN
        details = decode_grpc_message(status_headers.get(b"grpc-message", b""))
        if code != StatusCode.OK:
            raise RpcError(code, details)
        messages = unframe_messages(bytes(call.body), call.max_response)
        if not messages:
            raise RpcError(StatusCode.UNIMPLEMENTED, f"{method}: OK status without a response")
        if len(messages) > 1:
            raise RpcError(
                StatusCode.INTERNAL, f"{method}: {len(messages)} responses to a unary call"
            )
        return messages[0]

    # -- connecting -------------------------------------------------------------------

    def _connect(self, deadline: float) -> _Connection:
        """The live connection, after reading what arrived while it was idle (a GOAWAY,
        EOF, PINGs); a new one if it is gone."""
        conn = self._connection
        if conn is not None and conn.usable:
            self._poll_idle(conn)
            if conn.usable:
                return conn
        self._drop()
        conn = _Connection(self._open_socket(deadline))
        self._connection = conn
        try:
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            conn.flush()
        except OSError as exc:
            self._drop()
            raise RpcError(
                StatusCode.UNAVAILABLE, f"connection to {self._target_text} failed: {exc}"
            ) from None
        return conn

    def _poll_idle(self, conn: _Connection) -> None:
        want_read: tuple[type[Exception], ...] = (BlockingIOError, InterruptedError)
        if self._tls_ca is not None:
            import ssl

            want_read = (*want_read, ssl.SSLWantReadError)
        try:
            conn.sock.settimeout(0.0)
            for _ in range(_IDLE_READS):
                try:
                    data = conn.sock.recv(_RECV_BYTES)
                except want_read:
                    break
                if not data:
                    conn.usable = False
                    break
                self._handle(conn, conn.h2.receive_data(data), None)
                if not conn.usable:
                    break
            else:
                conn.usable = False  # still sending: a new connection instead
            if conn.usable:
                conn.sock.settimeout(1.0)
                conn.flush()
        except (OSError, h2.exceptions.H2Error):
            conn.usable = False

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _open_socket(self, deadline: float) -> socket.socket:
        remaining = deadline - time.monotonic()
        timeout = min(self._connect_timeout, remaining)
        if timeout <= 0:
            raise RpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before connecting")
        target = self._target
        try:
            if target.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect(target.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                assert target.host is not None and target.port is not None
                sock = socket.create_connection((target.host, target.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError:
            if timeout < remaining:
                raise RpcError(
                    StatusCode.UNAVAILABLE,
                    f"timed out connecting to {self._target_text} after {timeout:g}s",
                ) from None
            raise RpcError(
                StatusCode.DEADLINE_EXCEEDED,
                f"deadline exceeded connecting to {self._target_text}",
            ) from None
        except OSError as exc:
            raise RpcError(
                StatusCode.UNAVAILABLE, f"failed to connect to {self._target_text}: {exc}"
            ) from None
        if self._tls_ca is None:
            return sock
        return self._wrap_tls(sock, timeout)

    def _wrap_tls(self, sock: socket.socket, timeout: float) -> socket.socket:
        import ssl

        try:
            if self._ssl_context is None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.load_verify_locations(cadata=_ca_data(self._tls_ca or b""))
                context.set_alpn_protocols(["h2"])
                self._ssl_context = context
            sock.settimeout(timeout)
            tls = self._ssl_context.wrap_socket(sock, server_hostname=self._server_name)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise RpcError(
                StatusCode.UNAVAILABLE,
                f"TLS failure with {self._target_text}: certificate verification failed "
                f"for {self._server_name!r}: {exc.verify_message or exc}",
            ) from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            sock.close()
            raise RpcError(
                StatusCode.UNAVAILABLE, f"TLS failure with {self._target_text}: {exc}"
            ) from None
        if tls.selected_alpn_protocol() != "h2":
            tls.close()
            raise RpcError(
                StatusCode.UNAVAILABLE,
                f"TLS failure with {self._target_text}: server did not negotiate HTTP/2 (ALPN h2)",
            )
        return tls


def _error_name(error_code: int) -> str:
    try:
        return h2.errors.ErrorCodes(error_code).name
    except ValueError:
        return f"error code {error_code}"


def _ca_data(ca: bytes) -> str | bytes:
    """`cadata` for ssl: PEM as text (comment lines may hold any byte, as in certifi's
    bundle), DER as bytes."""
    if b"-----BEGIN" in ca:
        return ca.decode("latin-1")
    return ca

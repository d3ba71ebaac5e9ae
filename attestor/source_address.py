"""Connect to the verifier from a chosen local address, through a loopback relay.

gRPC Python cannot bind a client socket's source address, yet the verifier maps the
address an attestation comes from to a site (issue 5, item 3b): a multi-homed node must
leave through the interface of its site, and the simulator gives each node its own
address in 127.0.0.0/8.  So the agent dials this relay, which listens on 127.0.0.1
(an ephemeral port) and opens, for every connection it accepts, one to the verifier
from a socket bound to `source_address`, then copies bytes both ways.  It never reads
them: TLS runs end to end between the agent and the verifier (the channel keeps the
verifier's name for SNI and certificate checks, see `attestor.agent.open_channel`).

One thread, one selector, non-blocking sockets.  Each direction buffers at most
`HIGH_WATER` bytes before the relay stops reading its source (backpressure); an
end-of-stream is passed on as a half-close once the buffer is drained.  When the
verifier cannot be reached the accepted connection is closed at once, and gRPC backs
off and retries as it would for a direct connection.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import selectors
import socket
import threading
from types import TracebackType
from typing import Final

log = logging.getLogger("lightgate.agent")

CHUNK: Final = 64 * 1024
HIGH_WATER: Final = 256 * 1024
_CONNECT_PENDING: Final = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY})


class SourceAddressError(ValueError):
    """The source address or the verifier's address cannot be used for relaying."""


def split_host_port(target: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port"; gRPC's scheme forms (dns:///, unix:) are refused,
    since the relay must open the TCP connection itself."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = target.rpartition(":")
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SourceAddressError(f"verifier address {target!r} is not host:port or [v6]:port")
    return host, int(port)


class _Link:
    """One relayed connection: the agent's side (`client`) and the verifier's."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.connected = False
        # Bytes waiting to be written into each socket.
        self.outbox: dict[socket.socket, bytearray] = {client: bytearray(), upstream: bytearray()}
        self.read_closed: set[socket.socket] = set()
        self.write_closed: set[socket.socket] = set()

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client

    def interest(self, sock: socket.socket) -> int:
        if not self.connected and sock is self.upstream:
            return selectors.EVENT_WRITE  # connect() finishing, or failing
        events = 0
        if sock not in self.read_closed and len(self.outbox[self.peer(sock)]) < HIGH_WATER:
            events |= selectors.EVENT_READ
        if self.outbox[sock]:
            events |= selectors.EVENT_WRITE
        return events

    @property
    def finished(self) -> bool:
        return len(self.write_closed) == 2


class SourceAddressRelay:
    """A loopback TCP relay to `upstream` from `source_address`.  Use as a context
    manager, or `start()` then `close()`."""

    def __init__(self, upstream: str, source_address: str) -> None:
        self.upstream_host, self.upstream_port = split_host_port(upstream)
        try:
            self.source = ipaddress.ip_address(source_address)
        except ValueError:
            raise SourceAddressError(f"source address {source_address!r} is not an IP") from None
        self._family = socket.AF_INET if self.source.version == 4 else socket.AF_INET6
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._wake_read, self._wake_write = socket.socketpair()
        self._registered: dict[socket.socket, int] = {}
        self._links: set[_Link] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="source-address-relay")
        self.port = 0

    @property
    def address(self) -> str:
        """Where the agent's channel dials instead of the verifier."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> SourceAddressRelay:
        try:
            self._check_source()
        except SourceAddressError:
            self._stopping.set()
            self._shutdown()
            raise
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread.start()
        log.info(
            "source-address relay started",
            extra={"fields": {"source": str(self.source), "relay": self.address}},
        )
        return self

    def _check_source(self) -> None:
        """Fail at start, not on every connection, when the address is not this host's."""
        with socket.socket(self._family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((str(self.source), 0))
            except OSError as exc:
                raise SourceAddressError(
                    f"cannot bind source address {self.source}: {exc.strerror}"
                ) from None

    def close(self) -> None:
        """Stop accepting, close every relayed connection, join the thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._wake_write.send(b"\0")
            self._thread.join(timeout=5)
        self._shutdown()

    def __enter__(self) -> SourceAddressRelay:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, mask in self._selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_read:
                    return
                if sock is self._listener:
                    self._accept()
                    continue
                link = key.data
                assert isinstance(link, _Link)
                if link in self._links:  # an earlier event this round may have closed it
                    self._handle(link, sock, mask)

    def _shutdown(self) -> None:
        for link in list(self._links):
            self._close_link(link)
        for sock in (self._listener, self._wake_read, self._wake_write):
            sock.close()
        self._selector.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EMFILE and kin: the agent's gRPC will retry
            log.warning("relay cannot accept", extra={"fields": {"error": exc.strerror}})
            return
        client.setblocking(False)
        try:
            upstream = self._connect_upstream()
        except OSError as exc:
            # Closing the agent's side is the whole answer: gRPC sees the connection
            # fail and backs off, as it would dialling the verifier directly.
            log.warning(
                "relay cannot reach the verifier",
                extra={
                    "fields": {
                        "source": str(self.source),
                        "verifier": f"{self.upstream_host}:{self.upstream_port}",
                        "error": exc.strerror or str(exc),
                    }
                },
            )
            client.close()
            return
        link = _Link(client, upstream)
        self._links.add(link)
        self._update(link)

    def _connect_upstream(self) -> socket.socket:
        # Resolved per connection, so a verifier that moves is followed; an IP literal
        # (the usual configuration) costs no lookup.
        infos = socket.getaddrinfo(
            self.upstream_host, self.upstream_port, self._family, socket.SOCK_STREAM
        )
        if not infos:
            raise OSError(errno.EHOSTUNREACH, f"no IPv{self.source.version} address")
        address = infos[0][4]
        upstream = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.bind((str(self.source), 0))
            status = upstream.connect_ex(address)
            if status not in _CONNECT_PENDING:
                raise OSError(status, errno.errorcode.get(status, str(status)))
        except OSError:
            upstream.close()
            raise
        return upstream

    def _handle(self, link: _Link, sock: socket.socket, mask: int) -> None:
        try:
            if sock is link.upstream and not link.connected:
                self._finish_connect(link)
            else:
                if mask & selectors.EVENT_READ:
                    self._read(link, sock)
                if mask & selectors.EVENT_WRITE:
                    self._flush(link, sock)
        except OSError as exc:
            if not link.connected:
                log.warning(
                    "relay cannot reach the verifier",
                    extra={"fields": {"source": str(self.source), "error": exc.strerror}},
                )
            self._close_link(link)
            return
        if link.finished or (not link.connected and link.client in link.read_closed):
            # Done both ways, or the agent gave up before the verifier answered.
            self._close_link(link)
        else:
            self._update(link)

    def _finish_connect(self, link: _Link) -> None:
        error = link.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, errno.errorcode.get(error, str(error)))
        link.connected = True
        link.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._flush(link, link.upstream)  # what the agent sent while we were connecting

    def _read(self, link: _Link, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        peer = link.peer(sock)
        if data:
            link.outbox[peer] += data
            self._flush(link, peer)
            return
        link.read_closed.add(sock)
        self._flush(link, peer)  # passes the end of stream on once the buffer drains

    def _flush(self, link: _Link, sock: socket.socket) -> None:
        if not link.connected:
            return  # the agent's bytes wait in the outbox until the verifier accepts
        outbox = link.outbox[sock]
        if outbox:
            try:
                sent = sock.send(outbox)
            except (BlockingIOError, InterruptedError):
                return
            del outbox[:sent]
        if not outbox and link.peer(sock) in link.read_closed and sock not in link.write_closed:
            sock.shutdown(socket.SHUT_WR)
            link.write_closed.add(sock)

    def _update(self, link: _Link) -> None:
        for sock in (link.client, link.upstream):
            events = link.interest(sock)
            current = self._registered.get(sock)
            if events and current is None:
                self._selector.register(sock, events, link)
            elif events and current != events:
                self._selector.modify(sock, events, link)
            elif not events and current is not None:
                self._selector.unregister(sock)
            if events:
                self._registered[sock] = events
            else:
                self._registered.pop(sock, None)

    def _close_link(self, link: _Link) -> None:
        self._links.discard(link)
        for sock in (link.client, link.upstream):
            if self._registered.pop(sock, None) is not None:
                self._selector.unregister(sock)
            sock.close()

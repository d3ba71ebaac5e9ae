"""A local server speaking OPA's REST Data API, deciding with the embedded engine.

No OPA binary is installable here, so the remote engine is tested against this: a real
HTTP server on 127.0.0.1 that answers `POST /v1/data/<path>` with `{"input": ...}`
the way OPA does (`{"result": ...}`, `{}` when undefined, `{"code", "message"}` with
HTTP 500 on an evaluation error), evaluating the same bundle through regorus.  `fault`
makes it misbehave the ways a real server or network can.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from verifier.policy.bundle import PolicyBundle
from verifier.policy.embedded import RegoEngine, compile_modules, regorus_message


@dataclass
class OpaState:
    bundle: PolicyBundle
    #: None (answer like OPA), "sleep", "error-500", "not-json", "undefined",
    #: "malformed", "drop" (close the connection without an answer), "forget" (answer,
    #: then drop the kept-alive connection without saying so).
    fault: str | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, object]] = field(default_factory=list)

    def engine(self) -> RegoEngine:
        # regorus Engines are bound to their thread: each handler thread compiles one,
        # kept in a module-level local so it is dropped on its own thread.
        engines: dict[str, RegoEngine] = _HANDLER_ENGINES.__dict__
        engine = engines.get(self.bundle.digest)
        if engine is None:
            engine = compile_modules(self.bundle, tests=True)
            engines[self.bundle.digest] = engine
        return engine


_HANDLER_ENGINES = threading.local()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OPA serves
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet in tests
        return

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        state.requests.append(
            {
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "client_port": self.client_address[1],
            }
        )
        if state.fault == "sleep":
            state.wake.wait(10)
        if state.fault == "drop":
            self.close_connection = True
            return
        status, payload = self._answer(state, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if state.fault == "forget":
            self.close_connection = True

    def _answer(self, state: OpaState, body: bytes) -> tuple[int, bytes]:
        if state.fault == "error-500":
            return 500, b'{"code": "internal_error", "message": "storage unavailable"}'
        if state.fault == "not-json":
            return 200, b"<html>proxy error</html>"
        if state.fault == "undefined":
            return 200, b"{}"
        if state.fault == "malformed":
            return 200, json.dumps({"result": {"status": "great"}}).encode()
        if not self.path.startswith("/v1/data/"):
            return 404, b'{"code": "not_found", "message": "unknown path"}'
        rule = "data." + self.path.removeprefix("/v1/data/").replace("/", ".")
        engine = state.engine()
        try:
            engine.set_input_json(json.dumps(json.loads(body).get("input")))
            result = engine.eval_rule(rule)
        except RuntimeError as exc:
            message = regorus_message(exc)
            return 500, json.dumps({"code": "internal_error", "message": message}).encode()
        document = {} if result is None else {"result": result}
        return 200, json.dumps(document).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: OpaState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (the timeout test) makes the late answer fail to send;
        # that is the point of the test, not an error to print.
        return


@contextmanager
def opa_server(bundle: PolicyBundle) -> Iterator[tuple[str, OpaState]]:
    """Serve `bundle` on a free loopback port; yields (base URL, state)."""
    state = OpaState(bundle)
    server = _Server(state)
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="opa-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        state.wake.set()  # release a handler held by the "sleep" fault
        server.shutdown()
        server.server_close()
        thread.join()

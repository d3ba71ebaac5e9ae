"""The remote engine: an OPA server through its REST Data API.

`POST {url}/v1/data/lightgate/appraisal/result` with `{"input": ...}` answers
`{"result": ...}`, or `{}` when the rule is undefined for that input (OPA REST API,
"Get a Document (with Input)").  Closed by default: an unreachable server, a timeout,
an HTTP error, a body that is not JSON or an undefined result is PolicyUnavailable: no
decision, no trust.  The decision is then checked like the embedded engine's.

OPA cannot tell which bundle it serves in a way we could check cheaply, so the operator
states its digest (`attest policy test` prints it; the same folder is loaded into OPA).
Standard library only: one keep-alive connection per thread.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from verifier.policy.bundle import policy_id_of
from verifier.policy.engine import RESULT_PATH, Decision, decision_from_result
from verifier.policy.errors import PolicyUnavailable

#: A decision document is a few kilobytes; more is a misconfigured server.
MAX_RESPONSE_BYTES: Final = 1024 * 1024
_OK: Final = 200


class RemoteEngine:
    """Evaluates the appraisal rule on an OPA server; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        bundle_digest: str,
        connect_timeout: float = 1.0,
        read_timeout: float = 2.0,
        token: str | None = None,
        ca_file: Path | None = None,
        rule_path: str = RESULT_PATH,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA url {url!r} is not an http(s) URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._target = f"{parts.path.rstrip('/')}/v1/data/{rule_path.strip('/')}"
        self._url = f"{parts.scheme}://{parts.netloc}{self._target}"
        self._bundle_digest = bundle_digest
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._tls = ssl.create_default_context(cafile=ca_file) if self._https else None
        self._local = threading.local()

    @property
    def url(self) -> str:
        return self._url

    @property
    def bundle_digest(self) -> str:
        return self._bundle_digest

    @property
    def policy_id(self) -> str:
        return policy_id_of(self._bundle_digest)

    def evaluate(self, input: Mapping[str, object]) -> Decision:
        """The OPA server's Decision for `input`, or PolicyUnavailable naming the URL and
        what happened."""
        try:
            body = json.dumps({"input": input}).encode()
        except (TypeError, ValueError) as exc:
            raise PolicyUnavailable(f"the policy input is not JSON: {exc}") from exc
        status, payload = self._post(body)
        if status != _OK:
            raise self._unavailable(f"HTTP {status}{_opa_message(payload)}")
        try:
            document = json.loads(payload)
        except ValueError as exc:
            raise self._unavailable(f"the response is not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise self._unavailable("the response is not a JSON object")
        if "result" not in document:
            raise self._unavailable("the rule is undefined for this input")
        return decision_from_result(document["result"], policy_id=self.policy_id)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _post(self, body: bytes) -> tuple[int, bytes]:
        # A kept-alive connection the server has since closed fails before any answer;
        # evaluating a rule changes nothing on the server, so one retry on a fresh
        # connection is safe.
        reused = getattr(self._local, "connection", None) is not None
        try:
            return self._exchange(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            self.close()
            if not reused:
                raise self._unavailable(f"the connection was closed ({exc})") from exc
        try:
            return self._exchange(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            self.close()
            raise self._unavailable(f"the connection was closed ({exc})") from exc

    def _exchange(self, body: bytes) -> tuple[int, bytes]:
        connection = self._connection()
        try:
            connection.request("POST", self._target, body=body, headers=self._headers)
            response = connection.getresponse()
            payload = response.read(MAX_RESPONSE_BYTES + 1)
        except TimeoutError as exc:
            self.close()
            raise self._unavailable(f"no answer within {self._read_timeout:g} s") from exc
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            raise
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._unavailable(_describe(exc)) from exc
        if len(payload) > MAX_RESPONSE_BYTES:
            self.close()
            raise self._unavailable(f"the response is larger than {MAX_RESPONSE_BYTES} bytes")
        if response.will_close:
            self.close()
        return response.status, payload

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._tls is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._tls
            )
        else:
            connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self._connect_timeout
            )
        try:
            connection.connect()
        except TimeoutError as exc:
            connection.close()
            raise self._unavailable(f"no connection within {self._connect_timeout:g} s") from exc
        except OSError as exc:
            connection.close()
            raise self._unavailable(_describe(exc)) from exc
        # The connect timeout bounded the handshake; from here on, waiting is reading.
        if connection.sock is not None:
            connection.sock.settimeout(self._read_timeout)
        self._local.connection = connection
        return connection

    def _unavailable(self, what: str) -> PolicyUnavailable:
        return PolicyUnavailable(f"OPA at {self._url}: {what} (closed: no decision, no trust)")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def _opa_message(payload: bytes) -> str:
    """OPA's error body is `{"code": ..., "message": ...}`; quote its message if any."""
    try:
        document = json.loads(payload)
    except ValueError:
        return ""
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return f": {document['message'][:200]}"
    return ""

"""Structured logging: one event per decision, with its fields.

Callers log `log.info("attestation", extra={"fields": {...}})`; the fields (node id,
status, check...) become keys of a JSON line on stderr, or, under systemd with stderr
connected to the journal, fields of a journal entry sent with the journal's native
protocol (`LIGHTGATE_NODE=...`, searchable with `journalctl LIGHTGATE_NODE=n1`).  No
evidence blobs or secrets go in.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
#: syslog priorities by logging level (journald's PRIORITY field).
_PRIORITY: Final = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
_NOT_A_FIELD_CHAR: Final = re.compile(r"[^A-Z0-9_]")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def journal_entry(record: logging.LogRecord, identifier: str, exception: str | None) -> bytes:
    """A record in the journal's native protocol (systemd's "Native Journal Protocol"):
    `NAME=value\\n`, or for a value with a newline `NAME\\n` + its length (64-bit
    little-endian) + the value + `\\n`."""
    fields: dict[str, str] = {
        "MESSAGE": record.getMessage(),
        "PRIORITY": str(_PRIORITY.get(record.levelname, 6)),
        "SYSLOG_IDENTIFIER": identifier,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname or "",
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName or "",
    }
    extra = getattr(record, "fields", None)
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            name = "LIGHTGATE_" + _NOT_A_FIELD_CHAR.sub("_", str(key).upper())
            fields[name[:64]] = value if isinstance(value, str) else json.dumps(value, default=str)
    if exception:
        fields["LIGHTGATE_EXCEPTION"] = exception
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald as a structured entry; a record the journal will
    not take (too big for a datagram, journald away) goes to stderr as JSON instead."""

    def __init__(self, address: str = JOURNAL_SOCKET, identifier: str = "lightgate") -> None:
        super().__init__()
        self._address = address
        self._identifier = identifier
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._fallback = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exception = self._fallback.formatException(record.exc_info) if record.exc_info else None
            self._socket.sendto(journal_entry(record, self._identifier, exception), self._address)
        except OSError:
            sys.stderr.write(self._fallback.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def close(self) -> None:
        self._socket.close()
        super().close()


def stderr_is_journal(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to its
    `device:inode`, which tells a service it may talk to journald directly."""
    stream = environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(fd)
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def configure(level: str = "INFO", stream: Any = None, identifier: str = "lightgate") -> None:
    """Install the handler on the root logger (called once, by the CLI): the journal's
    when stderr is the journal, else JSON lines on `stream` (stderr)."""
    handler: logging.Handler
    if stream is None and stderr_is_journal() and os.path.exists(JOURNAL_SOCKET):
        handler = JournalHandler(identifier=identifier)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

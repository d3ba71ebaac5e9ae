"""The services under systemd: the unit files verify and say what the deployment
promises, sd_notify and the watchdog speak systemd's protocol, and log records reach
the journal as structured entries (over real Unix sockets the tests bind)."""

from __future__ import annotations

import configparser
import logging
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightgate import logs, sdnotify

UNITS = Path(__file__).resolve().parents[3] / "deploy" / "systemd"
BIN = Path(sys.executable).parent


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("name", ["lightgate-attestor.service", "lightgate-verifier.service"])
def test_the_unit_verifies(name: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # As installed: ExecStart names the `attest` this checkout built.
    text = (UNITS / name).read_text().replace("/usr/local/bin/", f"{BIN}/")
    (tmp_path / name).write_text(text)
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == "", checked.stderr  # an unknown key is only a warning


def test_the_agent_unit_is_a_hardened_notify_service() -> None:
    service = _unit("lightgate-attestor.service")["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"].rstrip("s")) > 0
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "lightgate-attestor"
    assert service["DevicePolicy"] == "closed"
    assert service["DeviceAllow"] == "/dev/tpmrm0 rw"  # the resource manager, nothing else
    assert service["User"] != "root" and service["SupplementaryGroups"] == "tss"
    assert service["CapabilityBoundingSet"] == ""
    users = (UNITS / "lightgate.sysusers.conf").read_text()
    assert f"m {service['User']} tss" in users


def test_the_verifier_unit_is_a_hardened_notify_service() -> None:
    service = _unit("lightgate-verifier.service")["Service"]
    assert (service["Type"], service["NoNewPrivileges"], service["ProtectSystem"]) == (
        "notify",
        "yes",
        "strict",
    )
    assert service["PrivateDevices"] == "yes"
    assert service["StateDirectory"] == "lightgate"


# --- sd_notify and the watchdog -------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    yield server, {"NOTIFY_SOCKET": str(path)}
    server.close()


def test_notify_sends_one_datagram_to_the_socket_systemd_named(
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    server, environ = notify_socket
    assert sdnotify.notify("READY=1\nSTATUS=up", environ)
    assert server.recv(4096) == b"READY=1\nSTATUS=up"
    assert not sdnotify.notify("READY=1", {})  # not under systemd


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "180000000"}, 90.0),
        ({"WATCHDOG_USEC": "180000000", "WATCHDOG_PID": "4242"}, 90.0),
        ({"WATCHDOG_USEC": "180000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    environ: dict[str, str], expected: float | None
) -> None:
    assert sdnotify.watchdog_seconds(environ, pid=4242) == expected


def test_rest_pings_the_watchdog_until_stopped(
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    server, environ = notify_socket
    stop = threading.Event()
    pings: list[bytes] = []

    def listen() -> None:
        while len(pings) < 3:
            pings.append(server.recv(64))
        stop.set()

    listener = threading.Thread(target=listen)
    listener.start()
    assert sdnotify.rest(stop, 60.0, 0.01, environ) is True  # stopped, not timed out
    listener.join()
    assert pings == [b"WATCHDOG=1"] * 3
    assert sdnotify.rest(threading.Event(), 0.0, None, environ) is False


# --- the journal ----------------------------------------------------------------------


def _fields(datagram: bytes) -> dict[str, str]:
    """Parse the journal's native protocol."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + size].decode()
            assert after[8 + size : 9 + size] == b"\n"
            rest = after[9 + size :]
    return fields


def test_records_reach_the_journal_as_structured_entries(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(path))
    journal.settimeout(5)
    handler = logs.JournalHandler(str(path), identifier="lightgate-attestor")
    log = logging.getLogger("lightgate.test.journal")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning(
            "verifier call failed",
            extra={"fields": {"node": "n1", "code": "UNAVAILABLE", "checks": ["a", "b"]}},
        )
        entry = _fields(journal.recv(65536))
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            log.exception("round failed")
        failed = _fields(journal.recv(65536))
    finally:
        log.removeHandler(handler)
        handler.close()
        journal.close()
    assert entry["MESSAGE"] == "verifier call failed"
    assert entry["PRIORITY"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == "lightgate-attestor"
    assert (entry["LIGHTGATE_NODE"], entry["LIGHTGATE_CODE"]) == ("n1", "UNAVAILABLE")
    assert entry["LIGHTGATE_CHECKS"] == '["a", "b"]'
    assert failed["PRIORITY"] == "3"
    assert "line one\nline two" in failed["LIGHTGATE_EXCEPTION"]  # the length-prefixed form


def test_a_journal_that_is_away_gets_the_record_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = logs.JournalHandler(str(tmp_path / "nobody-listens"))
    record = logging.LogRecord("lightgate", logging.INFO, __file__, 1, "attested", None, None)
    handler.emit(record)
    handler.close()
    assert '"event": "attested"' in capsys.readouterr().err


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream:
        stat = Path(stream.name).stat()
        named = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert logs.stderr_is_journal(named, stream.fileno())
        assert not logs.stderr_is_journal({"JOURNAL_STREAM": "1:2"}, stream.fileno())
        assert not logs.stderr_is_journal({}, stream.fileno())

"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd set it;
and the service watchdog (sd_watchdog_enabled(3)): how often to say "WATCHDOG=1"."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run by systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_seconds(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> float | None:
    """How often to ping the watchdog (half its timeout, as sd_watchdog_enabled(3)
    advises), or None when systemd set none for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != (pid if pid is not None else os.getpid())):
        return None  # the watchdog is another process's (a parent that exec'd us)
    return int(usec) / 2e6


def rest(
    stop: threading.Event,
    seconds: float,
    ping_every: float | None,
    environ: Mapping[str, str] = os.environ,
) -> bool:
    """Wait `seconds` (or until `stop`), saying "WATCHDOG=1" now and every `ping_every`
    seconds meanwhile; True when stopped.  The caller's loop is what the watchdog
    vouches for: a loop stuck elsewhere never gets here, and systemd restarts it."""
    deadline = time.monotonic() + seconds
    while True:
        if ping_every is not None:
            notify("WATCHDOG=1", environ)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return stop.is_set()
        if stop.wait(remaining if ping_every is None else min(remaining, ping_every)):
            return True

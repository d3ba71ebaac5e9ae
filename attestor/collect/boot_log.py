"""The UEFI measured-boot event log, as the kernel exposes it.

Linux publishes the firmware's TCG log at
/sys/kernel/security/tpm0/binary_bios_measurements (securityfs, readable by root or
the `tss` group where the distribution grants it).  The agent sends the bytes as they
are; the verifier parses them.  The log is fixed once the OS runs, so reading it on
every round costs a few hundred microseconds and needs no cache.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PATH = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
#: Matches the verifier's default limit; a larger file is not a firmware log.
MAX_BYTES = 4 * 1024 * 1024


class BootLogUnavailable(OSError):
    """The configured event log cannot be read (missing securityfs, permissions)."""


def read_boot_log(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The log's bytes; BootLogUnavailable when it cannot be read or is too large."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(limit + 1)
    except OSError as exc:
        raise BootLogUnavailable(f"cannot read the boot event log {path}: {exc}") from None
    if len(raw) > limit:
        raise BootLogUnavailable(f"the boot event log {path} is larger than {limit} bytes")
    return raw

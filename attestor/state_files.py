"""Files in the agent's state directory, written so a crash leaves the old file or the
new one, never half of one (the AK blobs, node.json, the asset tag, the runtime log)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write a temporary file beside `path` (mode 0600), fsync it, rename it over `path`,
    then fsync the directory so the rename itself survives a power cut."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

"""What every `attest` command module shares: consoles, options, the user-facing error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML configuration file.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


class CliError(Exception):
    """A user-facing failure: printed as one `error:` line."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def read_file(path: Path, limit: int = 64 * 1024 * 1024) -> bytes:
    """A file's bytes, or one clear CliError (missing, unreadable, too large)."""
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    if len(data) > limit:
        fail(f"{path} is larger than {limit} bytes")
    return data

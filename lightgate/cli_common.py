"""What every `attest` command module shares: consoles, options, the user-facing error."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from lightgate.config import VerifierConfig
    from verifier.store import Store

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


def open_store(settings: VerifierConfig, *, create: bool = False) -> Store:
    """The verifier's store from its configuration, or one clear CliError.  `create`
    makes the state folder (for commands that write, like importing golden values)."""
    from sqlalchemy.exc import SQLAlchemyError

    from verifier.store import Store

    if create:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Store.open(settings.database())
    except SQLAlchemyError as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        fail(f"cannot open the verifier's database ({settings.database()}): {detail}")

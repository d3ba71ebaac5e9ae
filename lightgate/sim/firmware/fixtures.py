"""The committed fixtures: `firmware-fixtures/<name>.bin` for every `boots/<name>.yaml`.

The only module of the builder that touches files.  `write_fixtures()` rebuilds them;
`write_fixtures(check=True)` changes nothing and raises `FixturesOutdated` when a
committed log is missing, differs from its build, or has no description left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from lightgate.sim.firmware.description import load_boot
from lightgate.sim.firmware.errors import BootDescriptionError, FixturesOutdated
from lightgate.sim.firmware.events import build_event_log

#: The repository's firmware-fixtures folder (this file is lightgate/sim/firmware/...).
FIXTURES_DIR: Final = Path(__file__).resolve().parents[3] / "firmware-fixtures"
BOOTS_FOLDER: Final = "boots"


def build_fixtures(directory: Path = FIXTURES_DIR) -> dict[Path, bytes]:
    """Every fixture's path and bytes, built from `directory/boots/*.yaml`."""
    built: dict[Path, bytes] = {}
    for source in sorted((directory / BOOTS_FOLDER).glob("*.yaml")):
        description = load_boot(source)
        if description.name != source.stem:
            raise BootDescriptionError(
                f"{source}: name is {description.name!r}; a fixture's name is its file's "
                f"stem ({source.stem!r}), so variants cannot collide"
            )
        built[directory / f"{description.name}.bin"] = build_event_log(description)
    if not built:
        raise BootDescriptionError(f"no boot descriptions in {directory / BOOTS_FOLDER}")
    return built


def write_fixtures(check: bool = False, *, directory: Path = FIXTURES_DIR) -> list[Path]:
    """Rebuild the fixtures (or, with `check`, only compare); returns their paths."""
    built = build_fixtures(directory)
    if check:
        stale = [path for path, log in built.items() if _committed(path) != log]
        orphans = sorted(set(directory.glob("*.bin")) - set(built))
        if stale or orphans:
            names = ", ".join(path.name for path in [*stale, *orphans])
            raise FixturesOutdated(
                f"{names}: not what {directory / BOOTS_FOLDER} builds; run `make fixtures`"
            )
        return list(built)
    for path, log in built.items():
        if _committed(path) != log:
            path.write_bytes(log)
    return list(built)


def _committed(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None

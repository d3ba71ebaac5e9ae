"""UEFI measured-boot event logs that Lightgate builds from a declarative boot description.

swtpm nodes of the simulator replay these logs into their PCRs, so quote and log agree;
variants of a good boot (a tampered kernel, Secure Boot off, a changed kernel command
line) must be refused by policy.  The logs follow the TCG PC Client PFP 1.05 and the
shapes real OVMF, shim and grub produce, so the verifier reads them as it reads real
firmware logs.

- `description`: the pydantic model of a boot (YAML, `extends` for variants);
- `events`: the event sequence, pure (`build_event_log(description) -> bytes`);
- `uefi`, `certificates`: UEFI structures and deterministic X.509 certificates;
- `fixtures`: the committed `firmware-fixtures/*.bin`, rebuilt or checked.

Run `python -m lightgate.sim.firmware [--check]` (or `make fixtures`).
"""

from lightgate.sim.firmware.description import BootDescription, load_boot
from lightgate.sim.firmware.errors import (
    BootDescriptionError,
    FirmwareFixtureError,
    FixturesOutdated,
)
from lightgate.sim.firmware.events import boot_events, build_event_log
from lightgate.sim.firmware.fixtures import FIXTURES_DIR, build_fixtures, write_fixtures

__all__ = [
    "FIXTURES_DIR",
    "BootDescription",
    "BootDescriptionError",
    "FirmwareFixtureError",
    "FixturesOutdated",
    "boot_events",
    "build_event_log",
    "build_fixtures",
    "load_boot",
    "write_fixtures",
]

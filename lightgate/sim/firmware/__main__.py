"""`python -m lightgate.sim.firmware [--check]`: rebuild or check the committed fixtures."""

from __future__ import annotations

import argparse
import sys

from lightgate.sim.firmware.errors import FirmwareFixtureError
from lightgate.sim.firmware.fixtures import FIXTURES_DIR, write_fixtures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightgate.sim.firmware",
        description=f"Build {FIXTURES_DIR}/<name>.bin from boots/<name>.yaml.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; fail if a fixture is stale"
    )
    args = parser.parse_args(argv)
    try:
        paths = write_fixtures(check=args.check)
    except FirmwareFixtureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verb = "current" if args.check else "built"
    for path in paths:
        print(f"{verb}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

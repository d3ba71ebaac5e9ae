"""Why a boot description or the committed fixtures were refused."""

from __future__ import annotations


class FirmwareFixtureError(Exception):
    """A boot description or a committed fixture is wrong; the message says which."""


class BootDescriptionError(FirmwareFixtureError, ValueError):
    """A boot description cannot be read, merged or validated; the message names the file."""


class FixturesOutdated(FirmwareFixtureError):
    """A committed fixture differs from what its boot description builds."""

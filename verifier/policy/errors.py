"""Refusals of the policy stage: one hierarchy, one check name (`policy`).

A decision that cannot be made is never a pass: the bundle is broken
(`PolicyInvalid`), the engine gave no decision (`PolicyUnavailable`: an error, a
timeout, an undefined result), or its decision is malformed (`PolicyOutputInvalid`).
Each refuses trust for the node being appraised.
"""

from __future__ import annotations

from typing import ClassVar

from lightgate.errors import Refusal


class PolicyError(Refusal):
    """No policy decision could be made."""

    check: ClassVar[str] = "policy"


class PolicyInvalid(PolicyError):
    """The policy bundle cannot be used: unreadable, empty, malformed data, or Rego that
    does not compile."""


class PolicyUnavailable(PolicyError):
    """The engine gave no decision: it failed, timed out, or the rule was undefined."""


class PolicyOutputInvalid(PolicyError):
    """The policy decided, but its result is not a well-formed appraisal."""

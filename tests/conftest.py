"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import settings

# Tests never depend on wall-clock time: a busy CI machine must not fail a property
# test because one example ran slowly (Hypothesis' default deadline is 200 ms).
settings.register_profile("lightgate", deadline=None, print_blob=True)
settings.load_profile("lightgate")

"""Exception types of the package.

Every error the stabilizer raises on purpose derives from `StabilizerError`, so a
caller can catch the package's errors without catching Keras' or Optuna's. Bad
input raises `ConfigError` (also a `ValueError`), whose message names the field
or argument, what was received and what was expected.
"""

from __future__ import annotations

__all__ = [
    "StabilizerError",
    "ConfigError",
    "DataError",
    "ModelError",
    "ProbeFailedError",
    "SearchAbortedError",
]


class StabilizerError(Exception):
    """Root of every error raised on purpose by the stabilizer."""


class ConfigError(StabilizerError, ValueError):
    """A configuration value, a search space or an argument is invalid."""


class DataError(ConfigError):
    """The training or validation data cannot be used (shape, dtype, NaN, size)."""


class ModelError(StabilizerError):
    """The user's `build_fn` returned something a configuration cannot be applied to."""


class ProbeFailedError(StabilizerError):
    """One probe failed (an exception in user code); the trial fails, the search goes on."""


class SearchAbortedError(StabilizerError):
    """The search stopped, e.g. after too many consecutive failed probes."""

"""Search drivers: Optuna (default) and KerasTuner."""

from __future__ import annotations

from stabilizer.config import SearchConfig
from stabilizer.drivers._base import BaseDriver, TrialRecord
from stabilizer.drivers._optuna import OptunaDriver, StabilityPruner
from stabilizer.space import SearchSpace

__all__ = ["BaseDriver", "OptunaDriver", "StabilityPruner", "TrialRecord", "make_driver"]


def make_driver(settings: SearchConfig, space: SearchSpace) -> BaseDriver:
    """The driver named by `settings.driver`."""
    if settings.driver == "keras_tuner":
        from stabilizer.drivers._keras_tuner import KerasTunerDriver

        return KerasTunerDriver(settings, space)
    return OptunaDriver(settings, space)

"""The KerasTuner driver: a KerasTuner oracle proposes candidates, the stabilizer probes them.

See `stabilizer.search.keras_tuner._driver` for the oracles, the space as KerasTuner
hyperparameters, Hyperband's fixed probe length, pruning, queued trials and storage.
"""

from stabilizer.search.keras_tuner._driver import (
    OBJECTIVE,
    PREFIX,
    KerasTunerDriver,
    KerasTunerSuggester,
    declare_space,
)

__all__ = ["OBJECTIVE", "PREFIX", "KerasTunerDriver", "KerasTunerSuggester", "declare_space"]

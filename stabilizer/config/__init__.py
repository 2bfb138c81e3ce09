"""Configuration as data: the candidate, the search settings, the run, and their loaders.

`StabilityConfig` is one point of the search space, `SearchConfig` the settings of a
search, `RunConfig` what ``stabilizer search config.yaml`` runs; the tuples name the
choices of each categorical setting. `load_run` turns a `RunConfig` into the model
factory and data it names (`stabilizer.config._loaders`). The Python API, the YAML
file and the CLI all build these same objects.
"""

from stabilizer.config._loaders import LoadedRun, load_data, load_run, load_target, one_line
from stabilizer.config._settings import (
    CLIPPING_MODES,
    DEFAULT_TRAIN_STEPS,
    INITIALIZER_MODES,
    LR_SCHEDULES,
    NORMALIZATIONS,
    OUTPUT_BIASES,
    RESUME_MODES,
    SKLEARN_DATASETS,
    TARGET_HELP,
    RunConfig,
    SearchConfig,
    StabilityConfig,
    check_initializer,
    check_number,
)

__all__ = [
    "CLIPPING_MODES",
    "DEFAULT_TRAIN_STEPS",
    "INITIALIZER_MODES",
    "LR_SCHEDULES",
    "NORMALIZATIONS",
    "OUTPUT_BIASES",
    "RESUME_MODES",
    "SKLEARN_DATASETS",
    "TARGET_HELP",
    "LoadedRun",
    "RunConfig",
    "SearchConfig",
    "StabilityConfig",
    "check_initializer",
    "check_number",
    "load_data",
    "load_run",
    "load_target",
    "one_line",
]

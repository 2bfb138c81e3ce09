"""stabilizer: make Keras training stable automatically.

`stabilize(build_fn, data)` probes the user's model under many stabilization
configurations (initializer, learning-rate schedule, clipping, batch size,
BatchNormalization settings), scores each probe for stability and progress, and
returns the most stable configuration that still learns.
"""

from stabilizer.api import stabilize
from stabilizer.config import RunConfig, SearchConfig, StabilityConfig
from stabilizer.diagnosis import Diagnosis, Finding, diagnose
from stabilizer.errors import (
    ConfigError,
    DataError,
    ModelError,
    ProbeFailedError,
    ProbeOutOfMemoryError,
    SearchAbortedError,
    SearchInterrupted,
    StabilizerError,
)
from stabilizer.lr_range import LRRangeResult, lr_range_test
from stabilizer.result import StabilityResult
from stabilizer.scoring import ScoreComponents
from stabilizer.space import SearchSpace, load_space

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "Diagnosis",
    "Finding",
    "LRRangeResult",
    "ModelError",
    "ProbeFailedError",
    "ProbeOutOfMemoryError",
    "RunConfig",
    "ScoreComponents",
    "SearchAbortedError",
    "SearchConfig",
    "SearchInterrupted",
    "SearchSpace",
    "StabilityConfig",
    "StabilityResult",
    "StabilizerError",
    "__version__",
    "diagnose",
    "load_space",
    "lr_range_test",
    "stabilize",
]

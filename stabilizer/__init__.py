"""stabilizer: make Keras training stable automatically.

`stabilize(build_fn, data)` probes the user's model under many stabilization
configurations (initializer, learning-rate schedule, clipping, batch size,
BatchNormalization settings), scores each probe for stability and progress, and
returns the most stable configuration that still learns.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stabilizer.quiet import quiet_imports

__version__ = "0.1.0"

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: `stabilizer --help` or `--version` answer without importing Keras and its backend.
_EXPORTS = {
    "stabilize": "stabilizer.api",
    **dict.fromkeys(("RunConfig", "SearchConfig", "StabilityConfig"), "stabilizer.config"),
    **dict.fromkeys(("Diagnosis", "Finding", "diagnose"), "stabilizer.diagnosis"),
    **dict.fromkeys(("ConfigError", "DataError", "ModelError", "ProbeFailedError",
                     "ProbeOutOfMemoryError", "SearchAbortedError", "SearchInterrupted",
                     "StabilizerError"), "stabilizer.errors"),
    **dict.fromkeys(("LRRangeResult", "lr_range_test"), "stabilizer.lr_range"),
    "StabilityResult": "stabilizer.result",
    **dict.fromkeys(("monitor", "StabilityMonitor", "StabilityWarning"), "stabilizer.guard"),
    "ScoreComponents": "stabilizer.scoring",
    **dict.fromkeys(("SearchSpace", "load_space"), "stabilizer.space"),
}

if TYPE_CHECKING:
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
    from stabilizer.guard import StabilityMonitor, StabilityWarning, monitor
    from stabilizer.lr_range import LRRangeResult, lr_range_test
    from stabilizer.result import StabilityResult
    from stabilizer.scoring import ScoreComponents
    from stabilizer.space import SearchSpace, load_space


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stabilizer' has no attribute {name!r}")
    with quiet_imports():
        imported = importlib.import_module(module)
    value = getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "StabilityMonitor",
    "StabilityResult",
    "StabilityWarning",
    "StabilizerError",
    "__version__",
    "diagnose",
    "load_space",
    "lr_range_test",
    "monitor",
    "quiet_imports",
    "stabilize",
]

"""stabilizer: make Keras training stable automatically.

`stabilize(build_fn, data)` probes the user's model under many stabilization
configurations (initializer, learning-rate schedule, clipping, batch size,
BatchNormalization settings), scores each probe for stability and progress, and
returns the most stable configuration that still learns.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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
    from stabilizer.lr_range import LRRangeResult, lr_range_test
    from stabilizer.result import StabilityResult
    from stabilizer.scoring import ScoreComponents
    from stabilizer.space import SearchSpace, load_space


#: What TensorFlow's C++ start-up writes that `quiet_imports` holds back: absl INFO lines
#: ("I0000 ..."), absl's note that logging is not initialized yet, and the second line of
#: the CPU-instructions INFO message.
_START_UP_NOISE = re.compile(r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog"
                             r"|To enable the following instructions: )")


def _replay(captured: str) -> None:
    """Write back what an import wrote to the stderr file, less `_START_UP_NOISE`."""
    kept = [line for line in captured.splitlines(keepends=True)
            if not _START_UP_NOISE.match(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """The frameworks' start-up noise off while this package imports them.

    When TensorFlow is not imported yet (the package is the one importing it) and
    ``TF_CPP_MIN_LOG_LEVEL`` is not set: the variable is 1 during the import (so the XLA
    INFO lines of the first compiled step stay off too: TensorFlow reads it once) and
    removed after it, and what the import writes to the stderr file descriptor (where
    TensorFlow's C++ logs go) is captured and written back without its INFO lines
    (`_START_UP_NOISE`): warnings, errors and anything else come through. A user who
    imported TensorFlow first, or set the variable, keeps what they chose. tqdm's
    "IProgress not found" warning (Optuna imports ``tqdm.auto``; a notebook without
    ipywidgets) is ignored during the import.
    """
    quiet = "tensorflow" not in sys.modules and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        if not quiet:
            yield
            return
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr file descriptor to capture
            saved = None
        capture = tempfile.TemporaryFile(mode="w+b")
        try:
            if saved is not None:
                os.dup2(capture.fileno(), 2)
            yield
        finally:
            if saved is not None:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
            capture.seek(0)
            _replay(capture.read().decode("utf-8", "replace"))
            capture.close()


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
    "StabilityResult",
    "StabilizerError",
    "__version__",
    "diagnose",
    "load_space",
    "lr_range_test",
    "quiet_imports",
    "stabilize",
]

"""The frameworks' logs quieted around the probes, and put back afterwards."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from stabilizer.quiet import filtered_stderr

__all__ = ["quiet_frameworks"]

#: Python loggers of the frameworks whose warnings the probes provoke by design (many
#: small models built one after another: TensorFlow's "triggered tf.function retracing").
_LOGGERS = ("tensorflow", "absl")


@contextlib.contextmanager
def quiet_frameworks(verbose: int = 1) -> Iterator[None]:
    """The frameworks' warnings below ERROR and their C++ INFO lines
    (`stabilizer.quiet.filtered_stderr`) off inside the block when `verbose` < 2, and
    each logger's own level back after it: the package quiets its own calls only, never
    the user's whole process. Nothing is imported: a logger of a framework not in use is
    a bare `logging.Logger`."""
    if verbose >= 2:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))
    try:
        with filtered_stderr():  # TensorFlow/XLA C++ INFO lines ("XLA service ...")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

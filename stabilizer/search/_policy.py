"""What both drivers do the same way: failures, the pruning rule and Ctrl-C.

- `FailurePolicy`: a failed probe ends its trial FAILED with its error (`error_text`:
  secrets masked, the first line and the end kept) and the search goes on;
  `max_consecutive_failures` failed trials in a row stop it with `SearchAbortedError`.
  A trial that ran out of memory (its batch size is skipped from then on, where the
  driver can) or that ran no probe neither counts nor breaks the run.

- `clearly_worse`: a candidate whose quality at an evaluation is clearly (by `margin`
  nats) below the median of the completed candidates at the same evaluation is pruned,
  once `n_startup` of them have reported it; a non-finite quality always is. The
  Optuna driver's `StabilityPruner` and the KerasTuner driver apply this one rule.
- `quiet_optuna`: Optuna's per-trial INFO lines and experimental warnings off inside a
  block, restored after it.
- `catch_interrupts` / `raise_if_interrupted`: a Ctrl-C that Python would drop is
  raised again at the next safe point (between trials, after each evaluation).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from stabilizer.errors import SearchAbortedError, mask_secrets
from stabilizer.probe import quiet_frameworks

__all__ = [
    "PRUNE_MARGIN",
    "PRUNE_STARTUP",
    "FailurePolicy",
    "catch_interrupts",
    "quiet_optuna",
    "clearly_worse",
    "error_text",
    "raise_if_interrupted",
]

#: Nats of quality below the median at which a candidate is pruned.
PRUNE_MARGIN = 1.0
#: Completed candidates needed at an evaluation before anything is pruned there.
PRUNE_STARTUP = 4


def error_text(exc: BaseException | str, limit: int = 4000) -> str:
    """A failed trial's error as stored: secrets masked, the first line and the end kept."""
    text = mask_secrets(str(exc))
    if len(text) <= limit:
        return text
    first = text.splitlines()[0][:500]
    return f"{first}\n[...]\n{text[-(limit - len(first) - 7):]}"


class FailurePolicy:
    """Counts failed trials in a row; at `limit` the search stops (see the module docstring).

    Both drivers call `record` as each trial ends, and stop when `tripped`;
    `aborted()` is the error they raise then.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.run = 0
        self.last_error = ""

    @property
    def tripped(self) -> bool:
        return self.run >= self.limit

    def record(self, failed: bool, error: str = "", *, skipped: bool = False) -> bool:
        """Note how a trial ended; True when the search must stop now.

        `skipped`: the trial ran out of memory or ran no probe, which neither counts
        nor breaks a run of failures.
        """
        if skipped:
            return self.tripped
        if failed:
            self.run += 1
            self.last_error = str(error)[-2000:]
        else:
            self.run = 0
        return self.tripped

    def aborted(self) -> SearchAbortedError:
        return SearchAbortedError(f"{self.run} trials failed in a row; last error:\n"
                                  f"{self.last_error}")


def clearly_worse(value: float, others: Sequence[float], *, margin: float = PRUNE_MARGIN,
                  n_startup: int = PRUNE_STARTUP) -> bool:
    """True when `value` is clearly below the median of `others` (see the module docstring)."""
    if not math.isfinite(value):
        return True
    if len(others) < n_startup:
        return False
    return value < float(np.median(others)) - margin


_sigint_seen = False


def _on_sigint(signum: int, frame: Any) -> None:
    global _sigint_seen
    _sigint_seen = True
    signal.default_int_handler(signum, frame)


@contextlib.contextmanager
def catch_interrupts() -> Iterator[None]:
    """Remember a Ctrl-C, so that one Python drops is raised again at the next safe point.

    Python raises Ctrl-C's `KeyboardInterrupt` wherever the main thread is; when that
    is a finalizer run by the garbage collector (frequent while TensorFlow builds and
    drops graphs) the exception is printed as "ignored" and lost. Inside this block a
    Ctrl-C is also recorded, and `raise_if_interrupted` (called between trials and
    after each evaluation of a probe) raises it again. Only the default handler is
    replaced, only in the main thread.
    """
    global _sigint_seen
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _sigint_seen = False
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _sigint_seen = False


def raise_if_interrupted() -> None:
    """Raise `KeyboardInterrupt` if a Ctrl-C came inside `catch_interrupts` and was lost."""
    global _sigint_seen
    if _sigint_seen:
        _sigint_seen = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def quiet_optuna(verbose: int = 1) -> Iterator[None]:
    """Optuna's INFO line per trial and its experimental-feature warnings, and the
    frameworks' warnings (`stabilizer.probe.quiet_frameworks`), off inside the block when
    `verbose` < 2, and the caller's settings back after it: the library quiets only its
    own calls, never the user's whole process."""
    import warnings

    import optuna

    if verbose >= 2:
        yield
        return
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        with warnings.catch_warnings(), quiet_frameworks(verbose):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)

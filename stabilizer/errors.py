"""Exception types of the package.

Every error the stabilizer raises on purpose derives from `StabilizerError`, so a
caller can catch the package's errors without catching Keras' or Optuna's. Bad
input raises `ConfigError` (also a `ValueError`), whose message names the field
or argument, what was received and what was expected.
"""

from __future__ import annotations

import re

__all__ = [
    "clean_message",
    "mask_secrets",
    "StabilizerError",
    "ConfigError",
    "DataError",
    "ModelError",
    "ProbeFailedError",
    "ProbeOutOfMemoryError",
    "SearchAbortedError",
    "SearchInterrupted",
]


class StabilizerError(Exception):
    """Root of every error raised on purpose by the stabilizer."""


class ConfigError(StabilizerError, ValueError):
    """A configuration value, a search space or an argument is invalid.

    `problems` lists each problem on its own (with its field path) when a config had
    several; the message then counts them and names each.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.problems))


class DataError(ConfigError):
    """The training or validation data cannot be used (shape, dtype, NaN, size)."""


class ModelError(StabilizerError):
    """The user's `build_fn` returned something a configuration cannot be applied to."""


class ProbeFailedError(StabilizerError):
    """One probe failed (an exception in user code); the trial fails, the search goes on.

    The message says what failed in words; `traceback` keeps the traceback, which the
    drivers store on the failed trial (Optuna user attribute ``traceback``).
    """

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.traceback))


class ProbeOutOfMemoryError(ProbeFailedError):
    """A probe ran out of memory; its batch size is marked infeasible for the rest of the search.

    `batch_size` is the batch size the probe trained with.
    """

    def __init__(self, message: str, batch_size: int, traceback: str = "") -> None:
        super().__init__(message, traceback)
        self.batch_size = batch_size

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.batch_size, self.traceback))


class SearchAbortedError(StabilizerError):
    """The search stopped, e.g. after too many consecutive failed probes."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search. `result` is the `StabilityResult` of what had finished.

    A `KeyboardInterrupt` (not a `StabilizerError`), so ``except Exception`` does not
    swallow the user's Ctrl-C. The trial that was running is kept as FAIL with the
    user attribute ``interrupted``; finished trials stay in the study, and re-running
    the same study resumes it. `result` is None when the interrupt came before the
    baseline (the user's own configuration) was probed.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Lines of a traceback or of a TensorFlow graph trace: never part of a message.
_TRACE_LINE = re.compile(r"^(Traceback \(most recent call last\)|File \"|Detected at node|"
                         r"Graph execution error|\[\[\{\{node|Stack trace for op)")


def clean_message(exc: BaseException | str, limit: int = 600) -> str:
    """The words of an error for a message: ANSI colour codes, traceback and graph-trace
    lines and blank lines removed, the rest joined on one line and cut at `limit`.

    Keras colours the names in its messages and TensorFlow prefixes a graph trace;
    neither belongs in a message (the traceback stays with `ProbeFailedError.traceback`).
    """
    text = _ANSI.sub("", str(exc))
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or _TRACE_LINE.match(stripped) or line[:1].isspace() \
                and not kept:
            continue
        if line.startswith("  ") and (stripped.startswith(("File ", "^", "~")) or "line " in
                                      stripped[:40]):
            continue
        kept.append(stripped)
    joined = " ".join(kept) or text.strip()
    return joined if len(joined) <= limit else joined[:limit - 3].rstrip() + "..."


_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)([^\s'\"]*)@")
_PARAM_PASSWORD = re.compile(r"((?:password|passwd|pwd)=)[^&\s'\"]+", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Hide the password of database URLs in `text` (user:password@ and ?password=)."""
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))

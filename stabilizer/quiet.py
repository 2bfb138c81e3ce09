"""The frameworks' start-up and C++ INFO lines kept off stderr while the package's own calls
run (`quiet_imports`, `filtered_stderr`); the package quiets only its own calls.

TensorFlow and XLA write their start-up and compile lines ("I0000 ... oneDNN custom
operations are on", "XLA service ... initialized") from C++, straight to the stderr file
descriptor, where neither Python's `logging` nor `warnings` reach them. `filtered_stderr`
puts a pipe in front of that descriptor for the length of a block: a thread forwards what
arrives as it arrives, less the lines of `NOISE`. Warnings, errors, progress bars and
anything else come through unchanged. Imports no framework.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

__all__ = ["NOISE", "filtered_stderr", "quiet_imports"]

#: Lines held back: absl INFO lines ("I1207 12:00:00.000 ..." / "I0000 00:00:..."), absl's
#: note that logging is not initialized yet, and the second line of TensorFlow's
#: CPU-instructions INFO message.
NOISE = re.compile(rb"^(I\d{4} |WARNING: All log messages before absl::InitializeLog"
                   rb"|To enable the following instructions: )")

#: A partial line that may still become a `NOISE` line is held until its end arrives;
#: anything else (a progress bar's "\r..." update) is forwarded at once.
_MAYBE_NOISE = (b"I", b"W", b"T")

_active = threading.local()


def _pump(source: int, target: int) -> None:
    """Forward what arrives on `source` to `target`, less `NOISE` lines, until every writer
    has closed the pipe. It never stops reading first (a writer would then block or fail):
    if `target` fails, the rest is drained and dropped."""
    pending, alive = b"", True

    def forward(data: bytes) -> None:
        nonlocal alive
        if alive and data:
            try:
                os.write(target, data)
            except OSError:  # the original stderr went away: drain, forward nothing
                alive = False

    try:
        while True:
            chunk = os.read(source, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
            if pending and not pending.startswith(_MAYBE_NOISE):
                kept, pending = kept + pending, b""
            forward(kept)
        if pending and not NOISE.match(pending):
            forward(pending)
    finally:
        os.close(source)
        os.close(target)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Drop `NOISE` lines written to the stderr file descriptor inside the block.

    Nested blocks share the outer one's filter. Where the descriptor cannot be replaced
    (no fd 2), the block runs unfiltered. Child processes started inside inherit the
    filter until they exit.
    """
    if getattr(_active, "depth", 0):
        _active.depth += 1
        try:
            yield
        finally:
            _active.depth -= 1
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    forward = os.dup(saved)  # the pump's own copy, closed by the pump when it ends
    source, sink = os.pipe()
    os.dup2(sink, 2)
    os.close(sink)
    pump = threading.Thread(target=_pump, args=(source, forward), daemon=True,
                            name="stabilizer-stderr-filter")
    pump.start()
    _active.depth = 1
    try:
        yield
    finally:
        _active.depth = 0
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # the pipe's last writer here: the pump reads to its end
        os.close(saved)
        pump.join(timeout=5)


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """The frameworks' start-up noise off while this package imports them.

    When TensorFlow is not imported yet (the package is the one importing it) and
    ``TF_CPP_MIN_LOG_LEVEL`` is not set, the variable is 1 during the import (TensorFlow
    reads it once, so its later INFO lines stay off too) and removed after it, and the
    C++ INFO lines the import writes to the stderr descriptor are dropped
    (`filtered_stderr`): warnings, errors and anything else come
    through. A user who imported TensorFlow first, or set the variable, keeps what they
    chose. tqdm's "IProgress not found" warning (Optuna imports ``tqdm.auto``; a notebook
    without ipywidgets) is ignored during the import.
    """
    quiet = "tensorflow" not in sys.modules and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        if not quiet:
            yield
            return
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
        try:
            with filtered_stderr():
                yield
        finally:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)

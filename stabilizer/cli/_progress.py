"""A progress line a person can follow during a long search.

`ProgressLine` is the `progress=` hook of `stabilize()`: it is called with each
trial's `TrialRecord` as the trial finishes and shows one line (wrapped here):

    [ 7/20] #######------------- best 0.812 | diverged 2 | pruned 1 | failed 0 |
    3:05 elapsed, ~5:40 left

On a terminal the line is rewritten in place; elsewhere (CI logs, pipes) one
line is printed per finished trial. `quiet=True` prints nothing. A resumed study
is counted from where it stands: pass its existing records as `existing`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING

from stabilizer.progress import TrialCounts

if TYPE_CHECKING:
    from stabilizer.result import TrialRecord

__all__ = ["ProgressLine", "format_duration"]

_BAR_WIDTH = 20


def format_duration(seconds: float) -> str:
    """'0:42', '12:05' or '1:02:03'."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """Counts finished trials against the budget and prints a progress line.

    Args:
        budget: trials to reach (COMPLETE and PRUNED trials count, as for the driver).
        stream: where to print (default stderr, so stdout stays clean for results).
        quiet: print nothing (CI).
        existing: records already in a resumed study.
        clock: seconds, monotonic (tests pass a fake clock).
    """

    def __init__(self, budget: int, *, stream: IO[str] | None = None, quiet: bool = False,
                 existing: Iterable[TrialRecord] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.clock = clock
        self.started = clock()
        self.counts = TrialCounts()
        self._session_seconds: list[float] = []
        self._live = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self._open = False
        for record in existing:
            self.counts.add(record)

    @property
    def done(self) -> int:
        """Trials counted towards the budget (COMPLETE and PRUNED)."""
        return self.counts.done

    def __call__(self, record: TrialRecord) -> None:
        """Count one finished trial and show the line."""
        self.counts.add(record)
        if record.seconds is not None and record.state != "RUNNING":
            self._session_seconds.append(record.seconds)
        self.show()

    def remaining_seconds(self) -> float:
        """Mean duration of this session's trials times the trials left (NaN before one)."""
        left = max(0, self.budget - self.done)
        if left == 0:
            return 0.0
        if not self._session_seconds:
            return float("nan")
        return left * sum(self._session_seconds) / len(self._session_seconds)

    def line(self) -> str:
        shown = min(self.done, self.budget)
        filled = int(_BAR_WIDTH * shown / self.budget) if self.budget else _BAR_WIDTH
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        width = len(str(self.budget))
        left = self.remaining_seconds()
        eta = f"~{format_duration(left)} left" if math.isfinite(left) else "? left"
        return (f"[{self.done:>{width}}/{self.budget}] {bar} {self.counts.postfix()} | "
                f"{format_duration(self.clock() - self.started)} elapsed, {eta}")

    def note(self, text: str) -> None:
        """A message on its own line (e.g. 'probing the baseline')."""
        if self.quiet:
            return
        self._end_line()
        print(text, file=self.stream, flush=True)

    def show(self) -> None:
        if self.quiet:
            return
        if self._live:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
            self._open = True
        else:
            print(self.line(), file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def close(self) -> None:
        """End the live line (call once the search is over)."""
        if not self.quiet:
            self._end_line()

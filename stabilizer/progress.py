"""What a person sees while a search runs: counts of its trials and a progress bar.

`TrialCounts` counts finished trials the way the driver does (COMPLETE and PRUNED reach
the budget), with the diverged, pruned and failed ones and the best score. `ProgressBar`
is the `progress=` hook `stabilize()` uses when `SearchConfig.verbose` >= 1: a
``tqdm.auto`` bar (a widget in a notebook with ipywidgets, a text bar on stderr
elsewhere) with those counts and the time left, its description following the search's
phases (`run_search` calls ``progress.phase(text)`` where the hook has one). The CLI's
line (`stabilizer.cli.ProgressLine`) counts with the same `TrialCounts`. Imports no
framework (tqdm only when a bar opens), so the CLI can import it before Keras.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stabilizer.result import TrialRecord

__all__ = ["ProgressBar", "TrialCounts"]


@dataclasses.dataclass
class TrialCounts:
    """Finished trials of a search, counted as they come."""

    done: int = 0
    diverged: int = 0
    pruned: int = 0
    failed: int = 0
    best: float | None = None

    def add(self, record: TrialRecord) -> None:
        if record.state in ("COMPLETE", "PRUNED"):
            self.done += 1
        if record.state == "PRUNED":
            self.pruned += 1
        elif record.state == "FAIL":
            self.failed += 1
        if record.verdict == "diverged":
            self.diverged += 1
        elif record.state == "COMPLETE" and record.score is not None \
                and math.isfinite(record.score):
            self.best = record.score if self.best is None else max(self.best, record.score)

    def postfix(self) -> str:
        best = "n/a" if self.best is None else f"{self.best:.3f}"
        return (f"best {best} | diverged {self.diverged} | pruned {self.pruned} | "
                f"failed {self.failed}")


class ProgressBar:
    """A ``tqdm.auto`` bar of a search's trials against its budget.

    Args:
        budget: trials to reach (`SearchConfig.trials`).
        stream: where a text bar goes (default stderr, so stdout stays the user's).
        existing: records already in a resumed study (`resume` adds them later too).

    The bar opens on the first phase or trial and closes with `close()`. The time left is
    tqdm's: this session's seconds per trial times the trials left.
    """

    def __init__(self, budget: int, *, stream: IO[str] | None = None,
                 existing: Iterable[TrialRecord] = ()) -> None:
        self.budget = budget
        self.stream = stream if stream is not None else sys.stderr
        self.counts = TrialCounts()
        self._bar: Any = None
        self._description = "stabilizer"
        for record in existing:
            self.counts.add(record)

    def _open(self) -> Any:
        if self._bar is None:
            with warnings.catch_warnings():  # a notebook without ipywidgets: a text bar
                warnings.filterwarnings("ignore", message="IProgress not found")
                from tqdm.auto import tqdm
            options = dict(total=self.budget, initial=min(self.counts.done, self.budget),
                           desc=self._description, unit="trial", file=self.stream,
                           dynamic_ncols=True, leave=True)
            try:
                self._bar = tqdm(**options)
            except ImportError:  # tqdm.notebook without a usable ipywidgets
                from tqdm.std import tqdm as text_tqdm

                self._bar = text_tqdm(**options)
            self._bar.set_postfix_str(self.counts.postfix(), refresh=True)
        return self._bar

    def resume(self, records: Iterable[TrialRecord]) -> None:
        """Count the trials a resumed study already holds (before the bar moves)."""
        if self._bar is None and self.counts.done == 0:
            for record in records:
                self.counts.add(record)

    def phase(self, text: str) -> None:
        """Show what the search is doing ('diagnosing your configuration', ...)."""
        self._description = text
        self._open().set_description_str(text, refresh=True)

    def __call__(self, record: TrialRecord) -> None:
        """Count one finished trial."""
        before = self.counts.done
        self.counts.add(record)
        bar = self._open()
        if self.counts.done > before and bar.n < self.budget:
            bar.update(self.counts.done - before)
        bar.set_postfix_str(self.counts.postfix(), refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

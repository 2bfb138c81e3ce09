"""The driver interface: something that proposes candidates and records their scores."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import Any

from stabilizer.result import TrialRecord
from stabilizer.search._evaluator import Evaluator
from stabilizer.search._fingerprint import Fingerprint

__all__ = ["BaseDriver", "TrialRecord"]


class BaseDriver(abc.ABC):
    """Runs a search with an `Evaluator` and reads back every trial.

    The baseline (the user's own configuration) is stored next to the trials, so
    a resumed search does not probe it again; drivers without a store keep it in
    memory.
    """

    _baseline: dict[str, Any] | None = None
    _attrs: dict[str, Any] | None = None
    #: Called with each trial's record as soon as it finishes (progress display).
    progress: Callable[[TrialRecord], None] | None = None
    #: `time.monotonic()` after which no new trial starts (`SearchConfig.time_limit`).
    deadline: float | None = None

    def out_of_time(self) -> bool:
        """True once the search's time limit is spent: start no new trial."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    @abc.abstractmethod
    def run(self, evaluator: Evaluator) -> list[TrialRecord]:
        """Run (or resume) the search until its budget is spent; return all trials."""

    def load_baseline(self) -> dict[str, Any] | None:
        return self._baseline

    def save_baseline(self, record: dict[str, Any]) -> None:
        self._baseline = record

    def add_baseline_trial(self, components: dict[str, Any], curves: list[Any]) -> None:
        """Show the user's configuration among the trials of the store, for tools that read
        the store alone (optuna-dashboard); a driver whose store has no room for it does
        nothing. It never counts towards the budget and is never a trial record."""

    def load_attr(self, key: str) -> Any:
        """A JSON value stored next to the trials under `key` (None when absent)."""
        return (self._attrs or {}).get(key)

    def save_attr(self, key: str, value: Any) -> None:
        self._attrs = {**(self._attrs or {}), key: value}

    def has_history(self) -> bool:
        """True when the store already holds trials or a baseline (a search to resume)."""
        return self._baseline is not None

    def check_fingerprint(self, fingerprint: Fingerprint, *, force: bool = False) -> None:
        """Resume only a study made for this search (`stabilizer.search.Fingerprint`).

        A new store takes `fingerprint`; a store made for another search raises
        `ConfigError` naming what differs, unless `force` (resume on purpose).
        """
        name = getattr(getattr(self, "settings", None), "study_name", None) or "memory"
        if fingerprint.check(self.load_attr("fingerprint"), study=name,
                             where=self.storage_label(), has_history=self.has_history(),
                             force=force):
            self.save_attr("fingerprint", fingerprint.to_dict())

    def enqueue_first(self, trials: list[dict[str, Any]]) -> bool:
        """Ask for `trials` (parameters each) as the first trials of a search with none yet.

        Returns True when the driver queued it; a driver that cannot returns False
        and searches as usual.
        """
        return False

    def storage_label(self) -> str:
        """Where the trials live, safe to print (no password)."""
        return "memory"

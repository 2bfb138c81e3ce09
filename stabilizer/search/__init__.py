"""The search: drivers that propose candidates, the evaluator that probes and scores them,
the runner that holds a whole search together, and the worker processes that share one.

- `run_search` / `prepare_search` (`_runner.py`): one search, start to end.
- `BaseDriver` (`_base.py`) and its two implementations, `stabilizer.search.optuna`
  (the default) and `stabilizer.search.keras_tuner`; `make_driver` picks one.
- `Evaluator` (`_evaluator.py`): one candidate's probes over every seed, scored.
- `choose_best` (`_choice.py`): which candidate a search hands back; the ladder
  (`_ladder.py`) makes that choice at the longest rung, after the finalists were
  measured on more seeds (`_finals.py`, `FINALISTS`).
- `Fingerprint` (`_fingerprint.py`): what a study was made for, checked on resume.
- `clearly_worse`, `catch_interrupts`, `quiet_optuna` (`_policy.py`): what both drivers
  do alike.
- `run_workers` (`_workers.py`): several processes on one study.
- `load_result` (`_results.py`): a search read back from its storage alone.
"""

from __future__ import annotations

from stabilizer.search._base import BaseDriver
from stabilizer.search._choice import CLEAR_MARGIN, Choice, choose_best, clear_gain, restore_nan
from stabilizer.search._evaluator import Evaluation, Evaluator, summarize_trace
from stabilizer.search._finals import FINALISTS
from stabilizer.search._fingerprint import DEFAULT_STUDY_PREFIX, Fingerprint, study_fingerprint
from stabilizer.search._policy import (
    catch_interrupts,
    clearly_worse,
    quiet_optuna,
    raise_if_interrupted,
)
from stabilizer.search._results import load_result, open_existing_study
from stabilizer.search._runner import PreparedSearch, make_driver, prepare_search, run_search
from stabilizer.search._workers import (
    ObjectSource,
    RunConfigSource,
    WorkerSource,
    run_workers,
    storage_for_workers,
)
from stabilizer.search.optuna import OptunaDriver

__all__ = [
    "CLEAR_MARGIN",
    "DEFAULT_STUDY_PREFIX",
    "FINALISTS",
    "BaseDriver",
    "Choice",
    "Evaluation",
    "Evaluator",
    "Fingerprint",
    "ObjectSource",
    "OptunaDriver",
    "PreparedSearch",
    "RunConfigSource",
    "WorkerSource",
    "catch_interrupts",
    "choose_best",
    "clear_gain",
    "clearly_worse",
    "load_result",
    "make_driver",
    "open_existing_study",
    "prepare_search",
    "quiet_optuna",
    "raise_if_interrupted",
    "restore_nan",
    "run_search",
    "run_workers",
    "storage_for_workers",
    "study_fingerprint",
    "summarize_trace",
]


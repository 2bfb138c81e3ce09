"""The KerasTuner driver: a KerasTuner oracle proposes candidates, the stabilizer probes them.

- Oracle: `RandomSearchOracle`, `BayesianOptimizationOracle` or `HyperbandOracle`
  (`settings.tuner`), seeded with ``settings.seed + 1`` (KerasTuner reads seed 0 as
  "no seed" and would draw a random one).
- The oracle is driven directly with `create_trial` / `update_trial` / `end_trial`, the
  supported way to use an oracle without its Keras training loop: no `Tuner` subclass
  and no `model.fit` of our own. Each trial is one `Evaluator.evaluate`, so the probes
  and the score are exactly those of the Optuna driver; the objective
  ``stability_score`` is maximized. A diverged candidate reports its (finite) diverged
  score, so the oracle learns from it.
- Space: every searched stabilization dimension is a KerasTuner hyperparameter named
  ``stabilizer/<dimension>``: `Choice` for categorical dimensions, `Float` (with
  ``sampling="log"`` where the space says log) for ranges. The conditional children
  (`decay_rate`, `warmup_fraction`, `clip_value`) are declared with
  ``parent_name``/``parent_values``, so every oracle samples them only where they mean
  something. The user's `build_fn(hp)` hyperparameters live in the same
  `HyperParameters` under their own names; they are declared before the first trial by
  building the model once, as KerasTuner's tuners do (hyperparameters that appear only
  inside a user condition are added when first met, with their default value then).
- Hyperband: the length of a probe is fixed, because the score (loss reduction,
  oscillation, ...) depends on it and candidates must be compared on equal terms. The
  Hyperband oracle therefore runs with ``max_epochs=1``: its epoch budget is ignored,
  every bracket is one full-length probe of a new candidate, and stopping poor
  candidates early is done by the stabilizer's pruning at each evaluation (the rule of
  both drivers' `stabilizer.search.clearly_worse`, when ``settings.prune``).
- Pruning: KerasTuner has no "pruned" state. A pruned trial is ended FAILED in the
  oracle (so the Bayesian model never fits a partial value) and recorded PRUNED here.
- Budget: ``settings.trials`` counts COMPLETE and PRUNED trials, as with Optuna. A
  random or Hyperband oracle that finds no untried candidate (a small categorical
  space, exhausted) ends the search early.
- Failures: the Optuna driver's rule (`stabilizer.search._policy.FailurePolicy`): a
  probe raising `ProbeFailedError` ends its trial FAILED and the search goes on;
  ``settings.max_consecutive_failures`` failures in a row raise `SearchAbortedError`;
  an out-of-memory trial is not counted (KerasTuner's oracle cannot skip its batch
  size, so it may be proposed again).
- Queued trials (`enqueue_first`: the diagnosis's first proposals): kept in
  ``queued_trials.json`` in the project directory and run first, one per new trial:
  the oracle proposes the trial as usual (`populate_space`) and the queued values
  replace its proposal on the dimensions they name, so every hyperparameter still has
  a value and the oracle records and learns from the values that ran. A queued
  trial is taken off the file once the oracle has recorded it, so a resumed search
  neither loses nor repeats it (a trial cut off by a crash is retried by KerasTuner
  with its values).
- Storage: the project directory ``out_dir/keras_tuner/<study_name>`` holds
  KerasTuner's own ``oracle.json`` and ``trial_<id>/trial.json``, and the
  stabilizer's ``trial_<id>/stabilizer_record.json`` (configuration, score
  components, curves, user parameters, intermediate values, error),
  ``baseline.json`` and ``stabilizer.json`` (the tuner and space, checked on resume).
  Re-running resumes: finished trials are not redone, and a trial cut off by a crash
  is run again with the same values (KerasTuner's retry queue). One process per
  project directory.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras_tuner

from stabilizer.apply import call_build_fn
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.errors import (
    ConfigError,
    ProbeFailedError,
    ProbeOutOfMemoryError,
)
from stabilizer.result import TrialRecord
from stabilizer.search._base import BaseDriver
from stabilizer.search._evaluator import Evaluator
from stabilizer.search._policy import FailurePolicy, clearly_worse, error_text
from stabilizer.space import (
    CONDITIONS,
    DIMENSIONS,
    Choice,
    Dimension,
    FloatRange,
    SearchSpace,
)

__all__ = ["KerasTunerDriver", "KerasTunerSuggester", "declare_space", "PREFIX", "OBJECTIVE"]

#: Name prefix of the stabilization hyperparameters, so they never clash with the user's.
PREFIX = "stabilizer/"
#: The metric reported to the oracle (maximized).
OBJECTIVE = "stability_score"
TUNERS = ("random", "bayesian", "hyperband")

_TUNER_ID = "stabilizer"
_DONE = ("COMPLETE", "PRUNED")
_RECORD = "stabilizer_record.json"
_BASELINE = "baseline.json"
_META = "stabilizer.json"
_QUEUE = "queued_trials.json"
_ORACLE = "oracle.json"  # KerasTuner's own file: the project has trials once it exists
# Our own counter stops the search (SearchAbortedError); the oracle's must never fire.
_ORACLE_FAILURE_LIMIT = 2**31


# -- the space as KerasTuner hyperparameters ----------------------------------------------

def _searched_dimensions(space: SearchSpace, max_batch_size: int | None) -> dict[str, Dimension]:
    """The space's dimensions, batch sizes above `max_batch_size` removed.

    The same rule as `SearchSpace.sample`, so the declared choices are exactly those
    the space will ask for.
    """
    dims = dict(space.dimensions)
    batch = dims.get("batch_size")
    if max_batch_size is not None and isinstance(batch, Choice):
        dims["batch_size"] = Choice(tuple(b for b in batch.values if b <= max_batch_size)
                                    or (batch.values[0],))
    return dims


def _is_searched(dim: Dimension) -> bool:
    if isinstance(dim, Choice):
        return len(dim.values) > 1
    return isinstance(dim, FloatRange) and dim.low < dim.high


def _fixed_value(dim: Dimension) -> Any:
    if isinstance(dim, Choice):
        return dim.values[0]
    if isinstance(dim, FloatRange):
        return dim.low
    return dim.value


def _tuner_values(values: Sequence[Any]) -> list[Any]:
    """Choice values KerasTuner accepts: one type, so mixed ints and floats become floats."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len({type(v) for v in values}) > 1:
        return [float(v) for v in values]
    return list(values)


def _declare(hp: keras_tuner.HyperParameters, key: str, dim: Dimension,
             parent: str | None = None, parent_values: list[Any] | None = None) -> None:
    if not _is_searched(dim):
        return
    name = PREFIX + key
    parent_name = PREFIX + parent if parent else None
    if isinstance(dim, Choice):
        hp.Choice(name, _tuner_values(dim.values), parent_name=parent_name,
                  parent_values=parent_values)
    elif isinstance(dim, FloatRange):
        hp.Float(name, dim.low, dim.high, sampling="log" if dim.log else "linear",
                 parent_name=parent_name, parent_values=parent_values)


def declare_space(space: SearchSpace, hp: keras_tuner.HyperParameters, *,
                  max_batch_size: int | None = None) -> None:
    """Register the searched dimensions of `space` in `hp` (see the module docstring).

    Fixed dimensions and one-value choices are not declared: `SearchSpace.sample`
    applies them without asking. A conditional child is declared under its parent's
    condition when the parent is searched, unconditionally when the parent is fixed to
    a value that needs it, and not at all otherwise (it is then never sampled).
    """
    dims = _searched_dimensions(space, max_batch_size)
    for key in DIMENSIONS:
        if key not in CONDITIONS and key in dims:
            _declare(hp, key, dims[key])
    for child, (parent, needs) in CONDITIONS.items():
        dim, parent_dim = dims.get(child), dims.get(parent)
        if dim is None or parent_dim is None:
            continue  # a left-out child takes its default; a left-out parent is kept
        if _is_searched(parent_dim):
            assert isinstance(parent_dim, Choice)  # parents are categorical dimensions
            active = [v for v in parent_dim.values if v in needs]
            if active:
                _declare(hp, child, dim, parent, active)
        elif _fixed_value(parent_dim) in needs:
            _declare(hp, child, dim)


class KerasTunerSuggester:
    """`Suggester` over a KerasTuner `HyperParameters` filled by an oracle.

    The space must have been declared with `declare_space`; the values are the ones
    the oracle chose for the trial.
    """

    def __init__(self, hp: keras_tuner.HyperParameters) -> None:
        self.hp = hp

    def _value(self, name: str) -> Any:
        key = PREFIX + name
        if key not in self.hp.values:
            raise ConfigError(f"dimension {name!r}: no value {key!r} in the KerasTuner "
                              "hyperparameters; expected the space to be declared with "
                              "declare_space() before sampling")
        return self.hp.values[key]

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if len(choices) == 1:
            return choices[0]  # fixed: not declared (`declare_space`)
        value = self._value(name)
        for choice in choices:
            if choice == value:
                return choice  # the space's own value (an int stays an int)
        raise ConfigError(f"dimension {name!r}: the oracle proposed {value!r}; expected one "
                          f"of {list(choices)} (was the project made with another space?)")

    def float(self, name: str, low: float, high: float, log: bool) -> float:
        if low == high:
            return float(low)
        value = float(self._value(name))
        if not low * (1 - 1e-9) <= value <= high * (1 + 1e-9):
            raise ConfigError(f"dimension {name!r}: the oracle proposed {value!r}; expected "
                              f"a value in [{low:g}, {high:g}]")
        return min(max(value, low), high)  # log-scale round-off stays inside the bounds


def _queued_values(hp: keras_tuner.HyperParameters, params: dict[str, Any]) -> dict[str, Any]:
    """`params` (dimension -> value) as values of the declared hyperparameters.

    Dimensions the space does not search, and values outside a hyperparameter's
    choices or range, are left to the oracle.
    """
    declared = {h.name: h for h in hp.space}
    values: dict[str, Any] = {}
    for key, value in params.items():
        h = declared.get(PREFIX + key)
        if isinstance(h, keras_tuner.engine.hyperparameters.Choice):
            match = [v for v in h.values if v == value]
            if match:
                values[h.name] = match[0]
        elif isinstance(h, keras_tuner.engine.hyperparameters.Float) \
                and h.min_value <= value <= h.max_value:
            values[h.name] = float(value)
    return values


def _merged_values(hp: keras_tuner.HyperParameters, proposed: dict[str, Any],
                   params: dict[str, Any]) -> dict[str, Any]:
    """The oracle's `proposed` values with the queued `params` laid over them.

    A conditional child that the queued values make active but the oracle left out
    (its parent was proposed with another value) takes its default.
    """
    values = {**proposed, **_queued_values(hp, params)}
    active = hp.copy()
    active.values = values
    for h in hp.space:
        if h.name not in values and active.is_active(h):
            values[h.name] = h.default
    return values


def _user_params(hp: keras_tuner.HyperParameters) -> dict[str, Any]:
    """The user's `build_fn(hp)` values: everything but ours and Hyperband's ``tuner/*``."""
    return {k: v for k, v in hp.values.items() if not k.startswith((PREFIX, "tuner/"))}


# -- files ---------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars from the Bayesian oracle
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write_json(path: Path, data: Any) -> None:
    """Write atomically, so a crash never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=_json_default))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); expected a file written by the "
                          "stabilizer; delete the project directory to start over") from None


def _make_oracle(settings: SearchConfig, space_size: int) -> keras_tuner.Oracle:
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common: dict[str, Any] = dict(objective=objective, seed=settings.seed + 1,
                                  max_retries_per_trial=0,
                                  max_consecutive_failed_trials=_ORACLE_FAILURE_LIMIT)
    oracles = keras_tuner.oracles
    if settings.tuner == "random":
        return oracles.RandomSearchOracle(max_trials=None, **common)
    if settings.tuner == "bayesian":
        # Random start as long as the Optuna driver's TPE start, then the Gaussian process.
        start = min(8, max(2, settings.trials // 3))
        return oracles.BayesianOptimizationOracle(
            max_trials=None, num_initial_points=min(start, max(1, 3 * space_size)), **common)
    if settings.tuner == "hyperband":
        # max_epochs=1: one full-length probe per bracket (see the module docstring).
        return oracles.HyperbandOracle(max_epochs=1, factor=3, hyperband_iterations=None,
                                       **common)
    raise ConfigError(f"tuner={settings.tuner!r}: expected one of {', '.join(TUNERS)}")


def _quiet_gaussian_process() -> None:
    """Silence the Bayesian oracle's kernel-fit convergence warnings.

    With the few points of a stabilization search (a handful to a few dozen) the
    Gaussian process's length scales often end at their bounds; scikit-learn warns on
    every proposal, and there is nothing the user can do about it.
    """
    try:
        from sklearn.exceptions import ConvergenceWarning
    except ImportError:  # no scikit-learn: the Bayesian oracle cannot be used anyway
        return
    warnings.filterwarnings("ignore", category=ConvergenceWarning)


# -- the driver ----------------------------------------------------------------------------

class KerasTunerDriver(BaseDriver):
    """Runs the search with a KerasTuner oracle; see the module docstring."""

    def __init__(self, settings: SearchConfig, space: SearchSpace) -> None:
        if settings.tuner not in TUNERS:
            raise ConfigError(f"tuner={settings.tuner!r}: expected one of {', '.join(TUNERS)}")
        self.settings = settings
        self.space = space
        self.project_dir = Path(settings.out_dir) / "keras_tuner" / settings.study
        if settings.storage is not None:  # an Optuna database URL; not silently ignored
            raise ConfigError(f"storage is set, but the keras_tuner driver keeps its trials in "
                              f"{self.project_dir} (out_dir/keras_tuner/study_name); expected "
                              "storage=None, or driver='optuna'")
        self.oracle: keras_tuner.Oracle | None = None
        self._records: dict[str, dict[str, Any]] = {}
        self._checked = False

    # -- storage ------------------------------------------------------------------------
    def storage_label(self) -> str:
        return str(self.project_dir)

    def load_baseline(self) -> dict[str, Any] | None:
        self._check_project()
        path = self.project_dir / _BASELINE
        return _read_json(path) if path.is_file() else None

    def save_baseline(self, record: dict[str, Any]) -> None:
        self._check_project()
        _write_json(self.project_dir / _BASELINE, record)

    def has_history(self) -> bool:
        return (self.project_dir / _ORACLE).is_file() or (self.project_dir / _BASELINE).is_file()

    def load_attr(self, key: str) -> Any:
        self._check_project()
        path = self.project_dir / f"{key}.json"
        return _read_json(path) if path.is_file() else None

    def save_attr(self, key: str, value: Any) -> None:
        self._check_project()
        _write_json(self.project_dir / f"{key}.json", value)

    def enqueue_first(self, trials: list[dict[str, Any]]) -> bool:
        """Queue `trials` (parameters each) to run first; only in a project with no trial."""
        self._check_project()
        if (self.project_dir / _ORACLE).is_file() or (self.project_dir / _QUEUE).is_file():
            return False
        _write_json(self.project_dir / _QUEUE, list(trials))
        return True

    def _check_project(self) -> None:
        """Refuse to resume a project made with another tuner or space; else mark it ours."""
        if self._checked:
            return
        meta = json.loads(json.dumps({"tuner": self.settings.tuner,
                                      "space": self.space.to_dict()}, default=_json_default))
        path = self.project_dir / _META
        if path.is_file():
            stored = _read_json(path)
            if stored.get("tuner") != meta["tuner"]:
                raise ConfigError(
                    f"tuner={self.settings.tuner!r}: study {self.settings.study!r} in "
                    f"{self.project_dir} was searched with tuner={stored.get('tuner')!r}; "
                    "expected the same tuner, or a new study_name")
            if stored.get("space") != meta["space"]:
                raise ConfigError(
                    f"space {self.space.name!r}: study {self.settings.study!r} in "
                    f"{self.project_dir} was searched over another space; expected the "
                    "same space, or a new study_name")
        else:
            _write_json(path, meta)
        self._checked = True

    def _record_path(self, trial_id: str) -> Path:
        return self.project_dir / f"trial_{trial_id}" / _RECORD

    def _save_record(self, trial_id: str, record: dict[str, Any]) -> None:
        self._records[trial_id] = record
        _write_json(self._record_path(trial_id), record)

    # -- the oracle ---------------------------------------------------------------------
    def _open_oracle(self, evaluator: Evaluator) -> keras_tuner.Oracle:
        """Create the oracle, or reload it and its trials from the project directory."""
        if self.oracle is not None:
            return self.oracle
        hp = keras_tuner.HyperParameters()
        declare_space(self.space, hp, max_batch_size=evaluator.data.train_size)
        oracle = _make_oracle(self.settings, len(hp.space))
        oracle.verbose = 0  # the stabilizer prints its own line per trial (settings.verbose >= 2)
        # What `keras_tuner.Tuner.__init__` does to attach an oracle to its directory.
        oracle._set_project_dir(str(self.project_dir.parent), self.project_dir.name)
        if (self.project_dir / _ORACLE).is_file():
            oracle.reload()
            for trial_id in oracle.trials:
                path = self._record_path(trial_id)
                if path.is_file():
                    self._records[trial_id] = _read_json(path)
        else:
            if evaluator.uses_hp:
                call_build_fn(evaluator.build_fn, hp)  # registers the user's hyperparameters
            oracle.update_space(hp)
        self.oracle = oracle
        return oracle

    def _count_done(self, oracle: keras_tuner.Oracle) -> int:
        """COMPLETE and PRUNED trials the oracle has ended (a cut-off one is redone)."""
        return sum(1 for trial_id, trial in oracle.trials.items()
                   if trial.status != "RUNNING"
                   and self._records.get(trial_id, {}).get("state") in _DONE)

    # -- the search ---------------------------------------------------------------------
    def run(self, evaluator: Evaluator) -> list[TrialRecord]:
        self._check_project()
        oracle = self._open_oracle(evaluator)
        failures = FailurePolicy(self.settings.max_consecutive_failures)
        while self._count_done(oracle) < self.settings.trials and not self.out_of_time():
            with warnings.catch_warnings():
                _quiet_gaussian_process()
                trial = self._create_trial(oracle)
            if trial.status != "RUNNING":
                break  # STOPPED: no untried candidate left (IDLE needs parallel workers)
            record = self._run_trial(oracle, trial, evaluator)
            if failures.record(record["state"] == "FAIL", record.get("error", ""),
                               skipped="out_of_memory" in record):
                raise failures.aborted()
        return self.records()

    def _create_trial(self, oracle: keras_tuner.Oracle) -> Any:
        """`oracle.create_trial`, with the head of the queue (if any) in its values."""
        path = self.project_dir / _QUEUE
        queue = _read_json(path) if path.is_file() else []
        if not queue:
            return oracle.create_trial(_TUNER_ID)
        used = False

        def populate_space(trial_id: str) -> dict[str, Any]:
            nonlocal used
            response = type(oracle).populate_space(oracle, trial_id)
            if response.get("status") == "RUNNING":
                response["values"] = _merged_values(oracle.hyperparameters,
                                                    response.get("values", {}), queue[0])
                used = True
            return response

        oracle.populate_space = populate_space  # what create_trial calls for new values
        try:
            trial = oracle.create_trial(_TUNER_ID)
        finally:
            del oracle.populate_space
        if used:  # recorded by the oracle (oracle.json): off the queue
            _write_json(path, queue[1:])
        return trial

    def _run_trial(self, oracle: keras_tuner.Oracle, trial: Any,
                   evaluator: Evaluator) -> dict[str, Any]:
        """Probe one candidate and end its trial in the oracle; return its record."""
        hp = trial.hyperparameters
        trial_id = trial.trial_id
        start = time.perf_counter()
        config = self.space.sample(KerasTunerSuggester(hp),
                                   max_batch_size=evaluator.data.train_size)
        record: dict[str, Any] = {"state": "RUNNING", "config": config.to_dict(),
                                  "user_params": _user_params(hp), "intermediate": {}}
        self._save_record(trial_id, record)
        intermediate: dict[str, float] = {}

        def report(step: int, value: float) -> bool:
            intermediate[str(step)] = value
            return self._should_prune(step, value)

        try:
            evaluation = evaluator.evaluate(config, hp if evaluator.uses_hp else None, report)
        except ProbeFailedError as exc:
            if isinstance(exc, ProbeOutOfMemoryError):
                record["out_of_memory"] = exc.batch_size
            record.update(state="FAIL", error=error_text(exc),
                          traceback=error_text(exc.traceback, 8000) if exc.traceback else "",
                          user_params=_user_params(hp),
                          intermediate=intermediate, seconds=time.perf_counter() - start)
            return self._end(oracle, trial, record)
        record.update(user_params=_user_params(hp), curves=evaluation.curves,
                      probes=evaluation.probes, intermediate=intermediate,
                      seconds=time.perf_counter() - start)
        if evaluation.pruned:
            record["state"] = "PRUNED"
            return self._end(oracle, trial, record)
        assert evaluation.components is not None
        score = evaluation.score
        record["components"] = evaluation.components.to_dict()
        if not math.isfinite(score):
            record.update(state="FAIL", error=f"the stability score is {score}; expected a "
                                              "finite number")
            return self._end(oracle, trial, record)
        record.update(state="COMPLETE", score=score)
        if self.settings.verbose >= 2:
            c = evaluation.components
            print(f"trial {int(trial_id)}: score={c.score:.3f} {c.verdict} "
                  f"val_loss={c.final_val_loss:.4g} | {config.describe()}", flush=True)
        return self._end(oracle, trial, record)

    def _end(self, oracle: keras_tuner.Oracle, trial: Any,
             record: dict[str, Any]) -> dict[str, Any]:
        """Store the record, then end the trial (a crash in between redoes the trial)."""
        self._save_record(trial.trial_id, record)
        if record["state"] == "COMPLETE":
            oracle.update_trial(trial.trial_id, {OBJECTIVE: record["score"]})
            trial.status = "COMPLETED"
        else:
            trial.status = "FAILED"  # failed, or pruned: no full-probe score for the oracle
            trial.message = record.get("error") or "pruned by the stabilizer"
        oracle.end_trial(trial)
        # `end_trial` saves the oracle before it drops the trial from its ongoing ones;
        # save again, as `keras_tuner.Tuner.on_trial_end` does, or a resumed search would
        # run the last trial once more.
        oracle.save()
        if self.progress is not None:
            self.progress(self._trial_record(trial.trial_id, trial.status))
        return record

    def _should_prune(self, step: int, value: float) -> bool:
        """The Optuna driver's rule: clearly below the completed trials' median at `step`."""
        if not self.settings.prune:
            return False
        others = [r["intermediate"][str(step)] for r in self._records.values()
                  if r.get("state") == "COMPLETE" and str(step) in r.get("intermediate", {})]
        return clearly_worse(value, others)

    # -- reading back ---------------------------------------------------------------------
    def records(self) -> list[TrialRecord]:
        """Every trial the oracle started, in order, as a `TrialRecord`."""
        if self.oracle is None:
            return []
        return [self._trial_record(trial_id, self.oracle.trials[trial_id].status)
                for trial_id in sorted(self.oracle.trials, key=int)]

    def _trial_record(self, trial_id: str, status: str) -> TrialRecord:
        """Our stored record of a trial; the oracle's `status` decides if it is still open."""
        stored = self._records.get(trial_id)
        if stored is None or status == "RUNNING":
            state = {"COMPLETED": "COMPLETE", "RUNNING": "RUNNING"}.get(status, "FAIL")
            stored = {**(stored or {}), "state": state}
        config = stored.get("config")
        return TrialRecord(
            number=int(trial_id), state=stored["state"], score=stored.get("score"),
            config=StabilityConfig.from_dict(config) if config else None,
            user_params=dict(stored.get("user_params", {})),
            components=stored.get("components"), curves=list(stored.get("curves", [])),
            error=stored.get("error"), seconds=stored.get("seconds"),
            probes=dict(stored.get("probes", {})))

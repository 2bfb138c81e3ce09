"""The default driver: an Optuna study on SQLite (or any database URL).

- Sampler: `TPESampler` seeded with `seed` (plus the number of trials already in
  the study, so a resumed study does not re-propose its first candidates).
- Pruner: `StabilityPruner`, which stops a candidate whose validation quality at
  an evaluation is clearly (by `margin` nats) below the median of the finished
  candidates at the same evaluation.
- Storage: an `RDBStorage` with a heartbeat, so a trial left RUNNING by a killed
  process is failed after the grace period instead of counting as done.
- Budget: `MaxTrialsCallback` counts COMPLETE and PRUNED trials of the whole
  study, so re-running the same study only runs what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.drivers._base import BaseDriver, TrialRecord
from stabilizer.errors import ConfigError, ProbeFailedError, SearchAbortedError
from stabilizer.evaluation import Evaluator
from stabilizer.space import SearchSpace

__all__ = ["OptunaDriver", "StabilityPruner", "OptunaSuggester", "OptunaHyperParameters",
           "open_study", "records_from_study", "record_from_trial"]

_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class OptunaSuggester:
    """`Suggester` over an Optuna trial."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.trial.suggest_categorical(name, list(choices))

    def float(self, name: str, low: float, high: float, log: bool) -> float:
        return self.trial.suggest_float(name, low, high, log=log)


class OptunaHyperParameters:
    """The part of KerasTuner's `HyperParameters` API a `build_fn(hp)` uses, on Optuna.

    User parameters are stored with an ``hp/`` prefix so they never clash with the
    stabilization dimensions.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.values: dict[str, Any] = {}

    def _keep(self, name: str, value: Any) -> Any:
        self.values[name] = value
        return value

    def Choice(self, name: str, values: Sequence[Any], ordered: Any = None,
               default: Any = None, **_: Any) -> Any:
        return self._keep(name, self.trial.suggest_categorical(f"hp/{name}", list(values)))

    def Int(self, name: str, min_value: int, max_value: int, step: int | None = None,
            sampling: str = "linear", default: Any = None, **_: Any) -> int:
        log = sampling == "log"
        value = self.trial.suggest_int(f"hp/{name}", min_value, max_value,
                                       step=1 if log or step is None else step, log=log)
        return self._keep(name, value)

    def Float(self, name: str, min_value: float, max_value: float, step: float | None = None,
              sampling: str = "linear", default: Any = None, **_: Any) -> float:
        log = sampling == "log"
        value = self.trial.suggest_float(f"hp/{name}", min_value, max_value,
                                         step=None if log else step, log=log)
        return self._keep(name, value)

    def Boolean(self, name: str, default: bool = False, **_: Any) -> bool:
        return self._keep(name, self.trial.suggest_categorical(f"hp/{name}", [False, True]))

    def Fixed(self, name: str, value: Any, **_: Any) -> Any:
        return self._keep(name, value)

    def get(self, name: str) -> Any:
        if name not in self.values:
            raise KeyError(f"hyperparameter {name!r} was not defined in build_fn")
        return self.values[name]


class StabilityPruner(optuna.pruners.BasePruner):
    """Prune a candidate clearly worse than the finished ones at the same evaluation."""

    def __init__(self, margin: float = 1.0, n_startup_trials: int = 4) -> None:
        self.margin = margin
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if not math.isfinite(value):
            return True
        others = [t.intermediate_values[step]
                  for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if step in t.intermediate_values]
        if len(others) < self.n_startup_trials:
            return False
        return value < float(np.median(others)) - self.margin


def open_study(settings: SearchConfig, *, seed_offset: int | None = None) -> optuna.Study:
    """Create or load the study named in `settings` (resuming is the default)."""
    url = settings.resolved_storage()
    try:
        storage = optuna.storages.RDBStorage(
            url, heartbeat_interval=30, grace_period=90,
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {})
    except Exception as exc:
        raise ConfigError(f"storage={_mask(url)!r}: cannot open ({type(exc).__name__}: "
                          f"{_mask(str(exc))}); expected a reachable database URL") from None
    existing = 0
    try:
        existing = len(optuna.load_study(study_name=settings.study_name,
                                         storage=storage).trials)
    except KeyError:
        pass
    offset = existing if seed_offset is None else seed_offset
    sampler = optuna.samplers.TPESampler(seed=settings.seed + offset,
                                         n_startup_trials=min(8, max(2, settings.trials // 3)))
    pruner = StabilityPruner() if settings.prune else optuna.pruners.NopPruner()
    return optuna.create_study(storage=storage, study_name=settings.study_name,
                               direction="maximize", sampler=sampler, pruner=pruner,
                               load_if_exists=True)


def _mask(text: str) -> str:
    """Hide a password in a database URL."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", text)


class OptunaDriver(BaseDriver):
    """Runs the search as an Optuna study; see the module docstring."""

    def __init__(self, settings: SearchConfig, space: SearchSpace) -> None:
        self.settings = settings
        self.space = space
        self.study: optuna.Study | None = None

    def _study(self) -> optuna.Study:
        if self.study is None:
            self.study = open_study(self.settings)
        return self.study

    def load_baseline(self) -> dict[str, Any] | None:
        return self._study().user_attrs.get("baseline")

    def save_baseline(self, record: dict[str, Any]) -> None:
        self._study().set_user_attr("baseline", record)

    def storage_label(self) -> str:
        return _mask(self.settings.resolved_storage())

    def run(self, evaluator: Evaluator) -> list[TrialRecord]:
        study = self._study()
        remaining = self.settings.trials - _count_done(study)
        if remaining > 0:
            failures = _FailureCounter(self.settings.max_consecutive_failures)
            study.optimize(
                lambda trial: self._objective(trial, evaluator),
                n_trials=None,  # stopped by MaxTrialsCallback or the failure counter
                catch=(ProbeFailedError,),
                callbacks=[optuna.study.MaxTrialsCallback(self.settings.trials, states=_DONE),
                           failures, *self._progress_callbacks()],
                gc_after_trial=False,
                show_progress_bar=False,
            )
            if failures.tripped:
                raise SearchAbortedError(
                    f"{failures.limit} trials failed in a row; last error:\n{failures.last_error}")
        return records_from_study(study)

    def _progress_callbacks(self) -> list[Any]:
        progress = self.progress
        if progress is None:
            return []
        return [lambda study, trial: progress(record_from_trial(trial))]

    def _objective(self, trial: optuna.Trial, evaluator: Evaluator) -> float:
        max_batch = evaluator.data.train_size
        config = self.space.sample(OptunaSuggester(trial), max_batch_size=max_batch)
        hp = OptunaHyperParameters(trial) if evaluator.uses_hp else None
        trial.set_user_attr("config", config.to_dict())

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        try:
            evaluation = evaluator.evaluate(config, hp, report)
        except ProbeFailedError as exc:
            trial.set_user_attr("error", str(exc)[-4000:])
            raise
        if hp is not None:
            trial.set_user_attr("user_params", hp.values)
        trial.set_user_attr("curves", evaluation.curves)
        if evaluation.pruned:
            raise optuna.TrialPruned()
        assert evaluation.components is not None
        trial.set_user_attr("components", evaluation.components.to_dict())
        if self.settings.verbose:
            c = evaluation.components
            print(f"trial {trial.number}: score={c.score:.3f} {c.verdict} "
                  f"val_loss={c.final_val_loss:.4g} | {config.describe()}", flush=True)
        return evaluation.score


def _count_done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_DONE))


class _FailureCounter:
    """Stops the study after `limit` failed trials in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.run = 0
        self.tripped = False
        self.last_error = ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            self.run += 1
            self.last_error = str(trial.user_attrs.get("error", ""))[-2000:]
            if self.run >= self.limit:
                self.tripped = True
                study.stop()
        else:
            self.run = 0


def records_from_study(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study as a `TrialRecord`."""
    return [record_from_trial(t) for t in study.get_trials(deepcopy=False)]


def record_from_trial(t: FrozenTrial) -> TrialRecord:
    """One trial of the study as a `TrialRecord`."""
    attrs = t.user_attrs
    config = StabilityConfig.from_dict(attrs["config"]) if "config" in attrs else None
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    return TrialRecord(
        number=t.number, state=t.state.name, score=t.value, config=config,
        user_params=dict(attrs.get("user_params", {})),
        components=attrs.get("components"), curves=list(attrs.get("curves", [])),
        error=attrs.get("error"),
        seconds=seconds)

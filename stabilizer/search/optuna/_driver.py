"""The default driver: an Optuna study on SQLite, a journal file or any database URL.

- Sampler: `TPESampler` whose random draws for trial k are seeded from
  (`seed`, k): the same seed gives the same trials, a resumed study does not
  re-propose its first candidates, and workers sharing a study draw different
  candidates. It never proposes a batch size marked infeasible (below).
- Pruner: `StabilityPruner`, which stops a candidate whose validation quality at
  an evaluation is clearly (by `margin` nats) below the median of the finished
  candidates at the same evaluation.
- Storage (`open_storage`): ``sqlite:///file.db`` (the default, for one process),
  ``journal:///path/file.log`` or a path ending in ``.log`` (Optuna's
  `JournalStorage` on a `JournalFileBackend`: several processes on one machine),
  or any SQLAlchemy URL such as ``postgresql+psycopg2://user:password@host/db``
  (several machines). A database gets a heartbeat (every 30 s, grace 90 s).
- Budget: COMPLETE and PRUNED trials of the whole study count. Each worker loops:
  fail lost trials, stop when the budget is spent, wait while the trials other
  live workers are running would spend it, else run one trial. Re-running a study
  only runs what is missing, and several workers on one storage and study share
  the budget. A trial opened in the instant another worker took the last slot
  is closed at once, before any probe, as FAIL with user attr ``surplus``
  (`records_from_study` leaves it out).
- Lost trials: every trial records its worker (host, boot id, pid, process start
  time). A RUNNING trial whose worker process is gone (same machine), whose
  database heartbeat is stale (any machine), or that has no worker recorded a
  minute after it started (journal storage) is failed with user attr ``lost``:
  never counted as done, its slot runs again.
- Faults: a probe that raises fails its trial (the error and traceback are kept
  as user attr ``error``); `max_consecutive_failures` in a row stop the search
  with `SearchAbortedError`. An out-of-memory probe fails its trial with user
  attr ``out_of_memory`` and marks its batch size infeasible for the whole study
  (study user attr ``infeasible_batch_size:<n>``); such failures are not counted
  as consecutive failures, and the search stops only when no batch size is left.
  Ctrl-C fails the running trial with user attr ``interrupted`` and re-raises.
- The baseline (the user's own configuration) is probed once per study: a worker
  that finds another live worker probing it waits for its result.
- Passwords in storage URLs are masked (`stabilizer.errors.mask_secrets`) in every message
  and label.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.errors import (
    ConfigError,
    ProbeFailedError,
    ProbeOutOfMemoryError,
    SearchAbortedError,
    mask_secrets,
)
from stabilizer.result import TrialRecord
from stabilizer.scoring import ScoreComponents
from stabilizer.search._base import BaseDriver
from stabilizer.search._choice import restore_nan
from stabilizer.search._evaluator import Evaluator
from stabilizer.search._policy import (
    PRUNE_MARGIN,
    PRUNE_STARTUP,
    FailurePolicy,
    clearly_worse,
    error_text,
    raise_if_interrupted,
)
from stabilizer.space import SearchSpace

__all__ = ["OptunaDriver", "StabilityPruner", "OptunaSuggester", "OptunaHyperParameters",
           "TrialSeededSampler", "open_study", "open_storage", "journal_path",
           "records_from_study", "record_from_trial", "infeasible_batch_sizes",
           "fail_lost_trials", "this_worker", "is_baseline_trial", "COMPONENT_PREFIX",
           "BASELINE_ATTR"]

_DONE = (TrialState.COMPLETE, TrialState.PRUNED)

#: Prefix of the flat numeric user attributes a trial stores, one per score component
#: (``stability_oscillation``, ``stability_seed_spread``, ...): ``trials_dataframe()``
#: columns ``user_attrs_stability_*``, sortable in optuna-dashboard.
COMPONENT_PREFIX = "stability_"

#: The user attribute that marks the trial holding the user's own configuration.
BASELINE_ATTR = "baseline"


def is_baseline_trial(trial: FrozenTrial) -> bool:
    """True for the trial that shows the user's configuration (not a candidate)."""
    return trial.user_attrs.get(BASELINE_ATTR) is True


def _search_trials(study: optuna.Study, states: Any = None) -> list[FrozenTrial]:
    """The study's candidate trials: the baseline's trial left out."""
    return [t for t in study.get_trials(deepcopy=False, states=states)
            if not is_baseline_trial(t)]
#: Study user attribute prefix marking a batch size that ran out of memory.
INFEASIBLE_PREFIX = "infeasible_batch_size:"
#: A RUNNING trial with no worker recorded this long after it started is lost (journal).
_UNOWNED_GRACE_S = 60.0
#: A remote worker's baseline claim is trusted this long.
_REMOTE_CLAIM_S = 1800.0


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

    def __init__(self, margin: float = PRUNE_MARGIN, n_startup_trials: int = PRUNE_STARTUP) -> None:
        self.margin = margin
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        others = [t.intermediate_values[step]
                  for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if step in t.intermediate_values]
        return clearly_worse(value, others, margin=self.margin,
                             n_startup=self.n_startup_trials)


def journal_path(url: str) -> Path | None:
    """The file of a journal storage URL (``journal:///path`` or a ``.log`` path), else None."""
    if url.startswith("journal://"):
        return Path(url[len("journal://"):]).expanduser()
    if "://" not in url and url.endswith((".log", ".journal")):
        return Path(url).expanduser()
    return None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage `url` names; a `ConfigError` (password masked) if it cannot open."""
    path = journal_path(url)
    if path is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if not path.name or path.is_dir():
            raise ConfigError(f"storage={url!r}: expected a journal file path such as "
                              "journal:///path/to/study.log")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ConfigError(f"storage={url!r}: cannot open the journal file ({exc}); "
                              "expected a writable file path") from None
    try:
        return _open_rdb(url)
    except Exception as exc:
        raise ConfigError(f"storage={mask_secrets(url)!r}: cannot open ({type(exc).__name__}: "
                          f"{mask_secrets(str(exc))}); expected a reachable database URL "
                          "(sqlite:///file.db, postgresql+psycopg2://user:password@host/db), "
                          "journal:///path/file.log or a path ending in .log") from None


def _open_rdb(url: str, attempts: int = 6) -> optuna.storages.RDBStorage:
    """Open an RDB storage, retrying while other workers create the same schema.

    Workers started together on an empty database all run Optuna's ``CREATE TYPE`` /
    ``CREATE TABLE``; all but one lose with a duplicate-object error although the schema
    is then there. Opening again after a short, jittered pause finds it.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}

    def attempt() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90,
                                          engine_kwargs=kwargs)

    for tried in range(1, attempts):
        try:
            return attempt()
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            if not (isinstance(exc, IntegrityError) or "already exists" in str(exc).lower()):
                raise
            time.sleep(0.1 * tried * (1 + np.random.default_rng().random()))
    return attempt()


def open_study(settings: SearchConfig, *, seed_offset: int | None = None) -> optuna.Study:
    """Create or load the study named in `settings` (resuming is the default)."""
    storage = open_storage(settings.resolved_storage())
    sampler = TrialSeededSampler(settings.seed + (seed_offset or 0),
                                 n_startup_trials=min(8, max(2, settings.trials // 3)))
    pruner = StabilityPruner() if settings.prune else optuna.pruners.NopPruner()
    try:
        return optuna.create_study(storage=storage, study_name=settings.study,
                                   direction="maximize", sampler=sampler, pruner=pruner,
                                   load_if_exists=True)
    except optuna.exceptions.DuplicatedStudyError:  # created by another worker meanwhile
        return optuna.load_study(storage=storage, study_name=settings.study,
                                 sampler=sampler, pruner=pruner)


def _mix(*numbers: int) -> int:
    value = 0x9E3779B9
    for n in numbers:
        value = (value * 1_000_003 + int(n)) % (2**32)
    return value


class TrialSeededSampler(optuna.samplers.TPESampler):
    """TPE whose random state for trial k is re-seeded from (seed, k) before the trial.

    A study run twice with one seed gives the same candidates; concurrent workers
    draw different ones (their trials have different numbers). Batch sizes marked
    infeasible in the study (out of memory) are never proposed while another
    choice is left.
    """

    def __init__(self, seed: int, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().before_trial(study, trial)
        # TPESampler keeps two RandomStates (its own and its startup RandomSampler's);
        # reseed_rng() would seed them from the clock, so they are seeded here.
        for owner, salt in ((self, 0), (getattr(self, "_random_sampler", None), 1)):
            state = getattr(getattr(owner, "_rng", None), "rng", None)
            if state is not None:
                state.seed(_mix(self._base_seed, trial.number, salt))

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        batch = search_space.get("batch_size")
        if isinstance(batch, CategoricalDistribution) and \
                set(batch.choices) & set(infeasible_batch_sizes(study)):
            # sampled on its own instead, through sample_independent's filter
            search_space = {k: v for k, v in search_space.items() if k != "batch_size"}
        return super().sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        value = super().sample_independent(study, trial, param_name, param_distribution)
        if param_name != "batch_size" or not isinstance(param_distribution,
                                                        CategoricalDistribution):
            return value
        bad = infeasible_batch_sizes(study)
        feasible = [c for c in param_distribution.choices if c not in bad]
        if value not in bad or not feasible:
            return value  # with nothing feasible left the objective stops the search
        for _ in range(8):
            value = super().sample_independent(study, trial, param_name, param_distribution)
            if value not in bad:
                return value
        rng = np.random.default_rng(_mix(self._base_seed, trial.number, 2))
        return feasible[int(rng.integers(len(feasible)))]


def infeasible_batch_sizes(study: optuna.Study) -> dict[int, str]:
    """Batch sizes that ran out of memory in this study, with the error's first line."""
    result: dict[int, str] = {}
    for key, reason in study.user_attrs.items():
        if key.startswith(INFEASIBLE_PREFIX):
            try:
                result[int(key[len(INFEASIBLE_PREFIX):])] = str(reason)
            except ValueError:
                continue
    return result


# -- workers: who runs a trial, and whether that process is still alive ----------------------
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state first); [] if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return []


def _process_start(pid: int) -> str:
    """The start time of process `pid` (Linux: clock ticks after boot), "" if unknown."""
    fields = _process_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def this_worker() -> dict[str, Any]:
    """How this process is recorded on the trials it runs."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid,
            "start": _process_start(pid), "time": time.time()}


def _same_host(owner: dict[str, Any]) -> bool:
    return owner.get("host") == socket.gethostname() and owner.get("boot", "") == _boot_id()


def _is_me(owner: dict[str, Any]) -> bool:
    return _same_host(owner) and owner.get("pid") == os.getpid() \
        and owner.get("start", "") == _process_start(os.getpid())


def _owner_gone(owner: dict[str, Any]) -> bool:
    """True when `owner` ran on this machine and its process has ended."""
    if not _same_host(owner):
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    fields = _process_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return True  # ended, not yet reaped by its parent
    start = owner.get("start", "")
    return bool(start) and bool(fields) and fields[19] != start  # the pid was reused


def _lost_reason(trial: FrozenTrial, journal: bool, now: float,
                 in_flight: int | None = None) -> str | None:
    """Why a RUNNING trial is lost (its worker is gone), or None if it may still be running."""
    if trial.state != TrialState.RUNNING:
        return None
    owner = trial.user_attrs.get("worker")
    if isinstance(owner, dict):
        if _is_me(owner) and trial.number != in_flight:
            return (f"left RUNNING by this process (pid {owner.get('pid')}) after an earlier "
                    "run of the search ended")
        if _owner_gone(owner):
            return (f"its worker process (pid {owner.get('pid')} on {owner.get('host')}) "
                    "ended while the trial was running")
        return None
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    if journal and now - started > _UNOWNED_GRACE_S:
        return (f"no worker recorded {_UNOWNED_GRACE_S:.0f} s after it started: its process "
                "ended before the trial began")
    return None


def fail_lost_trials(study: optuna.Study, *, in_flight: int | None = None) -> list[int]:
    """Fail RUNNING trials whose worker is gone; return their numbers.

    Same-machine workers are checked by process id (immediate); on a database the
    heartbeat also fails trials of workers on other machines after its grace period.
    """
    storage = study._storage  # trial state changes by id, as optuna.storages.fail_stale_trials
    journal = isinstance(storage, optuna.storages.JournalStorage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # database heartbeat (no-op for a journal)
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _lost_reason(trial, journal, now, in_flight)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "lost", True)
            storage.set_trial_user_attr(trial._trial_id, "error", f"lost: {reason}; the trial "
                                        "was failed and its budget slot runs again")
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first, or it just finished
    return failed


class OptunaDriver(BaseDriver):
    """Runs the search as an Optuna study; see the module docstring."""

    #: Seconds between looks at the study while other workers finish the budget.
    poll_seconds = 1.0
    #: Seconds between writing the baseline claim and reading it back (see `load_baseline`).
    claim_settle_seconds = 1.0

    def __init__(self, settings: SearchConfig, space: SearchSpace) -> None:
        self.settings = settings
        self.space = space
        self.study: optuna.Study | None = None

    def _study(self) -> optuna.Study:
        if self.study is None:
            self.study = open_study(self.settings)
        return self.study

    def load_baseline(self) -> dict[str, Any] | None:
        """The stored baseline; None when this process is to probe it.

        Several workers starting on one study would each probe the baseline, so the
        first writes a claim (``baseline_claim``: its worker record) and the others
        wait for its result while the claimer lives (on another machine: for at most
        30 minutes). Last writer wins, and every claimer reads the claim back after
        `claim_settle_seconds`, so at most one of workers starting together probes.
        On an SQLite file, which serves one process (several go to a journal file or
        a database server), the claim is written but not waited on: a second search
        started on the same file later still finds it and waits.
        """
        study = self._study()
        while True:
            attrs = study.user_attrs
            if "baseline" in attrs:
                return attrs["baseline"]  # type: ignore[no-any-return]
            claim = attrs.get("baseline_claim")
            if isinstance(claim, dict) and _is_me(claim):
                return None
            if isinstance(claim, dict) and not _owner_gone(claim) and (
                    _same_host(claim) or time.time() - claim.get("time", 0) < _REMOTE_CLAIM_S):
                time.sleep(self.poll_seconds)
                continue
            study.set_user_attr("baseline_claim", this_worker())
            if self.settings.resolved_storage().startswith("sqlite"):
                return None
            time.sleep(self.claim_settle_seconds)

    def save_baseline(self, record: dict[str, Any]) -> None:
        self._study().set_user_attr("baseline", record)

    def add_baseline_trial(self, components: dict[str, Any], curves: list[Any]) -> None:
        """The user's configuration as a finished trial of the study (once), marked
        ``baseline=True``, with no parameters, its score as the value and the components as
        flat user attributes: optuna-dashboard and ``trials_dataframe()`` show it beside the
        candidates. It is added after the candidates ran, so their numbers and the
        sampler's draws stay what they were; it never counts towards the budget, and
        `records` leaves it out (the baseline's record is the ``baseline`` study attribute)."""
        study = self._study()
        if any(is_baseline_trial(t) for t in study.get_trials(deepcopy=False)):
            return
        scored = ScoreComponents.from_dict(restore_nan(components))
        attrs = {BASELINE_ATTR: True, "origin": "your configuration",
                 "config": StabilityConfig().to_dict(), "components": components,
                 "curves": curves, **scored.flat(COMPONENT_PREFIX)}
        finite = math.isfinite(scored.score)
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if finite else TrialState.FAIL,
            value=scored.score if finite else None, params={}, distributions={},
            user_attrs=attrs))

    def has_history(self) -> bool:
        """Trials that ran (queued ones waiting to run do not count) or a stored baseline."""
        study = self._study()
        ran = study.get_trials(deepcopy=False, states=tuple(s for s in TrialState
                                                            if s != TrialState.WAITING))
        return bool(ran) or "baseline" in study.user_attrs

    def load_attr(self, key: str) -> Any:
        return self._study().user_attrs.get(key)

    def save_attr(self, key: str, value: Any) -> None:
        self._study().set_user_attr(key, value)

    def enqueue_first(self, trials: list[dict[str, Any]]) -> bool:
        study = self._study()
        if study.get_trials(deepcopy=False):
            return False
        for params in trials:
            study.enqueue_trial(params, user_attrs={"origin": "diagnosis"}, skip_if_exists=True)
        return True

    def storage_label(self) -> str:
        return mask_secrets(self.settings.resolved_storage())

    def records(self) -> list[TrialRecord]:
        """Every trial of the study as it stands (also what finished before a Ctrl-C)."""
        return records_from_study(self._study())

    def run(self, evaluator: Evaluator) -> list[TrialRecord]:
        """Run trials until the study's budget is spent (shared with other workers)."""
        study = self._study()
        budget = self.settings.trials
        failures = FailurePolicy(self.settings.max_consecutive_failures)
        callbacks = [_FailureCallback(failures), *self._progress_callbacks()]
        while True:
            raise_if_interrupted()
            fail_lost_trials(study)
            trials = _search_trials(study)
            done = sum(t.state in _DONE for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done >= budget or self.out_of_time():
                break
            if done + running >= budget:  # other workers are running the last trials
                time.sleep(self.poll_seconds)
                continue
            study.optimize(
                lambda trial: self._objective(trial, evaluator),
                n_trials=1,
                catch=(ProbeFailedError,),
                callbacks=callbacks,
                gc_after_trial=False,
                show_progress_bar=False,
            )
            if failures.tripped:
                raise failures.aborted()
        return records_from_study(study)

    def _progress_callbacks(self) -> list[Any]:
        progress = self.progress
        if progress is None:
            return []
        return [lambda study, trial: progress(record_from_trial(trial))]

    def _objective(self, trial: optuna.Trial, evaluator: Evaluator) -> float:
        try:
            return self._run_trial(trial, evaluator)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("error", "interrupted (KeyboardInterrupt, e.g. Ctrl-C) while "
                                "this trial was running; re-run the search to resume")
            raise

    def _claims_surplus(self, trial: optuna.Trial) -> bool:
        """True when earlier trials (done or running) already take the whole budget."""
        now = time.time()
        taken = [t for t in _search_trials(trial.study, states=(*_DONE, TrialState.RUNNING))
                 if t.number < trial.number and _lost_reason(t, False, now) is None]
        return len(taken) >= self.settings.trials

    def _run_trial(self, trial: optuna.Trial, evaluator: Evaluator) -> float:
        trial.set_user_attr("worker", this_worker())
        if self._claims_surplus(trial):
            trial.set_user_attr("surplus", True)
            raise _SurplusTrial(f"trial {trial.number}: the budget of {self.settings.trials} "
                                "trials was taken by other workers; closed without a probe")
        max_batch = evaluator.data.train_size
        config = self.space.sample(OptunaSuggester(trial), max_batch_size=max_batch)
        hp = OptunaHyperParameters(trial) if evaluator.uses_hp else None
        trial.set_user_attr("config", config.to_dict())
        batch = config.batch_size or self.settings.batch_size
        infeasible = infeasible_batch_sizes(trial.study)
        if batch in infeasible:  # the sampler avoids them while any other choice is left
            message = (f"out of memory at every batch size the search may use "
                       f"({', '.join(map(str, sorted(infeasible)))}); expected at least one that "
                       "fits: add smaller batch sizes to the space's batch_size, or shrink the "
                       f"model. First error at batch_size={batch}: {infeasible[batch]}")
            trial.set_user_attr("error", message)
            raise SearchAbortedError(message)

        def report(step: int, value: float) -> bool:
            raise_if_interrupted()
            trial.report(value, step)
            return trial.should_prune()

        try:
            evaluation = evaluator.evaluate(config, hp, report)
            raise_if_interrupted()
        except ProbeOutOfMemoryError as exc:
            first_line = mask_secrets(str(exc).splitlines()[0])[:500]
            trial.study.set_user_attr(f"{INFEASIBLE_PREFIX}{exc.batch_size}", first_line)
            trial.set_user_attr("out_of_memory", exc.batch_size)
            _set_error(trial, exc)
            if self.settings.verbose >= 2:
                print(f"trial {trial.number}: out of memory at batch_size={exc.batch_size}; "
                      "that batch size is skipped from now on", flush=True)
            raise
        except ProbeFailedError as exc:
            _set_error(trial, exc)
            raise
        if hp is not None:
            trial.set_user_attr("user_params", hp.values)
        trial.set_user_attr("curves", evaluation.curves)
        trial.set_user_attr("probes", evaluation.probes)
        if evaluation.pruned:
            raise optuna.TrialPruned()
        assert evaluation.components is not None
        trial.set_user_attr("components", evaluation.components.to_dict())
        for key, value in evaluation.components.flat(COMPONENT_PREFIX).items():
            trial.set_user_attr(key, value)
        if self.settings.verbose >= 2:
            c = evaluation.components
            print(f"trial {trial.number}: score={c.score:.3f} {c.verdict} "
                  f"val_loss={c.final_val_loss:.4g} | {config.describe()}", flush=True)
        return evaluation.score


def _set_error(trial: optuna.Trial, exc: ProbeFailedError) -> None:
    """The failed trial keeps the error's message and, apart, its traceback."""
    trial.set_user_attr("error", error_text(exc))
    if exc.traceback:
        trial.set_user_attr("traceback", error_text(exc.traceback, 8000))


class _SurplusTrial(ProbeFailedError):
    """A trial opened after other workers had taken the whole budget (no probe ran)."""


class _FailureCallback:
    """The shared `FailurePolicy` as an Optuna callback: it stops the study when tripped."""

    def __init__(self, policy: FailurePolicy) -> None:
        self.policy = policy

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        skipped = "out_of_memory" in trial.user_attrs or "surplus" in trial.user_attrs
        if self.policy.record(trial.state == TrialState.FAIL,
                              str(trial.user_attrs.get("error", "")), skipped=skipped):
            study.stop()


def records_from_study(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study as a `TrialRecord` (surplus trials, which ran no probe, and
    queued trials that have not started, left out)."""
    return [record_from_trial(t) for t in _search_trials(study)
            if "surplus" not in t.user_attrs and t.state != TrialState.WAITING]


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
        seconds=seconds, probes=dict(attrs.get("probes", {})))

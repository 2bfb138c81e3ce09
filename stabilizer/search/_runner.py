"""One search, start to end: what `stabilize()`, the CLI and every worker run.

`prepare_search` checks the data against the model and fingerprints the search before
any probe; `run_search` checks the study's fingerprint, cuts the space to what can
change the model, probes (or reads back) the baseline with its diagnosis, focuses the
space, runs the trials here or in worker processes, and returns the `StabilityResult`
with the choice of `choose_best` and the chosen configuration's diagnosis.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from stabilizer.apply import replay_hyperparameters
from stabilizer.compatibility import ModelFacts, fit_space, inspect_model
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData, prepare_data
from stabilizer.diagnosis import Diagnosis, diagnose
from stabilizer.errors import SearchInterrupted
from stabilizer.probe import Horizon, ProbePlan, batch_size_of
from stabilizer.result import Candidate, StabilityResult, TrialRecord
from stabilizer.scoring import ScoreComponents, score_traces
from stabilizer.search._base import BaseDriver
from stabilizer.search._choice import choose_best, restore_nan
from stabilizer.search._evaluator import Evaluation, Evaluator, summarize_trace
from stabilizer.search._finals import final_key, finalists, on_more_seeds
from stabilizer.search._fingerprint import Fingerprint, study_fingerprint
from stabilizer.search._ladder import BASELINE, LadderChoice, choose_on_ladder, climb, stored_probe
from stabilizer.search._policy import catch_interrupts, quiet_optuna, raise_if_interrupted
from stabilizer.search._workers import WorkerSource, run_workers
from stabilizer.search.optuna import OptunaDriver
from stabilizer.space import SearchSpace

__all__ = ["PreparedSearch", "make_driver", "prepare_search", "run_search"]


def make_driver(settings: SearchConfig, space: SearchSpace) -> BaseDriver:
    """The driver named by `settings.driver` (KerasTuner is imported only when named)."""
    if settings.driver == "keras_tuner":
        from stabilizer.search.keras_tuner import KerasTunerDriver

        return KerasTunerDriver(settings, space)
    return OptunaDriver(settings, space)


@dataclasses.dataclass
class PreparedSearch:
    """What a search checks and computes before its first probe (`prepare_search`)."""

    data: ProbeData
    facts: ModelFacts
    fingerprint: Fingerprint
    horizon: Horizon


def prepare_search(build_fn: Callable[..., Any], data: Any, space: SearchSpace,
                   settings: SearchConfig) -> tuple[SearchConfig, PreparedSearch]:
    """Validate the data, build the model once, check the data fits it, fingerprint the
    search, and name an unnamed study from the fingerprint.

    Raises `DataError` / `ConfigError` before any probe runs.
    """
    probe_data = prepare_data(data, validation_split=settings.validation_split, seed=settings.seed)
    batch_size_of(StabilityConfig(), settings, probe_data)  # the user's own batch must fit
    facts = inspect_model(build_fn, probe_data, settings)
    fingerprint = study_fingerprint(facts.model, facts.compile_spec, probe_data, space, settings)
    horizon = Horizon.resolve(settings, probe_data)
    if settings.study_name is None:
        settings = dataclasses.replace(settings, study_name=fingerprint.default_study_name)
    return settings, PreparedSearch(probe_data, facts, fingerprint, horizon)


def run_search(build_fn: Callable[..., Any], data: Any, space: SearchSpace,
               settings: SearchConfig, *, progress: Callable[[TrialRecord], None] | None = None,
               workers: int = 1, source: WorkerSource | None = None,
               diagnose_after: bool = True, climb_ladder: bool = True,
               prepared: PreparedSearch | None = None) -> StabilityResult:
    """The search behind `stabilize()`, on validated settings (also each worker's body).

    Order: the study's fingerprint checked (`prepared`, made here when not given), the
    space cut to the dimensions that can change this model (`fit_space`), the
    baseline (the user's configuration: diagnosed when `settings.diagnose`, its
    probes scored like any candidate; stored, so a resumed search does not probe it
    again), the space focused by the diagnosis, the diagnosis's first trials queued,
    the trials (here or in `workers` processes), the ladder (`climb_ladder`: the
    surviving candidates probed longer, up to a share of the user's training length,
    and the choice made at the longest rung; see `stabilizer.search._ladder`), the
    finalists on `final_seeds` seeds and the choice made again with them
    (`stabilizer.search._finals`), then the chosen configuration diagnosed on the same
    seeds (the "after"). A worker process runs trials only (``diagnose_after=False,
    climb_ladder=False``).
    """
    with quiet_optuna(settings.verbose):  # Optuna's INFO lines and warnings: this search only
        return _run_search(build_fn, data, space, settings, progress=progress,
                           workers=workers, source=source, diagnose_after=diagnose_after,
                           climb_ladder=climb_ladder, prepared=prepared)


def _run_search(build_fn: Callable[..., Any], data: Any, space: SearchSpace,
                settings: SearchConfig, *, progress: Callable[[TrialRecord], None] | None,
                workers: int, source: WorkerSource | None, diagnose_after: bool,
                climb_ladder: bool, prepared: PreparedSearch | None) -> StabilityResult:
    start = time.monotonic()
    if prepared is None:
        settings, prepared = prepare_search(build_fn, data, space, settings)
    probe_data = prepared.data
    fitted, space_notes = fit_space(space, prepared.facts, probe_data)
    driver = make_driver(settings, fitted)
    driver.check_fingerprint(prepared.fingerprint, force=settings.resume == "force")
    if space_notes:
        driver.save_attr("space_notes", space_notes)
    driver.progress = progress
    resume = getattr(progress, "resume", None)
    if resume is not None and hasattr(driver, "records"):
        resume(driver.records())
    if settings.time_limit is not None:
        driver.deadline = start + settings.time_limit
    evaluator = Evaluator(build_fn, probe_data, settings)
    baseline: Candidate | None = None
    before: Diagnosis | None = None
    try:
        with catch_interrupts():
            _phase(progress, "diagnosing your configuration" if settings.diagnose
                   else "probing your configuration")
            baseline, before, fresh = _baseline(driver, evaluator, build_fn)
            evaluator.reference_loss = baseline.components.reference_loss
            if before is not None:
                driver.space = fit_space(before.focus(fitted), prepared.facts, probe_data)[0]
                if fresh and not before.healthy:
                    driver.enqueue_first(_first_trials(before, driver.space, probe_data))
            _phase(progress, "searching")
            if source is not None:
                run_workers(workers, source, settings, body=run_search,
                            records=driver.records,  # type: ignore[attr-defined]
                            progress=progress)
                records = driver.records()  # type: ignore[attr-defined]
            else:
                records = driver.run(evaluator)
            raise_if_interrupted()
            ladder = None
            if climb_ladder:  # the process that finishes the search, not each worker
                driver.add_baseline_trial(baseline.components.to_dict(), baseline.curves)
                if len(prepared.horizon.rungs) > 1:
                    _phase(progress, "probing the best longer")
                driver.save_attr("horizon", prepared.horizon.to_dict())
                rungs = climb(driver, evaluator, prepared.horizon, records, baseline,
                              on_probe=_ladder_line if settings.verbose >= 2 else None)
                raise_if_interrupted()
                ladder = choose_on_ladder(rungs, records, baseline, prepared.horizon)
                ladder = _on_more_seeds(driver, evaluator, ladder, records, progress)
                raise_if_interrupted()
            result = _result(records, baseline, before, settings, fitted, driver, build_fn,
                             probe_data, space_notes, prepared.horizon, ladder)
            if diagnose_after and settings.diagnose and settings.diagnose_after:
                _phase(progress, "diagnosing the chosen configuration")
                result.after = _after(driver, result, build_fn, probe_data)
                raise_if_interrupted()
    except KeyboardInterrupt as exc:
        partial, done = None, []
        if baseline is not None:
            done = getattr(driver, "records", lambda: [])()
            partial = _result(done, baseline, before, settings, fitted, driver, build_fn,
                              probe_data, space_notes, prepared.horizon, None)
        finished = sum(r.state in ("COMPLETE", "PRUNED") for r in done)
        raise SearchInterrupted(
            f"search interrupted; {finished} finished trials kept in study "
            f"{settings.study!r} ({driver.storage_label()}): run the same search again "
            "to resume", partial) from exc
    return result


def _phase(progress: Any, text: str) -> None:
    """Tell a progress hook that has a ``phase(text)`` method what the search does now."""
    phase = getattr(progress, "phase", None)
    if phase is not None:
        phase(text)


def _on_more_seeds(driver: BaseDriver, evaluator: Evaluator, ladder: LadderChoice,
                   records: list[TrialRecord], progress: Any) -> LadderChoice:
    """The finalists measured on `final_seeds` seeds and the choice made again
    (`stabilizer.search._finals`); not when the search is out of time."""
    settings = evaluator.settings
    if settings.seeds_final <= settings.seeds or not finalists(ladder):
        return ladder
    if driver.out_of_time():
        return dataclasses.replace(ladder, notes=[
            *ladder.notes, f"finalists not measured on {settings.seeds_final} seeds: the "
            "time limit was reached"])
    steps = ladder.rungs[-1].steps
    plan = evaluator.plan if steps == evaluator.plan.total_steps else evaluator.plan.longer(steps)
    driver.save_attr("final_seeds", settings.seeds_final)  # for `load_result`
    _phase(progress, f"the finalists on {settings.seeds_final} seeds")
    def probe(number: int | None, record: TrialRecord | None, plan: ProbePlan,
              seeds: list[int]) -> dict[str, Any]:
        key = final_key(steps, BASELINE if number is None else number, settings.seeds_final)
        return stored_probe(driver, evaluator, key, plan, record, seeds)

    return on_more_seeds(ladder, records, settings, plan=plan,
                         reference=evaluator.reference_loss, load=driver.load_attr,
                         probe=probe)


def _ladder_line(steps: int, trial: int | None) -> None:
    who = "your configuration" if trial is None else f"trial {trial}"
    print(f"rung {steps} steps: probing {who}", flush=True)


def _first_trials(before: Diagnosis, space: SearchSpace, data: ProbeData
                  ) -> list[dict[str, Any]]:
    """The range test's plain suggestion, then the diagnosis's focused proposal.

    A batch size larger than the training set is left to the sampler.
    """
    trials = [before.range_test_trial(space), before.first_trial(space)]
    for params in filter(None, trials):
        if data.train_size is not None and params.get("batch_size", 0) > data.train_size:
            del params["batch_size"]
    return [p for i, p in enumerate(trials) if p and p not in trials[:i]]


def _result(records: list[TrialRecord], baseline: Candidate, before: Diagnosis | None,
            settings: SearchConfig, space: SearchSpace, driver: BaseDriver,
            build_fn: Callable[..., Any], data: ProbeData,
            space_notes: list[str], horizon: Horizon,
            ladder: LadderChoice | None) -> StabilityResult:
    if ladder is None:
        choice, compared = choose_best(records, baseline), baseline
        rungs, notes, finals = [], [], {}
    else:
        choice, compared = ladder.choice, ladder.baseline
        rungs, notes, finals = [r.summary() for r in ladder.rungs], ladder.notes, ladder.finals
    return StabilityResult(
        best=choice.best, baseline=compared, trials=records, choice_note=choice.note,
        horizon=horizon, rungs=rungs, ladder_notes=notes, finals=finals,
        settings=settings, space_name=space.name, study_name=settings.study,
        storage=driver.storage_label(), build_fn=build_fn, diagnosis=before,
        targets=data.y if data.kind == "arrays" else None,
        focus_notes=before.focus_notes(space) if before is not None else [],
        space_notes=space_notes, fixed_batch=data.fixed_batch)


def _baseline(driver: BaseDriver, evaluator: Evaluator, build_fn: Callable[..., Any]
              ) -> tuple[Candidate, Diagnosis | None, bool]:
    """The user's own configuration, probed like any candidate (stored, not redone).

    With `settings.diagnose` the probes are the diagnosis's own (same seeds, same
    length), so diagnosing costs only its forward checks and the LR range test.
    Returns the candidate, the diagnosis (None when not diagnosing) and whether
    this call probed it (False: read back from the store).
    """
    settings = evaluator.settings
    stored = driver.load_baseline()
    fresh = stored is None
    if stored is None:
        if settings.diagnose:
            before = diagnose(build_fn, evaluator.data, config=settings, seeds=settings.seeds,
                              lr_range_steps=settings.probe_steps)
            traces = before.traces
            stored = {"components": score_traces(traces).to_dict(),
                      "curves": [summarize_trace(t) for t in traces],
                      "user_params": before.hp_values, "diagnosis": before.to_dict()}
        else:
            hp = replay_hyperparameters({}) if evaluator.uses_hp else None
            evaluation: Evaluation = evaluator.evaluate(StabilityConfig(), hp)
            assert evaluation.components is not None
            stored = {"components": evaluation.components.to_dict(), "curves": evaluation.curves,
                      "user_params": dict(hp.values) if hp is not None else {}}
        driver.save_baseline(stored)
    components = ScoreComponents.from_dict(restore_nan(stored["components"]))
    diagnosis = stored.get("diagnosis") if settings.diagnose else None
    return (Candidate(StabilityConfig(), components, stored["curves"], stored["user_params"]),
            Diagnosis.from_dict(diagnosis) if diagnosis else None, fresh)


def _after(driver: BaseDriver, result: StabilityResult, build_fn: Callable[..., Any],
           data: ProbeData) -> Diagnosis | None:
    """The chosen configuration diagnosed on the baseline's seeds (stored per trial).

    When the baseline was kept, "after" is the baseline's own diagnosis.
    """
    if not result.improved:
        return result.diagnosis
    key = f"diagnosis_after_{result.best.trial_number}"
    stored = driver.load_attr(key)
    if stored is not None:
        return Diagnosis.from_dict(stored)
    best = result.best
    after = diagnose(build_fn, data, config=result.settings, seeds=result.settings.seeds,
                     candidate=best.config, hp_values=best.user_params, lr_range=False)
    driver.save_attr(key, after.to_dict())
    return after

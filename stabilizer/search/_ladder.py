"""The ladder: candidates start short, and those that survive run longer.

A probe of `probe_steps` sees the start of a training that may last thousands of steps.
After the trials (rung 0, every candidate at `probe_steps`), a third of the completed
candidates (at least one) go up to the next rung, `RUNG_FACTOR` times longer, on the
same seeds, with the user's own configuration probed at every rung beside them; and
so on up to `Horizon.rungs[-1]`, a stated share of the user's training length
(successive halving, eta = 3, on the driver's storage: each rung's probes are stored as
they finish, so a resumed search does not run them again).

- **Who goes up.** Ranked at their rung: not diverged, then not unstable, then the
  score. "Stuck" is not disqualifying below the top: at 120 steps it means "not yet"
  for a model that will train for 2,000.
- **Every candidate stuck.** When the user's configuration and every candidate are
  still stuck at the last planned rung, the ladder goes one rung longer (as long as it
  stays within the user's training length), instead of ending the search.
- **Progress at the right scale.** Each candidate's advantage over the user's
  configuration is measured at each rung it reached (its quality minus the user's:
  log of the ratio of the final validation losses, on the same seeds). An advantage
  that shrinks between rungs is extrapolated, linearly in log-steps, to the user's
  training length; a candidate projected to end worse than the user's configuration
  is marked as *fading* and replaces it only for a clear stability gain
  (`stabilizer.search.clear_gain`).
- **The choice** is `choose_best` at the longest rung reached: the candidates that
  reached it against the user's configuration at the same length, on the same seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from stabilizer.apply import replay_hyperparameters
from stabilizer.config import StabilityConfig
from stabilizer.errors import ProbeFailedError
from stabilizer.probe import RUNG_FACTOR, Horizon, ProbePlan
from stabilizer.result import Candidate, TrialRecord
from stabilizer.scoring import ScoreComponents
from stabilizer.search._base import BaseDriver
from stabilizer.search._choice import Choice, choose_best, clear_gain, restore_nan
from stabilizer.search._evaluator import Evaluator
from stabilizer.search._policy import error_text

__all__ = ["Rung", "LadderChoice", "climb", "choose_on_ladder", "stored_probe", "stored_rungs",
           "rung_key"]

BASELINE = "baseline"


def rung_key(steps: int, who: int | str) -> str:
    """The storage attribute of one probe record at a rung (``who``: a trial or "baseline")."""
    return f"rung:{steps}:{who}"


@dataclasses.dataclass
class Rung:
    """The probes at one rung: the user's configuration and the candidates that reached it."""

    steps: int
    baseline: dict[str, Any] | None  # {"components", "curves", "probes", "seconds"}
    trials: dict[int, dict[str, Any]]

    def components(self, who: int | None) -> ScoreComponents | None:
        record = self.baseline if who is None else self.trials.get(who)
        if not record or not record.get("components"):
            return None
        return ScoreComponents.from_dict(restore_nan(record["components"]))

    def summary(self) -> dict[str, Any]:
        """Steps, each entry's verdict and final validation loss, what the rung's probes cost
        (steps and seconds, every seed) and your configuration's curves (for reports)."""
        def brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
            if not record:
                return None
            c = record["components"]
            return {"verdict": c.get("verdict"), "score": c.get("score"),
                    "final_val_loss": c.get("final_val_loss"), "quality": c.get("quality")}
        entries = [r for r in (self.baseline, *self.trials.values()) if r]
        curves = [c for r in entries for c in r.get("curves") or []]
        return {"steps": self.steps, "baseline": brief(self.baseline),
                "trials": {str(n): brief(r) for n, r in sorted(self.trials.items())},
                "cost": {"steps": sum(int(c.get("steps") or 0) for c in curves),
                         "seconds": round(sum(float(c.get("seconds") or 0.0)
                                              for c in curves), 3)},
                "baseline_curves": (self.baseline or {}).get("curves") or [],
                "baseline_components": (self.baseline or {}).get("components")}


@dataclasses.dataclass
class LadderChoice:
    """The choice at the longest rung, and what the ladder saw on the way."""

    choice: Choice
    baseline: Candidate  # the user's configuration at the longest rung
    rungs: list[Rung]
    notes: list[str]
    fading: dict[int, str]
    #: the finalists on more seeds (`stabilizer.search._finals`): steps, seeds, trials, cost
    finals: dict[str, Any] = dataclasses.field(default_factory=dict)


def _rank(components: ScoreComponents) -> tuple[bool, bool, float]:
    """Promotion order: not diverged, not unstable ("stuck" is "not yet"), then the score."""
    return (not components.diverged, components.verdict != "unstable", components.score)


def _promoted(rung: Rung) -> list[int]:
    """The third (at least one) of the rung's candidates that go up."""
    ranked = []
    for number in rung.trials:
        comps = rung.components(number)
        if comps is None or comps.diverged or not math.isfinite(comps.score):
            continue
        ranked.append((_rank(comps), -number, number))
    ranked.sort(reverse=True)
    keep = max(1, len(ranked) // RUNG_FACTOR) if ranked else 0
    return [number for *_, number in ranked[:keep]]


def _all_stuck(rung: Rung) -> bool:
    entries = [rung.components(None), *(rung.components(n) for n in rung.trials)]
    return all(c is not None and c.verdict == "stuck" for c in entries)


def _rung0(records: Sequence[TrialRecord], baseline: Candidate, steps: int) -> Rung:
    trials = {}
    for r in records:
        if r.state == "COMPLETE" and r.components and r.config is not None \
                and r.config != StabilityConfig():
            trials[r.number] = {"components": r.components, "curves": r.curves,
                                "probes": r.probes, "seconds": r.seconds}
    return Rung(steps, {"components": baseline.components.to_dict(), "curves": baseline.curves},
                trials)


def climb(driver: BaseDriver, evaluator: Evaluator, horizon: Horizon,
          records: Sequence[TrialRecord], baseline: Candidate,
          on_probe: Callable[[int, int | None], None] | None = None) -> list[Rung]:
    """Run (or read back) the rungs above the first; return every rung, the first included.

    Stops early when the driver is out of time; `on_probe(steps, trial or None)` is
    called before each probe that runs.
    """
    by_number = {r.number: r for r in records}
    rungs = [_rung0(records, baseline, horizon.rungs[0])]
    lengths = list(horizon.rungs)
    base_plan = evaluator.plan
    level = 1
    while True:
        if level >= len(lengths):
            nxt = lengths[-1] * RUNG_FACTOR
            if not (horizon.fraction > 0 and _all_stuck(rungs[-1])
                    and nxt <= horizon.train_steps):
                break
            lengths.append(nxt)  # every one still stuck: look further, within the training
        promoted = _promoted(rungs[-1])
        if not promoted or driver.out_of_time():
            break
        steps = lengths[level]
        plan = base_plan.longer(steps)
        base = _probe(driver, evaluator, plan, None, None, on_probe)
        if "components" not in base:
            break  # your configuration failed at this length: nothing to compare against
        rung = Rung(steps, base, {})
        for number in promoted:
            if driver.out_of_time():
                break
            stored = _probe(driver, evaluator, plan, number, by_number[number], on_probe)
            if "components" in stored:  # a failed probe leaves the candidate behind
                rung.trials[number] = stored
        rungs.append(rung)
        level += 1
    return rungs


def _probe(driver: BaseDriver, evaluator: Evaluator, plan: ProbePlan, number: int | None,
           record: TrialRecord | None,
           on_probe: Callable[[int, int | None], None] | None) -> dict[str, Any]:
    key = rung_key(plan.total_steps, BASELINE if number is None else number)
    stored = driver.load_attr(key)
    if stored is not None:
        return dict(stored)
    if on_probe is not None:
        on_probe(plan.total_steps, number)
    return stored_probe(driver, evaluator, key, plan, record)


def stored_probe(driver: BaseDriver, evaluator: Evaluator, key: str, plan: ProbePlan,
                 record: TrialRecord | None, seeds: list[int] | None = None) -> dict[str, Any]:
    """Probe `record`'s configuration (the user's for None) for `plan` on `seeds` (default:
    the search's) and store what came back under `key`: {"components", "curves", "probes",
    "seconds"}, or {"error"} for a probe that failed (kept: not retried on resume)."""
    config = StabilityConfig() if record is None or record.config is None else record.config
    params = {} if record is None else record.user_params
    hp = replay_hyperparameters(params) if evaluator.uses_hp else None
    try:
        evaluation = evaluator.evaluate(config, hp, plan=plan, seeds=seeds)
    except ProbeFailedError as exc:  # kept (not retried on resume); the trials are safe
        stored = {"error": error_text(exc)}
        driver.save_attr(key, stored)
        return stored
    assert evaluation.components is not None  # no pruning above the first rung
    stored = {"components": evaluation.components.to_dict(), "curves": evaluation.curves,
              "probes": evaluation.probes,
              "seconds": round(sum(c.get("seconds") or 0.0 for c in evaluation.curves), 3)}
    driver.save_attr(key, stored)
    return stored


def stored_rungs(load: Callable[[str], Any], horizon: Horizon, records: Sequence[TrialRecord],
                 baseline: Candidate) -> list[Rung]:
    """The rungs as stored, read with `load` (a driver's `load_attr`): for a search read
    back from its storage alone."""
    rungs = [_rung0(records, baseline, horizon.rungs[0])]
    steps = horizon.rungs[0] * RUNG_FACTOR
    while steps <= horizon.train_steps:
        base = load(rung_key(steps, BASELINE))
        if base is None or "components" not in base:
            break
        trials = {}
        for number in rungs[-1].trials:
            stored = load(rung_key(steps, number))
            if stored is not None and "components" in stored:
                trials[number] = dict(stored)
        rungs.append(Rung(steps, dict(base), trials))
        steps *= RUNG_FACTOR
    return rungs


def _advantage(rung: Rung, number: int) -> float | None:
    base, cand = rung.components(None), rung.components(number)
    if base is None or cand is None or not (math.isfinite(base.quality)
                                            and math.isfinite(cand.quality)):
        return None
    return cand.quality - base.quality


def _fading(rungs: Sequence[Rung], number: int, train_steps: int) -> str:
    """Why the candidate's lead is projected to be gone at `train_steps` ("" if not, and
    for a candidate that was not ahead at the earlier of the last two rungs)."""
    points = [(r.steps, a) for r in rungs if number in r.trials
              and (a := _advantage(r, number)) is not None]
    if len(points) < 2:
        return ""
    (s0, a0), (s1, a1) = points[-2], points[-1]
    if a0 <= 0:  # no lead to lose: a candidate behind yours is left to the choice rule
        return ""
    slope = (a1 - a0) / math.log(s1 / s0)
    projected = a1 + slope * math.log(max(train_steps, s1) / s1)
    if slope >= 0 or projected >= 0:
        return ""
    return (f"its advantage over your configuration fell from {a0:.3g} to {a1:.3g} (log loss "
            f"ratio) between {s0} and {s1} steps; projected {projected:.3g} at "
            f"{train_steps:,} steps: no advantage left by then")


def choose_on_ladder(rungs: Sequence[Rung], records: Sequence[TrialRecord],
                     baseline: Candidate, horizon: Horizon) -> LadderChoice:
    """The choice at the longest rung that any candidate reached (see the module docstring);
    `baseline` is the user's configuration at the first rung."""
    rungs = [r for i, r in enumerate(rungs) if i == 0 or r.trials]
    top = rungs[-1]
    base_comps = top.components(None)
    assert top.baseline is not None and base_comps is not None
    if len(rungs) > 1:
        baseline = Candidate(StabilityConfig(), base_comps, top.baseline.get("curves", []),
                             baseline.user_params, None)
    by_number = {r.number: r for r in records}
    fading = {n: why for n in top.trials if (why := _fading(rungs, n, horizon.train_steps))}
    gain = clear_gain(base_comps)
    eligible = []
    for number, stored in top.trials.items():
        if number in fading and not gain:
            continue
        record = by_number[number]
        eligible.append(dataclasses.replace(record, components=stored["components"],
                                            curves=stored.get("curves", []),
                                            probes=stored.get("probes", {})))
    choice = choose_best(eligible, baseline)
    notes = []
    if len(rungs) > 1:
        reached = ", ".join(f"{len(r.trials)} at {r.steps}" for r in rungs)
        notes.append(f"ladder: candidates per rung: {reached} steps; chosen at {top.steps} "
                     "steps against your configuration on the same seeds")
    for number, why in sorted(fading.items()):
        kept = "kept in the running for a clear stability gain" if gain else "left out"
        notes.append(f"trial {number} fading ({kept}): {why}")
    return LadderChoice(choice, baseline, list(rungs), notes, fading)

"""The finalists on more seeds: the seed spread the choice weighs, measured on more runs.

Every candidate is probed on `SearchConfig.seeds` seeds (2 by default), and the seed
spread of two runs is a poor estimate: two runs that happen to agree hide a
configuration that parts between seeds, and the user's training is one more draw of
it. Before the choice, the finalists (the best `FINALISTS` candidates at the longest
rung, ranked as the choice ranks them, and the user's configuration) are probed on
the seeds after the first ``seeds`` up to `SearchConfig.final_seeds` (off by default;
seeds ``seed * 1000 + seeds`` ...), at the same length; each one's new seeds
are scored together with the ones already run (`stabilizer.scoring.score_seeds`: medians
and the seed spread over all of them), and `choose_best` chooses again among the
finalists with those scores. The probes are stored
(``final:<steps>:<trial or baseline>:<seeds>``), so a resumed search or a result read
back from storage does not run them again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.probe import ProbePlan, probe_seeds
from stabilizer.result import Candidate, TrialRecord
from stabilizer.scoring import ScoreComponents, score_seeds
from stabilizer.search._choice import choice_rank, choose_best, clear_gain, restore_nan
from stabilizer.search._ladder import BASELINE, LadderChoice

__all__ = ["FINALISTS", "FinalProbe", "final_key", "finalists", "on_more_seeds"]

#: How many candidates are measured on more seeds beside the user's configuration.
FINALISTS = 3

#: (trial number or None for the baseline, its record or None, the plan, the new seeds)
#: -> the stored entry (`stabilizer.search._ladder.stored_probe`): {"components", "curves",
#: "probes", "seconds"} or {"error"}.
FinalProbe = Callable[[int | None, TrialRecord | None, ProbePlan, list[int]], dict[str, Any]]


def final_key(steps: int, who: int | str, seeds: int) -> str:
    """The storage attribute of one finalist's probes on the extra seeds."""
    return f"final:{steps}:{who}:{seeds}"


def finalists(ladder: LadderChoice) -> list[int]:
    """The trial numbers measured on more seeds: the best `FINALISTS` at the longest rung
    that the choice could take (not diverged; a fading one only for a clear gain)."""
    top = ladder.rungs[-1]
    gain = clear_gain(ladder.baseline.components)
    ranked = []
    for number in top.trials:
        comps = top.components(number)
        if comps is None or comps.diverged or not math.isfinite(comps.score):
            continue
        if number in ladder.fading and not gain:
            continue
        ranked.append((choice_rank(comps), -number, number))
    ranked.sort(reverse=True)
    return [number for *_, number in ranked[:FINALISTS]]


def _merged(components: dict[str, Any], extra: dict[str, Any],
            reference: float | None) -> ScoreComponents:
    """The scores of the seeds already run and of the new ones, together."""
    per_seed = list(components.get("per_seed") or []) + list(extra["components"]["per_seed"])
    return score_seeds(per_seed, reference)


def on_more_seeds(ladder: LadderChoice, records: list[TrialRecord], settings: SearchConfig,
                  *, plan: ProbePlan, reference: float | None, load: Callable[[str], Any],
                  probe: FinalProbe | None = None) -> LadderChoice:
    """`ladder`'s choice made again with the finalists on `settings.seeds_final` seeds.

    `plan` is the longest rung's probe plan, `reference` the study's reference loss,
    `load` reads a stored attribute and `probe` runs (and stores) the probes of one
    finalist; without `probe` (a result read back from storage) only stored probes are
    used. The ladder comes back unchanged when the user's configuration has no probes on
    the extra seeds; a finalist whose probes failed keeps its earlier scores.
    """
    seeds, final_seeds = settings.seeds, settings.seeds_final
    if final_seeds <= seeds:
        return ladder
    numbers = finalists(ladder)
    if not numbers:
        return ladder
    top = ladder.rungs[-1]
    extra_seeds = probe_seeds(settings, final_seeds)[seeds:]

    def entry(number: int | None) -> dict[str, Any] | None:
        key = final_key(top.steps, BASELINE if number is None else number, final_seeds)
        stored = load(key)
        if stored is None and probe is not None:
            record = None if number is None else by_number[number]
            stored = probe(number, record, plan, extra_seeds)
        return dict(stored) if stored is not None else None

    by_number = {r.number: r for r in records}
    base_entry = entry(None)
    if base_entry is None or "components" not in base_entry or top.baseline is None:
        return ladder
    base_comps = _merged(top.baseline["components"], base_entry, reference)
    baseline = Candidate(StabilityConfig(), base_comps,
                         list(ladder.baseline.curves) + base_entry["curves"],
                         ladder.baseline.user_params, None)
    eligible, lines = [], [_line("your configuration", top.baseline["components"], base_comps)]
    new_curves = list(base_entry["curves"])
    for number in numbers:
        stored = top.trials[number]
        extra = entry(number)
        if extra is None or "components" not in extra:
            comps = ScoreComponents.from_dict(restore_nan(stored["components"]))
            curves = stored.get("curves", [])
            lines.append(f"trial {number}: kept at {len(curves)} seeds (its probes on more "
                         f"seeds failed: {(extra or {}).get('error', 'not run')})")
        else:
            comps = _merged(stored["components"], extra, reference)
            curves = list(stored.get("curves", [])) + extra["curves"]
            new_curves += extra["curves"]
            lines.append(_line(f"trial {number}", stored["components"], comps))
        eligible.append(dataclasses.replace(by_number[number], components=comps.to_dict(),
                                            curves=curves,
                                            probes=stored.get("probes", {})))
    choice = choose_best(eligible, baseline)
    note = (f"finalists on {final_seeds} seeds at {top.steps} steps (score, seed spread: "
            f"before -> after): {'; '.join(lines)}")
    cost = {"steps": sum(int(c.get("steps") or 0) for c in new_curves),
            "seconds": round(sum(float(c.get("seconds") or 0.0) for c in new_curves), 3)}
    return dataclasses.replace(ladder, choice=choice, baseline=baseline,
                               notes=[*ladder.notes, note],
                               finals={"steps": top.steps, "seeds": final_seeds,
                                       "trials": numbers, "cost": cost})


def _line(who: str, before: dict[str, Any], after: ScoreComponents) -> str:
    old = ScoreComponents.from_dict(restore_nan(before))
    return (f"{who} {old.score:.3g} -> {after.score:.3g}, {old.seed_spread:.3g} -> "
            f"{after.seed_spread:.3g} ({after.verdict})")

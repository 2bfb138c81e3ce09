"""Bootstrap statistics of the yardstick: verdict confidence, repair rates, paired differences.

Every figure resamples what is random in a benchmark: the judge's seeds (within a
scenario, the same indices for every configuration, so a method and the baseline it is
compared with are always judged on the same resampled seeds) and, for rates, the
scenarios themselves. A verdict function gives a verdict from two
`benchmarks.judge.Judgement` objects (and, for rates, the scenario they belong to); the
functions here only resample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.judge import Judgement

__all__ = ["CONFIDENCE", "bootstrap_rates", "interval", "resampled", "verdict_agreement"]

#: The two-sided level of every interval (a 90% interval: the 5th and 95th percentiles).
CONFIDENCE = 0.90

VerdictFn = Callable[[Judgement, Judgement], bool]
#: (candidate, baseline, the scenario's mapping) -> repaired
ScenarioVerdictFn = Callable[[Judgement, Judgement, Mapping[str, Any]], bool]


def resampled(judgement: Judgement, index: Sequence[int]) -> Judgement:
    """The judgement with its seeds drawn at `index` (a bootstrap resample)."""
    return Judgement([judgement.runs[i] for i in index])


def verdict_agreement(candidate: Judgement, baseline: Judgement, verdict_fn: VerdictFn, *,
                      resamples: int = 200, seed: int = 0) -> float:
    """The share of paired bootstrap resamples of the judge seeds that give the verdict
    the judge gave on all of them (1.0: every resample agrees)."""
    full = verdict_fn(candidate, baseline)
    n = len(candidate.runs)
    rng = np.random.default_rng(seed)
    same = 0
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        same += verdict_fn(resampled(candidate, index), resampled(baseline, index)) == full
    return same / resamples


def interval(values: Sequence[float], level: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of `values` at `level`."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, float), [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_rates(scenarios: Sequence[Mapping[str, Any]], methods: Sequence[str],
                    verdict_fn: ScenarioVerdictFn, *, reference: str | None = None,
                    resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Repair rates with intervals, and paired differences to `reference`.

    Each scenario is ``{"baseline": Judgement, "methods": {name: Judgement | None}, ...}``
    (None: the method failed, never a repair); `verdict_fn` gets it as its third argument.
    Per resample the scenarios are drawn with replacement, and within each drawn scenario
    its judge seeds (the same indices for the baseline and every method). Returns per
    method ``{"rate", "low", "high"}`` (the rate on all scenarios and seeds, the interval
    over resamples) and, with `reference`, per other method ``{"difference", "low",
    "high"}`` of reference minus it.
    """
    rng = np.random.default_rng(seed)

    def repaired(scenario: Mapping[str, Any], method: str, index: Sequence[int] | None) -> bool:
        judged = scenario["methods"].get(method)
        if judged is None:
            return False
        base = scenario["baseline"]
        if index is None:
            return verdict_fn(judged, base, scenario)
        return verdict_fn(resampled(judged, index), resampled(base, index), scenario)

    point = {m: float(np.mean([repaired(s, m, None) for s in scenarios])) if scenarios else
             float("nan") for m in methods}
    draws: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(resamples if scenarios else 0):
        picked = rng.integers(0, len(scenarios), len(scenarios))
        totals = dict.fromkeys(methods, 0)
        for i in picked:
            scenario = scenarios[i]
            n = len(scenario["baseline"].runs)
            index = rng.integers(0, n, n)
            for m in methods:
                totals[m] += repaired(scenario, m, index)
        for m in methods:
            draws[m].append(totals[m] / len(scenarios))
    out: dict[str, Any] = {"rates": {}, "differences": {}}
    for m in methods:
        low, high = interval(draws[m]) if draws[m] else (float("nan"), float("nan"))
        out["rates"][m] = {"rate": point[m], "low": low, "high": high}
    if reference is not None:
        for m in methods:
            if m == reference:
                continue
            diffs = np.asarray(draws[reference]) - np.asarray(draws[m])
            low, high = interval(diffs) if len(diffs) else (float("nan"), float("nan"))
            out["differences"][m] = {"difference": point[reference] - point[m], "low": low,
                                     "high": high}
    return out

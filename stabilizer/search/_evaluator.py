"""Evaluating one candidate: its probes over every seed, scored, with the evidence.

Both drivers call `Evaluator.evaluate`; it probes the seeds (`run_probes`: together as
replicas of one program where they can be, else in order), stops at the first diverged
seed (the candidate is diverged whatever the others do), reports the first seed's
per-evaluation quality to the driver's pruner, and returns the score components,
down-sampled curves for the report and how the seeds were trained (`probes`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from stabilizer.apply import resolve_build_fn
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData
from stabilizer.probe import ProbePlan, probe_seeds, run_probes
from stabilizer.scoring import DIVERGED_SCORE, ScoreComponents, score_traces
from stabilizer.telemetry import ProbeTrace, TelemetryCallback

__all__ = ["Evaluation", "Evaluator", "summarize_trace"]

#: (step, value) -> True when the driver wants the candidate pruned.
Reporter = Callable[[int, float], bool]
_CURVE_POINTS = 200


def _downsample(values: Any) -> list[Any]:
    array = np.asarray(values, dtype=np.float64)
    if len(array) > _CURVE_POINTS:
        idx = np.unique(np.linspace(0, len(array) - 1, _CURVE_POINTS).round().astype(int))
        array = array[idx]
    rounded = np.where(np.isfinite(array), array, np.nan)
    return [[_num(v) for v in row] for row in rounded] if array.ndim == 2 \
        else [_num(v) for v in rounded]


def _num(value: float) -> float | None:
    return None if not math.isfinite(value) else float(f"{value:.5g}")


def summarize_trace(trace: ProbeTrace) -> dict[str, Any]:
    """The curves of one probe, down-sampled for storage on the trial."""
    return {
        "steps": trace.steps_done,
        "loss": _downsample(trace.loss),
        "grad_norm": _downsample(trace.grad_norm),
        "layer_grad_norm": _downsample(trace.layer_grad_norm),
        "update_ratio": [_num(float(v)) for v in np.median(trace.update_ratio, axis=0)]
        if trace.steps_done else [],
        "layer_names": trace.layer_names,
        "val_loss": [_num(v) for v in trace.val_loss],
        "initial_val_loss": _num(trace.initial_val_loss),
        "val_metrics": trace.val_metrics,
        "bn_stats": trace.bn_stats,
        "learning_rate": [_num(v) for v in trace.learning_rate],
        "diverged": trace.diverged,
        "seconds": round(trace.seconds, 3),
        "changes": trace.changes,
        "not_applied": trace.not_applied,
    }


@dataclasses.dataclass
class Evaluation:
    """The outcome of one candidate."""

    config: StabilityConfig
    components: ScoreComponents | None  # None when pruned before any seed finished
    curves: list[dict[str, Any]]
    pruned: bool = False
    #: How the seeds were trained: {"seeds", "together", "fallback"} (`ProbeRun.describe`).
    probes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.components.score if self.components else DIVERGED_SCORE


class Evaluator:
    """Runs and scores candidates for one `build_fn`, data set and settings."""

    def __init__(self, build_fn: Callable[..., Any], data: ProbeData, settings: SearchConfig,
                 reference_loss: float | None = None) -> None:
        self.build_fn, self.uses_hp = resolve_build_fn(build_fn)
        self.data = data
        self.settings = settings
        self.reference_loss = reference_loss
        self.plan = ProbePlan.from_settings(settings)

    def evaluate(self, config: StabilityConfig, hp: Any = None,
                 report: Reporter | None = None, plan: ProbePlan | None = None,
                 seeds: list[int] | None = None) -> Evaluation:
        """`config` probed on every seed (`seeds`, default `probe_seeds`), for `plan`
        (default: `probe_steps` long)."""
        hook = self._hook(report) if report is not None else None
        run = run_probes(self.build_fn, self.data, config, self.settings,
                         probe_seeds(self.settings) if seeds is None else seeds, hp=hp,
                         plan=plan or self.plan,
                         hooks={0: hook} if hook is not None else None)
        curves = [summarize_trace(t) for t in run.traces]
        if hook is not None and hook.pruned:
            return Evaluation(config, None, curves, pruned=True, probes=run.describe())
        return Evaluation(config, score_traces(run.traces, self.reference_loss), curves,
                          probes=run.describe())

    def _hook(self, report: Reporter) -> _PruneHook:
        return _PruneHook(report, self.reference_loss)


class _PruneHook:
    """Reports quality after each evaluation; remembers whether the driver pruned."""

    def __init__(self, report: Reporter, reference: float | None) -> None:
        self.report = report
        self.reference = reference
        self.pruned = False

    def __call__(self, epoch: int, callback: TelemetryCallback) -> bool:
        val = callback.val_loss[-1] if callback.val_loss else float("nan")
        if callback.diverged or not math.isfinite(val):
            return False  # divergence ends the probe by itself and is scored, not pruned
        ref = self.reference if self.reference and self.reference > 0 else val
        value = math.log(ref / val) if val > 0 else 0.0
        self.pruned = bool(self.report(epoch, value))
        return self.pruned

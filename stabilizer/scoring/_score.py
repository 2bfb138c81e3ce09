"""The stability score of one candidate from its per-seed traces (`score_traces`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stabilizer.scoring._records import jsonable
from stabilizer.scoring._stats import (
    explode_rate,
    generalization_gap,
    oscillation,
    safe_log,
    spike_rate,
    vanishing_share,
)
from stabilizer.telemetry import ProbeTrace

__all__ = ["DIVERGED_SCORE", "SCALE_CAP", "WEIGHTS", "THRESHOLDS", "ScoreComponents",
           "loss_scale", "score_seeds", "score_traces", "seed_metrics"]

DIVERGED_SCORE = -50.0
WEIGHTS = {"oscillation": 0.5, "spike_rate": 2.0, "explode_rate": 2.0,
           "vanishing_share": 0.5, "seed_spread": 1.0, "stuck": 1.0,
           "generalization_gap": 1.0}
#: A candidate is "unstable" when any of these is exceeded (documented, overridable).
THRESHOLDS = {"oscillation": 0.35, "spike_rate": 0.03, "explode_rate": 0.03,
              "vanishing_share": 0.0, "seed_spread": 0.15, "min_progress": 0.05}
#: Losses are compared as log(loss + floor), floor = this share of the untrained
#: validation loss, so a loss approaching zero is not read as oscillating.
LOSS_FLOOR = 0.05
#: The untrained loss stands for the problem's loss scale only up to this many times
#: the chance level (`loss_scale`).
SCALE_CAP = 100.0


def loss_scale(initial: float, chance: float) -> float:
    """The problem's loss scale: the untrained validation loss, at most `SCALE_CAP` times
    the chance level when that is known.

    An untrained model a hundred times worse than a constant prediction (a recurrence
    that grows its state 2 ** 50-fold, outputs in the thousands) has a loss that says
    nothing of the losses training reaches; the floor and the reference drawn from it
    would make every candidate's final loss look the same (a floor of 5e18 under losses
    of 0.2 and 0.9) and their seed spread zero.
    """
    if math.isfinite(chance) and chance > 0 and not initial <= SCALE_CAP * chance:
        return SCALE_CAP * chance
    return initial


def seed_metrics(trace: ProbeTrace) -> dict[str, float]:
    """The per-seed components of one trace (see the module docstring)."""
    final = trace.val_loss[-1] if trace.val_loss else float("nan")
    initial = trace.initial_val_loss
    scale = loss_scale(initial, trace.chance_loss)
    finite = math.isfinite(final) and math.isfinite(scale) and scale > 0
    floor = LOSS_FLOOR * scale if finite else 0.0
    return {
        "diverged": float(trace.diverged or not math.isfinite(final)),
        "initial_val_loss": initial,
        "chance_loss": trace.chance_loss,
        "final_val_loss": final,
        "progress": 1.0 - final / trace.progress_start if finite else float("nan"),
        "oscillation": oscillation(trace.loss, floor),
        "spike_rate": spike_rate(trace.loss, floor),
        "explode_rate": explode_rate(trace.grad_norm),
        "vanishing_share": vanishing_share(trace.layer_grad_norm),
        "generalization_gap": generalization_gap(np.asarray(trace.loss, float), final),
    }


def _chance_note(per_seed: Sequence[dict[str, float]]) -> str:
    """Says so when progress was measured from the chance level, not the untrained loss."""
    chances = [s["chance_loss"] for s in per_seed if math.isfinite(s.get("chance_loss", math.nan))]
    if not chances or np.median(chances) >= np.median([s["initial_val_loss"] for s in per_seed]):
        return ""
    return f"; measured from the chance level {np.median(chances):.3g}, below the untrained loss"


def _log_ratio(reference: float, value: float) -> float:
    if reference > 0 and value > 0:
        return math.log(reference / value)
    return (reference - value) / max(abs(reference), 1e-12)


@dataclasses.dataclass
class ScoreComponents:
    """Every number the score is made of; `score` is recomputable from them."""

    score: float
    verdict: str  # "stable", "unstable", "stuck" or "diverged"
    reasons: list[str]
    diverged: bool
    final_val_loss: float
    reference_loss: float
    quality: float
    progress: float
    stuck: bool
    oscillation: float
    spike_rate: float
    explode_rate: float
    vanishing_share: float
    seed_spread: float
    seeds: int
    per_seed: list[dict[str, float]]
    generalization_gap: float = 0.0  # records stored before it have none: no penalty

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreComponents:
        return cls(**data)

    def flat(self, prefix: str = "") -> dict[str, float | None]:
        """The numeric components, one key each (`prefix` + name): flags as 0/1, a value
        that is not finite as None. What a study stores per trial so that Optuna's own tools
        (``trials_dataframe()``, optuna-dashboard) can sort and plot by each."""
        flat: dict[str, float | None] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (bool, int, float)):
                number = float(value)
                flat[prefix + field.name] = number if math.isfinite(number) else None
        return flat

    def penalties(self) -> dict[str, float]:
        values = {k: getattr(self, k) for k in WEIGHTS if k != "stuck"}
        values["stuck"] = float(self.stuck)
        return {k: WEIGHTS[k] * values[k] for k in WEIGHTS}


def score_traces(traces: Sequence[ProbeTrace],
                 reference_loss: float | None = None) -> ScoreComponents:
    """Score one candidate from its per-seed traces (see the module docstring)."""
    return score_seeds([seed_metrics(t) for t in traces], reference_loss)


def score_seeds(per_seed: Sequence[dict[str, float]],
                reference_loss: float | None = None) -> ScoreComponents:
    """Score one candidate from its seeds' `seed_metrics` (a stored ``per_seed`` list, with
    None for a value that was not finite, or those of more seeds appended to it)."""
    per_seed = [{k: math.nan if v is None else v for k, v in s.items()} for s in per_seed]
    diverged = any(s["diverged"] for s in per_seed)
    finals = np.array([s["final_val_loss"] for s in per_seed])
    ref = reference_loss if reference_loss is not None and math.isfinite(reference_loss) \
        and reference_loss > 0 else float(np.nanmedian([s["initial_val_loss"] for s in per_seed]))
    chances = [s["chance_loss"] for s in per_seed if math.isfinite(s.get("chance_loss", math.nan))]
    ref = loss_scale(ref, float(np.median(chances)) if chances else float("nan"))

    def med(key: str) -> float:
        values = [s[key] for s in per_seed if math.isfinite(s[key])]
        return float(np.median(values)) if values else float("nan")

    final = float(np.median(finals)) if np.isfinite(finals).all() else float("nan")
    floor = LOSS_FLOOR * ref if math.isfinite(ref) and ref > 0 else 0.0
    spread = float(np.std(safe_log(finals + floor))) \
        if len(finals) > 1 and np.isfinite(finals).all() else 0.0
    progress = med("progress")
    stuck = not diverged and not (progress >= THRESHOLDS["min_progress"])
    parts = dict(oscillation=med("oscillation"), spike_rate=med("spike_rate"),
                 explode_rate=med("explode_rate"), vanishing_share=med("vanishing_share"))
    gap = med("generalization_gap")
    parts["generalization_gap"] = max(0.0, gap) if math.isfinite(gap) else 0.0
    quality = _log_ratio(ref + floor, final + floor) if math.isfinite(final) else float("nan")
    reasons: list[str] = []
    if diverged:
        n = sum(int(s["diverged"]) for s in per_seed)
        reasons.append(f"diverged on {n} of {len(per_seed)} seeds (NaN/Inf or loss explosion)")
        score, verdict = DIVERGED_SCORE, "diverged"
    else:
        values = {**parts, "seed_spread": spread, "stuck": float(stuck)}
        score = quality - sum(WEIGHTS[k] * values[k] for k in WEIGHTS)
        score = max(score, DIVERGED_SCORE + 10.0)
        for key in ("oscillation", "spike_rate", "explode_rate", "vanishing_share", "seed_spread"):
            if values[key] > THRESHOLDS[key]:
                reasons.append(f"{key}={values[key]:.3g} > {THRESHOLDS[key]:g}")
        if stuck:
            reasons.append(f"progress={progress:.3g} < {THRESHOLDS['min_progress']:g} (stuck"
                           + _chance_note(per_seed) + ")")
        verdict = "stuck" if stuck else ("unstable" if reasons else "stable")
    return ScoreComponents(
        score=float(score), verdict=verdict, reasons=reasons, diverged=diverged,
        final_val_loss=final, reference_loss=ref, quality=quality, progress=progress,
        stuck=stuck, seed_spread=spread, seeds=len(per_seed), per_seed=per_seed, **parts)

"""The stability score: one formula, every component kept.

For each seed of a candidate the probe's trace gives:

- ``final_val_loss``: the validation loss at the end of the probe;
- ``progress``: ``1 - final_val_loss / start``, where ``start`` is the untrained
  model's validation loss, or the chance level (`stabilizer.chance`: the loss of the
  best constant prediction) when that is lower: a classifier initialized to be
  confidently wrong has not learned anything by falling to the class frequencies;
- ``oscillation``: in the later half of the probe, the standard deviation (in nats)
  of ``log(loss + floor)`` around its moving average (window ``max(3, n/10)``, `window`):
  loss variance and oscillation, scale-free. ``floor`` is 5% of the initial
  validation loss, so near-zero losses are judged on the problem's loss scale;
- ``spike_rate``: share of later-half steps whose ``loss + floor`` is more than
  twice the median of the preceding window;
- ``explode_rate``: share of steps whose global gradient norm exceeds 10x the
  running median of the preceding window, non-finite norms included;
- ``vanishing_share``: share of layers whose median gradient norm is below
  1e-4 of the largest layer's median, or below 1e-8;
- ``generalization_gap``: ``log(final_val_loss / train_tail)``, ``train_tail`` the
  mean training loss over the last tenth of the probe's steps. A configuration
  whose validation loss already sits well above its training loss when the probe
  ends is fitting the training data and not the problem: trained for longer (the
  run the probe stands for) its validation loss climbs back and parts between seeds.

Seeds are combined by median (the gap's median floored at 0: a validation loss
below the training loss is no merit); ``seed_spread`` is the standard deviation of
``log(final_val_loss + floor)`` across seeds (``floor`` = 5% of ``L_ref``). With
``L_ref`` the reference loss (the baseline's median initial validation loss, shared
by every candidate of a study)::

    quality = log((L_ref + floor) / (final_val_loss + floor))   (nats of loss reduction)
    score   = quality
              - 0.5 * oscillation - 2 * spike_rate - 2 * explode_rate
              - 0.5 * vanishing_share - 1 * seed_spread - 1 * stuck
              - 1 * generalization_gap

where ``stuck`` is 1 when the median progress is below 5%. A candidate with any
diverged seed (NaN/Inf, loss above ``divergence_factor`` x its start, or a clipped
cross-entropy halfway to its maximum: `stabilizer.telemetry.LossRecorder`) gets
``DIVERGED_SCORE`` instead. Higher is better. The verdict is "stable" only when
none of the thresholds in `THRESHOLDS` is crossed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stabilizer.telemetry import ProbeTrace

__all__ = ["DIVERGED_SCORE", "MIN_WINDOW", "WEIGHTS", "THRESHOLDS", "ScoreComponents",
           "generalization_gap", "jsonable", "preceding_median", "score_traces", "seed_metrics",
           "window"]

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
_SPIKE_FACTOR = 2.0
_EXPLODE_FACTOR = 10.0
_VANISH_RELATIVE = 1e-4
_VANISH_ABSOLUTE = 1e-8


#: The shortest window the score's statistics look back over (`window`).
MIN_WINDOW = 3


def window(n: int, minimum: int = MIN_WINDOW) -> int:
    """The look-back window for a series of `n` steps: a tenth of it, at least `minimum`.

    The score uses `MIN_WINDOW`; the diagnosis's per-seed statistics pass their own,
    longer minimum (`stabilizer.diagnosis`).
    """
    return max(minimum, n // 10)


def _log(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.abs(values), 1e-12))


def preceding_median(values: np.ndarray, size: int, *, finite_only: bool = False) -> np.ndarray:
    """Median of the `size` values before each position (NaN where there are none).

    With `finite_only`, non-finite values are left out of each median, and a position
    with fewer than ``max(2, size // 2)`` finite values before it gets NaN.
    """
    out = np.full(values.shape, np.nan)
    if len(values) <= size:
        return out
    if finite_only:
        for i in range(size, len(values)):
            prev = values[i - size:i]
            prev = prev[np.isfinite(prev)]
            if len(prev) >= max(2, size // 2):
                out[i] = np.median(prev)
        return out
    views = np.lib.stride_tricks.sliding_window_view(values, size)[:-1]
    out[size:] = np.median(views, axis=1)
    return out


def oscillation(loss: np.ndarray, floor: float = 0.0) -> float:
    """Std of log(loss + floor) around its moving average, later half of the probe."""
    late = _log(loss[len(loss) // 2:] + floor)
    if len(late) < 4:
        return 0.0
    w = min(window(len(late)), len(late))
    smooth = np.convolve(late, np.ones(w) / w, mode="valid")
    offset = (w - 1) // 2
    residual = late[offset:offset + len(smooth)] - smooth
    return float(np.std(residual))


def spike_rate(loss: np.ndarray, floor: float = 0.0) -> float:
    loss = loss + floor
    late = loss[len(loss) // 2:]
    w = window(len(loss))
    ref = preceding_median(loss, w)[len(loss) // 2:]
    valid = ~np.isnan(ref)
    if not valid.any():
        return 0.0
    return float(np.mean(late[valid] > _SPIKE_FACTOR * np.abs(ref[valid])))


def explode_rate(grad_norm: np.ndarray) -> float:
    if len(grad_norm) == 0:
        return 0.0
    nonfinite = ~np.isfinite(grad_norm)
    ref = preceding_median(np.where(nonfinite, np.inf, grad_norm), window(len(grad_norm)))
    spikes = np.zeros(len(grad_norm), bool)
    valid = ~np.isnan(ref)
    spikes[valid] = grad_norm[valid] > _EXPLODE_FACTOR * ref[valid]
    return float(np.mean(spikes | nonfinite))


def vanishing_share(layer_grad_norm: np.ndarray) -> float:
    if layer_grad_norm.size == 0:
        return 0.0
    medians = np.median(layer_grad_norm, axis=0)
    top = np.max(medians)
    vanished = (medians < _VANISH_RELATIVE * top) | (medians < _VANISH_ABSOLUTE)
    return float(np.mean(vanished))


def generalization_gap(loss: np.ndarray, final_val_loss: float) -> float:
    """log(final validation loss / mean training loss of the last tenth of the steps);
    NaN when either is not a finite positive number."""
    finite = loss[np.isfinite(loss)]
    tail = finite[-max(1, len(finite) // 10):]
    if not len(tail) or not math.isfinite(final_val_loss):
        return float("nan")
    train = float(np.mean(tail))
    if train <= 0 or final_val_loss <= 0:
        return float("nan")
    return math.log(final_val_loss / train)


def seed_metrics(trace: ProbeTrace) -> dict[str, float]:
    """The per-seed components of one trace (see the module docstring)."""
    final = trace.val_loss[-1] if trace.val_loss else float("nan")
    initial = trace.initial_val_loss
    finite = math.isfinite(final) and math.isfinite(initial) and initial > 0
    floor = LOSS_FLOOR * initial if finite else 0.0
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

    def penalties(self) -> dict[str, float]:
        values = {k: getattr(self, k) for k in WEIGHTS if k != "stuck"}
        values["stuck"] = float(self.stuck)
        return {k: WEIGHTS[k] * values[k] for k in WEIGHTS}


def jsonable(value: Any) -> Any:
    """JSON-ready (Optuna user attrs, reports): numpy scalars and arrays become Python
    numbers and lists, tuples lists, keys strings, and NaN/Inf None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    return value


def score_traces(traces: Sequence[ProbeTrace],
                 reference_loss: float | None = None) -> ScoreComponents:
    """Score one candidate from its per-seed traces (see the module docstring)."""
    per_seed = [seed_metrics(t) for t in traces]
    diverged = any(s["diverged"] for s in per_seed)
    finals = np.array([s["final_val_loss"] for s in per_seed])
    ref = reference_loss if reference_loss is not None and math.isfinite(reference_loss) \
        and reference_loss > 0 else float(np.nanmedian([s["initial_val_loss"] for s in per_seed]))

    def med(key: str) -> float:
        values = [s[key] for s in per_seed if math.isfinite(s[key])]
        return float(np.median(values)) if values else float("nan")

    final = float(np.median(finals)) if np.isfinite(finals).all() else float("nan")
    floor = LOSS_FLOOR * ref if math.isfinite(ref) and ref > 0 else 0.0
    spread = float(np.std(_log(finals + floor))) \
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

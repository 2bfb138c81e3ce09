"""Per-seed statistics of one probe's trace: pure functions of the numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from stabilizer.diagnosis._thresholds import THRESHOLDS
from stabilizer.scoring import LOSS_FLOOR, preceding_median, window
from stabilizer.telemetry import ProbeTrace

__all__ = ["gradient_stats", "loss_stats"]


#: The diagnosis's per-seed statistics look back at least this many steps (the score's
#: `stabilizer.scoring.MIN_WINDOW` is 3): a spike is judged against a steadier median.
_MIN_WINDOW = 5


def _window(n: int) -> int:
    return window(n, _MIN_WINDOW)


def _preceding_median(values: np.ndarray, size: int) -> np.ndarray:
    """Median of the `size` finite values before each position (NaN where too few)."""
    return preceding_median(np.asarray(values, dtype=np.float64), size, finite_only=True)


def gradient_stats(trace: ProbeTrace, matrix_layers: Iterable[str] | None = None,
                   thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Per-seed gradient numbers: spikes, non-finite steps, layer medians and ratios.

    `matrix_layers` are the layers (telemetry names) that have a weight matrix;
    the vanishing and layer-ratio checks look at those only (a BatchNormalization
    layer's gamma/beta gradients are on another scale). Default: every layer.
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    grad = np.asarray(trace.grad_norm, dtype=np.float64)
    layers = np.asarray(trace.layer_grad_norm, dtype=np.float64).reshape(len(grad), -1)
    names = list(trace.layer_names)
    n = len(grad)
    w = _window(n)
    nonfinite = ~np.isfinite(grad)
    ref = _preceding_median(grad, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = grad / ref
    spikes = np.isfinite(ratio) & (ratio > th["explode_factor"])
    global_median = float(np.median(grad[~nonfinite])) if (~nonfinite).any() else float("nan")
    layer_spikes = np.zeros(n, bool)
    spiking_layers: list[str] = []
    for j, name in enumerate(names):
        col = layers[:, j]
        lref = _preceding_median(col, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            hit = np.isfinite(lref) & np.isfinite(col) & (col > th["explode_factor"] * lref) \
                & (col > 0.1 * global_median)
        if hit.any():
            spiking_layers.append(name)
        layer_spikes |= hit
    all_spikes = spikes | layer_spikes
    chosen = set(matrix_layers) if matrix_layers is not None else set(names)
    cols = [j for j, name in enumerate(names) if name in chosen] or list(range(len(names)))
    medians = {}
    for j in cols:
        col = layers[:, j]
        col = col[np.isfinite(col)]
        medians[names[j]] = float(np.median(col)) if len(col) else float("nan")
    output = names[cols[-1]] if cols else None
    out_median = medians.get(output, float("nan")) if output else float("nan")
    ratios = {k: (v / out_median if out_median > 0 else float("nan"))
              for k, v in medians.items() if k != output}
    finite_ratios = [r for r in ratios.values() if math.isfinite(r)]
    finite_medians = [m for m in medians.values() if math.isfinite(m)]
    growth = float("nan")
    k = max(1, min(w, n // 4))
    if (~nonfinite[:k]).any() and (~nonfinite).any():
        head = float(np.median(grad[:k][~nonfinite[:k]]))
        growth = float(np.max(grad[~nonfinite]) / head) if head > 0 else float("nan")
    return {
        "steps": n,
        "nonfinite_steps": int(nonfinite.sum()),
        "first_nonfinite_step": int(np.argmax(nonfinite)) if nonfinite.any() else -1,
        "spikes": int(all_spikes.sum()),
        "global_spikes": int(spikes.sum()),
        "first_spike_step": int(np.argmax(all_spikes)) if all_spikes.any() else -1,
        "max_spike_ratio": float(np.nanmax(ratio)) if np.isfinite(ratio).any() else float("nan"),
        "spiking_layers": spiking_layers,
        "median_norm": global_median,
        "growth": growth,
        "layer_medians": medians,
        "output_layer": output,
        "layer_ratios": ratios,
        "min_layer_ratio": min(finite_ratios) if finite_ratios else float("nan"),
        "max_layer_ratio": max(finite_ratios) if finite_ratios else float("nan"),
        "min_layer_median": min(finite_medians) if finite_medians else float("nan"),
    }


def loss_stats(trace: ProbeTrace, thresholds: dict[str, float] | None = None,
               sampling_noise: float = float("nan")) -> dict[str, Any]:
    """Per-seed loss numbers: oscillation, trend, turns, spikes, progress.

    `sampling_noise` is the standard deviation of log(batch loss) that the choice
    of samples in a batch explains (see `_loss_dispersion`); NaN when unknown.
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    loss = np.asarray(trace.loss, dtype=np.float64)
    n = len(loss)
    finite = np.isfinite(loss) & (loss > 0)
    out: dict[str, Any] = {"steps": n, "nonfinite_steps": int((~np.isfinite(loss)).sum())}
    w = _window(n)
    ref = _preceding_median(np.where(finite, loss, np.nan), w)
    jump = math.log(th["spike_factor"])
    if math.isfinite(sampling_noise):
        jump = max(jump, th["spike_sigmas"] * sampling_noise)
    logs = np.log(np.where(finite, loss, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        spikes = np.isfinite(ref) & finite & (logs - np.log(ref) > jump)
    # Oscillation is judged without the spikes (those are their own finding).
    calm = np.where(spikes, np.log(np.where(np.isfinite(ref), ref, 1.0)), logs)
    head = calm[:int(np.argmin(finite))] if not finite.all() else calm
    late = head[len(head) // 2:]
    osc = trend = turns = float("nan")
    if len(late) >= 2 * 3:
        k = min(w, max(3, len(late) // 3))
        smooth = np.convolve(late, np.ones(k) / k, mode="valid")
        offset = (k - 1) // 2
        osc = float(np.std(late[offset:offset + len(smooth)] - smooth))
        diff = np.diff(smooth)
        movement = float(np.abs(diff).sum())
        trend = float((smooth[-1] - smooth[0]) / movement) if movement > 0 else 0.0
        signs = np.sign(diff[diff != 0])
        turns = float(np.mean(signs[1:] != signs[:-1])) if len(signs) > 1 else 0.0
    initial = trace.initial_val_loss
    vals = [v for v in trace.val_loss if math.isfinite(v)]
    progress = float("nan")
    if math.isfinite(initial) and initial > 0 and vals:
        progress = 1.0 - min(vals) / trace.progress_start
    elif math.isfinite(initial) and initial > 0:
        progress = 0.0
    train_progress = float("nan")
    if finite.sum() >= 2 * w:
        good = loss[finite]
        train_progress = float(1.0 - np.median(good[-w:]) / np.median(good[:w]))
    final = trace.val_loss[-1] if trace.val_loss else float("nan")
    ratio = osc / sampling_noise if sampling_noise > 0 else float("nan")
    train_rise = val_rise = float("nan")
    if math.isfinite(initial) and initial > 0 and finite.all() and n >= 2 * w:
        floor = LOSS_FLOOR * initial
        # Trailing running median: one value per full window of w steps.
        smooth_train = np.median(np.lib.stride_tricks.sliding_window_view(loss, w), axis=1)
        smooth_train = smooth_train + floor
        train_rise = float(smooth_train[-1] / smooth_train.min())
        if vals and math.isfinite(final):
            val_rise = float((final + floor) / (min(vals) + floor))
    out.update(oscillation=osc, sampling_noise=sampling_noise, noise_ratio=ratio,
               trend=trend, turns=turns, loss_spikes=int(spikes.sum()), spike_jump=jump,
               first_loss_spike_step=int(np.argmax(spikes)) if spikes.any() else -1,
               progress=progress, train_progress=train_progress,
               train_rise=train_rise, val_rise=val_rise,
               initial_val_loss=float(initial), chance_loss=float(trace.chance_loss),
               final_val_loss=float(final),
               best_val_loss=min(vals) if vals else float("nan"),
               diverged=bool(trace.diverged or not math.isfinite(final)))
    return out


def _median(values: Iterable[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.median(finite)) if finite else float("nan")


def _finite_max(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if len(finite) else math.nan

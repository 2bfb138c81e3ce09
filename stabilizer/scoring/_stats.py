"""The statistics of one series that the score and the diagnosis share: one window, one
preceding median, and the per-seed measures of the score (see `stabilizer.scoring`)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_WINDOW", "explode_rate", "generalization_gap", "oscillation", "preceding_median",
           "safe_log", "spike_rate", "vanishing_share", "window"]

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


def safe_log(values: np.ndarray) -> np.ndarray:
    """log(|values|), floored at log(1e-12)."""
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
    late = safe_log(loss[len(loss) // 2:] + floor)
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

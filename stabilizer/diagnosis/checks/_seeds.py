"""The seed family: `seed_variance`, the spread of outcomes over seeds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stabilizer.diagnosis.checks._evidence import Evidence

__all__ = ["seeds"]


def seeds(ev: Evidence) -> None:
    th = ev.th
    kept = [t for t, lo in zip(ev.traces, ev.losses) if not lo["diverged"]]
    if len(kept) < 2:
        return
    n = min(len(t.val_loss) for t in kept)
    curves = np.array([t.val_loss[:n] for t in kept], dtype=np.float64)
    if n == 0 or not (np.isfinite(curves).all() and (curves > 0).all()):
        return
    logs = np.log(curves)
    per_eval = logs.std(axis=0)
    spread = float(np.median(per_eval[n // 2:]))
    lag = _lag_share(logs.mean(axis=0), [t.initial_val_loss for t in kept], spread,
                     ev.plan.steps_per_epoch, ev.steps)
    finals = curves[:, -1]
    agreement = _disagreement([m.predictions for m in ev.monitors
                               if m.predictions is not None],
                              ev.monitors[0].sample)
    if spread > th["seed_spread"] and lag > th["seed_lag"]:
        severity = "error" if spread > th["seed_spread_error"] else "warning"
        ev.add("seed_variance", "run-to-run variance", severity,
               {"loss_spread": spread, "lag_share": lag,
                "final_loss_spread": float(per_eval[-1]),
                "min_final_val_loss": float(finals.min()),
                "max_final_val_loss": float(finals.max()), "evaluations": n, **agreement},
               ["seed_spread", "seed_spread_error", "seed_lag"],
               f"the validation loss differs across {len(kept)} seeds by {spread:.3g} nats "
               "(std of its log, median over the later half of the evaluations), more "
               "than seeds that are merely ahead or behind on the same descent would")


def _lag_share(mean_log: np.ndarray, initial: list[float], spread: float, per_epoch: int,
               steps: int) -> float:
    """How many steps apart the seeds would be on the mean descent, as a share of the probe.

    The spread divided by the slope of the mean log validation loss (per step) over
    the later half of the evaluations (the untrained model's loss counts as step 0).
    Seeds on the same descent, a little ahead or behind, give a small share; a
    flat or erratic curve with the seeds apart gives a large one (inf when flat).
    """
    n = len(mean_log)
    first = [math.log(v) for v in initial if math.isfinite(v) and v > 0]
    points = [(0.0, float(np.mean(first)))] if first else []
    points += [(float((i + 1) * per_epoch), float(v)) for i, v in enumerate(mean_log)]
    late = points[max(0, len(points) - 1 - max(1, n // 2)):]
    if len(late) < 2:
        return math.inf
    x, y = np.array(late).T
    slope = abs(float(np.polyfit(x, y, 1)[0]))
    return spread / (slope * steps) if slope > 0 else math.inf


def _disagreement(predictions: list[np.ndarray],
                  sample: tuple[Any, Any] | None) -> dict[str, float]:
    """How much the seeds' predictions disagree on the validation sample."""
    if len(predictions) < 2 or sample is None:
        return {}
    y = sample[1]
    preds = [p.reshape(len(p), -1) for p in predictions]
    if preds[0].shape[1] > 1:
        labels = [p.argmax(axis=1) for p in preds]
    elif y is not None and np.isin(np.asarray(y), (0, 1)).all():
        labels = [(p[:, 0] > 0.5).astype(int) for p in preds]
    else:
        spread = np.std(np.stack(preds), axis=0).mean()
        scale = float(np.std(np.asarray(y, dtype=np.float64))) if y is not None else 1.0
        return {"prediction_spread": float(spread / (scale or 1.0))}
    pairs = [(a != b).mean() for i, a in enumerate(labels) for b in labels[i + 1:]]
    out = {"disagreement": float(np.mean(pairs))}
    if y is not None:
        truth = np.asarray(y).reshape(-1)
        if truth.shape[0] == labels[0].shape[0] and truth.dtype.kind in "iub":
            error = float(np.mean([(lab != truth).mean() for lab in labels]))
            out["mean_error_rate"] = error
            out["excess_disagreement"] = out["disagreement"] - error
    return out

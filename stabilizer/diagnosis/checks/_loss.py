"""The loss family: `oscillating_loss`, `loss_spikes`, `loss_rising`, `stalled`."""

from __future__ import annotations

import math
from typing import Any

from stabilizer.diagnosis._stats import _median
from stabilizer.diagnosis.checks._evidence import Evidence

__all__ = ["loss", "rising", "metric_change"]


def loss(ev: Evidence) -> None:
    th, losses = ev.th, [lo for lo in ev.losses if not lo["diverged"]]
    if not losses:
        return
    osc = _median(lo["oscillation"] for lo in losses)
    trend = _median(lo["trend"] for lo in losses)
    noise = _median(lo["sampling_noise"] for lo in losses)
    ratio = _median(lo["noise_ratio"] for lo in losses)
    if math.isfinite(ratio):
        swinging = osc > th["oscillation"] and ratio > th["oscillation_noise"]
        keys = ["oscillation", "oscillation_noise", "oscillation_trend"]
        why = f"{ratio:.3g}x what batch sampling explains ({noise:.3g} nats)"
    else:
        swinging = osc > th["oscillation_fallback"]
        keys = ["oscillation_fallback", "oscillation_trend"]
        why = "the per-sample losses could not be measured, so the absolute threshold applies"
    if swinging and trend > -th["oscillation_trend"]:
        ev.add("oscillating_loss", "oscillating loss", "warning",
               {"oscillation": osc, "sampling_noise": noise, "noise_ratio": ratio,
                "trend": trend, "turns": _median(lo["turns"] for lo in losses)}, keys,
               f"in the later half the loss swings around its moving average by {osc:.3g} "
               f"nats, {why}, without a downward trend")
    spikes = _median(lo["loss_spikes"] for lo in losses)
    if spikes >= th["loss_spikes"]:
        firsts = [lo["first_loss_spike_step"] for lo in losses
                  if lo["first_loss_spike_step"] >= 0]
        ev.add("loss_spikes", "loss spikes", "warning",
               {"spikes_per_seed": spikes, "first_step": min(firsts) if firsts else -1,
                "seeds_with_spikes": sum(lo["loss_spikes"] > 0 for lo in losses)},
               ["spike_factor", "spike_sigmas", "loss_spikes"],
               "steps whose loss jumped above the running median by more than "
               f"{th['spike_factor']:g}x and {th['spike_sigmas']:g} times the batch "
               "sampling noise")
    rising(ev, losses)
    progress = _median(lo["progress"] for lo in losses)
    if not progress >= th["min_progress"]:
        metrics = metric_change(ev)
        initial = _median(lo["initial_val_loss"] for lo in losses)
        chance = _median(lo["chance_loss"] for lo in losses)
        side = (f"only {progress:.1%} below" if progress >= 0 else
                f"{-progress:.1%} above" if progress > -1 else f"{1 - progress:.3g}x")
        start = (f"the chance level {chance:.3g} (the best constant prediction's; the "
                 f"untrained model starts at {initial:.3g})" if chance < initial
                 else "the untrained model's")
        ev.add("stalled", "training stalled",
               "error" if not progress > 0 else "warning",
               {"progress": progress,
                "train_progress": _median(lo["train_progress"] for lo in losses),
                "initial_val_loss": initial, "chance_loss": chance,
                "best_val_loss": _median(lo["best_val_loss"] for lo in losses), **metrics},
               ["min_progress"],
               f"the best validation loss is {side} {start}")


def rising(ev: Evidence, losses: list[dict[str, Any]]) -> None:
    """`loss_rising`: the validation and the smoothed training loss end far above
    their best (see the module docstring)."""
    limit = ev.th["loss_rise"]
    train_rise = _median(lo["train_rise"] for lo in losses)
    val_rise = _median(lo["val_rise"] for lo in losses)
    if not (train_rise >= limit and val_rise >= limit):
        return
    final = _median(lo["final_val_loss"] for lo in losses)
    initial = _median(lo["initial_val_loss"] for lo in losses)
    best = _median(lo["best_val_loss"] for lo in losses)
    ev.add("loss_rising", "loss rising after it fell",
           "error" if final > initial else "warning",
           {"val_rise": val_rise, "train_rise": train_rise, "best_val_loss": best,
            "final_val_loss": final, "initial_val_loss": initial,
            "seeds_rising": sum(lo["val_rise"] >= limit for lo in losses)},
           ["loss_rise"],
           f"the validation loss fell to {best:.4g} and ended at {final:.4g} "
           f"({val_rise:.3g}x its best, the untrained model's is {initial:.4g}); the "
           f"smoothed training loss ended {train_rise:.3g}x its best")


def metric_change(ev: Evidence) -> dict[str, float]:
    """Change of each validation metric from the first to the last evaluation."""
    out: dict[str, list[float]] = {}
    for t in ev.traces:
        if len(t.val_metrics) < 2:
            continue
        for key in t.val_metrics[-1]:
            if key.startswith("val_") and key != "val_loss" and "stab_" not in key \
                    and key in t.val_metrics[0]:
                out.setdefault(f"{key}_change", []).append(
                    t.val_metrics[-1][key] - t.val_metrics[0][key])
    return {k: _median(v) for k, v in out.items()}

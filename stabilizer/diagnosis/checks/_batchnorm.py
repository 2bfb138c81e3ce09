"""The BatchNormalization family: `bn_small_batch`, `bn_mode_gap`, `bn_unsettled`."""

from __future__ import annotations

import math

from stabilizer.diagnosis._stats import _median
from stabilizer.diagnosis.checks._evidence import Evidence, last_forward

__all__ = ["batchnorm"]


def batchnorm(ev: Evidence) -> None:
    th, monitors = ev.th, ev.monitors
    if not monitors[0].has_bn:
        return
    momentum = monitors[0].bn_momentum or 0.99
    init_weight = momentum ** ev.steps
    short = init_weight > th["bn_init_weight"]
    lasts = [last_forward(m) for m in monitors]
    gaps = [r["bn_gap"] for r in lasts if r.get("bn_gap")]
    gap = _median(g["gap"] for g in gaps)
    gap_evidence = {"gap": gap,
                    "train_mode_loss": _median(g["train_mode_loss"] for g in gaps),
                    "inference_mode_loss": _median(g["inference_mode_loss"] for g in gaps)} \
        if gaps else {}
    settle = {"momentum": momentum, "initial_weight_left": init_weight}
    if ev.batch < th["bn_min_batch"]:
        confirmed = abs(gap) > th["bn_gap"]
        ev.add("bn_small_batch", "batch too small for BatchNormalization",
               "error" if confirmed else "warning",
               {"batch_size": ev.batch, **gap_evidence}, ["bn_min_batch", "bn_gap"],
               f"batch statistics from {ev.batch} samples are noisy and biased "
               f"(expected variance {(ev.batch - 1) / ev.batch:.2g} of the true one)"
               + ("; the train/inference gap confirms it" if confirmed else ""))
    if abs(gap) > th["bn_gap"]:
        cause = ("the moving statistics do not describe the data" if gap > 0 else
                 "batch statistics of this batch size are too noisy")
        ev.add("bn_mode_gap", "training-mode and inference-mode losses differ",
               "info" if short and ev.batch >= th["bn_min_batch"] else "warning",
               {**gap_evidence, "batch_size": ev.batch, **settle},
               ["bn_gap", "bn_init_weight"],
               f"the inference-mode loss is {math.exp(gap):.3g}x the training-mode loss "
               f"on the same samples: {cause}" + (
                   f"; the moving averages still carry {init_weight:.0%} of their initial "
                   "values after this short probe" if short else ""))
    stats = [r.get("bn") for r in lasts if r.get("bn")]
    if stats:
        shift = _median(max(v["shift"] for v in s.values()) for s in stats)
        ratio = _median(max(v["var_log_ratio"] for v in s.values()) for s in stats)
        if shift > th["bn_shift"] or ratio > th["bn_var_ratio"]:
            layers = [n for s in stats for n, v in s.items()
                      if v["shift"] > th["bn_shift"] or v["var_log_ratio"] > th["bn_var_ratio"]]
            drift = [abs(math.log(t.bn_stats[-1]["moving_var"] / t.bn_stats[-2]["moving_var"]))
                     for t in ev.traces if len(t.bn_stats) >= 2
                     and t.bn_stats[-1].get("moving_var", 0) > 0
                     and t.bn_stats[-2].get("moving_var", 0) > 0]
            ev.add("bn_unsettled", "BatchNormalization moving statistics have not settled",
                   "info" if short else "warning",
                   {"max_mean_shift": shift, "max_var_log_ratio": ratio,
                    "last_moving_var_change": _median(drift), **settle},
                   ["bn_shift", "bn_var_ratio", "bn_init_weight"],
                   "the moving mean/variance are far from the statistics of the layer "
                   "inputs on the validation sample" + (
                       f" (expected: after {ev.steps} steps at momentum {momentum:g} they "
                       f"still carry {init_weight:.0%} of their initial values)"
                       if short else ""), layers)

"""What every family of checks reads: the per-seed numbers, and `add`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from stabilizer.config import SearchConfig
from stabilizer.diagnosis._finding import Finding
from stabilizer.diagnosis._stats import gradient_stats, loss_stats
from stabilizer.diagnosis._thresholds import _dims
from stabilizer.lr_range import (
    LRRangeResult,
)
from stabilizer.probe import ProbePlan
from stabilizer.telemetry import ProbeTrace

if TYPE_CHECKING:
    from stabilizer.diagnosis._monitor import _SeedMonitor

__all__ = ["Evidence", "last_forward", "sampling_noise"]


class Evidence:
    """The per-seed numbers of a diagnosis, and the findings raised on them so far.

    Each family of checks (`stabilizer.diagnosis.checks`) reads it and `add`s findings.
    """

    def __init__(self, th: dict[str, float], traces: list[ProbeTrace],
                 monitors: list[_SeedMonitor], plan: ProbePlan, batch: int, steps: int,
                 user_lr: float | None, lr_result: LRRangeResult | None,
                 settings: SearchConfig) -> None:
        self.th = th
        self.traces = traces
        self.monitors = monitors
        self.plan = plan
        self.batch = batch
        self.steps = steps
        self.user_lr = user_lr
        self.lr = lr_result
        self.settings = settings
        self.grads = [gradient_stats(t, m.matrix_layers or None, th)
                      for t, m in zip(traces, monitors)]
        self.losses = [loss_stats(t, th, sampling_noise(m, batch))
                       for t, m in zip(traces, monitors)]
        self.findings: list[Finding] = []
        self.per_seed = []
        for seed_index, (g, lo, m) in enumerate(zip(self.grads, self.losses, monitors)):
            last = last_forward(m)
            self.per_seed.append({
                "sampling_noise": lo["sampling_noise"], "noise_ratio": lo["noise_ratio"],
                "seed": seed_index, "steps_done": lo["steps"], "diverged": lo["diverged"],
                "progress": lo["progress"], "final_val_loss": lo["final_val_loss"],
                "oscillation": lo["oscillation"], "trend": lo["trend"], "turns": lo["turns"],
                "loss_spikes": lo["loss_spikes"], "gradient_spikes": g["spikes"],
                "nonfinite_gradient_steps": g["nonfinite_steps"],
                "median_grad_norm": g["median_norm"], "min_layer_ratio": g["min_layer_ratio"],
                "max_layer_ratio": g["max_layer_ratio"],
                "max_dead_share": max((last.get("dead_share") or {}).values(),
                                      default=float("nan")),
                "max_saturated_share": max((last.get("saturated_share") or {}).values(),
                                           default=float("nan")),
                "bn_gap": (last.get("bn_gap") or {}).get("gap", float("nan")),
            })

    def add(self, code: str, title: str, severity: str, evidence: dict[str, Any],
            keys: Iterable[str], message: str = "", layers: Iterable[str] = ()) -> None:
        self.findings.append(Finding(code, title, severity, evidence,
                                     {k: self.th[k] for k in keys}, _dims(code), message,
                                     sorted(set(layers))))


def last_forward(monitor: _SeedMonitor) -> dict[str, Any]:
    """The last evaluation record with forward statistics (empty when none has them)."""
    for record in reversed(monitor.records):
        if "dead_share" in record or "bn_gap" in record:
            return record
    return {}


def sampling_noise(monitor: _SeedMonitor, batch: int) -> float:
    """The std of log(batch loss) that the choice of samples explains.

    The per-sample loss dispersion over sqrt(batch) at the last evaluation; for
    models with BatchNormalization, at least the measured spread of training-mode
    losses over batches of that size (batch statistics add their own noise).
    """
    for record in reversed(monitor.records):
        value = record.get("loss_dispersion", math.nan)
        if math.isfinite(value):
            noise = value / math.sqrt(batch)
            measured = (record.get("bn_gap") or {}).get("train_batch_noise", math.nan)
            return max(noise, measured) if math.isfinite(measured) else noise
    return math.nan

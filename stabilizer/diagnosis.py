"""Diagnosis: what is wrong with this training, with the evidence.

`diagnose(build_fn, data)` trains the user's own configuration (or any
`StabilityConfig`) briefly on a few seeds with the probes' full per-step
telemetry (`run_probe`: global and per-layer gradient norms, per-layer
update/weight ratios, per-step training loss), reads the model's weights and runs
one extra forward pass on a validation sample at every evaluation (through
`run_probe`'s `on_evaluation` hook), checks the initializers statically, and runs
an LR range test (`stabilizer.lr_range`). Every finding carries a severity, the
numbers that triggered it, the thresholds it was held to and the search dimensions
that address it; `Diagnosis.focus(space)` narrows a search space accordingly.

Checks and their thresholds (`THRESHOLDS`; every key can be overridden through
`diagnose(..., thresholds={...})`). Per-seed numbers are combined by the median
over seeds unless said otherwise, so one odd seed does not raise a finding on its
own; the window ``w`` is ``max(5, steps // 10)`` steps. Where a threshold can be
relative to the model's own statistics it is: gradient spikes against the
running median of the same run, loss swings against the noise that batch
sampling explains (measured on the model), layer gradients against the output
layer's.

Gradients (per step, from the instrumented optimizer):

- ``exploding_gradients``: a step whose global gradient norm, or a layer's norm,
  is more than ``explode_factor`` (10) times the median of the preceding ``w``
  steps is a spike (a layer spike must also be at least a tenth of the global
  median norm, so a near-zero layer waking up is not one). Warning at
  ``explode_spikes`` (2) spikes per seed, when the norm grows to more than
  ``explode_growth`` (100) times its starting value, or when a layer's median
  norm is more than ``explode_layer_ratio`` (1e3) times the output layer's.
  Error when a gradient was NaN/Inf on any seed, or the norm grew more than
  ``explode_growth_error`` (1e4) times. AutoTrainer checks a
  first/last-layer ratio > 70 every few epochs; here every step is checked
  against the run's own history.
- ``vanishing_gradients``: a layer with a weight matrix whose median gradient
  norm is below ``vanish_ratio`` (1e-3) times the output layer's (error below
  ``vanish_ratio_error``, 1e-5), or below the floor ``vanish_floor`` (1e-7).
  AutoTrainer's ratio, on medians over every step instead of one snapshot.

Activations (one forward pass on up to `sample_size` validation samples at each
evaluation, for Sequential and Functional models; a subclassed model gets an
"info" finding saying these were not checked, and why):

- ``dead_relu``: the share of a ReLU layer's units (channels, for convolutions)
  never active on any sample of the batch at the end of the probe. Warning at
  ``dead_share`` (0.5) in the worst layer, error at ``dead_share_error`` (0.9).
  DeepDiagnosis counts outputs <= 0, and 70% of those is normal for a sparse
  ReLU layer; a unit silent on all of 256 samples is dead, not sparse.
- ``saturated_activations``: the share of a hidden sigmoid/tanh layer's outputs
  whose pre-activation is beyond +-``saturation_z`` (5; read from the output,
  where the derivative is below its value at z = 5). Warning at
  ``saturated_share`` (0.5, as DeepDiagnosis), error at ``saturated_share_error``
  (0.9). The output layer is not checked (confident outputs are the goal).

Loss (per step, from the loss recorder). The batch sampling noise is the
standard deviation of log(batch loss) that the choice of samples explains: the
per-sample loss dispersion (std / mean) on the validation sample over
sqrt(batch size), and for BatchNormalization models at least the measured spread
of training-mode losses over batches of that size.

- ``diverged``: any seed diverged (NaN/Inf, or the loss above the settings'
  ``divergence_factor`` times its start). Error.
- ``oscillating_loss``: in the later half of the probe, the standard deviation
  of log(loss) around its moving average is above ``oscillation`` (0.05 nats)
  and above ``oscillation_noise`` (2) times the sampling noise, while the
  smoothed loss does not go down (its net change is less than
  ``oscillation_trend``, 0.5, of its total movement). When the per-sample
  losses cannot be measured, ``oscillation_fallback`` (0.35 nats) applies.
  Warning. On the healthy test models the swings are 0.6-1.4x the sampling
  noise; a fixed threshold on the raw loss would flag every well-trained model
  whose loss is small (its log is noisy) and miss a stalled one bouncing at 2.3.
- ``loss_spikes``: steps whose log loss exceeds the median of the preceding
  ``w`` steps by more than log(``spike_factor``) (1.5x) and by more than
  ``spike_sigmas`` (4) times the sampling noise; warning at ``loss_spikes`` (2)
  per seed. The oscillation above is measured with the spikes replaced by the
  running median, so a few spikes do not read as oscillation.
- ``loss_rising``: the training first learns, then comes apart: both the final
  validation loss and the final smoothed training loss (a running median over
  a tenth of the steps, at least 5; ``loss + floor`` with the floor 5% of the
  untrained validation loss so that small losses' noise does not count) are
  ``loss_rise`` (1.5) times their best so far or more. Warning; error when the
  final validation loss is above the untrained model's (all it learned is
  lost). Heavy momentum at a high learning rate does this: the swings grow
  slowly, so the oscillation and spike checks (measured around a moving
  average) and the divergence check (10x the start) do not see it, and an LR
  range test, whose ramp is shorter than the momentum's memory, can still call
  the rate stable. `focus` caps the learning rate at the user's (unless
  clipping is searched for exploding gradients, which changes what a rate does).
- ``stalled``: the best validation loss improved on the untrained model's, or on
  the chance level's when that is lower (`stabilizer.chance`: the loss of the best
  constant prediction, e.g. the class frequencies), by less than ``min_progress``
  (5%). Warning; error when it did not improve. A classifier initialized to be
  confidently wrong that falls to the uniform prediction has not learned.
- ``seed_variance``: the standard deviation across seeds of log(validation
  loss), at each evaluation of the later half of the probe, median over those
  evaluations, above ``seed_spread`` (0.15 nats; error above
  ``seed_spread_error``, 0.5). A median over several evaluations, not the final
  one alone, because with three seeds a single snapshot of a noisy run is
  itself noisy. Seeds that are merely a little ahead or behind each other on
  the same descent are not run-to-run variance: the spread must also exceed
  ``seed_lag`` (0.3) of the probe's length times the slope of the mean log
  validation loss per step (the later half), i.e. the seeds would have to be more
  than 30% of the probe apart on the common curve. The healthy small CNN of the
  tests, still descending fast, has its seeds 0.22 nats apart after 120 steps
  (lag 0.125) and 0.115 nats apart after 40 (lag 0.25).
  The disagreement of the seeds'
  predictions on the validation sample (and the share of it that their error
  rates explain) is evidence.

BatchNormalization (only when the model has BatchNormalization layers):

- ``bn_small_batch``: batch size below ``bn_min_batch`` (8): statistics of so
  few samples are noisy, and Keras' biased variance is (B-1)/B of the true one.
  Warning; error when the measured train/inference gap confirms it.
- ``bn_mode_gap``: |log(inference-mode loss / training-mode loss)| on the same
  validation samples, in batches of the training batch size (Dropout-like noise
  switched off in both), above ``bn_gap`` (0.3 nats). Positive: the moving
  statistics do not describe the data; negative: batch statistics of this size
  are too noisy. Warning.
- ``bn_unsettled``: for the worst BatchNormalization layer, the moving mean is
  more than ``bn_shift`` (0.5) standard deviations from the mean of the layer's
  input on the validation sample, or |log(moving variance / input variance)| is
  above ``bn_var_ratio`` (1.0). Warning.
  These two are "info" (with the batch at least ``bn_min_batch``) when
  ``momentum ** steps`` is above ``bn_init_weight`` (0.1): the moving averages
  still carry that much of their initial values, so the probe was too short for
  them to settle and says nothing about a full training.

Static checks (each layer's `kernel_initializer` object and kernel shape, and
the activation that follows it). The forward variance gain of a layer at
initialisation is ``fan_in * Var(W) * c`` (c = 1/2 for the ReLU family, 1
otherwise); its running product over the layers is the signal's variance drift.

- ``init_mismatch``: ReLU-family activations with a scale-1 variance-scaling
  initializer (Glorot/LeCun; Keras' default is Glorot uniform) outside recurrent
  layers (whose input kernels take Glorot for any activation), SELU without
  LeCun normal, sigmoid/tanh with a scale-2 (He) initializer. "info" unless
  the drift leaves [1/``init_drift``, ``init_drift``] (100), then a warning: a
  mismatch in a shallow net is harmless, one compounded over depth is not.
- ``large_init`` / ``small_init``: RandomNormal, TruncatedNormal, RandomUniform
  or Constant kernels whose gain is above ``large_init_gain`` (10; the
  pre-activation scale grows more than 3x per layer), or whose drift leaves
  [1/``init_drift``, ``init_drift``]. Warning.
- ``output_offset``: the untrained model's loss on the validation sample is at
  least ``output_offset`` (2) times what it is with the output layer's bias at the
  best constant prediction of the training targets (`stabilizer.apply.output_bias`:
  their mean for a regression, the class log-frequencies for a softmax): most of the
  starting loss is the outputs' offset from the targets' scale (unscaled regression
  targets), which the first large steps then spend on. Warning; `focus` sets
  ``output_bias: chance`` on every trial (first, where the space searches it).
  Checked on the first seed's untrained model, for
  in-memory data and a single Dense-like output layer with a linear, softmax or
  sigmoid output.

Learning rate (`lr_range_test`: the largest rate before the loss blows up):

- ``lr_too_high``: the configuration's learning rate is above ``lr_margin`` (1)
  times the range test's ``max_stable_lr``. Warning; error when it is at or
  above the rate at which the loss blew up.

The range test is repeated under the repairs the findings call for
(`Diagnosis.repaired_lr_range`, run under `Diagnosis.repair`), because the search
tries those repairs first and the plain test says little about the rates they
tolerate: global-norm clipping at 1.0 when gradients explode or the run diverges
(clipping bounds the steps the plain test blew up on), and the activation-matched
initializer ``auto`` when the initialization is implicated (vanishing gradients,
dead or saturated units, a mismatched, too large or too small initializer: under
the user's initializer the loss may not fall at any rate, and the plain test is
then unreliable). `focus` bounds the search by this test, and the first trial,
which applies the repairs, takes its suggested learning rate.

Per evaluation ("epoch" in the report) the diagnosis also records each layer's
weight mean and standard deviation, its mean update/weight ratio over the
epoch's steps, the dead and saturated shares, and the learning rate actually
used (`Diagnosis.epochs`).
"""

from __future__ import annotations

import dataclasses
import html
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.apply import (
    activation_family,
    activation_name,
    apply_config,
    call_build_fn,
    is_recurrent,
    layer_activations,
    output_bias,
    output_layer,
    replay_hyperparameters,
    resolve_build_fn,
)
from stabilizer.chance import fit_targets, resolve_loss
from stabilizer.compatibility import inspect_model
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData, prepare_data
from stabilizer.errors import ConfigError
from stabilizer.keras_internals import flat_layers, is_graph_model
from stabilizer.lr_range import (
    LRRangeResult,
    configured_learning_rate,
    lr_range_test,
    settings_with,
)
from stabilizer.probe import ProbePlan, batch_size_of, probe_seeds, run_probe
from stabilizer.scoring import LOSS_FLOOR, jsonable, preceding_median, window
from stabilizer.space import Choice, Fixed, FloatRange, SearchSpace, load_space
from stabilizer.telemetry import ProbeTrace, TelemetryCallback, layer_groups

__all__ = [
    "SEVERITIES",
    "THRESHOLDS",
    "Diagnosis",
    "Finding",
    "check_initializers",
    "diagnose",
    "gradient_stats",
    "loss_stats",
]

SEVERITIES = ("info", "warning", "error")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

#: Documented in the module docstring; override any key with `diagnose(thresholds=...)`.
THRESHOLDS: dict[str, float] = {
    "explode_factor": 10.0,
    "explode_spikes": 2,
    "explode_layer_ratio": 1e3,
    "explode_growth": 100.0,
    "explode_growth_error": 1e4,
    "vanish_ratio": 1e-3,
    "vanish_ratio_error": 1e-5,
    "vanish_floor": 1e-7,
    "dead_share": 0.5,
    "dead_share_error": 0.9,
    "saturation_z": 5.0,
    "saturated_share": 0.5,
    "saturated_share_error": 0.9,
    "oscillation": 0.05,
    "oscillation_noise": 2.0,
    "oscillation_fallback": 0.35,
    "oscillation_trend": 0.5,
    "spike_factor": 1.5,
    "spike_sigmas": 4.0,
    "loss_spikes": 2,
    "loss_rise": 1.5,
    "min_progress": 0.05,
    "seed_spread": 0.15,
    "seed_spread_error": 0.5,
    "seed_lag": 0.3,
    "bn_min_batch": 8,
    "bn_gap": 0.3,
    "bn_shift": 0.5,
    "bn_var_ratio": 1.0,
    "bn_init_weight": 0.1,
    "init_drift": 100.0,
    "large_init_gain": 10.0,
    "output_offset": 2.0,
    "lr_margin": 1.0,
}

_DIMENSION_NAMES = {f.name for f in dataclasses.fields(StabilityConfig)}
#: Findings that put clipping first in `Diagnosis.focus` and repeat the LR range
#: test under clipping.
CLIPPING_CODES = frozenset({"exploding_gradients", "diverged", "loss_spikes"})
#: Findings that put matched initializers first in `Diagnosis.focus`.
INIT_CODES = frozenset({"vanishing_gradients", "saturated_activations", "dead_relu",
                        "init_mismatch", "large_init", "small_init", "exploding_gradients"})
#: Findings that implicate the initialization itself: the LR range test is repeated
#: under the matched initializer "auto" (exploding gradients are clipping's).
INIT_REPAIR_CODES = INIT_CODES - {"exploding_gradients"}
#: The settings the repeated range test runs under, per group of findings.
CLIP_REPAIR: dict[str, Any] = {"clipping": "global_norm", "clip_value": 1.0}
INIT_REPAIR: dict[str, Any] = {"initializer": "auto"}
#: The dimensions that address each finding (only fields `StabilityConfig` has).
_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "diverged": ("learning_rate", "clipping", "clip_value", "lr_schedule", "initializer"),
    "exploding_gradients": ("clipping", "clip_value", "learning_rate", "initializer"),
    "vanishing_gradients": ("initializer", "learning_rate"),
    "dead_relu": ("initializer", "learning_rate"),
    "saturated_activations": ("initializer", "learning_rate"),
    "oscillating_loss": ("learning_rate", "lr_schedule", "batch_size"),
    "loss_spikes": ("clipping", "clip_value", "learning_rate", "lr_schedule"),
    "loss_rising": ("learning_rate", "lr_schedule", "clipping", "clip_value"),
    "stalled": ("learning_rate", "initializer", "lr_schedule"),
    "seed_variance": ("initializer", "learning_rate", "lr_schedule", "batch_size"),
    "bn_small_batch": ("batch_size", "normalization"),
    "bn_mode_gap": ("batch_size", "bn_momentum", "normalization"),
    "bn_unsettled": ("bn_momentum", "bn_epsilon", "batch_size"),
    "init_mismatch": ("initializer",),
    "large_init": ("initializer",),
    "small_init": ("initializer",),
    "output_offset": ("output_bias", "learning_rate"),
    "lr_too_high": ("learning_rate", "lr_schedule"),
    "not_checked": (),
}
_ORDER = list(_DIMENSIONS)


def _dims(code: str) -> tuple[str, ...]:
    return tuple(d for d in _DIMENSIONS[code] if d in _DIMENSION_NAMES)


@dataclasses.dataclass
class Finding:
    """One diagnosed problem, with the numbers that triggered it."""

    code: str
    title: str
    severity: str  # "info", "warning" or "error"
    evidence: dict[str, float]
    thresholds: dict[str, float]
    dimensions: tuple[str, ...]
    message: str = ""
    layers: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ConfigError(f"severity={self.severity!r}: expected one of "
                              f"{', '.join(SEVERITIES)}")

    def at_least(self, severity: str) -> bool:
        return _RANK[self.severity] >= _RANK[severity]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dimensions"] = list(self.dimensions)
        return jsonable(out)

    def to_text(self) -> str:
        lines = [f"{self.severity.upper():8} {self.code}: {self.title}"]
        if self.message:
            lines.append(f"         {self.message}")
        if self.layers:
            lines.append(f"         layers: {', '.join(self.layers)}")
        if self.evidence:
            lines.append(f"         evidence: {_pairs(self.evidence)}")
        if self.thresholds:
            lines.append(f"         thresholds: {_pairs(self.thresholds)}")
        if self.dimensions:
            lines.append(f"         addressed by: {', '.join(self.dimensions)}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


# -- per-seed statistics: pure functions of a trace -----------------------------------


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


# -- static checks: initializers against activations ----------------------------------


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        return int(shape[0]) if shape else 1, int(shape[0]) if shape else 1
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def _initializer_info(init: Any, fan_in: int, fan_out: int) -> tuple[str, float | None]:
    """(a short description, Var(W)) of an initializer; None when unknown."""
    inits = keras.initializers
    name = type(init).__name__
    if isinstance(init, inits.VarianceScaling):
        scale, mode = float(init.scale), init.mode
        n = {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2)
        return f"{name}(scale={scale:g}, mode={mode}, {init.distribution})", scale / max(n, 1)
    if isinstance(init, inits.TruncatedNormal):
        return f"{name}(stddev={init.stddev:g})", 0.7737 * float(init.stddev) ** 2
    if isinstance(init, inits.RandomNormal):
        return f"{name}(stddev={init.stddev:g})", float(init.stddev) ** 2
    if isinstance(init, inits.RandomUniform):
        return f"{name}({init.minval:g}, {init.maxval:g})", \
            (float(init.maxval) - float(init.minval)) ** 2 / 12
    if isinstance(init, inits.Orthogonal):
        return f"{name}(gain={init.gain:g})", \
            float(init.gain) ** 2 * min(1.0, fan_in / max(fan_out, 1)) / max(fan_in, 1)
    if isinstance(init, inits.Constant):
        return f"{name}({float(init.value):g})", float(init.value) ** 2
    if isinstance(init, inits.Zeros):
        return name, 0.0
    if isinstance(init, inits.Ones):
        return name, 1.0
    return name, None


def _activation_slope(activation: str) -> float:
    return 0.5 if activation_family(activation) == "relu" else 1.0


def check_initializers(model: keras.Model, thresholds: dict[str, float] | None = None
                       ) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Static initializer checks (no training); returns (findings, one record per layer).

    Reads each layer's `kernel_initializer` object and kernel shape and the
    activation that follows it (`layer_activations`); see the module docstring.
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    activations = layer_activations(model)
    records: list[dict[str, Any]] = []
    for layer in flat_layers(model):
        target = layer if hasattr(layer, "kernel_initializer") else getattr(layer, "cell", None)
        kernel = getattr(target, "kernel", None)
        if target is None or kernel is None or layer.name not in activations:
            continue
        fan_in, fan_out = _fans(tuple(int(d) for d in kernel.shape))
        description, variance = _initializer_info(target.kernel_initializer, fan_in, fan_out)
        act = activations[layer.name]
        gain = fan_in * variance * _activation_slope(act) if variance is not None else None
        recurrent = is_recurrent(layer)
        records.append({"layer": layer.name, "activation": act, "initializer": description,
                        "fan_in": fan_in, "fan_out": fan_out, "variance_gain": gain,
                        "recurrent": recurrent,
                        "mismatch": _mismatch(target.kernel_initializer, act, recurrent)})
    gains = [r["variance_gain"] for r in records if r["variance_gain"] is not None]
    cumulative = [float(np.prod(gains[:i + 1])) for i in range(len(gains))]
    drift = max((abs(math.log10(c)) for c in cumulative if c > 0), default=0.0)
    if any(c == 0 for c in cumulative):
        drift = math.inf
    findings: list[Finding] = []
    mismatched = [r for r in records if r["mismatch"]]
    if mismatched:
        drifted = drift > math.log10(th["init_drift"])
        kinds = sorted({r["mismatch"] for r in mismatched})
        evidence: dict[str, float] = {"layers_mismatched": len(mismatched),
                                      "kernel_layers": len(records),
                                      "total_variance_gain": cumulative[-1] if cumulative
                                      else float("nan")}
        for r in mismatched:
            if r["variance_gain"] is not None:
                evidence[f"{r['layer']}.variance_gain"] = r["variance_gain"]
        findings.append(Finding(
            "init_mismatch", "initializer does not match the activation",
            "warning" if drifted else "info", evidence,
            {"init_drift": th["init_drift"]}, _dims("init_mismatch"),
            "; ".join(kinds) + (
                f": the signal variance changes by a factor {cumulative[-1]:.3g} over the "
                "stack at initialisation" if drifted else
                "; the variance drift over this stack stays within bounds, so it is minor"),
            [r["layer"] for r in mismatched]))
    plain = [r for r in records if r["variance_gain"] is not None
             and _is_plain_random(r["initializer"])]
    peak = max(cumulative, default=1.0)
    trough = min(cumulative, default=1.0)
    large = [r for r in plain if r["variance_gain"] > th["large_init_gain"]]
    if large or (plain and peak > th["init_drift"]):
        large = large or [r for r in plain if r["variance_gain"] > 1]
        evidence = {f"{r['layer']}.variance_gain": r["variance_gain"] for r in large}
        evidence["max_cumulative_gain"] = peak
        findings.append(Finding(
            "large_init", "initializer scale too large for the layer's fan-in", "warning",
            evidence, {"large_init_gain": th["large_init_gain"], "init_drift": th["init_drift"]},
            _dims("large_init"),
            "fan_in * Var(W) is large: pre-activations grow layer by layer, to "
            f"{peak:.3g}x the input variance ({_initializer_names(large)})",
            [r["layer"] for r in large]))
    if plain and trough < 1 / th["init_drift"]:
        small = [r for r in plain if r["variance_gain"] < 1]
        evidence = {f"{r['layer']}.variance_gain": r["variance_gain"] for r in small}
        evidence["min_cumulative_gain"] = trough
        findings.append(Finding(
            "small_init", "initializer scale too small for the layer's fan-in", "warning",
            evidence, {"init_drift": th["init_drift"]}, _dims("small_init"),
            "fan_in * Var(W) is small: the signal shrinks layer by layer, to "
            f"{trough:.3g}x the input variance ({_initializer_names(small)})",
            [r["layer"] for r in small]))
    return findings, records


def _initializer_names(records: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({r["initializer"] for r in records}))


def _is_plain_random(description: str) -> bool:
    return description.startswith(("RandomNormal", "TruncatedNormal", "RandomUniform",
                                   "Constant", "Ones"))


def _mismatch(init: Any, activation: str, recurrent: bool = False) -> str:
    """Why `init` does not suit `activation` ("" when it does); see the module docstring.

    A recurrent layer's Glorot input kernel is the match for every activation
    (`stabilizer.apply.matched_initializer`), so it is never a mismatch there.
    """
    family = activation_family(activation)
    scaling = isinstance(init, keras.initializers.VarianceScaling)
    if family == "selu":
        lecun = scaling and float(init.scale) == 1.0 and init.mode == "fan_in" \
            and init.distribution in ("truncated_normal", "normal", "untruncated_normal")
        return "" if lecun else "SELU without LeCun normal"
    if activation in ("sigmoid", "tanh", "softmax", "linear") or family == "saturating":
        if scaling and float(init.scale) >= 1.5 and activation in ("sigmoid", "tanh"):
            return f"{activation} with He (scale {float(init.scale):g})"
        return ""
    if family == "relu" and scaling and float(init.scale) < 1.5 and not recurrent:
        return f"{activation} with Glorot/LeCun (scale {float(init.scale):g})"
    return ""


# -- the evaluation hook: weights and one forward pass per evaluation ------------------


class _SeedMonitor:
    """The `on_evaluation` hook of one seed's probe (never stops the probe)."""

    def __init__(self, sample: tuple[Any, Any] | None, batch_size: int,
                 thresholds: dict[str, float], static: bool) -> None:
        self.sample = sample
        self.batch_size = batch_size
        self.th = thresholds
        self.static = static
        self.records: list[dict[str, Any]] = []
        self.static_findings: list[Finding] = []
        self.static_layers: list[dict[str, Any]] = []
        self.matrix_layers: list[str] = []
        self.not_checked: dict[str, str] = {}
        self.predictions: np.ndarray | None = None
        self.bn_momentum: float | None = None
        self.has_bn = False
        self._probe: keras.Model | None = None
        self._targets: list[tuple[keras.layers.Layer, str]] = []
        self._started = False

    def __call__(self, epoch: int, callback: TelemetryCallback) -> bool:
        model = callback.model
        if not self._started:
            self._start(model)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": int(ops.convert_to_numpy(model.optimizer.iterations)),
            "learning_rate": callback.learning_rate[-1] if callback.learning_rate else None,
            "val_loss": callback.val_loss[-1] if callback.val_loss else None,
            "layers": _weight_stats(model),
        }
        if self.sample is not None:
            record.update(self._forward(model))
        self.records.append(record)
        return False

    def _start(self, model: keras.Model) -> None:
        self._started = True
        variables = list(model.trainable_variables)
        names, index = layer_groups(variables)
        self.matrix_layers = [name for i, name in enumerate(names)
                              if any(len(v.shape) >= 2 for v, g in zip(variables, index) if g == i)]
        bns = [layer for layer in flat_layers(model)
               if isinstance(layer, keras.layers.BatchNormalization)]
        self.has_bn = bool(bns)
        if bns:
            self.bn_momentum = max(float(layer.momentum) for layer in bns)
        if self.static:
            self.static_findings, self.static_layers = check_initializers(model, self.th)
        if self.sample is None:
            self.not_checked["activations"] = "no validation sample could be read from the data"
            return
        if not is_graph_model(model):
            self.not_checked["activations"] = (
                f"{type(model).__name__} is a subclassed model: its intermediate outputs "
                "cannot be read without changing its code, so dead ReLU units, saturation "
                "and BatchNormalization statistics were not checked")
            return
        targets: list[tuple[keras.layers.Layer, str]] = []
        outputs: list[Any] = []
        try:
            final = [o for o in model.outputs]
            for layer in model.layers:
                kind = _forward_kind(layer)
                if kind is None:
                    continue
                if kind == "saturating" and any(layer.output is o for o in final):
                    continue
                tensor = layer.input if kind == "bn" else layer.output
                targets.append((layer, kind))
                outputs.append(tensor)
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            self._probe = keras.Model(inputs, outputs + final)
            self._targets = targets
        except Exception as exc:  # a graph keras cannot cut (shared layers, nesting)
            self.not_checked["activations"] = (
                f"intermediate outputs could not be read ({type(exc).__name__}: {exc})")
            self._probe = None

    def _forward(self, model: keras.Model) -> dict[str, Any]:
        x, y = self.sample  # type: ignore[misc]
        out: dict[str, Any] = {}
        chunk = 2 * self.batch_size  # training fits this batch, so inference fits twice it
        if self._probe is None:
            prediction = _numpy(_in_chunks(model, x, chunk))
            if prediction is not None:
                self.predictions = prediction
                if y is not None:
                    out["loss_dispersion"] = _loss_dispersion(model, y, prediction)
        else:
            values = _in_chunks(self._probe, x, chunk)
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            arrays = [ops.convert_to_numpy(v).astype(np.float64) for v in values]
            if not all(np.isfinite(a).all() for a in arrays):
                out["nonfinite_activations"] = True
                return out
            if len(arrays) == len(self._targets) + 1:
                self.predictions = arrays[-1]
                if y is not None:
                    out["loss_dispersion"] = _loss_dispersion(model, y, arrays[-1])
            dead: dict[str, float] = {}
            saturated: dict[str, float] = {}
            bn: dict[str, dict[str, float]] = {}
            for (layer, kind), array in zip(self._targets, arrays):
                if kind == "relu":
                    dead[layer.name] = _dead_share(array, layer)
                elif kind == "saturating":
                    saturated[layer.name] = _saturated_share(array, activation_name(layer),
                                                             self.th["saturation_z"])
                else:
                    bn[layer.name] = _bn_shift(array, layer)
            out.update(dead_share=dead, saturated_share=saturated, bn=bn)
        if self.has_bn and y is not None:
            gap = _mode_gap(model, x, y, self.batch_size)
            if isinstance(gap, str):
                self.not_checked["bn_mode_gap"] = gap
            else:
                out["bn_gap"] = gap
        return out


def _in_chunks(model: keras.Model, x: Any, size: int) -> Any:
    """`model(x, training=False)` in slices of `size` samples, joined (same structure)."""
    n = len(keras.tree.flatten(x)[0])
    parts = [model(keras.tree.map_structure(lambda a, i=i: a[i:i + size], x), training=False)
             for i in range(0, n, max(1, size))]
    if len(parts) == 1:
        return parts[0]
    return keras.tree.map_structure(
        lambda *arrays: np.concatenate([ops.convert_to_numpy(a) for a in arrays]), *parts)


def _loss_dispersion(model: keras.Model, y: Any, prediction: np.ndarray) -> float:
    """std / mean of the per-sample losses: the batch loss's relative sampling noise
    is this over sqrt(batch size)."""
    loss = getattr(model, "loss", None)
    fn = _loss_function(model)
    if fn is None:
        return float("nan")
    y = np.asarray(y)
    if prediction.ndim == y.ndim + 1 and prediction.shape[-1] == 1:
        y = y[..., None]  # (n,) targets for a (n, 1) output, as Keras' compiled loss allows
    try:
        per_sample = fn.call(y, prediction) if isinstance(loss, keras.losses.Loss) \
            else fn(y, prediction)
        values = ops.convert_to_numpy(per_sample).astype(np.float64).reshape(len(prediction), -1)
    except Exception:  # a loss that needs more than (y, y_pred): not measured
        return float("nan")
    values = values.mean(axis=1)
    mean = float(values.mean())
    return float(values.std() / mean) if mean > 0 and np.isfinite(values).all() else float("nan")


def _numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, (list, tuple, dict)):
        return None
    array = ops.convert_to_numpy(value).astype(np.float64)
    return array if np.isfinite(array).all() else None


def _forward_kind(layer: keras.layers.Layer) -> str | None:
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    name = activation_name(layer)
    if name in ("relu", "relu6"):
        return "relu"
    if name in ("sigmoid", "tanh"):
        return "saturating"
    return None


def _channel_axis(array: np.ndarray, layer: Any) -> int:
    if getattr(layer, "data_format", "channels_last") == "channels_first" and array.ndim > 2:
        return 1
    return array.ndim - 1


def _dead_share(array: np.ndarray, layer: Any) -> float:
    """Share of units (channels) never active on any sample of the batch."""
    axis = _channel_axis(array, layer)
    moved = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
    return float(1.0 - np.mean((moved > 0).any(axis=0)))


def _saturated_share(array: np.ndarray, activation: str, z: float) -> float:
    """Share of outputs whose pre-activation is beyond +-z (read from the output)."""
    if activation == "sigmoid":
        low = 1.0 / (1.0 + math.exp(z))
        return float(np.mean((array < low) | (array > 1.0 - low)))
    return float(np.mean(np.abs(array) > math.tanh(z)))


def _bn_shift(array: np.ndarray, layer: keras.layers.BatchNormalization) -> dict[str, float]:
    """How far the moving statistics are from the input's statistics on the sample."""
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    axis = axis % array.ndim
    moved = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
    mean, var = moved.mean(axis=0), moved.var(axis=0)
    eps = float(layer.epsilon)
    moving_mean = ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
    moving_var = ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
    shift = np.abs(moving_mean - mean) / np.sqrt(var + eps)
    ratio = np.abs(np.log((moving_var + eps) / (var + eps)))
    return {"shift": float(np.mean(shift)), "var_log_ratio": float(np.mean(ratio)),
            "samples_per_statistic": int(moved.shape[0])}


_NOISE_ATTRS = (("rate", keras.layers.Dropout), ("rate", keras.layers.GaussianDropout),
                ("stddev", keras.layers.GaussianNoise))


def _mode_gap(model: keras.Model, x: Any, y: Any, batch: int) -> dict[str, float] | str:
    """log(inference-mode loss / training-mode loss) on the sample, in training-size batches.

    Training mode updates the BatchNormalization moving statistics; they are saved
    and restored. Dropout-like noise layers are switched off for both passes.
    """
    loss_fn = _loss_function(model)
    if loss_fn is None:
        return f"the compiled loss {getattr(model, 'loss', None)!r} is not a single loss function"
    if not hasattr(x, "shape") or isinstance(x, dict):
        return "the validation sample is not a single array"
    n = int(x.shape[0])
    chunks = min(16, n // batch)
    if chunks < 1:
        return f"the validation sample ({n}) is smaller than one batch ({batch})"
    layers = list(flat_layers(model))
    saved = [(v, ops.convert_to_numpy(v)) for layer in layers
             if isinstance(layer, keras.layers.BatchNormalization)
             for v in (layer.moving_mean, layer.moving_variance)]
    noise = [(layer, attr, getattr(layer, attr)) for layer in layers
             for attr, cls in _NOISE_ATTRS if isinstance(layer, cls)]
    train, infer = [], []
    try:
        for layer, attr, _ in noise:
            setattr(layer, attr, 0.0)
        for i in range(chunks):
            xc, yc = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            for mode, out in ((True, train), (False, infer)):
                prediction = model(xc, training=mode)
                # (n,) labels for an (n, 1) output, reshaped as model.fit does
                target = fit_targets(yc, tuple(prediction.shape[1:]))
                value = ops.mean(loss_fn(target, prediction))
                out.append(float(ops.convert_to_numpy(value)))
    finally:
        for layer, attr, value in noise:
            setattr(layer, attr, value)
        for variable, value in saved:
            variable.assign(value)
    lt, li = float(np.mean(train)), float(np.mean(infer))
    if not (math.isfinite(lt) and math.isfinite(li) and lt > 0 and li > 0):
        return "the loss was not finite in one of the two modes"
    positive = [v for v in train if v > 0]
    noise = float(np.std(np.log(positive))) if len(positive) >= 3 else math.nan
    return {"train_mode_loss": lt, "inference_mode_loss": li, "gap": math.log(li / lt),
            "samples": chunks * batch, "train_batch_noise": noise}


def _loss_function(model: keras.Model) -> Callable[..., Any] | None:
    loss = getattr(model, "loss", None)
    if isinstance(loss, (str, keras.losses.Loss)) or callable(loss):
        try:
            return keras.losses.get(loss) if isinstance(loss, str) else loss
        except ValueError:
            return None
    return None


def _weight_stats(model: keras.Model) -> dict[str, dict[str, float]]:
    """Per layer (telemetry names): mean and std of its weight matrices (or all weights)."""
    variables = list(model.trainable_variables)
    names, index = layer_groups(variables)
    stats: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        group = [v for v, g in zip(variables, index) if g == i]
        chosen = [v for v in group if len(v.shape) >= 2] or group
        values = np.concatenate([ops.convert_to_numpy(v).astype(np.float64).ravel()
                                 for v in chosen])
        stats[name] = {"weight_mean": float(values.mean()), "weight_std": float(values.std())}
    return stats


def _validation_sample(data: ProbeData, size: int) -> tuple[Any, Any] | None:
    """Up to `size` validation samples as numpy arrays (None when unreadable)."""
    try:
        if data.kind == "arrays":
            return data.x_val[:size], data.y_val[:size]
        if data.kind == "pydataset":
            xs, ys, count = [], [], 0
            for i in range(len(data.x_val)):
                item = data.x_val[i]
                x, y = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
                xs.append(np.asarray(x))
                if y is not None:
                    ys.append(np.asarray(y))
                count += len(xs[-1])
                if count >= size:
                    break
            return np.concatenate(xs)[:size], (np.concatenate(ys)[:size] if ys else None)
        ds = data.x_val if data.fixed_batch else data.x_val.batch(size)
        xs, ys, count = [], [], 0
        for item in ds:
            x, y = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
            xs.append(np.asarray(x))
            if y is not None:
                ys.append(np.asarray(y))
            count += len(xs[-1])
            if count >= size:
                break
        return np.concatenate(xs)[:size], (np.concatenate(ys)[:size] if ys else None)
    except Exception:  # dict inputs and the like: the forward checks are skipped
        return None


def _actual_batch(data: ProbeData, batch: int) -> int:
    """The training batch size, read from the data when the data fixes it."""
    if data.kind == "arrays" or not data.fixed_batch:
        return batch
    try:
        item = data.x[0] if data.kind == "pydataset" else next(iter(data.x))
        first = item[0] if isinstance(item, tuple) else item
        return int(np.asarray(first).shape[0])
    except Exception:
        return batch


# -- the diagnosis ----------------------------------------------------------------


@dataclasses.dataclass
class Diagnosis:
    """Findings with their evidence, per-seed numbers and the per-epoch record."""

    findings: list[Finding]
    config: StabilityConfig
    seeds: list[int]
    steps: int
    batch_size: int
    thresholds: dict[str, float]
    per_seed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    epochs: list[list[dict[str, Any]]] = dataclasses.field(default_factory=list)
    initializers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lr_range: LRRangeResult | None = None
    user_lr: float | None = None
    seconds: float = 0.0
    #: The range test repeated under `repair` (global-norm clipping at 1.0 when
    #: gradients explode or the run diverges, the initializer "auto" when the
    #: initialization is implicated; see the module docstring); None otherwise.
    repaired_lr_range: LRRangeResult | None = None
    #: The `StabilityConfig` fields `repaired_lr_range` ran under (empty without it).
    repair: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: What a KerasTuner-style `build_fn(hp)`'s hyperparameters took (empty otherwise).
    hp_values: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The probes themselves (one per seed; not serialised): `stabilize()` scores
    #: the baseline from them instead of probing the same configuration twice.
    traces: list[ProbeTrace] = dataclasses.field(default_factory=list, repr=False,
                                                 compare=False)

    # -- queries ----------------------------------------------------------------
    @property
    def clipped_lr_range(self) -> LRRangeResult | None:
        """`repaired_lr_range` when its repair clips (None otherwise)."""
        return self.repaired_lr_range if self._repair_clips() else None

    def _repair_clips(self) -> bool:
        return self.repair.get("clipping") not in (None, "none", "keep")

    def repair_text(self) -> str:
        """The repair the second range test ran under, in words."""
        parts = []
        if self._repair_clips():
            parts.append(f"global-norm clipping ({float(self.repair.get('clip_value', 1.0))})"
                         if self.repair["clipping"] == "global_norm" else
                         f"clipping {self.repair['clipping']} ({self.repair.get('clip_value')})")
        if "initializer" in self.repair:
            parts.append(f"initializer {self.repair['initializer']}")
        return " and ".join(parts) or "the repair"

    def __contains__(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    def get(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def codes(self, severity: str = "info") -> list[str]:
        """Codes of the findings at `severity` or above."""
        return [f.code for f in self.findings if f.at_least(severity)]

    def above(self, severity: str = "info") -> list[Finding]:
        """Findings strictly above `severity` ("info" -> warnings and errors)."""
        return [f for f in self.findings if _RANK[f.severity] > _RANK[severity]]

    @property
    def worst(self) -> str:
        """"error", "warning", "info", or "ok" when there is no finding at all."""
        if not self.findings:
            return "ok"
        return SEVERITIES[max(_RANK[f.severity] for f in self.findings)]

    @property
    def healthy(self) -> bool:
        return not self.above("info")

    # -- output -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "worst": self.worst,
            "config": self.config.to_dict(),
            "seeds": self.seeds,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "user_lr": self.user_lr,
            "findings": [f.to_dict() for f in self.findings],
            "thresholds": self.thresholds,
            "per_seed": self.per_seed,
            "epochs": self.epochs,
            "initializers": self.initializers,
            "lr_range": self.lr_range.to_dict() if self.lr_range is not None else None,
            "repaired_lr_range": self.repaired_lr_range.to_dict()
            if self.repaired_lr_range is not None else None,
            "repair": self.repair,
            "hp_values": self.hp_values,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        """The inverse of `to_dict` (as stored on a study), without the traces."""
        findings = [Finding(**{**f, "dimensions": tuple(f.get("dimensions") or ())})
                    for f in data.get("findings") or []]
        lr, repaired = data.get("lr_range"), data.get("repaired_lr_range")
        repair = dict(data.get("repair") or {})
        if repaired is None and data.get("clipped_lr_range"):  # stored before repairs
            repaired, repair = data["clipped_lr_range"], dict(CLIP_REPAIR)
        return cls(findings=findings, config=StabilityConfig.from_dict(data.get("config") or {}),
                   seeds=list(data.get("seeds") or []), steps=int(data.get("steps") or 0),
                   batch_size=int(data.get("batch_size") or 0),
                   thresholds=resolve_thresholds(data.get("thresholds")),
                   per_seed=list(data.get("per_seed") or []),
                   epochs=list(data.get("epochs") or []),
                   initializers=list(data.get("initializers") or []),
                   lr_range=LRRangeResult.from_dict(lr) if lr else None,
                   repaired_lr_range=LRRangeResult.from_dict(repaired) if repaired else None,
                   repair=repair if repaired else {},
                   user_lr=data.get("user_lr"), seconds=float(data.get("seconds") or 0.0),
                   hp_values=dict(data.get("hp_values") or {}))

    def _header(self) -> str:
        what = self.config.describe()
        counts = {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}
        return (f"Diagnosis of {what}: {len(self.seeds)} seeds x {self.steps} steps, batch "
                f"{self.batch_size} ({self.seconds:.1f} s): {counts['error']} errors, "
                f"{counts['warning']} warnings, {counts['info']} info")

    def to_text(self, epochs: bool = True) -> str:
        lines = [self._header()]
        if not self.above("info"):
            lines.append("No finding above info: this training looks healthy on these seeds.")
        lines += [f.to_text() for f in self.findings]
        if self.lr_range is not None:
            lines.append(self.lr_range.to_text())
        if self.repaired_lr_range is not None:
            lines.append(f"Under {self.repair_text()}: " + self.repaired_lr_range.to_text())
        if epochs and self.epochs:
            lines.append(f"Per epoch (seed {self.seeds[0]}):")
            lines += ["  " + row for row in _epoch_rows(self.epochs[0])]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def html_section(self) -> str:
        """A `<section>` for report.html: the findings table and the per-epoch table."""
        colors = {"error": "#c0392b", "warning": "#d68910", "info": "#5d6d7e"}
        rows = []
        for f in self.findings:
            evidence = html.escape(_pairs(f.evidence))
            layers = f"<br>layers: {html.escape(', '.join(f.layers))}" if f.layers else ""
            rows.append(
                f"<tr><td style='color:{colors[f.severity]};font-weight:bold'>{f.severity}</td>"
                f"<td><code>{f.code}</code><br>{html.escape(f.title)}</td>"
                f"<td>{html.escape(f.message)}{layers}</td><td>{evidence}</td>"
                f"<td>{html.escape(_pairs(f.thresholds))}</td>"
                f"<td>{html.escape(', '.join(f.dimensions))}</td></tr>")
        table = ("<table class='findings'><thead><tr><th>severity</th><th>finding</th>"
                 "<th>details</th><th>evidence</th><th>thresholds</th><th>addressed by</th>"
                 f"</tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows \
            else "<p>No findings.</p>"
        parts = [f"<section class='diagnosis'><h2>Diagnosis</h2><p>{html.escape(self._header())}"
                 "</p>", table]
        if self.lr_range is not None:
            text = html.escape(self.lr_range.to_text()).replace("\n", "<br>")
            parts.append(f"<p>{text}</p>")
        if self.repaired_lr_range is not None:
            text = html.escape(self.repaired_lr_range.to_text()).replace("\n", "<br>")
            parts.append(f"<p>Under {html.escape(self.repair_text())}: {text}</p>")
        if self.epochs:
            rows_text = html.escape("\n".join(_epoch_rows(self.epochs[0])))
            parts.append(f"<h3>Per epoch (seed {self.seeds[0]})</h3><pre>{rows_text}</pre>")
        parts.append("</section>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.html_section()

    # -- before / after ---------------------------------------------------------------
    def compare(self, after: Diagnosis) -> list[dict[str, Any]]:
        """One row per finding code in either diagnosis: its severity before and after.

        `self` is the "before" (e.g. the user's configuration), `after` the
        diagnosis of the chosen configuration; a missing finding is None. The
        main evidence numbers of both sides come along.
        """
        codes = [c for c in _ORDER if (c in self or c in after) and c != "not_checked"]
        rows = []
        for code in codes:
            was, now = self.get(code), after.get(code)
            rows.append({"code": code, "title": (was or now).title,  # type: ignore[union-attr]
                         "before": was.severity if was else None,
                         "after": now.severity if now else None,
                         "evidence_before": was.evidence if was else {},
                         "evidence_after": now.evidence if now else {}})
        return rows

    def compare_text(self, after: Diagnosis) -> str:
        """`compare` as a small table for the terminal."""
        lines = [f"{'finding':24} {'before':8} after"]
        for row in self.compare(after):
            lines.append(f"{row['code']:24} {row['before'] or '-':8} {row['after'] or '-'}")
        return "\n".join(lines)

    # -- focusing a search -----------------------------------------------------------
    def focus(self, space: SearchSpace | str | dict[str, Any]) -> SearchSpace:
        """`space` narrowed and reordered by the findings at warning level or above.

        The changes are listed in the returned space's description and by
        `focus_notes(space)`. See `_focus` for the rules.
        """
        focused, _ = self._focus(load_space(space))
        return focused

    def focus_notes(self, space: SearchSpace | str | dict[str, Any]) -> list[str]:
        """What `focus(space)` changes, one line per dimension."""
        return self._focus(load_space(space))[1]

    def first_trial(self, space: SearchSpace | str | dict[str, Any]) -> dict[str, Any]:
        """Parameters for a first trial in the focused space (for `study.enqueue_trial`).

        The first choice of every focused categorical dimension, the range test's
        suggested learning rate (clipped to the range) and the geometric middle of
        the other ranges; conditional children only where their parent needs them.
        The batch size stays the user's when the findings did not reorder the batch
        sizes and the space offers it (a space lists them smallest first, which says
        nothing about the model). Dimensions that are not searched (fixed, or a
        single choice) are left out.
        """
        original = load_space(space)
        focused = self.focus(original)
        params: dict[str, Any] = {}
        for key, dim in focused.dimensions.items():
            if isinstance(dim, Choice) and len(dim.values) > 1:
                params[key] = dim.values[0]
                if key == "batch_size" and self.batch_size in dim.values \
                        and dim == original.dimensions.get(key):
                    params[key] = self.batch_size
            elif isinstance(dim, FloatRange):
                middle = math.sqrt(dim.low * dim.high) if dim.log and dim.low > 0 \
                    else (dim.low + dim.high) / 2
                if key == "learning_rate" and self.lr_range is not None:
                    middle = min(max(self._first_lr(focused), dim.low), dim.high)
                params[key] = middle
        parents = {"decay_rate": ("lr_schedule", ("exponential",)),
                   "warmup_fraction": ("lr_schedule", ("warmup_cosine",)),
                   "clip_value": ("clipping", ("norm", "value", "global_norm"))}
        values = {k: _leading(d) for k, d in focused.dimensions.items()}
        for child, (parent, needs) in parents.items():
            if child in params and params.get(parent, values.get(parent)) not in needs:
                del params[child]
        return params

    def _mismatched(self, initializer: str) -> bool:
        """Would the named initializer mismatch an activation of the diagnosed model?

        "auto" and "keep" never do (auto matches each layer; keep is the user's
        own); a name applies to every layer, so it must suit all their activations.
        """
        if initializer in ("auto", "keep"):
            return False
        try:
            init = keras.initializers.get(initializer)
        except (ValueError, TypeError):
            return False
        return any(_mismatch(init, str(r.get("activation")), bool(r.get("recurrent")))
                   for r in self.initializers)

    def _first_lr(self, focused: SearchSpace) -> float:
        """The range test's suggestion; the repaired test's when the first trial repairs.

        The first trial applies the repair when it clips (for a repair that clips)
        or takes the initializer "auto" (for a repair of the initializer).
        """
        assert self.lr_range is not None

        def first(key: str) -> Any:
            return _leading(focused.dimensions.get(key))

        repaired = self.repaired_lr_range
        if repaired is not None and (
                (self._repair_clips() and first("clipping") not in (None, "none", "keep"))
                or ("initializer" in self.repair
                    and first("initializer") == self.repair["initializer"])):
            return repaired.suggested_lr
        return self.lr_range.suggested_lr

    def range_test_trial(self, space: SearchSpace | str | dict[str, Any]
                         ) -> dict[str, Any] | None:
        """The LR range test's suggestion alone, as parameters of the focused space.

        Its suggested learning rate (clipped to the range) with the user's other
        settings wherever the space offers them (initializer "keep", no clipping,
        a constant schedule, the user's batch size); None without a range test or
        a searched learning rate. `stabilize()` queues it before `first_trial`, so
        the search always weighs the plain LR fix against the focused proposal.
        """
        focused = self.focus(space)
        dim = focused.dimensions.get("learning_rate")
        if self.lr_range is None or not isinstance(dim, FloatRange):
            return None
        params: dict[str, Any] = {
            "learning_rate": min(max(self.lr_range.suggested_lr, dim.low), dim.high)}
        plain = {"initializer": "keep", "clipping": "none", "lr_schedule": "constant",
                 "normalization": "keep", "output_bias": "keep", "batch_size": self.batch_size}
        for key, value in plain.items():
            choice = focused.dimensions.get(key)
            if isinstance(choice, Choice) and len(choice.values) > 1 and value in choice.values:
                params[key] = value
        return params

    def _focus(self, space: SearchSpace) -> tuple[SearchSpace, list[str]]:
        active = {f.code for f in self.findings if f.at_least("warning")}
        dims: dict[str, Any] = {}
        notes: list[str] = []
        current = dict(space.dimensions)

        def values(key: str, default: tuple[Any, ...]) -> list[Any]:
            dim = current.get(key)
            if isinstance(dim, Choice):
                return list(dim.values)
            if isinstance(dim, Fixed):
                return [dim.value]
            return list(default)

        def first(items: list[Any], preferred: Iterable[Any]) -> list[Any]:
            order = list(preferred)
            return sorted(items, key=lambda v: order.index(v) if v in order else len(order))

        # Clipping first when gradients explode or the run diverged; "none" stays last,
        # because clipping far below the gradients' scale (unscaled targets) stalls. It is
        # offered where the space offers it or leaves clipping out (the user's unclipped
        # optimizer); a space that always clips (`recurrent`) keeps clipping on, and a
        # fixed clipping is the user's decision.
        clip_codes = active & CLIPPING_CODES
        if clip_codes and not isinstance(current.get("clipping"), Fixed):
            offered = values("clipping", ("global_norm", "norm", "none"))
            clip = [v for v in offered if v not in ("none", "keep")]
            clip = first(clip or ["global_norm", "norm"], ("global_norm", "norm", "value"))
            clip += [v for v in ("none", "keep") if v in offered]
            dims["clipping"] = Choice(tuple(clip))
            notes.append(f"clipping: {', '.join(clip)} ({', '.join(sorted(clip_codes))})")
            if "clip_value" not in current:
                dims["clip_value"] = FloatRange(0.5, 5.0, log=True)
        # Learning rate: the range test's bound, or below the rate that misbehaved.
        cap, why = None, ""
        lr, repaired = self.lr_range, self.repaired_lr_range
        if lr is not None and (lr.reliable or "lr_too_high" in active):
            cap, why = lr.max_stable_lr, "LR range test max stable LR"
            if clip_codes and repaired is None:
                # The test ran unclipped; clipping bounds the steps it blew up on.
                cap, why = 10 * cap, "10x the LR range test max stable LR: clipping is searched"
        if repaired is not None and (cap is not None or repaired.reliable):
            # The repairs are searched, first: their own range test bounds the rates.
            cap = max(cap or 0.0, repaired.max_stable_lr)
            why = f"LR range test max stable LR under {self.repair_text()}"
        if active & {"oscillating_loss", "diverged"} and self.user_lr and lr is None:
            cap, why = self.user_lr, "the learning rate that misbehaved"
        if "loss_rising" in active and self.user_lr and not clip_codes and (
                cap is None or cap > self.user_lr):
            # The user's own training came apart at this rate, whatever the ramp said.
            cap, why = self.user_lr, "the learning rate at which the loss rose again"
        if cap is not None:
            dim = current.get("learning_rate")
            if isinstance(dim, FloatRange) and dim.high > cap:
                # Down to the plain test's suggestion too, so `range_test_trial` is in range.
                low = min(dim.low, cap / 30, lr.suggested_lr if lr is not None else cap)
                dims["learning_rate"] = FloatRange(low, cap, log=True)
                notes.append(f"learning_rate: [{low:.3g}, {cap:.3g}] ({why})")
            elif isinstance(dim, Choice) and max(dim.values) > cap:
                kept = tuple(v for v in dim.values if v <= cap) or (cap,)
                dims["learning_rate"] = Choice(kept)
                notes.append(f"learning_rate: {', '.join(f'{v:g}' for v in kept)} ({why})")
            elif dim is None and "lr_too_high" in active:
                dims["learning_rate"] = FloatRange(cap / 30, cap, log=True)
                notes.append(f"learning_rate: added [{cap / 30:.3g}, {cap:.3g}] ({why})")
        # Matched initializers first when the initialisation is implicated.
        init_codes = active & INIT_CODES
        if init_codes:
            inits = first(values("initializer", ("auto",)), ("auto",))
            if "auto" not in inits:
                inits.insert(0, "auto")
            if active & {"init_mismatch", "large_init", "small_init"}:
                inits = [v for v in inits if v != "keep"]
            inits = [v for v in inits if not self._mismatched(v)]
            dims["initializer"] = Choice(tuple(inits))
            notes.append(f"initializer: {', '.join(inits)} ({', '.join(sorted(init_codes))})")
        elif "init_mismatch" in self and isinstance(current.get("initializer"), Choice):
            inits = first(values("initializer", ("auto",)), ("auto",))
            dims["initializer"] = Choice(tuple(inits))
        # Decaying schedules first whenever something is wrong: the steps shrink towards
        # the end, and with them the final loss's seed-to-seed noise, which short probes
        # on few seeds measure poorly (the first trial takes the first schedule).
        if active:
            order = ("warmup_cosine", "cosine", "exponential", "cooldown", "plateau", "constant")
            schedules = first(values("lr_schedule", ("warmup_cosine", "cosine", "constant")), order)
            dims["lr_schedule"] = Choice(tuple(schedules))
            notes.append(f"lr_schedule: {', '.join(schedules)}")
        # Larger batches first for BatchNormalization trouble and seed variance.
        if active & {"bn_small_batch", "bn_mode_gap", "seed_variance"}:
            batches = sorted(values("batch_size", (32, 16)), reverse=True)
            if "bn_small_batch" in active:
                big = [b for b in batches if b >= self.thresholds["bn_min_batch"]]
                batches = big or [max(16, int(self.thresholds["bn_min_batch"]) * 2)]
            dims["batch_size"] = Choice(tuple(batches))
            notes.append(f"batch_size: {', '.join(map(str, batches))}")
            if "normalization" in _DIMENSION_NAMES and active & {"bn_small_batch", "bn_mode_gap"}:
                norms = first(values("normalization", ("group", "layer", "keep")),
                              ("group", "layer", "keep", "batch"))
                dims["normalization"] = Choice(tuple(norms))
                notes.append(f"normalization: {', '.join(norms)}")
        # The output bias at the best constant when the offset is most of the untrained
        # loss: on every trial, unless the space searches it (then first) or fixes it.
        if "output_offset" in active and not isinstance(current.get("output_bias"), Fixed):
            offered = current.get("output_bias")
            if isinstance(offered, Choice):
                biases = first(list(offered.values), ("chance", "keep"))
                if "chance" not in biases:
                    biases.insert(0, "chance")
                dims["output_bias"] = Choice(tuple(biases))
            else:
                biases = ["chance"]
                dims["output_bias"] = Fixed("chance")
            notes.append(f"output_bias: {', '.join(biases)} (output_offset)")
        if active & {"bn_unsettled", "bn_mode_gap"}:
            dim = current.get("bn_momentum")
            if isinstance(dim, FloatRange):
                high = min(dim.high, 0.95)
                dims["bn_momentum"] = FloatRange(min(dim.low, high), high, dim.log)
            else:
                dims["bn_momentum"] = FloatRange(0.8, 0.95)
            notes.append("bn_momentum: at most 0.95 (moving statistics settle faster)")
        focused = space.with_dimensions(**dims)
        if notes:
            text = "; ".join(notes)
            focused = dataclasses.replace(
                focused, description=f"{space.description} [focused by diagnosis: {text}]".strip())
        return focused, notes


def _leading(dim: Any) -> Any:
    """The value a dimension offers first: a fixed value, a choice's first; else None."""
    return dim.value if isinstance(dim, Fixed) else \
        dim.values[0] if isinstance(dim, Choice) else None


def _epoch_rows(records: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in records:
        lr = r.get("learning_rate")
        head = (f"epoch {r['epoch']} step {r['step']}: lr {_fmt(lr) if lr is not None else 'n/a'}, "
                f"val_loss {_fmt(r.get('val_loss'))}")
        rows.append(head)
        for name, s in r.get("layers", {}).items():
            extra = ""
            if "update_ratio" in s:
                extra = f", update/weight {_fmt(s['update_ratio'])}"
            rows.append(f"    {name}: weight mean {_fmt(s['weight_mean'])}, std "
                        f"{_fmt(s['weight_std'])}{extra}")
        for key, label in (("dead_share", "dead units"), ("saturated_share", "saturated")):
            for name, value in (r.get(key) or {}).items():
                rows.append(f"    {name}: {label} {_fmt(value)}")
    return rows


def _median(values: Iterable[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.median(finite)) if finite else float("nan")


def resolve_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    """`THRESHOLDS` with overrides; an unknown key is a `ConfigError` naming it."""
    th = dict(THRESHOLDS)
    for key, value in (thresholds or {}).items():
        if key not in th:
            raise ConfigError(f"thresholds: unknown key {key!r}; expected one of "
                              f"{', '.join(sorted(th))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ConfigError(f"thresholds[{key!r}]={value!r}: expected a finite number")
        th[key] = float(value)
    return th


def diagnose(build_fn: Callable[..., Any], data: Any, *, config: SearchConfig | None = None,
             seeds: int = 3, steps: int | None = None, thresholds: dict[str, float] | None = None,
             candidate: StabilityConfig | None = None, evaluations: int | None = None,
             lr_range: bool | LRRangeResult = True, lr_range_steps: int = 80,
             sample_size: int = 256, hp_values: dict[str, Any] | None = None,
             **options: Any) -> Diagnosis:
    """Train the configuration briefly on a few seeds and report what is wrong.

    Args:
        build_fn: as for `stabilize()`: `build_fn()` / `build_fn(hp)` returning a
            Keras model (compiled, or pass `loss=`), or a KerasTuner `HyperModel`.
        data: anything `stabilize()` accepts, or a prepared `ProbeData`.
        config: search settings (batch size, divergence checks, seed, loss for an
            uncompiled model); keyword `options` override its fields.
        seeds: seeds to train (run-to-run variance needs at least 2).
        steps: optimizer steps per seed (default `config.probe_steps`).
        thresholds: overrides of `THRESHOLDS` (see the module docstring).
        candidate: the configuration to diagnose; default the user's own
            (`StabilityConfig()`). Diagnosing the chosen one gives the "after".
        evaluations: evaluations per seed, i.e. rows of the per-epoch record
            (default `config.evaluations`).
        lr_range: True runs an LR range test of `lr_range_steps` steps; False
            skips it; an `LRRangeResult` is used as is.
        sample_size: validation samples for the forward checks.
        hp_values: for a KerasTuner-style `build_fn(hp)`, the values its
            hyperparameters take (e.g. a trial's `user_params`); defaults otherwise.

    Returns:
        A `Diagnosis`: `findings` (most severe first), `to_text()`, `to_dict()`,
        `html_section()`, and `focus(space)` for the search.
    """
    start = time.perf_counter()
    th = resolve_thresholds(thresholds)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds={seeds!r}: expected an integer >= 1")
    settings = settings_with(config, options, "diagnose")
    steps = settings.probe_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps={steps!r}: expected an integer >= 2")
    evaluations = min(evaluations or settings.evaluations, steps)
    settings = SearchConfig.from_dict({**settings.to_dict(), "probe_steps": steps,
                                       "evaluations": evaluations, "seeds": seeds})
    probe_data = data if isinstance(data, ProbeData) else prepare_data(
        data, validation_split=settings.validation_split, seed=settings.seed)
    if not isinstance(data, ProbeData):  # stabilize() checked its data before diagnosing
        inspect_model(build_fn, probe_data, settings)  # a DataError before the first probe
    fn, uses_hp = resolve_build_fn(build_fn)
    hp = replay_hyperparameters(hp_values or {}) if uses_hp else None
    candidate = candidate or StabilityConfig()
    batch = batch_size_of(candidate, settings, probe_data)
    actual_batch = _actual_batch(probe_data, batch)
    plan = ProbePlan.from_settings(settings)
    sample = _validation_sample(probe_data, sample_size)
    traces: list[ProbeTrace] = []
    monitors: list[_SeedMonitor] = []
    seed_list = probe_seeds(settings)
    for i, seed in enumerate(seed_list):
        monitor = _SeedMonitor(sample, actual_batch, th, static=i == 0)
        traces.append(run_probe(fn, probe_data, candidate, settings, seed, hp=hp, plan=plan,
                                on_evaluation=monitor))
        monitors.append(monitor)
    user_lr = configured_learning_rate(fn, hp, candidate, settings)
    lr_result: LRRangeResult | None = None
    if isinstance(lr_range, LRRangeResult):
        lr_result = lr_range
    elif lr_range:
        lr_result = lr_range_test(build_fn, probe_data, steps=lr_range_steps,
                                  config=settings, candidate=candidate, hp_values=hp_values)
    builder = _FindingBuilder(th, traces, monitors, plan, actual_batch, steps, user_lr,
                              lr_result, settings)
    findings = builder.build()
    offset = check_output_offset(fn, hp, candidate, settings, probe_data, seed_list[0],
                                 sample, th)
    if offset is not None:
        findings.append(offset)
        findings.sort(key=lambda f: (-_RANK[f.severity], _ORDER.index(f.code)))
    repair = repair_for(findings, candidate) if lr_range is True else {}
    repaired: LRRangeResult | None = None
    if repair:
        repaired = lr_range_test(build_fn, probe_data, steps=lr_range_steps, config=settings,
                                 hp_values=hp_values,
                                 candidate=dataclasses.replace(candidate, **repair))
    for monitor, trace in zip(monitors, traces):
        _add_update_ratios(monitor.records, trace, plan)
    return Diagnosis(
        findings=findings, config=candidate, seeds=seed_list, steps=steps,
        batch_size=actual_batch, thresholds=th, per_seed=builder.per_seed,
        epochs=[m.records for m in monitors], initializers=monitors[0].static_layers,
        lr_range=lr_result, user_lr=user_lr, seconds=time.perf_counter() - start,
        repaired_lr_range=repaired, repair=repair if repaired is not None else {},
        hp_values=dict(hp.values) if hp is not None else {}, traces=traces)


def check_output_offset(fn: Callable[..., Any], hp: Any, candidate: StabilityConfig,
                        settings: SearchConfig, data: ProbeData, seed: int,
                        sample: tuple[Any, Any] | None,
                        thresholds: dict[str, float]) -> Finding | None:
    """`output_offset` (module docstring), or None when absent or not checkable.

    Builds the candidate's untrained model on `seed` and compares its loss on the
    validation sample with the loss under the output bias `output_bias="chance"`
    would set.
    """
    if sample is None or sample[1] is None or data.kind != "arrays":
        return None
    keras.utils.set_random_seed(seed)
    applied = apply_config(call_build_fn(fn, hp), candidate, settings, data.y)
    model = applied.model
    found = output_bias(model, applied.compile_spec.loss, data.y)
    if isinstance(found, str):  # not settable here (its reason is the probes' not_applied)
        return None
    layer, bias = found
    loss = resolve_loss(applied.compile_spec.loss)
    x, y = sample

    def sample_loss() -> tuple[float, float]:
        prediction = ops.convert_to_numpy(_in_chunks(model, x, 256)).astype(np.float64)
        target = fit_targets(y, tuple(prediction.shape[1:]))
        value = float(ops.convert_to_numpy(ops.mean(loss(target, prediction))))
        return value, float(prediction.mean())

    try:
        before, output_mean = sample_loss()
        layer.bias.assign(bias)
        after, _ = sample_loss()
    except Exception:  # a loss that needs more than (y, y_pred): not checked
        return None
    limit = thresholds["output_offset"]
    if not (math.isfinite(before) and after > 0 and before >= limit * after):
        return None
    evidence = {"initial_loss": before, "offset_loss": after, "ratio": before / after,
                "samples": len(x)}
    means = ""
    if output_layer(model)[1] == "linear":  # a regression: the offset in the targets' units
        evidence["output_mean"] = output_mean
        evidence["target_mean"] = float(np.mean(np.asarray(data.y, dtype=np.float64)))
        means = f"; mean output {output_mean:.3g}, mean target {evidence['target_mean']:.3g}"
    return Finding(
        "output_offset", "outputs start far from the targets", "warning", evidence,
        {"output_offset": limit}, _dims("output_offset"),
        f"the untrained model's loss is {before / after:.3g}x what it is with the output "
        f"layer's bias at the best constant prediction ({before:.3g} against {after:.3g} on "
        f"{len(x)} validation samples{means}): most of the starting loss is the outputs' "
        "offset", [layer.name])


def repair_for(findings: Iterable[Finding], candidate: StabilityConfig) -> dict[str, Any]:
    """The settings the second LR range test runs under (empty: no second test).

    Global-norm clipping at 1.0 for `CLIPPING_CODES`, the initializer "auto" for
    `INIT_REPAIR_CODES` (unless the candidate already uses it), at warning level
    or above; both when both apply, so one test covers the search's first trial.
    """
    active = {f.code for f in findings if f.at_least("warning")}
    repair: dict[str, Any] = {}
    if active & CLIPPING_CODES:
        repair.update(CLIP_REPAIR)
    if active & INIT_REPAIR_CODES and candidate.initializer != INIT_REPAIR["initializer"]:
        repair.update(INIT_REPAIR)
    return repair


def _add_update_ratios(records: list[dict[str, Any]], trace: ProbeTrace, plan: ProbePlan) -> None:
    ratios = np.asarray(trace.update_ratio, dtype=np.float64)
    for i, record in enumerate(records):
        rows = ratios[i * plan.steps_per_epoch:(i + 1) * plan.steps_per_epoch]
        if not len(rows):
            continue
        for j, name in enumerate(trace.layer_names):
            col = rows[:, j]
            col = col[np.isfinite(col)]
            if name in record["layers"] and len(col):
                record["layers"][name]["update_ratio"] = float(col.mean())


class _FindingBuilder:
    """Turns the per-seed numbers into findings (one method per group of checks)."""

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
        self.losses = [loss_stats(t, th, _sampling_noise(m, batch))
                       for t, m in zip(traces, monitors)]
        self.findings: list[Finding] = []
        self.per_seed = []
        for seed_index, (g, lo, m) in enumerate(zip(self.grads, self.losses, monitors)):
            last = self._last_forward(m)
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

    @staticmethod
    def _last_forward(monitor: _SeedMonitor) -> dict[str, Any]:
        for record in reversed(monitor.records):
            if "dead_share" in record or "bn_gap" in record:
                return record
        return {}

    def add(self, code: str, title: str, severity: str, evidence: dict[str, Any],
            keys: Iterable[str], message: str = "", layers: Iterable[str] = ()) -> None:
        self.findings.append(Finding(code, title, severity, evidence,
                                     {k: self.th[k] for k in keys}, _dims(code), message,
                                     sorted(set(layers))))

    def build(self) -> list[Finding]:
        self._divergence()
        self._gradients()
        self._activations()
        self._loss()
        self._seeds()
        self._batchnorm()
        self.findings += self.monitors[0].static_findings
        self._learning_rate()
        self._not_checked()
        self.findings.sort(key=lambda f: (-_RANK[f.severity], _ORDER.index(f.code)))
        return self.findings

    def _divergence(self) -> None:
        diverged = [i for i, lo in enumerate(self.losses) if lo["diverged"]]
        if not diverged:
            return
        first = min(self.losses[i]["steps"] for i in diverged)
        worst = max((_finite_max(self.traces[i].loss) / self.losses[i]["initial_val_loss"]
                     for i in diverged if self.losses[i]["initial_val_loss"] > 0), default=math.nan)
        self.add("diverged", "training diverged", "error",
                 {"seeds_diverged": len(diverged), "seeds": len(self.losses),
                  "stopped_at_step": first, "max_loss_over_initial": worst,
                  "nonfinite_loss_steps": sum(self.losses[i]["nonfinite_steps"] for i in diverged)},
                 [], f"the loss became NaN/Inf or exceeded {self.settings.divergence_factor:g}x "
                     f"its start on {len(diverged)} of {len(self.losses)} seeds")

    def _gradients(self) -> None:
        th, grads = self.th, self.grads
        nonfinite = sum(g["nonfinite_steps"] for g in grads)
        spikes = _median(g["spikes"] for g in grads)
        ratio = _median(g["max_layer_ratio"] for g in grads)
        growth = _median(g["growth"] for g in grads)
        severe = bool(nonfinite) or growth > th["explode_growth_error"]
        if nonfinite or spikes >= th["explode_spikes"] or ratio > th["explode_layer_ratio"] \
                or growth > th["explode_growth"]:
            firsts = [g["first_spike_step"] for g in grads if g["first_spike_step"] >= 0]
            firsts += [g["first_nonfinite_step"] for g in grads if g["first_nonfinite_step"] >= 0]
            layers = [n for g in grads for n in g["spiking_layers"]]
            if ratio > th["explode_layer_ratio"]:
                layers += [n for g in grads for n, r in g["layer_ratios"].items()
                           if r > th["explode_layer_ratio"]]
            reasons = []
            if nonfinite:
                reasons.append(f"{nonfinite} steps with NaN/Inf gradients")
            if spikes >= th["explode_spikes"]:
                reasons.append(f"{spikes:g} spikes per seed above {th['explode_factor']:g}x the "
                               "running median")
            if ratio > th["explode_layer_ratio"]:
                reasons.append(f"a layer's gradients {ratio:.3g}x the output layer's")
            if growth > th["explode_growth"]:
                reasons.append(f"the gradient norm grew to {growth:.3g}x its starting value")
            self.add("exploding_gradients", "exploding gradients",
                     "error" if severe else "warning",
                     {"spikes_per_seed": spikes,
                      "seeds_with_spikes": sum(g["spikes"] > 0 for g in grads),
                      "max_spike_ratio": _median(g["max_spike_ratio"] for g in grads),
                      "first_step": min(firsts) if firsts else -1,
                      "nonfinite_steps": nonfinite, "max_layer_ratio": ratio,
                      "median_grad_norm": _median(g["median_norm"] for g in grads),
                      "growth": growth},
                     ["explode_factor", "explode_spikes", "explode_layer_ratio", "explode_growth",
                      "explode_growth_error"],
                     "; ".join(reasons), layers)
        low = _median(g["min_layer_ratio"] for g in grads)
        floor = _median(g["min_layer_median"] for g in grads)
        if low < th["vanish_ratio"] or floor < th["vanish_floor"]:
            layers = [n for g in grads for n, r in g["layer_ratios"].items()
                      if r < th["vanish_ratio"]]
            layers += [n for g in grads for n, m in g["layer_medians"].items()
                       if m < th["vanish_floor"]]
            severity = "error" if low < th["vanish_ratio_error"] else "warning"
            self.add("vanishing_gradients", "vanishing gradients", severity,
                     {"min_layer_ratio": low, "min_layer_median": floor,
                      "output_layer_median": _median(
                          g["layer_medians"].get(g["output_layer"], math.nan) for g in grads)},
                     ["vanish_ratio", "vanish_ratio_error", "vanish_floor"],
                     f"the smallest layer gradient norm is {low:.3g}x the output layer's "
                     f"(median over steps and seeds)" if math.isfinite(low) else
                     f"the output layer's gradient norm is zero, so no layer can be compared "
                     f"with it; the smallest layer gradient norm is {floor:.3g} (median over "
                     "steps and seeds)", layers)

    def _activations(self) -> None:
        th = self.th
        lasts = [self._last_forward(m) for m in self.monitors]
        dead = self._worst_share(lasts, "dead_share")
        if dead is not None:
            worst, layers, medians = dead
            self.add("dead_relu", "dead ReLU units",
                     "error" if worst >= th["dead_share_error"] else "warning",
                     {"worst_layer_dead_share": worst,
                      **{f"{n}.dead_share": v for n, v in medians.items()},
                      "sample": len(self.monitors[0].sample[0])},  # type: ignore[index]
                     ["dead_share", "dead_share_error"],
                     "units never active on any validation sample at the end of the probe",
                     layers)
        sat = self._worst_share(lasts, "saturated_share")
        if sat is not None:
            worst, layers, medians = sat
            self.add("saturated_activations", "saturated sigmoid/tanh units",
                     "error" if worst >= th["saturated_share_error"] else "warning",
                     {"worst_layer_saturated_share": worst,
                      **{f"{n}.saturated_share": v for n, v in medians.items()}},
                     ["saturation_z", "saturated_share", "saturated_share_error"],
                     f"pre-activations beyond +-{th['saturation_z']:g}: their gradient is "
                     "almost zero", layers)

    def _worst_share(self, lasts: list[dict[str, Any]], key: str
                     ) -> tuple[float, list[str], dict[str, float]] | None:
        """The per-layer share `key` (dead or saturated units) against `THRESHOLDS[key]`.

        None unless the worst layer's share, median over seeds, reaches the
        threshold; else (that share, the layers at or above it on any seed, each
        layer's median share over seeds).
        """
        shares = [r.get(key) for r in lasts if r.get(key)]
        if not shares:
            return None
        limit = self.th[key]
        worst = _median(max(s.values()) for s in shares)
        if worst < limit:
            return None
        layers = [n for s in shares for n, v in s.items() if v >= limit]
        medians = {n: _median(s.get(n, math.nan) for s in shares) for n in shares[0]}
        return worst, layers, medians

    def _loss(self) -> None:
        th, losses = self.th, [lo for lo in self.losses if not lo["diverged"]]
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
            self.add("oscillating_loss", "oscillating loss", "warning",
                     {"oscillation": osc, "sampling_noise": noise, "noise_ratio": ratio,
                      "trend": trend, "turns": _median(lo["turns"] for lo in losses)}, keys,
                     f"in the later half the loss swings around its moving average by {osc:.3g} "
                     f"nats, {why}, without a downward trend")
        spikes = _median(lo["loss_spikes"] for lo in losses)
        if spikes >= th["loss_spikes"]:
            firsts = [lo["first_loss_spike_step"] for lo in losses
                      if lo["first_loss_spike_step"] >= 0]
            self.add("loss_spikes", "loss spikes", "warning",
                     {"spikes_per_seed": spikes, "first_step": min(firsts) if firsts else -1,
                      "seeds_with_spikes": sum(lo["loss_spikes"] > 0 for lo in losses)},
                     ["spike_factor", "spike_sigmas", "loss_spikes"],
                     "steps whose loss jumped above the running median by more than "
                     f"{th['spike_factor']:g}x and {th['spike_sigmas']:g} times the batch "
                     "sampling noise")
        self._rising(losses)
        progress = _median(lo["progress"] for lo in losses)
        if not progress >= th["min_progress"]:
            metrics = self._metric_change()
            initial = _median(lo["initial_val_loss"] for lo in losses)
            chance = _median(lo["chance_loss"] for lo in losses)
            side = (f"only {progress:.1%} below" if progress >= 0 else
                    f"{-progress:.1%} above" if progress > -1 else f"{1 - progress:.3g}x")
            start = (f"the chance level {chance:.3g} (the best constant prediction's; the "
                     f"untrained model starts at {initial:.3g})" if chance < initial
                     else "the untrained model's")
            self.add("stalled", "training stalled",
                     "error" if not progress > 0 else "warning",
                     {"progress": progress,
                      "train_progress": _median(lo["train_progress"] for lo in losses),
                      "initial_val_loss": initial, "chance_loss": chance,
                      "best_val_loss": _median(lo["best_val_loss"] for lo in losses), **metrics},
                     ["min_progress"],
                     f"the best validation loss is {side} {start}")

    def _rising(self, losses: list[dict[str, Any]]) -> None:
        """`loss_rising`: the validation and the smoothed training loss end far above
        their best (see the module docstring)."""
        limit = self.th["loss_rise"]
        train_rise = _median(lo["train_rise"] for lo in losses)
        val_rise = _median(lo["val_rise"] for lo in losses)
        if not (train_rise >= limit and val_rise >= limit):
            return
        final = _median(lo["final_val_loss"] for lo in losses)
        initial = _median(lo["initial_val_loss"] for lo in losses)
        best = _median(lo["best_val_loss"] for lo in losses)
        self.add("loss_rising", "loss rising after it fell",
                 "error" if final > initial else "warning",
                 {"val_rise": val_rise, "train_rise": train_rise, "best_val_loss": best,
                  "final_val_loss": final, "initial_val_loss": initial,
                  "seeds_rising": sum(lo["val_rise"] >= limit for lo in losses)},
                 ["loss_rise"],
                 f"the validation loss fell to {best:.4g} and ended at {final:.4g} "
                 f"({val_rise:.3g}x its best, the untrained model's is {initial:.4g}); the "
                 f"smoothed training loss ended {train_rise:.3g}x its best")

    def _metric_change(self) -> dict[str, float]:
        """Change of each validation metric from the first to the last evaluation."""
        out: dict[str, list[float]] = {}
        for t in self.traces:
            if len(t.val_metrics) < 2:
                continue
            for key in t.val_metrics[-1]:
                if key.startswith("val_") and key != "val_loss" and "stab_" not in key \
                        and key in t.val_metrics[0]:
                    out.setdefault(f"{key}_change", []).append(
                        t.val_metrics[-1][key] - t.val_metrics[0][key])
        return {k: _median(v) for k, v in out.items()}

    def _seeds(self) -> None:
        th = self.th
        kept = [t for t, lo in zip(self.traces, self.losses) if not lo["diverged"]]
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
                         self.plan.steps_per_epoch, self.steps)
        finals = curves[:, -1]
        agreement = _disagreement([m.predictions for m in self.monitors
                                   if m.predictions is not None],
                                  self.monitors[0].sample)
        if spread > th["seed_spread"] and lag > th["seed_lag"]:
            severity = "error" if spread > th["seed_spread_error"] else "warning"
            self.add("seed_variance", "run-to-run variance", severity,
                     {"loss_spread": spread, "lag_share": lag,
                      "final_loss_spread": float(per_eval[-1]),
                      "min_final_val_loss": float(finals.min()),
                      "max_final_val_loss": float(finals.max()), "evaluations": n, **agreement},
                     ["seed_spread", "seed_spread_error", "seed_lag"],
                     f"the validation loss differs across {len(kept)} seeds by {spread:.3g} nats "
                     "(std of its log, median over the later half of the evaluations), more "
                     "than seeds that are merely ahead or behind on the same descent would")

    def _batchnorm(self) -> None:
        th, monitors = self.th, self.monitors
        if not monitors[0].has_bn:
            return
        momentum = monitors[0].bn_momentum or 0.99
        init_weight = momentum ** self.steps
        short = init_weight > th["bn_init_weight"]
        lasts = [self._last_forward(m) for m in monitors]
        gaps = [r["bn_gap"] for r in lasts if r.get("bn_gap")]
        gap = _median(g["gap"] for g in gaps)
        gap_evidence = {"gap": gap,
                        "train_mode_loss": _median(g["train_mode_loss"] for g in gaps),
                        "inference_mode_loss": _median(g["inference_mode_loss"] for g in gaps)} \
            if gaps else {}
        settle = {"momentum": momentum, "initial_weight_left": init_weight}
        if self.batch < th["bn_min_batch"]:
            confirmed = abs(gap) > th["bn_gap"]
            self.add("bn_small_batch", "batch too small for BatchNormalization",
                     "error" if confirmed else "warning",
                     {"batch_size": self.batch, **gap_evidence}, ["bn_min_batch", "bn_gap"],
                     f"batch statistics from {self.batch} samples are noisy and biased "
                     f"(expected variance {(self.batch - 1) / self.batch:.2g} of the true one)"
                     + ("; the train/inference gap confirms it" if confirmed else ""))
        if abs(gap) > th["bn_gap"]:
            cause = ("the moving statistics do not describe the data" if gap > 0 else
                     "batch statistics of this batch size are too noisy")
            self.add("bn_mode_gap", "training-mode and inference-mode losses differ",
                     "info" if short and self.batch >= th["bn_min_batch"] else "warning",
                     {**gap_evidence, "batch_size": self.batch, **settle},
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
                         for t in self.traces if len(t.bn_stats) >= 2
                         and t.bn_stats[-1].get("moving_var", 0) > 0
                         and t.bn_stats[-2].get("moving_var", 0) > 0]
                self.add("bn_unsettled", "BatchNormalization moving statistics have not settled",
                         "info" if short else "warning",
                         {"max_mean_shift": shift, "max_var_log_ratio": ratio,
                          "last_moving_var_change": _median(drift), **settle},
                         ["bn_shift", "bn_var_ratio", "bn_init_weight"],
                         "the moving mean/variance are far from the statistics of the layer "
                         "inputs on the validation sample" + (
                             f" (expected: after {self.steps} steps at momentum {momentum:g} they "
                             f"still carry {init_weight:.0%} of their initial values)"
                             if short else ""), layers)

    def _learning_rate(self) -> None:
        lr, user = self.lr, self.user_lr
        if lr is None or user is None:
            return
        evidence = {"learning_rate": user, "max_stable_lr": lr.max_stable_lr,
                    "suggested_lr": lr.suggested_lr,
                    "blowup_lr": lr.blowup_lr if lr.blowup_lr is not None else math.nan,
                    "ratio": user / lr.max_stable_lr}
        above_blowup = lr.blowup_lr is not None and user >= lr.blowup_lr
        if above_blowup or (lr.reliable and user > self.th["lr_margin"] * lr.max_stable_lr):
            self.add("lr_too_high", "learning rate above what the LR range test finds stable",
                     "error" if above_blowup else "warning", evidence, ["lr_margin"],
                     f"learning rate {user:.3g} vs max stable {lr.max_stable_lr:.3g}"
                     + (f" (the loss blew up from {lr.blowup_lr:.3g})" if above_blowup else ""))

    def _not_checked(self) -> None:
        reasons = {k: v for m in self.monitors[:1] for k, v in m.not_checked.items()}
        for key, reason in reasons.items():
            self.add("not_checked", f"{key.replace('_', ' ')} not checked", "info", {}, [],
                     reason)


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


def _sampling_noise(monitor: _SeedMonitor, batch: int) -> float:
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


def _finite_max(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if len(finite) else math.nan


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

"""The diagnosis's checks, their thresholds, and the dimensions that address each finding.

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
- ``large_init`` also for a recurrent cell whose square recurrent kernel (SimpleRNN-type
  cells; gated cells' kernels hold one block per gate and are left out) has a spectral
  radius, measured on the drawn kernel, above ``recurrent_radius`` (1.25): the state is
  multiplied by it once per time step, so a linear or ReLU recurrence grows by about
  radius ** T over T steps (1.25 ** 30, about 800x, at 30 steps; Keras' default,
  orthogonal with gain 1, has radius 1). Warning.
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
import math
from typing import Any

from stabilizer.config import StabilityConfig
from stabilizer.errors import ConfigError

__all__ = [
    "CLIPPING_CODES",
    "CLIP_REPAIR",
    "INIT_CODES",
    "INIT_REPAIR",
    "INIT_REPAIR_CODES",
    "SEVERITIES",
    "THRESHOLDS",
    "dimensions_for",
    "resolve_thresholds",
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
    "recurrent_radius": 1.25,
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


def dimensions_for(code: str) -> tuple[str, ...]:
    """The `StabilityConfig` fields that address finding `code`."""
    return _dims(code)


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

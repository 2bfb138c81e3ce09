"""The learning-rate range test: the largest learning rate before the loss blows up.

One short training whose learning rate grows exponentially from `min_lr` to
`max_lr` over `steps` optimizer steps (Smith, "Cyclical Learning Rates", 2017;
the fastai "LR finder"). The ramp is a `keras.optimizers.schedules`
`LearningRateSchedule` written with `keras.ops` only, installed in place of the
user's learning rate, and the training is an ordinary probe (`run_probe`), so the
per-step loss comes from the same on-device telemetry as every other probe and the
test runs under every Keras backend. The probe stops by itself once the loss
exceeds `blowup_factor` times its first value.

Reading the curve (log loss, smoothed by a centred running median over
``max(3, steps // 20)`` steps, odd):

- ``blowup_lr``: the learning rate of the first step whose smoothed loss exceeds
  `blowup_factor` (default 4) times the lowest smoothed loss so far, or whose loss
  is NaN/Inf. None when the loss never blew up below `max_lr`.
- ``max_stable_lr``: the learning rate at the lowest smoothed loss before the
  blow-up: the largest learning rate at which the loss was still going down.
  Above it the loss rises; this is the upper bound the search uses.
- ``suggested_lr``: ``max_stable_lr / 10``, the usual rule of thumb for a constant
  learning rate with headroom.
- ``reliable``: the smoothed loss fell by at least 10% somewhere before the
  blow-up. When it did not (the model does not learn at any rate tried, or the
  range starts too high) ``max_stable_lr`` still marks the lowest loss, but only
  ``blowup_lr`` should be trusted.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.apply import (
    CompileSpec,
    call_build_fn,
    effective_learning_rate,
    replay_hyperparameters,
    resolve_build_fn,
)
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData, prepare_data
from stabilizer.errors import ConfigError
from stabilizer.probe import ProbePlan, run_probe
from stabilizer.scoring import jsonable

__all__ = ["ExponentialRamp", "LRRangeResult", "analyse_lr_curve", "lr_range_test"]



@keras.saving.register_keras_serializable(package="stabilizer")
class ExponentialRamp(keras.optimizers.schedules.LearningRateSchedule):
    """``min_lr * (max_lr / min_lr) ** (step / (steps - 1))`` (keras.ops only)."""

    def __init__(self, min_lr: float, max_lr: float, steps: int) -> None:
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.steps = int(steps)

    def __call__(self, step: Any) -> Any:
        rate = math.log(self.max_lr / self.min_lr) / max(1, self.steps - 1)
        t = ops.minimum(ops.cast(step, "float32"), float(self.steps - 1))
        return self.min_lr * ops.exp(t * rate)

    def get_config(self) -> dict[str, Any]:
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps}

    def values(self, n: int | None = None) -> np.ndarray:
        """The learning rate at steps 0 .. n-1 (numpy, for reading the curve)."""
        n = self.steps if n is None else n
        rate = math.log(self.max_lr / self.min_lr) / max(1, self.steps - 1)
        return self.min_lr * np.exp(np.minimum(np.arange(n), self.steps - 1) * rate)


@dataclasses.dataclass
class LRRangeResult:
    """The LR/loss curve of a range test and what it says (see the module docstring)."""

    learning_rates: np.ndarray  # (steps_done,) the learning rate of each step
    losses: np.ndarray  # (steps_done,) the training loss of each step
    smoothed: np.ndarray  # (steps_done,) smoothed loss (NaN after the first non-finite one)
    min_lr: float
    max_lr: float
    steps: int
    max_stable_lr: float
    suggested_lr: float
    blowup_lr: float | None
    min_loss: float
    reliable: bool
    user_lr: float | None = None  # the learning rate the user's configuration trains at
    seconds: float = 0.0
    blowup_factor: float = 4.0

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    def bounds(self, span: float = 30.0) -> tuple[float, float]:
        """A log-uniform search range ending at `max_stable_lr`, `span` times wide."""
        high = self.max_stable_lr
        return high / span, high

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("learning_rates", "losses", "smoothed"):
            out[key] = [_num(v) for v in np.asarray(out[key], dtype=np.float64)]
        out["steps_done"] = self.steps_done
        return jsonable(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRRangeResult:
        """The inverse of `to_dict` (None, a non-finite number there, reads as NaN)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("learning_rates", "losses", "smoothed"):
            values[key] = np.asarray([np.nan if v is None else v for v in values.get(key) or []],
                                     dtype=np.float64)
        if values.get("min_loss") is None:
            values["min_loss"] = float("nan")
        return cls(**values)

    def to_text(self) -> str:
        blow = f"{self.blowup_lr:.3g}" if self.blowup_lr is not None \
            else f"none up to {self.max_lr:g}"
        lines = [f"LR range test: {self.steps_done}/{self.steps} steps, LR {self.min_lr:g} -> "
                 f"{self.max_lr:g} ({self.seconds:.1f} s)",
                 f"  max stable LR {self.max_stable_lr:.3g} (lowest smoothed loss "
                 f"{self.min_loss:.4g}), suggested LR {self.suggested_lr:.3g}, blow-up at {blow}"]
        if self.user_lr is not None:
            lines.append(f"  your LR {self.user_lr:.3g}"
                         f" = {self.user_lr / self.max_stable_lr:.3g} x max stable")
        if not self.reliable:
            lines.append("  unreliable: the loss never fell by 10% within the range; only the "
                         "blow-up point is meaningful")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running median (the window shrinks at the ends)."""
    half = window // 2
    out = np.empty(len(values))
    for i in range(len(values)):
        out[i] = np.median(values[max(0, i - half):i + half + 1])
    return out


def analyse_lr_curve(learning_rates: np.ndarray, losses: np.ndarray, *,
                     blowup_factor: float = 4.0, stopped: bool = False,
                     min_lr: float | None = None, max_lr: float | None = None,
                     steps: int | None = None) -> LRRangeResult:
    """Read a range test's LR/loss curve (see the module docstring).

    `stopped` says the training was ended by divergence: the last step then counts
    as the blow-up if the curve shows none earlier.
    """
    lrs = np.asarray(learning_rates, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    n = len(loss)
    if n == 0:
        raise ConfigError("LR range test: no training step was recorded; expected steps >= 2")
    finite = np.isfinite(loss) & (loss > 0)
    first_bad = int(np.argmin(finite)) if not finite.all() else n
    smoothed = np.full(n, np.nan)
    window = max(3, (steps or n) // 20) | 1
    if first_bad > 0:
        smoothed[:first_bad] = np.exp(_running_median(np.log(loss[:first_bad]), window))
    blow: int | None = first_bad if first_bad < n else None
    running_min = np.inf
    for i in range(first_bad):
        running_min = min(running_min, smoothed[i])
        if smoothed[i] > blowup_factor * running_min:
            blow = i
            break
    if blow is None and stopped:
        blow = n - 1
    end = blow if blow is not None else n
    end = max(end, 1)
    head = smoothed[:end]
    if np.isfinite(head).any():
        best = int(np.nanargmin(head))
        min_loss = float(head[best])
        reliable = bool(min_loss < 0.9 * smoothed[0])
    else:  # the very first step was already non-finite
        best, min_loss, reliable = 0, float("nan"), False
    max_stable = float(lrs[best])
    return LRRangeResult(
        learning_rates=lrs, losses=loss, smoothed=smoothed,
        min_lr=float(min_lr if min_lr is not None else lrs[0]),
        max_lr=float(max_lr if max_lr is not None else lrs[-1]),
        steps=int(steps or n), max_stable_lr=max_stable, suggested_lr=max_stable / 10,
        blowup_lr=float(lrs[blow]) if blow is not None else None, min_loss=min_loss,
        reliable=reliable, blowup_factor=blowup_factor)


def _with_ramp(build_fn: Callable[..., Any], ramp: ExponentialRamp,
               settings: SearchConfig) -> Callable[..., Any]:
    """`build_fn` whose model is (re)compiled with the ramp as its learning rate.

    The user's optimizer class, its other arguments (clipping included), loss and
    metrics are kept; an uncompiled model gets `settings.loss` / `settings.optimizer`,
    as in every probe.
    """

    def build(*args: Any) -> keras.Model:
        model = call_build_fn(build_fn, args[0] if args else None)
        spec = CompileSpec.from_model(model, settings)
        config = spec.optimizer.get_config()
        config["learning_rate"] = ramp
        optimizer = type(spec.optimizer).from_config(config)
        model.compile(optimizer=optimizer, loss=spec.loss, metrics=spec.metrics,
                      loss_weights=spec.loss_weights, weighted_metrics=spec.weighted_metrics)
        return model

    return build


def settings_with(config: SearchConfig | None, options: dict[str, Any],
                  caller: str) -> SearchConfig:
    """`config` (or the defaults) with keyword overrides; unknown names are errors."""
    return SearchConfig.with_overrides(config, options, caller)


def lr_range_test(build_fn: Callable[..., Any], data: Any, *, min_lr: float = 1e-6,
                  max_lr: float = 10.0, steps: int = 100, config: SearchConfig | None = None,
                  candidate: StabilityConfig | None = None, seed: int | None = None,
                  blowup_factor: float = 4.0, hp_values: dict[str, Any] | None = None,
                  **options: Any) -> LRRangeResult:
    """Train once with an exponentially increasing learning rate and read the curve.

    Args:
        build_fn: as for `stabilize()`: `build_fn()` or `build_fn(hp)` returning a
            Keras model (compiled, or pass `loss=`), or a KerasTuner `HyperModel`.
        data: anything `stabilize()` accepts, or a prepared `ProbeData`.
        min_lr, max_lr: the ends of the ramp (0 < min_lr < max_lr <= 100).
        steps: optimizer steps of the ramp.
        config: search settings (batch size, divergence checks, loss for an
            uncompiled model); keyword `options` override its fields.
        candidate: test under a configuration's initializer, clipping and
            BatchNormalization settings (its learning rate and schedule are replaced
            by the ramp); default the user's own.
        seed: the seed of the run (default the settings' first probe seed).
        blowup_factor: the smoothed loss rising this many times above its lowest
            value marks the blow-up.
        hp_values: for a KerasTuner-style `build_fn(hp)`, the values of its
            hyperparameters (defaults otherwise).

    Returns:
        An `LRRangeResult` with the curve, `max_stable_lr`, `suggested_lr` and
        `blowup_lr`.
    """
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 0 < value <= 100:
            raise ConfigError(f"{name}={value!r}: expected a number > 0 and <= 100")
    if min_lr >= max_lr:
        raise ConfigError(f"min_lr={min_lr:g} >= max_lr={max_lr:g}: expected min_lr < max_lr")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 5:
        raise ConfigError(f"steps={steps!r}: expected an integer >= 5")
    if isinstance(blowup_factor, bool) or not isinstance(blowup_factor, (int, float)) \
            or not blowup_factor > 1:
        raise ConfigError(f"blowup_factor={blowup_factor!r}: expected a number > 1")
    settings = settings_with(config, options, "lr_range_test")
    settings = SearchConfig.from_dict({**settings.to_dict(), "probe_steps": steps,
                                       "evaluations": 1, "divergence_factor": blowup_factor})
    probe_data = data if isinstance(data, ProbeData) else prepare_data(
        data, validation_split=settings.validation_split, seed=settings.seed)
    fn, uses_hp = resolve_build_fn(build_fn)
    hp = replay_hyperparameters(hp_values or {}) if uses_hp else None
    base = candidate or StabilityConfig()
    user_lr = configured_learning_rate(fn, hp, base, settings)
    ramp = ExponentialRamp(min_lr, max_lr, steps)
    run_config = dataclasses.replace(base, learning_rate=None, lr_schedule="keep",
                                     decay_rate=None, warmup_fraction=None)
    start = time.perf_counter()
    trace = run_probe(_with_ramp(fn, ramp, settings), probe_data, run_config, settings,
                      settings.seed * 1000 if seed is None else seed, hp=hp,
                      plan=ProbePlan(steps, 1))
    result = analyse_lr_curve(ramp.values(len(trace.loss)), trace.loss,
                              blowup_factor=blowup_factor, stopped=trace.diverged,
                              min_lr=min_lr, max_lr=max_lr, steps=steps)
    result.user_lr = user_lr
    result.seconds = time.perf_counter() - start
    return result


def configured_learning_rate(fn: Callable[..., Any], hp: Any, config: StabilityConfig,
                             settings: SearchConfig) -> float | None:
    """The starting learning rate the configuration trains at (None if unreadable)."""
    if config.learning_rate is not None:
        return config.learning_rate
    try:
        spec = CompileSpec.from_model(call_build_fn(fn, hp), settings)
        return float(effective_learning_rate(spec, config))
    except Exception:  # an exotic optimizer or schedule: the test still stands
        return None

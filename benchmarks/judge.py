"""The independent judge: full-length trainings on fresh seeds, scored without the stabilizer.

The judge never reads the stability score or any of its components. It trains a
configuration the way a user would after the search (the model from `build_fn`
with the configuration applied, compiled with the optimizer, schedule and
clipping it names, fitted with `model.fit`) for several times the probe length on
`JUDGE_SEEDS`, fresh seeds that no search uses (probe seeds are 0, 1, ... and
1000, 1001, ...), and measures the loss on held-out data that no search sees.

Per seed it records the untrained model's held-out loss, the held-out loss after
every epoch, and whether the run diverged. A run **diverged** when a training or
held-out loss is NaN/Inf, or a held-out loss exceeds `DIVERGENCE_FACTOR` (10) times
the untrained model's held-out loss; training stops there and its final loss
counts as +inf.

Thresholds, fixed before any benchmark result was looked at (not to be tuned
afterwards; change them only with a written reason and a re-run of everything):

- ``DIVERGENCE_FACTOR = 10``: see above.
- ``REPAIR_IMPROVEMENT = 0.10`` (X): a repair's mean final held-out loss is at least
  10% lower than the baseline's. The baseline's mean counts a diverged seed as +inf,
  so against a baseline that diverges on any seed every non-diverged configuration
  meets this part (it must still learn, below).
- ``SPREAD_LIMIT = 0.15`` (Y): seed spread is the standard deviation over seeds of
  log(final held-out loss) (+inf when a seed diverged). A repair's spread is at most
  0.15, or no larger than the baseline's when no baseline seed diverged.
- ``LEARNING_FRACTION = 0.10``: a configuration *learns* when its mean final
  held-out loss is at least 10% below the mean held-out loss of its untrained
  models. Not learning is never a repair and never healthy.
- ``HEALTHY_TOLERANCE = 0.05``: on a healthy scenario a method keeps the model
  healthy when it does not diverge and its mean final held-out loss is at most 5%
  above the baseline's.

A configuration is **healthy** on its own when no seed diverged, it learns, and its
spread is at most `SPREAD_LIMIT`. A configuration **repairs** an unstable baseline
when no seed diverged, it learns, it is `REPAIR_IMPROVEMENT` better than the
baseline and its spread is within `SPREAD_LIMIT` (or the baseline's).

The judge also reports the **largest loss spike after the first epoch**: over the
epochs from the second on, the largest ratio of an epoch's held-out loss to the
lowest held-out loss of the epochs before it (1.0 = the loss never rose; reported
over non-diverged seeds). It is shown, not used in the verdicts.

Speed: the model of the first seed is compiled once; for every further seed the
model is rebuilt from its seed (the same initial weights a fresh build gives) and
its weights and the optimizer's initial state are copied into the compiled model,
so the training graph is traced once per configuration, not once per seed. Steps
are run `steps_per_execution` at a time (the same arithmetic, fewer Python calls).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from stabilizer.apply import build_configured_model, resolve_build_fn
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData

__all__ = [
    "DIVERGENCE_FACTOR",
    "HEALTHY_TOLERANCE",
    "JUDGE_SEEDS",
    "LEARNING_FRACTION",
    "REPAIR_IMPROVEMENT",
    "SPREAD_LIMIT",
    "Judgement",
    "SeedRun",
    "TrainingSetup",
    "Verdict",
    "config_setup",
    "judge",
    "result_setup",
    "train_seeds",
    "verdict",
]

DIVERGENCE_FACTOR = 10.0
REPAIR_IMPROVEMENT = 0.10
SPREAD_LIMIT = 0.15
LEARNING_FRACTION = 0.10
HEALTHY_TOLERANCE = 0.05
JUDGE_SEEDS = (7001, 7002, 7003, 7004, 7005)


@dataclasses.dataclass
class TrainingSetup:
    """A compiled model ready for `fit`, its batch size and the callbacks it trains with."""

    model: keras.Model
    batch_size: int
    callbacks: list[keras.callbacks.Callback] = dataclasses.field(default_factory=list)


#: seed -> a freshly built, compiled model for that seed (weights drawn after seeding).
SetupFactory = Callable[[int], TrainingSetup]


def config_setup(build_fn: Callable[..., Any], config: StabilityConfig, settings: SearchConfig,
                 total_steps: int, targets: Any = None) -> SetupFactory:
    """A factory training `build_fn`'s model under `config` for `total_steps` steps.

    `stabilizer.apply.build_configured_model`, the path the probes and
    `StabilityResult.build_model` and `fit_kwargs` take: the
    configuration applied to the user's model, the user's optimizer class with the
    configuration's learning rate, schedule (spanning `total_steps`) and clipping,
    and ReduceLROnPlateau for the plateau schedule. `targets` (the training labels)
    set the output bias of `output_bias="chance"`.
    """
    fn, uses_hp = resolve_build_fn(build_fn)
    if uses_hp:
        raise ValueError("config_setup: the zoo's build_fn take no hp argument")

    def factory(seed: int) -> TrainingSetup:
        keras.utils.set_random_seed(seed)
        configured = build_configured_model(fn, config, settings, total_steps, targets=targets)
        return TrainingSetup(configured.model, config.batch_size or settings.batch_size,
                             configured.callbacks)

    return factory


def result_setup(result: Any, total_steps: int) -> SetupFactory:
    """A factory using the public API: `result.build_model()` and `result.fit_kwargs()`."""

    def factory(seed: int) -> TrainingSetup:
        model = result.build_model(train_steps=total_steps, seed=seed)
        kwargs = result.fit_kwargs()
        return TrainingSetup(model, int(kwargs["batch_size"]), list(kwargs["callbacks"]))

    return factory


@dataclasses.dataclass
class SeedRun:
    """One training run of the judge (or of a plain probe)."""

    seed: int
    initial_loss: float  # held-out loss of the untrained model
    val_losses: list[float]  # held-out loss after each epoch
    diverged: bool
    steps: int  # optimizer steps actually run
    seconds: float

    @property
    def final_loss(self) -> float:
        if self.diverged or not self.val_losses or not math.isfinite(self.val_losses[-1]):
            return math.inf
        return float(self.val_losses[-1])

    @property
    def largest_spike(self) -> float:
        """max over epochs e >= 2 of loss[e] / min(loss[:e]); 1.0 with fewer epochs."""
        losses = self.val_losses
        ratios = [losses[e] / min(losses[:e]) for e in range(1, len(losses))
                  if min(losses[:e]) > 0]
        return max([1.0, *ratios])

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "initial_loss": _finite(self.initial_loss),
                "val_losses": [_finite(v) for v in self.val_losses], "diverged": self.diverged,
                "final_loss": _finite(self.final_loss), "largest_spike": _finite(
                    self.largest_spike), "steps": self.steps, "seconds": round(self.seconds, 3)}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class _DivergenceStop(keras.callbacks.Callback):
    """Stops at a non-finite loss or a held-out loss above `factor` x the untrained one."""

    def __init__(self, initial: float, factor: float) -> None:
        super().__init__()
        self.limit = factor * abs(initial) if math.isfinite(initial) else math.inf
        self.diverged = not math.isfinite(initial)
        self.steps = 0
        self.val_losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.diverged = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        val = float(logs.get("val_loss", math.nan))
        self.val_losses.append(val)
        if not math.isfinite(val) or val > self.limit or not math.isfinite(
                float(logs.get("loss", 0.0))):
            self.diverged = True
        if self.diverged:
            self.model.stop_training = True


def train_seeds(factory: SetupFactory, data: ProbeData, seeds: Sequence[int], *, steps: int,
                epochs: int, val_data: tuple[np.ndarray, np.ndarray] | None = None,
                divergence_factor: float = DIVERGENCE_FACTOR) -> list[SeedRun]:
    """Train one configuration on each seed: `steps` steps in `epochs` epochs.

    The training stream is `data.fit_inputs(batch, steps, seed)` (arrays only);
    held-out loss is measured on `val_data` (default the data's validation split)
    before training and after each epoch. See the module docstring for the reuse
    of one compiled model across seeds.
    """
    if data.kind != "arrays":
        raise ValueError(f"train_seeds: data of kind {data.kind!r}; expected arrays")
    x_val, y_val = val_data if val_data is not None else (data.x_val, data.y_val)
    per_epoch = max(1, steps // epochs)
    keras.backend.clear_session()
    compiled: TrainingSetup | None = None
    snapshot: list[np.ndarray] = []
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        setup = factory(seed)
        if compiled is None:
            compiled = setup
            model = setup.model
            model.steps_per_execution = per_epoch
            model.optimizer.build(model.trainable_variables)
            snapshot = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        else:
            model = compiled.model
            model.set_weights(setup.model.get_weights())
            for variable, value in zip(model.optimizer.variables, snapshot):
                variable.assign(value)
        batch = setup.batch_size
        initial = float(model.evaluate(x_val, y_val, batch_size=max(batch, 32), verbose=0,
                                       return_dict=True)["loss"])
        stop = _DivergenceStop(initial, divergence_factor)
        inputs = data.fit_inputs(batch, per_epoch * epochs, seed)
        inputs["validation_data"] = (x_val, y_val)
        with np.errstate(all="ignore"):
            history = model.fit(**inputs, epochs=epochs, steps_per_epoch=per_epoch,
                                validation_batch_size=max(batch, 32),
                                callbacks=[stop, *setup.callbacks], verbose=0)
        stop.steps = len(history.history.get("loss", [])) * per_epoch
        runs.append(SeedRun(seed, initial, stop.val_losses, stop.diverged, stop.steps,
                            time.perf_counter() - start))
    return runs


@dataclasses.dataclass
class Judgement:
    """The judge's measurements of one configuration over the judge seeds."""

    runs: list[SeedRun]

    @property
    def diverged(self) -> int:
        return sum(r.diverged for r in self.runs)

    @property
    def finals(self) -> list[float]:
        return [r.final_loss for r in self.runs]

    @property
    def mean_final(self) -> float:
        """Mean final held-out loss, +inf when any seed diverged."""
        return float(np.mean(self.finals)) if self.finals else math.inf

    @property
    def mean_finite_final(self) -> float:
        """Mean over the seeds that did not diverge (NaN when none)."""
        finite = [v for v in self.finals if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    @property
    def spread(self) -> float:
        """Std over seeds of log(final loss); +inf when any seed diverged."""
        if self.diverged or not self.finals:
            return math.inf
        return float(np.std(np.log(np.maximum(self.finals, 1e-12))))

    @property
    def initial(self) -> float:
        return float(np.mean([r.initial_loss for r in self.runs]))

    @property
    def learns(self) -> bool:
        return self.mean_final <= (1 - LEARNING_FRACTION) * self.initial

    @property
    def largest_spike(self) -> float:
        spikes = [r.largest_spike for r in self.runs if not r.diverged]
        return max(spikes) if spikes else math.nan

    @property
    def healthy(self) -> bool:
        return self.diverged == 0 and self.learns and self.spread <= SPREAD_LIMIT

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def reasons(self) -> list[str]:
        """Why the configuration is not healthy (empty when it is)."""
        out = []
        if self.diverged:
            out.append(f"diverged on {self.diverged} of {len(self.runs)} seeds")
        if not self.learns:
            out.append(f"does not learn (final {self.mean_final:.4g} vs untrained "
                       f"{self.initial:.4g})")
        if not self.diverged and self.spread > SPREAD_LIMIT:
            out.append(f"seed spread {self.spread:.3f} > {SPREAD_LIMIT}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"diverged": self.diverged, "mean_final": _finite(self.mean_final),
                "mean_finite_final": _finite(self.mean_finite_final),
                "spread": _finite(self.spread), "initial": _finite(self.initial),
                "learns": self.learns, "largest_spike": _finite(self.largest_spike),
                "healthy": self.healthy, "reasons": self.reasons(),
                "seconds": round(self.seconds, 2), "runs": [r.to_dict() for r in self.runs]}


def judge(factory: SetupFactory, data: ProbeData, *, steps: int, epochs: int,
          val_data: tuple[np.ndarray, np.ndarray] | None = None,
          seeds: Sequence[int] = JUDGE_SEEDS) -> Judgement:
    """Train one configuration on the judge seeds and measure it (module docstring)."""
    return Judgement(train_seeds(factory, data, seeds, steps=steps, epochs=epochs,
                                 val_data=val_data))


@dataclasses.dataclass
class Verdict:
    """A method's configuration judged against the baseline on one scenario."""

    repaired: bool  # unstable scenario: the thresholds above; healthy scenario: kept healthy
    loss_ratio: float  # mean final (non-diverged seeds) over the baseline's; NaN if undefined
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"repaired": self.repaired, "loss_ratio": _finite(self.loss_ratio),
                "reasons": self.reasons}


def verdict(candidate: Judgement, baseline: Judgement, *, healthy_scenario: bool) -> Verdict:
    """Does `candidate` repair the baseline (or, on a healthy scenario, keep it healthy)?"""
    base, cand = baseline.mean_finite_final, candidate.mean_finite_final
    ratio = cand / base if math.isfinite(base) and math.isfinite(cand) and base > 0 else math.nan
    reasons: list[str] = []
    if candidate.diverged:
        reasons.append(f"diverged on {candidate.diverged} of {len(candidate.runs)} seeds")
    if healthy_scenario:
        if not candidate.diverged and candidate.mean_final > (1 + HEALTHY_TOLERANCE) * \
                baseline.mean_final:
            reasons.append(f"final loss {candidate.mean_final:.4g} more than "
                           f"{HEALTHY_TOLERANCE:.0%} above the baseline's "
                           f"{baseline.mean_final:.4g}")
        return Verdict(not reasons, ratio, reasons)
    if not candidate.diverged:
        if not candidate.learns:
            reasons.append(f"does not learn (final {candidate.mean_final:.4g} vs untrained "
                           f"{candidate.initial:.4g})")
        if candidate.mean_final > (1 - REPAIR_IMPROVEMENT) * baseline.mean_final:
            reasons.append(f"final loss {candidate.mean_final:.4g} not "
                           f"{REPAIR_IMPROVEMENT:.0%} below the baseline's "
                           f"{baseline.mean_final:.4g}")
        limit = max(SPREAD_LIMIT, baseline.spread) if math.isfinite(baseline.spread) \
            else SPREAD_LIMIT
        if candidate.spread > limit:
            reasons.append(f"seed spread {candidate.spread:.3f} above {limit:.3f} ("
                           f"{SPREAD_LIMIT}, or the baseline's when it did not diverge)")
    return Verdict(not reasons, ratio, reasons)

"""How long a probe trains, on which seeds, at which batch size; what out-of-memory looks like."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from stabilizer.config import DEFAULT_TRAIN_STEPS, SearchConfig, StabilityConfig
from stabilizer.data import ProbeData
from stabilizer.errors import ConfigError
from stabilizer.keras_internals import flat_layers

__all__ = ["RUNG_FACTOR", "EvaluationHook", "Horizon", "ProbePlan", "batch_size_of",
           "is_out_of_memory", "prebuild_optimizer", "probe_seeds"]

#: Called after each evaluation with (evaluation index, the seed's telemetry: its `model`,
#: `val_loss`, `learning_rate` and `diverged`); True stops the probe.
EvaluationHook = Callable[[int, Any], bool]


@dataclasses.dataclass(frozen=True)
class ProbePlan:
    """How long a probe trains: `epochs` evaluations of `steps_per_epoch` steps."""

    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @classmethod
    def from_settings(cls, settings: SearchConfig, factor: int = 1) -> ProbePlan:
        per_epoch = max(1, settings.probe_steps // settings.evaluations)
        return cls(per_epoch, settings.evaluations * factor)


    def longer(self, steps: int) -> ProbePlan:
        """The same evaluation spacing over `steps` (a whole multiple of this plan's length)."""
        if steps % self.total_steps:
            raise ValueError(f"steps={steps}: expected a multiple of {self.total_steps}")
        return ProbePlan(self.steps_per_epoch, self.epochs * (steps // self.total_steps))


#: Each rung's probes are this many times longer than the one below, and a third of
#: the candidates (at least one) go up (successive halving with eta = 3).
RUNG_FACTOR = 3


@dataclasses.dataclass(frozen=True)
class Horizon:
    """How long the user will train, and the rungs the probes grow over towards it.

    `train_steps` is in optimizer steps at the user's batch size; `epochs` is set when the
    user gave the length in epochs (a candidate with another batch size then trains a
    different number of steps: `steps_for`). `assumed` is True when the user gave
    neither and `DEFAULT_TRAIN_STEPS` stands in. `rungs` are the probe lengths, from the
    probe's (`ProbePlan.total_steps`) up by `RUNG_FACTOR` while at most `fraction` of
    `train_steps`.
    """

    train_steps: int
    epochs: int | None
    assumed: bool
    rungs: tuple[int, ...]
    fraction: float
    steps_per_epoch: int | None = None  # at the user's batch size, when known
    train_size: int | None = None  # training rows (arrays), to count epochs at other batches

    @classmethod
    def resolve(cls, settings: SearchConfig, data: ProbeData) -> Horizon:
        """The horizon of `settings` on `data`; a `ConfigError` for epochs on a pipeline of
        unknown length."""
        per_epoch = data.steps_per_epoch(settings.batch_size)
        epochs = settings.epochs
        if epochs is not None:
            if per_epoch is None:
                raise ConfigError(f"epochs={epochs}: the training data's length is unknown (a "
                                  "pipeline without a known cardinality); expected train_steps="
                                  "(your training length in optimizer steps) instead")
            steps = epochs * per_epoch
        else:
            steps = settings.train_steps or DEFAULT_TRAIN_STEPS
        rungs = [ProbePlan.from_settings(settings).total_steps]
        while rungs[-1] * RUNG_FACTOR <= settings.horizon_fraction * steps:
            rungs.append(rungs[-1] * RUNG_FACTOR)
        return cls(steps, epochs, settings.train_steps is None and epochs is None,
                   tuple(rungs), settings.horizon_fraction, per_epoch, data.train_size)

    def steps_for(self, batch_size: int | None) -> int:
        """The training length in steps at `batch_size`: given in epochs over arrays, it
        scales with the batch size; otherwise it is `train_steps`."""
        if self.epochs is None or batch_size is None or self.train_size is None:
            return self.train_steps
        return self.epochs * -(-self.train_size // batch_size)

    def describe(self) -> str:
        """One line for the summary: the length, whether assumed, and the rungs."""
        length = f"{self.train_steps:,} steps" + (f" ({self.epochs} epochs)" if self.epochs else "")
        said = (f"assumed {length}: pass train_steps= or epochs= (search.train_steps, "
                "--train-steps) to say how long you train") if self.assumed \
            else f"your training, {length}"
        if len(self.rungs) == 1:
            return f"{said}; candidates compared at {self.rungs[0]} steps"
        top = self.rungs[-1]
        return (f"{said}; candidates compared at {', '.join(map(str, self.rungs))} steps "
                f"(the longest {top / self.train_steps:.0%} of it)")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rungs": list(self.rungs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Horizon:
        return cls(**{**data, "rungs": tuple(data["rungs"])})


def probe_seeds(settings: SearchConfig, count: int | None = None) -> list[int]:
    """The seeds every candidate is probed on (the same for all: fair comparison); with
    `count`, that many (the first `settings.seeds` of them are the usual ones)."""
    return [settings.seed * 1000 + i for i in range(settings.seeds if count is None else count)]


def batch_size_of(config: StabilityConfig, settings: SearchConfig, data: ProbeData) -> int:
    batch = config.batch_size or settings.batch_size
    if data.train_size is not None and batch > data.train_size:
        raise ConfigError(f"batch_size={batch}: larger than the {data.train_size} training "
                          f"samples; expected at most {data.train_size}")
    return batch


_OOM_TEXT = re.compile(r"(?i:out of memory)|\bOOM\b|RESOURCE_EXHAUSTED")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory error of any backend.

    `MemoryError`; TensorFlow's `ResourceExhaustedError`; torch's `OutOfMemoryError`;
    or any error whose message says "out of memory", "OOM" or "RESOURCE_EXHAUSTED"
    (JAX's `XlaRuntimeError`, CUDA and cuDNN messages).
    """
    if isinstance(exc, MemoryError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ResourceExhaustedError", "OutOfMemoryError"}:
        return True
    return bool(_OOM_TEXT.search(str(exc)[:4000]))


def prebuild_optimizer(model: Any) -> None:
    """Build a compiled model's optimizer before its first step, when the model is built.

    Keras otherwise creates the optimizer's slots inside the first traced step, and a
    variable created while TensorFlow traces makes it trace the step a second time (half
    a small probe's tracing). A model whose layers are not all built yet (a subclassed
    model before its first call) keeps the lazy build: its variables do not exist yet.
    """
    if all(layer.built for layer in flat_layers(model)) and model.trainable_variables:
        model.optimizer.build(model.trainable_variables)

"""How long a probe trains, on which seeds, at which batch size; what out-of-memory looks like."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData
from stabilizer.errors import ConfigError
from stabilizer.keras_internals import flat_layers

__all__ = ["EvaluationHook", "ProbePlan", "batch_size_of", "is_out_of_memory",
           "prebuild_optimizer", "probe_seeds"]

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


def probe_seeds(settings: SearchConfig) -> list[int]:
    """The seeds every candidate is probed on (the same for all: fair comparison)."""
    return [settings.seed * 1000 + i for i in range(settings.seeds)]


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

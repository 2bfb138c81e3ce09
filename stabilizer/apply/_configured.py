"""The one way a configuration becomes a trainable model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from stabilizer.apply._build import AppliedModel, call_build_fn
from stabilizer.apply._model import apply_config
from stabilizer.apply._optimizer import compile_model, effective_learning_rate, make_optimizer
from stabilizer.apply._schedule import plateau_callback
from stabilizer.config import SearchConfig, StabilityConfig

__all__ = ["ConfiguredModel", "build_configured_model"]


@dataclasses.dataclass
class ConfiguredModel:
    """The user's model with a configuration applied and compiled, and the callbacks the
    configuration trains with (ReduceLROnPlateau for the plateau schedule)."""

    model: keras.Model
    applied: AppliedModel
    callbacks: list[keras.callbacks.Callback]


def build_configured_model(build_fn: Callable[..., Any], config: StabilityConfig,
                           settings: SearchConfig, total_steps: int, *, hp: Any = None,
                           targets: Any = None,
                           optimizer_class: Callable[[type], type] | None = None,
                           before_compile: Callable[[AppliedModel, Any], None] | None = None,
                           ) -> ConfiguredModel:
    """The one way a configuration becomes a trainable model: the probe, the result's
    `build_model` and the benchmark's judge all build through it.

    `build_fn(hp)` (or `build_fn()`) is called, `config` applied (`apply_config`; `targets`
    for `output_bias="chance"`), an optimizer of the user's class made with the config's
    learning rate, schedule spanning `total_steps`, and clipping (`optimizer_class` maps
    the user's class to the one to use, e.g. the probe's instrumented subclass),
    `before_compile(applied, optimizer)` called, and the model compiled with the user's
    loss and metrics. Seed first (`keras.utils.set_random_seed`) for a given draw.
    """
    applied = apply_config(call_build_fn(build_fn, hp), config, settings, targets)
    user_class = type(applied.compile_spec.optimizer)
    optimizer = make_optimizer(applied.compile_spec, config, total_steps,
                               optimizer_class(user_class) if optimizer_class else None)
    if before_compile is not None:
        before_compile(applied, optimizer)
    model = compile_model(applied, optimizer)
    plateau = plateau_callback(config, effective_learning_rate(applied.compile_spec, config))
    return ConfiguredModel(model, applied, [plateau] if plateau is not None else [])

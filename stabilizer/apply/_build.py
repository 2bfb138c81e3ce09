"""Calling the user's `build_fn`, and keeping its compile arguments for every candidate."""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from typing import Any

import keras

from stabilizer.config import SearchConfig
from stabilizer.errors import (
    ConfigError,
    ModelError,
    ProbeFailedError,
    StabilizerError,
    clean_message,
)

__all__ = [
    "AppliedModel",
    "CompileSpec",
    "call_build_fn",
    "replay_hyperparameters",
    "resolve_build_fn",
]


@dataclasses.dataclass
class CompileSpec:
    """The user's compile arguments, kept for every candidate."""

    optimizer: keras.optimizers.Optimizer
    loss: Any
    metrics: Any = None
    loss_weights: Any = None
    weighted_metrics: Any = None

    @classmethod
    def from_model(cls, model: keras.Model, settings: SearchConfig) -> CompileSpec:
        compiled = getattr(model, "compiled", False) and getattr(model, "optimizer", None)
        if compiled and getattr(model, "loss", None) is not None:
            config = dict(getattr(model, "_compile_config").config)
            return cls(config["optimizer"], config["loss"], config.get("metrics"),
                       config.get("loss_weights"), config.get("weighted_metrics"))
        if settings.loss is None:
            raise ModelError("build_fn returned an uncompiled model and no loss was given; "
                             "compile the model in build_fn or pass loss='...' (a Keras loss name)")
        try:
            optimizer = keras.optimizers.get(settings.optimizer)
        except ValueError:
            raise ConfigError(f"optimizer={settings.optimizer!r}: expected a Keras optimizer "
                              "name such as 'adam' or 'sgd'") from None
        return cls(optimizer, settings.loss, list(settings.metrics) or None)


@dataclasses.dataclass
class AppliedModel:
    """A model with a configuration applied, and the record of what changed."""

    model: keras.Model
    compile_spec: CompileSpec
    cloned: bool
    changes: list[str] = dataclasses.field(default_factory=list)
    not_applied: list[str] = dataclasses.field(default_factory=list)


def resolve_build_fn(build_fn: Any) -> tuple[Callable[..., Any], bool]:
    """(the callable to call, whether it takes a KerasTuner `hp` argument).

    A KerasTuner `HyperModel` becomes its `build` method. A function with a
    required positional parameter is taken to be `build_fn(hp)`.
    """
    import inspect

    if not callable(build_fn) and not hasattr(build_fn, "build"):
        raise ConfigError(f"build_fn={build_fn!r}: expected a callable returning a keras.Model "
                          "or a keras_tuner.HyperModel")
    if hasattr(build_fn, "build") and not inspect.isroutine(build_fn):
        return build_fn.build, True
    try:
        params = inspect.signature(build_fn).parameters.values()
    except (TypeError, ValueError):
        return build_fn, False
    takes_hp = any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                   for p in params)
    return build_fn, takes_hp


def call_build_fn(build_fn: Callable[..., Any], hp: Any = None) -> keras.Model:
    """Call the user's factory; its exceptions become `ProbeFailedError` with the traceback."""
    try:
        model = build_fn(hp) if hp is not None else build_fn()
    except StabilizerError:
        raise  # a wrapped factory (the LR range test's) already said what failed
    except Exception as exc:
        raise ProbeFailedError(f"build_fn raised {type(exc).__name__}: {clean_message(exc)}",
                               traceback.format_exc()) from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"build_fn returned {type(model).__name__}; expected a keras.Model")
    return model


def replay_hyperparameters(values: dict[str, Any] | None) -> Any:
    """A KerasTuner `HyperParameters` that returns `values` (defaults for the rest)."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.values.update(values or {})
    return hp

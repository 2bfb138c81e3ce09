"""A candidate's optimizer and compile step: the `clipping` and `clip_value` knobs.

The user's optimizer class, loss and metrics are kept; only the learning rate, its
schedule and the clipping arguments change.
"""

from __future__ import annotations

from typing import Any

import keras

from stabilizer.apply._build import AppliedModel, CompileSpec
from stabilizer.apply._schedule import make_schedule, user_learning_rate
from stabilizer.config import StabilityConfig

__all__ = ["compile_model", "effective_learning_rate", "fresh_metrics", "make_optimizer"]


def make_optimizer(spec: CompileSpec, config: StabilityConfig, total_steps: int,
                   optimizer_class: type | None = None) -> keras.optimizers.Optimizer:
    """A new optimizer of the user's class with the config's LR, schedule and clipping.

    `optimizer_class` (a subclass of the user's class, e.g. the instrumented one)
    replaces the class when given.
    """
    user = spec.optimizer
    cls = optimizer_class or type(user)
    cfg = user.get_config()
    user_lr, user_schedule = user_learning_rate(user)
    lr = config.learning_rate if config.learning_rate is not None else user_lr
    if config.lr_schedule == "keep" and user_schedule is not None and config.learning_rate is None:
        cfg["learning_rate"] = user_schedule.__class__.from_config(user_schedule.get_config())
    else:
        cfg["learning_rate"] = make_schedule(config, lr, total_steps)
    if config.clipping != "keep":
        cfg.update(clipnorm=None, clipvalue=None, global_clipnorm=None)
        key = {"norm": "clipnorm", "value": "clipvalue", "global_norm": "global_clipnorm"}
        if config.clipping in key:
            cfg[key[config.clipping]] = config.clip_value
    return cls.from_config(cfg)


def fresh_metrics(obj: Any) -> Any:
    """A stateless copy of metric objects, so no two models share metric state."""
    if isinstance(obj, keras.metrics.Metric):
        return obj.__class__.from_config(obj.get_config())
    if isinstance(obj, (list, tuple)):
        return [fresh_metrics(o) for o in obj]
    if isinstance(obj, dict):
        return {k: fresh_metrics(v) for k, v in obj.items()}
    return obj


def compile_model(applied: AppliedModel, optimizer: keras.optimizers.Optimizer) -> keras.Model:
    """Compile with the user's loss and (fresh copies of) metrics and `optimizer`."""
    spec = applied.compile_spec
    applied.model.compile(optimizer=optimizer, loss=spec.loss, metrics=fresh_metrics(spec.metrics),
                          loss_weights=spec.loss_weights,
                          weighted_metrics=fresh_metrics(spec.weighted_metrics))
    return applied.model


def effective_learning_rate(spec: CompileSpec, config: StabilityConfig) -> float:
    return config.learning_rate if config.learning_rate is not None \
        else user_learning_rate(spec.optimizer)[0]

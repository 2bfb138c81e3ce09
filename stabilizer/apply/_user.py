"""A configuration applied to a model you built yourself, and the arguments of your `fit`.

`apply_to_model` is what `StabilityConfig.apply(model)` and `StabilityResult.apply(model)`
run: the same rebuild as every probe (`build_configured_model`), starting from your model
instead of your `build_fn`. `fit_arguments` is what their `fit_kwargs()` return.
"""

from __future__ import annotations

from typing import Any

import keras

from stabilizer.apply._configured import build_configured_model
from stabilizer.apply._schedule import DECAYING_SCHEDULES, ScheduleSpan, plateau_callback
from stabilizer.config import SearchConfig, StabilityConfig, check_number
from stabilizer.errors import ConfigError

__all__ = ["apply_to_model", "fit_arguments"]


def _length(name: str, value: Any) -> int | None:
    return None if value is None else check_number(name, value, low=1, integer=True)


def apply_to_model(model: keras.Model, config: StabilityConfig, *,
                   train_steps: int | None = None, settings: SearchConfig | None = None,
                   targets: Any = None) -> keras.Model:
    """`model` with `config` applied, compiled with your loss, metrics and optimizer class.

    Sequential and Functional models are cloned (yours is left as it is, with its weights
    kept except the kernels a new initializer redraws); a subclassed model is changed in
    place. An uncompiled model takes its loss, optimizer and metrics from `settings`.
    `train_steps` (your training length, in optimizer steps) is what a decaying schedule
    spans; it is required for one (`ScheduleSpan` in `fit_arguments` re-sizes it to the
    fit that runs). `targets` (the training labels) are needed by ``output_bias="chance"``.
    """
    if not isinstance(model, keras.Model):
        raise ConfigError(f"model={type(model).__name__}: expected a keras.Model (for a "
                          "function that builds one, use stabilize() or build_configured_model)")
    steps = _length("train_steps", train_steps)
    if steps is None:
        if config.lr_schedule in DECAYING_SCHEDULES:
            raise ConfigError(f"train_steps=None: lr_schedule={config.lr_schedule!r} decays "
                              "over your training; expected its length in optimizer steps, "
                              "e.g. apply(model, train_steps=epochs * steps_per_epoch)")
        steps = 1
    if config.output_bias == "chance" and targets is None:
        raise ConfigError("targets=None: output_bias='chance' starts the output bias at the "
                          "best constant prediction of the training labels; expected them "
                          "as an array (apply(model, targets=y_train))")
    configured = build_configured_model(lambda: model, config, settings or SearchConfig(),
                                        steps, targets=targets)
    return configured.model


def fit_arguments(config: StabilityConfig, *, batch_size: int | None = None,
                  epochs: int | None = None, steps_per_epoch: int | None = None
                  ) -> dict[str, Any]:
    """The keyword arguments of your `model.fit` for `config`.

    `batch_size` (the configuration's, else the one given; left out when neither is:
    data that batches itself), `epochs` and `steps_per_epoch` as given, and `callbacks`:
    `ScheduleSpan` for a decaying schedule (it spans the fit that runs: epochs x steps
    per epoch), ReduceLROnPlateau for the plateau schedule (down to a hundredth of the
    configuration's rate, else of the rate the fit starts with).
    """
    kwargs: dict[str, Any] = {}
    chosen = config.batch_size or batch_size
    if chosen is not None:
        kwargs["batch_size"] = chosen
    if _length("epochs", epochs) is not None:
        kwargs["epochs"] = epochs
    if _length("steps_per_epoch", steps_per_epoch) is not None:
        kwargs["steps_per_epoch"] = steps_per_epoch
    callbacks: list[keras.callbacks.Callback] = []
    if config.lr_schedule in DECAYING_SCHEDULES:
        callbacks.append(ScheduleSpan())
    plateau = plateau_callback(config, config.learning_rate)
    if plateau is not None:
        callbacks.append(plateau)
    kwargs["callbacks"] = callbacks
    return kwargs

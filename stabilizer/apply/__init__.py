"""Applying a `StabilityConfig`: one module per knob, and one way to build the result.

`build_configured_model` is the one path from a configuration to a compiled model: the
probe, `StabilityResult.build_model` and the benchmark's judge all build through it, so
what is measured is what is handed back.

- `_layers`: what the model's layers are (activations, the matched initializer);
- `_initializer`: the `initializer` knob; `_normalization`: BatchNormalization's knobs;
- `_output_bias`: the output offset; `_schedule`: learning rate and schedule;
- `_optimizer`: clipping, the optimizer and the compile step;
- `_model`: the rebuild that applies the layer knobs (`apply_config`);
- `_build`: calling the user's `build_fn`; `_configured`: `build_configured_model`;
- `_user`: a configuration applied to a model you built (`apply_to_model`) and your
  `fit` arguments (`fit_arguments`), behind `StabilityConfig.apply` and `.fit_kwargs`.
"""

from stabilizer.apply._build import (
    AppliedModel,
    CompileSpec,
    call_build_fn,
    replay_hyperparameters,
    resolve_build_fn,
)
from stabilizer.apply._configured import ConfiguredModel, build_configured_model
from stabilizer.apply._layers import (
    RECURRENT_INITIALIZER,
    activation_family,
    activation_name,
    has_batch_norm,
    is_recurrent,
    layer_activations,
    matched_initializer,
)
from stabilizer.apply._model import apply_config
from stabilizer.apply._optimizer import (
    compile_model,
    effective_learning_rate,
    fresh_metrics,
    make_optimizer,
)
from stabilizer.apply._output_bias import output_bias, output_layer
from stabilizer.apply._schedule import (
    COOLDOWN_FRACTION,
    DECAYING_SCHEDULES,
    Cooldown,
    ScheduleSpan,
    make_schedule,
    plateau_callback,
    resize_schedule,
)
from stabilizer.apply._user import apply_to_model, fit_arguments

__all__ = [
    "COOLDOWN_FRACTION",
    "DECAYING_SCHEDULES",
    "AppliedModel",
    "CompileSpec",
    "ConfiguredModel",
    "Cooldown",
    "ScheduleSpan",
    "activation_family",
    "activation_name",
    "apply_config",
    "apply_to_model",
    "build_configured_model",
    "call_build_fn",
    "compile_model",
    "effective_learning_rate",
    "fit_arguments",
    "fresh_metrics",
    "has_batch_norm",
    "is_recurrent",
    "layer_activations",
    "make_optimizer",
    "make_schedule",
    "matched_initializer",
    "RECURRENT_INITIALIZER",
    "output_bias",
    "output_layer",
    "plateau_callback",
    "replay_hyperparameters",
    "resize_schedule",
    "resolve_build_fn",
]

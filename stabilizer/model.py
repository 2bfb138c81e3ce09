"""Applying a `StabilityConfig` to the user's model, optimizer and schedule.

Initializers and BatchNormalization settings are rewritten with
`keras.models.clone_model(..., clone_function=...)` for Sequential and Functional
models; the clone takes back the user's weights except those a new initializer
redraws (`_keep_weights`). Subclassed models cannot be cloned that way; for them the documented
fallback rewrites the layers in place: unbuilt layers get the new initializer
before they build, built layers have their kernels re-drawn from it, and
BatchNormalization momentum/epsilon are set on the layer (read at trace time).
`initializer="auto"` gives recurrent layers (SimpleRNN, LSTM, GRU, ConvLSTM)
Glorot uniform input kernels whatever their activation, as Keras does by default:
their state is fed a new input every time step, so He's gain of 2, right for a
ReLU stack's depth, compounds over the time steps instead (the zoo's ReLU
SimpleRNN with identity recurrence on the 50-step adding problem: an untrained
mean squared error of 13-2480 over five seeds under He, 0.8-13 under Glorot).
`initializer="auto"` also resets a negative constant bias initializer to zeros on
ReLU-family layers: a bias of -0.5 switches most units off before the first step
(dead ReLUs), which no kernel initializer can repair.
`output_bias="chance"` sets the output layer's bias to the best constant prediction
of the training targets (`output_bias`), after the clone.
`AppliedModel.changes` lists what was changed on which layer, and a requested
change that reached no layer is listed in `AppliedModel.not_applied`: nothing
is silently skipped.

`normalization="group"` or `"layer"` replaces each BatchNormalization layer by a
GroupNormalization (groups = gcd(channels, 8), so the groups divide the channels)
or a LayerNormalization over the same axis, keeping the layer's name, epsilon,
center/scale and beta/gamma settings. Neither depends on the batch, which is what
small batches (2-16) need. This needs the clone, so for subclassed models it is
listed in `not_applied`.

The user's optimizer class, loss and metrics are kept; only the learning rate,
its schedule and the clipping arguments change.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from stabilizer.chance import constant_bias
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.errors import (
    ConfigError,
    ModelError,
    ProbeFailedError,
    StabilizerError,
    clean_message,
)

__all__ = [
    "AppliedModel",
    "COOLDOWN_FRACTION",
    "CompileSpec",
    "Cooldown",
    "activation_family",
    "activation_name",
    "apply_config",
    "build_configured_model",
    "ConfiguredModel",
    "call_build_fn",
    "has_batch_norm",
    "is_graph_model",
    "is_recurrent",
    "make_optimizer",
    "matched_initializer",
    "output_bias",
    "output_layer",
    "plateau_callback",
]

_RELU_FAMILY = {"relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "swish", "mish",
                "celu", "hard_silu", "hard_swish", "softplus", "prelu"}
_LECUN_FAMILY = {"selu"}
_PASS_THROUGH = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                 keras.layers.Dropout, keras.layers.GaussianNoise)
_ACTIVATION_LAYERS = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "PReLU": "prelu", "ELU": "elu"}


def activation_family(name: str) -> str:
    """'relu', 'selu' or 'saturating' (tanh, sigmoid, softmax, linear and the rest)."""
    if name in _RELU_FAMILY:
        return "relu"
    if name in _LECUN_FAMILY:
        return "selu"
    return "saturating"


def matched_initializer(activation: str, recurrent: bool = False) -> str:
    """He for the ReLU family, LeCun for SELU, Glorot for tanh/sigmoid/linear.

    A recurrent layer's input kernel gets Glorot uniform whatever its activation
    (see the module docstring).
    """
    if recurrent:
        return "glorot_uniform"
    family = activation_family(activation)
    return {"relu": "he_normal", "selu": "lecun_normal"}.get(family, "glorot_uniform")


def activation_name(layer: Any) -> str:
    """The lower-case name of `layer`'s activation ("linear" when it has none).

    A `keras.layers.ReLU` layer is "relu", or "leaky_relu" with a negative slope or a
    threshold.
    """
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        plain = not cfg.get("negative_slope") and not cfg.get("threshold")
        return "relu" if plain else "leaky_relu"
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    return str(getattr(act, "__name__", None) or type(act).__name__).lower()


def layer_activations(model: keras.Model) -> dict[str, str]:
    """The activation that follows each layer with a kernel, looking through BN/Dropout.

    A Dense or Conv layer with a linear activation followed (possibly after
    BatchNormalization or Dropout) by an Activation/ReLU layer takes that activation.
    """
    layers = list(_flat_layers(model))
    result: dict[str, str] = {}
    for i, layer in enumerate(layers):
        if not _has_kernel_init(layer):
            continue
        act = activation_name(layer)
        if act == "linear":
            for nxt in layers[i + 1:]:
                if isinstance(nxt, _PASS_THROUGH):
                    continue
                if isinstance(nxt, keras.layers.Activation):
                    act = activation_name(nxt)
                elif type(nxt).__name__ in _ACTIVATION_LAYERS:
                    act = _ACTIVATION_LAYERS[type(nxt).__name__]
                break
        result[layer.name] = act
    return result


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model._flatten_layers(include_self=False)]


def _has_kernel_init(layer: Any) -> bool:
    return hasattr(layer, "kernel_initializer") or hasattr(getattr(layer, "cell", None),
                                                            "kernel_initializer")


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


def is_recurrent(layer: Any) -> bool:
    """True for recurrent layers (`keras.layers.RNN` and its subclasses) and their cells.

    A cell is a layer of its own (with the kernel), found by its `state_size`,
    which the RNN cell API requires.
    """
    return isinstance(layer, keras.layers.RNN) or hasattr(layer, "state_size")


def _initializer_for(config: StabilityConfig, activation: str,
                     recurrent: bool = False) -> str | None:
    if config.initializer == "keep":
        return None
    if config.initializer == "auto":
        return matched_initializer(activation, recurrent)
    return config.initializer


def _kills_units(config: StabilityConfig, bias_init: Any, activation: str) -> bool:
    """True when `initializer="auto"` should reset this bias: a negative constant on ReLU."""
    if config.initializer != "auto" or bias_init is None or activation_family(activation) != "relu":
        return False
    try:
        init = keras.initializers.get(bias_init)
    except (ValueError, TypeError):
        return False
    value = getattr(init, "value", None) if isinstance(init, keras.initializers.Constant) else None
    return isinstance(value, (int, float)) and value < 0


def apply_config(model: keras.Model, config: StabilityConfig, settings: SearchConfig,
                 targets: Any = None) -> AppliedModel:
    """Apply initializers, BatchNormalization settings and normalization; keep compile args.

    `targets` (the training labels, an array) is what `output_bias="chance"` sets the
    output layer's bias from; without them that change is listed in `not_applied`.
    """
    spec = CompileSpec.from_model(model, settings)
    activations = layer_activations(model)
    has_bn = has_batch_norm(model)
    replace_bn = config.normalization in ("group", "layer")
    changes: list[str] = []

    redrawn: dict[str, set[str]] = {}  # layer name -> its variables drawn anew

    def rewrite(layer_config: dict[str, Any], layer: keras.layers.Layer) -> dict[str, Any]:
        init = _initializer_for(config, activations.get(layer.name, "linear"),
                                is_recurrent(layer))
        if init is not None and "kernel_initializer" in layer_config:
            layer_config["kernel_initializer"] = keras.initializers.serialize(
                keras.initializers.get(init))
            changes.append(f"{layer.name}: kernel_initializer={init}")
            redrawn.setdefault(layer.name, set()).add("kernel")
        if _kills_units(config, layer_config.get("bias_initializer"),
                        activations.get(layer.name, "linear")):
            layer_config["bias_initializer"] = "zeros"
            changes.append(f"{layer.name}: bias_initializer=zeros (was a negative constant)")
            redrawn.setdefault(layer.name, set()).add("bias")
        if isinstance(layer, keras.layers.BatchNormalization):
            for key in ("momentum", "epsilon"):
                value = getattr(config, f"bn_{key}")
                if value is not None:
                    layer_config[key] = value
                    changes.append(f"{layer.name}: {key}={value:g}")
        return layer_config

    needs_rewrite = config.initializer != "keep" or config.bn_momentum is not None \
        or config.bn_epsilon is not None or (replace_bn and has_bn)
    cloned = False
    if needs_rewrite and isinstance(model, (keras.Sequential, keras.Model)) \
            and is_graph_model(model):
        swapped_ids: set[int] = set()

        def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
            if replace_bn and isinstance(layer, keras.layers.BatchNormalization):
                swapped = _replace_batch_norm(layer, config, changes)
                if swapped is not None:
                    swapped_ids.add(id(swapped))
                    return swapped
            return layer.__class__.from_config(rewrite(layer.get_config(), layer))

        def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
            if id(layer) in swapped_ids:
                kwargs.pop("mask", None)  # BatchNormalization takes a mask; its stand-ins do not
            return layer(*args, **kwargs)

        # Sequential models take no call_function; their layers are called with inputs only.
        extra = {"call_function": call_function} \
            if replace_bn and not isinstance(model, keras.Sequential) else {}
        try:
            clone = keras.models.clone_model(model, clone_function=clone_function, **extra)
        except Exception:  # a custom layer without a usable get_config: fall back
            changes.clear()
        else:
            _keep_weights(model, clone, redrawn)
            model, cloned = clone, True
    if needs_rewrite and not cloned:
        _rewrite_in_place(model, config, activations, changes)
    replaced = any("BatchNormalization ->" in c for c in changes)
    not_applied = []
    if config.initializer != "keep" and not any("kernel_initializer" in c for c in changes):
        not_applied.append(f"initializer={config.initializer}: no layer with a kernel initializer")
    for key in ("momentum", "epsilon"):
        value = getattr(config, f"bn_{key}")
        if value is None or any(f" {key}=" in c for c in changes):
            continue
        if replaced:
            not_applied.append(f"bn_{key}={value:g}: BatchNormalization was replaced by "
                               f"{config.normalization} normalization, which keeps no moving "
                               "averages")
        else:
            not_applied.append(f"bn_{key}: the model has no BatchNormalization layer")
    if config.normalization != "keep" and not has_bn:
        not_applied.append(f"normalization={config.normalization}: the model has no "
                           "BatchNormalization layer")
    elif replace_bn and not replaced:
        not_applied.append(f"normalization={config.normalization}: BatchNormalization layers "
                           "can only be replaced in Sequential and Functional models (rebuilt "
                           "with keras.models.clone_model); this model kept them")
    if config.output_bias == "chance":
        _set_output_bias(model, spec.loss, targets, changes, not_applied)
    return AppliedModel(model, spec, cloned, changes, not_applied)


_INVERTIBLE = ("linear", "softmax", "sigmoid")


def output_layer(model: keras.Model) -> tuple[keras.layers.Layer, str] | str:
    """The layer whose bias sets the model's output offset, and the activation after it.

    That is the Dense (or convolution) layer producing the model's single output, or
    the one feeding a final `Activation`/`Softmax` layer. Otherwise a reason, in words.
    """
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        return (f"{type(model).__name__} has {len(outputs)} symbolic outputs; expected one "
                "(a Sequential or Functional model with a single output)")
    history = getattr(outputs[0], "_keras_history", None)
    layer = history[0] if history else None
    activation = None
    if isinstance(layer, (keras.layers.Activation, keras.layers.Softmax)):
        activation = "softmax" if isinstance(layer, keras.layers.Softmax) else \
            activation_name(layer)
        source = getattr(getattr(layer, "input", None), "_keras_history", None)
        layer = source[0] if source else None
        if activation_name(layer) != "linear":
            return (f"the layer {getattr(layer, 'name', layer)!r} before the final "
                    f"{activation!r} has its own activation; expected a linear one")
    if layer is None or getattr(layer, "bias", None) is None:
        name = getattr(layer, "name", None)
        return f"the output layer {name!r} has no bias" if name else "no output layer found"
    activation = activation or activation_name(layer)
    if activation not in _INVERTIBLE:
        return (f"the output layer {layer.name!r} ends in {activation!r}; expected "
                f"{', '.join(_INVERTIBLE)}, whose bias can be set to a given output")
    return layer, activation


def output_bias(model: keras.Model, loss: Any,
                y_train: Any) -> tuple[keras.layers.Layer, np.ndarray] | str:
    """The output layer and the bias under which a zero kernel predicts the best constant
    of `y_train` under `loss` (`stabilizer.chance.constant_bias`); a reason in words when
    it cannot be set. A constant per position (a sequence or an image output) is averaged
    to one per channel, the shape of the layer's bias."""
    found = output_layer(model)
    if isinstance(found, str):
        return found
    layer, activation = found
    bias = constant_bias(activation, tuple(model.outputs[0].shape[1:]), loss, y_train)
    if isinstance(bias, str):
        return bias
    units = tuple(layer.bias.shape)
    if bias.shape != units:
        if bias.ndim < 1 or bias.shape[-1:] != units:
            return (f"the output layer {layer.name!r} has a bias of shape {units}; the "
                    f"constant prediction has shape {bias.shape}")
        bias = bias.reshape(-1, units[0]).mean(axis=0)
    return layer, bias.astype("float32")


def _set_output_bias(model: keras.Model, loss: Any, targets: Any, changes: list[str],
                     not_applied: list[str]) -> None:
    """`output_bias="chance"`: the output layer's bias at the best constant prediction."""
    found = output_bias(model, loss, targets) if targets is not None else \
        "the training targets were not given (data that is not in memory)"
    if isinstance(found, str):
        not_applied.append(f"output_bias=chance: {found}")
        return
    layer, bias = found
    layer.bias.assign(bias)
    shown = ", ".join(f"{v:.4g}" for v in bias[:3]) + (", ..." if bias.size > 3 else "")
    changes.append(f"{layer.name}: bias=[{shown}] (the best constant prediction)")


def _keep_weights(original: keras.Model, clone: keras.Model,
                  redrawn: dict[str, set[str]]) -> None:
    """Give `clone` the user's initial weights wherever the candidate does not redraw them.

    `clone_model` builds fresh layers, which draw every weight anew; copying back
    all but the kernels (and biases) a new initializer replaced keeps a candidate
    as close to the user's model as its changes allow: on one seed, a candidate
    that only changes BatchNormalization starts from the baseline's very weights
    (a paired comparison, not a second draw), and a pretrained model keeps its
    weights. Layers are matched by name and class, so a BatchNormalization replaced
    by another normalization (same name, other class) keeps its fresh weights.
    """
    originals = {layer.name: layer for layer in original.layers}
    for layer in clone.layers:
        source = originals.get(layer.name)
        if source is None or type(source) is not type(layer) \
                or len(source.weights) != len(layer.weights):
            continue
        skip = redrawn.get(layer.name, set())
        for target, value in zip(layer.weights, source.weights):
            if target.name not in skip and tuple(target.shape) == tuple(value.shape):
                target.assign(value)


def _replace_batch_norm(layer: keras.layers.BatchNormalization, config: StabilityConfig,
                        changes: list[str]) -> keras.layers.Layer | None:
    """The GroupNormalization or LayerNormalization standing in for `layer`.

    None when the layer is not built (its channel count, which the groups must
    divide, is unknown); the caller then keeps the BatchNormalization layer.
    """
    moving_mean = getattr(layer, "moving_mean", None)
    if moving_mean is None:
        return None
    bn_config = layer.get_config()
    shared = ("name", "trainable", "dtype", "axis", "epsilon", "center", "scale",
              "beta_initializer", "gamma_initializer", "beta_regularizer",
              "gamma_regularizer", "beta_constraint", "gamma_constraint")
    new_config = {key: bn_config[key] for key in shared if key in bn_config}
    if config.bn_epsilon is not None:
        new_config["epsilon"] = config.bn_epsilon
    if config.normalization == "group":
        groups = math.gcd(int(moving_mean.shape[0]), 8)
        new_layer: keras.layers.Layer = keras.layers.GroupNormalization.from_config(
            {**new_config, "groups": groups})
        changes.append(f"{layer.name}: BatchNormalization -> GroupNormalization(groups={groups})")
    else:
        new_layer = keras.layers.LayerNormalization.from_config(new_config)
        changes.append(f"{layer.name}: BatchNormalization -> LayerNormalization")
    if config.bn_epsilon is not None:
        changes.append(f"{layer.name}: epsilon={config.bn_epsilon:g}")
    return new_layer


def is_graph_model(model: keras.Model) -> bool:
    """True for Sequential and Functional models (those `clone_model` can rebuild)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def has_batch_norm(model: keras.Model) -> bool:
    """True when the model has a BatchNormalization layer (nested ones included)."""
    return any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in _flat_layers(model))


def _rewrite_in_place(model: keras.Model, config: StabilityConfig, activations: dict[str, str],
                      changes: list[str]) -> None:
    """The fallback for subclassed models (see the module docstring).

    A recurrent layer's kernel belongs to its cell, which is a layer of the
    flattened model itself (the layer's `kernel_initializer` is a read-only view).
    """
    for layer in _flat_layers(model):
        target = None if isinstance(layer, keras.layers.RNN) else layer \
            if hasattr(layer, "kernel_initializer") else getattr(layer, "cell", None)
        init_name = _initializer_for(config, activations.get(layer.name, "linear"),
                                     is_recurrent(layer))
        if init_name is not None and target is not None and hasattr(target, "kernel_initializer"):
            init = keras.initializers.get(init_name)
            kernel = getattr(target, "kernel", None)
            if kernel is not None:
                kernel.assign(init(tuple(kernel.shape), dtype=kernel.dtype))
            target.kernel_initializer = init
            changes.append(f"{layer.name}: kernel_initializer={init_name} (in place)")
        if target is not None and _kills_units(config, getattr(target, "bias_initializer", None),
                                               activations.get(layer.name, "linear")):
            bias = getattr(target, "bias", None)
            if bias is not None:
                bias.assign(keras.ops.zeros(tuple(bias.shape), dtype=bias.dtype))
            target.bias_initializer = keras.initializers.Zeros()
            changes.append(f"{layer.name}: bias_initializer=zeros (in place)")
        if isinstance(layer, keras.layers.BatchNormalization):
            for key in ("momentum", "epsilon"):
                value = getattr(config, f"bn_{key}")
                if value is not None:
                    setattr(layer, key, value)
                    changes.append(f"{layer.name}: {key}={value:g} (in place)")


def _user_learning_rate(optimizer: keras.optimizers.Optimizer) -> tuple[float, Any]:
    """(initial learning rate as a float, the schedule object or None)."""
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(schedule(0))), schedule
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate)), None


def make_schedule(config: StabilityConfig, lr: float, total_steps: int) -> Any:
    """The learning rate argument for the optimizer: a float or a schedule object."""
    schedules = keras.optimizers.schedules
    if config.lr_schedule in ("keep", "constant", "plateau"):
        return lr
    if config.lr_schedule == "exponential":
        return schedules.ExponentialDecay(lr, decay_steps=max(1, total_steps // 4),
                                          decay_rate=config.decay_rate or 0.7)
    if config.lr_schedule == "cosine":
        return schedules.CosineDecay(lr, decay_steps=max(1, total_steps), alpha=0.01)
    if config.lr_schedule == "cooldown":
        return Cooldown(lr, total_steps)
    warmup = max(1, int(round(total_steps * (config.warmup_fraction or 0.1))))
    return schedules.CosineDecay(lr * 0.01, decay_steps=max(1, total_steps - warmup), alpha=0.01,
                                 warmup_target=lr, warmup_steps=warmup)


#: Share of training the "cooldown" schedule spends decaying (the last 20%).
COOLDOWN_FRACTION = 0.2


@keras.saving.register_keras_serializable(package="stabilizer")
class Cooldown(keras.optimizers.schedules.LearningRateSchedule):
    """A constant rate, then a linear decay to `alpha` x the rate over the last `fraction`.

    The rate a constant-rate probe measured is kept for most of training, and the
    steps shrink only at the end, where a constant rate leaves the final weights
    (and so the final loss) bouncing with the last batches. Spans `total_steps`,
    like every schedule here; the step is a tensor, so it runs on any backend.
    Registered with Keras as "stabilizer>Cooldown": a saved model that uses it
    loads wherever `stabilizer` has been imported.
    """

    def __init__(self, learning_rate: float, total_steps: int,
                 fraction: float = COOLDOWN_FRACTION, alpha: float = 0.01) -> None:
        self.learning_rate = float(learning_rate)
        self.total_steps = max(1, int(total_steps))
        self.fraction = float(fraction)
        self.alpha = float(alpha)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        length = max(1.0, self.total_steps * self.fraction)
        start = self.total_steps - length
        done = ops.clip((ops.cast(step, "float32") - start) / length, 0.0, 1.0)
        return self.learning_rate * (1.0 - (1.0 - self.alpha) * done)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "fraction": self.fraction, "alpha": self.alpha}


def make_optimizer(spec: CompileSpec, config: StabilityConfig, total_steps: int,
                   optimizer_class: type | None = None) -> keras.optimizers.Optimizer:
    """A new optimizer of the user's class with the config's LR, schedule and clipping.

    `optimizer_class` (a subclass of the user's class, e.g. the instrumented one)
    replaces the class when given.
    """
    user = spec.optimizer
    cls = optimizer_class or type(user)
    cfg = user.get_config()
    user_lr, user_schedule = _user_learning_rate(user)
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


def plateau_callback(config: StabilityConfig, lr: float) -> keras.callbacks.Callback | None:
    """ReduceLROnPlateau for the 'plateau' schedule (patience in evaluations)."""
    if config.lr_schedule != "plateau":
        return None
    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
                                             min_lr=lr / 100, verbose=0)


def _fresh(obj: Any) -> Any:
    """A stateless copy of metric objects, so no two models share metric state."""
    if isinstance(obj, keras.metrics.Metric):
        return obj.__class__.from_config(obj.get_config())
    if isinstance(obj, (list, tuple)):
        return [_fresh(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _fresh(v) for k, v in obj.items()}
    return obj


def compile_model(applied: AppliedModel, optimizer: keras.optimizers.Optimizer) -> keras.Model:
    """Compile with the user's loss and (fresh copies of) metrics and `optimizer`."""
    spec = applied.compile_spec
    applied.model.compile(optimizer=optimizer, loss=spec.loss, metrics=_fresh(spec.metrics),
                          loss_weights=spec.loss_weights,
                          weighted_metrics=_fresh(spec.weighted_metrics))
    return applied.model


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


def effective_learning_rate(spec: CompileSpec, config: StabilityConfig) -> float:
    return config.learning_rate if config.learning_rate is not None \
        else _user_learning_rate(spec.optimizer)[0]


def replay_hyperparameters(values: dict[str, Any] | None) -> Any:
    """A KerasTuner `HyperParameters` that returns `values` (defaults for the rest)."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.values.update(values or {})
    return hp

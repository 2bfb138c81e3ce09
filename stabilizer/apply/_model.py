"""Applying a `StabilityConfig` to the user's model: every layer knob in one rebuild.

Initializers (a recurrent layer's recurrent kernel too: `RECURRENT_INITIALIZER`) and
BatchNormalization settings are rewritten with
`keras.models.clone_model(..., clone_function=...)` for Sequential and Functional
models; the clone takes back the user's weights except those a new initializer redraws
(`keep_weights`). Subclassed models cannot be cloned that way; for them the documented
fallback rewrites the layers in place: unbuilt layers get the new initializer before
they build, built layers have their kernels re-drawn from it, and BatchNormalization
momentum/epsilon are set on the layer (read at trace time).

`AppliedModel.changes` lists what was changed on which layer, and a requested change
that reached no layer is listed in `AppliedModel.not_applied`: nothing is silently
skipped.
"""

from __future__ import annotations

from typing import Any

import keras

from stabilizer.apply._build import AppliedModel, CompileSpec
from stabilizer.apply._initializer import initializer_for, keep_weights, kills_units
from stabilizer.apply._layers import (
    RECURRENT_INITIALIZER,
    has_batch_norm,
    is_recurrent,
    layer_activations,
)
from stabilizer.apply._normalization import replace_batch_norm
from stabilizer.apply._output_bias import set_output_bias
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.keras_internals import flat_layers, is_graph_model

__all__ = ["apply_config"]


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
        init = initializer_for(config, activations.get(layer.name, "linear"),
                                is_recurrent(layer))
        if init is not None and "kernel_initializer" in layer_config:
            layer_config["kernel_initializer"] = keras.initializers.serialize(
                keras.initializers.get(init))
            changes.append(f"{layer.name}: kernel_initializer={init}")
            redrawn.setdefault(layer.name, set()).add("kernel")
            if "recurrent_initializer" in layer_config:
                layer_config["recurrent_initializer"] = keras.initializers.serialize(
                    keras.initializers.get(RECURRENT_INITIALIZER))
                changes.append(f"{layer.name}: recurrent_initializer={RECURRENT_INITIALIZER}")
                redrawn[layer.name].add("recurrent_kernel")
        if kills_units(config, layer_config.get("bias_initializer"),
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
                swapped = replace_batch_norm(layer, config, changes)
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
            keep_weights(model, clone, redrawn)
            model, cloned = clone, True
    if needs_rewrite and not cloned:
        rewrite_in_place(model, config, activations, changes)
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
        set_output_bias(model, spec.loss, targets, changes, not_applied)
    return AppliedModel(model, spec, cloned, changes, not_applied)


def rewrite_in_place(model: keras.Model, config: StabilityConfig, activations: dict[str, str],
                      changes: list[str]) -> None:
    """The fallback for subclassed models (see the module docstring).

    A recurrent layer's kernel belongs to its cell, which is a layer of the
    flattened model itself (the layer's `kernel_initializer` is a read-only view).
    """
    for layer in flat_layers(model):
        target = None if isinstance(layer, keras.layers.RNN) else layer \
            if hasattr(layer, "kernel_initializer") else getattr(layer, "cell", None)
        init_name = initializer_for(config, activations.get(layer.name, "linear"),
                                     is_recurrent(layer))
        if init_name is not None and target is not None and hasattr(target, "kernel_initializer"):
            init = keras.initializers.get(init_name)
            kernel = getattr(target, "kernel", None)
            if kernel is not None:
                kernel.assign(init(tuple(kernel.shape), dtype=kernel.dtype))
            target.kernel_initializer = init
            changes.append(f"{layer.name}: kernel_initializer={init_name} (in place)")
            if hasattr(target, "recurrent_initializer"):
                recurrent = keras.initializers.get(RECURRENT_INITIALIZER)
                state_kernel = getattr(target, "recurrent_kernel", None)
                if state_kernel is not None:
                    state_kernel.assign(recurrent(tuple(state_kernel.shape),
                                                  dtype=state_kernel.dtype))
                target.recurrent_initializer = recurrent
                changes.append(f"{layer.name}: recurrent_initializer={RECURRENT_INITIALIZER} "
                               "(in place)")
        if target is not None and kills_units(config, getattr(target, "bias_initializer", None),
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

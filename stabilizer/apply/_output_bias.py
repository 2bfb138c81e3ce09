"""The `output_bias` knob: the output layer's bias at the best constant prediction.

`output_bias="chance"` sets the output layer's bias, after the clone, to the best
constant prediction of the training targets under the loss
(`stabilizer.chance.constant_bias`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from stabilizer.apply._layers import activation_name
from stabilizer.chance import constant_bias

__all__ = ["output_bias", "output_layer", "set_output_bias"]


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


def set_output_bias(model: keras.Model, loss: Any, targets: Any, changes: list[str],
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

"""What a model's layers are: their activations, and the initializer each one matches.

`matched_initializer` gives recurrent layers (SimpleRNN, LSTM, GRU, ConvLSTM) Glorot
uniform input kernels whatever their activation, as Keras does by default: their state
is fed a new input every time step, so He's gain of 2, right for a ReLU stack's depth,
compounds over the time steps instead (the zoo's ReLU SimpleRNN with identity
recurrence on the 50-step adding problem: an untrained mean squared error of 13-2480
over five seeds under He, 0.8-13 under Glorot). Their recurrent kernels get
`RECURRENT_INITIALIZER`, orthogonal with gain 1 (Keras' default for them): the state is
multiplied by that matrix once per time step, so a gain above 1 grows it geometrically
over the sequence (an orthogonal gain of 2.2 over 50 steps: an untrained loss of 1e20),
which no learning rate or clipping repairs.
"""

from __future__ import annotations

from typing import Any

import keras

from stabilizer.keras_internals import flat_layers

__all__ = [
    "activation_family",
    "activation_name",
    "has_batch_norm",
    "has_kernel_init",
    "is_recurrent",
    "layer_activations",
    "matched_initializer",
    "RECURRENT_INITIALIZER",
]


#: What any initializer other than "keep" draws a recurrent kernel from (the module docstring).
RECURRENT_INITIALIZER = "orthogonal"

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
    layers = list(flat_layers(model))
    result: dict[str, str] = {}
    for i, layer in enumerate(layers):
        if not has_kernel_init(layer):
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


def has_kernel_init(layer: Any) -> bool:
    return hasattr(layer, "kernel_initializer") or hasattr(getattr(layer, "cell", None),
                                                            "kernel_initializer")


def is_recurrent(layer: Any) -> bool:
    """True for recurrent layers (`keras.layers.RNN` and its subclasses) and their cells.

    A cell is a layer of its own (with the kernel), found by its `state_size`,
    which the RNN cell API requires.
    """
    return isinstance(layer, keras.layers.RNN) or hasattr(layer, "state_size")


def has_batch_norm(model: keras.Model) -> bool:
    """True when the model has a BatchNormalization layer (nested ones included)."""
    return any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in flat_layers(model))

"""The `initializer` knob: which initializer each layer's kernel is drawn from.

`initializer="auto"` matches each layer's activation (`matched_initializer`), and resets
a negative constant bias initializer to zeros on ReLU-family layers: a bias of -0.5
switches most units off before the first step (dead ReLUs), which no kernel initializer
can repair. A rebuilt model takes back the user's weights except those a new initializer
redraws (`keep_weights`).
"""

from __future__ import annotations

from typing import Any

import keras

from stabilizer.apply._layers import activation_family, matched_initializer
from stabilizer.config import StabilityConfig

__all__ = ["initializer_for", "keep_weights", "kills_units"]


def initializer_for(config: StabilityConfig, activation: str,
                     recurrent: bool = False) -> str | None:
    if config.initializer == "keep":
        return None
    if config.initializer == "auto":
        return matched_initializer(activation, recurrent)
    return config.initializer


def kills_units(config: StabilityConfig, bias_init: Any, activation: str) -> bool:
    """True when `initializer="auto"` should reset this bias: a negative constant on ReLU."""
    if config.initializer != "auto" or bias_init is None or activation_family(activation) != "relu":
        return False
    try:
        init = keras.initializers.get(bias_init)
    except (ValueError, TypeError):
        return False
    value = getattr(init, "value", None) if isinstance(init, keras.initializers.Constant) else None
    return isinstance(value, (int, float)) and value < 0


def keep_weights(original: keras.Model, clone: keras.Model,
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

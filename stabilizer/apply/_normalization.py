"""The `normalization`, `bn_momentum` and `bn_epsilon` knobs.

`normalization="group"` or `"layer"` replaces each BatchNormalization layer by a
GroupNormalization (groups = gcd(channels, 8), so the groups divide the channels) or a
LayerNormalization over the same axis, keeping the layer's name, epsilon, center/scale
and beta/gamma settings. Neither depends on the batch, which is what small batches
(2-16) need. This needs the clone, so for subclassed models it is listed in
`not_applied`.
"""

from __future__ import annotations

import math

import keras

from stabilizer.config import StabilityConfig

__all__ = ["replace_batch_norm"]


def replace_batch_norm(layer: keras.layers.BatchNormalization, config: StabilityConfig,
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

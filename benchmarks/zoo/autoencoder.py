"""A dense autoencoder on the digits at a high learning rate."""

from __future__ import annotations

import keras

from benchmarks.zoo._data import digits_autoencoder
from benchmarks.zoo._scenario import Scenario

__all__ = ["SCENARIOS"]


def autoencoder_high_lr() -> keras.Model:
    """64 -> 32 -> 8 -> 32 -> 64 ReLU autoencoder, linear output, Adam at 0.05.

    Large early steps can switch the whole 8-unit bottleneck off, and the decoder then
    outputs the mean image.
    """
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(64),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


SCENARIOS = [
    Scenario("autoencoder_high_lr", "unstable reconstruction (autoencoder)",
             "dense digits autoencoder with an 8-unit ReLU bottleneck, Adam at 0.05",
             autoencoder_high_lr, digits_autoencoder),
]

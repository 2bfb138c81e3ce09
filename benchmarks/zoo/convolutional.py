"""A small CNN on the 8x8 digits at a high learning rate."""

from __future__ import annotations

import keras

from benchmarks.zoo._data import digits_images
from benchmarks.zoo._scenario import Scenario

__all__ = ["SCENARIOS"]


def cnn_high_lr() -> keras.Model:
    """Two 3x3 convolutions, global pooling and a softmax, Adam at learning rate 0.1."""
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


SCENARIOS = [
    Scenario("cnn_digits_high_lr", "exploding updates (CNN)",
             "small CNN on 8x8 digit images, Adam at learning rate 0.1",
             cnn_high_lr, digits_images, space="convolutional"),
]

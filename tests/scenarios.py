"""Small deliberately unstable (and one healthy) training setups used by the tests.

Each factory returns a compiled Keras model; the data comes from scikit-learn's
bundled digits set (no download).
"""

from __future__ import annotations

import functools

import keras
import numpy as np


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y.astype("int32")


def healthy_mlp() -> keras.Model:
    """A well-initialised small ReLU MLP with Adam 1e-3."""
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def deep_sigmoid_large_init() -> keras.Model:
    """Six sigmoid layers with a normal(stddev=4) initializer: saturated, vanishing."""
    init = keras.initializers.RandomNormal(stddev=4.0)
    layers = [keras.Input((64,))]
    layers += [keras.layers.Dense(32, activation="sigmoid", kernel_initializer=init)
               for _ in range(6)]
    layers += [keras.layers.Dense(10, activation="softmax", kernel_initializer=init)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def relu_lr_one() -> keras.Model:
    """A ReLU MLP trained by Adam at learning rate 1.0 without clipping."""
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1.0),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def batchnorm_mlp() -> keras.Model:
    """An MLP with BatchNormalization, meant to be trained at batch size 2."""
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Dense(32),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def nan_on_large_lr() -> keras.Model:
    """A linear regression that produces NaN at its learning rate (used for NaN tests)."""
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e6), loss="mse")
    return model


def nan_on_large_lr_adjustable() -> keras.Model:
    """A small MLP whose loss goes NaN when the search picks a huge learning rate."""
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss="sparse_categorical_crossentropy")
    return model

"""Model factories for the examples (`stabilizer search examples/digits.yaml`).

A factory takes no argument (or a KerasTuner `hp`) and returns a compiled
keras.Model; the stabilizer keeps its optimizer class, loss and metrics and
searches the initializer, learning rate and schedule, clipping and batch size.
"""

from __future__ import annotations

import keras


def digits_mlp() -> keras.Model:
    """A ReLU MLP for the 8x8 digits, with an aggressive learning rate (Adam 0.05).

    Trained as it is, its loss jumps around; the search finds a gentler setup.
    """
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def digits_mlp_hp(hp) -> keras.Model:  # noqa: ANN001 - a keras_tuner.HyperParameters
    """The same MLP with its width as a KerasTuner hyperparameter (searched alongside)."""
    units = hp.Choice("units", [32, 64])
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

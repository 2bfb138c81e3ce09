"""A recurrent network on long sequences without gradient clipping."""

from __future__ import annotations

import keras

from benchmarks.zoo._data import adding_problem
from benchmarks.zoo._scenario import Scenario

__all__ = ["SCENARIOS"]


def relu_rnn_no_clipping() -> keras.Model:
    """A ReLU SimpleRNN with identity recurrent weights (IRNN), SGD+momentum, no clipping.

    Identity recurrence keeps the signal alive over the 50 steps, and with it the
    gradients that grow through time: without clipping a few large steps blow up.
    """
    model = keras.Sequential([
        keras.Input((50, 2)),
        keras.layers.SimpleRNN(32, activation="relu",
                               recurrent_initializer=keras.initializers.Identity(1.0)),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    return model


SCENARIOS = [
    Scenario("exploding_rnn_long_sequences", "exploding gradients (through time)",
             "ReLU SimpleRNN (identity recurrence) on the 50-step adding problem, "
             "SGD+momentum without clipping",
             relu_rnn_no_clipping, adding_problem, space="recurrent"),
]

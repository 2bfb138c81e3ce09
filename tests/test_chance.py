"""The chance level: the best constant prediction's loss, with the user's own loss."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from stabilizer.chance import chance_loss
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import prepare_data
from stabilizer.probe import run_probe


def _model(units: int, activation: str | None = None, inputs: int = 4) -> keras.Model:
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, activation)])


def _entropy(p: np.ndarray) -> float:
    return float(-(p * np.log(p)).sum())


def test_a_classifier_s_chance_level_is_the_entropy_of_the_class_frequencies():
    y = np.repeat([0, 1, 2], [60, 30, 10])
    expected = _entropy(np.array([0.6, 0.3, 0.1]))
    softmax = _model(3, "softmax")
    assert chance_loss(softmax, "sparse_categorical_crossentropy", y, y) == \
        pytest.approx(expected, rel=1e-4)
    logits = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert chance_loss(_model(3), logits, y, y) == pytest.approx(expected, rel=1e-4)
    onehot = np.eye(3)[y]
    assert chance_loss(softmax, "categorical_crossentropy", onehot, onehot) == \
        pytest.approx(expected, rel=1e-4)


def test_balanced_digits_sit_near_log_ten():
    from sklearn.datasets import load_digits

    _, y = load_digits(return_X_y=True)
    value = chance_loss(_model(10, "softmax", 64), "sparse_categorical_crossentropy",
                        y[:1200], y[1200:])
    assert math.log(10) <= value < math.log(10) + 0.01


def test_binary_and_regression_chance_levels():
    y = (np.arange(100) < 30).astype("float32")
    assert chance_loss(_model(1, "sigmoid"), "binary_crossentropy", y, y) == \
        pytest.approx(_entropy(np.array([0.3, 0.7])), rel=1e-4)
    logits = keras.losses.BinaryCrossentropy(from_logits=True)
    assert chance_loss(_model(1), logits, y[:, None], y[:, None]) == \
        pytest.approx(_entropy(np.array([0.3, 0.7])), rel=1e-4)
    targets = np.linspace(0.0, 10.0, 101)[:, None]
    assert chance_loss(_model(1), "mse", targets, targets) == \
        pytest.approx(float(np.var(targets)), rel=1e-4)
    assert chance_loss(_model(1), "mae", targets, targets) == \
        pytest.approx(float(np.mean(np.abs(targets - np.median(targets)))), rel=1e-4)
    flat = targets[:, 0]  # (n,) targets for a (n, 1) output, as fit takes them: the same level
    assert chance_loss(_model(1), "mse", flat, flat) == \
        pytest.approx(float(np.var(targets)), rel=1e-4)


def test_unknown_cases_give_none():
    y = np.arange(20) % 3
    assert chance_loss(_model(3, "softmax"), "sparse_categorical_crossentropy", None, y) is None
    assert chance_loss(_model(3, "softmax"), {"out": "mse"}, y, y) is None
    assert chance_loss(_model(2, "softmax"), "sparse_categorical_crossentropy", y, y) is None
    assert chance_loss(_model(5), "mse", np.zeros((20, 3)), np.zeros((20, 3))) is None
    inputs = keras.Input((4,))
    two = keras.Model(inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(1)(inputs)])
    assert chance_loss(two, "mse", y, y) is None
    constant = np.ones((20, 1))  # a perfect constant: no positive level to measure from
    assert chance_loss(_model(1), "mse", constant, constant) is None


def test_a_probe_records_the_chance_level_of_its_data(small_digits, tmp_path):
    def build_fn():
        model = _model(10, "softmax", 64)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model

    settings = SearchConfig(probe_steps=4, evaluations=1, seeds=1, out_dir=str(tmp_path))
    data = prepare_data(small_digits, seed=0)
    trace = run_probe(build_fn, data, StabilityConfig(), settings, seed=0)
    assert trace.chance_loss == pytest.approx(
        chance_loss(build_fn(), "sparse_categorical_crossentropy", data.y, data.y_val))
    assert math.log(10) - 0.05 < trace.chance_loss < math.log(10) + 0.1

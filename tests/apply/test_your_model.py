"""A configuration applied to a model you built yourself, and the arguments of your fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stabilizer import ConfigError, StabilityConfig
from stabilizer.apply import ScheduleSpan

BEST_YAML = """\
# Most stable configuration of study 'demo': trial 3, score 0.8 (stable).
initializer: he_normal
learning_rate: 0.01
lr_schedule: cosine
clipping: norm
clip_value: 1.0
batch_size: 16
"""


def your_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9), loss="mse",
                  metrics=["mae"])
    return model


def data(rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def rate_at(optimizer: keras.optimizers.Optimizer, step: int) -> float:
    return float(keras.ops.convert_to_numpy(optimizer._learning_rate(step)))


def test_a_saved_configuration_applies_to_your_model_with_your_loss_and_class(tmp_path):
    (tmp_path / "best.yaml").write_text(BEST_YAML)
    config = StabilityConfig.from_yaml(tmp_path / "best.yaml")
    model = your_model()
    weights = [w.copy() for w in model.get_weights()]
    applied = config.apply(model, train_steps=100)
    assert applied is not model and applied.compiled
    assert isinstance(applied.optimizer, keras.optimizers.SGD)  # your class, your momentum
    assert applied.optimizer.momentum == pytest.approx(0.9)
    assert applied.optimizer.clipnorm == 1.0
    assert rate_at(applied.optimizer, 0) == pytest.approx(0.01)
    assert rate_at(applied.optimizer, 100) == pytest.approx(0.0001, rel=1e-3)  # spans 100
    assert applied.loss == "mse"
    # your model is left as it was
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == 0.5
    x, y = data()
    history = applied.fit(x, y, verbose=0, **config.fit_kwargs(epochs=2))
    assert len(history.history["loss"]) == 2 and "mae" in history.history


def test_a_decaying_schedule_needs_your_training_length():
    config = StabilityConfig(lr_schedule="cosine", learning_rate=0.01)
    with pytest.raises(ConfigError, match="train_steps=None: lr_schedule='cosine'"):
        config.apply(your_model())
    # a constant rate does not
    assert StabilityConfig(learning_rate=0.01).apply(your_model()).compiled


def test_an_uncompiled_model_takes_the_loss_by_name_and_says_when_it_has_none():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    applied = StabilityConfig(learning_rate=0.02).apply(model, loss="mse", optimizer="sgd")
    assert isinstance(applied.optimizer, keras.optimizers.SGD) and applied.loss == "mse"
    with pytest.raises(Exception, match="loss"):
        StabilityConfig().apply(keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]))
    with pytest.raises(ConfigError, match="model=ndarray: expected a keras.Model"):
        StabilityConfig().apply(np.zeros(3))


def test_fit_kwargs_carry_batch_size_length_and_the_schedule_callbacks():
    config = StabilityConfig.from_yaml(BEST_YAML)
    kwargs = config.fit_kwargs(epochs=3, steps_per_epoch=5)
    assert kwargs["batch_size"] == 16 and kwargs["epochs"] == 3
    assert kwargs["steps_per_epoch"] == 5
    assert [type(c) for c in kwargs["callbacks"]] == [ScheduleSpan]
    assert "batch_size" not in StabilityConfig().fit_kwargs()
    assert StabilityConfig().fit_kwargs(batch_size=8)["batch_size"] == 8
    with pytest.raises(ConfigError, match="epochs=0: expected a value >= 1"):
        config.fit_kwargs(epochs=0)


@pytest.mark.parametrize("schedule", ["cosine", "warmup_cosine", "exponential", "cooldown"])
def test_the_schedule_spans_the_fit_that_runs_not_the_length_it_was_built_for(schedule):
    """Built for 2000 steps, fitted for 3 epochs of 4 steps: the schedule ends at step 12."""
    config = StabilityConfig(learning_rate=0.01, lr_schedule=schedule, batch_size=16)
    short = config.apply(your_model(), train_steps=12)
    model = config.apply(your_model(), train_steps=2000)
    x, y = data(64)  # 4 steps per epoch at batch size 16
    kwargs = config.fit_kwargs(epochs=3)
    model.fit(x, y, verbose=0, **kwargs)
    assert kwargs["callbacks"][0].total_steps == 12
    for step in (0, 3, 6, 11, 12):
        assert rate_at(model.optimizer, step) == pytest.approx(rate_at(short.optimizer, step))
    assert int(model.optimizer.iterations) == 12


def test_the_plateau_floor_is_read_from_the_rate_the_fit_starts_with():
    config = StabilityConfig(lr_schedule="plateau")
    callback, = config.fit_kwargs()["callbacks"]
    model = config.apply(your_model())
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[callback])
    assert callback.min_lr == pytest.approx(0.005)

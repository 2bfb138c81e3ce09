"""The output layer's bias at the best constant prediction (`output_bias="chance"`).

A regression on targets of about 300 whose untrained outputs are near 0 starts with
most of its loss in the offset; the diagnosis says so (`output_offset`) and the
search is offered the bias at the targets' mean first.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stabilizer import ConfigError, StabilityConfig, diagnose, load_space, stabilize
from stabilizer.apply import apply_config, output_bias, output_layer
from stabilizer.chance import chance_loss
from stabilizer.config import SearchConfig
from stabilizer.data import prepare_data
from stabilizer.probe import run_probe
from stabilizer.space import Choice, Fixed


def _unscaled(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised features, targets of about 300 +- 50 left in their units."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = 300.0 + x @ rng.normal(scale=15.0, size=(8,)) + rng.normal(scale=5.0, size=n)
    return x, y.astype("float32")[:, None]


def _regressor(lr: float = 1e-3) -> keras.Model:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


def _classifier(activation_layer: bool = False) -> keras.Model:
    if activation_layer:
        layers = [keras.layers.Dense(3), keras.layers.Activation("softmax")]
    else:
        layers = [keras.layers.Dense(3, activation="softmax")]
    model = keras.Sequential([keras.Input((4,)), *layers])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_the_bias_is_the_target_mean_for_mse_and_the_median_for_mae():
    _, y = _unscaled()
    model = _regressor()
    layer, bias = output_bias(model, "mse", y)
    assert layer is model.layers[-1]
    assert bias == pytest.approx([float(y.mean())], rel=1e-5)
    _, median = output_bias(_regressor(), "mae", y)
    assert median == pytest.approx([float(np.median(y))], rel=1e-5)


@pytest.mark.parametrize("activation_layer", [False, True])
def test_a_softmax_bias_is_the_class_log_frequencies(activation_layer):
    y = np.repeat([0, 1, 2], [60, 30, 10])
    layer, bias = output_bias(_classifier(activation_layer), "sparse_categorical_crossentropy", y)
    assert isinstance(layer, keras.layers.Dense)
    probabilities = np.exp(bias) / np.exp(bias).sum()
    assert probabilities == pytest.approx([0.6, 0.3, 0.1], rel=1e-4)


def test_a_sigmoid_bias_is_the_logit_of_the_positive_rate():
    y = (np.arange(100) < 20).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    _, bias = output_bias(model, "binary_crossentropy", y)
    assert bias == pytest.approx([np.log(0.2 / 0.8)], rel=1e-4)


def test_outputs_whose_bias_cannot_be_set_say_why():
    tanh = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="tanh")])
    assert "tanh" in output_layer(tanh)
    no_bias = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    assert "no bias" in output_layer(no_bias)
    inputs = keras.Input((4,))
    two = keras.Model(inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(1)(inputs)])
    assert "2 symbolic outputs" in output_layer(two)
    assert "not in memory" in output_bias(_regressor(), "mse", None)


def test_apply_config_sets_the_bias_so_the_untrained_model_starts_near_the_chance_level():
    x, y = _unscaled()
    keras.utils.set_random_seed(3)
    plain = apply_config(_regressor(), StabilityConfig(), SearchConfig())
    keras.utils.set_random_seed(3)
    shifted = apply_config(_regressor(), StabilityConfig(output_bias="chance"), SearchConfig(),
                           targets=y)
    assert any("the best constant prediction" in c for c in shifted.changes)
    assert not shifted.not_applied
    chance = float(np.var(y))

    def mse(model: keras.Model) -> float:
        return float(np.mean((np.asarray(model(x)) - y) ** 2))

    assert mse(plain.model) > 20 * chance  # the offset: outputs near 0, targets near 300
    assert mse(shifted.model) < 2 * chance
    # The hidden layer is the user's: only the output bias moved.
    for a, b in zip(plain.model.layers[0].weights, shifted.model.layers[0].weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_bias_is_set_after_a_clone_and_listed_as_not_applied_without_targets():
    _, y = _unscaled()
    applied = apply_config(_regressor(), StabilityConfig(initializer="auto", output_bias="chance"),
                           SearchConfig(), targets=y)
    assert applied.cloned
    assert float(np.asarray(applied.model.layers[-1].bias)[0]) == pytest.approx(
        float(y.mean()), rel=1e-5)
    missing = apply_config(_regressor(), StabilityConfig(output_bias="chance"), SearchConfig())
    assert missing.not_applied == [
        "output_bias=chance: the training targets were not given (data that is not in memory)"]


def test_a_bad_output_bias_is_rejected_by_name():
    with pytest.raises(ConfigError, match="output_bias='mean'"):
        StabilityConfig(output_bias="mean")
    with pytest.raises(ConfigError, match="'output_bias'.*not an output bias"):
        load_space({"output_bias": ["chance", "mean"]})
    assert StabilityConfig.from_yaml("output_bias: chance\n").output_bias == "chance"


def test_a_probe_with_the_bias_at_the_mean_starts_at_the_chance_level(tmp_path):
    x, y = _unscaled()
    data = prepare_data((x, y), validation_split=0.25, seed=0)
    settings = SearchConfig(probe_steps=20, evaluations=1, seeds=1, out_dir=str(tmp_path))
    plain = run_probe(_regressor, data, StabilityConfig(), settings, seed=0)
    shifted = run_probe(_regressor, data, StabilityConfig(output_bias="chance"), settings, seed=0)
    chance = chance_loss(_regressor(), "mse", data.y, data.y_val)
    assert plain.initial_val_loss > 20 * chance
    assert shifted.initial_val_loss < 2 * chance
    assert shifted.val_loss[-1] < plain.val_loss[-1]


def test_the_diagnosis_finds_the_offset_and_the_focus_offers_the_bias_first(tmp_path):
    x, y = _unscaled()
    settings = SearchConfig(probe_steps=20, evaluations=2, out_dir=str(tmp_path))
    before = diagnose(_regressor, (x, y), config=settings, seeds=1, lr_range_steps=30)
    finding = before.get("output_offset")
    assert finding is not None and finding.at_least("warning")
    assert finding.evidence["ratio"] > 20
    # the training split's mean
    assert finding.evidence["target_mean"] == pytest.approx(float(y.mean()), rel=0.02)
    # Every trial gets the bias (the range test's plain trial too), unless the space
    # searches it: then it comes first.
    assert before.focus("quick").dimensions["output_bias"] == Fixed("chance")
    plain = before.range_test_trial("quick")
    assert "learning_rate" in plain and "output_bias" not in plain  # the fixed value applies
    searched = before.focus({**load_space("quick").to_dict(), "output_bias": ["keep", "chance"]})
    assert searched.dimensions["output_bias"] == Choice(("chance", "keep"))
    after = diagnose(_regressor, (x, y), config=settings, seeds=1, lr_range=False,
                     candidate=StabilityConfig(output_bias="chance"))
    assert "output_offset" not in after


def test_a_classifier_whose_untrained_output_is_at_chance_has_no_offset(small_digits, tmp_path):
    from scenarios import healthy_mlp

    settings = SearchConfig(probe_steps=20, evaluations=2, out_dir=str(tmp_path))
    before = diagnose(healthy_mlp, small_digits, config=settings, seeds=1, lr_range=False)
    assert "output_offset" not in before
    assert "output_bias" not in before.focus("quick").dimensions


def test_the_chosen_model_is_built_with_the_bias_and_needs_the_targets(tmp_path):
    x, y = _unscaled()
    result = stabilize(_regressor, (x, y), space={"output_bias": "chance",
                                                  "learning_rate": [0.03, 0.1]},
                       budget=1, probe_steps=20, evaluations=1, seeds=1, out_dir=str(tmp_path),
                       diagnose=False, horizon_fraction=0.0)
    assert result.best_config.output_bias == "chance"
    model = result.build_model(train_steps=20)
    assert float(np.asarray(model.layers[-1].bias)[0]) == pytest.approx(
        float(np.mean(result.targets)), rel=1e-5)
    result.targets = None  # as a result read back from storage has them
    with pytest.raises(ConfigError, match="result.targets"):
        result.build_model()

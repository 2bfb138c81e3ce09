"""A probe trains briefly, records per-step telemetry on the device, and stops on NaN."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import scenarios

from stabilizer import StabilityConfig
from stabilizer.data import prepare_data
from stabilizer.probe import run_probe
from stabilizer.telemetry import instrumented_optimizer_class, loss_ceiling


def test_probe_records_every_step_and_evaluation(small_digits, quick_settings):
    data = prepare_data(small_digits)
    trace = run_probe(scenarios.healthy_mlp, data, StabilityConfig(), quick_settings, seed=0)
    assert trace.steps_done == 40 and not trace.diverged
    assert trace.loss.shape == (40,) and np.isfinite(trace.loss).all() and (trace.loss > 0).all()
    assert trace.grad_norm.shape == (40,) and (trace.grad_norm > 0).all()
    assert trace.layer_names == ["sequential/dense", "sequential/dense_1"]
    assert trace.layer_grad_norm.shape == (40, 2) and (trace.layer_grad_norm > 0).all()
    # the global norm is the root of the summed per-layer squares
    np.testing.assert_allclose(trace.grad_norm, np.sqrt((trace.layer_grad_norm ** 2).sum(1)),
                               rtol=1e-4)
    assert (trace.update_ratio > 0).all() and (trace.update_ratio < 1).all()
    assert len(trace.val_loss) == 2 and np.isfinite(trace.initial_val_loss)
    assert trace.val_loss[-1] < trace.initial_val_loss  # it learns
    assert "val_accuracy" in trace.val_metrics[-1]
    assert trace.learning_rate == pytest.approx([1e-3, 1e-3])


def test_validation_batches_are_not_recorded_as_training_steps(small_digits, quick_settings):
    data = prepare_data(small_digits)
    trace = run_probe(scenarios.healthy_mlp, data, StabilityConfig(), quick_settings, seed=0)
    # 2 evaluations over 80 validation samples would add batches if they were recorded
    assert trace.steps_done == quick_settings.probe_steps


def test_a_nan_probe_stops_early_and_is_flagged(small_digits, quick_settings):
    data = prepare_data(small_digits)
    trace = run_probe(scenarios.nan_on_large_lr, data, StabilityConfig(), quick_settings, seed=0)
    assert trace.diverged
    assert trace.steps_done <= 3  # stopped at once, not at the end of the evaluation period


def clipped_crossentropy_mlp() -> keras.Model:
    """Adam at 1.0 on a ReLU MLP whose softmax is written out by hand.

    Without the softmax op Keras cannot take its logits (TensorFlow does when it
    can), so the cross-entropy is computed on clipped probabilities on every
    backend: the blown-up classifier's loss stops at -log(epsilon) = 16.1.
    """
    def softmax(z):
        e = keras.ops.exp(z - keras.ops.max(z, axis=-1, keepdims=True))
        return e / keras.ops.sum(e, axis=-1, keepdims=True)

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10),
                              keras.layers.Lambda(softmax)])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="sparse_categorical_crossentropy")
    return model


def test_a_classifier_blown_up_against_the_clipped_crossentropy_is_diverged(small_digits,
                                                                           quick_settings):
    """Its loss stays under 10x the start (16.1 < 23), but near the clip it has diverged."""
    trace = run_probe(clipped_crossentropy_mlp, prepare_data(small_digits), StabilityConfig(),
                      quick_settings, seed=0)
    assert trace.diverged and trace.steps_done < quick_settings.probe_steps
    ceiling = loss_ceiling("sparse_categorical_crossentropy")
    assert np.nanmax(trace.loss) <= ceiling < quick_settings.divergence_factor * trace.loss[0]
    assert np.nanmax(trace.loss) > 0.5 * (trace.loss[0] + ceiling)


def test_a_healthy_classifier_never_comes_near_the_ceiling(small_digits, quick_settings):
    trace = run_probe(scenarios.healthy_mlp, prepare_data(small_digits), StabilityConfig(),
                      quick_settings, seed=0)
    assert not trace.diverged and trace.steps_done == quick_settings.probe_steps


def test_only_crossentropies_on_probabilities_have_a_ceiling():
    assert loss_ceiling("sparse_categorical_crossentropy") == pytest.approx(16.118, 1e-3)
    assert loss_ceiling(keras.losses.BinaryCrossentropy()) < np.inf
    assert loss_ceiling(keras.losses.CategoricalCrossentropy(from_logits=True)) == np.inf
    assert loss_ceiling("mse") == np.inf


def test_same_seed_same_trace(small_digits, quick_settings):
    data = prepare_data(small_digits)
    a = run_probe(scenarios.healthy_mlp, data, StabilityConfig(), quick_settings, seed=7)
    b = run_probe(scenarios.healthy_mlp, data, StabilityConfig(), quick_settings, seed=7)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert a.val_loss == b.val_loss


def test_batchnorm_moving_statistics_are_recorded(small_digits, quick_settings):
    data = prepare_data(small_digits)
    trace = run_probe(scenarios.batchnorm_mlp, data, StabilityConfig(batch_size=16),
                      quick_settings, seed=0)
    assert len(trace.bn_stats) == 2
    assert set(trace.bn_stats[0]) == {"moving_mean_abs", "moving_var"}
    assert trace.bn_stats[0] != trace.bn_stats[1]  # they move during training


def test_user_metrics_and_loss_are_kept(small_digits, quick_settings):
    def build() -> keras.Model:
        model = scenarios.healthy_mlp()
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")])
        return model

    trace = run_probe(build, prepare_data(small_digits), StabilityConfig(), quick_settings, seed=0)
    assert "val_top3" in trace.val_metrics[-1]


def _sgd_with_telemetry(layers: int, updates: bool = True) -> tuple[Any, list[Any]]:
    variables = [keras.Variable(np.full((2, 2), 2.0, "float32"), name=f"w{i}")
                 for i in range(layers)]
    optimizer = instrumented_optimizer_class(keras.optimizers.SGD)(learning_rate=0.1)
    optimizer.stab_capacity, optimizer.stab_updates = 4, updates
    optimizer.build(variables)
    return optimizer, variables


def test_update_ratio_is_the_update_norm_over_the_weight_norm_per_layer():
    optimizer, variables = _sgd_with_telemetry(2)
    grads = [np.full((2, 2), 1.0, "float32"), np.full((2, 2), 3.0, "float32")]
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    row = keras.ops.convert_to_numpy(optimizer.stab_stats.value)[0]
    # plain SGD: the update is 0.1 * g, the weights were all 2.0 (norm 4.0); last, the rate
    np.testing.assert_allclose(row, [np.sqrt(4 + 36), 2.0, 6.0, 0.05, 0.15, 0.1], rtol=1e-5)


def test_without_update_ratios_a_row_is_the_gradient_norms_and_the_rate():
    optimizer, variables = _sgd_with_telemetry(2, updates=False)
    grads = [np.full((2, 2), 1.0, "float32"), np.full((2, 2), np.inf, "float32")]
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    row = keras.ops.convert_to_numpy(optimizer.stab_stats.value)[0]
    np.testing.assert_allclose(row[[1, 3]], [2.0, 0.1])  # the finite layer's norm; the rate
    assert np.isinf(row[0]) and np.isinf(row[2]) and row.shape == (4,)
    assert float(keras.ops.convert_to_numpy(optimizer.stab_nonfinite.value)) == 1.0


def test_an_overflowing_layer_leaves_the_other_layers_statistics_finite():
    optimizer, variables = _sgd_with_telemetry(2)
    grads = [np.full((2, 2), 1.0, "float32"), np.full((2, 2), np.inf, "float32")]
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    row = keras.ops.convert_to_numpy(optimizer.stab_stats.value)[0]
    assert not np.isfinite(row[0]) and not np.isfinite(row[2])  # global and layer 2
    np.testing.assert_allclose(row[[1, 3]], [2.0, 0.05], rtol=1e-5)  # layer 1 untouched
    assert float(keras.ops.convert_to_numpy(optimizer.stab_nonfinite.value)) == 1.0

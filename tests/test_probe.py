"""A probe trains briefly, records per-step telemetry on the device, and stops on NaN."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scenarios

from stabilizer import StabilityConfig
from stabilizer.data import prepare_data
from stabilizer.probe import run_probe


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

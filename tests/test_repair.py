"""The product's promise on three deliberately unstable setups.

For each, the baseline probe is not scored stable, and the configuration that
`stabilize()` returns, retrained through the public API (`build_model()` and
`fit_kwargs()`) for 3x the probe length on 3 fresh seeds, has no NaN, a lower
final validation loss than the baseline retrained the same way, and a smaller
seed-to-seed spread.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import scenarios
from stabilizer import StabilityResult, stabilize
from stabilizer.data import prepare_data

PROBE_STEPS = 120
FRESH_SEEDS = (101, 202, 303)

pytestmark = pytest.mark.slow


def _retrain(model: keras.Model, data, batch_size: int, callbacks) -> float:
    """Train 3x the probe length; the final validation loss (inf when it diverged)."""
    steps = 3 * PROBE_STEPS
    inputs = data.fit_inputs(batch_size, steps, seed=0)
    history = model.fit(inputs["x"], inputs["y"], batch_size=batch_size, shuffle=False,
                        epochs=3, steps_per_epoch=PROBE_STEPS, verbose=0,
                        validation_data=(data.x_val, data.y_val), callbacks=callbacks)
    final = history.history["val_loss"][-1]
    return final if math.isfinite(final) else math.inf


def _spread(losses: list[float]) -> float:
    return float(np.std(np.log(losses))) if all(map(math.isfinite, losses)) else math.inf


def _check_repair(build_fn, user_batch: int, tmp_path) -> StabilityResult:
    x, y = scenarios.digits()
    result = stabilize(build_fn, (x, y), space="default", budget=10, seeds=2,
                       probe_steps=PROBE_STEPS, evaluations=4, batch_size=user_batch,
                       out_dir=str(tmp_path), seed=0)
    assert result.baseline.components.verdict != "stable", result.summary()
    assert result.improved and result.components.verdict == "stable", result.summary()

    data = prepare_data((x, y), seed=0)
    chosen, baseline = [], []
    for seed in FRESH_SEEDS:
        keras.utils.set_random_seed(seed)
        model = result.build_model(train_steps=3 * PROBE_STEPS)
        kwargs = result.fit_kwargs()
        chosen.append(_retrain(model, data, kwargs["batch_size"], kwargs["callbacks"]))
        keras.utils.set_random_seed(seed)
        baseline.append(_retrain(build_fn(), data, user_batch, []))
    assert all(map(math.isfinite, chosen)), f"chosen config diverged on retraining: {chosen}"
    assert np.mean(chosen) < np.mean(baseline), (chosen, baseline)
    assert _spread(chosen) < _spread(baseline), (chosen, baseline)
    return result


def test_deep_sigmoid_with_large_normal_init_is_repaired(tmp_path):
    _check_repair(scenarios.deep_sigmoid_large_init, 32, tmp_path)


def test_relu_mlp_at_learning_rate_one_is_repaired(tmp_path):
    result = _check_repair(scenarios.relu_lr_one, 32, tmp_path)
    assert result.baseline.components.diverged


def test_batchnorm_at_batch_size_two_is_repaired(tmp_path):
    result = _check_repair(scenarios.batchnorm_mlp, 2, tmp_path)
    assert (result.best_config.batch_size or 2) > 2

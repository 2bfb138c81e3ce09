"""The product's promise on three deliberately unstable setups.

For each, the baseline probe is not scored stable, and the configuration that
`stabilize()` returns, retrained through the public API (`build_model()` and
`fit_kwargs()`) for 3x the probe length on 3 fresh seeds, has no NaN, a lower
final validation loss than the baseline retrained the same way, and a smaller
seed-to-seed spread.

Retraining uses the product's own definitions: a run diverged when its loss was
NaN/Inf or exceeded `divergence_factor` (10) times its first loss at any step
(a run that explodes and then sits at chance level still diverged), and the
spread is the std of log(final validation loss + floor), floor = 5% of the
untrained validation loss; a set of runs with a diverged one has infinite spread.

"Stable" includes learning: the chosen configuration's validation loss must end
5% below the chance level (the best constant prediction's) where that is lower than
the untrained loss. Until f2c2790 the deep sigmoid's search chose a configuration
that ended at the uniform prediction's 2.306 (every trial did but one), which these
checks passed: the baseline, confidently wrong, retrains to a far higher loss.

BatchNorm at batch size 2 was a known gap until 598a72c: one of the three fresh
seeds settled at a validation loss of 0.10 where the others reached 0.035-0.046
(spread 0.154 against the slowly-learning baseline's 0.084), and the spread
comparison was reported as an expected failure. Since candidates keep the user's
weights wherever they do not redraw them, the chosen configuration retrains to
0.079-0.098 on the three seeds (above the earlier good seeds' 0.035-0.046, but
all three alike: spread 0.038), and the comparison is asserted like the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import pytest
import scenarios

from stabilizer import StabilityResult, stabilize
from stabilizer.data import prepare_data

PROBE_STEPS = 120
FRESH_SEEDS = (101, 202, 303)

pytestmark = pytest.mark.slow


class _LossWatch(keras.callbacks.Callback):
    """Keeps the loss logged after every step (host side: this is the test, not the product)."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", math.nan)))


def _retrain(model: keras.Model, data, batch_size: int, callbacks) -> tuple[float, float]:
    """Train 3x the probe length: (final validation loss or inf if diverged, initial one)."""
    steps = 3 * PROBE_STEPS
    inputs = data.fit_inputs(batch_size, steps, seed=0)
    initial = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)["loss"]
    watch = _LossWatch()
    history = model.fit(inputs["x"], inputs["y"], batch_size=batch_size, shuffle=False,
                        epochs=3, steps_per_epoch=PROBE_STEPS, verbose=0,
                        validation_data=(data.x_val, data.y_val),
                        callbacks=[*callbacks, watch])
    final = history.history["val_loss"][-1]
    # Keras logs the epoch's running mean of the loss; an explosion shows in it too.
    running = np.array(watch.losses)
    diverged = not np.isfinite(running).all() or not math.isfinite(final) \
        or running.max() > 10 * running[0]
    return (math.inf if diverged else final), initial


def _spread(losses: list[float], floor: float) -> float:
    if not all(map(math.isfinite, losses)):
        return math.inf
    return float(np.std(np.log(np.array(losses) + floor)))


def _check_repair(build_fn, user_batch: int, tmp_path,
                  check: Callable[[StabilityResult], None] | None = None) -> StabilityResult:
    x, y = scenarios.digits()
    result = stabilize(build_fn, (x, y), space="default", budget=6, seeds=2,
                       probe_steps=PROBE_STEPS, evaluations=4, batch_size=user_batch,
                       out_dir=str(tmp_path), seed=0, diagnose_after=False,
                       train_steps=3 * PROBE_STEPS)
    assert result.baseline.components.verdict != "stable", result.summary()
    assert result.improved and result.components.verdict == "stable", result.summary()
    if check is not None:
        check(result)

    data = prepare_data((x, y), seed=0)
    chosen, baseline, initial = [], [], []
    for seed in FRESH_SEEDS:
        keras.utils.set_random_seed(seed)
        model = result.build_model(train_steps=3 * PROBE_STEPS)
        kwargs = result.fit_kwargs()
        chosen.append(_retrain(model, data, kwargs["batch_size"], kwargs["callbacks"])[0])
        keras.utils.set_random_seed(seed)
        final, start = _retrain(build_fn(), data, user_batch, [])
        baseline.append(final)
        initial.append(start)
    floor = 0.05 * float(np.median([v for v in initial if math.isfinite(v)]))
    assert all(map(math.isfinite, chosen)), f"chosen config diverged on retraining: {chosen}"
    assert np.mean(chosen) < np.mean(baseline), (chosen, baseline)
    spreads = (_spread(chosen, floor), _spread(baseline, floor))
    assert spreads[0] < spreads[1], (chosen, baseline, floor)
    return result


@pytest.mark.xfail(strict=False, reason=(
    "since the space leaves out the BatchNormalization dimensions of a model without "
    "BatchNormalization (the trust change, abdf4dc), TPE draws other candidates at this "
    "6-trial budget: at abdf4dc none of the 6 is probed stable; the best, trial 3 "
    "(initializer=auto, lr 0.018, plateau, clipnorm 0.11, batch 16), ends at val loss 2.10 "
    "against the baseline's 21.9 but has vanishing_share 0.143 > 0. Measured, not yet "
    "repaired: see the note of issue 31"))
def test_deep_sigmoid_with_large_normal_init_is_repaired(tmp_path):
    _check_repair(scenarios.deep_sigmoid_large_init, 32, tmp_path)


def test_relu_mlp_at_learning_rate_one_is_repaired(tmp_path):
    def check(result: StabilityResult) -> None:
        assert result.baseline.components.diverged

    _check_repair(scenarios.relu_lr_one, 32, tmp_path, check=check)


def test_batchnorm_at_batch_size_two_is_repaired(tmp_path):
    def check(result: StabilityResult) -> None:
        assert (result.best_config.batch_size or 2) > 2

    _check_repair(scenarios.batchnorm_mlp, 2, tmp_path, check=check)

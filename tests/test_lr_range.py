"""The LR range test: the curve reader on scripted curves, and short real runs."""

from __future__ import annotations

import diagnosis_models as models
import numpy as np
import pytest
import scenarios

from stabilizer.config import StabilityConfig
from stabilizer.errors import ConfigError, ProbeFailedError
from stabilizer.lr_range import ExponentialRamp, analyse_lr_curve, lr_range_test


def test_the_ramp_is_exponential_from_min_to_max():
    ramp = ExponentialRamp(1e-4, 1.0, 5)
    values = ramp.values()
    assert values[0] == pytest.approx(1e-4) and values[-1] == pytest.approx(1.0)
    assert np.allclose(values[1:] / values[:-1], 10.0)
    assert float(np.asarray(ramp(4))) == pytest.approx(1.0, rel=1e-5)
    assert ExponentialRamp.from_config(ramp.get_config()).get_config() == ramp.get_config()


def u_curve(n: int = 100, bottom: int = 60, blow: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Flat, then falling to a minimum at `bottom`, then blowing up from `blow`."""
    lrs = np.geomspace(1e-6, 10, n)
    loss = np.full(n, 2.3)
    loss[30:bottom] = np.geomspace(2.3, 0.3, bottom - 30)
    loss[bottom:blow] = 0.3
    loss[blow:] = 0.3 * 3.0 ** np.arange(1, n - blow + 1)
    return lrs, loss


def test_max_stable_lr_is_the_lowest_loss_before_the_blow_up():
    lrs, loss = u_curve()
    result = analyse_lr_curve(lrs, loss)
    assert result.reliable
    assert result.max_stable_lr == pytest.approx(lrs[59], rel=0.3)
    assert result.blowup_lr is not None and lrs[80] <= result.blowup_lr <= lrs[83]
    assert result.max_stable_lr < result.blowup_lr
    assert result.suggested_lr == pytest.approx(result.max_stable_lr / 10)
    assert result.bounds() == (pytest.approx(result.max_stable_lr / 30), result.max_stable_lr)


def test_a_nan_is_a_blow_up():
    lrs, loss = u_curve(blow=100)
    loss[90:] = np.nan
    result = analyse_lr_curve(lrs, loss)
    assert result.blowup_lr == pytest.approx(lrs[90])
    assert result.max_stable_lr <= lrs[89]


def test_a_flat_curve_is_unreliable_without_blow_up():
    lrs = np.geomspace(1e-6, 1e-3, 50)
    result = analyse_lr_curve(lrs, np.full(50, 2.3))
    assert not result.reliable and result.blowup_lr is None


def test_a_single_noisy_step_is_not_a_blow_up():
    lrs, loss = u_curve(blow=100)
    loss[70] = 50.0
    result = analyse_lr_curve(lrs, loss)
    assert result.blowup_lr is None


def test_arguments_are_checked():
    with pytest.raises(ConfigError, match="min_lr"):
        lr_range_test(scenarios.healthy_mlp, scenarios.digits(), min_lr=0)
    with pytest.raises(ConfigError, match="expected min_lr < max_lr"):
        lr_range_test(scenarios.healthy_mlp, scenarios.digits(), min_lr=1.0, max_lr=0.1)
    with pytest.raises(ConfigError, match="steps"):
        lr_range_test(scenarios.healthy_mlp, scenarios.digits(), steps=2)


def test_range_test_on_a_healthy_model_finds_a_stable_range_above_its_rate():
    result = lr_range_test(models.healthy_mlp, scenarios.digits(), steps=60)
    assert result.reliable and result.user_lr == pytest.approx(1e-3)
    assert 1e-3 < result.max_stable_lr < 10
    assert result.blowup_lr is None or result.blowup_lr > result.max_stable_lr
    assert len(result.learning_rates) == len(result.losses) == result.steps_done
    assert result.learning_rates[0] == pytest.approx(1e-6)
    # The smoothed loss at the chosen rate is well below the start.
    assert result.min_loss < 0.9 * result.smoothed[0]
    assert "max stable LR" in result.to_text()
    assert result.to_dict()["steps_done"] == result.steps_done


def test_range_test_flags_a_learning_rate_past_the_blow_up():
    result = lr_range_test(scenarios.relu_lr_one, scenarios.digits(), steps=60,
                           candidate=StabilityConfig(initializer="auto"))
    assert result.user_lr == pytest.approx(1.0)
    assert result.blowup_lr is not None and result.blowup_lr < 1.0
    assert result.max_stable_lr < result.blowup_lr
    at = int(np.argmin(np.abs(result.learning_rates - result.blowup_lr)))
    assert not np.isfinite(result.losses[at]) or result.smoothed[at] > 4 * result.min_loss


def test_a_failing_build_fn_is_reported_once():
    def broken():
        raise RuntimeError("no such layer")

    with pytest.raises(ProbeFailedError) as info:
        lr_range_test(broken, scenarios.digits(), steps=10)
    message = str(info.value)
    assert message.startswith("build_fn raised RuntimeError: no such layer")
    assert message.count("build_fn raised") == 1  # the ramp's wrapper does not wrap it again

"""The score on scripted histories: exact, fast, one behaviour per test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stabilizer.scoring import (
    DIVERGED_SCORE,
    WEIGHTS,
    explode_rate,
    oscillation,
    score_traces,
    spike_rate,
    vanishing_share,
)
from stabilizer.telemetry import ProbeTrace


def trace(loss, *, val=None, grad=None, layers=None, diverged=False, initial=None,
          chance=math.nan) -> ProbeTrace:
    loss = np.asarray(loss, float)
    n = len(loss)
    grad = np.ones(n) if grad is None else np.asarray(grad, float)
    layers = np.ones((n, 2)) if layers is None else np.asarray(layers, float)
    return ProbeTrace(loss=loss, grad_norm=grad, layer_grad_norm=layers,
                      update_ratio=np.full((n, layers.shape[1]), 1e-3), layer_names=["a", "b"],
                      val_loss=list(val if val is not None else [loss[-1]]), val_metrics=[],
                      bn_stats=[], learning_rate=[], diverged=diverged, steps_done=n,
                      initial_val_loss=loss[0] if initial is None else initial,
                      chance_loss=chance)


SMOOTH = np.geomspace(2.0, 0.2, 100)


def test_smooth_decreasing_loss_is_stable_with_positive_quality():
    c = score_traces([trace(SMOOTH), trace(SMOOTH * 1.01)], reference_loss=2.0)
    assert c.verdict == "stable" and c.reasons == []
    floor = 0.05 * 2.0
    assert c.quality == pytest.approx(math.log((2.0 + floor) / (np.median([0.2, 0.202]) + floor)))
    assert c.oscillation < 0.01 and c.spike_rate == 0 and c.explode_rate == 0


def test_score_is_reproducible_from_its_components():
    rng = np.random.default_rng(0)
    noisy = SMOOTH * np.exp(rng.normal(0, 0.3, 100))
    c = score_traces([trace(noisy, val=[0.3]), trace(SMOOTH, val=[0.5])], reference_loss=2.0)
    expected = c.quality - sum(c.penalties().values())
    assert c.score == pytest.approx(expected)
    assert set(c.penalties()) == set(WEIGHTS)


def test_a_nan_probe_is_diverged_whatever_else():
    c = score_traces([trace(SMOOTH), trace(SMOOTH, diverged=True)])
    assert c.diverged and c.verdict == "diverged" and c.score == DIVERGED_SCORE


def test_non_finite_final_validation_loss_counts_as_diverged():
    assert score_traces([trace(SMOOTH, val=[float("nan")])]).diverged


def test_flat_loss_is_stuck_not_stable():
    flat = np.full(100, 2.3)
    c = score_traces([trace(flat), trace(flat)], reference_loss=2.3)
    assert c.stuck and c.verdict == "stuck"
    assert c.score == pytest.approx(c.quality - WEIGHTS["stuck"])


def test_falling_from_worse_than_chance_to_chance_is_stuck_not_progress():
    # A confidently wrong classifier (untrained loss 20) that ends at the uniform
    # prediction's 2.30 learned nothing: progress is measured from the chance level.
    fall = np.geomspace(20.0, 2.30, 100)
    c = score_traces([trace(fall, chance=2.30), trace(fall, chance=2.30)], reference_loss=20.0)
    assert c.stuck and c.verdict == "stuck"
    assert "measured from the chance level 2.3" in c.reasons[-1]
    learner = score_traces([trace(np.geomspace(20.0, 0.5, 100), chance=2.30)] * 2,
                           reference_loss=20.0)
    assert learner.verdict == "stable" and learner.progress == pytest.approx(1 - 0.5 / 2.30)
    assert learner.score > c.score + WEIGHTS["stuck"] - 1e-9
    unknown = score_traces([trace(fall), trace(fall)], reference_loss=20.0)  # no chance level
    assert unknown.verdict == "stable"


def test_oscillating_loss_is_penalised_more_than_smooth():
    zigzag = SMOOTH * np.where(np.arange(100) % 2 == 0, 3.0, 1 / 3.0)
    assert oscillation(zigzag) > 0.5 > 0.01 > oscillation(SMOOTH)
    c = score_traces([trace(zigzag, val=[0.2])], reference_loss=2.0)
    assert c.verdict == "unstable" and any("oscillation" in r for r in c.reasons)


def test_spikes_are_counted_in_the_later_half():
    loss = SMOOTH.copy()
    loss[[60, 70, 80, 90]] *= 5
    assert spike_rate(loss) == pytest.approx(4 / 50)
    assert spike_rate(SMOOTH) == 0


def test_gradient_spikes_and_non_finite_norms_count_as_exploding():
    grad = np.ones(100)
    grad[[50, 60]] = 100.0
    grad[70] = np.inf
    assert explode_rate(grad) == pytest.approx(3 / 100)
    assert explode_rate(np.ones(100)) == 0


def test_a_layer_far_below_the_largest_is_vanishing():
    layers = np.ones((100, 3))
    layers[:, 0] = 1e-6
    assert vanishing_share(layers) == pytest.approx(1 / 3)
    assert vanishing_share(np.ones((100, 3))) == 0


def test_seed_spread_is_the_std_of_log_final_loss_above_the_floor():
    c = score_traces([trace(SMOOTH, val=[0.2]), trace(SMOOTH, val=[0.8])], reference_loss=2.0)
    assert c.seed_spread == pytest.approx(np.std(np.log([0.2 + 0.1, 0.8 + 0.1])))


def test_near_zero_losses_are_not_read_as_seed_spread():
    # 0.01 vs 0.02 is a 2x ratio but negligible on a problem that starts at 2.0
    c = score_traces([trace(SMOOTH, val=[0.01]), trace(SMOOTH, val=[0.02])], reference_loss=2.0)
    assert c.seed_spread < 0.05 and "seed_spread" not in " ".join(c.reasons)


def test_an_untrained_loss_far_above_chance_does_not_flatten_the_scale():
    """A model that explodes before its first step (untrained loss 1e20, chance 0.17):
    the scale is 100x the chance level, so final losses of 0.2 and 0.9 still rank, and
    seeds at 0.2 and 0.8 still part; with the chance level unknown it stays 1e20."""
    fall = np.geomspace(1.0, 0.2, 100)

    def scored(*finals, chance=0.17):
        return score_traces([trace(fall, val=[v], initial=1e20, chance=chance) for v in finals])

    assert scored(0.2, 0.2).reference_loss == pytest.approx(17.0)
    assert scored(0.2, 0.2).score > scored(0.9, 0.9).score + 1
    assert scored(0.2, 0.8).seed_spread > 0.15
    assert scored(0.2, 0.8, chance=math.nan).seed_spread < 1e-9  # the old flattening


def test_ranking_prefers_lower_final_loss_at_equal_stability():
    good = score_traces([trace(SMOOTH, val=[0.1])], reference_loss=2.0)
    worse = score_traces([trace(SMOOTH, val=[0.4])], reference_loss=2.0)
    assert good.score > worse.score


def test_a_validation_loss_far_above_the_training_loss_costs_its_gap():
    # Same validation loss at the end; one fits its training data twice as well as
    # the other. The one whose training loss ran away from the validation loss is
    # overfitting (it will climb back when trained longer) and ranks lower.
    fitting = score_traces([trace(SMOOTH, val=[0.2])] * 2, reference_loss=2.0)
    overfit = score_traces([trace(SMOOTH * 0.5, val=[0.2])] * 2, reference_loss=2.0)
    assert fitting.generalization_gap == pytest.approx(0.0, abs=0.02)
    tail = np.mean((SMOOTH * 0.5)[-10:])
    assert overfit.generalization_gap == pytest.approx(math.log(0.2 / tail))
    assert overfit.score == pytest.approx(
        fitting.score - WEIGHTS["generalization_gap"] * (overfit.generalization_gap
                                                         - fitting.generalization_gap))
    assert overfit.score < fitting.score and overfit.verdict == "stable"
    # A validation loss below the training loss (dropout, augmentation) earns nothing.
    under = score_traces([trace(SMOOTH * 2, val=[0.2])] * 2, reference_loss=2.0)
    assert under.generalization_gap == 0.0
    assert under.score == pytest.approx(under.quality - sum(under.penalties().values()))

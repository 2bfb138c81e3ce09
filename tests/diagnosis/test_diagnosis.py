"""Diagnosis: one purpose-built model per finding, healthy models without false alarms,
the report in its three forms, and focusing a search space.

Real fits are short (40 steps, digits, tiny layers). Each diagnosis runs once per
module (cached) and several tests read it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import diagnosis_models as models
import keras
import numpy as np
import pytest
import scenarios

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.diagnosis import (
    CLIP_REPAIR,
    INIT_REPAIR,
    THRESHOLDS,
    Diagnosis,
    Evidence,
    Finding,
    check_initializers,
    diagnose,
    gradient_stats,
    loss_stats,
)
from stabilizer.diagnosis.checks import gradients
from stabilizer.errors import ConfigError
from stabilizer.lr_range import LRRangeResult
from stabilizer.space import Choice, Fixed, FloatRange, SearchSpace, load_space
from stabilizer.telemetry import ProbeTrace

STEPS = 40


@functools.cache
def run(name: str, *, seeds: int = 1, steps: int = STEPS, batch_size: int = 32,
        evaluations: int = 2, lr_range: bool = False, data: str = "digits",
        **thresholds: float) -> Diagnosis:
    """One cached diagnosis of a factory from diagnosis_models (or scenarios)."""
    build = getattr(models, name, None) or getattr(scenarios, name)
    arrays = {"digits": scenarios.digits, "images": models.digits_images,
              "outliers": models.digits_with_outliers}[data]()
    return diagnose(build, arrays, seeds=seeds, steps=steps, batch_size=batch_size,
                    evaluations=evaluations, lr_range=lr_range, lr_range_steps=60,
                    thresholds=thresholds or None)


def severity(diagnosis: Diagnosis, code: str) -> str | None:
    finding = diagnosis.get(code)
    return finding.severity if finding is not None else None


# -- healthy models: nothing above "info" on 3 seeds ------------------------------------


@pytest.mark.parametrize("name, data", [("healthy_mlp", "digits"), ("deep_tanh_mlp", "digits"),
                                        ("small_cnn", "images")])
def test_healthy_models_have_no_finding_above_info(name, data):
    d = run(name, seeds=3, data=data, lr_range=True)
    assert d.above("info") == [], d.to_text(epochs=False)
    assert d.healthy and len(d.per_seed) == 3
    assert all(s["progress"] > THRESHOLDS["min_progress"] for s in d.per_seed)
    # The LR range test ran and the user's 1e-3 is well inside its stable range.
    assert d.lr_range is not None and d.lr_range.reliable
    assert d.user_lr == pytest.approx(1e-3)
    assert d.lr_range.max_stable_lr > 3e-3


# -- one purpose-built model per finding --------------------------------------------


def test_gradients_exploding_to_overflow_are_an_error():
    d = run("nan_on_large_lr")
    explode = d.get("exploding_gradients")
    assert explode is not None and explode.severity == "error"
    assert explode.evidence["nonfinite_steps"] > 0 \
        or explode.evidence["growth"] > THRESHOLDS["explode_growth_error"]
    assert severity(d, "diverged") == "error"
    assert "clipping" in explode.dimensions


def test_gradient_spikes_from_outlier_samples_are_exploding_gradients():
    d = run("logits_mlp", data="outliers", seeds=2, steps=60)
    explode = d.get("exploding_gradients")
    assert explode is not None and explode.severity == "warning"
    assert explode.evidence["spikes_per_seed"] >= THRESHOLDS["explode_spikes"]
    assert explode.evidence["max_spike_ratio"] > THRESHOLDS["explode_factor"]
    assert explode.evidence["first_step"] >= 0


def test_gradient_growth_before_divergence_is_exploding_gradients():
    d = run("relu_lr_one_logits", lr_range=True)
    explode = d.get("exploding_gradients")
    assert explode is not None
    assert explode.evidence["growth"] > THRESHOLDS["explode_growth"]


def test_loss_spikes_from_outlier_samples():
    d = run("logits_mlp", data="outliers", seeds=2, steps=60)
    spikes = d.get("loss_spikes")
    assert spikes is not None and spikes.severity == "warning"
    assert spikes.evidence["spikes_per_seed"] >= THRESHOLDS["loss_spikes"]
    assert "clipping" in spikes.dimensions


def test_vanishing_gradients_in_deep_sigmoid_with_small_init():
    d = run("vanishing_deep_sigmoid")
    vanish = d.get("vanishing_gradients")
    assert vanish is not None and vanish.severity == "error"
    assert vanish.evidence["min_layer_ratio"] < THRESHOLDS["vanish_ratio_error"]
    assert "sequential/dense" in vanish.layers  # the first layer
    assert severity(d, "small_init") == "warning"


def test_dead_relu_units():
    d = run("dead_relu_mlp")
    dead = d.get("dead_relu")
    assert dead is not None and dead.severity == "error"
    assert dead.evidence["worst_layer_dead_share"] >= THRESHOLDS["dead_share_error"]
    assert set(dead.layers) == {"dense", "dense_1"}


def test_saturated_tanh_units_and_large_init():
    d = run("saturated_tanh_mlp")
    sat = d.get("saturated_activations")
    assert sat is not None and sat.at_least("warning")
    assert sat.evidence["worst_layer_saturated_share"] >= THRESHOLDS["saturated_share"]
    large = d.get("large_init")
    assert large is not None and large.severity == "warning"
    assert large.evidence["dense.variance_gain"] == pytest.approx(64 * 4.0)


def test_oscillating_loss():
    d = run("oscillating_mlp", seeds=2, steps=60)
    osc = d.get("oscillating_loss")
    assert osc is not None and osc.severity == "warning"
    assert osc.evidence["noise_ratio"] > THRESHOLDS["oscillation_noise"]
    assert osc.evidence["trend"] > -THRESHOLDS["oscillation_trend"]
    assert {"learning_rate", "lr_schedule"} <= set(osc.dimensions)


def test_a_loss_that_falls_then_climbs_back_is_reported_rising():
    d = run("momentum_runaway_mlp", seeds=2, steps=120, evaluations=4)
    rising = d.get("loss_rising")
    assert rising is not None and rising.at_least("warning")
    # An error exactly when it ends above the untrained model's loss (all it learned lost).
    ended_above = rising.evidence["final_val_loss"] > rising.evidence["initial_val_loss"]
    assert (rising.severity == "error") == ended_above
    assert rising.evidence["val_rise"] >= THRESHOLDS["loss_rise"]
    assert rising.evidence["train_rise"] >= THRESHOLDS["loss_rise"]
    assert "diverged" not in d  # 10x its start: never reached
    # A healthy model trained as long does not rise.
    assert "loss_rising" not in run("healthy_mlp", seeds=2, steps=120, evaluations=4)


def test_focus_caps_the_learning_rate_at_the_one_whose_loss_rose():
    d = Diagnosis([finding("loss_rising", "error")], StabilityConfig(), [0], 120, 32,
                  dict(THRESHOLDS), lr_range=_range(0.6), user_lr=0.3)
    space = load_space("default")  # learning rate 1e-4 .. 1e-1
    assert d.focus(space).dimensions["learning_rate"].high == pytest.approx(0.1)
    wide = space.with_dimensions(learning_rate=FloatRange(1e-4, 1.0, log=True))
    # The range test's ramp called 0.6 stable; the user's training at 0.3 came apart.
    assert d.focus(wide).dimensions["learning_rate"].high == pytest.approx(0.3)
    assert any("loss rose" in note for note in d.focus_notes(wide))


def test_stalled_training():
    d = run("stalled_mlp")
    stalled = d.get("stalled")
    assert stalled is not None and stalled.at_least("warning")
    assert stalled.evidence["progress"] < THRESHOLDS["min_progress"]
    assert "val_accuracy_change" in stalled.evidence


def test_a_classifier_worse_than_chance_is_stalled_until_it_beats_the_chance_level():
    # normal(stddev=4) sigmoid layers: confidently wrong from the start (loss ~30 on 10
    # classes); falling towards the uniform prediction's 2.30 would not be progress.
    stalled = run("deep_sigmoid_large_init").get("stalled")
    assert stalled is not None and stalled.severity == "error"
    ev = stalled.evidence
    assert ev["chance_loss"] == pytest.approx(math.log(10), abs=0.02)
    assert ev["initial_val_loss"] > 5 * ev["chance_loss"] and ev["progress"] < 0
    assert f"is {1 - ev['progress']:.3g}x the chance level 2.3" in stalled.message


def test_divergence():
    d = run("relu_lr_one", lr_range=True)
    div = d.get("diverged")
    assert div is not None and div.severity == "error"
    assert div.evidence["seeds_diverged"] == 1
    assert div.evidence["stopped_at_step"] < STEPS
    assert d.findings[0].severity == "error"  # most severe first


def test_learning_rate_above_the_range_test():
    d = run("relu_lr_one", lr_range=True)
    lr = d.get("lr_too_high")
    assert lr is not None and lr.severity == "error"  # at or above the blow-up point
    assert lr.evidence["learning_rate"] == pytest.approx(1.0)
    assert lr.evidence["max_stable_lr"] < 0.5 <= 1.0
    assert lr.evidence["ratio"] > 1


def test_run_to_run_variance():
    d = run("heavy_momentum_mlp", seeds=3, steps=60, evaluations=10)
    var = d.get("seed_variance")
    assert var is not None and var.at_least("warning")
    assert var.evidence["loss_spread"] > THRESHOLDS["seed_spread"]
    assert var.evidence["lag_share"] > THRESHOLDS["seed_lag"]
    assert 0 <= var.evidence["disagreement"] <= 1
    assert var.evidence["evaluations"] == 10


def test_batch_too_small_for_batchnorm():
    d = run("batchnorm_mlp", batch_size=2)
    small = d.get("bn_small_batch")
    assert small is not None and small.at_least("warning")
    assert small.evidence["batch_size"] == 2
    assert "batch_size" in small.dimensions


def test_batchnorm_train_inference_gap():
    d = run("batchnorm_fast_mlp", batch_size=4)
    gap = d.get("bn_mode_gap")
    assert gap is not None and gap.severity == "warning"
    assert abs(gap.evidence["gap"]) > THRESHOLDS["bn_gap"]
    assert gap.evidence["initial_weight_left"] < THRESHOLDS["bn_init_weight"]
    # the gap confirms the small batch: an error, not a warning
    assert severity(d, "bn_small_batch") == "error"


def test_batchnorm_moving_statistics_that_cannot_settle_in_the_probe():
    d = run("batchnorm_slow_mlp")
    unsettled = d.get("bn_unsettled")
    assert unsettled is not None and unsettled.severity == "info"
    assert unsettled.evidence["initial_weight_left"] == pytest.approx(0.999 ** STEPS)
    assert unsettled.evidence["max_var_log_ratio"] > THRESHOLDS["bn_var_ratio"] \
        or unsettled.evidence["max_mean_shift"] > THRESHOLDS["bn_shift"]
    # With the short-probe allowance overridden, the same evidence is a warning.
    strict = run("batchnorm_slow_mlp", bn_init_weight=1.0)
    assert severity(strict, "bn_unsettled") == "warning"
    assert strict.thresholds["bn_init_weight"] == 1.0


def test_subclassed_model_reports_what_was_not_checked():
    d = run("subclassed_mlp")
    notes = [f for f in d.findings if f.code == "not_checked"]
    assert notes and all(f.severity == "info" for f in notes)
    assert any("subclassed" in f.message for f in notes)
    assert d.healthy  # the gradient and loss checks still ran and found nothing


# -- static initializer checks (no training) ------------------------------------------


def codes_of(model: keras.Model) -> dict[str, str]:
    findings, _ = check_initializers(model)
    return {f.code: f.severity for f in findings}


def test_relu_with_glorot_is_info_when_shallow_and_a_warning_when_deep():
    assert codes_of(scenarios.healthy_mlp()) == {"init_mismatch": "info"}
    findings, records = check_initializers(models.relu_glorot_deep())
    mismatch = next(f for f in findings if f.code == "init_mismatch")
    assert mismatch.severity == "warning"
    assert mismatch.evidence["total_variance_gain"] < 1 / THRESHOLDS["init_drift"]
    assert len(records) == 13 and records[0]["variance_gain"] == pytest.approx(0.5 * 64 * 2 / 96)


@pytest.mark.parametrize("factory, text", [(models.selu_he, "SELU without LeCun normal"),
                                           (models.tanh_he, "tanh with He")])
def test_named_mismatches(factory, text):
    findings, _ = check_initializers(factory())
    mismatch = next(f for f in findings if f.code == "init_mismatch")
    assert text in mismatch.message and mismatch.dimensions == ("initializer",)


def test_matched_initializers_have_no_static_finding():
    for factory in (models.healthy_mlp, models.deep_tanh_mlp, models.small_cnn):
        assert codes_of(factory()) == {}


def test_a_relu_rnn_with_glorot_input_kernels_is_no_mismatch_but_a_relu_dense_is():
    """Glorot is the recurrent layer's match (what `auto` gives it), not the Dense's."""
    model = keras.Sequential([keras.Input((20, 2)),
                              keras.layers.SimpleRNN(16, activation="relu"),
                              keras.layers.Dense(1)])
    assert "init_mismatch" not in codes_of(model)
    model = keras.Sequential([keras.Input((20, 2)),
                              keras.layers.SimpleRNN(16, activation="relu"),
                              keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    findings, _ = check_initializers(model)
    assert [f.layers for f in findings if f.code == "init_mismatch"] == [[model.layers[1].name]]


def test_large_stddev_normal_is_large_init():
    assert codes_of(scenarios.deep_sigmoid_large_init())["large_init"] == "warning"


def _rnn(recurrent_initializer: object, cell: str = "SimpleRNN") -> keras.Model:
    return keras.Sequential([keras.Input((30, 2)),
                             getattr(keras.layers, cell)(
                                 16, activation="relu",
                                 recurrent_initializer=recurrent_initializer),
                             keras.layers.Dense(1)])


def test_a_recurrent_kernel_with_spectral_radius_above_one_is_large_init():
    model = _rnn(keras.initializers.Orthogonal(gain=2.0))
    findings, _ = check_initializers(model)
    (large,) = [f for f in findings if f.code == "large_init"]
    assert large.severity == "warning" and large.dimensions == ("initializer",)
    (radius,) = [v for k, v in large.evidence.items() if k.endswith(".recurrent_radius")]
    assert radius == pytest.approx(2.0, rel=1e-3)
    assert large.layers == [model.layers[0].cell.name]


def test_keras_default_recurrent_kernels_are_not_large_init():
    assert "large_init" not in codes_of(_rnn("orthogonal"))
    assert "large_init" not in codes_of(_rnn(keras.initializers.Orthogonal(gain=2.0), "LSTM"))


# -- pure checks on scripted traces (exact) ---------------------------------------------


def trace(loss, grad=None, layers=None, val=None, initial=2.3) -> ProbeTrace:
    loss = np.asarray(loss, float)
    n = len(loss)
    grad = np.ones(n) if grad is None else np.asarray(grad, float)
    layers = np.ones((n, 2)) if layers is None else np.asarray(layers, float)
    return ProbeTrace(loss=loss, grad_norm=grad, layer_grad_norm=layers,
                      update_ratio=np.full(layers.shape, 1e-3), layer_names=["a", "b"],
                      val_loss=list(val or [loss[-1]]), val_metrics=[], bn_stats=[],
                      learning_rate=[], diverged=False, steps_done=n, initial_val_loss=initial)


def test_gradient_spikes_are_counted_against_the_running_median():
    grad = np.ones(100)
    grad[[40, 70]] = 20.0
    stats = gradient_stats(trace(np.ones(100), grad))
    assert stats["global_spikes"] == 2 and stats["first_spike_step"] == 40
    assert stats["max_spike_ratio"] == pytest.approx(20.0)
    grad[90] = np.inf
    assert gradient_stats(trace(np.ones(100), grad))["nonfinite_steps"] == 1


def test_layer_ratio_to_the_output_layer():
    layers = np.ones((50, 2))
    layers[:, 0] = 1e-6
    stats = gradient_stats(trace(np.ones(50), layers=layers))
    assert stats["output_layer"] == "b" and stats["min_layer_ratio"] == pytest.approx(1e-6)


def test_gradients_that_are_zero_everywhere_are_vanishing_without_a_nan_ratio():
    """A saturated clipped loss (PyTorch/JAX after a blow-up) has no gradient at all."""
    evidence = Evidence.__new__(Evidence)
    evidence.th, evidence.findings = dict(THRESHOLDS), []
    evidence.grads = [gradient_stats(trace(np.ones(20), layers=np.zeros((20, 2))))]
    gradients(evidence)
    vanish = next(f for f in evidence.findings if f.code == "vanishing_gradients")
    assert vanish.evidence["min_layer_median"] == 0.0
    assert "nan" not in vanish.message and "output layer's gradient norm is zero" in vanish.message


def test_loss_oscillation_is_measured_against_sampling_noise():
    rng = np.random.default_rng(0)
    noisy = 2.0 * np.exp(rng.normal(0, 0.05, 100))
    calm = loss_stats(trace(noisy), sampling_noise=0.05)
    assert calm["noise_ratio"] < 1.5
    bouncing = 2.0 * np.exp(np.where(np.arange(100) % 2 == 0, 0.3, -0.3))
    wild = loss_stats(trace(bouncing), sampling_noise=0.05)
    assert wild["noise_ratio"] > 4 and abs(wild["trend"]) < 0.5


def test_loss_spikes_must_beat_the_sampling_noise():
    loss = np.full(100, 1.0)
    loss[[50, 80]] = 3.0
    assert loss_stats(trace(loss))["loss_spikes"] == 2
    # A 3x jump is within 4 sigma when the batch loss noise is 0.5 nats.
    assert loss_stats(trace(loss), sampling_noise=0.5)["loss_spikes"] == 0


# -- report, thresholds, focus --------------------------------------------------------


def test_report_as_dict_text_and_html():
    d = run("dead_relu_mlp")
    data = d.to_dict()
    json.dumps(data)  # JSON-ready: no NaN, no numpy types
    assert data["worst"] == "error"
    assert {f["code"] for f in data["findings"]} == set(d.codes())
    finding = next(f for f in data["findings"] if f["code"] == "dead_relu")
    assert finding["evidence"]["worst_layer_dead_share"] >= 0.9
    assert finding["thresholds"] == {"dead_share": 0.5, "dead_share_error": 0.9}
    text = d.to_text()
    assert "ERROR    dead_relu" in text and "evidence:" in text and "addressed by:" in text
    assert "Per evaluation" in text and "weight mean" in text and "update/weight" in text
    html = d.html_section()
    assert html.startswith("<section class='diagnosis'>") and "dead_relu" in html
    assert d._repr_html_() == html


def test_per_epoch_record_has_weights_update_ratio_and_learning_rate():
    d = run("healthy_mlp", seeds=3, data="digits", lr_range=True)  # the healthy test's run
    epochs = d.epochs[0]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert [e["step"] for e in epochs] == [20, 40]
    for e in epochs:
        assert e["learning_rate"] == pytest.approx(1e-3)
        layer = e["layers"]["sequential/dense"]
        assert layer["weight_std"] > 0 and 0 < layer["update_ratio"] < 0.1
        assert 0 <= e["dead_share"]["dense"] < THRESHOLDS["dead_share"]


def test_thresholds_are_overridable_and_checked():
    strict = run("healthy_mlp", seeds=1, dead_share=0.0)
    assert "dead_relu" in strict.codes("warning")
    with pytest.raises(ConfigError, match="unknown key 'dead_shares'"):
        diagnose(models.healthy_mlp, scenarios.digits(), thresholds={"dead_shares": 0.1})
    with pytest.raises(ConfigError, match="unexpected argument 'probe_stepz'"):
        diagnose(models.healthy_mlp, scenarios.digits(), probe_stepz=10)


def finding(code: str, severity: str = "warning") -> Finding:
    return Finding(code, code, severity, {}, {}, ())


def test_focus_puts_clipping_first_and_caps_the_learning_rate():
    lr = LRRangeResult(np.geomspace(1e-6, 10, 10), np.ones(10), np.ones(10), 1e-6, 10, 10,
                       max_stable_lr=5e-3, suggested_lr=5e-4, blowup_lr=0.05, min_loss=0.5,
                       reliable=True)
    d = Diagnosis([finding("exploding_gradients"), finding("lr_too_high", "error")],
                  StabilityConfig(), [0], 40, 32, dict(THRESHOLDS), lr_range=lr, user_lr=0.1)
    space = load_space("default")
    focused = d.focus(space)
    assert focused.dimensions["clipping"].values[0] == "global_norm"
    assert focused.dimensions["clipping"].values[-1] == "none"  # last, not gone
    # The range test ran unclipped: with clipping searched the cap is 10x its stable LR.
    assert focused.dimensions["learning_rate"] == FloatRange(1e-4, 5e-2, log=True)
    assert focused.dimensions["initializer"].values[0] == "auto"
    assert "focused by diagnosis" in focused.description
    first = d.first_trial(space)
    assert first["clipping"] == "global_norm" and first["learning_rate"] == pytest.approx(5e-4)
    assert "decay_rate" not in first or first["lr_schedule"] == "exponential"
    assert d.focus_notes(space)


def test_focus_for_batchnorm_prefers_large_batches_and_matched_initializers():
    d = Diagnosis([finding("bn_small_batch"), finding("init_mismatch")], StabilityConfig(),
                  [0], 40, 2, dict(THRESHOLDS))
    space = SearchSpace({"batch_size": Choice((4, 16, 64)),
                         "initializer": Choice(("keep", "auto"))})
    focused = d.focus(space)
    assert focused.dimensions["batch_size"].values == (64, 16)
    assert focused.dimensions["initializer"].values == ("auto",)


def test_info_findings_do_not_reshape_the_space():
    d = Diagnosis([finding("init_mismatch", "info")], StabilityConfig(), [0], 40, 32,
                  dict(THRESHOLDS))
    space = load_space("quick")
    assert d.focus(space).dimensions == space.dimensions
    assert d.focus_notes(space) == []


def test_a_real_diagnosis_focuses_a_real_space():
    d = run("relu_lr_one", lr_range=True)
    # Gradients explode: the range test is repeated under clipping, which bounds the
    # rates a clipped search tries.
    clipped = d.clipped_lr_range
    assert clipped is not None and clipped.steps_done > 0
    assert "Under global-norm clipping (1.0)" in d.to_text()
    focused = d.focus("quick")
    assert focused.dimensions["clipping"].values[0] != "none"
    high = focused.dimensions["learning_rate"].high
    assert high == pytest.approx(min(1e-2, max(d.lr_range.max_stable_lr,
                                               clipped.max_stable_lr)))
    assert math.isfinite(high) and high < 1.0
    again = Diagnosis.from_dict(json.loads(json.dumps(d.to_dict())))
    assert again.clipped_lr_range.max_stable_lr == pytest.approx(clipped.max_stable_lr)


def _range(max_stable: float) -> LRRangeResult:
    return LRRangeResult(np.geomspace(1e-7, 10, 10), np.ones(10), np.ones(10), 1e-7, 10, 10,
                         max_stable_lr=max_stable, suggested_lr=max_stable / 10,
                         blowup_lr=max_stable * 3, min_loss=0.5, reliable=True)


def test_a_clipped_search_is_bounded_by_the_range_test_under_clipping():
    # An RNN: unclipped, anything above 1e-5 blows up; clipped, rates up to 1e-3 train.
    d = Diagnosis([finding("exploding_gradients"), finding("diverged", "error")],
                  StabilityConfig(), [0], 40, 32, dict(THRESHOLDS), lr_range=_range(1e-5),
                  repaired_lr_range=_range(1e-3), repair=dict(CLIP_REPAIR), user_lr=0.01)
    space = load_space("recurrent")
    # Up to the clipped test's stable rate, down to the plain test's suggestion.
    lr = d.focus(space).dimensions["learning_rate"]
    assert (lr.low, lr.high, lr.log) == (pytest.approx(1e-6), pytest.approx(1e-3), True)
    first = d.first_trial(space)  # clips: the clipped test's suggestion
    assert first["clipping"] != "none" and first["learning_rate"] == pytest.approx(1e-4)
    plain = d.range_test_trial(space)  # the plain test's suggestion
    assert plain["learning_rate"] == pytest.approx(1e-6)
    assert "clipping" not in plain  # this space always clips: the sampler picks how
    unclipped = d.range_test_trial(load_space("default"))
    assert unclipped["clipping"] == "none"
    assert any("under global-norm clipping" in note for note in d.focus_notes(space))


def test_focus_keeps_a_space_that_always_clips_clipping():
    d = Diagnosis([finding("exploding_gradients", "error")], StabilityConfig(), [0], 40, 32,
                  dict(THRESHOLDS))
    recurrent = load_space("recurrent")  # clipping: global_norm, norm, value
    assert d.focus(recurrent).dimensions["clipping"].values == ("global_norm", "norm", "value")
    assert d.first_trial(recurrent)["clipping"] == "global_norm"
    fixed = recurrent.with_dimensions(clipping=Fixed("value"))
    assert d.focus(fixed).dimensions["clipping"] == Fixed("value")
    # Left out of the space (the user's unclipped optimizer): clipping first, none last.
    bare = SearchSpace({"learning_rate": FloatRange(1e-4, 1e-1, log=True)})
    assert d.focus(bare).dimensions["clipping"].values == ("global_norm", "norm", "none")


def test_a_real_tiny_initializer_is_range_tested_again_under_auto():
    d = run("tiny_init_tanh_mlp", lr_range=True)
    assert "small_init" in d.codes("warning") and d.repair == INIT_REPAIR
    # Under the user's normal(0.01) kernels the loss falls at no rate; under the matched
    # initializer it does, and blows up at a finite rate.
    assert not d.lr_range.reliable
    repaired = d.repaired_lr_range
    assert repaired is not None and repaired.reliable and repaired.blowup_lr is not None
    first = d.first_trial("default")
    assert first["initializer"] == "auto"
    assert first["learning_rate"] == pytest.approx(repaired.suggested_lr)
    assert first["batch_size"] == 32  # the user's


def _unreliable(max_stable: float) -> LRRangeResult:
    """A range test whose loss never fell (only its blow-up point means anything)."""
    return dataclasses.replace(_range(max_stable), reliable=False)


def test_an_implicated_initializer_is_range_tested_again_under_auto():
    # Tiny kernels: under the user's initializer the loss falls at no rate (unreliable
    # test); under "auto" it does, up to 0.5. The search tries "auto" first, so that
    # test bounds it and the first trial takes its suggestion.
    d = Diagnosis([finding("small_init"), finding("vanishing_gradients", "error")],
                  StabilityConfig(), [0], 40, 32, dict(THRESHOLDS), lr_range=_unreliable(2e-4),
                  repaired_lr_range=_range(0.5), repair=dict(INIT_REPAIR), user_lr=0.05)
    space = load_space("default")  # learning rate 1e-4 .. 1e-1
    assert d.focus(space).dimensions["learning_rate"] == FloatRange(1e-4, 1e-1, log=True)
    narrow = space.with_dimensions(learning_rate=FloatRange(1e-4, 1.0, log=True))
    assert d.focus(narrow).dimensions["learning_rate"].high == pytest.approx(0.5)
    first = d.first_trial(space)
    assert first["initializer"] == "auto" and first["learning_rate"] == pytest.approx(0.05)
    assert "Under initializer auto:" in d.to_text()
    again = Diagnosis.from_dict(json.loads(json.dumps(d.to_dict())))
    assert again.repair == INIT_REPAIR and again.clipped_lr_range is None
    assert again.repaired_lr_range.max_stable_lr == pytest.approx(0.5)


def test_a_diagnosis_stored_with_the_older_clipped_range_test_reads_back():
    d = Diagnosis([finding("exploding_gradients")], StabilityConfig(), [0], 40, 32,
                  dict(THRESHOLDS), lr_range=_range(1e-5), repaired_lr_range=_range(1e-3),
                  repair=dict(CLIP_REPAIR))
    stored = json.loads(json.dumps(d.to_dict()))
    stored["clipped_lr_range"] = stored.pop("repaired_lr_range")
    del stored["repair"]
    again = Diagnosis.from_dict(stored)
    assert again.repair == CLIP_REPAIR
    assert again.clipped_lr_range.max_stable_lr == pytest.approx(1e-3)


def test_the_first_trial_keeps_the_users_batch_size_unless_the_findings_reorder_it():
    space = load_space("default")  # batch sizes 16, 32, 64, 128
    stalled = Diagnosis([finding("stalled")], StabilityConfig(), [0], 40, 64, dict(THRESHOLDS))
    assert stalled.first_trial(space)["batch_size"] == 64  # the user's, not the smallest
    odd = Diagnosis([finding("stalled")], StabilityConfig(), [0], 40, 48, dict(THRESHOLDS))
    assert odd.first_trial(space)["batch_size"] == 16  # not offered: the space's first
    variance = Diagnosis([finding("seed_variance")], StabilityConfig(), [0], 40, 32,
                         dict(THRESHOLDS))
    assert variance.first_trial(space)["batch_size"] == 128  # larger batches first


def test_focus_offers_only_initializers_that_match_every_activation():
    tanh = [{"layer": f"dense_{i}", "activation": "tanh"} for i in range(3)]
    relu = [{"layer": f"dense_{i}", "activation": "relu"} for i in range(3)]
    out = [{"layer": "out", "activation": "softmax"}]
    findings = [finding("small_init"), finding("vanishing_gradients")]
    space = load_space("default")  # auto, keep, glorot_uniform, he_normal, lecun_normal

    def offered(layers: list[dict[str, str]]) -> tuple[str, ...]:
        d = Diagnosis(findings, StabilityConfig(), [0], 40, 32, dict(THRESHOLDS),
                      initializers=layers + out)
        return d.focus(space).dimensions["initializer"].values

    assert offered(tanh) == ("auto", "glorot_uniform", "lecun_normal")  # no He for tanh
    assert offered(relu) == ("auto", "he_normal")  # no Glorot/LeCun for ReLU
    assert offered(tanh + relu) == ("auto",)  # one name for every layer fits neither


def test_focus_tries_a_decaying_schedule_first_when_something_is_wrong():
    d = Diagnosis([finding("stalled")], StabilityConfig(), [0], 40, 32, dict(THRESHOLDS))
    space = load_space("quick")  # constant, cosine
    assert d.focus(space).dimensions["lr_schedule"].values == ("cosine", "constant")
    assert d.first_trial(space)["lr_schedule"] == "cosine"


def test_diagnose_a_candidate_configuration():
    settings = SearchConfig(batch_size=32, seed=1)
    d = diagnose(models.stalled_mlp, scenarios.digits(), config=settings, seeds=1, steps=30,
                 evaluations=1, lr_range=False,
                 candidate=StabilityConfig(learning_rate=0.3, initializer="auto"))
    assert "stalled" not in d.codes("warning")
    assert d.config.learning_rate == 0.3 and d.user_lr == 0.3
    assert d.seeds == [1000]


def test_before_and_after_comparison():
    before = Diagnosis([finding("exploding_gradients", "error"), finding("stalled")],
                       StabilityConfig(), [0], 40, 32, dict(THRESHOLDS))
    after = Diagnosis([finding("stalled", "info"), finding("not_checked", "info")],
                      StabilityConfig(clipping="global_norm", clip_value=1.0), [0], 40, 32,
                      dict(THRESHOLDS))
    rows = {r["code"]: (r["before"], r["after"]) for r in before.compare(after)}
    assert rows == {"exploding_gradients": ("error", None), "stalled": ("warning", "info")}
    assert "exploding_gradients" in before.compare_text(after)

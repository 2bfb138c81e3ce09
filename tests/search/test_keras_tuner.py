"""The KerasTuner driver: each tuner searches and finishes, resumes without redoing trials,
fails and prunes like the Optuna driver, and searches the user's `build_fn(hp)` values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import optuna
import pytest
import scenarios

from stabilizer import (
    ConfigError,
    ModelError,
    SearchAbortedError,
    SearchConfig,
    SearchSpace,
    StabilityResult,
    stabilize,
)
from stabilizer.scoring import DIVERGED_SCORE
from stabilizer.search import make_driver
from stabilizer.search.keras_tuner import (
    KerasTunerDriver,
    KerasTunerSuggester,
    declare_space,
)
from stabilizer.search.optuna import is_baseline_trial
from stabilizer.space import Choice, FloatRange, load_space

# diagnose=False: the build counts below assume the baseline is one build (one seed);
# the per-tuner test turns the diagnosis back on.
#: Finals off (``final_seeds=1``): these tests count the probes a resumed search runs again
#: (tests/search/test_finals.py resumes the finalists' own probes).
PROBE = dict(probe_steps=20, evaluations=2, seeds=1, diagnose=False, horizon_fraction=0.0,
             final_seeds=1)


def project(tmp_path: Path, study: str) -> Path:
    return tmp_path / "keras_tuner" / study


def oracle_trials(tmp_path: Path, study: str) -> dict[int, dict[str, Any]]:
    """KerasTuner's own trial files: what the oracle recorded."""
    return {int(p.parent.name[len("trial_"):]): json.loads(p.read_text())
            for p in project(tmp_path, study).glob("trial_*/trial.json")}


class CountingBuild:
    """A build_fn that counts its calls and can fail or misbehave on chosen calls."""

    def __init__(self, factory: Any, raise_on: set[int] = frozenset(),
                 broken_on: set[int] = frozenset()) -> None:
        self.factory = factory
        self.raise_on = raise_on
        self.broken_on = broken_on
        self.calls = 0

    def __call__(self) -> keras.Model:
        self.calls += 1
        if self.calls in self.raise_on:
            raise RuntimeError(f"scripted failure on call {self.calls}")
        if self.calls in self.broken_on:
            return None  # not a model: a ModelError, which stops the search mid-trial
        return self.factory()


# -- one small search per tuner ------------------------------------------------------------

@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_each_tuner_finishes_and_returns_an_applicable_configuration(tuner, small_digits,
                                                                     tmp_path):
    budget = 4 if tuner == "bayesian" else 3  # bayesian: 2 random starts, then the GP
    result = stabilize(scenarios.relu_lr_one, small_digits, space="quick", budget=budget,
                       driver="keras_tuner", tuner=tuner, out_dir=str(tmp_path),
                       study_name=tuner, **{**PROBE, "diagnose": True})
    assert isinstance(result, StabilityResult)
    assert [t.state for t in result.trials] == ["COMPLETE"] * budget
    assert result.storage == str(project(tmp_path, tuner))
    # The oracle saw the same score the stabilizer recorded.
    recorded = oracle_trials(tmp_path, tuner)
    assert sorted(recorded) == list(range(budget))
    for trial in result.trials:
        assert recorded[trial.number]["status"] == "COMPLETED"
        assert recorded[trial.number]["score"] == pytest.approx(trial.score)
    # Adam at 1.0 diverges; the quick space's learning rates (<= 1e-2) do not.
    assert result.baseline.components.diverged
    assert result.improved and not result.components.diverged
    assert "diverged" in result.diagnosis and result.after.config == result.best_config
    # The diagnosis's proposals ran first, through the driver's queue (the oracle has none).
    space = load_space("quick")
    queued = [p for p in (result.diagnosis.range_test_trial(space),
                          result.diagnosis.first_trial(space)) if p]
    assert len(queued) == 2
    for trial, params in zip(result.trials, queued):
        assert {k: getattr(trial.config, k) for k in params} == pytest.approx(params)
        assert recorded[trial.number]["hyperparameters"]["values"][
            "stabilizer/learning_rate"] == pytest.approx(params["learning_rate"])
    assert json.loads((project(tmp_path, tuner) / "queued_trials.json").read_text()) == []
    best = result.best_config
    model = result.build_model()
    assert model.compiled and isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(best.learning_rate, rel=1e-5)
    expected_clip = best.clip_value if best.clipping == "global_norm" else None
    assert model.optimizer.global_clipnorm == (pytest.approx(expected_clip)
                                               if expected_clip else None)
    assert isinstance(model.layers[0].kernel_initializer, keras.initializers.HeNormal)  # "auto"
    history = model.fit(*small_digits, batch_size=best.batch_size, epochs=1, verbose=0)
    assert history.history["loss"][0] < 10


def test_make_driver_builds_the_keras_tuner_driver(tmp_path):
    settings = SearchConfig(driver="keras_tuner", tuner="hyperband", out_dir=str(tmp_path),
                            study_name="stabilizer")
    driver = make_driver(settings, load_space("quick"))
    assert isinstance(driver, KerasTunerDriver)
    assert driver.storage_label() == str(project(tmp_path, "stabilizer"))
    with pytest.raises(ConfigError, match="storage is set, but the keras_tuner driver keeps "
                                          "its trials in .*; expected storage=None, or "
                                          "driver='optuna'"):
        make_driver(SearchConfig(driver="keras_tuner", storage="sqlite:///x.db",
                                 out_dir=str(tmp_path), study_name="s"), load_space("quick"))


# -- resuming ------------------------------------------------------------------------------

def test_resume_does_not_redo_finished_trials(small_digits, tmp_path):
    common = dict(space="quick", driver="keras_tuner", tuner="random", out_dir=str(tmp_path),
                  study_name="resume", **PROBE)
    first_build = CountingBuild(scenarios.healthy_mlp)
    first = stabilize(first_build, small_digits, budget=2, **common)
    # the check before the search, the baseline and two trials, one seed each
    assert first_build.calls == 4

    again = CountingBuild(scenarios.healthy_mlp)
    same = stabilize(again, small_digits, budget=2, **common)
    assert again.calls == 1  # the check; baseline and trials read back from the project
    assert [(t.number, t.score, t.config) for t in same.trials] == \
        [(t.number, t.score, t.config) for t in first.trials]
    assert same.baseline.score == first.baseline.score

    more = CountingBuild(scenarios.healthy_mlp)
    extended = stabilize(more, small_digits, budget=3, **common)
    assert more.calls == 2  # the check and the one missing trial
    assert [t.number for t in extended.trials] == [0, 1, 2]
    assert [(t.score, t.config) for t in extended.trials[:2]] == \
        [(t.score, t.config) for t in first.trials]

    where = project(tmp_path, "resume")
    with pytest.raises(ConfigError, match=f"tuner='bayesian': study 'resume' in {where} was "
                                          "searched with tuner='random'; expected the same "
                                          "tuner, or a new study_name"):
        stabilize(more, small_digits, budget=3, **{**common, "tuner": "bayesian"})
    with pytest.raises(ConfigError, match=f"space 'default': study 'resume' in {where} was "
                                          "searched over another space; expected the same "
                                          "space, or a new study_name"):
        stabilize(more, small_digits, budget=3, **{**common, "space": "default"})
    assert more.calls == 4  # refused before any probe (each built once by the check)


def test_queued_trials_run_first_and_a_resumed_search_neither_loses_nor_repeats_them(
        small_digits, tmp_path):
    from stabilizer.data import prepare_data
    from stabilizer.search._evaluator import Evaluator

    def search(budget: int) -> list[Any]:
        settings = SearchConfig(space="quick", trials=budget, driver="keras_tuner",
                                tuner="random", out_dir=str(tmp_path), study_name="queue",
                                **PROBE)
        driver = KerasTunerDriver(settings, load_space("quick"))
        queued = driver.enqueue_first([{"learning_rate": 0.003, "batch_size": 64},
                                       {"learning_rate": 0.001}])
        evaluator = Evaluator(scenarios.healthy_mlp, prepare_data(small_digits), settings)
        return [queued, *driver.run(evaluator)]

    queued, first = search(1)
    assert queued and first.config.learning_rate == pytest.approx(0.003)
    assert first.config.batch_size == 64
    queued, *trials = search(2)  # resumed: the project has trials, nothing is queued again
    assert not queued
    assert [t.config.learning_rate for t in trials] == pytest.approx([0.003, 0.001])
    queued, *trials = search(3)  # the queue is spent: the oracle's own proposal
    assert trials[2].config.learning_rate not in (pytest.approx(0.003), pytest.approx(0.001))


def test_a_queued_parent_value_brings_in_its_child_and_a_value_outside_the_space_is_dropped():
    from stabilizer.search.keras_tuner._driver import _merged_values

    hp = keras_tuner.HyperParameters()
    declare_space(load_space("default"), hp)
    proposed = {h.name: h.default for h in hp.space if hp.is_active(h)}
    proposed.update({"stabilizer/lr_schedule": "constant", "stabilizer/clipping": "none"})
    proposed = {k: v for k, v in proposed.items() if k not in ("stabilizer/warmup_fraction",
                                                               "stabilizer/clip_value")}
    merged = _merged_values(hp, proposed, {"lr_schedule": "warmup_cosine", "clipping": "norm",
                                           "learning_rate": 1e9})  # far outside the range
    config = load_space("default").sample(KerasTunerSuggester(_with(hp, merged)))
    assert config.lr_schedule == "warmup_cosine" and config.warmup_fraction is not None
    assert config.clipping == "norm" and config.clip_value is not None
    assert merged["stabilizer/learning_rate"] == proposed["stabilizer/learning_rate"]


def _with(hp: keras_tuner.HyperParameters, values: dict[str, Any]) -> Any:
    copy = hp.copy()
    copy.values = values
    return copy


def test_a_trial_cut_off_by_a_crash_is_run_again_with_the_same_values(small_digits, tmp_path):
    common = dict(space="quick", driver="keras_tuner", tuner="random", out_dir=str(tmp_path),
                  study_name="crash", budget=2, **PROBE)
    with pytest.raises(ModelError):  # call 4 = trial 1: the search stops inside the trial
        stabilize(CountingBuild(scenarios.healthy_mlp, broken_on={4}), small_digits, **common)
    cut_off = json.loads((project(tmp_path, "crash") / "trial_0001"
                          / "stabilizer_record.json").read_text())
    assert cut_off["state"] == "RUNNING"

    build = CountingBuild(scenarios.healthy_mlp)
    result = stabilize(build, small_digits, **common)
    assert build.calls == 2  # the check, trial 1 again; the baseline and trial 0 are kept
    assert [(t.number, t.state) for t in result.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert result.trials[1].config.to_dict() == cut_off["config"]


# -- failures, divergence, pruning ---------------------------------------------------------

def test_a_failing_probe_fails_its_trial_and_the_search_goes_on(small_digits, tmp_path):
    build = CountingBuild(scenarios.healthy_mlp, raise_on={3})  # call 3 = trial 0
    finished: list[Any] = []
    result = stabilize(build, small_digits, space="quick", budget=2, driver="keras_tuner",
                       tuner="random", out_dir=str(tmp_path), study_name="fails",
                       progress=finished.append, **PROBE)
    assert [t.state for t in result.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert [(t.number, t.state, t.score) for t in finished] == \
        [(t.number, t.state, t.score) for t in result.trials]  # reported as each finished
    assert "scripted failure on call 3" in result.trials[0].error
    assert oracle_trials(tmp_path, "fails")[0]["status"] == "FAILED"


def test_consecutive_failures_stop_the_search(small_digits, tmp_path):
    build = CountingBuild(scenarios.healthy_mlp, raise_on=set(range(3, 100)))
    with pytest.raises(SearchAbortedError, match="2 trials failed in a row; last error:\n"
                                                 "build_fn raised RuntimeError: scripted "
                                                 "failure on call 4"):
        stabilize(build, small_digits, space="quick", budget=5, driver="keras_tuner",
                  tuner="hyperband", out_dir=str(tmp_path), max_consecutive_failures=2,
                  **PROBE)
    assert build.calls == 4


def test_diverged_candidates_report_the_finite_diverged_score(digits, tmp_path):
    x, y = digits
    space = SearchSpace({"batch_size": Choice((16, 32))})  # SGD at 1e6 diverges at any batch
    result = stabilize(scenarios.nan_on_large_lr, (x[:200], y[:200].astype("float32")),
                       space=space, budget=4, driver="keras_tuner", tuner="random",
                       out_dir=str(tmp_path), study_name="nan", **PROBE)
    # Two batch sizes: the random oracle finds no third candidate and the search ends.
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert {t.config.batch_size for t in result.trials} == {16, 32}
    for trial in result.trials:
        assert trial.score == DIVERGED_SCORE and trial.verdict == "diverged"
        assert oracle_trials(tmp_path, "nan")[trial.number]["score"] == DIVERGED_SCORE
    assert not result.improved  # nothing made up: the (diverged) baseline comes back


def _record(value: float, state: str = "COMPLETE") -> dict[str, Any]:
    return {"state": state, "intermediate": {"0": value}}


def test_pruning_uses_the_optuna_drivers_rule(tmp_path):
    driver = KerasTunerDriver(SearchConfig(out_dir=str(tmp_path), driver="keras_tuner",
                                           study_name="prune"), load_space("quick"))
    driver._records = {str(i): _record(v) for i, v in enumerate([1.0, 1.2, 0.8, 1.1])}
    assert driver._should_prune(0, -0.5)  # median 1.05, margin 1: below 0.05 is pruned
    assert not driver._should_prune(0, 0.2)
    assert not driver._should_prune(1, -5.0)  # no completed trial reported step 1
    driver._records["3"] = _record(1.1, state="PRUNED")  # only COMPLETE trials count
    assert not driver._should_prune(0, -0.5)
    off = KerasTunerDriver(SearchConfig(out_dir=str(tmp_path), prune=False, study_name="off"),
                           load_space("quick"))
    off._records = {str(i): _record(1.0) for i in range(6)}
    assert not off._should_prune(0, -10.0)


# -- the space as KerasTuner hyperparameters -------------------------------------------------

def test_conditional_children_are_declared_under_their_parent():
    hp = keras_tuner.HyperParameters()
    declare_space(load_space("default"), hp)
    conditions = {h.name: [(c.name, list(c.values)) for c in h.conditions] for h in hp.space}
    assert conditions["stabilizer/decay_rate"] == [("stabilizer/lr_schedule", ["exponential"])]
    assert conditions["stabilizer/warmup_fraction"] == [("stabilizer/lr_schedule",
                                                         ["warmup_cosine"])]
    assert conditions["stabilizer/clip_value"] == [("stabilizer/clipping",
                                                    ["norm", "global_norm", "value"])]
    lr = next(h for h in hp.space if h.name == "stabilizer/learning_rate")
    expected = load_space("default").dimensions["learning_rate"]
    assert (lr.min_value, lr.max_value, lr.sampling) == (expected.low, expected.high, "log")
    schedule = next(h for h in hp.space if h.name == "stabilizer/lr_schedule")
    assert list(schedule.values) == list(load_space("default").dimensions["lr_schedule"].values)


def test_a_child_of_a_fixed_parent_is_declared_only_when_the_parent_needs_it():
    on, off = keras_tuner.HyperParameters(), keras_tuner.HyperParameters()
    clip = FloatRange(0.5, 5.0, log=True)
    declare_space(SearchSpace({"clipping": Choice(("global_norm",)), "clip_value": clip}), on)
    declare_space(SearchSpace({"clipping": Choice(("none",)), "clip_value": clip}), off)
    assert [(h.name, h.conditions) for h in on.space] == [("stabilizer/clip_value", [])]
    assert off.space == []


def test_mixed_int_and_float_choices_come_back_as_the_spaces_values():
    space = SearchSpace({"clipping": Choice(("norm",)), "clip_value": Choice((1, 2.5))})
    hp = keras_tuner.HyperParameters()
    declare_space(space, hp)  # KerasTuner wants one type: declared as [1.0, 2.5]
    (declared,) = hp.space
    assert list(declared.values) == [1.0, 2.5]
    suggest = KerasTunerSuggester(hp)
    hp.values["stabilizer/clip_value"] = 1.0
    chosen = suggest.categorical("clip_value", [1, 2.5])
    assert chosen == 1 and type(chosen) is int
    hp.values["stabilizer/clip_value"] = 2.5
    assert space.sample(suggest).clip_value == 2.5


def test_a_value_outside_the_space_is_refused():
    hp = keras_tuner.HyperParameters()
    hp.values["stabilizer/batch_size"] = 64
    with pytest.raises(ConfigError, match=r"dimension 'batch_size': the oracle proposed 64; "
                                          r"expected one of \[16, 32\]"):
        KerasTunerSuggester(hp).categorical("batch_size", [16, 32])
    with pytest.raises(ConfigError, match="dimension 'learning_rate': no value "
                                          "'stabilizer/learning_rate' in the KerasTuner "
                                          "hyperparameters"):
        KerasTunerSuggester(hp).float("learning_rate", 1e-4, 1e-2, True)


def test_the_users_hyperparameter_names_never_clash_with_ours():
    hp = keras_tuner.HyperParameters()
    declare_space(load_space("quick"), hp)
    user_lr = hp.Float("learning_rate", 0.1, 0.2)  # the user's own "learning_rate"
    names = [h.name for h in hp.space]
    assert "learning_rate" in names and "stabilizer/learning_rate" in names
    assert user_lr == 0.1


# -- the user's build_fn(hp) in both drivers ----------------------------------------------

def hp_model(hp: Any) -> keras.Model:
    """A ReLU MLP whose width is the user's hyperparameter, at an unstable learning rate."""
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(hp.Choice("units", [8, 16, 32]), activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("driver", ["optuna", "keras_tuner"])
def test_user_hyperparameters_are_searched_and_replayed(driver, small_digits, tmp_path):
    result = stabilize(hp_model, small_digits, space="quick", budget=3, driver=driver,
                       tuner="random", out_dir=str(tmp_path), study_name="hp", **PROBE)
    assert [t.state for t in result.trials] == ["COMPLETE"] * 3
    for trial in result.trials:
        assert set(trial.user_params) == {"units"} and trial.user_params["units"] in (8, 16, 32)
    if driver == "optuna":
        study = optuna.load_study(study_name="hp", storage=result.settings.resolved_storage())
        assert all("hp/units" in t.params for t in study.trials if not is_baseline_trial(t))
    else:
        oracle = json.loads((project(tmp_path, "hp") / "oracle.json").read_text())
        names = [h["config"]["name"] for h in oracle["hyperparameters"]["space"]]
        assert "units" in names and "stabilizer/learning_rate" in names
        assert all(t["hyperparameters"]["values"]["units"] == result.trials[n].user_params["units"]
                   for n, t in oracle_trials(tmp_path, "hp").items())
    assert result.baseline.user_params == {"units": 8}  # the baseline uses the defaults
    assert result.improved  # the baseline diverges at Adam 1.0
    model = result.build_model()
    assert model.layers[0].units == result.best.user_params["units"]

"""`stabilize()` end to end on tiny searches: NaN trials, failures, resume, determinism."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import optuna
import pytest
import scenarios

from stabilizer import (
    ConfigError,
    DataError,
    ProbeFailedError,
    SearchAbortedError,
    SearchConfig,
    StabilityConfig,
    StabilityMonitor,
    StabilityResult,
    stabilize,
)
from stabilizer.search.optuna import is_baseline_trial

TESTS = Path(__file__).resolve().parents[1]


def _search(data, settings, **kwargs) -> StabilityResult:
    options = settings.to_dict()
    options.update(kwargs)
    return stabilize(options.pop("build_fn", scenarios.healthy_mlp), data, **options)


def test_a_nan_trial_is_recorded_as_diverged_and_the_search_goes_on(small_digits, quick_settings):
    space = {"learning_rate": [1e-3, 100.0], "clipping": ["none"]}
    # diagnose=False: the diagnosis's LR range test would take 100.0 out of the space.
    result = _search(small_digits, quick_settings, space=space, trials=4, prune=False,
                     diagnose=False, build_fn=scenarios.nan_on_large_lr_adjustable)
    complete = [t for t in result.trials if t.state == "COMPLETE"]
    assert len(complete) == 4
    diverged = [t for t in complete if t.verdict == "diverged"]
    healthy = [t for t in complete if t.verdict != "diverged"]
    assert diverged and healthy
    assert all(t.config.learning_rate == 100.0 for t in diverged)
    assert all(t.components["diverged"] for t in diverged)
    assert result.best_config.learning_rate != 100.0  # a diverged config is never chosen
    assert not result.components.diverged


def test_result_holds_best_baseline_table_and_a_buildable_model(small_digits, quick_settings):
    result = _search(small_digits, quick_settings)
    assert result.baseline.config == StabilityConfig()
    assert len(result.table()) == 1 + len(result.trials) == 4
    assert all(math_isfinite(r["score"]) for r in result.table())
    assert StabilityConfig.from_yaml(result.to_yaml()) == result.best_config
    model = result.build_model()
    assert model.compiled and isinstance(model.optimizer, keras.optimizers.Adam)
    kwargs = result.fit_kwargs()
    assert kwargs["batch_size"] == (result.best_config.batch_size or 32)
    x, y = small_digits
    model.fit(x, y, epochs=1, verbose=0, **kwargs)
    assert "<table" in result._repr_html_() and "baseline" in result.summary()
    yours = scenarios.healthy_mlp()  # a model built outside the search, the same way
    applied = result.apply(yours)
    assert applied.compiled and type(applied.optimizer) is type(model.optimizer)
    unnamed = [{k: v for k, v in m.optimizer.get_config().items() if k != "name"}
               for m in (applied, model)]
    assert unnamed[0] == unnamed[1]  # the same rate, schedule and clipping
    guarded = result.fit_kwargs(monitor=True)
    guard = guarded["callbacks"][-1]
    assert isinstance(guard, StabilityMonitor) and guard.rescue
    assert guard.prior_norms > 0  # the probes' gradient norms passed on
    applied.fit(x, y, epochs=1, verbose=0, **guarded)
    assert guard.step > 0 and guard.windows
    # Optuna's own tools see the score components as columns and your configuration as a trial
    frame = optuna.load_study(study_name=result.study_name,
                              storage=result.storage).trials_dataframe()
    for column in ("score", "oscillation", "seed_spread", "final_val_loss", "diverged"):
        assert f"user_attrs_stability_{column}" in frame.columns
    baseline = frame[frame["user_attrs_baseline"] == True]  # noqa: E712 (a pandas mask)
    assert len(baseline) == 1 and len(frame) == len(result.trials) + 1
    assert baseline["value"].iloc[0] == pytest.approx(result.rungs[0]["baseline"]["score"])
    assert not result.finals  # off unless final_seeds asks for more seeds
    assert baseline["number"].iloc[0] == len(result.trials)  # after the candidates
    assert len(result.trials) == 3  # not a candidate, not counted in the budget


def math_isfinite(value) -> bool:
    import math

    return value is not None and math.isfinite(value)


def test_same_seed_gives_the_same_scores(small_digits, quick_settings):
    a = _search(small_digits, quick_settings, study_name="a")
    b = _search(small_digits, quick_settings, study_name="b")
    assert [t.score for t in a.trials] == [t.score for t in b.trials]
    assert [t.config for t in a.trials] == [t.config for t in b.trials]
    assert a.baseline.score == b.baseline.score


def test_rerunning_a_finished_study_redoes_nothing(small_digits, quick_settings):
    first = _search(small_digits, quick_settings)
    again = _search(small_digits, quick_settings)
    scores = [(t.number, t.score) for t in first.trials]
    assert [(t.number, t.score) for t in again.trials] == scores
    more = _search(small_digits, quick_settings, trials=4)
    assert [(t.number, t.score) for t in more.trials[:3]] == [(t.number, t.score)
                                                               for t in first.trials]
    assert len(more.trials) == 4


def test_build_fn_errors_fail_trials_then_stop_the_search(small_digits, quick_settings):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        # the check before the search and the baseline's two seeds build fine, every
        # trial fails
        if calls["n"] > 3:
            raise RuntimeError("out of ideas")
        return scenarios.healthy_mlp()

    with pytest.raises(SearchAbortedError, match="3 trials failed in a row") as info:
        # diagnose=False: the diagnosis builds the model more often than its two seeds.
        _search(small_digits, quick_settings, build_fn=flaky, max_consecutive_failures=3,
                diagnose=False)
    assert "RuntimeError: out of ideas" in str(info.value)
    study = optuna.load_study(study_name="stabilizer",
                              storage=quick_settings.resolved_storage())
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 3 and "out of ideas" in failed[0].user_attrs["error"]


def test_a_baseline_that_cannot_build_is_an_error_before_any_trial(small_digits, quick_settings):
    def broken():
        raise ValueError("no such layer")

    with pytest.raises(ProbeFailedError, match="build_fn raised ValueError: no such layer"):
        _search(small_digits, quick_settings, build_fn=broken)


def test_bad_arguments_are_clear_errors(small_digits, quick_settings):
    with pytest.raises(ConfigError, match="unexpected argument 'epoch'"):
        stabilize(scenarios.healthy_mlp, small_digits, epoch=3)
    with pytest.raises(ConfigError, match="epochs=0: expected a value >= 1"):
        stabilize(scenarios.healthy_mlp, small_digits, epochs=0)
    with pytest.raises(ConfigError, match="batch_size=1000: larger than the 320 training"):
        _search(small_digits, quick_settings, batch_size=1000)
    with pytest.raises(DataError, match="x: contains NaN"):
        x, y = small_digits
        x = x.copy()
        x[3, 3] = float("nan")
        _search((x, y), quick_settings)


KILLABLE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import scenarios
    from stabilizer import stabilize
    x, y = scenarios.digits()
    stabilize(scenarios.healthy_mlp, (x[:400], y[:400]), space="quick", budget=6, seeds=1,
              probe_steps=40, evaluations=2, storage={storage!r}, study_name="killed",
              prune=False, horizon_fraction=0.0)
""")


def test_a_killed_search_resumes_without_redoing_finished_trials(small_digits, tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    script = tmp_path / "search.py"
    script.write_text(KILLABLE.format(tests=str(TESTS), storage=storage))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    done: list[optuna.trial.FrozenTrial] = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
        except KeyError:
            continue
        done = [t for t in study.trials
                if t.state.name == "COMPLETE" and not is_baseline_trial(t)]
        if len(done) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done) >= 2, "the search did not finish two trials in time"
    before = {t.number: t.value for t in optuna.load_study(
        study_name="killed", storage=storage).trials
        if t.state.name == "COMPLETE" and not is_baseline_trial(t)}  # the candidates

    result = stabilize(scenarios.healthy_mlp, small_digits, space="quick", budget=6, seeds=1,
                       probe_steps=40, evaluations=2, storage=storage, study_name="killed",
                       prune=False, horizon_fraction=0.0)
    after = {t.number: t.score for t in result.trials if t.state == "COMPLETE"}
    assert len(after) == 6
    assert all(after[n] == v for n, v in before.items())  # kept, not redone
    new = [t for t in result.trials if t.number not in before and t.state == "COMPLETE"]
    assert len(new) == 6 - len(before)
    leftovers = [t for t in result.trials if t.state not in ("COMPLETE",)]
    assert all(t.state in ("RUNNING", "FAIL") for t in leftovers)  # never counted as done


@pytest.mark.parametrize("driver", ["optuna", "keras_tuner"])
def test_a_spent_time_limit_starts_no_new_trial(driver, small_digits, quick_settings):
    result = _search(small_digits, quick_settings, trials=20, time_limit=1e-3, driver=driver,
                     diagnose=False)
    assert result.trials == [] and not result.improved
    roomy = _search(small_digits, quick_settings, trials=2, time_limit=3600.0, driver=driver,
                    diagnose=False, study_name="roomy")
    assert len(roomy.trials) == 2


@pytest.mark.parametrize("value", [0, -5, "soon", float("inf")])
def test_a_bad_time_limit_names_the_field(value):
    with pytest.raises(ConfigError, match="time_limit="):
        SearchConfig(time_limit=value)


def test_a_search_quiets_optuna_only_while_it_runs(small_digits, quick_settings, capfd):
    import warnings

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", optuna.exceptions.ExperimentalWarning)
            _search(small_digits, quick_settings, trials=2, diagnose=False,
                    storage=f"sqlite:///{quick_settings.out_dir}/quiet.db")
        err = capfd.readouterr().err
        assert "Trial 0 finished" not in err and "A new study created" not in err
        assert not [w for w in caught if issubclass(w.category,
                                                      optuna.exceptions.ExperimentalWarning)]
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # the user's, restored
    finally:
        optuna.logging.set_verbosity(before)


def test_the_result_hands_its_optimizer_to_a_custom_loop(small_digits, quick_settings):
    result = _search(small_digits, quick_settings, trials=1, diagnose=False, train_steps=500)
    result.best.config = StabilityConfig(learning_rate=0.003, lr_schedule="cosine",
                                         clipping="global_norm", clip_value=1.0)
    optimizer = result.optimizer()
    assert isinstance(optimizer, keras.optimizers.Adam)  # your class
    schedule = optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert schedule.decay_steps == 500 and optimizer.global_clipnorm == 1.0
    assert result.optimizer(train_steps=2000)._learning_rate.decay_steps == 2000
    model = scenarios.healthy_mlp()
    variables = model.trainable_variables
    optimizer.apply([keras.ops.ones_like(v) for v in variables], variables)  # any backend
    assert int(optimizer.iterations) == 1

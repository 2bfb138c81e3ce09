"""The ladder: survivors probed longer, the choice made at the longest rung.

The unit tests drive `climb` and `choose_on_ladder` with a scripted evaluator (the
probe's outcome as a function of the candidate and the rung's length); the two
searches at the end train real models and judge the choice at the user's length.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
import pytest
import scenarios

from stabilizer import ConfigError, SearchConfig, StabilityConfig, stabilize
from stabilizer.data import prepare_data
from stabilizer.probe import Horizon, ProbePlan
from stabilizer.result import Candidate, TrialRecord
from stabilizer.scoring import ScoreComponents
from stabilizer.search._evaluator import Evaluation
from stabilizer.search._ladder import choose_on_ladder, climb, rung_key


def _components(final: float, *, verdict: str = "stable", reference: float = 2.0,
                score: float | None = None) -> ScoreComponents:
    quality = math.log(reference / final)
    return ScoreComponents(
        score=quality if score is None else score, verdict=verdict, reasons=[],
        diverged=verdict == "diverged", final_val_loss=final, reference_loss=reference,
        quality=quality, progress=1 - final / reference, stuck=verdict == "stuck",
        oscillation=0.0, spike_rate=0.0, explode_rate=0.0, vanishing_share=0.0,
        seed_spread=0.0, seeds=2, per_seed=[])


class _Storage:
    """The part of a driver the ladder uses: attributes, and the clock."""

    def __init__(self, out_of_time_after: int | None = None) -> None:
        self.attrs: dict[str, Any] = {}
        self.saves = 0
        self.limit = out_of_time_after

    def load_attr(self, key: str) -> Any:
        return self.attrs.get(key)

    def save_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value
        self.saves += 1

    def out_of_time(self) -> bool:
        return self.limit is not None and self.saves >= self.limit


class _Scripted:
    """An evaluator whose outcome is `outcome(learning_rate or None, steps)`."""

    uses_hp = False

    def __init__(self, outcome) -> None:
        self.outcome = outcome
        self.plan = ProbePlan(15, 2)
        self.calls: list[tuple[float | None, int]] = []

    def evaluate(self, config: StabilityConfig, hp: Any = None, report: Any = None,
                 plan: ProbePlan | None = None, seeds: list[int] | None = None) -> Evaluation:
        steps = (plan or self.plan).total_steps
        self.calls.append((config.learning_rate, steps))
        return Evaluation(config, self.outcome(config.learning_rate, steps), [])


def _horizon(train_steps: int = 1200, fraction: float = 0.25) -> Horizon:
    data = prepare_data((np.zeros((100, 2), "float32"), np.zeros(100, "float32")))
    return Horizon.resolve(SearchConfig(probe_steps=30, evaluations=2, train_steps=train_steps,
                                        horizon_fraction=fraction), data)


def _records(outcome, rates, steps=30) -> list[TrialRecord]:
    return [TrialRecord(i, "COMPLETE", 0.0, StabilityConfig(learning_rate=lr), {},
                        outcome(lr, steps).to_dict(), []) for i, lr in enumerate(rates)]


def _baseline(outcome) -> Candidate:
    return Candidate(StabilityConfig(), outcome(None, 30), [])


# -- the horizon ---------------------------------------------------------------------
def test_without_a_length_the_default_is_assumed_and_said():
    horizon = _horizon(train_steps=None)
    assert horizon.assumed and horizon.train_steps == 2000
    assert horizon.rungs == (30, 90, 270)  # 810 > 25% of 2,000
    assert "assumed 2,000 steps" in horizon.describe()
    assert "train_steps=" in horizon.describe()


def test_epochs_are_counted_in_steps_at_each_batch_size():
    data = prepare_data((np.zeros((1000, 2), "float32"), np.zeros(1000, "float32")),
                        validation_split=0.2)
    horizon = Horizon.resolve(SearchConfig(epochs=10, batch_size=32), data)
    assert horizon.train_steps == 10 * 25 and not horizon.assumed
    assert horizon.steps_for(32) == 250 and horizon.steps_for(8) == 1000


def test_a_length_given_twice_or_in_epochs_of_an_unknown_pipeline_is_an_error():
    with pytest.raises(ConfigError, match="train_steps=.*epochs=.*expected one of them"):
        SearchConfig(train_steps=100, epochs=3)
    with pytest.raises(ConfigError, match="horizon_fraction"):
        SearchConfig(horizon_fraction=1.5)
    tf = pytest.importorskip("tensorflow")
    endless = tf.data.Dataset.from_tensor_slices((np.zeros((64, 2), "float32"),
                                                  np.zeros(64, "float32"))).repeat()
    data = prepare_data((endless, endless.take(8)))
    with pytest.raises(ConfigError, match="epochs=3.*expected train_steps="):
        Horizon.resolve(SearchConfig(epochs=3), data)


def test_a_zero_fraction_compares_at_the_probe_length_only():
    assert _horizon(fraction=0.0).rungs == (30,)


# -- climbing ------------------------------------------------------------------------
def _slow_starters(lr, steps):
    """Nothing learns at 30 steps; at 90 the higher rates move; the user's (None) last."""
    rate = lr or 1e-4
    final = 2.0 if steps <= 30 else 2.0 * math.exp(-rate * steps * 5)
    return _components(final, verdict="stuck" if final > 1.9 else "stable")


def test_survivors_go_up_a_third_at_a_time_beside_your_configuration():
    horizon, storage = _horizon(), _Storage()
    evaluator = _Scripted(_slow_starters)
    rates = [1e-4, 2e-4, 4e-4, 6e-4, 8e-4, 1e-3]
    records = _records(_slow_starters, rates)
    rungs = climb(storage, evaluator, horizon, records, _baseline(_slow_starters))
    assert [r.steps for r in rungs] == [30, 90, 270]
    assert [len(r.trials) for r in rungs] == [6, 2, 1]
    assert all(r.baseline is not None for r in rungs)
    assert evaluator.calls.count((None, 90)) == 1 and evaluator.calls.count((None, 270)) == 1
    assert rung_key(270, "baseline") in storage.attrs
    # a resumed search reads the rungs back instead of probing again
    again = _Scripted(_slow_starters)
    climb(storage, again, horizon, records, _baseline(_slow_starters))
    assert again.calls == []


def test_when_everything_is_still_stuck_the_ladder_looks_further():
    def late(lr, steps):  # only at 810 steps does anything learn
        return _components(1.0 if steps >= 810 and lr else 2.0,
                           verdict="stable" if steps >= 810 and lr else "stuck")
    horizon = _horizon()
    records = _records(late, [1e-3, 2e-3, 3e-3])
    rungs = climb(_Storage(), _Scripted(late), horizon, records, _baseline(late))
    assert [r.steps for r in rungs] == [30, 90, 270, 810]
    chosen = choose_on_ladder(rungs, records, _baseline(late), horizon)
    assert chosen.choice.best.trial_number is not None
    assert chosen.choice.best.components.verdict == "stable"


def test_the_ladder_stops_climbing_when_out_of_time():
    storage = _Storage(out_of_time_after=1)
    rungs = climb(storage, _Scripted(_slow_starters), _horizon(),
                  _records(_slow_starters, [1e-3, 2e-3, 3e-3]), _baseline(_slow_starters))
    assert [r.steps for r in rungs] == [30, 90]
    assert rungs[-1].trials == {}  # out of time after your configuration's probe
    chosen = choose_on_ladder(rungs, _records(_slow_starters, [1e-3, 2e-3, 3e-3]),
                              _baseline(_slow_starters), _horizon())
    assert chosen.rungs[-1].steps == 30  # chosen where the candidates were measured


def test_a_probe_that_fails_on_a_rung_leaves_its_candidate_behind_not_the_search():
    from stabilizer.errors import ProbeFailedError

    def failing(lr, steps):
        if lr == 2e-3 and steps == 90:
            raise ProbeFailedError("build_fn raised MemoryError at 90 steps")
        return _slow_starters(lr, steps)

    class Failing(_Scripted):
        def evaluate(self, config, hp=None, report=None, plan=None, seeds=None):
            return Evaluation(config, failing(config.learning_rate, plan.total_steps), [])
    storage = _Storage()
    records = _records(_slow_starters, [1e-3, 2e-3, 3e-3, 1e-4, 2e-4, 3e-4])
    rungs = climb(storage, Failing(_slow_starters), _horizon(), records,
                  _baseline(_slow_starters))
    # trials 0 and 1 went up; 1 failed at 90 steps and stays behind, 0 goes on
    assert [r.steps for r in rungs] == [30, 90, 270]
    assert list(rungs[1].trials) == [0] and list(rungs[2].trials) == [0]
    assert "MemoryError" in storage.attrs[rung_key(90, 1)]["error"]
    chosen = choose_on_ladder(rungs, records, _baseline(_slow_starters), _horizon())
    assert chosen.rungs[-1].steps == 270 and chosen.choice.best.trial_number == 0


# -- the choice at the longest rung ----------------------------------------------------
def _fast_starter(lr, steps):
    """The user's configuration starts slowly and ends low; the fast one flattens early."""
    if lr is None:
        return _components({30: 1.9, 90: 1.2, 270: 0.5}[steps],
                           verdict="stuck" if steps == 30 else "stable")
    return _components({30: 0.6, 90: 0.45, 270: 0.4}[steps])


def test_a_fast_starter_whose_advantage_fades_does_not_replace_a_healthy_configuration():
    horizon = _horizon()
    records = _records(_fast_starter, [1e-2])
    rungs = climb(_Storage(), _Scripted(_fast_starter), horizon, records,
                  _baseline(_fast_starter))
    chosen = choose_on_ladder(rungs, records, _baseline(_fast_starter), horizon)
    assert 0 in chosen.fading  # still ahead at 270 steps, but falling fast
    assert chosen.choice.best.trial_number is None
    assert chosen.baseline.components.final_val_loss == 0.5  # compared at 270 steps
    assert any("trial 0 fading (left out)" in n for n in chosen.notes)


def test_a_fading_candidate_still_replaces_a_configuration_that_spikes():
    def spiky(lr, steps):
        comps = _fast_starter(lr, steps)
        if lr is None:
            comps = dataclasses.replace(comps, spike_rate=0.2)
        return comps
    horizon = _horizon()
    records = _records(spiky, [1e-2])
    rungs = climb(_Storage(), _Scripted(spiky), horizon, records, _baseline(spiky))
    chosen = choose_on_ladder(rungs, records, _baseline(spiky), horizon)
    assert 0 in chosen.fading
    assert chosen.choice.best.trial_number == 0
    assert any("kept in the running" in n for n in chosen.notes)


def test_a_candidate_that_was_never_ahead_is_not_marked_fading():
    def behind(lr, steps):
        base = {30: 1.9, 90: 1.2, 270: 0.5}[steps]
        return _components(base if lr is None else base * {30: 1.2, 90: 1.5, 270: 2.0}[steps])
    horizon = _horizon()
    records = _records(behind, [1e-2])
    rungs = climb(_Storage(), _Scripted(behind), horizon, records, _baseline(behind))
    chosen = choose_on_ladder(rungs, records, _baseline(behind), horizon)
    assert chosen.fading == {} and chosen.choice.best.trial_number is None


def test_a_lasting_advantage_is_not_marked():
    def lasting(lr, steps):
        base = {30: 1.9, 90: 1.5, 270: 1.2}[steps]
        return _components(base if lr is None else base / 3)
    horizon = _horizon()
    records = _records(lasting, [1e-2])
    rungs = climb(_Storage(), _Scripted(lasting), horizon, records, _baseline(lasting))
    chosen = choose_on_ladder(rungs, records, _baseline(lasting), horizon)
    assert chosen.fading == {} and chosen.choice.best.trial_number == 0


# -- the ladder in a search: stored, resumed, read back, on both drivers --------------
class _Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> keras.Model:
        self.calls += 1
        return scenarios.healthy_mlp()


@pytest.mark.parametrize("driver", ["optuna", "keras_tuner"])
def test_a_search_climbs_says_so_and_resumes_without_probing_again(small_digits, tmp_path,
                                                                    driver):
    from stabilizer.search import load_result

    options = dict(space="quick", budget=3, seeds=2, probe_steps=10, evaluations=2,
                   train_steps=120, diagnose=False, diagnose_after=False, prune=False,
                   out_dir=str(tmp_path), study_name="ladder", driver=driver, tuner="random")
    build = _Counting()
    result = stabilize(build, small_digits, **options)
    assert [r["steps"] for r in result.rungs] == [10, 30]
    assert len(result.rungs[1]["trials"]) == 1 and result.rungs[1]["baseline"] is not None
    assert result.rungs[1]["cost"]["steps"] == 2 * 2 * 30  # yours and one candidate, 2 seeds
    text = result.summary()
    assert "horizon:  your training, 120 steps; candidates compared at 10, 30 steps" in text
    assert "ladder: candidates per rung: 3 at 10, 1 at 30 steps" in text
    assert result.baseline.curves[0]["steps"] == 30  # yours, compared at the longest rung
    if result.improved:
        assert result.best.curves[0]["steps"] == 30
    built = build.calls
    again = stabilize(build, small_digits, **options)
    assert build.calls == built + 1  # the check before the search; no probe runs again
    assert again.best.trial_number == result.best.trial_number
    assert again.ladder_notes == result.ladder_notes
    if driver == "optuna":
        loaded = load_result("ladder", f"sqlite:///{tmp_path}/ladder.db")
        assert loaded.best.trial_number == result.best.trial_number
        assert loaded.ladder_notes == result.ladder_notes and loaded.train_steps == 120


# -- real models, judged at the user's length on fresh seeds --------------------------
def _deep_tanh() -> keras.Model:
    """Six tanh layers on a normal(0.05) initializer, Adam 1e-4: flat for ~200 steps."""
    init = keras.initializers.RandomNormal(stddev=0.05)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(32, activation="tanh", kernel_initializer=init) for _ in range(6)]
        + [keras.layers.Dense(10, activation="softmax", kernel_initializer=init)])
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    return model


def _judge(result, x, y, x_val, y_val, seeds=(101, 202, 303)) -> float:
    """The median final validation loss of the chosen configuration trained for the
    user's length (what `fit_kwargs` and `build_model` say) on fresh seeds."""
    finals = []
    for seed in seeds:
        model = result.build_model(seed=seed)
        kwargs = result.fit_kwargs()
        kwargs.setdefault("epochs", -(-result.train_steps // -(-len(x) // kwargs["batch_size"])))
        model.fit(x, y, verbose=0, **kwargs)
        finals.append(float(model.evaluate(x_val, y_val, verbose=0)))
    return float(np.median(finals))


@pytest.mark.slow
def test_a_model_that_learns_late_gets_a_configuration_that_learns_at_your_length(tmp_path):
    x, y = scenarios.digits()
    x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]
    result = stabilize(_deep_tanh, (x_train, y_train, x_val, y_val),
                       space={"learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}},
                       trials=6, probe_steps=30, evaluations=2, epochs=27,
                       diagnose=False, diagnose_after=False, out_dir=str(tmp_path))
    first = result.rungs[0]
    assert first["baseline"]["verdict"] == "stuck"
    assert all(t["verdict"] == "stuck" for t in first["trials"].values())
    assert [r["steps"] for r in result.rungs][-1] >= 270
    assert result.improved
    assert result.fit_kwargs()["epochs"] == 27
    chance = math.log(10)
    assert _judge(result, x_train, y_train, x_val, y_val) < 0.75 * chance


def _slow_regression() -> keras.Model:
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


@pytest.mark.slow
def test_a_healthy_slow_model_is_kept_not_replaced_by_a_fast_starter(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 16)).astype("float32")
    y = (x @ rng.normal(scale=0.5, size=(16, 1)) + 0.3 * rng.normal(size=(1200, 1)))
    data = (x[:960], y[:960].astype("float32"), x[960:], y[960:].astype("float32"))
    space = {"learning_rate": [0.03]}  # the fast starter: 30x the user's rate
    common = dict(space=space, trials=1, probe_steps=30, evaluations=2, train_steps=1200,
                  diagnose=False, diagnose_after=False)
    flat = stabilize(_slow_regression, data, horizon_fraction=0.0,
                     out_dir=str(tmp_path / "flat"), **common)
    assert flat.improved  # judged at 30 steps, the fast starter wins
    laddered = stabilize(_slow_regression, data, out_dir=str(tmp_path / "ladder"), **common)
    assert not laddered.improved, laddered.summary()
    assert [r["steps"] for r in laddered.rungs] == [30, 90, 270]
    # and at the user's 1,200 steps, on fresh seeds, the kept configuration ends lower
    assert _judge(laddered, *data) < _judge(flat, *data)

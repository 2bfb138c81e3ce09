"""Faults are contained: NaN, exceptions, out of memory, Ctrl-C, killed workers, lost trials.

The driver-level tests run `OptunaDriver` with a scripted evaluator (no Keras: fast
and exact); the end-to-end tests run real probes on tiny data; the ones with
worker processes or signals are marked slow.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import keras
import optuna
import pytest
import scenarios
from optuna.trial import TrialState

from stabilizer import ConfigError, SearchAbortedError, SearchConfig, StabilityConfig, stabilize
from stabilizer.cli import load_result
from stabilizer.data import prepare_data
from stabilizer.errors import (
    ProbeFailedError,
    ProbeOutOfMemoryError,
    SearchInterrupted,
    mask_secrets,
)
from stabilizer.probe import is_out_of_memory, run_probe
from stabilizer.scoring import ScoreComponents, score_traces
from stabilizer.search import catch_interrupts, raise_if_interrupted
from stabilizer.search._evaluator import Evaluation
from stabilizer.search._workers import storage_for_workers
from stabilizer.search.optuna import (
    OptunaDriver,
    TrialSeededSampler,
    fail_lost_trials,
    infeasible_batch_sizes,
    is_baseline_trial,
    open_storage,
    open_study,
    this_worker,
)
from stabilizer.space import SearchSpace

TESTS = Path(__file__).resolve().parents[1]


# -- a scripted evaluator: the driver's fault handling without Keras -----------------------------
def _components(score: float) -> ScoreComponents:
    return ScoreComponents(score=score, verdict="stable", reasons=[], diverged=False,
                           final_val_loss=0.5, reference_loss=2.3, quality=score, progress=0.7,
                           stuck=False, oscillation=0.0, spike_rate=0.0, explode_rate=0.0,
                           vanishing_share=0.0, seed_spread=0.0, seeds=1, per_seed=[])


class _Data:
    train_size = 320
    fixed_batch = False


class ScriptedEvaluator:
    """`Evaluator` stand-in: `script(call_index, config)` returns a score or raises."""

    uses_hp = False
    data = _Data()

    def __init__(self, script):
        self.script = script
        self.configs: list[StabilityConfig] = []

    def evaluate(self, config, hp=None, report=None) -> Evaluation:
        self.configs.append(config)
        score = self.script(len(self.configs) - 1, config)
        return Evaluation(config, _components(score), [])


def _driver(tmp_path: Path, space: dict[str, Any], **settings: Any) -> OptunaDriver:
    options = {"trials": 4, "prune": False, "seeds": 1, "out_dir": str(tmp_path),
               "study_name": "stabilizer",
               "storage": f"journal://{tmp_path / 'study.log'}", **settings}
    driver = OptunaDriver(SearchConfig(**options), SearchSpace.from_dict(space))
    driver.poll_seconds = 0.1
    return driver


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_out_of_memory_marks_the_batch_size_infeasible_and_it_is_never_sampled_again(tmp_path):
    def script(i, config):
        if config.batch_size == 64:
            raise ProbeOutOfMemoryError("out of memory at batch_size=64: OOM when allocating", 64)
        return 1.0

    driver = _driver(tmp_path, {"batch_size": [8, 16, 64]}, trials=10,
                     max_consecutive_failures=1)
    driver._study().enqueue_trial({"batch_size": 64})  # the first trial runs out of memory
    evaluator = ScriptedEvaluator(script)
    records = driver.run(evaluator)
    study = driver._study()
    assert infeasible_batch_sizes(study) == {64: "out of memory at batch_size=64: OOM when "
                                                 "allocating"}
    assert [c.batch_size for c in evaluator.configs].count(64) == 1  # skipped from then on
    assert evaluator.configs[0].batch_size == 64
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["out_of_memory"] == 64
    assert "OOM when allocating" in failed[0].user_attrs["error"]
    # not a "consecutive failure" (limit 1 here), and the budget is still spent in full
    assert sum(r.state == "COMPLETE" for r in records) == 10


def test_no_feasible_batch_size_left_stops_the_search_with_a_clear_error(tmp_path):
    def script(i, config):
        raise ProbeOutOfMemoryError(f"OOM at batch_size={config.batch_size}", config.batch_size)

    driver = _driver(tmp_path, {"batch_size": [16, 32]}, trials=3)
    with pytest.raises(SearchAbortedError, match=r"out of memory at every batch size the "
                                                 r"search may use \(16, 32\)"):
        driver.run(ScriptedEvaluator(script))
    assert sorted(infeasible_batch_sizes(driver._study())) == [16, 32]
    assert _states(driver._study()) == ["FAIL", "FAIL", "FAIL"]


def test_sampler_never_proposes_an_infeasible_batch_size(tmp_path):
    study = optuna.create_study(sampler=TrialSeededSampler(0, n_startup_trials=3),
                                direction="maximize")
    study.set_user_attr("infeasible_batch_size:32", "OOM")
    study.set_user_attr("infeasible_batch_size:64", "OOM")
    study.optimize(lambda t: float(t.suggest_categorical("batch_size", [8, 16, 32, 64])),
                   n_trials=30)
    assert {t.params["batch_size"] for t in study.trials} <= {8, 16}


def test_sampler_draws_depend_on_seed_and_trial_number_only():
    def params(seed: int, n: int = 6) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=TrialSeededSampler(seed), direction="maximize")
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("y", 0, 100),
                       n_trials=n)
        return [t.params for t in study.trials]

    assert params(3) == params(3)  # same seed, same trials
    assert params(3) != params(4)
    first = params(3)
    assert len({json.dumps(p, sort_keys=True) for p in first}) == len(first)  # workers differ


def test_consecutive_failures_stop_after_n_and_keep_each_error(tmp_path):
    def script(i, config):
        if i == 1:
            return 1.0  # a success in between resets the count
        raise ProbeFailedError(f"build_fn raised RuntimeError: call {i}\nTraceback (most ...")

    driver = _driver(tmp_path, {"learning_rate": [1e-3, 1e-2]}, trials=10,
                     max_consecutive_failures=3)
    with pytest.raises(SearchAbortedError, match="3 trials failed in a row"):
        driver.run(ScriptedEvaluator(script))
    study = driver._study()
    assert _states(study) == ["FAIL", "COMPLETE", "FAIL", "FAIL", "FAIL"]
    errors = [t.user_attrs["error"] for t in study.trials if t.state == TrialState.FAIL]
    assert errors == [f"build_fn raised RuntimeError: call {i}\nTraceback (most ..."
                      for i in (0, 2, 3, 4)]


def test_ctrl_c_fails_the_running_trial_as_interrupted_and_keeps_the_others(tmp_path):
    def script(i, config):
        if i == 2:
            raise KeyboardInterrupt
        return float(i)

    driver = _driver(tmp_path, {"learning_rate": [1e-3, 1e-2]}, trials=5)
    with pytest.raises(KeyboardInterrupt):
        driver.run(ScriptedEvaluator(script))
    study = driver._study()
    assert _states(study) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.trials[2].user_attrs["interrupted"] is True
    # resuming runs only what is missing
    records = _driver(tmp_path, {"learning_rate": [1e-3, 1e-2]}, trials=5).run(
        ScriptedEvaluator(lambda i, c: 1.0))
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE",
                                          "COMPLETE", "COMPLETE"]
    assert [r.score for r in records[:2]] == [0.0, 1.0]


def test_a_ctrl_c_that_python_drops_is_raised_again_at_the_next_check():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with catch_interrupts():
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # what happens to it in a finalizer run by the garbage collector
            with pytest.raises(KeyboardInterrupt):
                raise_if_interrupted()
            raise_if_interrupted()  # raised once
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        raise_if_interrupted()  # nothing outside the block
    finally:
        signal.signal(signal.SIGINT, previous)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_trial_left_running_by_a_dead_worker_is_failed_never_counted(tmp_path):
    study = open_study(SearchConfig(storage=f"journal://{tmp_path / 's.log'}", trials=2,
                                    study_name="stabilizer"))
    dead = study.ask()
    study._storage.set_trial_user_attr(dead._trial_id, "worker",
                                       {**this_worker(), "pid": _dead_pid(), "start": ""})
    alive = study.ask()  # a worker that still runs (our parent process)
    parent = os.getppid()
    study._storage.set_trial_user_attr(alive._trial_id, "worker",
                                       {**this_worker(), "pid": parent, "start": ""})
    assert fail_lost_trials(study) == [dead.number]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["lost"] is True
    assert "ended while the trial was running" in trials[0].user_attrs["error"]
    assert trials[1].state == TrialState.RUNNING
    assert fail_lost_trials(study) == []  # idempotent


def test_a_worker_waits_while_others_run_the_last_trials_then_stops(tmp_path):
    driver = _driver(tmp_path, {"learning_rate": [1e-3, 1e-2]}, trials=2)
    study = driver._study()
    study.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}))
    other = study.ask()  # the last slot, run by another live worker
    study._storage.set_trial_user_attr(other._trial_id, "worker",
                                       {**this_worker(), "pid": os.getppid(), "start": ""})
    timer = threading.Timer(1.0, lambda: study.tell(other, 2.0))
    timer.start()
    evaluator = ScriptedEvaluator(lambda i, c: 1.0)
    started = time.monotonic()
    records = driver.run(evaluator)
    timer.join()
    assert time.monotonic() - started >= 0.9  # it waited instead of overshooting
    assert evaluator.configs == []  # and ran nothing: the budget was spent by the others
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE"]


def test_a_trial_opened_after_the_budget_was_taken_is_surplus_and_runs_no_probe(tmp_path):
    driver = _driver(tmp_path, {"learning_rate": [1e-3, 1e-2]}, trials=1)
    study = driver._study()
    first = study.ask()
    study._storage.set_trial_user_attr(first._trial_id, "worker",
                                       {**this_worker(), "pid": os.getppid(), "start": ""})
    late = study.ask()  # another worker opened this one in the same instant
    assert driver._claims_surplus(late)
    assert not driver._claims_surplus(first)


def test_the_baseline_is_probed_once_while_its_claimer_lives(tmp_path):
    driver = _driver(tmp_path, {"learning_rate": [1e-3]})
    study = driver._study()
    study.set_user_attr("baseline_claim", {**this_worker(), "pid": os.getppid(), "start": ""})
    timer = threading.Timer(0.5, lambda: study.set_user_attr("baseline", {"from": "other"}))
    timer.start()
    assert driver.load_baseline() == {"from": "other"}  # waited for the other worker
    timer.join()

    other = _driver(tmp_path / "b", {"learning_rate": [1e-3]})
    other._study().set_user_attr("baseline_claim", {**this_worker(), "pid": _dead_pid(),
                                                    "start": ""})
    assert other.load_baseline() is None  # the claimer died: this process probes it
    assert other._study().user_attrs["baseline_claim"]["pid"] == os.getpid()


def test_a_search_on_an_sqlite_file_claims_the_baseline_without_waiting(tmp_path, monkeypatch):
    # An SQLite file serves one process: its search claims the baseline and goes on
    # (the settle wait is for workers starting together on a shared storage). The
    # driver's sleeps are recorded, not timed: a loaded machine's round trips vary.
    sleeps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr("stabilizer.search.optuna._driver.time.sleep",
                        lambda s: (sleeps.append(s), real_sleep(s)))
    alone = _driver(tmp_path, {"learning_rate": [1e-3]},
                    storage=f"sqlite:///{tmp_path / 'study.db'}")
    alone.claim_settle_seconds = 7.0
    assert alone.load_baseline() is None
    assert sleeps == []
    assert alone._study().user_attrs["baseline_claim"]["pid"] == os.getpid()
    shared = _driver(tmp_path / "j", {"learning_rate": [1e-3]})  # a journal file
    shared.claim_settle_seconds = 0.3
    assert shared.load_baseline() is None
    assert sleeps == [0.3]  # claimed, waited once, read its own claim back


# -- storage: journal files, URLs, workers, passwords ----------------------------------------------
def test_journal_storage_from_a_url_or_a_log_path(tmp_path):
    for url in (f"journal://{tmp_path / 'a' / 'study.log'}", str(tmp_path / "b.log")):
        storage = open_storage(url)
        assert isinstance(storage, optuna.storages.JournalStorage)
    assert (tmp_path / "a" / "study.log").parent.is_dir()


def test_storage_for_workers(tmp_path):
    settings = SearchConfig(out_dir=str(tmp_path), study_name="s")
    assert storage_for_workers(settings, 1) is settings
    shared = storage_for_workers(settings, 3)
    assert shared.storage == f"journal://{(tmp_path / 's.log').resolve()}"
    open_study(shared)  # the journal now exists: one process resumes from it
    assert storage_for_workers(settings, 1).storage == shared.storage
    with pytest.raises(ConfigError, match="workers=0: expected an integer >= 1"):
        storage_for_workers(settings, 0)
    with pytest.raises(ConfigError, match="driver='optuna'"):
        storage_for_workers(SearchConfig(driver="keras_tuner"), 2)
    with pytest.raises(ConfigError, match="in-memory database cannot be shared"):
        storage_for_workers(SearchConfig(storage="sqlite:///:memory:"), 2)
    single = SearchConfig(out_dir=str(tmp_path / "one"), study_name="s")
    open_study(single)  # a study begun in the default SQLite file stays there
    with pytest.raises(ConfigError, match="already lives in the SQLite file"):
        storage_for_workers(single, 2)


@pytest.mark.parametrize("url, masked", [
    ("postgresql://me:s3cret@db.example:5432/stab", "postgresql://me:***@db.example:5432/stab"),
    ("postgresql+psycopg2://me:p@ss/w:rd@db/stab", "postgresql+psycopg2://me:***@db/stab"),
    ("mysql://me@db/stab?password=s3cret&x=1", "mysql://me@db/stab?password=***&x=1"),
    ("sqlite:///out/study.db", "sqlite:///out/study.db"),
])
def test_passwords_are_masked(url, masked):
    assert mask_secrets(f"storage={url!r} failed") == f"storage={masked!r} failed"


def test_an_unreachable_database_is_a_config_error_without_the_password(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    url = "postgresql+psycopg2://stab:s3cret-pw@127.0.0.1:1/stab"
    with pytest.raises(ConfigError) as info:
        open_study(SearchConfig(storage=url, out_dir=str(tmp_path), study_name="s"))
    assert "s3cret-pw" not in str(info.value) and "stab:***@127.0.0.1:1" in str(info.value)
    assert "s3cret-pw" not in caplog.text


def test_yaml_cannot_run_code(tmp_path):
    from stabilizer.config import RunConfig
    from stabilizer.space import load_space

    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    space_file = tmp_path / "space.yaml"
    space_file.write_text(f"batch_size: {payload}\n")
    with pytest.raises(ConfigError):
        SearchConfig.from_yaml(f"trials: {payload}\nseeds: 1\n")
    with pytest.raises(ConfigError):
        RunConfig.from_yaml(f"model: m:f\ndata: sklearn:digits\nsearch: {payload}\n")
    with pytest.raises(ConfigError):
        load_space(str(space_file))
    assert not marker.exists()


# -- real probes ---------------------------------------------------------------------------------
class OOMAbove(keras.layers.Layer):
    """Raises the backend's out-of-memory error for batches larger than `limit`."""

    def __init__(self, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def call(self, x):
        import tensorflow as tf

        limit = self.limit

        def check(n):
            if int(n) > limit:
                raise MemoryError(f"OOM when allocating tensor with shape[{int(n)},64]")
            return n

        n = tf.py_function(check, [tf.shape(x)[0]], tf.int32)
        n.set_shape(())
        return x + tf.cast(n * 0, x.dtype)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "limit": self.limit}


def oom_above_16() -> keras.Model:
    model = keras.Sequential([keras.Input((64,)), OOMAbove(16),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def infinite_gradients() -> keras.Model:
    """sqrt(0 * x) has an infinite derivative: the first update makes the weights NaN."""
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(16)(inputs)
    root = keras.layers.Lambda(lambda h: keras.ops.sqrt(keras.ops.abs(h) * 0.0))(hidden)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Add()([hidden, root]))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss="sparse_categorical_crossentropy")
    return model


def test_out_of_memory_is_recognised_for_every_backend():
    import tensorflow as tf

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating"))
    assert not is_out_of_memory(ValueError("shapes (3,) and (4,) are incompatible"))
    assert not is_out_of_memory(RuntimeError("the room is full"))


def test_a_real_out_of_memory_probe_raises_with_its_batch_size(small_digits):
    settings = SearchConfig(probe_steps=4, evaluations=2, seeds=1)
    data = prepare_data(small_digits)
    trace = run_probe(oom_above_16, data, StabilityConfig(batch_size=16), settings, 0)
    assert trace.steps_done == 4
    with pytest.raises(ProbeOutOfMemoryError, match="out of memory at batch_size=32") as info:
        run_probe(oom_above_16, data, StabilityConfig(batch_size=32), settings, 0)
    assert info.value.batch_size == 32 and "ResourceExhaustedError" in str(info.value)


def test_nan_gradients_are_scored_diverged(small_digits):
    settings = SearchConfig(probe_steps=10, evaluations=2, seeds=1)
    trace = run_probe(infinite_gradients, prepare_data(small_digits), StabilityConfig(),
                      settings, 0)
    assert trace.diverged and trace.steps_done < 10
    components = score_traces([trace])
    assert components.diverged and components.verdict == "diverged"
    assert components.score == -50.0


class RaisingBatches(keras.utils.PyDataset):
    """The user's data pipeline: it breaks once `armed` is set."""

    def __init__(self, x, y, armed: dict[str, bool]):
        super().__init__()
        self.x, self.y, self.armed = x, y, armed

    def __len__(self):
        return len(self.x) // 32

    def __getitem__(self, index):
        if self.armed["on"]:
            raise OSError(f"cannot read shard {index}")
        return self.x[index * 32:(index + 1) * 32], self.y[index * 32:(index + 1) * 32]


@pytest.mark.slow
def test_a_data_pipeline_error_fails_trials_with_the_traceback_then_stops(small_digits,
                                                                          tmp_path):
    x, y = small_digits
    armed = {"on": False}
    train = RaisingBatches(x[:320], y[:320], armed)
    val = RaisingBatches(x[320:], y[320:], {"on": False})
    builds = {"n": 0}

    def build():
        builds["n"] += 1
        # the check before the search and the baseline read the data; every trial fails
        armed["on"] = builds["n"] > 2
        return scenarios.healthy_mlp()

    with pytest.raises(SearchAbortedError, match="2 trials failed in a row") as info:
        # diagnose=False: the baseline is then exactly one build (the diagnosis builds more)
        stabilize(build, (train, val), space="quick", budget=3, seeds=1, probe_steps=6,
                  evaluations=2, out_dir=str(tmp_path), max_consecutive_failures=2,
                  diagnose=False, study_name="stabilizer", horizon_fraction=0.0)
    assert "OSError: cannot read shard" in str(info.value)
    study = optuna.load_study(study_name="stabilizer", storage=f"sqlite:///{tmp_path}/"
                                                               "stabilizer.db")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 2
    error, trace = failed[0].user_attrs["error"], failed[0].user_attrs["traceback"]
    assert "OSError: cannot read shard" in error and "Traceback" not in error
    assert "Traceback (most recent call last)" in trace and "in __getitem__" in trace


@pytest.mark.slow
def test_out_of_memory_end_to_end_skips_the_batch_size(small_digits, tmp_path):
    settings = SearchConfig(space={"batch_size": [8, 32]}, trials=2, seeds=1, probe_steps=6,
                            evaluations=2, batch_size=8, prune=False, out_dir=str(tmp_path),
                            study_name="stabilizer", horizon_fraction=0.0)
    open_study(settings).enqueue_trial({"batch_size": 32})
    result = stabilize(oom_above_16, small_digits, config=settings)
    assert [(t.state, t.config.batch_size) for t in result.trials] == [
        ("FAIL", 32), ("COMPLETE", 8), ("COMPLETE", 8)]
    assert "ResourceExhaustedError" in result.trials[0].error
    assert result.best_config.batch_size in (None, 8)


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_returns_a_partial_result(small_digits, tmp_path):
    builds = {"n": 0}

    def build():
        builds["n"] += 1
        if builds["n"] == 4:  # the check, baseline, trial 0, then Ctrl-C during trial 1
            raise KeyboardInterrupt
        return scenarios.healthy_mlp()

    # diagnose=False: the baseline is then exactly one build (the diagnosis builds more)
    options = dict(space="quick", budget=3, seeds=1, probe_steps=6, evaluations=2,
                   out_dir=str(tmp_path), prune=False, diagnose=False, horizon_fraction=0.0)
    with pytest.raises(SearchInterrupted, match="1 finished trials kept") as info:
        stabilize(build, small_digits, **options)
    partial = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)
    assert [t.state for t in partial.trials] == ["COMPLETE", "FAIL"]
    assert partial.trials[1].error.startswith("interrupted (KeyboardInterrupt")
    assert partial.baseline.components is not None and "baseline" in partial.summary()

    resumed = stabilize(scenarios.healthy_mlp, small_digits, **options)
    assert [t.state for t in resumed.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert resumed.trials[0].score == partial.trials[0].score  # kept, not redone


SIGINT_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    sys.path.insert(0, {tests!r})
    import scenarios
    from stabilizer import stabilize
    from stabilizer.errors import SearchInterrupted
    x, y = scenarios.digits()

    def build_fn():
        # once the test asks, the next build (inside a trial) says so and waits for the signal
        if os.path.exists({hold!r}):
            open({held!r}, "w").close()
            time.sleep(120)
        return scenarios.healthy_mlp()

    try:
        stabilize(build_fn, (x[:300], y[:300]), space="quick", budget=50, seeds=1,
                  probe_steps=30, evaluations=2, storage={storage!r}, prune=False,
                  study_name="stabilizer", horizon_fraction=0.0)
    except SearchInterrupted as exc:
        trials = [[t.number, t.state] for t in exc.result.trials]
        print(json.dumps({{"trials": trials, "summary": exc.result.summary()[:80]}}))
        sys.exit(130)
""")


@pytest.mark.slow
def test_a_real_sigint_keeps_what_finished_and_leaves_nothing_running(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    script = tmp_path / "search.py"
    hold, held = tmp_path / "hold", tmp_path / "held"
    script.write_text(SIGINT_SCRIPT.format(tests=str(TESTS), storage=storage, hold=str(hold),
                                           held=str(held)))
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=log, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="stabilizer", storage=storage)
        except KeyError:
            continue
        if any(t.state == TrialState.COMPLETE for t in study.trials) and \
                study.trials[-1].state == TrialState.RUNNING:
            hold.touch()  # the signal must land inside a trial, not between two
            break
    while time.time() < deadline and proc.poll() is None and not held.exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        # generous: finishing the running probe and writing the partial report can take
        # minutes on a loaded 2-core machine
        out, _ = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # closes the pipes, so no unclosed-file warning leaks
        log.close()
    assert proc.returncode == 130, (tmp_path / "stderr.txt").read_text()[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    trials = optuna.load_study(study_name="stabilizer", storage=storage).trials
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert [[t.number, t.state.name] for t in trials] == report["trials"]
    assert sum(state == "COMPLETE" for _, state in report["trials"]) >= 1
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].number == trials[-1].number


def _kill_one_running_worker(storage: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the worker process of the first trial seen running (once)."""
    while not stop.is_set() and not killed:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name="stabilizer", storage=open_storage(storage))
        except KeyError:
            continue
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            pid = trial.user_attrs.get("worker", {}).get("pid")
            if pid and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed.append(trial.number)
                return


@pytest.mark.slow
def test_workers_share_one_study_and_survive_a_killed_worker(small_digits, tmp_path):
    storage = f"journal://{tmp_path / 'study.log'}"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_running_worker, args=(storage, killed, stop))
    killer.start()
    finished: list[int] = []
    try:
        result = stabilize(scenarios.healthy_mlp, small_digits, space="quick", budget=4,
                           seeds=1, probe_steps=6, evaluations=2, storage=storage,
                           out_dir=str(tmp_path), prune=False, workers=2, horizon_fraction=0.0,
                           study_name="stabilizer",
                           progress=lambda record: finished.append(record.number))
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    states = {t.number: t.state for t in result.trials}
    assert sum(s == "COMPLETE" for s in states.values()) == 4  # the budget, exactly
    assert states[killed[0]] == "FAIL"  # lost, never counted as done
    assert "lost" in next(t.error for t in result.trials if t.number == killed[0])
    assert "RUNNING" not in states.values()
    assert sorted(finished) == sorted(states)  # each trial reported (and run) once
    trials = optuna.load_study(study_name="stabilizer", storage=open_storage(storage)).trials
    workers = {t.user_attrs["worker"]["pid"] for t in trials if not is_baseline_trial(t)}
    assert len(workers) >= 2 and os.getpid() not in workers
    assert sum(map(is_baseline_trial, trials)) == 1  # your configuration, shown once
    # `stabilizer report` reads the same journal file back.
    loaded = load_result("stabilizer", storage)
    assert {t.number: t.state for t in loaded.trials} == states
    assert loaded.best_config == result.best_config


def test_workers_refuse_a_build_fn_they_cannot_receive(small_digits, tmp_path):
    with pytest.raises(ConfigError, match="build_fn cannot be sent to a worker process"):
        stabilize(lambda: scenarios.healthy_mlp(), small_digits, space="quick", budget=2,
                  seeds=1, probe_steps=4, evaluations=2, out_dir=str(tmp_path), workers=2)



CLI_MODEL = textwrap.dedent("""
    import keras

    def build():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model
""")


@pytest.mark.slow
def test_cli_workers_option_runs_the_search_in_several_processes(tmp_path, capsys):
    from stabilizer.cli import main

    (tmp_path / "model.py").write_text(CLI_MODEL)
    config = tmp_path / "run.yaml"
    config.write_text("model: model.py:build\ndata: sklearn:digits\nsearch:\n  space: quick\n"
                      "  trials: 3\n  seeds: 1\n  probe_steps: 6\n  evaluations: 2\n"
                      "  prune: false\n  study_name: cli\n")
    out = tmp_path / "out"
    assert main(["search", str(config), "--workers", "2", "--out", str(out), "-q"]) == 0
    journal = out / "cli.log"  # several workers: the default storage is a journal file
    assert journal.is_file() and not (out / "cli.db").exists()
    study = optuna.load_study(study_name="cli", storage=open_storage(str(journal)))
    complete = [t for t in study.trials
                if t.state == TrialState.COMPLETE and not is_baseline_trial(t)]
    assert len(complete) == 3
    assert os.getpid() not in {t.user_attrs["worker"]["pid"] for t in complete}
    assert (out / "cli" / "report.html").is_file()
    assert capsys.readouterr().out.strip().endswith("report.html")
    # usage errors are one line and exit status 2
    assert main(["search", str(config), "--workers", "0", "--out", str(out), "-q"]) == 2
    assert "workers=0: expected an integer >= 1" in capsys.readouterr().err

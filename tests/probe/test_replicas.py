"""Replica probes: a candidate's seeds trained together in one program.

Replica k must train exactly what a probe alone on seed k trains: the tests compare
their per-step training losses, gradient norms and validation losses, to a relative
tolerance of 1e-4 (float32 sums taken in another order). Under PyTorch an unseeded
Dropout layer draws its masks from torch's global generator, whose order the replicas
change, so there the model's Dropout layer is given a seed.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import prepare_data
from stabilizer.probe import ProbePlan, max_replicas, run_probe, run_probes
from stabilizer.probe import _replicas as replicas_module

TOLERANCE = 1e-4
SEEDS = [0, 1, 2]
DROPOUT_SEED = 7 if keras.backend.backend() == "torch" else None


def _data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return prepare_data(((x / 16.0).astype("float32"), y.astype("int32")))


def _builder(optimizer):
    def build():
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2, seed=DROPOUT_SEED),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model
    return build


def _settings(**kwargs):
    return SearchConfig(**{"probe_steps": 30, "evaluations": 3, "seeds": len(SEEDS), **kwargs})


def _close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE * 1e-2)


def _alone(build, data, config, settings):
    plan = ProbePlan.from_settings(settings)
    return [run_probe(build, data, config, settings, seed, plan=plan) for seed in SEEDS]


@pytest.mark.parametrize("optimizer, config", [
    (lambda: keras.optimizers.SGD(0.05, momentum=0.9), StabilityConfig(clipping="norm",
                                                                       clip_value=0.5)),
    (lambda: keras.optimizers.Adam(3e-3), StabilityConfig(clipping="global_norm",
                                                          clip_value=0.5)),
    (lambda: keras.optimizers.RMSprop(1e-3), StabilityConfig(clipping="value",
                                                             clip_value=0.01)),
], ids=["sgd-momentum-clipnorm", "adam-global-clipnorm", "rmsprop-clipvalue"])
def test_each_replica_trains_what_a_probe_alone_on_its_seed_trains(optimizer, config):
    data, settings, build = _data(), _settings(), _builder(optimizer)
    run = run_probes(build, data, config, settings, SEEDS, stop_on_divergence=False)
    assert run.together == len(SEEDS) and run.fallback is None
    for alone, replica in zip(_alone(build, data, config, settings), run.traces):
        _close(alone.loss, replica.loss)
        _close(alone.grad_norm, replica.grad_norm)
        _close(alone.layer_grad_norm, replica.layer_grad_norm)
        _close(alone.val_loss, replica.val_loss)
        _close([alone.initial_val_loss], [replica.initial_val_loss])
        assert alone.layer_names == replica.layer_names
        assert replica.val_metrics[-1]["val_accuracy"] == pytest.approx(
            alone.val_metrics[-1]["val_accuracy"], abs=1e-6)
        assert replica.bn_stats[-1] == pytest.approx(alone.bn_stats[-1], rel=TOLERANCE)
    # the replicas are different draws, not copies of one
    assert not np.allclose(run.traces[0].loss, run.traces[1].loss)


def test_a_diverging_replica_leaves_the_others_as_they_are_without_it():
    built = []

    def build():  # the second model built (seed 1, alone or as replica 1) blows up
        bad = len(built) % len(SEEDS) == 1
        built.append(bad)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(1),
                                  keras.layers.Rescaling(30.0 if bad else 1.0)])  # 900x the LR
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        return model

    digits = _data()
    data = prepare_data((digits.x, digits.x.sum(axis=1) / 10.0, digits.x_val,
                         digits.x_val.sum(axis=1) / 10.0))
    settings = _settings()
    run = run_probes(build, data, StabilityConfig(), settings, SEEDS, stop_on_divergence=False)
    alone = _alone(build, data, StabilityConfig(), settings)
    assert run.together == len(SEEDS)
    assert [t.diverged for t in run.traces] == [False, True, False] == [t.diverged for t in alone]
    # A replica's record ends at the step it diverged; a probe alone may record one step
    # more (PyTorch hands Keras' callbacks each step's logs one step late).
    assert run.traces[1].steps_done <= alone[1].steps_done < settings.probe_steps
    _close(alone[1].loss[:run.traces[1].steps_done], run.traces[1].loss)
    for k in (0, 2):
        assert run.traces[k].steps_done == settings.probe_steps
        _close(alone[k].loss, run.traces[k].loss)
        _close(alone[k].val_loss, run.traces[k].val_loss)


def test_the_search_stops_a_candidate_at_its_first_diverged_replica():
    def build():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(1e4), loss="sparse_categorical_crossentropy")
        return model

    data = _data()
    run = run_probes(build, data, StabilityConfig(), _settings(), SEEDS)
    assert run.together == len(SEEDS) and any(t.diverged for t in run.traces)
    assert max(t.steps_done for t in run.traces) < 30


class OwnStep(keras.Sequential):
    def train_step(self, *args):  # (data), or (state, data) under JAX
        return super().train_step(*args)


def _own_step():
    model = OwnStep([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _stateful():
    model = keras.Sequential([keras.Input((8, 8), batch_size=16),
                              keras.layers.SimpleRNN(4, stateful=True),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("case, words", [
    ("train_step", "overrides train_step"),
    ("stateful", "stateful recurrent layers"),
    ("pipeline", "pipeline"),
    ("plateau", "'plateau' schedule"),
    ("off", "replicas='off'"),
])
def test_where_replicas_cannot_be_built_the_seeds_run_in_turn_and_say_why(case, words):
    data, settings, config, build = _data(), _settings(), StabilityConfig(), _own_step
    if case == "stateful":
        x = np.random.default_rng(0).normal(size=(320, 8, 8)).astype("float32")
        data = prepare_data((x, np.arange(320) % 10))
        settings, build = _settings(batch_size=16), _stateful
    elif case == "pipeline":
        arrays = data

        class Batches(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()

            def __len__(self):
                return 10

            def __getitem__(self, index):
                rows = slice(index * 32, (index + 1) * 32)
                return arrays.x[rows], arrays.y[rows]

        data = prepare_data((Batches(), Batches()))
        build = _builder(lambda: keras.optimizers.Adam(1e-3))
    elif case in ("plateau", "off"):
        build = _builder(lambda: keras.optimizers.Adam(1e-3))
        config = StabilityConfig(lr_schedule="plateau") if case == "plateau" else config
        settings = _settings(replicas="off") if case == "off" else settings
    run = run_probes(build, data, config, settings, SEEDS[:2])
    assert run.together == 1 and words in run.fallback
    assert len(run.traces) == 2 and all(t.steps_done == 30 for t in run.traces)


def test_replicas_that_run_out_of_memory_shrink_and_the_probes_go_on(monkeypatch):
    real = replicas_module.run_replica_probes
    asked = []

    def small_memory(build_fn, data, config, settings, seeds, **kwargs):
        asked.append(len(seeds))
        if len(seeds) > 2:
            raise replicas_module.ReplicasOutOfMemory(len(seeds), "out of memory")
        return real(build_fn, data, config, settings, seeds, **kwargs)

    import stabilizer.probe._runner as runner

    monkeypatch.setattr(runner, "run_replica_probes", small_memory)
    build = _builder(lambda: keras.optimizers.Adam(1e-3))
    run = run_probes(build, _data(), StabilityConfig(), _settings(seeds=4), [0, 1, 2, 3])
    assert asked == [4, 2, 2] and run.together == 2
    assert [t.steps_done for t in run.traces] == [30] * 4


def test_the_replicas_per_program_are_capped_by_the_free_memory(monkeypatch):
    data = _data()
    model = _builder(lambda: keras.optimizers.Adam(1e-3))()
    plan = ProbePlan.from_settings(_settings())
    assert max_replicas(model, data, 32, plan) == 32
    monkeypatch.setattr(replicas_module, "_free_memory", lambda: 4e5)
    assert max_replicas(model, data, 32, plan) == 1


@pytest.mark.parametrize("value", ["many", 0, -1, 1.5, True])
def test_a_bad_replicas_setting_names_the_field(value):
    from stabilizer.errors import ConfigError

    with pytest.raises(ConfigError, match="replicas="):
        SearchConfig(replicas=value)


@pytest.mark.parametrize("replicas, together", [("auto", 2), ("off", 1)])
def test_each_trial_records_how_its_seeds_were_trained(replicas, together, small_digits,
                                                       quick_settings):
    import scenarios

    from stabilizer import stabilize

    settings = SearchConfig.from_dict({**quick_settings.to_dict(), "replicas": replicas,
                                       "diagnose": False})
    result = stabilize(scenarios.healthy_mlp, small_digits, config=settings)
    probed = [t for t in result.trials if t.state == "COMPLETE"]
    assert probed and all(t.probes["together"] == together for t in probed)
    if together > 1:
        assert "seeds trained together in" in result.summary()
    else:
        assert all(t.probes["fallback"] == "replicas='off' in the settings" for t in probed)
        assert "seeds one after another in" in result.summary()


class HalfLoss(keras.Sequential):
    """A user's compute_loss override that takes no `training` argument."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        return 0.5 * super().compute_loss(x, y, y_pred, sample_weight)


def test_a_compute_loss_override_trains_in_the_replicas_as_it_does_alone():
    def build():
        model = HalfLoss([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss="sparse_categorical_crossentropy")
        return model

    data, settings = _data(), _settings()
    run = run_probes(build, data, StabilityConfig(), settings, SEEDS[:2])
    assert run.together == 2
    for alone, replica in zip(_alone(build, data, StabilityConfig(), settings), run.traces):
        _close(alone.loss, replica.loss)


class TwoLayers(keras.Model):
    """A subclassed model: its layers are built at its first call, not before."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(32, activation="relu")
        self.out = keras.layers.Dense(10, activation="softmax")

    def call(self, x):
        return self.out(self.hidden(x))


def test_a_subclassed_model_trains_alone_and_as_replicas_alike():
    def build():
        model = TwoLayers()
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss="sparse_categorical_crossentropy")
        return model

    data, settings = _data(), _settings()
    run = run_probes(build, data, StabilityConfig(), settings, SEEDS[:2])
    assert run.together == 2 and run.fallback is None
    for alone, replica in zip(_alone(build, data, StabilityConfig(), settings), run.traces):
        _close(alone.loss, replica.loss)

"""`stabilizer.monitor`: the probes' telemetry in your own fit, its warnings, and the rescue."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import stabilizer
from stabilizer import ConfigError, StabilityWarning

HERE = Path(__file__).resolve().parent


def data(rows: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 16)).astype("float32")
    w = rng.normal(size=(16, 1)).astype("float32")
    return x, (x @ w + 0.1 * rng.normal(size=(rows, 1))).astype("float32")


def mlp(learning_rate: float, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss="mse")
    return model


def fit(model: keras.Model, callbacks: list, epochs: int = 6) -> list[float]:
    x, y = data()
    keras.utils.set_random_seed(1)
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=callbacks)
    return [float(v) for v in history.history["loss"]]


class LateJump(keras.callbacks.Callback):
    """The learning rate jumps to `rate` at the start of epoch `epoch` (a late instability:
    a restart, a new data shard, a schedule gone wrong)."""

    def __init__(self, epoch: int, rate: float) -> None:
        super().__init__()
        self.epoch, self.rate = epoch, rate

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch == self.epoch:
            self.model.optimizer.learning_rate.assign(self.rate)


def check_rescue() -> dict:
    """A healthy fit whose rate jumps 60x at epoch 2 diverges without the guard; with
    rescue=True it is restored, its rate goes back to the last healthy window's (the
    evidence: the rate the diverging step used), and it ends finite and falling."""
    plain = fit(mlp(0.005), [LateJump(2, 0.3)], epochs=8)
    # unguarded it diverges: NaN, or (the backends differ) a loss 1000x its pre-jump value
    assert not np.isfinite(plain).all() or max(plain[2:]) > 1e3 * plain[1], plain
    guard = stabilizer.monitor(every=8, rescue=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = fit(mlp(0.005), [LateJump(2, 0.3), guard], epochs=8)
    assert np.isfinite(losses).all() and losses[-1] < 0.2 * losses[1], losses
    assert all(b < a for a, b in zip(losses[2:], losses[3:])), losses  # falling after it
    assert guard.history and guard.history[0]["action"].startswith("learning rate 0.3 -> 0.005")
    assert guard.history[0]["evidence"]["healthy_learning_rate"] == pytest.approx(0.005)
    assert all(h["action"] != "stopped" for h in guard.history)
    assert any(issubclass(w.category, StabilityWarning) and "diverged" in str(w.message)
               for w in caught)
    return {"backend": keras.backend.backend(), "losses": losses, "rescues": len(guard.history)}


def test_a_diverging_fit_is_rescued_and_ends_finite_and_falling():
    check_rescue()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="this late divergence is TensorFlow's numerics")
def test_at_an_unchanged_rate_the_first_repair_is_clipping():
    plain = fit(mlp(0.05), [], epochs=8)  # too high a rate: it diverges late, on its own
    assert plain[-1] > 50 * min(plain), plain
    guard = stabilizer.monitor(every=8, rescue=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        losses = fit(mlp(0.05), [guard], epochs=8)
    assert guard.history[0]["action"].startswith("global-norm clipping at ")
    assert guard.history[0]["evidence"]["clip_percentile"] == 90.0
    assert np.isfinite(losses).all() and losses[-1] < 0.1 * plain[-1], (losses, plain)


def test_a_healthy_fit_is_unchanged_and_silent(tmp_path):
    plain = fit(mlp(0.005), [])
    guard = stabilizer.monitor(every=8, log_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StabilityWarning)  # any finding would fail here
        watched = fit(mlp(0.005), [guard])
    np.testing.assert_allclose(watched, plain, rtol=1e-4)  # the same training
    assert guard.findings == [] and guard.history == []
    assert len(guard.windows) == 6 * 16 // 8 and guard.windows[-1]["grad_norm_median"] > 0
    record = json.loads((tmp_path / "monitor.json").read_text())
    assert record["steps"] == 96 and len(record["layers"]) == 3
    assert (tmp_path / "monitor.csv").read_text().startswith("step,steps,loss_median")
    if importlib.util.find_spec("tensorboard") is not None:  # scalars TensorBoard reads
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert "monitor/grad_norm_median" in tags and "monitor/loss_median" in tags
        assert len([t for t in tags if t.startswith("monitor/layer_grad_norm/")]) == 3
        assert len([t for t in tags if t.startswith("monitor/layer_update_ratio/")]) == 3
        assert [e.step for e in events.Scalars("monitor/grad_norm_median")][-1] == 96


def test_the_monitor_keeps_keras_batch_callbacks_asynchronous_and_the_logs_clean():
    model = mlp(0.005)
    guard = stabilizer.monitor(model, every=8)
    callbacks = keras.callbacks.CallbackList([guard], model=model)
    # only on_train_batch_begin is overridden: Keras may dispatch batch ends asynchronously
    assert callbacks._async_train or not keras.src.backend.IS_THREAD_SAFE
    x, y = data()
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[guard])
    assert set(history.history) == {"loss"}  # the per-step loss buffer shows in no log
    assert len(guard.windows) == 4 and all(w["steps"] == 8 for w in guard.windows)


@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="PyTorch runs one step per call")
def test_with_several_steps_per_call_a_window_is_every_calls_and_keeps_each_step():
    model = mlp(0.005)
    model.compile(optimizer=keras.optimizers.SGD(0.005), loss="mse", steps_per_execution=4)
    guard = stabilizer.monitor(every=2)
    fit(model, [guard], epochs=2)  # 32 steps: 8 calls of 4
    assert guard.step == 32 and [w["steps"] for w in guard.windows] == [8, 8, 8, 8]


class Snapshots(keras.callbacks.Callback):
    """The first layer's weights after every `every` steps."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every, self.step, self.weights = every, 0, []

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self.weights.append([np.array(w) for w in self.model.layers[0].get_weights()])


def test_each_window_has_each_layers_update_ratio_from_the_weights():
    snapshots = Snapshots(8)
    guard = stabilizer.monitor(every=8)
    fit(mlp(0.005), [snapshots, guard], epochs=2)
    first = guard._names[0]
    for i in (1, 2, 3):  # a window's ratio: how far the layer moved since the window before
        before, after = snapshots.weights[i - 1], snapshots.weights[i]
        moved = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before)))
        size = np.sqrt(sum(np.sum(b ** 2) for b in before))
        assert guard.windows[i]["layer_update_ratio"][first] == pytest.approx(moved / size,
                                                                               rel=1e-4)
    assert all(v > 0 for w in guard.windows for v in w["layer_update_ratio"].values())
    frozen = stabilizer.monitor(every=8)
    fit(mlp(0.0), [frozen], epochs=1)  # nothing moves: every ratio is 0
    assert all(v == 0 for w in frozen.windows for v in w["layer_update_ratio"].values())


def test_spikes_against_the_preceding_steps_are_found_in_the_gradients_and_the_loss():
    guard = stabilizer.monitor(every=50)
    guard._names = ["dense", "dense_1"]
    rng = np.random.default_rng(0)
    norms = rng.uniform(0.9, 1.1, 50)
    norms[[20, 30, 40]] = 50.0  # 3 steps 50x the median before them
    norms[10] = np.nan  # a NaN norm is neither a spike nor part of a median
    found = guard._gradient_findings(norms, np.ones(2), nonfinite=False)
    assert [(f.code, f.severity, f.evidence["spikes"]) for f in found] == [
        ("exploding_gradients", "warning", 3)]
    calm = guard._gradient_findings(rng.uniform(0.9, 1.1, 50), np.ones(2), nonfinite=False)
    assert calm == []
    losses = rng.uniform(0.95, 1.05, 50)
    losses[[25, 35]] = 5.0
    assert [f.evidence["spikes"] for f in guard._loss_findings(losses)] == [2]
    assert guard._loss_findings(rng.uniform(0.95, 1.05, 50)) == []


def test_a_nan_gradient_is_an_error_finding_with_its_evidence():
    model = mlp(0.005)
    x, y = data()
    y[5] = np.nan  # one poisoned label: a NaN loss, a NaN gradient
    guard = stabilizer.monitor(every=4)
    with warnings.catch_warnings(record=True) as caught:  # (not pytest.warns: it re-emits
        warnings.simplefilter("always")                  # the backends' own warnings)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
    assert any(issubclass(w.category, StabilityWarning)
               and "ERROR    exploding_gradients" in str(w.message) for w in caught)
    finding = guard.findings[0]
    assert finding.severity == "error" and finding.evidence["nonfinite_gradient"] is True
    assert "clipping" in finding.dimensions and finding.evidence["step"] == 4


def test_rescues_stop_the_fit_when_they_run_out():
    guard = stabilizer.monitor(every=8, rescue=True, max_rescues=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        fit(mlp(5.0), [guard], epochs=4)  # far too high: clipping alone cannot hold it
    assert [h["action"] for h in guard.history][-1] == "stopped"
    assert len(guard.history) == 2


@pytest.mark.parametrize("bad", [{"every": 0}, {"max_rescues": 1.5},
                                 {"divergence_factor": 1}, {"thresholds": {"nope": 1}}])
def test_bad_arguments_are_named(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        stabilizer.monitor(**bad)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_rescue_works_on_the_other_backends(backend):
    pytest.importorskip(backend)
    script = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); "
              "from test_monitor import check_rescue; print(json.dumps(check_rescue()))")
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == backend and out["rescues"] >= 1


def test_a_second_monitor_on_the_same_model_reads_its_own_windows():
    model = mlp(0.005)
    first = stabilizer.monitor(every=8)
    fit(model, [first], epochs=1)
    second = stabilizer.monitor(every=4)
    x, y = data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[second])
    assert type(model.optimizer).__name__ == "InstrumentedSGD"  # not instrumented twice
    assert [w["steps"] for w in second.windows] == [4] * 4
    assert model.optimizer.stab_stats.shape[0] == 4

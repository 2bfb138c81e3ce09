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
    rescue=True it is restored, clipped, and ends finite and falling."""
    plain = fit(mlp(0.005), [LateJump(2, 0.3)], epochs=8)
    # unguarded it diverges: NaN, or (the backends differ) a loss 1000x its pre-jump value
    assert not np.isfinite(plain).all() or max(plain[2:]) > 1e3 * plain[1], plain
    guard = stabilizer.monitor(every=8, rescue=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = fit(mlp(0.005), [LateJump(2, 0.3), guard], epochs=8)
    assert np.isfinite(losses).all() and losses[-1] < 0.2 * losses[1], losses
    assert all(b < a for a, b in zip(losses[2:], losses[3:])), losses  # falling after it
    assert guard.history and guard.history[0]["action"].startswith("global-norm clipping")
    assert all(h["action"] != "stopped" for h in guard.history)
    assert any(issubclass(w.category, StabilityWarning) and "diverged" in str(w.message)
               for w in caught)
    return {"backend": keras.backend.backend(), "losses": losses, "rescues": len(guard.history)}


def test_a_diverging_fit_is_rescued_and_ends_finite_and_falling():
    check_rescue()


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
        assert [e.step for e in events.Scalars("monitor/grad_norm_median")][-1] == 96


def test_a_nan_gradient_is_an_error_finding_with_its_evidence():
    model = mlp(0.005)
    x, y = data()
    y[5] = np.nan  # one poisoned label: a NaN loss, a NaN gradient
    guard = stabilizer.monitor(every=4)
    with pytest.warns(StabilityWarning, match="ERROR    exploding_gradients"):
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
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

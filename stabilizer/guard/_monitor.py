"""`monitor(model)`: the probes' telemetry in your own `fit`, its checks, and the rescue.

The callback swaps the compiled model's optimizer for the instrumented subclass of its own
class (`stabilizer.telemetry.instrumented_optimizer_class`, as the probes do), keeping its
state. The optimizer records, on the device, every step's global and per-layer gradient
norms and whether a gradient was NaN/Inf; every `every` steps the callback reads that
window back in one transfer and checks it with the diagnosis's thresholds
(`stabilizer.diagnosis.THRESHOLDS`):

- ``exploding_gradients``: a NaN/Inf gradient (error), or at least ``explode_spikes``
  steps whose global norm is more than ``explode_factor`` times the median of the
  preceding steps (warning);
- ``vanishing_gradients``: a layer whose median gradient norm over the window is below
  ``vanish_ratio`` times the output layer's (warning);
- ``loss_spikes``: at least ``loss_spikes`` steps whose loss is above ``spike_factor``
  times the median of the preceding steps and four times the window's own noise (MAD of
  log loss) above it (warning).

Each finding is a `Finding` (as `diagnose()` reports it), kept in `findings` and issued
as a `StabilityWarning` once per code. Each step's loss is recorded on the device too
(`stabilizer.telemetry.StepLosses`, fed from the model's `compute_loss`) and read with
the window: in between, the callback only counts steps (`on_train_batch_begin`), so Keras
keeps dispatching its batch-end callbacks asynchronously. Each layer's update/weight
ratio is measured per window on the host, from the weights kept for the rescue
(``||W_now - W_start|| / ||W_start||`` over the window, `windows[i]["layer_update_ratio"]`):
the probes' per-step ratios cost a weight copy per variable and step, which a long fit
should not pay; BatchNormalization's moving statistics are read with them. With
`log_dir`: CSV and JSON at the end of the fit, and TensorBoard scalars per window where
the `tensorboard` package is installed.

``rescue=True``: when a step's loss in the window is NaN/Inf or above ``divergence_factor``
times the median of the steps before it, the weights and the optimizer state saved at the
last healthy window are restored and the smallest repair the evidence calls for is
applied: where the diverging step used a higher learning rate than the last healthy
window's last step (a callback raised it; a schedule's rate cannot be set), that rate
again; otherwise global-norm clipping at the 90th percentile of the recorded gradient
norms, then, at the next divergence, a learning rate 0.3x lower. Each action (with its
evidence) is in `history`; after `max_rescues` the fit stops with a message, the model
holding the last healthy window's weights. A healthy run is never changed.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stabilizer.config import check_number
from stabilizer.diagnosis import THRESHOLDS, Finding, dimensions_for
from stabilizer.errors import ConfigError
from stabilizer.telemetry import (
    StepLosses,
    attach_loss_recorder,
    bn_statistics,
    host_array,
    instrumented_optimizer_class,
    layer_groups,
)

__all__ = ["StabilityMonitor", "StabilityWarning", "monitor"]

#: How much lower the learning rate is after the second rescue.
LR_FACTOR = 0.3


class StabilityWarning(UserWarning):
    """A finding of `monitor` while your model trains (its evidence in the message)."""


def monitor(model: keras.Model | None = None, *, every: int = 50, rescue: bool = False,
            max_rescues: int = 3, divergence_factor: float = 10.0,
            clip_percentile: float = 90.0, log_dir: str | Path | None = None,
            thresholds: dict[str, float] | None = None,
            grad_norms: Sequence[float] = ()) -> StabilityMonitor:
    """A Keras callback that watches your `fit` with the probes' telemetry (and rescues it).

    Args:
        model: the compiled model (optional: Keras hands the callback its model in `fit`).
        every: steps per window; the telemetry is read back once per window.
        rescue: restore and repair a diverging run instead of letting it diverge.
        max_rescues: after this many rescues the fit stops (`model.stop_training`).
        divergence_factor: a step's loss above this times the recent median diverges.
        clip_percentile: the global-norm clipping a rescue sets, as a percentile of the
            gradient norms recorded so far.
        log_dir: where `monitor.csv` (one row per window) and `monitor.json` (findings,
            rescues) are written when the fit ends, and, where the `tensorboard` package is
            installed, TensorBoard scalars as each window is read (``monitor/...``: the
            loss, the global gradient norm, each layer's gradient norm and update/weight
            ratio over the window, findings, rescues).
        thresholds: overrides of `stabilizer.diagnosis.THRESHOLDS`.
        grad_norms: gradient norms measured before (a search's probes of this
            configuration: ``result.fit_kwargs(monitor=True)``): the history that spikes
            and the rescue's clipping are measured against until the fit has its own.

    Use: ``model.fit(x, y, callbacks=[stabilizer.monitor(rescue=True)])``.
    """
    callback = StabilityMonitor(every=every, rescue=rescue, max_rescues=max_rescues,
                                divergence_factor=divergence_factor,
                                clip_percentile=clip_percentile, log_dir=log_dir,
                                thresholds=thresholds, grad_norms=grad_norms)
    if model is not None:
        callback.set_model(model)
    return callback


class StabilityMonitor(keras.callbacks.Callback):
    """See `monitor` and the module docstring."""

    def __init__(self, *, every: int = 50, rescue: bool = False, max_rescues: int = 3,
                 divergence_factor: float = 10.0, clip_percentile: float = 90.0,
                 log_dir: str | Path | None = None,
                 thresholds: dict[str, float] | None = None,
                 grad_norms: Sequence[float] = ()) -> None:
        super().__init__()
        self.every = check_number("every", every, low=1, integer=True)
        self.max_rescues = check_number("max_rescues", max_rescues, low=1, integer=True)
        self.divergence_factor = check_number("divergence_factor", divergence_factor, low=1,
                                              low_open=True)
        self.clip_percentile = check_number("clip_percentile", clip_percentile, low=0,
                                            low_open=True, high=100)
        unknown = sorted(set(thresholds or {}) - set(THRESHOLDS))
        if unknown:
            raise ConfigError(f"thresholds: unknown key {unknown[0]!r}; expected keys of "
                              "stabilizer.diagnosis.THRESHOLDS")
        self.rescue = bool(rescue)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.th = {**THRESHOLDS, **(thresholds or {})}
        #: every finding, in order (a `Finding` with the step it was seen at in evidence)
        self.findings: list[Finding] = []
        #: every rescue: {"step", "action", "evidence"}, and the stop when rescues ran out
        self.history: list[dict[str, Any]] = []
        #: one row per window: step, loss and gradient-norm statistics
        self.windows: list[dict[str, Any]] = []
        #: steps trained so far, as of the last window read
        self.step = 0
        self._calls = 0  # batch calls since the last window (a call is steps_per_execution)
        self._capacity = self.every
        self._warned: set[str] = set()
        self._grad_norms: list[float] = [float(v) for v in grad_norms
                                         if v is not None and math.isfinite(float(v))]
        #: how many of the recorded gradient norms came from before the fit
        self.prior_norms = len(self._grad_norms)
        self._losses: list[float] = []
        self._saved: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        #: the learning rate of the last step of the last healthy window
        self._healthy_rate = math.nan
        #: for each of `model.variables`, its layer's index (None: not trained)
        self._layer_of: list[int | None] = []
        self._names: list[str] = []
        self._board: Any = None

    # -- the optimizer ------------------------------------------------------------------
    def _instrument(self) -> None:
        model = self.model
        user = getattr(model, "optimizer", None)
        if user is None:
            raise ConfigError("monitor: the model is not compiled; expected a compiled "
                              "keras.Model (model.compile(...) before fit)")
        if getattr(user, "_stab_monitor", None) is self:
            return  # this monitor's own optimizer and losses: a second fit
        self._capacity = self.every * max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        attach_loss_recorder(model, StepLosses(self._capacity))
        user_class = type(user)
        if hasattr(user, "stab_stats"):  # instrumented before (another monitor, a probe)
            user_class = next(c for c in user_class.__mro__[1:]
                              if not c.__name__.startswith(("Instrumented", "_Telemetry")))
        with warnings.catch_warnings():  # Keras' variables under JAX and NumPy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            config = user.get_config()
        optimizer = instrumented_optimizer_class(user_class).from_config(config)
        optimizer.stab_capacity = self._capacity
        optimizer.stab_updates = False  # measured per window from the saved weights
        optimizer._stab_monitor = self
        if getattr(user, "built", False):
            optimizer.build(model.trainable_variables)
            state = [v for v in user.variables if not v.name.startswith("stab_")]
            for target, value in zip(optimizer.variables, state):
                target.assign(value)
        model.optimizer = optimizer
        model.make_train_function(force=True)

    def _sync(self) -> None:
        """Under JAX the training state lives outside the variables during an epoch."""
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()

    # -- Keras hooks --------------------------------------------------------------------
    def on_train_begin(self, logs: Any = None) -> None:
        self._instrument()
        self._sync()
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self._names = list(optimizer.stab_layer_names)
        names, index = layer_groups(list(self.model.trainable_variables))
        layer = {id(v): self._names.index(names[i])
                 for v, i in zip(self.model.trainable_variables, index)}
        self._layer_of = [layer.get(id(v)) for v in self.model.variables]
        optimizer.stab_step.assign(0)
        self.model._stab_loss_recorder.count.assign(0)
        self._calls = 0
        self._save()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        # The window that just ended is checked before the next step starts; overriding
        # only this hook keeps Keras' asynchronous dispatch of the batch-end callbacks.
        if self._calls >= self.every:
            self._check_window()
        self._calls += 1

    def on_train_end(self, logs: Any = None) -> None:
        if self._calls:
            self._check_window()
        if self.log_dir is not None:
            self.write(self.log_dir)
        if self._board is not None:
            self._board.close()
            self._board = None

    # -- TensorBoard ------------------------------------------------------------------------
    def _scalars(self, window: dict[str, Any], layers: dict[str, float | None],
                 updates: dict[str, float | None]) -> None:
        """One event per window in `log_dir`, through the `tensorboard` package's own
        event writer (no TensorFlow needed); nothing where it is not installed."""
        if self.log_dir is None:
            return
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            return
        if self._board is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._board = EventFileWriter(str(self.log_dir))
        values = {"monitor/loss_median": window["loss_median"],
                  "monitor/grad_norm_median": window["grad_norm_median"],
                  "monitor/grad_norm_max": window["grad_norm_max"],
                  "monitor/findings": float(len(window["findings"])),
                  "monitor/rescues": float(len(self.history)),
                  **{f"monitor/layer_grad_norm/{name}": value
                     for name, value in layers.items()},
                  **{f"monitor/layer_update_ratio/{name}": value
                     for name, value in updates.items()}}
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v))
                                 for tag, v in values.items()
                                 if v is not None and math.isfinite(float(v))])
        self._board.add_event(Event(wall_time=time.time(), step=self.step, summary=summary))
        self._board.flush()

    # -- the loss -------------------------------------------------------------------------
    def _recent_median(self, before: list[float]) -> float:
        recent = [v for v in before[-2 * self.every:] if math.isfinite(v)]
        return float(np.median(recent)) if len(recent) >= 5 else math.nan

    def _divergence(self, losses: np.ndarray) -> int | None:
        """The index of the window's first diverging loss (None: none diverged)."""
        history = list(self._losses)
        for i, loss in enumerate(losses):
            if not math.isfinite(loss):
                return i
            median = self._recent_median(history)
            if math.isfinite(median) and loss > self.divergence_factor * median:
                return i
            history.append(float(loss))
        return None

    # -- the window's checks -------------------------------------------------------------
    def _check_window(self) -> None:
        self._sync()
        optimizer = self.model.optimizer
        steps = int(host_array(optimizer.stab_step))
        rows = host_array(optimizer.stab_stats)[:min(steps, self._capacity)]
        nonfinite = float(host_array(optimizer.stab_nonfinite)) > 0
        optimizer.stab_step.assign(0)
        optimizer.stab_nonfinite.assign(0.0)
        losses = self.model._stab_loss_recorder.read()
        start = self.step
        self.step += steps
        self._calls = 0
        rates = rows[:, -1] if rows.size else np.zeros(0)
        if self.rescue:
            diverged = self._divergence(losses)
            if diverged is not None:
                rate = float(rates[min(diverged, len(rates) - 1)]) if rates.size else math.nan
                self._rescue(float(losses[diverged]), start + diverged + 1, rate)
                return
        self._losses = (self._losses + [float(v) for v in losses])[-2 * self.every:]
        n = len(self._names)
        norms = rows[:, 0] if rows.size else np.zeros(0)
        layers = rows[:, 1:1 + n] if rows.size else np.zeros((0, n))
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # NaN rows are evidence
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(layers, axis=0) if layers.shape[0] else np.zeros(0)
            found = self._gradient_findings(norms, medians, nonfinite)
            found += self._loss_findings(losses)
        finite = norms[np.isfinite(norms)]
        window = {
            "step": self.step, "steps": int(len(norms)),
            "loss_median": _num(np.median(losses)) if losses.size else None,
            "grad_norm_median": _num(np.median(finite)) if finite.size else None,
            "grad_norm_max": _num(finite.max()) if finite.size else None,
            "learning_rate": _num(rates[-1]) if rates.size else None,
            "nonfinite": nonfinite, "findings": [f.code for f in found],
            **{f"bn_{k}": _num(v) for k, v in bn_statistics(self.model).items()}}
        layer_norms = {name: _num(v) for name, v in zip(self._names, medians)}
        current = [host_array(v) for v in self.model.variables]
        updates = self._update_ratios(current)
        window["layer_grad_norm"] = layer_norms
        window["layer_update_ratio"] = updates
        self.windows.append(window)
        self._scalars(window, layer_norms, updates)
        self._grad_norms.extend(float(v) for v in finite)
        for finding in found:
            self._report(finding)
        healthy = not nonfinite and (losses.size == 0 or np.isfinite(losses).all())
        if healthy:
            self._save(current)
            if rates.size:
                self._healthy_rate = float(rates[-1])

    def _gradient_findings(self, norms: np.ndarray, medians: np.ndarray,
                           nonfinite: bool) -> list[Finding]:
        """`norms`: the window's global gradient norms; `medians`: each layer's median."""
        th, found = self.th, []
        keys = ("explode_factor", "explode_spikes")
        if nonfinite:
            found.append(self._finding(
                "exploding_gradients", "Exploding gradients", "error",
                {"nonfinite_gradient": True}, keys, "a gradient was NaN/Inf in this window"))
        history = np.asarray(self._grad_norms[-5 * self.every:] + list(norms), np.float64)
        offset = len(history) - len(norms)
        before, counts = _preceding(history, self.every, offset)
        spikes = int(np.sum((counts >= 5) & (norms > th["explode_factor"] * before)))
        if spikes >= th["explode_spikes"]:
            found.append(self._finding(
                "exploding_gradients", "Exploding gradients", "warning",
                {"spikes": spikes, "max_norm": _num(np.nanmax(norms))}, keys,
                f"{spikes} steps with a global gradient norm above "
                f"{th['explode_factor']:g}x the median of the preceding steps"))
        if len(medians) > 1:
            output = medians[-1]
            if np.isfinite(output) and output > 0:
                ratios = medians / output
                weak = [self._names[j] for j in range(len(ratios) - 1)
                        if np.isfinite(ratios[j]) and 0 < ratios[j] < th["vanish_ratio"]]
                if weak:
                    found.append(self._finding(
                        "vanishing_gradients", "Vanishing gradients", "warning",
                        {"min_ratio_to_output": _num(np.nanmin(ratios[:-1]))},
                        ("vanish_ratio",), "layers whose median gradient norm is below "
                        f"{th['vanish_ratio']:g}x the output layer's", layers=weak))
        return found

    def _loss_findings(self, losses: np.ndarray) -> list[Finding]:
        th = self.th
        finite = losses[np.isfinite(losses) & (losses > 0)]
        if len(finite) < 10:
            return []
        logs = np.log(finite)
        noise = 1.4826 * np.median(np.abs(logs - np.median(logs)))
        margin = max(math.log(th["spike_factor"]), 4 * noise)
        before, _ = _preceding(logs, self.every, 5)
        spikes = int(np.sum(logs[5:] - before > margin))
        if spikes < th["loss_spikes"]:
            return []
        return [self._finding(
            "loss_spikes", "Loss spikes", "warning",
            {"spikes": spikes, "noise": _num(noise)}, ("spike_factor", "loss_spikes"),
            f"{spikes} steps whose loss jumped above {math.exp(margin):.3g}x the median "
            "of the preceding steps")]

    def _finding(self, code: str, title: str, severity: str, evidence: dict[str, Any],
                 keys: tuple[str, ...], message: str, layers: list[str] | None = None
                 ) -> Finding:
        return Finding(code, title, severity, {"step": self.step, **evidence},
                       {k: self.th[k] for k in keys}, dimensions_for(code), message,
                       sorted(set(layers or [])))

    def _report(self, finding: Finding) -> None:
        self.findings.append(finding)
        key = f"{finding.code}:{finding.severity}"
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"step {self.step}: {finding.to_text()}", StabilityWarning,
                          stacklevel=2)

    def _update_ratios(self, current: list[np.ndarray]) -> dict[str, float | None]:
        """Each layer's ``||W_now - W_saved|| / ||W_saved||`` since the last saved window."""
        if self._saved is None or not self._names:
            return {}
        delta = np.zeros(len(self._names))
        size = np.zeros(len(self._names))
        with np.errstate(all="ignore"):
            for now, saved, layer in zip(current, self._saved[0], self._layer_of):
                if layer is None:
                    continue
                now = now.astype(np.float64)
                delta[layer] += float(np.sum(np.square(now - saved)))
                size[layer] += float(np.sum(np.square(saved.astype(np.float64))))
            ratios = np.sqrt(delta / np.maximum(size, 1e-24))
        return {name: _num(r) for name, r in zip(self._names, ratios)}

    # -- the rescue -------------------------------------------------------------------------
    def _save(self, weights: list[np.ndarray] | None = None) -> None:
        """Keep the weights (the next window's update ratios are measured from them) and,
        for a rescue, the optimizer state."""
        model = self.model
        weights = weights if weights is not None else [host_array(v) for v in model.variables]
        self._saved = (weights, [host_array(v) for v in model.optimizer.variables]
                       if self.rescue else [])

    def _restore(self) -> None:
        assert self._saved is not None
        weights, state = self._saved
        for variable, value in zip(self.model.variables, weights):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, state):
            variable.assign(value)

    def _rescue(self, loss: float, step: int, rate: float) -> None:
        """`loss`, at `step` (trained at learning rate `rate`), diverged: restore the last
        healthy window and apply the smallest repair the evidence calls for."""
        rescues = [h for h in self.history if h["action"] != "stopped"]
        evidence = {"loss": _num(loss), "recent_median": _num(self._recent_median(self._losses)),
                    "window_end": self.step, "learning_rate": _num(rate),
                    "healthy_learning_rate": _num(self._healthy_rate)}
        self._restore()
        if self.history and self.history[-1]["action"] == "stopped":
            return  # the step that ran after the stop
        if len(rescues) >= self.max_rescues:
            self.history.append({"step": step, "action": "stopped", "evidence": evidence})
            self.model.stop_training = True
            warnings.warn(f"step {step}: training stopped: it diverged again after "
                          f"{len(rescues)} rescues (loss {loss:.4g}); the weights are the "
                          "last healthy window's; see monitor.history", StabilityWarning,
                          stacklevel=2)
            return
        optimizer = self.model.optimizer
        finite = np.asarray([v for v in self._grad_norms if math.isfinite(v) and v > 0])
        clip = getattr(optimizer, "global_clipnorm", None)
        settable = not isinstance(getattr(optimizer, "_learning_rate", None),
                                  keras.optimizers.schedules.LearningRateSchedule)
        if settable and rate > 1.001 * self._healthy_rate:  # the rate rose since: back to it
            optimizer.learning_rate.assign(self._healthy_rate)
            action = (f"learning rate {rate:.4g} -> {self._healthy_rate:.4g} (the rate of the "
                      "last healthy window)")
        elif clip is None and finite.size:
            value = float(np.percentile(finite, self.clip_percentile))
            optimizer.global_clipnorm = value
            optimizer.clipnorm = None
            action = f"global-norm clipping at {value:.4g}"
            evidence["clip_percentile"] = self.clip_percentile
        else:
            action = self._lower_learning_rate(optimizer)
        self.model.make_train_function(force=True)
        self.model.reset_metrics()
        self.history.append({"step": step, "action": action, "evidence": evidence})
        warnings.warn(f"step {step}: the loss diverged ({loss:.4g}); restored the weights "
                      f"of the last healthy window and applied {action}", StabilityWarning,
                      stacklevel=2)

    def _lower_learning_rate(self, optimizer: keras.optimizers.Optimizer) -> str:
        rate = getattr(optimizer, "_learning_rate", None)
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            clip = float(optimizer.global_clipnorm or 1.0) * LR_FACTOR
            optimizer.global_clipnorm = clip  # a schedule's rate cannot be set: clip harder
            return f"global-norm clipping tightened to {clip:.4g} (the rate is a schedule)"
        old = float(host_array(optimizer.learning_rate))
        optimizer.learning_rate.assign(old * LR_FACTOR)
        return f"learning rate {old:.4g} -> {old * LR_FACTOR:.4g}"

    # -- the record ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.step, "every": self.every, "layers": self._names,
                "findings": [f.to_dict() for f in self.findings], "rescues": self.history,
                "windows": self.windows}

    def write(self, folder: str | Path) -> Path:
        """`monitor.csv` (one row per window) and `monitor.json` (everything) in `folder`."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        columns = ("step", "steps", "loss_median", "grad_norm_median", "grad_norm_max",
                   "nonfinite", "findings")
        lines = [",".join(columns)]
        for row in self.windows:
            lines.append(",".join("" if row[c] is None else
                                  (";".join(row[c]) if c == "findings" else str(row[c]))
                                  for c in columns))
        (out / "monitor.csv").write_text("\n".join(lines) + "\n")
        (out / "monitor.json").write_text(json.dumps(self.to_dict(), indent=2, default=str,
                                                     allow_nan=False) + "\n")
        return out


def _preceding(values: np.ndarray, length: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``values[start:]``: the median of the (up to) `length` finite values
    before it, and how many there were (NaN where none), in one vectorized pass."""
    padded = np.concatenate([np.full(length, np.nan), np.asarray(values, np.float64)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, length)[start:len(values)]
    counts = np.isfinite(windows).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window with no finite value
        return np.nanmedian(windows, axis=1), counts


def _num(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None

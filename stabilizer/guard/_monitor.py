"""`monitor(model)`: the probes' telemetry in your own `fit`, its checks, and the rescue.

The callback swaps the compiled model's optimizer for the instrumented subclass of its own
class (`stabilizer.telemetry.instrumented_optimizer_class`, as the probes do), keeping its
state. The optimizer records, on the device, every step's global and per-layer gradient
norms, per-layer update/weight ratios and whether a gradient was NaN/Inf; every `every`
steps the callback reads that window back in one transfer and checks it with the
diagnosis's thresholds (`stabilizer.diagnosis.THRESHOLDS`):

- ``exploding_gradients``: a NaN/Inf gradient (error), or at least ``explode_spikes``
  steps whose global norm is more than ``explode_factor`` times the median of the
  preceding steps (warning);
- ``vanishing_gradients``: a layer whose median gradient norm over the window is below
  ``vanish_ratio`` times the output layer's (warning);
- ``loss_spikes``: at least ``loss_spikes`` steps whose loss is above ``spike_factor``
  times the median of the preceding steps and four times the window's own noise (MAD of
  log loss) above it (warning).

Each finding is a `Finding` (as `diagnose()` reports it), kept in `findings` and issued
as a `StabilityWarning` once per code. The per-step loss is recovered from Keras' running
mean in the batch logs. With `log_dir`: CSV and JSON at the end of the fit, and TensorBoard
scalars per window where the `tensorboard` package is installed.

``rescue=True``: when the loss is NaN/Inf or above ``divergence_factor`` times the median
of the recent steps, the weights and the optimizer state saved at the last healthy window
are restored and the smallest repair the evidence calls for is applied: global-norm
clipping at the 90th percentile of the recorded gradient norms, then, at the next
divergence, a learning rate 0.3x lower. Each action (with its evidence) is in `history`;
after `max_rescues` the fit stops with a message. A healthy run is never changed.
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

from stabilizer.diagnosis import THRESHOLDS, Finding, dimensions_for
from stabilizer.errors import ConfigError
from stabilizer.telemetry import instrumented_optimizer_class

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
            loss, the global gradient norm, each layer's gradient norm, findings, rescues).
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


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}: expected a whole number >= 1")
    return value


class StabilityMonitor(keras.callbacks.Callback):
    """See `monitor` and the module docstring."""

    def __init__(self, *, every: int = 50, rescue: bool = False, max_rescues: int = 3,
                 divergence_factor: float = 10.0, clip_percentile: float = 90.0,
                 log_dir: str | Path | None = None,
                 thresholds: dict[str, float] | None = None,
                 grad_norms: Sequence[float] = ()) -> None:
        super().__init__()
        self.every = _positive_int("every", every)
        self.max_rescues = _positive_int("max_rescues", max_rescues)
        if not (isinstance(divergence_factor, (int, float)) and divergence_factor > 1):
            raise ConfigError(f"divergence_factor={divergence_factor!r}: expected a number > 1")
        if not (isinstance(clip_percentile, (int, float)) and 0 < clip_percentile <= 100):
            raise ConfigError(f"clip_percentile={clip_percentile!r}: expected a number in "
                              "(0, 100]")
        unknown = sorted(set(thresholds or {}) - set(THRESHOLDS))
        if unknown:
            raise ConfigError(f"thresholds: unknown key {unknown[0]!r}; expected keys of "
                              "stabilizer.diagnosis.THRESHOLDS")
        self.rescue = bool(rescue)
        self.divergence_factor = float(divergence_factor)
        self.clip_percentile = float(clip_percentile)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.th = {**THRESHOLDS, **(thresholds or {})}
        #: every finding, in order (a `Finding` with the step it was seen at in evidence)
        self.findings: list[Finding] = []
        #: every rescue: {"step", "action", "evidence"}, and the stop when rescues ran out
        self.history: list[dict[str, Any]] = []
        #: one row per window: step, loss and gradient-norm statistics
        self.windows: list[dict[str, Any]] = []
        self.step = 0
        self._warned: set[str] = set()
        self._grad_norms: list[float] = [float(v) for v in grad_norms
                                         if v is not None and math.isfinite(float(v))]
        #: how many of the recorded gradient norms came from before the fit
        self.prior_norms = len(self._grad_norms)
        self._losses: list[float] = []
        self._window_losses: list[float] = []
        self._mean: tuple[int, float] = (0, 0.0)
        self._saved: tuple[list[np.ndarray], list[np.ndarray]] | None = None
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
            return  # this monitor's own optimizer: a second fit
        user_class = type(user)
        if hasattr(user, "stab_stats"):  # instrumented before (another monitor, a probe)
            user_class = next(c for c in user_class.__mro__[1:]
                              if not c.__name__.startswith(("Instrumented", "_Telemetry")))
        optimizer = instrumented_optimizer_class(user_class).from_config(user.get_config())
        optimizer.stab_capacity = self.every
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
        optimizer.stab_step.assign(0)
        self._save()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._mean = (0, 0.0)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.step += 1
        loss = self._step_loss((logs or {}).get("loss"))
        if loss is not None:
            self._losses.append(loss)
            self._window_losses.append(loss)
            if self.rescue and self._diverging(loss):
                self._rescue(loss)
                return
        if self.step % self.every == 0:
            self._check_window()

    def on_train_end(self, logs: Any = None) -> None:
        if self.step % self.every:
            self._check_window()
        if self.log_dir is not None:
            self.write(self.log_dir)
        if self._board is not None:
            self._board.close()
            self._board = None

    # -- TensorBoard ------------------------------------------------------------------------
    def _scalars(self, window: dict[str, Any], layers: dict[str, float]) -> None:
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
                     for name, value in layers.items()}}
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v))
                                 for tag, v in values.items()
                                 if v is not None and math.isfinite(float(v))])
        self._board.add_event(Event(wall_time=time.time(), step=self.step, summary=summary))
        self._board.flush()

    # -- the loss -------------------------------------------------------------------------
    def _step_loss(self, running: Any) -> float | None:
        """This step's loss from Keras' running mean over the epoch's batches."""
        if running is None:
            return None
        mean = float(keras.ops.convert_to_numpy(running))
        count, previous = self._mean
        self._mean = (count + 1, mean)
        if count == 0:
            return mean
        if not math.isfinite(previous):
            return mean
        return (count + 1) * mean - count * previous

    def _diverging(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        recent = [v for v in self._losses[-2 * self.every - 1:-1] if math.isfinite(v)]
        if len(recent) < 5:
            return False
        return loss > self.divergence_factor * float(np.median(recent))

    # -- the window's checks -------------------------------------------------------------
    def _check_window(self) -> None:
        self._sync()
        optimizer = self.model.optimizer
        steps = int(optimizer.stab_step.numpy())
        rows = np.asarray(optimizer.stab_stats.numpy())[:min(steps, self.every)]
        nonfinite = float(optimizer.stab_nonfinite.numpy()) > 0
        optimizer.stab_step.assign(0)
        optimizer.stab_nonfinite.assign(0.0)
        n = len(self._names)
        norms = rows[:, 0] if rows.size else np.zeros(0)
        layers = rows[:, 1:1 + n] if rows.size else np.zeros((0, n))
        losses = np.asarray(self._window_losses, dtype=np.float64)
        self._window_losses = []
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
            "nonfinite": nonfinite, "findings": [f.code for f in found]}
        self.windows.append(window)
        self._scalars(window, dict(zip(self._names, medians)))
        self._grad_norms.extend(float(v) for v in finite)
        for finding in found:
            self._report(finding)
        healthy = not nonfinite and (losses.size == 0 or np.isfinite(losses).all())
        if healthy:
            self._save()

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
        spikes = 0
        for i in range(len(norms)):
            before = history[max(0, offset + i - self.every):offset + i]
            before = before[np.isfinite(before)]
            if len(before) >= 5 and norms[i] > th["explode_factor"] * np.median(before):
                spikes += 1
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
        spikes = sum(1 for i in range(5, len(logs))
                     if logs[i] - np.median(logs[max(0, i - self.every):i]) > margin)
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

    # -- the rescue -------------------------------------------------------------------------
    def _save(self) -> None:
        model = self.model
        self._saved = ([np.array(v.numpy(), copy=True) for v in model.variables],
                       [np.array(v.numpy(), copy=True) for v in model.optimizer.variables])

    def _restore(self) -> None:
        assert self._saved is not None
        weights, state = self._saved
        for variable, value in zip(self.model.variables, weights):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, state):
            variable.assign(value)

    def _rescue(self, loss: float) -> None:
        self._sync()
        rescues = [h for h in self.history if h["action"] != "stopped"]
        evidence = {"loss": _num(loss), "recent_median": _num(
            np.median([v for v in self._losses[-2 * self.every - 1:-1] if math.isfinite(v)]
                      or [math.nan]))}
        if len(rescues) >= self.max_rescues:
            self.history.append({"step": self.step, "action": "stopped",
                                 "evidence": evidence})
            self.model.stop_training = True
            warnings.warn(f"step {self.step}: training stopped: it diverged again after "
                          f"{len(rescues)} rescues (loss {loss:.4g}); see monitor.history",
                          StabilityWarning, stacklevel=2)
            return
        self._restore()
        optimizer = self.model.optimizer
        finite = np.asarray([v for v in self._grad_norms if math.isfinite(v) and v > 0])
        clip = getattr(optimizer, "global_clipnorm", None)
        if clip is None and finite.size:
            value = float(np.percentile(finite, self.clip_percentile))
            optimizer.global_clipnorm = value
            optimizer.clipnorm = None
            action = f"global-norm clipping at {value:.4g}"
            evidence["clip_percentile"] = self.clip_percentile
        else:
            action = self._lower_learning_rate(optimizer)
        self.model.make_train_function(force=True)
        self.model.reset_metrics()
        self._mean = (0, 0.0)
        self._losses = self._losses[:-1]
        self._window_losses = []
        optimizer.stab_step.assign(0)
        optimizer.stab_nonfinite.assign(0.0)
        self.history.append({"step": self.step, "action": action, "evidence": evidence})
        warnings.warn(f"step {self.step}: the loss diverged ({loss:.4g}); restored the weights "
                      f"of the last healthy window and applied {action}", StabilityWarning,
                      stacklevel=2)

    def _lower_learning_rate(self, optimizer: keras.optimizers.Optimizer) -> str:
        rate = getattr(optimizer, "_learning_rate", None)
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            clip = float(optimizer.global_clipnorm or 1.0) * LR_FACTOR
            optimizer.global_clipnorm = clip  # a schedule's rate cannot be set: clip harder
            return f"global-norm clipping tightened to {clip:.4g} (the rate is a schedule)"
        old = float(optimizer.learning_rate.numpy())
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


def _num(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None

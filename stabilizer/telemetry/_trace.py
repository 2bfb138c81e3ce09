"""What one probe recorded (`ProbeTrace`), the callback that watches it, and the bulk read."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.keras_internals import flat_layers
from stabilizer.telemetry._loss import LossRecorder

__all__ = ["ProbeTrace", "TelemetryCallback", "bn_statistics", "current_learning_rate",
           "read_trace"]


@dataclasses.dataclass
class ProbeTrace:
    """Everything one probe (one seed) recorded, as numpy arrays and lists."""

    loss: np.ndarray  # (steps,) training loss per step
    grad_norm: np.ndarray  # (steps,) global gradient norm per step
    layer_grad_norm: np.ndarray  # (steps, layers)
    update_ratio: np.ndarray  # (steps, layers) ||dW|| / ||W|| per layer
    layer_names: list[str]
    val_loss: list[float]  # validation loss per evaluation
    val_metrics: list[dict[str, float]]  # per evaluation after training started
    bn_stats: list[dict[str, float]]  # per evaluation: mean |moving_mean|, mean moving_var
    learning_rate: list[float]  # per evaluation
    diverged: bool
    steps_done: int
    seconds: float = 0.0
    changes: list[str] = dataclasses.field(default_factory=list)
    not_applied: list[str] = dataclasses.field(default_factory=list)

    initial_val_loss: float = float("nan")  # validation loss before the first step
    chance_loss: float = float("nan")  # the best constant prediction's (`stabilizer.chance`)

    @property
    def progress_start(self) -> float:
        """The loss progress is measured from: the untrained model's, or the chance level
        when that is known and lower (see `stabilizer.chance`)."""
        chance = self.chance_loss
        if math.isfinite(chance) and chance > 0:
            return min(self.initial_val_loss, chance)
        return self.initial_val_loss

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("loss", "grad_norm", "layer_grad_norm", "update_ratio"):
            out[key] = np.asarray(getattr(self, key)).tolist()
        return out


class TelemetryCallback(keras.callbacks.Callback):
    """Stops a diverging probe and collects the per-evaluation record.

    `async_safe` keeps Keras' asynchronous callback dispatch on under PyTorch. Under
    JAX it is off: a step's logs may share buffers that the next step donates, so
    they are converted before that step (as TensorFlow always does). The telemetry
    buffers stay on the device either way.
    """

    async_safe = keras.backend.backend() != "jax"

    def __init__(self, recorder: LossRecorder, check_every: int,
                 on_evaluation: Any = None) -> None:
        super().__init__()
        self.recorder = recorder
        self.check_every = check_every
        self.on_evaluation = on_evaluation
        self.val_loss: list[float] = []
        self.val_metrics: list[dict[str, float]] = []
        self.bn_stats: list[dict[str, float]] = []
        self.learning_rate: list[float] = []
        self._batches = 0
        self.diverged = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1
        if self._batches % self.check_every:
            return
        # The recorder's result is the divergence flag: Keras already returns it
        # in the step's logs, so this check costs no extra read from the device.
        flag = (logs or {}).get(self.recorder.name)
        # Keras leaves a log value unconverted when its buffer could not be read
        # (JAX may donate it to the next step first); the epoch-end check, on the
        # synced variables, still catches the divergence then.
        if isinstance(flag, float) and flag != 0.0:  # 1.0, or NaN
            self.diverged = True
            self.model.stop_training = True

    def _check(self) -> bool:
        """Read both flags from the variables (valid when the state is synced: epoch end)."""
        flag = float(ops.convert_to_numpy(self.recorder.diverged.value))
        nonfinite = float(ops.convert_to_numpy(self.model.optimizer.stab_nonfinite.value))
        self.diverged = self.diverged or flag > 0 or nonfinite > 0
        return self.diverged

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        self._check()
        val = logs.get("val_loss", float("nan"))
        self.val_loss.append(float(val))
        self.val_metrics.append({k: float(v) for k, v in logs.items()
                                 if isinstance(v, (int, float)) and k != "stab_loss"})
        self.bn_stats.append(bn_statistics(self.model))
        self.learning_rate.append(current_learning_rate(self.model.optimizer))
        if not np.isfinite(val):
            self.diverged = True
        if self.diverged:
            self.model.stop_training = True
        if self.on_evaluation is not None and self.on_evaluation(epoch, self):
            self.model.stop_training = True


def current_learning_rate(optimizer: Any) -> float:
    lr = optimizer.learning_rate
    return float(ops.convert_to_numpy(lr.value if hasattr(lr, "value") else lr))


def bn_statistics(model: keras.Model) -> dict[str, float]:
    """Mean |moving_mean| and mean moving_variance over all BatchNormalization layers."""
    means, variances = [], []
    for layer in flat_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.built:
            means.append(np.abs(ops.convert_to_numpy(layer.moving_mean)).mean())
            variances.append(ops.convert_to_numpy(layer.moving_variance).mean())
    if not means:
        return {}
    return {"moving_mean_abs": float(np.mean(means)), "moving_var": float(np.mean(variances))}


def read_trace(model: keras.Model, recorder: LossRecorder, callback: TelemetryCallback,
               seconds: float, initial_val_loss: float = float("nan")) -> ProbeTrace:
    """Read every buffer back in one go after the probe."""
    opt = model.optimizer
    steps = int(ops.convert_to_numpy(recorder.count.value))
    opt_steps = int(ops.convert_to_numpy(opt.stab_step.value)) if opt.built else 0
    n = min(steps, opt_steps, recorder.capacity)
    callback._check()
    layers = len(opt.stab_layer_names)
    stats = np.asarray(ops.convert_to_numpy(opt.stab_stats.value))[:n]
    return ProbeTrace(
        loss=np.asarray(ops.convert_to_numpy(recorder.buffer.value))[:n].astype(np.float64),
        grad_norm=stats[:, 0].astype(np.float64),
        layer_grad_norm=stats[:, 1:1 + layers],
        update_ratio=stats[:, 1 + layers:1 + 2 * layers],
        layer_names=list(opt.stab_layer_names),
        val_loss=list(callback.val_loss),
        val_metrics=callback.val_metrics,
        bn_stats=callback.bn_stats,
        learning_rate=callback.learning_rate,
        diverged=callback.diverged,
        steps_done=n,
        seconds=seconds,
        initial_val_loss=initial_val_loss,
    )

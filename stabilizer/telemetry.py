"""Per-step telemetry recorded on the device and read back in bulk.

Three pieces, all through Keras' own extension points:

- `instrumented_optimizer_class(cls)` subclasses the user's optimizer class. Its
  `apply()` writes, at each step, the global gradient norm, the per-layer
  gradient norms and the per-layer update/weight ratio into preallocated
  optimizer variables (optimizer state, so this works under the TensorFlow, JAX
  and PyTorch backends alike), then calls the real `apply()`.
- `LossRecorder`, a `keras.metrics.Metric` attached to the model and fed from the
  model's `compute_loss` hook when `training=True`, records the per-step training
  loss and keeps an on-device divergence flag (non-finite loss, or loss above
  `divergence_factor` times the first loss). Validation never writes to it.
- `TelemetryCallback` watches that flag, which is the recorder's metric result and
  so arrives in the logs Keras already returns after each step (no extra read
  from the device), and stops training when it is set; at each epoch end (one
  evaluation) it keeps the validation logs, the learning rate and the
  BatchNormalization moving statistics. The buffers are read back in one go
  after the probe (`read_trace`).
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = [
    "LossRecorder",
    "ProbeTrace",
    "TelemetryCallback",
    "attach_loss_recorder",
    "instrumented_optimizer_class",
    "layer_groups",
    "loss_ceiling",
]


def _row_update(buffer: Any, index: Any, row: Any) -> Any:
    """`buffer` with `row` written at `index` (functional, backend-neutral)."""
    start = [index] + [0] * (len(buffer.shape) - 1)
    return ops.slice_update(buffer, start, ops.expand_dims(row, 0))


def layer_groups(variables: list[Any]) -> tuple[list[str], list[int]]:
    """Layer names and, for each variable, the index of its layer.

    A variable's layer is its path without the last component
    ("sequential/dense_1/kernel" -> "sequential/dense_1").
    """
    names: list[str] = []
    index: list[int] = []
    for variable in variables:
        path = getattr(variable, "path", None) or variable.name
        layer = path.rsplit("/", 1)[0] if "/" in path else path
        if layer not in names:
            names.append(layer)
        index.append(names.index(layer))
    return names, index


class _TelemetryMixin:
    """Records gradient and update statistics inside `apply()`; see the module docstring.

    One row of `stab_stats` per step: the global gradient norm, then the gradient
    norm of each layer, then each layer's update/weight ratio. The per-variable
    sums of squares go to their layers in one `segment_sum` (not a matrix
    product, whose 0 * inf would spread one layer's overflow to every layer) and
    the row is written with one slice update: the op count per step, which is
    what a small model's step time is made of, stays low.
    """

    stab_capacity: int = 1

    def build(self, variables: list[Any]) -> None:
        if self.built:  # type: ignore[attr-defined]
            return
        super().build(variables)  # type: ignore[misc]
        names, index = layer_groups(list(variables))
        self.stab_layer_names = names
        self._stab_index = {id(v): i for v, i in zip(variables, index)}
        add = self.add_variable  # type: ignore[attr-defined]
        self.stab_stats = add((self.stab_capacity, 1 + 2 * len(names)), name="stab_stats")
        self.stab_step = add((), dtype="int32", name="stab_step")
        self.stab_nonfinite = add((), name="stab_nonfinite")

    def apply(self, grads: list[Any], trainable_variables: Any = None) -> Any:
        variables = list(trainable_variables) if trainable_variables is not None \
            else list(self._trainable_variables)  # type: ignore[attr-defined]
        if not self.built:  # type: ignore[attr-defined]
            self.build(variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not pairs:  # nothing to measure; the step still counts (its row stays zero)
            self.stab_step.assign(self.stab_step.value + 1)
            return super().apply(grads, trainable_variables)  # type: ignore[misc]
        n = len(self.stab_layer_names)
        segments = self._stab_segments(tuple(self._stab_index.get(id(v), 0) for _, v in pairs))
        grad_sq = [ops.sum(ops.square(ops.cast(g, "float32"))) for g, _ in pairs]
        # A copy: under TensorFlow `v.value` may be the variable itself (read after
        # the update), under PyTorch the tensor the optimizer updates in place.
        before = [ops.copy(ops.cast(v.value, "float32")) for _, v in pairs]
        result = super().apply(grads, trainable_variables)  # type: ignore[misc]
        delta_sq = [ops.sum(ops.square(ops.cast(v.value, "float32") - b))
                    for (_, v), b in zip(pairs, before)]
        weight_sq = [ops.sum(ops.square(b)) for b in before]
        per_layer = ops.reshape(
            ops.segment_sum(ops.stack(grad_sq + delta_sq + weight_sq),
                            segments, num_segments=3 * n), (3, n))
        global_norm = ops.sqrt(ops.sum(per_layer[0]))
        row = ops.concatenate([
            ops.expand_dims(global_norm, 0),
            ops.sqrt(per_layer[0]),
            ops.sqrt(per_layer[1] / (per_layer[2] + 1e-12)),
        ])
        step = ops.minimum(self.stab_step.value, self.stab_capacity - 1)
        self.stab_stats.assign(_row_update(self.stab_stats.value, step, row))
        bad = ops.cast(ops.logical_not(ops.isfinite(global_norm)), "float32")
        self.stab_nonfinite.assign(ops.maximum(self.stab_nonfinite.value, bad))
        self.stab_step.assign(self.stab_step.value + 1)
        return result

    def _stab_segments(self, groups: tuple[int, ...]) -> Any:
        """`segment_sum` ids for the stacked sums of squares of variables in `groups`.

        Bins 0..n-1 take the gradients', n..2n-1 the updates', 2n..3n-1 the
        weights'. Kept per `groups` (the same at every step unless a gradient is
        None), so an eagerly run step (PyTorch) does not rebuild them each time.
        """
        cache = self.__dict__.setdefault("_stab_segment_cache", {})
        if groups not in cache:
            n = len(self.stab_layer_names)
            cache[groups] = np.asarray([g + k * n for k in range(3) for g in groups], "int32")
        return cache[groups]


_CLASS_CACHE: dict[type, type] = {}


def instrumented_optimizer_class(cls: type) -> type:
    """A subclass of the user's optimizer class that records telemetry."""
    if cls not in _CLASS_CACHE:
        _CLASS_CACHE[cls] = type(f"Instrumented{cls.__name__}", (_TelemetryMixin, cls), {})
    return _CLASS_CACHE[cls]


_PROBABILITY_LOSSES = {"categorical_crossentropy", "sparse_categorical_crossentropy",
                       "binary_crossentropy"}


def loss_ceiling(loss: Any) -> float:
    """The most a clipped cross-entropy can report; +inf for other losses.

    A cross-entropy on probabilities (``from_logits=False``) clips them at
    `keras.config.epsilon()`, so its loss never exceeds ``-log(epsilon)`` (16.1):
    a classifier blown up to confident wrong answers reports at most that, which
    is below 10x a 10-class start (23). TensorFlow computes the loss from the
    softmax's logits when it can, unclipped, so there the explosion shows anyway;
    under JAX and PyTorch it shows only against this ceiling.
    """
    name = loss if isinstance(loss, str) else getattr(loss, "name", None) \
        or getattr(loss, "__name__", "")
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    if str(name) not in _PROBABILITY_LOSSES or config.get("from_logits", False):
        return float("inf")
    return -float(np.log(keras.config.epsilon()))


class LossRecorder(keras.metrics.Metric):
    """Per-step training loss buffer and divergence flag (fed by `compute_loss`).

    A step diverges when its loss is not finite, exceeds `divergence_factor` times
    the first step's loss, or, with a `ceiling` (`loss_ceiling`: a clipped
    cross-entropy's maximum) and a first loss below 90% of it, passes halfway from
    the first loss to the ceiling: far worse than the untrained model, which only
    confident wrong answers reach.
    `update_state` and `reset_state` do nothing: Keras resets metrics at each epoch
    and before validation, but this buffer spans the whole probe.
    The first step's loss, the divergence rule's reference, is read from slot 0 of
    the buffer, so `capacity` must be at least 2 (a probe has at least 2 steps).
    """

    def __init__(self, capacity: int, divergence_factor: float, name: str = "stab_loss",
                 ceiling: float = float("inf")) -> None:
        super().__init__(name=name)
        self.capacity = capacity
        self.divergence_factor = divergence_factor
        self.ceiling = ceiling
        self.buffer = self.add_variable(shape=(capacity,), initializer="zeros", name="buffer")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="count")
        self.diverged = self.add_variable(shape=(), initializer="zeros", name="diverged")

    def record(self, loss: Any) -> None:
        loss = ops.cast(ops.mean(loss), "float32")
        count = self.count.value
        step = ops.minimum(count, self.capacity - 1)
        buffer = _row_update(self.buffer.value, step, loss)
        self.buffer.assign(buffer)
        first = buffer[0]  # the first step's loss, written there at count 0
        healthy = ops.logical_and(
            ops.isfinite(loss),
            ops.abs(loss) <= self.divergence_factor * ops.maximum(ops.abs(first), 1e-8))
        if self.ceiling < float("inf"):
            saturated = ops.logical_and(ops.greater(loss, 0.5 * (first + self.ceiling)),
                                        ops.less(first, 0.9 * self.ceiling))
            healthy = ops.logical_and(healthy, ops.logical_not(saturated))
        exploded = ops.cast(ops.logical_not(healthy), "float32")
        self.diverged.assign(ops.maximum(self.diverged.value, exploded))
        self.count.assign(count + 1)

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        return None

    def reset_state(self) -> None:
        return None

    def result(self) -> Any:
        # A new value, not the variable itself: under JAX the variable's buffer is
        # donated to the next step, and the logs that carry this result are read
        # (asynchronously) after that.
        return ops.cast(ops.greater(self.diverged.value, 0.5), "float32")


def attach_loss_recorder(model: keras.Model, recorder: LossRecorder) -> None:
    """Feed `recorder` from the model's `compute_loss` (training steps only).

    `compute_loss` is Keras' documented hook for the loss; wrapping the bound
    method keeps any override the user's model class has.
    """
    original = model.compute_loss
    model._stab_loss_recorder = recorder  # tracked by Keras as a model metric

    def compute_loss(self: keras.Model, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        if model._compute_loss_original_has_training:
            loss = original(x, y, y_pred, sample_weight, training=training)
        else:
            loss = original(x, y, y_pred, sample_weight)
        if training:
            recorder.record(loss)
        return loss

    model._compute_loss_original_has_training = model._compute_loss_has_training_arg
    model.compute_loss = types.MethodType(compute_loss, model)
    model._compute_loss_has_training_arg = True


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
    for layer in model._flatten_layers(include_self=False):
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

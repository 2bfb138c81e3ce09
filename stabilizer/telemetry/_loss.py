"""The loss recorder: per-step training loss and an on-device divergence flag."""

from __future__ import annotations

import types
from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.telemetry._buffers import host_array, row_update

__all__ = ["LossRecorder", "StepLosses", "attach_loss_recorder", "exploded_loss",
           "loss_ceiling"]


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


def exploded_loss(loss: Any, first: Any, divergence_factor: float, ceiling: float) -> Any:
    """1.0 where `loss` has diverged from `first` (elementwise, float32), else 0.0.

    Not finite, above `divergence_factor` times the first loss, or, under a clipped
    cross-entropy's `ceiling` (`loss_ceiling`), past halfway from a first loss below 90%
    of it to the ceiling. The rule of `LossRecorder`, per replica in `_replicas`.
    """
    healthy = ops.logical_and(
        ops.isfinite(loss),
        ops.abs(loss) <= divergence_factor * ops.maximum(ops.abs(first), 1e-8))
    if ceiling < float("inf"):
        saturated = ops.logical_and(ops.greater(loss, 0.5 * (first + ceiling)),
                                    ops.less(first, 0.9 * ceiling))
        healthy = ops.logical_and(healthy, ops.logical_not(saturated))
    return ops.cast(ops.logical_not(healthy), "float32")


class StepLosses(keras.metrics.Metric):
    """Each training step's loss in a device buffer, fed by `compute_loss`.

    For a reader that comes every `capacity` steps (`stabilizer.monitor`) and empties it
    (`read`): nothing is read back in between, and nothing shows in the logs (`result()`
    is empty), so Keras keeps dispatching its batch callbacks asynchronously. Steps past
    `capacity` before a read overwrite the last slot. `update_state` and `reset_state` do
    nothing: Keras resets metrics at each epoch and before validation, but this buffer
    spans them.
    """

    def __init__(self, capacity: int, name: str = "stab_step_losses") -> None:
        super().__init__(name=name)
        self.capacity = capacity
        self.buffer = self.add_variable(shape=(capacity,), initializer="zeros", name="buffer")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="count")

    def record(self, loss: Any) -> tuple[Any, Any]:
        """Write this step's (mean) loss; returns it and the buffer as written."""
        loss = ops.cast(ops.mean(loss), "float32")
        count = self.count.value
        buffer = row_update(self.buffer.value, ops.minimum(count, self.capacity - 1), loss)
        self.buffer.assign(buffer)
        self.count.assign(count + 1)
        return loss, buffer

    def read(self) -> np.ndarray:
        """The losses recorded since the last read (float64), and empty the buffer."""
        count = min(int(host_array(self.count)), self.capacity)
        values = host_array(self.buffer)[:count]
        self.count.assign(0)
        return values.astype(np.float64)

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        return None

    def reset_state(self) -> None:
        return None

    def result(self) -> Any:
        return {}


class LossRecorder(StepLosses):
    """A probe's per-step training loss (`StepLosses`) and an on-device divergence flag.

    A step diverges when its loss is not finite, exceeds `divergence_factor` times
    the first step's loss, or, with a `ceiling` (`loss_ceiling`: a clipped
    cross-entropy's maximum) and a first loss below 90% of it, passes halfway from
    the first loss to the ceiling: far worse than the untrained model, which only
    confident wrong answers reach. The flag is the metric's result, so it arrives in
    the logs Keras already returns after each step.
    The first step's loss, the divergence rule's reference, is read from slot 0 of
    the buffer, so `capacity` must be at least 2 (a probe has at least 2 steps).
    """

    def __init__(self, capacity: int, divergence_factor: float, name: str = "stab_loss",
                 ceiling: float = float("inf")) -> None:
        super().__init__(capacity, name=name)
        self.divergence_factor = divergence_factor
        self.ceiling = ceiling
        self.diverged = self.add_variable(shape=(), initializer="zeros", name="diverged")

    def record(self, loss: Any) -> tuple[Any, Any]:
        loss, buffer = super().record(loss)
        first = buffer[0]  # the first step's loss, written there at count 0
        exploded = exploded_loss(loss, first, self.divergence_factor, self.ceiling)
        self.diverged.assign(ops.maximum(self.diverged.value, exploded))
        return loss, buffer

    def result(self) -> Any:
        # A new value, not the variable itself: under JAX the variable's buffer is
        # donated to the next step, and the logs that carry this result are read
        # (asynchronously) after that.
        return ops.cast(ops.greater(self.diverged.value, 0.5), "float32")


def attach_loss_recorder(model: keras.Model, recorder: LossRecorder | StepLosses) -> None:
    """Feed `recorder` from the model's `compute_loss` (training steps only).

    `compute_loss` is Keras' documented hook for the loss; wrapping the bound
    method keeps any override the user's model class has. A model is wrapped once:
    attaching again replaces the recorder the wrapper feeds.
    """
    model._stab_loss_recorder = recorder  # tracked by Keras as a model metric
    if getattr(model, "_stab_loss_wrapped", False):
        return
    original = model.compute_loss

    def compute_loss(self: keras.Model, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        if model._compute_loss_original_has_training:
            loss = original(x, y, y_pred, sample_weight, training=training)
        else:
            loss = original(x, y, y_pred, sample_weight)
        if training:
            model._stab_loss_recorder.record(loss)
        return loss

    model._stab_loss_wrapped = True
    model._compute_loss_original_has_training = model._compute_loss_has_training_arg
    model.compute_loss = types.MethodType(compute_loss, model)
    model._compute_loss_has_training_arg = True

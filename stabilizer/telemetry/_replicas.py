"""Telemetry of K replicas trained in one program: one row per step for every replica.

The replicas are K copies of the user's model (one per seed) trained by one optimizer
step (`stabilizer.probe`). What a single probe records is recorded here per replica,
on the device, and read back in bulk at the end:

- `ReplicaLossRecorder`: each replica's training loss per step, its divergence flag and
  the step it diverged at (the single probe's rule, per replica);
- `ReplicaLossMeans`: each replica's mean loss over an epoch or a validation pass, in
  the logs as ``replica_loss_<k>`` (``val_replica_loss_<k>``);
- `replica_optimizer_class`: the user's optimizer class with, per replica, the global
  and per-layer gradient norms and update/weight ratios, global-norm clipping per
  replica (`clip_by_global_norm`'s formula on each replica's own gradients), and the
  gradients of a replica whose gradient norm is not finite zeroed, so a NaN never
  reaches its weights.

Replicas share nothing but the step counter: their variables are disjoint, so the
gradient of the summed loss with respect to replica k's weights is that of replica k's
loss alone.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.telemetry._buffers import row_update
from stabilizer.telemetry._loss import exploded_loss

__all__ = ["ReplicaLossMeans", "ReplicaLossRecorder", "replica_optimizer_class"]


class ReplicaLossRecorder(keras.metrics.Metric):
    """Per-step training loss of K replicas, and each replica's divergence.

    A replica diverges at a step when its loss is not finite, exceeds
    `divergence_factor` times its first step's loss, or passes halfway from its first
    loss to a clipped cross-entropy's `ceiling` (the rule of
    `stabilizer.telemetry.LossRecorder`, per replica). `diverged_at` keeps the step.
    `result()` is the stop flag the callback reads from each step's logs: 1 when every
    replica has diverged, or with `stop_on_any` when one has.
    """

    def __init__(self, replicas: int, capacity: int, divergence_factor: float,
                 ceiling: float = float("inf"), stop_on_any: bool = False,
                 name: str = "stab_loss") -> None:
        super().__init__(name=name)
        self.replicas = replicas
        self.capacity = capacity
        self.divergence_factor = divergence_factor
        self.ceiling = ceiling
        self.stop_on_any = stop_on_any
        self.buffer = self.add_variable(shape=(capacity, replicas), initializer="zeros",
                                        name="buffer")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="count")
        self.diverged = self.add_variable(shape=(replicas,), initializer="zeros", name="diverged")
        self.diverged_at = self.add_variable(shape=(replicas,), initializer="zeros",
                                             dtype="int32", name="diverged_at")

    def record(self, losses: Any) -> Any:
        """Write one step's losses (shape (K,)); return each replica's diverged flag."""
        losses = ops.cast(losses, "float32")
        count = self.count.value
        step = ops.minimum(count, self.capacity - 1)
        buffer = row_update(self.buffer.value, step, losses)
        self.buffer.assign(buffer)
        exploded = exploded_loss(losses, buffer[0], self.divergence_factor, self.ceiling)
        before = self.diverged.value
        newly = ops.logical_and(ops.greater(exploded, 0.5), ops.less(before, 0.5))
        self.diverged_at.assign(ops.where(newly, count, self.diverged_at.value))
        diverged = ops.maximum(before, exploded)
        self.diverged.assign(diverged)
        self.count.assign(count + 1)
        return ops.greater(diverged, 0.5)

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        return None

    def reset_state(self) -> None:
        return None

    def result(self) -> Any:
        diverged = self.diverged.value
        flag = ops.max(diverged) if self.stop_on_any else ops.min(diverged)
        return ops.cast(ops.greater(flag, 0.5), "float32")


class ReplicaLossMeans(keras.metrics.Metric):
    """Each replica's mean loss since the last reset (an epoch, a validation pass), each
    batch weighted by its size, as Keras' own loss tracker weighs it."""

    def __init__(self, replicas: int, name: str = "replica_loss") -> None:
        super().__init__(name=name)
        self.replicas = replicas
        self.total = self.add_variable(shape=(replicas,), initializer="zeros", name="total")
        self.samples = self.add_variable(shape=(), initializer="zeros", name="samples")

    def update_state(self, losses: Any, size: Any = 1) -> None:
        size = ops.cast(size, "float32")
        self.total.assign(self.total.value + ops.cast(losses, "float32") * size)
        self.samples.assign(self.samples.value + size)

    def reset_state(self) -> None:
        self.total.assign(ops.zeros((self.replicas,)))
        self.samples.assign(0.0)

    def result(self) -> dict[str, Any]:
        means = self.total.value / ops.maximum(self.samples.value, 1.0)
        return {f"{self.name}_{k}": means[k] for k in range(self.replicas)}


class _ReplicaTelemetryMixin:
    """Per-replica gradient and update statistics inside `apply()`.

    Set before the first step: `stab_capacity` (rows), `stab_replicas` (K),
    `stab_layer_names` (replica 0's layers), `stab_slots` (for each trainable
    variable's id: its (replica, layer)) and `stab_clipnorm` (the global-norm clip, per
    replica; the optimizer's own `global_clipnorm` is left unset). One row of
    `stab_stats` per step: for each replica, its global gradient norm, then its layers'
    gradient norms, then their update/weight ratios.
    """

    stab_capacity: int = 1
    stab_replicas: int = 1
    stab_layer_names: list[str]
    stab_slots: dict[int, tuple[int, int]]
    stab_clipnorm: float | None = None

    def build(self, variables: list[Any]) -> None:
        if self.built:  # type: ignore[attr-defined]
            return
        super().build(variables)  # type: ignore[misc]
        k, n = self.stab_replicas, len(self.stab_layer_names)
        add = self.add_variable  # type: ignore[attr-defined]
        self.stab_stats = add((self.stab_capacity, k * (1 + 2 * n)), name="stab_stats")
        self.stab_step = add((), dtype="int32", name="stab_step")
        self.stab_nonfinite = add((k,), name="stab_nonfinite")

    def apply(self, grads: list[Any], trainable_variables: Any = None) -> Any:
        variables = list(trainable_variables) if trainable_variables is not None \
            else list(self._trainable_variables)  # type: ignore[attr-defined]
        if not self.built:  # type: ignore[attr-defined]
            self.build(variables)
        k, n = self.stab_replicas, len(self.stab_layer_names)
        pairs = [(i, g, v) for i, (g, v) in enumerate(zip(grads, variables)) if g is not None]
        slots = tuple(self.stab_slots[id(v)] for _, _, v in pairs)
        bins, owners = self._stab_bins(slots)
        grad_sq = [ops.sum(ops.square(ops.cast(g, "float32"))) for _, g, _ in pairs]
        per_replica = ops.sqrt(ops.segment_sum(ops.stack(grad_sq), owners, num_segments=k))
        finite = ops.isfinite(per_replica)
        scale = ops.where(finite, 1.0, 0.0)
        if self.stab_clipnorm:
            clip = self.stab_clipnorm
            scale = scale * ops.where(finite, clip * ops.minimum(1.0 / per_replica, 1.0 / clip),
                                      0.0)
        new_grads = list(grads)
        for (i, g, _), (replica, _) in zip(pairs, slots):
            factor = ops.cast(scale[replica], g.dtype)
            # where, not a product: 0 * NaN would still be NaN
            new_grads[i] = ops.where(finite[replica], g * factor, ops.zeros_like(g))
        before = [ops.copy(ops.cast(v.value, "float32")) for _, _, v in pairs]
        result = super().apply(new_grads, trainable_variables)  # type: ignore[misc]
        delta_sq = [ops.sum(ops.square(ops.cast(v.value, "float32") - b))
                    for (_, _, v), b in zip(pairs, before)]
        weight_sq = [ops.sum(ops.square(b)) for b in before]
        sums = ops.reshape(ops.segment_sum(ops.stack(grad_sq + delta_sq + weight_sq), bins,
                                           num_segments=3 * k * n), (3, k, n))
        row = ops.concatenate([
            ops.expand_dims(per_replica, 1),
            ops.sqrt(sums[0]),
            ops.sqrt(sums[1] / (sums[2] + 1e-12)),
        ], axis=1)
        step = ops.minimum(self.stab_step.value, self.stab_capacity - 1)
        self.stab_stats.assign(row_update(self.stab_stats.value, step, ops.reshape(row, (-1,))))
        bad = ops.cast(ops.logical_not(finite), "float32")
        self.stab_nonfinite.assign(ops.maximum(self.stab_nonfinite.value, bad))
        self.stab_step.assign(self.stab_step.value + 1)
        return result

    def _stab_bins(self, slots: tuple[tuple[int, int], ...]) -> tuple[Any, Any]:
        """`segment_sum` ids: per (replica, layer) for the three sums; per replica."""
        cache = self.__dict__.setdefault("_stab_bin_cache", {})
        if slots not in cache:
            k, n = self.stab_replicas, len(self.stab_layer_names)
            cells = [r * n + layer for r, layer in slots]
            bins = np.asarray([c + part * k * n for part in range(3) for c in cells], "int32")
            cache[slots] = (bins, np.asarray([r for r, _ in slots], "int32"))
        return cache[slots]


_CLASS_CACHE: dict[type, type] = {}


def replica_optimizer_class(cls: type) -> type:
    """A subclass of the user's optimizer class that records per-replica telemetry."""
    if cls not in _CLASS_CACHE:
        _CLASS_CACHE[cls] = type(f"Replica{cls.__name__}", (_ReplicaTelemetryMixin, cls), {})
    return _CLASS_CACHE[cls]

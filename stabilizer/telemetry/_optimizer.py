"""The instrumented optimizer: per-step gradient norms and update ratios in optimizer state."""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from stabilizer.telemetry._buffers import row_update

__all__ = ["instrumented_optimizer_class", "layer_groups"]


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
    norm of each layer, then (unless `stab_updates` is off) each layer's
    update/weight ratio, and last the learning rate the step used. The per-variable
    sums of squares go to their layers in one `segment_sum` (not a matrix
    product, whose 0 * inf would spread one layer's overflow to every layer) and
    the row is written with one slice update: the op count per step, which is
    what a small model's step time is made of, stays low.
    """

    stab_capacity: int = 1
    #: record the update/weight ratios (a weight copy and two sums per variable and step);
    #: without them a row is the global norm and the layers' gradient norms only
    stab_updates: bool = True

    def build(self, variables: list[Any]) -> None:
        if self.built:  # type: ignore[attr-defined]
            return
        super().build(variables)  # type: ignore[misc]
        names, index = layer_groups(list(variables))
        self.stab_layer_names = names
        self._stab_index = {id(v): i for v, i in zip(variables, index)}
        add = self.add_variable  # type: ignore[attr-defined]
        width = 2 + (2 if self.stab_updates else 1) * len(names)
        self.stab_stats = add((self.stab_capacity, width), name="stab_stats")
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
        parts = 3 if self.stab_updates else 1
        segments = self._stab_segments(
            tuple(self._stab_index.get(id(v), 0) for _, v in pairs), parts)
        grad_sq = [ops.sum(ops.square(ops.cast(g, "float32"))) for g, _ in pairs]
        rate = ops.reshape(ops.cast(self.learning_rate, "float32"), (1,))  # type: ignore[attr-defined]
        if not self.stab_updates:
            result = super().apply(grads, trainable_variables)  # type: ignore[misc]
            per_layer = ops.segment_sum(ops.stack(grad_sq), segments, num_segments=n)
            global_norm = ops.sqrt(ops.sum(per_layer))
            row = ops.concatenate([ops.expand_dims(global_norm, 0), ops.sqrt(per_layer), rate])
            self._stab_write(row, global_norm)
            return result
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
            rate,
        ])
        self._stab_write(row, global_norm)
        return result

    def _stab_write(self, row: Any, global_norm: Any) -> None:
        """This step's `row` into `stab_stats`, the NaN/Inf flag, and the step count."""
        step = ops.minimum(self.stab_step.value, self.stab_capacity - 1)
        self.stab_stats.assign(row_update(self.stab_stats.value, step, row))
        bad = ops.cast(ops.logical_not(ops.isfinite(global_norm)), "float32")
        self.stab_nonfinite.assign(ops.maximum(self.stab_nonfinite.value, bad))
        self.stab_step.assign(self.stab_step.value + 1)

    def _stab_segments(self, groups: tuple[int, ...], parts: int) -> Any:
        """`segment_sum` ids for the stacked sums of squares of variables in `groups`.

        Bins 0..n-1 take the gradients', n..2n-1 the updates', 2n..3n-1 the
        weights' (`parts` of them). Kept per `groups` (the same at every step unless
        a gradient is None), so an eagerly run step (PyTorch) does not rebuild them.
        """
        cache = self.__dict__.setdefault("_stab_segment_cache", {})
        if (groups, parts) not in cache:
            n = len(self.stab_layer_names)
            cache[groups, parts] = np.asarray(
                [g + k * n for k in range(parts) for g in groups], "int32")
        return cache[groups, parts]


_CLASS_CACHE: dict[type, type] = {}


def instrumented_optimizer_class(cls: type) -> type:
    """A subclass of the user's optimizer class that records telemetry."""
    if cls not in _CLASS_CACHE:
        _CLASS_CACHE[cls] = type(f"Instrumented{cls.__name__}", (_TelemetryMixin, cls), {})
    return _CLASS_CACHE[cls]

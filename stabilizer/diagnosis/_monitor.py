"""The forward monitor: what one seed's model does at every evaluation.

Run through `run_probe`'s `on_evaluation` hook: each layer's weights, dead and
saturated shares, BatchNormalization's statistics and its train/inference gap, and
the loss on a fixed validation sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.apply import (
    activation_name,
)
from stabilizer.chance import fit_targets
from stabilizer.data import ProbeData
from stabilizer.diagnosis._finding import Finding
from stabilizer.diagnosis.checks._initializers import check_initializers
from stabilizer.keras_internals import flat_layers, is_graph_model
from stabilizer.telemetry import TelemetryCallback, layer_groups

__all__ = []


class _SeedMonitor:
    """The `on_evaluation` hook of one seed's probe (never stops the probe)."""

    def __init__(self, sample: tuple[Any, Any] | None, batch_size: int,
                 thresholds: dict[str, float], static: bool) -> None:
        self.sample = sample
        self.batch_size = batch_size
        self.th = thresholds
        self.static = static
        self.records: list[dict[str, Any]] = []
        self.static_findings: list[Finding] = []
        self.static_layers: list[dict[str, Any]] = []
        self.matrix_layers: list[str] = []
        self.not_checked: dict[str, str] = {}
        self.predictions: np.ndarray | None = None
        self.bn_momentum: float | None = None
        self.has_bn = False
        self._probe: keras.Model | None = None
        self._targets: list[tuple[keras.layers.Layer, str]] = []
        self._started = False

    def __call__(self, epoch: int, callback: TelemetryCallback) -> bool:
        model = callback.model
        if not self._started:
            self._start(model)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": getattr(callback, "step", None)
            or int(ops.convert_to_numpy(model.optimizer.iterations)),
            "learning_rate": callback.learning_rate[-1] if callback.learning_rate else None,
            "val_loss": callback.val_loss[-1] if callback.val_loss else None,
            "layers": _weight_stats(model),
        }
        if self.sample is not None:
            record.update(self._forward(model))
        self.records.append(record)
        return False

    def _start(self, model: keras.Model) -> None:
        self._started = True
        variables = list(model.trainable_variables)
        names, index = layer_groups(variables)
        self.matrix_layers = [name for i, name in enumerate(names)
                              if any(len(v.shape) >= 2 for v, g in zip(variables, index) if g == i)]
        bns = [layer for layer in flat_layers(model)
               if isinstance(layer, keras.layers.BatchNormalization)]
        self.has_bn = bool(bns)
        if bns:
            self.bn_momentum = max(float(layer.momentum) for layer in bns)
        if self.static:
            self.static_findings, self.static_layers = check_initializers(model, self.th)
        if self.sample is None:
            self.not_checked["activations"] = "no validation sample could be read from the data"
            return
        if not is_graph_model(model):
            self.not_checked["activations"] = (
                f"{type(model).__name__} is a subclassed model: its intermediate outputs "
                "cannot be read without changing its code, so dead ReLU units, saturation "
                "and BatchNormalization statistics were not checked")
            return
        targets: list[tuple[keras.layers.Layer, str]] = []
        outputs: list[Any] = []
        try:
            final = [o for o in model.outputs]
            for layer in model.layers:
                kind = _forward_kind(layer)
                if kind is None:
                    continue
                if kind == "saturating" and any(layer.output is o for o in final):
                    continue
                tensor = layer.input if kind == "bn" else layer.output
                targets.append((layer, kind))
                outputs.append(tensor)
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            self._probe = keras.Model(inputs, outputs + final)
            self._targets = targets
        except Exception as exc:  # a graph keras cannot cut (shared layers, nesting)
            self.not_checked["activations"] = (
                f"intermediate outputs could not be read ({type(exc).__name__}: {exc})")
            self._probe = None

    def _forward(self, model: keras.Model) -> dict[str, Any]:
        x, y = self.sample  # type: ignore[misc]
        out: dict[str, Any] = {}
        chunk = 2 * self.batch_size  # training fits this batch, so inference fits twice it
        if self._probe is None:
            prediction = _numpy(_in_chunks(model, x, chunk))
            if prediction is not None:
                self.predictions = prediction
                if y is not None:
                    out["loss_dispersion"] = _loss_dispersion(model, y, prediction)
        else:
            values = _in_chunks(self._probe, x, chunk)
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            arrays = [ops.convert_to_numpy(v).astype(np.float64) for v in values]
            if not all(np.isfinite(a).all() for a in arrays):
                out["nonfinite_activations"] = True
                return out
            if len(arrays) == len(self._targets) + 1:
                self.predictions = arrays[-1]
                if y is not None:
                    out["loss_dispersion"] = _loss_dispersion(model, y, arrays[-1])
            dead: dict[str, float] = {}
            saturated: dict[str, float] = {}
            bn: dict[str, dict[str, float]] = {}
            for (layer, kind), array in zip(self._targets, arrays):
                if kind == "relu":
                    dead[layer.name] = _dead_share(array, layer)
                elif kind == "saturating":
                    saturated[layer.name] = _saturated_share(array, activation_name(layer),
                                                             self.th["saturation_z"])
                else:
                    bn[layer.name] = _bn_shift(array, layer)
            out.update(dead_share=dead, saturated_share=saturated, bn=bn)
        if self.has_bn and y is not None:
            gap = _mode_gap(model, x, y, self.batch_size)
            if isinstance(gap, str):
                self.not_checked["bn_mode_gap"] = gap
            else:
                out["bn_gap"] = gap
        return out


def _in_chunks(model: keras.Model, x: Any, size: int) -> Any:
    """`model(x, training=False)` in slices of `size` samples, joined (same structure)."""
    n = len(keras.tree.flatten(x)[0])
    parts = [model(keras.tree.map_structure(lambda a, i=i: a[i:i + size], x), training=False)
             for i in range(0, n, max(1, size))]
    if len(parts) == 1:
        return parts[0]
    return keras.tree.map_structure(
        lambda *arrays: np.concatenate([ops.convert_to_numpy(a) for a in arrays]), *parts)


def _loss_dispersion(model: keras.Model, y: Any, prediction: np.ndarray) -> float:
    """std / mean of the per-sample losses: the batch loss's relative sampling noise
    is this over sqrt(batch size)."""
    loss = getattr(model, "loss", None)
    fn = _loss_function(model)
    if fn is None:
        return float("nan")
    y = np.asarray(y)
    if prediction.ndim == y.ndim + 1 and prediction.shape[-1] == 1:
        y = y[..., None]  # (n,) targets for a (n, 1) output, as Keras' compiled loss allows
    try:
        per_sample = fn.call(y, prediction) if isinstance(loss, keras.losses.Loss) \
            else fn(y, prediction)
        values = ops.convert_to_numpy(per_sample).astype(np.float64).reshape(len(prediction), -1)
    except Exception:  # a loss that needs more than (y, y_pred): not measured
        return float("nan")
    values = values.mean(axis=1)
    mean = float(values.mean())
    return float(values.std() / mean) if mean > 0 and np.isfinite(values).all() else float("nan")


def _numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, (list, tuple, dict)):
        return None
    array = ops.convert_to_numpy(value).astype(np.float64)
    return array if np.isfinite(array).all() else None


def _forward_kind(layer: keras.layers.Layer) -> str | None:
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    name = activation_name(layer)
    if name in ("relu", "relu6"):
        return "relu"
    if name in ("sigmoid", "tanh"):
        return "saturating"
    return None


def _channel_axis(array: np.ndarray, layer: Any) -> int:
    if getattr(layer, "data_format", "channels_last") == "channels_first" and array.ndim > 2:
        return 1
    return array.ndim - 1


def _dead_share(array: np.ndarray, layer: Any) -> float:
    """Share of units (channels) never active on any sample of the batch."""
    axis = _channel_axis(array, layer)
    moved = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
    return float(1.0 - np.mean((moved > 0).any(axis=0)))


def _saturated_share(array: np.ndarray, activation: str, z: float) -> float:
    """Share of outputs whose pre-activation is beyond +-z (read from the output)."""
    if activation == "sigmoid":
        low = 1.0 / (1.0 + math.exp(z))
        return float(np.mean((array < low) | (array > 1.0 - low)))
    return float(np.mean(np.abs(array) > math.tanh(z)))


def _bn_shift(array: np.ndarray, layer: keras.layers.BatchNormalization) -> dict[str, float]:
    """How far the moving statistics are from the input's statistics on the sample."""
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    axis = axis % array.ndim
    moved = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
    mean, var = moved.mean(axis=0), moved.var(axis=0)
    eps = float(layer.epsilon)
    moving_mean = ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
    moving_var = ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
    shift = np.abs(moving_mean - mean) / np.sqrt(var + eps)
    ratio = np.abs(np.log((moving_var + eps) / (var + eps)))
    return {"shift": float(np.mean(shift)), "var_log_ratio": float(np.mean(ratio)),
            "samples_per_statistic": int(moved.shape[0])}

_NOISE_ATTRS = (("rate", keras.layers.Dropout), ("rate", keras.layers.GaussianDropout),
                ("stddev", keras.layers.GaussianNoise))


def _mode_gap(model: keras.Model, x: Any, y: Any, batch: int) -> dict[str, float] | str:
    """log(inference-mode loss / training-mode loss) on the sample, in training-size batches.

    Training mode updates the BatchNormalization moving statistics; they are saved
    and restored. Dropout-like noise layers are switched off for both passes.
    """
    loss_fn = _loss_function(model)
    if loss_fn is None:
        return f"the compiled loss {getattr(model, 'loss', None)!r} is not a single loss function"
    if not hasattr(x, "shape") or isinstance(x, dict):
        return "the validation sample is not a single array"
    n = int(x.shape[0])
    chunks = min(16, n // batch)
    if chunks < 1:
        return f"the validation sample ({n}) is smaller than one batch ({batch})"
    layers = list(flat_layers(model))
    saved = [(v, ops.convert_to_numpy(v)) for layer in layers
             if isinstance(layer, keras.layers.BatchNormalization)
             for v in (layer.moving_mean, layer.moving_variance)]
    noise = [(layer, attr, getattr(layer, attr)) for layer in layers
             for attr, cls in _NOISE_ATTRS if isinstance(layer, cls)]
    train, infer = [], []
    try:
        for layer, attr, _ in noise:
            setattr(layer, attr, 0.0)
        for i in range(chunks):
            xc, yc = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            for mode, out in ((True, train), (False, infer)):
                prediction = model(xc, training=mode)
                # (n,) labels for an (n, 1) output, reshaped as model.fit does
                target = fit_targets(yc, tuple(prediction.shape[1:]))
                value = ops.mean(loss_fn(target, prediction))
                out.append(float(ops.convert_to_numpy(value)))
    finally:
        for layer, attr, value in noise:
            setattr(layer, attr, value)
        for variable, value in saved:
            variable.assign(value)
    lt, li = float(np.mean(train)), float(np.mean(infer))
    if not (math.isfinite(lt) and math.isfinite(li) and lt > 0 and li > 0):
        return "the loss was not finite in one of the two modes"
    positive = [v for v in train if v > 0]
    noise = float(np.std(np.log(positive))) if len(positive) >= 3 else math.nan
    return {"train_mode_loss": lt, "inference_mode_loss": li, "gap": math.log(li / lt),
            "samples": chunks * batch, "train_batch_noise": noise}


def _loss_function(model: keras.Model) -> Callable[..., Any] | None:
    loss = getattr(model, "loss", None)
    if isinstance(loss, (str, keras.losses.Loss)) or callable(loss):
        try:
            return keras.losses.get(loss) if isinstance(loss, str) else loss
        except ValueError:
            return None
    return None


def _weight_stats(model: keras.Model) -> dict[str, dict[str, float]]:
    """Per layer (telemetry names): mean and std of its weight matrices (or all weights)."""
    variables = list(model.trainable_variables)
    names, index = layer_groups(variables)
    stats: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        group = [v for v, g in zip(variables, index) if g == i]
        chosen = [v for v in group if len(v.shape) >= 2] or group
        values = np.concatenate([ops.convert_to_numpy(v).astype(np.float64).ravel()
                                 for v in chosen])
        stats[name] = {"weight_mean": float(values.mean()), "weight_std": float(values.std())}
    return stats


def _validation_sample(data: ProbeData, size: int) -> tuple[Any, Any] | None:
    """Up to `size` validation samples as numpy arrays (None when unreadable)."""
    try:
        if data.kind == "arrays":
            return data.x_val[:size], data.y_val[:size]
        if data.kind == "pydataset":
            xs, ys, count = [], [], 0
            for i in range(len(data.x_val)):
                item = data.x_val[i]
                x, y = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
                xs.append(np.asarray(x))
                if y is not None:
                    ys.append(np.asarray(y))
                count += len(xs[-1])
                if count >= size:
                    break
            return np.concatenate(xs)[:size], (np.concatenate(ys)[:size] if ys else None)
        ds = data.x_val if data.fixed_batch else data.x_val.batch(size)
        xs, ys, count = [], [], 0
        for item in ds:
            x, y = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
            xs.append(np.asarray(x))
            if y is not None:
                ys.append(np.asarray(y))
            count += len(xs[-1])
            if count >= size:
                break
        return np.concatenate(xs)[:size], (np.concatenate(ys)[:size] if ys else None)
    except Exception:  # dict inputs and the like: the forward checks are skipped
        return None


def _actual_batch(data: ProbeData, batch: int) -> int:
    """The training batch size, read from the data when the data fixes it."""
    if data.kind == "arrays" or not data.fixed_batch:
        return batch
    try:
        item = data.x[0] if data.kind == "pydataset" else next(iter(data.x))
        first = item[0] if isinstance(item, tuple) else item
        return int(np.asarray(first).shape[0])
    except Exception:
        return batch

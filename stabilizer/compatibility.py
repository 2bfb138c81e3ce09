"""Before the first probe: the user's model built once, the data checked against it,
and the space cut down to the dimensions that can change this model.

`inspect_model` calls `build_fn` once (seeded like the first probe) and returns a
`ModelFacts`: the model and its compile arguments (for the study's fingerprint,
`stabilizer.search.Fingerprint`) and what the model has (BatchNormalization layers, layers
with kernel initializers, a settable output bias). On the way it checks that the data
fits the model, so a mismatch is a `DataError` naming the argument before any probe
runs, not a failed trial carrying a Keras traceback:

- ``x``: the model accepts a batch of it (its input shape);
- ``y``: the labels fit the output and the loss: class indices within the output's
  units for a sparse categorical cross-entropy, one-hot rows as wide as the output for
  a categorical one, values in [0, 1] for a binary one, and for any loss a sample
  shape equal to the output's (``(n,)`` labels for an ``(n, 1)`` output are fine, as
  `model.fit` reshapes them);
- a model with several outputs needs its labels from a pipeline (arrays give one ``y``).

Pipelines are checked on their first batch. `fit_space` then fixes to "keep" every
dimension that cannot affect the model (BatchNormalization settings without a
BatchNormalization layer, a batch size the data fixes itself, ...), with the reason:
such a dimension is neither sampled nor reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from stabilizer.apply import (
    CompileSpec,
    call_build_fn,
    has_batch_norm,
    output_layer,
    replay_hyperparameters,
    resolve_build_fn,
)
from stabilizer.chance import fit_targets
from stabilizer.config import SearchConfig
from stabilizer.data import ProbeData
from stabilizer.errors import DataError, clean_message
from stabilizer.keras_internals import flat_layers, is_graph_model
from stabilizer.space import SearchSpace

__all__ = ["ModelFacts", "check_data_fits", "fit_space", "inspect_model"]

#: Samples of the data the forward check runs on.
_SAMPLE = 4


@dataclasses.dataclass
class ModelFacts:
    """The user's model as `build_fn` returns it, and what a configuration can change."""

    model: keras.Model
    compile_spec: CompileSpec
    has_batch_norm: bool
    graph_model: bool
    has_kernels: bool
    output_bias: str | None  # None when settable, else why not


def inspect_model(build_fn: Callable[..., Any], data: ProbeData,
                  settings: SearchConfig) -> ModelFacts:
    """Build the user's model once and check `data` against it (see the module docstring)."""
    fn, uses_hp = resolve_build_fn(build_fn)
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(settings.seed * 1000)
    model = call_build_fn(fn, replay_hyperparameters({}) if uses_hp else None)
    spec = CompileSpec.from_model(model, settings)
    check_data_fits(model, spec.loss, data)
    found = output_layer(model)
    reason = found if isinstance(found, str) else None
    if reason is None and data.kind != "arrays":
        reason = "the training labels are not in memory (a dataset pipeline)"
    kernels = any(hasattr(layer, "kernel_initializer")
                  or hasattr(getattr(layer, "cell", None), "kernel_initializer")
                  for layer in flat_layers(model))
    return ModelFacts(model, spec, has_batch_norm(model), is_graph_model(model), kernels,
                      reason)


def _first_batch(data: ProbeData) -> tuple[Any, Any] | None:
    """A few samples (x, y) of the training data; None when they cannot be read cheaply."""
    if data.kind == "arrays":
        return data.x[:_SAMPLE], data.y[:_SAMPLE]
    try:
        if data.kind == "pydataset":
            batch = data.x[0]
        else:
            batch = next(iter(data.x.take(1)))
            batch = keras.tree.map_structure(lambda t: t.numpy(), batch)
            if not data.fixed_batch:  # one sample: give it its batch axis
                batch = keras.tree.map_structure(lambda a: np.asarray(a)[None], batch)
    except Exception:  # the probe reads the data and reports what fails there
        return None
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        return None
    return batch[0], batch[1]


def _shape(value: Any) -> tuple[int | None, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


def _loss_name(loss: Any) -> tuple[str, bool]:
    """(the loss's function name, whether it takes logits) for names, functions, objects."""
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            return loss, False
    if isinstance(loss, keras.losses.Loss):
        fn = getattr(loss, "fn", None)
        name = getattr(fn, "__name__", type(loss).__name__)
        return str(name).lower(), bool(getattr(loss, "_fn_kwargs", {}).get("from_logits"))
    return str(getattr(loss, "__name__", type(loss).__name__)).lower(), False


def check_data_fits(model: keras.Model, loss: Any, data: ProbeData) -> None:
    """Raise `DataError` when the data does not fit `model` and `loss` (module docstring)."""
    batch = _first_batch(data)
    if batch is None:
        return
    x, y = batch
    where = "x" if data.kind == "arrays" else "data (its first batch's inputs)"
    labels = "y" if data.kind == "arrays" else "data (its first batch's labels)"
    outputs = getattr(model, "outputs", None) or []
    if data.kind == "arrays" and len(outputs) > 1:
        raise DataError(f"y: one array of labels, but the model has {len(outputs)} outputs; "
                        "expected a keras.utils.PyDataset or tf.data.Dataset yielding "
                        "(x, [y1, y2, ...]) for a model with several outputs")
    try:
        prediction = model(x, training=False)
    except Exception as exc:
        expected = [tuple(t.shape) for t in getattr(model, "inputs", None) or []]
        wanted = (f"input of shape {expected[0] if len(expected) == 1 else expected}"
                  if expected else "the input the model was built for")
        raise DataError(f"{where}: samples of shape {_sample_shapes(x)} do not fit the "
                        f"model; expected {wanted} (None is any size). Keras said: "
                        f"{type(exc).__name__}: {clean_message(exc, 300)}") from None
    if isinstance(prediction, (list, tuple, dict)) or isinstance(y, (list, tuple, dict)):
        return  # several outputs: each is the user's to pair with its labels
    out_shape = _shape(prediction)
    if data.kind == "arrays":  # every label is in memory: check them all
        y = np.concatenate([np.asarray(data.y), np.asarray(data.y_val)])
    y = np.asarray(y)
    if out_shape is None or y.dtype == object:
        return
    _check_labels(labels, y, tuple(out_shape[1:]), loss)


def _sample_shapes(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _shape(v)[1:] for k, v in x.items()}  # type: ignore[index]
    if isinstance(x, (list, tuple)):
        return [_shape(v)[1:] for v in x]  # type: ignore[index]
    shape = _shape(x)
    return shape[1:] if shape else None


def _check_labels(name: str, y: np.ndarray, out: tuple[Any, ...], loss: Any) -> None:
    loss_name, _ = _loss_name(loss)
    units = out[-1] if out else 1
    sample = tuple(y.shape[1:])
    if "sparse_categorical" in loss_name:
        if sample not in ((), (1,)) and sample != out[:-1] and sample != (*out[:-1], 1):
            raise DataError(f"{name}: labels of sample shape {sample} for {loss_name} and an "
                            f"output of shape {out}; expected class indices of shape "
                            f"{out[:-1] or '(n,)'} (one integer per sample)")
        if y.size and (not np.all(np.isfinite(y)) or not np.all(y == np.round(y))):
            raise DataError(f"{name}: {loss_name} needs integer class indices; got values such "
                            f"as {y.reshape(-1)[~(y.reshape(-1) == np.round(y.reshape(-1)))][:1]}")
        if y.size and units is not None and (y.min() < 0 or y.max() >= units):
            raise DataError(f"{name}: class indices from {y.min():g} to {y.max():g}, but the "
                            f"output has {units} units; expected indices in [0, {units - 1}] "
                            "(more units in the output layer, or labels numbered from 0)")
        return
    if "categorical" in loss_name and "sparse" not in loss_name:
        if sample != out:
            hint = (" (class indices: use sparse_categorical_crossentropy, or one-hot "
                    "labels from keras.utils.to_categorical)") if sample in ((), (1,)) else ""
            raise DataError(f"{name}: labels of sample shape {sample}; {loss_name} expects "
                            f"one-hot rows of the output's shape {out}{hint}")
        return
    fitted = tuple(fit_targets(y, out).shape[1:])
    if fitted != out and not (fitted == () and out == ()):
        raise DataError(f"{name}: labels of sample shape {sample}, but the model's output has "
                        f"sample shape {out}; expected labels of the output's shape (for "
                        f"{loss_name or 'the loss'}); (n,) labels for an (n, 1) output are "
                        "fine")
    if "binary" in loss_name and "logits" not in loss_name and y.size \
            and (y.min() < 0 or y.max() > 1):
        raise DataError(f"{name}: labels from {y.min():g} to {y.max():g}; {loss_name} expects "
                        "values in [0, 1] (0/1 labels, or probabilities)")


def fit_space(space: SearchSpace, facts: ModelFacts,
              data: ProbeData) -> tuple[SearchSpace, list[str]]:
    """`space` without the dimensions that cannot change this model, and why each went.

    A dimension taken out keeps the user's setting ("keep"): it is neither sampled
    nor reported. Only dimensions the space names are mentioned.
    """
    reasons: dict[str, str] = {}
    if not facts.has_batch_norm:
        for key in ("bn_momentum", "bn_epsilon", "normalization"):
            reasons[key] = "the model has no BatchNormalization layer"
    elif not facts.graph_model:
        reasons["normalization"] = ("BatchNormalization layers can only be replaced in "
                                    "Sequential and Functional models")
    if data.fixed_batch:
        what = "a keras.utils.PyDataset" if data.kind == "pydataset" else \
            "a batched tf.data.Dataset"
        reasons["batch_size"] = f"the data is {what}, which fixes its own batch size"
    if not facts.has_kernels:
        reasons["initializer"] = "the model has no layer with a kernel initializer"
    if facts.output_bias is not None:
        reasons["output_bias"] = f"the output bias cannot be set: {facts.output_bias}"
    dropped = {k: v for k, v in reasons.items() if k in space.dimensions}
    if not dropped:
        return space, []
    kept = {k: v for k, v in space.dimensions.items() if k not in dropped}
    notes = [f"{key} not searched: {why}" for key, why in dropped.items()]
    return SearchSpace(kept, name=space.name, description=space.description), notes

"""The chance level: the validation loss of the best prediction that ignores the input.

A candidate has not learned anything until its validation loss is below what a
constant prediction scores: the class frequencies for a classifier, the mean (or
median) target for a regressor. Measuring progress only against the untrained
model's loss misses this when the untrained model is worse than chance (a large
initializer makes a classifier confidently wrong: a deep sigmoid MLP with
normal(stddev=4) weights starts at a cross-entropy of about 20 on 10 classes), so a
candidate that falls from there to the uniform prediction's 2.30 would count as
progress. `stabilizer.scoring` measures progress against the lower of the two.

The constant predictions are fitted on the training labels and scored with the
user's own loss (its function or `keras.losses.Loss` object, so options such as
``from_logits`` or label smoothing are honoured) on the validation labels; the
lowest finite value of a few candidates is kept (probabilities and their logits,
mean and median), so the figure is the best of those, never better than the best
constant. Unknown cases give None (then only the untrained loss is used): data that
is not in memory (a `keras.utils.PyDataset` or `tf.data.Dataset`), a model without
a single symbolic output (several outputs, or a subclassed model), a loss that is
not a function or `Loss` object (a dict or list of them), labels whose shape does
not match the output's.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

__all__ = ["chance_loss", "constant_predictions"]

#: Validation labels scored (the first ones): the figure is a mean, and this bounds its memory.
MAX_SAMPLES = 10_000
_EPS = 1e-7


def _resolve_loss(loss: Any) -> Any:
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except ValueError:
            return None
    return loss if callable(loss) else None


def _is_integral(y: np.ndarray) -> bool:
    return bool(y.size) and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y)))


def constant_predictions(y_train: np.ndarray, output_shape: tuple[int, ...]) -> list[np.ndarray]:
    """Candidate constant predictions (one output's shape each) fitted on `y_train`."""
    y = np.asarray(y_train, dtype=np.float64)
    units = output_shape[-1] if output_shape else 1
    sample_shape = y.shape[1:]
    if sample_shape in ((), (1,)) and len(output_shape) == 1 and units > 1 and _is_integral(y):
        labels = y.reshape(-1).astype(np.int64)
        if labels.min() < 0 or labels.max() >= units:
            return []
        freq = np.maximum(np.bincount(labels, minlength=units) / len(labels), _EPS)
        freq = freq / freq.sum()
        return [freq, np.log(freq)]  # probabilities, and logits whose softmax they are
    if sample_shape == () and output_shape == (1,):
        y = y.reshape(-1, 1)
    elif sample_shape != tuple(output_shape):
        return []
    mean, median = y.mean(axis=0), np.median(y, axis=0)
    out = [mean, median]
    if y.min() >= 0 and y.max() <= 1:  # probabilities: also as logits (sigmoid, softmax)
        p = np.clip(mean, _EPS, 1 - _EPS)
        out += [np.log(p / (1 - p)), np.log(p)]
    return out


def chance_loss(model: keras.Model, loss: Any, y_train: Any, y_val: Any) -> float | None:
    """The validation loss of the best constant prediction of `model`'s output, or None.

    `loss` is the user's compiled loss (a name, a function or a `keras.losses.Loss`);
    `y_train` and `y_val` the labels as arrays (None when the data is a pipeline).
    """
    fn = _resolve_loss(loss)
    outputs = getattr(model, "outputs", None) or []
    if fn is None or y_train is None or y_val is None or len(outputs) != 1:
        return None
    shape = tuple(outputs[0].shape[1:])
    if not shape or any(d is None for d in shape):
        return None
    y_val = np.asarray(y_val)[:MAX_SAMPLES]
    if y_val.ndim == 1 and shape == (1,):  # (n,) labels for a one-unit output, as fit takes
        y_val = y_val[:, None]
    best = math.inf
    for prediction in constant_predictions(np.asarray(y_train), shape):
        tiled = np.broadcast_to(prediction, (len(y_val), *shape)).astype("float32")
        try:
            value = float(keras.ops.convert_to_numpy(keras.ops.mean(fn(y_val, tiled))))
        except Exception:  # a loss that rejects this shape or dtype: not a candidate
            continue
        if math.isfinite(value):
            best = min(best, value)
    # Progress is a ratio to this level: only a positive one can be measured from.
    return best if math.isfinite(best) and best > 0 else None

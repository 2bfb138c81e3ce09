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

The same constant starts the output layer's bias where `StabilityConfig(output_bias=
"chance")` asks for it (`constant_bias`; `stabilizer.apply.output_bias` finds the
layer): a regression on targets of 300 +- 150 whose untrained output is near 0 starts
at a squared error of ~1e5, most of it the offset; with the bias at the mean the first
steps learn the input's effect instead of the targets' scale (the "init well" advice
for the last layer).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

__all__ = ["chance_loss", "constant_bias", "constant_predictions", "fit_targets", "resolve_loss"]

#: Validation labels scored (the first ones): the figure is a mean, and this bounds its memory.
MAX_SAMPLES = 10_000
_EPS = 1e-7


def resolve_loss(loss: Any) -> Any:
    """The loss function of a name, function or `Loss` object; None for anything else."""
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except ValueError:
            return None
    return loss if callable(loss) else None


def fit_targets(y: Any, output_shape: tuple[int, ...]) -> np.ndarray:
    """`y` (one row per sample) in the output's shape where `fit` would broadcast it:
    (n,) targets for a one-unit output become (n, 1), and so on for any trailing
    unit axis the output has and the targets lack. Other shapes are returned as they are.
    """
    y = np.asarray(y)
    if tuple(y.shape[1:]) + (1,) == tuple(output_shape):
        return y[..., None]
    return y


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
    y = fit_targets(y, output_shape)
    if y.shape[1:] != tuple(output_shape):
        return []
    mean, median = y.mean(axis=0), np.median(y, axis=0)
    out = [mean, median]
    if y.min() >= 0 and y.max() <= 1:  # probabilities: also as logits (sigmoid, softmax)
        p = np.clip(mean, _EPS, 1 - _EPS)
        out += [np.log(p / (1 - p)), np.log(p)]
    return out


def _scores(fn: Any, y: Any, shape: tuple[int, ...],
            predictions: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
    """(prediction, mean `fn` loss on the first `MAX_SAMPLES` of `y`) for each constant
    prediction the loss accepts with a finite value."""
    y = fit_targets(np.asarray(y)[:MAX_SAMPLES], shape)
    scored = []
    for prediction in predictions:
        tiled = np.broadcast_to(prediction, (len(y), *shape)).astype("float32")
        try:
            value = float(keras.ops.convert_to_numpy(keras.ops.mean(fn(y, tiled))))
        except Exception:  # a loss that rejects this shape or dtype: not a candidate
            continue
        if math.isfinite(value):
            scored.append((prediction, value))
    return scored


def chance_loss(model: keras.Model, loss: Any, y_train: Any, y_val: Any) -> float | None:
    """The validation loss of the best constant prediction of `model`'s output, or None.

    `loss` is the user's compiled loss (a name, a function or a `keras.losses.Loss`);
    `y_train` and `y_val` the labels as arrays (None when the data is a pipeline).
    """
    fn = resolve_loss(loss)
    outputs = getattr(model, "outputs", None) or []
    if fn is None or y_train is None or y_val is None or len(outputs) != 1:
        return None
    shape = tuple(outputs[0].shape[1:])
    if not shape or any(d is None for d in shape):
        return None
    scores = _scores(fn, y_val, shape, constant_predictions(np.asarray(y_train), shape))
    best = min((value for _, value in scores), default=math.inf)
    # Progress is a ratio to this level: only a positive one can be measured from.
    return best if math.isfinite(best) and best > 0 else None


def constant_bias(activation: str, output_shape: tuple[int, ...], loss: Any,
                  y_train: Any) -> np.ndarray | str:
    """The pre-activation value (of one output's shape) whose activation is the best
    constant prediction, or a reason.

    The constant is the candidate of `constant_predictions` with the lowest `loss` on
    the training targets (the validation data is not used), taken back through the
    output `activation` ("linear", "softmax" or "sigmoid"): the constant itself for a
    linear output, its log for a softmax, its logit for a sigmoid.
    """
    fn = resolve_loss(loss)
    if fn is None:
        return f"loss {loss!r} is not a single loss function"
    if y_train is None:
        return "the training targets are not in memory (a dataset or generator)"
    if not output_shape or any(d is None for d in output_shape):
        return f"output shape {output_shape} is not fixed"
    # A softmax or sigmoid output cannot take a logit as its value.
    candidates = [p for p in constant_predictions(np.asarray(y_train), output_shape)
                  if activation == "linear" or (np.all(p > 0) and np.all(p < 1))]
    best = min(_scores(fn, y_train, output_shape, candidates), key=lambda pair: pair[1],
               default=(None, math.inf))[0]
    if best is None:
        return (f"no constant prediction fits targets of shape {np.shape(y_train)[1:]} and "
                f"output {output_shape}")
    if activation == "softmax":
        bias = np.log(best) - np.log(best).mean()
    elif activation == "sigmoid":
        bias = np.log(best / (1 - best))
    else:
        bias = best
    return np.asarray(bias, dtype=np.float64)

"""Training data: normalised once, validated before the first probe.

Accepted forms:
- numpy arrays `(x, y)` (a validation split is held out, seeded) or `(x, y, x_val, y_val)`;
- a `keras.utils.PyDataset`, or a `(train, val)` pair of them;
- a `tf.data.Dataset` (TensorFlow backend only), or a `(train, val)` pair.

Arrays are checked for emptiness, matching lengths, numeric dtypes and NaN/Inf.
For arrays the batch size is a searched dimension. A `PyDataset` or an already
batched `tf.data.Dataset` fixes its own batch size: the batch-size dimension is
then not searched, and `ProbeData.fixed_batch` says so (a documented fallback,
not a silent no-op). An unbatched `tf.data.Dataset` is batched per candidate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from stabilizer.errors import DataError

__all__ = ["ProbeData", "prepare_data"]


@dataclasses.dataclass
class ProbeData:
    """Normalised training and validation data for the probes."""

    kind: str  # "arrays", "pydataset" or "tf.data"
    x: Any
    y: Any = None
    x_val: Any = None
    y_val: Any = None
    train_size: int | None = None
    fixed_batch: bool = False

    def train_order(self, batch_size: int, steps: int, seed: int) -> np.ndarray:
        """The rows of `x` that `steps` batches of `batch_size` take, in order (arrays only).

        Seeded reshuffled passes over the training rows, cut at `steps * batch_size`: a
        probe on `seed` sees the same batches whether it trains alone or as a replica.
        """
        n = self.x.shape[0]
        needed = steps * batch_size
        rng = np.random.default_rng(seed)
        passes = -(-needed // n)
        return np.concatenate([rng.permutation(n) for _ in range(passes)])[:needed]

    def steps_per_epoch(self, batch_size: int) -> int | None:
        """Optimizer steps in one pass over the training data (None: a pipeline of unknown
        length)."""
        if self.kind == "arrays":
            return -(-int(self.x.shape[0]) // batch_size)
        try:
            if self.kind == "pydataset":
                return int(len(self.x))
            count = int(self.x.cardinality())
        except Exception:  # a PyDataset without __len__; a dataset that cannot tell
            return None
        if count < 0:  # infinite or unknown
            return None
        return count if self.fixed_batch else -(-count // batch_size)

    def fit_inputs(self, batch_size: int, steps: int, seed: int) -> dict[str, Any]:
        """Keyword arguments for `model.fit` carrying `steps` batches of `batch_size`.

        Arrays are fed in `train_order` (Keras keeps one iterator across epochs when
        `steps_per_epoch` is set, so the order covers exactly `steps * batch_size` rows).
        """
        if self.kind == "arrays":
            order = self.train_order(batch_size, steps, seed)
            return {"x": self.x[order], "y": self.y[order], "batch_size": batch_size,
                    "shuffle": False, "validation_data": (self.x_val, self.y_val)}
        # a pipeline shuffles itself (Keras ignores shuffle=True for one, and warns)
        if self.kind == "tf.data" and not self.fixed_batch:
            return {"x": self.x.batch(batch_size), "shuffle": False,
                    "validation_data": self.x_val.batch(batch_size)}
        return {"x": self.x, "shuffle": False, "validation_data": self.x_val}

    def validation_batches(self, batch_size: int) -> dict[str, Any]:
        """Keyword arguments for `model.evaluate` on the validation data."""
        if self.kind == "arrays":
            return {"x": self.x_val, "y": self.y_val, "batch_size": batch_size}
        if self.kind == "tf.data" and not self.fixed_batch:
            return {"x": self.x_val.batch(batch_size)}
        return {"x": self.x_val}


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") for v in value):
        raise DataError(f"{name}: models with several inputs or outputs take a dict or list of "
                        "arrays only through a PyDataset or tf.data.Dataset; expected one array")
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{name}: cannot be read as an array ({exc}); "
                        "expected a numeric array") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{name}: dtype {array.dtype} is not numeric; "
                        "expected int, float or bool values")
    if array.ndim == 0:
        raise DataError(f"{name}: a scalar; expected an array with one row per sample")
    if array.shape[0] == 0:
        raise DataError(f"{name}: empty (0 samples); expected at least one sample")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array.reshape(array.shape[0], -1)))[0][0]
        kind = "NaN" if np.isnan(array).any() else "Inf"
        raise DataError(f"{name}: contains {kind} values (first in sample {bad}); "
                        "expected finite numbers")
    return array


def _check_pair(xname: str, x: np.ndarray, yname: str, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{xname} has {x.shape[0]} samples but {yname} has {y.shape[0]}; "
                        "expected the same number")


def _is_pydataset(obj: Any) -> bool:
    import keras

    return isinstance(obj, keras.utils.PyDataset)


def _is_tf_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("tensorflow") and hasattr(obj, "element_spec")


def _tf_is_batched(ds: Any) -> bool:
    import tensorflow as tf  # edge code: only reached with a tf.data.Dataset

    spec = ds.element_spec
    first = tf.nest.flatten(spec)[0]
    return len(first.shape) > 0 and first.shape[0] is None


def prepare_data(data: Any, *, validation_split: float = 0.2, seed: int = 0) -> ProbeData:
    """Normalise and validate `data`; raise `DataError` naming what is wrong."""
    if _is_pydataset(data) or _is_tf_dataset(data):
        data = (data, None)
    if not isinstance(data, (tuple, list)):
        raise DataError(f"data: got {type(data).__name__}; expected (x, y), (x, y, x_val, y_val), "
                        "a keras.utils.PyDataset or a tf.data.Dataset")
    if len(data) == 2 and (_is_pydataset(data[0]) or _is_tf_dataset(data[0])):
        return _prepare_pipeline(data[0], data[1])
    if len(data) not in (2, 4):
        raise DataError(f"data: a tuple of {len(data)} items; expected (x, y) or "
                        "(x, y, x_val, y_val)")
    x, y = _as_array("x", data[0]), _as_array("y", data[1])
    _check_pair("x", x, "y", y)
    if len(data) == 4:
        x_val, y_val = _as_array("x_val", data[2]), _as_array("y_val", data[3])
        _check_pair("x_val", x_val, "y_val", y_val)
        if x_val.shape[1:] != x.shape[1:]:
            raise DataError(f"x_val has sample shape {x_val.shape[1:]} but x has {x.shape[1:]}; "
                            "expected the same")
    else:
        if x.shape[0] < 4:
            raise DataError(f"x: {x.shape[0]} samples; expected at least 4 to hold out validation")
        order = np.random.default_rng(seed).permutation(x.shape[0])
        n_val = max(1, int(round(x.shape[0] * validation_split)))
        val, train = order[:n_val], order[n_val:]
        x, y, x_val, y_val = x[train], y[train], x[val], y[val]
    return ProbeData("arrays", x, y, x_val, y_val, train_size=int(x.shape[0]))


def _prepare_pipeline(train: Any, val: Any) -> ProbeData:
    if val is None:
        raise DataError("data: a dataset pipeline needs validation data too; expected "
                        "(train_dataset, val_dataset)")
    if _is_pydataset(train):
        if not _is_pydataset(val):
            raise DataError(f"data: validation is {type(val).__name__}; expected a PyDataset "
                            "like the training data")
        if len(train) == 0:
            raise DataError("data: the training PyDataset has 0 batches; expected at least one")
        return ProbeData("pydataset", train, x_val=val, fixed_batch=True)
    if not _is_tf_dataset(val):
        raise DataError(f"data: validation is {type(val).__name__}; expected a tf.data.Dataset "
                        "like the training data")
    batched = _tf_is_batched(train)
    if batched != _tf_is_batched(val):
        raise DataError("data: one of the training and validation datasets is batched and the "
                        "other is not; expected both batched or both unbatched")
    return ProbeData("tf.data", train, x_val=val, fixed_batch=batched)

"""Device buffers the telemetry writes into, one row per step."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from keras import ops

__all__ = ["host_array", "row_update"]


def host_array(variable: Any) -> np.ndarray:
    """A NumPy copy of a Keras variable's value, on any backend.

    Keras' variables warn under NumPy 2 (their ``__array__`` takes no ``copy``
    keyword) when NumPy converts them; the value is right, the warning is not ours.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.array(variable.numpy(), copy=True)


def row_update(buffer: Any, index: Any, row: Any) -> Any:
    """`buffer` with `row` written at `index` (functional, backend-neutral)."""
    start = [index] + [0] * (len(buffer.shape) - 1)
    return ops.slice_update(buffer, start, ops.expand_dims(row, 0))

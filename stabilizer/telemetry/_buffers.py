"""Device buffers the telemetry writes into, one row per step."""

from __future__ import annotations

from typing import Any

from keras import ops

__all__ = ["row_update"]


def row_update(buffer: Any, index: Any, row: Any) -> Any:
    """`buffer` with `row` written at `index` (functional, backend-neutral)."""
    start = [index] + [0] * (len(buffer.shape) - 1)
    return ops.slice_update(buffer, start, ops.expand_dims(row, 0))

"""The `Scenario` record: one unstable (or healthy) training setup of the zoo."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

__all__ = ["Scenario"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A model factory, its data and the user's starting configuration.

    `build_fn()` returns the user's compiled model (optimizer, learning rate and
    initializers as the user wrote them); `load_data()` returns arrays ``(x, y)``;
    `batch_size` is the user's batch size; `space` is the bundled search space a
    user would pick for this kind of model; `cause` names the kind of instability
    (one of `CAUSES` in `benchmarks.zoo`); `healthy` marks the control that must
    stay healthy.
    """

    name: str
    cause: str
    problem: str
    build_fn: Callable[[], keras.Model]
    load_data: Callable[[], tuple[np.ndarray, np.ndarray]]
    batch_size: int = 32
    space: str = "default"
    healthy: bool = False
    #: the user's training length in optimizer steps (generated scenarios; None: the
    #: benchmark's judge length applies)
    train_steps: int | None = None
    #: what was drawn for a generated scenario (`benchmarks.zoo.generated`)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

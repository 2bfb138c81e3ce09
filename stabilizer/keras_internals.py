"""The one module that reaches into Keras internals.

Everything else in the package uses `keras` and `keras.ops` only; what Keras keeps
private (`keras.src...`, `Layer._flatten_layers`) is wrapped here, so a Keras release
that moves it breaks this module alone.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["flat_layers", "is_graph_model"]


def is_graph_model(model: keras.Model) -> bool:
    """True for Sequential and Functional models (those `clone_model` can rebuild)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def flat_layers(model: Any) -> list[keras.layers.Layer]:
    """Every layer of `model`, nested ones included, in order (not the model itself)."""
    return list(model._flatten_layers(include_self=False))

"""What a study was made for: its fingerprint, checked before a study is resumed.

A study (an Optuna study, or a KerasTuner project folder) holds trials measured on one
model, one data set, one space and one set of probe settings. Resuming it with any of
them changed would hand back answers that were never measured, so every search
computes a `Fingerprint` and the driver compares it with the one stored on the study:

- ``model``: the architecture (the model's config, layer names aside, or its layers'
  classes and weight shapes where it has no config) and the parameter count;
- ``loss`` and ``optimizer``: the loss, and the optimizer's class and settings;
- ``data``: the input and label shapes and dtypes, and a digest of evenly spaced rows
  of the training and validation arrays (a pipeline: its type, length and element
  spec, not its content);
- ``space``: every dimension of the space;
- ``probe``: the settings that change what a probe measures (length, evaluations,
  seeds, seed, batch size, validation split, divergence rule, pruning, diagnosis);
- ``driver``: the driver, and its tuner for KerasTuner.

The budget (``trials``), the storage, the output folder and the verbosity are not part
of it: a study may be resumed with a larger budget. Each part is kept in words (with
a short digest where the whole would be long), so a mismatch names what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from stabilizer.config import SearchConfig
from stabilizer.data import ProbeData
from stabilizer.errors import ConfigError
from stabilizer.keras_internals import flat_layers

__all__ = ["Fingerprint", "study_fingerprint", "DEFAULT_STUDY_PREFIX", "RESUME_HELP"]

#: A study the user did not name is called "<prefix>-<digest>".
DEFAULT_STUDY_PREFIX = "stabilizer"
#: Rows of each array that the data digest reads (evenly spaced).
_DIGEST_ROWS = 512
RESUME_HELP = ("start a new study with another study_name (--study-name), or resume this one "
               "on purpose with resume='force' (--resume force), which keeps its trials")
#: Settings that change what a probe measures (see the module docstring).
_PROBE_FIELDS = ("probe_steps", "evaluations", "seeds", "seed", "batch_size", "validation_split",
                 "divergence_factor", "check_every", "prune", "diagnose")


def _digest(value: Any, length: int = 10) -> str:
    text = value if isinstance(value, (str, bytes)) else _canonical(value)
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:length]


def _plain(obj: Any) -> Any:
    """A JSON stand-in for what json cannot write (functions by name, never an address)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"<{name or type(obj).__qualname__}>"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_plain)


def _without_names(value: Any) -> Any:
    """A layer or model config without its "name" keys (Keras numbers names per session)."""
    if isinstance(value, dict):
        return {k: _without_names(v) for k, v in value.items() if k != "name"}
    if isinstance(value, (list, tuple)):
        return [_without_names(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Each part of what a study was made for, in words; `digest` hashes them all."""

    parts: Mapping[str, str]

    @property
    def digest(self) -> str:
        return _digest(dict(self.parts), 12)

    @property
    def default_study_name(self) -> str:
        """The name of a study the user did not name."""
        return f"{DEFAULT_STUDY_PREFIX}-{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "parts": dict(self.parts)}

    def differences(self, stored: Any) -> list[str]:
        """What differs from a stored `to_dict()`, one line per part ([] when it matches)."""
        parts = stored.get("parts") if isinstance(stored, Mapping) else None
        if not isinstance(parts, Mapping):
            return ["the study holds no fingerprint (made by an earlier version of stabilizer)"]
        lines = []
        for key in sorted(set(parts) | set(self.parts)):
            before, now = parts.get(key), self.parts.get(key)
            if before != now:
                lines.append(f"{key}: the study has {before!r}, this search has {now!r}")
        return lines

    def check(self, stored: Any, *, study: str, where: str, has_history: bool,
              force: bool) -> bool:
        """Whether `stored` (the study's fingerprint, None when it has none) may be resumed.

        Returns True when the fingerprint is to be written (a new study, or one resumed
        on purpose with `force`). Raises `ConfigError` naming what differs otherwise.
        """
        if stored is None and not has_history:
            return True
        differences = self.differences(stored)
        if not differences:
            return False
        if force:
            return False  # resumed on purpose: the study keeps what it was made for
        raise ConfigError(
            f"study_name={study!r}: the study in {where} was made for another search, so its "
            "trials were not measured on this one; differs: " + "; ".join(differences)
            + f". Expected the same model, data, space and probe settings; {RESUME_HELP}")


def _model_part(model: Any) -> str:
    try:
        config = _without_names(model.get_config())
        described = "architecture"
    except Exception:  # a subclassed model without get_config: its layers and weights
        config = [[type(layer).__qualname__, [list(map(int, w.shape)) for w in layer.weights]]
                  for layer in flat_layers(model)]
        described = "layers"
    try:
        params = f"{int(model.count_params()):,} parameters"
    except Exception:  # an unbuilt subclassed model
        params = "parameters unknown (not built)"
    return f"{type(model).__qualname__}, {params}, {described} {_digest(config)}"


def _loss_part(loss: Any) -> str:
    if isinstance(loss, str):
        return loss
    try:
        import keras

        return _canonical(_without_names(keras.saving.serialize_keras_object(loss)))
    except Exception:
        return _canonical(_plain(loss))


def _optimizer_part(optimizer: Any) -> str:
    config = _without_names(optimizer.get_config())
    shown = {k: config.get(k) for k in ("learning_rate", "clipnorm", "clipvalue",
                                         "global_clipnorm") if config.get(k) is not None}
    if isinstance(shown.get("learning_rate"), dict):
        shown["learning_rate"] = shown["learning_rate"].get("class_name", "schedule")
    text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown.items())
    return f"{type(optimizer).__qualname__}({text}) {_digest(config)}"


def _array_part(name: str, array: Any) -> str:
    return f"{name} {tuple(array.shape)} {array.dtype}"


def _rows_digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for array in arrays:
        n = array.shape[0]
        rows = np.unique(np.linspace(0, n - 1, min(n, _DIGEST_ROWS)).round().astype(int))
        h.update(str((array.shape, array.dtype.str)).encode())
        h.update(np.ascontiguousarray(array[rows]).tobytes())
    return h.hexdigest()[:10]


def _data_part(data: ProbeData) -> str:
    if data.kind == "arrays":
        arrays = (data.x, data.y, data.x_val, data.y_val)
        shapes = ", ".join(_array_part(n, a) for n, a in zip(("x", "y", "x_val", "y_val"), arrays))
        return f"{shapes}, content {_rows_digest(*arrays)}"
    if data.kind == "pydataset":
        return (f"{type(data.x).__qualname__} of {len(data.x)} batches, validation "
                f"{type(data.x_val).__qualname__} of {len(data.x_val)} batches")
    return (f"tf.data {data.x.element_spec!r} ({int(data.x.cardinality())} elements), "
            f"validation {int(data.x_val.cardinality())} elements")


def study_fingerprint(model: Any, compile_spec: Any, data: ProbeData, space: Any,
                      settings: SearchConfig) -> Fingerprint:
    """The fingerprint of a search of `model` (built by the user's `build_fn`, seeded)."""
    probe = ", ".join(f"{name}={getattr(settings, name)!r}" for name in _PROBE_FIELDS)
    driver = settings.driver + (f" ({settings.tuner})" if settings.driver == "keras_tuner"
                                else "")
    return Fingerprint({
        "model": _model_part(model),
        "loss": _loss_part(compile_spec.loss),
        "optimizer": _optimizer_part(compile_spec.optimizer),
        "data": _data_part(data),
        "space": f"{space.name!r} {_digest(space.to_dict())}",
        "probe": probe,
        "driver": driver,
    })

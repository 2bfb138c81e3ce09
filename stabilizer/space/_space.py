"""The search space: which stabilization knobs are searched, over which ranges.

A `SearchSpace` maps each dimension of `StabilityConfig` to a `Choice` (a list of
values), a `FloatRange` (with optional log scale) or a `Fixed` value. Dimensions
left out keep the user's setting. Conditional parameters are sampled only where
they mean something: `decay_rate` only for the exponential schedule,
`warmup_fraction` only for warmup-then-cosine, `clip_value` only when clipping is on.

Sampling goes through the small `Suggester` protocol, so the same space drives an
Optuna trial (`trial.suggest_*`) or a KerasTuner `HyperParameters` object.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml

from stabilizer.config import (
    CLIPPING_MODES,
    LR_SCHEDULES,
    NORMALIZATIONS,
    OUTPUT_BIASES,
    StabilityConfig,
    check_initializer,
)
from stabilizer.errors import ConfigError

__all__ = [
    "CONDITIONS",
    "DIMENSIONS",
    "Choice",
    "Dimension",
    "FloatRange",
    "Fixed",
    "SearchSpace",
    "Suggester",
    "bundled_spaces",
    "load_space",
]


class Suggester(Protocol):
    """What a driver offers to sample one value per dimension.

    Every applied value goes through it, fixed ones as a one-value `categorical`, so a
    driver can record on the trial everything the probes applied.
    """

    def categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def float(self, name: str, low: float, high: float, log: bool) -> float: ...


@dataclasses.dataclass(frozen=True)
class Choice:
    """A categorical dimension."""

    values: tuple[Any, ...]

    def sample(self, name: str, suggest: Suggester) -> Any:
        # a single value is offered too, so the driver records it (an Optuna trial's params)
        return suggest.categorical(name, list(self.values))

    def to_data(self) -> Any:
        return list(self.values)


@dataclasses.dataclass(frozen=True)
class FloatRange:
    """A continuous dimension between `low` and `high`, log-uniform when `log`."""

    low: float
    high: float
    log: bool = False

    def sample(self, name: str, suggest: Suggester) -> float:
        return float(suggest.float(name, self.low, self.high, self.log))

    def to_data(self) -> Any:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A dimension fixed to one value (not searched, but applied)."""

    value: Any

    def sample(self, name: str, suggest: Suggester) -> Any:
        # offered as a one-value choice, so the driver records what was applied
        return suggest.categorical(name, [self.value])

    def to_data(self) -> Any:
        return self.value


Dimension = Choice | FloatRange | Fixed

# Which dimensions are continuous, and the bounds a value of each must respect.
_FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "learning_rate": (0.0, 100.0),
    "decay_rate": (0.0, 1.0),
    "warmup_fraction": (0.0, 0.9),
    "clip_value": (0.0, math.inf),
    "bn_momentum": (0.0, 1.0),
    "bn_epsilon": (0.0, 1.0),
}
_CATEGORICAL = ("initializer", "lr_schedule", "clipping", "batch_size", "normalization",
                "output_bias")
DIMENSIONS = tuple(f.name for f in dataclasses.fields(StabilityConfig))

# A conditional dimension is sampled only when its parent takes one of these values.
CONDITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "decay_rate": ("lr_schedule", ("exponential",)),
    "warmup_fraction": ("lr_schedule", ("warmup_cosine",)),
    "clip_value": ("clipping", ("norm", "value", "global_norm")),
}
# Used when a conditional parent is searched but the child dimension was left out.
_CHILD_DEFAULTS = {"decay_rate": 0.7, "warmup_fraction": 0.1, "clip_value": 1.0}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A named set of dimensions; see the module docstring."""

    dimensions: Mapping[str, Dimension]
    name: str = "custom"
    description: str = ""

    def __post_init__(self) -> None:
        for key, dim in self.dimensions.items():
            _check_dimension(key, dim, f"space {self.name!r}")

    def sample(self, suggest: Suggester, *, max_batch_size: int | None = None) -> StabilityConfig:
        """Sample one configuration; conditional children only when their parent needs them."""
        values: dict[str, Any] = {}
        for key in DIMENSIONS:
            if key in CONDITIONS:
                continue
            dim = self.dimensions.get(key)
            if dim is None:
                continue
            if key == "batch_size" and max_batch_size is not None and isinstance(dim, Choice):
                fitting = tuple(b for b in dim.values if b <= max_batch_size)
                dim = Choice(fitting or (dim.values[0],))
            values[key] = dim.sample(key, suggest)
        for child, (parent, needs) in CONDITIONS.items():
            if values.get(parent) in needs:
                dim = self.dimensions.get(child, Fixed(_CHILD_DEFAULTS[child]))
                values[child] = dim.sample(child, suggest)
        return StabilityConfig(**values)

    def searched(self) -> list[str]:
        """Names of the dimensions that vary."""
        return [k for k, d in self.dimensions.items()
                if not isinstance(d, Fixed) and not (isinstance(d, Choice) and len(d.values) == 1)]

    def to_dict(self) -> dict[str, Any]:
        return {k: d.to_data() for k, d in self.dimensions.items()}

    def with_dimensions(self, **changes: Dimension) -> SearchSpace:
        """A copy with some dimensions replaced (used to focus or narrow a space)."""
        return SearchSpace({**self.dimensions, **changes}, name=self.name,
                           description=self.description)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "custom",
                  where: str | None = None) -> SearchSpace:
        where = where or f"space {name!r}"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of dimension: values, "
                              f"got {type(data).__name__}")
        dims: dict[str, Dimension] = {}
        description = ""
        for key, raw in data.items():
            if key == "description":
                description = str(raw)
                continue
            if key not in DIMENSIONS:
                raise ConfigError(f"{where}: unknown dimension {key!r}; expected one of "
                                  f"{', '.join(DIMENSIONS)}")
            dims[key] = _parse_dimension(key, raw, where)
        return cls(dims, name=name, description=description)


def _parse_dimension(key: str, raw: Any, where: str) -> Dimension:
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise ConfigError(f"{where}, key {key!r}: empty choice list; "
                              "expected at least one value")
        return Choice(tuple(raw))
    if isinstance(raw, Mapping):
        if key not in _FLOAT_BOUNDS:
            raise ConfigError(f"{where}, key {key!r}: a range is only allowed for "
                              f"{', '.join(_FLOAT_BOUNDS)}; expected a list of choices")
        extra = set(raw) - {"low", "high", "log"}
        if extra or "low" not in raw or "high" not in raw:
            raise ConfigError(f"{where}, key {key!r}: expected a range {{low: .., high: .., "
                              f"log: true|false}}, got {dict(raw)!r}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{where}, key {key!r}: log={log!r}: expected true or false")
        for bound in ("low", "high"):
            value = raw[bound]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}, key {key!r}: {bound}={value!r}: expected a number")
        return FloatRange(float(raw["low"]), float(raw["high"]), log)
    return Fixed(raw)


def _check_value(key: str, value: Any, where: str) -> None:
    at = f"{where}, key {key!r}"
    if key == "initializer":
        check_initializer(key, value, f" in {where}")
    elif key == "lr_schedule" and value not in LR_SCHEDULES:
        raise ConfigError(f"{at}: {value!r} is not a schedule; "
                          f"expected one of {', '.join(LR_SCHEDULES)}")
    elif key == "clipping" and value not in CLIPPING_MODES:
        raise ConfigError(f"{at}: {value!r} is not a clipping mode; expected one of "
                          f"{', '.join(CLIPPING_MODES)}")
    elif key == "normalization" and value not in NORMALIZATIONS:
        raise ConfigError(f"{at}: {value!r} is not a normalization; expected one of "
                          f"{', '.join(NORMALIZATIONS)}")
    elif key == "output_bias" and value not in OUTPUT_BIASES:
        raise ConfigError(f"{at}: {value!r} is not an output bias; expected one of "
                          f"{', '.join(OUTPUT_BIASES)}")
    elif key == "batch_size":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{at}: batch_size={value!r}: expected an integer >= 1")
    elif key in _FLOAT_BOUNDS:
        low, high = _FLOAT_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ConfigError(f"{at}: {value!r}: expected a number")
        if not low < value <= high or (key == "bn_momentum" and value >= 1):
            upper = "< 1" if key == "bn_momentum" else f"<= {high:g}"
            raise ConfigError(f"{at}: {key}={value!r}: expected a value > {low:g} and {upper}")


def _check_dimension(key: str, dim: Dimension, where: str) -> None:
    if key not in DIMENSIONS:
        raise ConfigError(f"{where}: unknown dimension {key!r}; "
                          f"expected one of {', '.join(DIMENSIONS)}")
    if isinstance(dim, Choice):
        if not dim.values:
            raise ConfigError(f"{where}, key {key!r}: empty choice list; "
                              "expected at least one value")
        for value in dim.values:
            _check_value(key, value, where)
    elif isinstance(dim, FloatRange):
        if key not in _FLOAT_BOUNDS:
            raise ConfigError(f"{where}, key {key!r}: a range is only allowed for "
                              f"{', '.join(_FLOAT_BOUNDS)}; expected a list of choices")
        if dim.low > dim.high:
            raise ConfigError(f"{where}, key {key!r}: low={dim.low:g} > high={dim.high:g}; "
                              "expected low <= high")
        _check_value(key, dim.low, where)
        _check_value(key, dim.high, where)
    elif isinstance(dim, Fixed):
        _check_value(key, dim.value, where)
    else:
        raise ConfigError(f"{where}, key {key!r}: expected Choice, FloatRange or Fixed, "
                          f"got {type(dim).__name__}")


def bundled_spaces() -> list[str]:
    """Names of the spaces shipped in the package (`stabilizer/space/bundled/*.yaml`)."""
    folder = resources.files("stabilizer.space.bundled")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(space: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """Resolve a space given by bundled name, YAML file path, mapping or object."""
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        return SearchSpace.from_dict(space)
    text = str(space)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"space file {text!r} not found")
        return _from_yaml_text(path.read_text(), name=path.stem, where=str(path))
    names = bundled_spaces()
    if text not in names:
        raise ConfigError(f"space={text!r}: not a bundled space or a file; expected one of "
                          f"{', '.join(names)} or a path to a .yaml file")
    resource = resources.files("stabilizer.space.bundled") / f"{text}.yaml"
    return _from_yaml_text(resource.read_text(), name=text,
                           where=f"stabilizer/space/bundled/{text}.yaml")


def _from_yaml_text(text: str, *, name: str, where: str) -> SearchSpace:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {exc}") from None
    return SearchSpace.from_dict(data or {}, name=name, where=where)

"""Bad input, fuzzed: every input loads or fails with the package's own error.

Property-based tests (hypothesis) of the config and space loaders with random and
malformed YAML, and of the data validator with random shapes, dtypes and NaN/Inf
placements. The property: the call returns the expected object or raises
`ConfigError` (of which `DataError` is a kind); any other exception, from deep
inside PyYAML, NumPy, Keras or Optuna, fails the test.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stabilizer import ConfigError, DataError, SearchConfig, SearchSpace, StabilityConfig
from stabilizer.config import RunConfig
from stabilizer.data import ProbeData, prepare_data
from stabilizer.space import DIMENSIONS, load_space

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

_SEARCH_KEYS = [f for f in SearchConfig.__dataclass_fields__]
_STABILITY_KEYS = [f for f in StabilityConfig.__dataclass_fields__]
_NAMES = ["adam", "he_normal", "auto", "keep", "quick", "default", "norm", "cosine", "none",
          "sgd", "mse", "sklearn:digits", "m:f", "models.py:build", "x.npz", "", "nan", "-1"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(_NAMES),
    st.text(alphabet=string.printable, max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(_NAMES), st.integers(-3, 3)), inner, max_size=4)),
    max_leaves=12)


def mappings(keys: list[str]) -> st.SearchStrategy[dict[Any, Any]]:
    """Mostly known keys with random values, sometimes an unknown or non-string key."""
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys), st.sampled_from(keys),
                    st.text(max_size=8), st.integers(-2, 2), st.none())
    return st.dictionaries(key, values, max_size=6)


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def malformed_yaml() -> st.SearchStrategy[str]:
    """Random text, YAML-ish fragments, unsafe tags and broken structure."""
    pieces = st.sampled_from([
        "trials: ", "space:", "  - ", "{", "}", "[", "]", ": ", "\n", "\t", "&a ", "*a ",
        "!!python/object/apply:os.system ['true']", "!!binary |", "? ", "--- ", "...",
        "'", '"', "%YAML 1.1\n", "<<: *a", "batch_size: [8, 16]", "1e999", ".nan", "~",
        "learning_rate: {low: 1, high: 0}", "search:", "model: ", "data: ", "!custom x"])
    return st.one_of(st.text(max_size=80), st.lists(pieces, max_size=12).map("".join))


def _expect_config_error(load, text: str) -> Any:
    try:
        return load(text)
    except ConfigError:
        return None


# -- config loaders ---------------------------------------------------------------------------
@FUZZ
@given(st.one_of(malformed_yaml(), mappings(_SEARCH_KEYS).map(_yaml)))
def test_search_config_yaml_loads_or_raises_config_error(text):
    loaded = _expect_config_error(SearchConfig.from_yaml, text)
    if loaded is not None:
        assert isinstance(loaded, SearchConfig)
        assert SearchConfig.from_yaml(loaded.to_yaml()) == loaded  # and round-trips


@FUZZ
@given(st.one_of(malformed_yaml(), mappings(_STABILITY_KEYS).map(_yaml)))
def test_stability_config_yaml_loads_or_raises_config_error(text):
    loaded = _expect_config_error(StabilityConfig.from_yaml, text)
    if loaded is not None:
        assert StabilityConfig.from_yaml(loaded.to_yaml()) == loaded


@FUZZ
@given(st.one_of(
    malformed_yaml(),
    st.fixed_dictionaries({"model": values, "data": values}, optional={
        "search": st.one_of(values, mappings(_SEARCH_KEYS))}).map(_yaml),
    st.fixed_dictionaries({"model": st.sampled_from(["m:f", "pkg.mod:build", "a/b.py:f"]),
                           "data": st.sampled_from(["sklearn:digits", "x.npz", "m:load"])},
                          optional={"search": mappings(_SEARCH_KEYS)}).map(_yaml)))
def test_run_config_yaml_loads_or_raises_config_error(text):
    loaded = _expect_config_error(RunConfig.from_yaml, text)
    if loaded is not None:
        assert isinstance(loaded, RunConfig) and isinstance(loaded.search, SearchConfig)


@FUZZ
@given(mappings(_SEARCH_KEYS))
def test_search_config_from_dict_loads_or_raises_config_error(data):
    try:
        SearchConfig.from_dict(data)
    except ConfigError:
        pass


# -- space loader ------------------------------------------------------------------------------
_DIMENSION_VALUES = st.one_of(
    values,
    st.lists(st.sampled_from([8, 16, 0, -4, 1.5, True, "he_normal", "auto", "cosine", "norm",
                              "none", "group", 1e-3, 0.99, 1.0, None]), max_size=5),
    st.fixed_dictionaries({"low": values, "high": values}, optional={"log": values}))


@FUZZ
@given(st.one_of(
    malformed_yaml(),
    st.dictionaries(st.one_of(st.sampled_from(list(DIMENSIONS)), st.sampled_from(
        ["description", "lr", "batch"])), _DIMENSION_VALUES, max_size=5).map(_yaml)))
def test_space_file_loads_or_raises_config_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "space.yaml"
        path.write_text(text)
        space = _expect_config_error(load_space, str(path))
    if space is not None:
        assert isinstance(space, SearchSpace)
        assert SearchSpace.from_dict(space.to_dict()).dimensions == space.dimensions


# -- data validator ----------------------------------------------------------------------------
_DTYPES = st.sampled_from(["float16", "float32", "float64", "int8", "int32", "int64", "uint8",
                           "bool", "complex64", "U3", "O"])


@st.composite
def arrays(draw: Any, rows: int | None = None) -> np.ndarray:
    dtype = np.dtype(draw(_DTYPES))
    n = rows if rows is not None else draw(st.integers(0, 12))
    tail = draw(st.lists(st.integers(0, 3), max_size=2))
    shape = (n, *tail) if draw(st.integers(0, 9)) else ()  # sometimes a scalar
    if dtype.kind in "UO":
        return np.full(shape, "a", dtype=dtype)
    array = draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(
        dtype, allow_nan=False, allow_infinity=False) if dtype.kind in "fc" else None))
    if dtype.kind == "f" and array.size and draw(st.booleans()):
        flat = array.reshape(-1)
        index = draw(st.integers(0, flat.size - 1))
        flat[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return array


@st.composite
def data_inputs(draw: Any) -> Any:
    n = draw(st.integers(0, 12))
    same = draw(st.booleans())
    x = draw(arrays(n if same else None))
    y = draw(arrays(n if same else None))
    kind = draw(st.sampled_from(["pair", "quad", "list", "odd", "other"]))
    if kind == "pair":
        return (x, y)
    if kind == "quad":
        m = draw(st.integers(0, 6))
        return (x, y, draw(arrays(m)), draw(arrays(m)))
    if kind == "list":
        return [x.tolist() if x.ndim else x, y]
    if kind == "odd":
        return tuple(draw(st.lists(st.just(x), max_size=5)))
    return draw(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.just(x)))


@FUZZ
@given(data_inputs(), st.floats(0.05, 0.9))
def test_data_validator_accepts_or_raises_data_error(data, split):
    try:
        prepared = prepare_data(data, validation_split=split, seed=0)
    except DataError:
        return
    assert isinstance(prepared, ProbeData)
    for name in ("x", "y", "x_val", "y_val"):
        value = getattr(prepared, name)
        assert np.issubdtype(value.dtype, np.number) or value.dtype == bool
        if np.issubdtype(value.dtype, np.floating):
            assert np.isfinite(value).all()
    assert prepared.x.shape[0] == prepared.y.shape[0] == prepared.train_size
    assert prepared.x_val.shape[0] == prepared.y_val.shape[0] >= 1


@pytest.mark.parametrize("where", ["x", "y", "x_val", "y_val"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_every_nan_or_inf_placement_is_named(where, bad):
    arrays = {k: np.zeros((6, 3) if k.startswith("x") else (6,), "float32")
              for k in ("x", "y", "x_val", "y_val")}
    arrays[where].reshape(-1)[4] = bad
    with pytest.raises(DataError, match=rf"^{where}: contains (NaN|Inf) values"):
        prepare_data(tuple(arrays.values()))

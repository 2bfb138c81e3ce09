"""Data is validated before the first probe, with errors naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from stabilizer import DataError
from stabilizer.data import prepare_data


def test_arrays_get_a_seeded_validation_split():
    x, y = np.random.rand(100, 3).astype("float32"), np.arange(100)
    a, b = prepare_data((x, y), seed=3), prepare_data((x, y), seed=3)
    assert a.train_size == 80 and len(a.x_val) == 20
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_explicit_validation_data_is_kept():
    x = np.ones((10, 2))
    data = prepare_data((x, np.zeros(10), x[:3], np.zeros(3)))
    assert data.train_size == 10 and len(data.x_val) == 3


@pytest.mark.parametrize("data, message", [
    ((np.ones((0, 3)), np.ones(0)), "x: empty"),
    ((np.ones((10, 3)), np.ones(9)), "x has 10 samples but y has 9"),
    ((np.array([["a", "b"]] * 5), np.ones(5)), "x: dtype <U1 is not numeric"),
    ((np.array([[1.0, np.nan]] * 5), np.ones(5)), "x: contains NaN values"),
    ((np.ones((5, 2)), np.array([1, 2, np.inf, 4, 5])), "y: contains Inf values"),
    ((np.ones((10, 2)), np.ones(10), np.ones((3, 5)), np.ones(3)), "x_val has sample shape"),
    ((np.ones((10, 2)),), "a tuple of 1 items"),
    ("data.csv", "data: got str"),
])
def test_bad_data_is_a_clear_error(data, message):
    with pytest.raises(DataError, match=message):
        prepare_data(data)


def test_stream_covers_the_probe_length_exactly():
    x, y = np.arange(20, dtype="float32")[:, None], np.arange(20)
    data = prepare_data((x, y, x[:4], y[:4]))
    inputs = data.fit_inputs(batch_size=8, steps=7, seed=0)
    assert len(inputs["x"]) == 56 and not inputs["shuffle"]
    # every sample appears in each full pass
    assert set(inputs["y"][:20].tolist()) == set(range(20))

"""Fixtures of the benchmark's own tests: quiet TensorFlow logs, a seed for every test."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: `benchmarks`


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(1234)


@pytest.fixture
def digits():
    """The zoo's digits data (scikit-learn's 8x8 digits, pixels in [0, 1])."""
    from benchmarks.zoo._data import digits as load

    return load()

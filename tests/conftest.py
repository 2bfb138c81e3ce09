"""Shared fixtures: quiet TensorFlow logs, a seed for every test, small data and settings."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

import scenarios  # noqa: E402

from stabilizer.config import SearchConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(1234)


@pytest.fixture
def digits() -> tuple[np.ndarray, np.ndarray]:
    return scenarios.digits()


@pytest.fixture
def small_digits(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = digits
    return x[:400], y[:400]


@pytest.fixture
def quick_settings(tmp_path: Path) -> SearchConfig:
    """Short probes (40 steps, 2 evaluations, 2 seeds) in a temporary folder.

    The baseline is diagnosed (the default); the chosen configuration is not
    diagnosed again (tests/e2e/test_stabilize_diagnosis.py covers that). Every
    candidate is compared at the probe's length (``horizon_fraction=0``): the ladder's
    own tests (tests/search/test_ladder.py) climb it.
    """
    return SearchConfig(probe_steps=40, evaluations=2, seeds=2, out_dir=str(tmp_path),
                        space="quick", trials=3, diagnose_after=False, study_name="stabilizer",
                        horizon_fraction=0.0)

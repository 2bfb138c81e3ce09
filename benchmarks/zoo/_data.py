"""Data for the zoo: scikit-learn's bundled sets and seeded generated sets (no download)."""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["adding_problem", "digits", "digits_autoencoder", "digits_images",
           "unscaled_regression"]


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits: 1797 samples, 64 pixels scaled to [0, 1], 10 classes."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y.astype("int32")


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The digits as 8x8x1 images."""
    x, y = digits()
    return x.reshape(-1, 8, 8, 1), y


def digits_autoencoder() -> tuple[np.ndarray, np.ndarray]:
    """The digits as their own targets (reconstruction)."""
    x, _ = digits()
    return x, x.copy()


@functools.cache
def adding_problem(samples: int = 1200, length: int = 50,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber 1997) with sequences of `length`.

    Each step carries a value uniform in [0, 1] and a marker; exactly two steps are
    marked, one in each half, and the target is the sum of their values. Predicting
    the mean scores an MSE of about 0.167.
    """
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, (samples, length))
    markers = np.zeros((samples, length))
    first = rng.integers(0, length // 2, samples)
    second = rng.integers(length // 2, length, samples)
    markers[np.arange(samples), first] = 1.0
    markers[np.arange(samples), second] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values * markers).sum(axis=1, keepdims=True).astype("float32")
    return x, y


@functools.cache
def unscaled_regression() -> tuple[np.ndarray, np.ndarray]:
    """A 20-feature regression whose targets were left in their units (about 300 +- 150).

    Standardised features, targets not scaled: the squared error and its gradients
    start in the tens of thousands.
    """
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=1500, n_features=20, n_informative=10, noise=10.0,
                           bias=300.0, random_state=0)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype("float32"), y.reshape(-1, 1).astype("float32")

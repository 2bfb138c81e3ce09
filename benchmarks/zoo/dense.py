"""Multi-layer perceptrons on the digits and on an unscaled regression."""

from __future__ import annotations

import keras

from benchmarks.zoo._data import digits, unscaled_regression
from benchmarks.zoo._scenario import Scenario

__all__ = ["SCENARIOS"]


def _classifier(hidden: list[keras.layers.Layer], optimizer: keras.optimizers.Optimizer,
                output_init: str | keras.initializers.Initializer = "glorot_uniform",
                ) -> keras.Model:
    model = keras.Sequential([keras.Input((64,)), *hidden,
                              keras.layers.Dense(10, activation="softmax",
                                                 kernel_initializer=output_init)])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def relu_mlp_high_lr() -> keras.Model:
    """Two ReLU layers trained by Adam at learning rate 1.0, no clipping."""
    return _classifier([keras.layers.Dense(64, activation="relu"),
                        keras.layers.Dense(64, activation="relu")],
                       keras.optimizers.Adam(1.0))


def deep_tanh_tiny_init() -> keras.Model:
    """Eight tanh layers drawn from normal(stddev=0.01): the signal and gradients vanish."""
    init = keras.initializers.RandomNormal(stddev=0.01)
    return _classifier([keras.layers.Dense(32, activation="tanh", kernel_initializer=init)
                        for _ in range(8)],
                       keras.optimizers.SGD(0.05, momentum=0.9), output_init=init)


def dying_relu_large_lr() -> keras.Model:
    """A ReLU MLP whose first large SGD steps push most units below zero for good."""
    return _classifier([keras.layers.Dense(128, activation="relu", bias_initializer=
                                           keras.initializers.Constant(-0.5)),
                        keras.layers.Dense(128, activation="relu", bias_initializer=
                                           keras.initializers.Constant(-0.5))],
                       keras.optimizers.SGD(0.8))


def sgd_momentum_oscillation() -> keras.Model:
    """SGD with momentum 0.99 at learning rate 0.3: the loss swings instead of settling."""
    return _classifier([keras.layers.Dense(64, activation="tanh")],
                       keras.optimizers.SGD(0.3, momentum=0.99))


def batchnorm_mlp() -> keras.Model:
    """Dense + BatchNormalization + ReLU blocks with Adam 1e-2, trained at batch size 2."""
    return _classifier([keras.layers.Dense(32), keras.layers.BatchNormalization(),
                        keras.layers.Activation("relu"),
                        keras.layers.Dense(32), keras.layers.BatchNormalization(),
                        keras.layers.Activation("relu")],
                       keras.optimizers.Adam(1e-2))


def large_stddev_init() -> keras.Model:
    """Three ReLU layers drawn from normal(stddev=1.0) (He would be about 0.18), SGD 0.1."""
    init = keras.initializers.RandomNormal(stddev=1.0)
    return _classifier([keras.layers.Dense(64, activation="relu", kernel_initializer=init)
                        for _ in range(3)],
                       keras.optimizers.SGD(0.1), output_init=init)


def unscaled_targets_mlp() -> keras.Model:
    """A ReLU MLP regressing targets of about 300 +- 150 with SGD at 0.01 on MSE."""
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def healthy_mlp() -> keras.Model:
    """A small He-initialised ReLU MLP with Adam at 1e-3: nothing to repair."""
    return _classifier([keras.layers.Dense(64, activation="relu",
                                           kernel_initializer="he_normal")],
                       keras.optimizers.Adam(1e-3))


SCENARIOS = [
    Scenario("exploding_relu_mlp_high_lr", "exploding gradients",
             "ReLU MLP on digits, Adam at learning rate 1.0 without clipping",
             relu_mlp_high_lr, digits),
    Scenario("vanishing_deep_tanh_tiny_init", "vanishing gradients",
             "8-layer tanh MLP with normal(0.01) kernels (mismatched initializer), SGD+momentum",
             deep_tanh_tiny_init, digits),
    Scenario("dying_relu_large_lr", "dying ReLU",
             "ReLU MLP with bias -0.5 and SGD at 0.8: large first steps kill the units",
             dying_relu_large_lr, digits),
    Scenario("oscillating_sgd_momentum", "oscillating loss",
             "tanh MLP, SGD at learning rate 0.3 with momentum 0.99",
             sgd_momentum_oscillation, digits),
    Scenario("batchnorm_batch_size_2", "BatchNorm at a tiny batch",
             "Dense+BatchNorm+ReLU MLP with Adam 1e-2 trained at batch size 2",
             batchnorm_mlp, digits, batch_size=2, space="small_batch"),
    Scenario("large_stddev_normal_init", "large initializer",
             "3-layer ReLU MLP with normal(stddev=1.0) kernels, SGD 0.1",
             large_stddev_init, digits),
    Scenario("unscaled_regression_targets", "unscaled targets",
             "ReLU MLP regression on targets of about 300 +- 150 (not standardised), "
             "SGD 0.01 on MSE", unscaled_targets_mlp, unscaled_regression),
    Scenario("healthy_mlp_control", "none (control)",
             "He-initialised ReLU MLP on digits with Adam 1e-3: must stay healthy",
             healthy_mlp, digits, healthy=True),
]

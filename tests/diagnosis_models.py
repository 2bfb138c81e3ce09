"""Purpose-built models for the diagnosis tests: three healthy ones and one per finding.

Every factory returns a compiled Keras model for scikit-learn's bundled digits
(`scenarios.digits()`: 64 features in [0, 1], 10 classes); `digits_images()` gives
the same data as 8x8x1 images for the CNN, and `digits_with_outliers()` a copy
with a few corrupted training samples.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import scenarios

_LOSS = "sparse_categorical_crossentropy"


@functools.cache
def digits_images() -> tuple[np.ndarray, np.ndarray]:
    x, y = scenarios.digits()
    return x.reshape(-1, 8, 8, 1), y


def digits_with_outliers(count: int = 8, scale: float = 100.0) -> tuple[np.ndarray, ...]:
    """Digits as (x, y, x_val, y_val) with `count` training samples multiplied by `scale`
    (unnormalised records, a common cause of loss and gradient spikes)."""
    x, y = scenarios.digits()
    x_train, y_train, x_val, y_val = x[:1400].copy(), y[:1400], x[1400:], y[1400:]
    rows = np.random.default_rng(0).choice(len(x_train), count, replace=False)
    x_train[rows] *= scale
    return x_train, y_train, x_val, y_val


def _compile(model: keras.Model,
             optimizer: keras.optimizers.Optimizer | None = None) -> keras.Model:
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), loss=_LOSS,
                  metrics=["accuracy"])
    return model


def _mlp(units: list[int], activation: str, init: object = "glorot_uniform",
         optimizer: keras.optimizers.Optimizer | None = None, **dense: object) -> keras.Model:
    layers: list[keras.layers.Layer] = [keras.Input((64,))]
    layers += [keras.layers.Dense(u, activation=activation, kernel_initializer=init, **dense)
               for u in units]
    layers.append(keras.layers.Dense(10, activation="softmax"))
    return _compile(keras.Sequential(layers), optimizer)


# -- healthy ------------------------------------------------------------------------


def healthy_mlp() -> keras.Model:
    """A small ReLU MLP with He initialisation, Adam 1e-3."""
    return _mlp([32], "relu", "he_normal")


def deep_tanh_mlp() -> keras.Model:
    """Eight tanh layers with Glorot initialisation, Adam 1e-3 (AutoTrainer's false alarm)."""
    return _mlp([32] * 8, "tanh", "glorot_uniform")


def small_cnn() -> keras.Model:
    """Two He-initialised ReLU convolutions on 8x8 digits, Adam 1e-3."""
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    return _compile(model)


# -- one per finding --------------------------------------------------------------


def vanishing_deep_sigmoid() -> keras.Model:
    """Ten sigmoid layers with RandomNormal(stddev=0.05) weights, SGD: the first layers'
    gradients vanish (and the initializer is far too small for the fan-in)."""
    return _mlp([32] * 10, "sigmoid", keras.initializers.RandomNormal(stddev=0.05),
                keras.optimizers.SGD(0.01))


def tiny_init_tanh_mlp() -> keras.Model:
    """Eight tanh layers drawn from normal(stddev=0.01), SGD with momentum: the signal
    vanishes, so under this initializer the loss falls at no learning rate."""
    return _mlp([32] * 8, "tanh", keras.initializers.RandomNormal(stddev=0.01),
                keras.optimizers.SGD(0.05, momentum=0.9))


def dead_relu_mlp() -> keras.Model:
    """ReLU layers whose biases start at -3: almost every unit is silent from the start."""
    return _mlp([64, 64], "relu", "he_normal", bias_initializer=keras.initializers.Constant(-3.0))


def saturated_tanh_mlp() -> keras.Model:
    """Tanh layers with RandomNormal(stddev=2): pre-activations far beyond +-5."""
    return _mlp([32, 32, 32], "tanh", keras.initializers.RandomNormal(stddev=2.0))


def oscillating_mlp() -> keras.Model:
    """A He-initialised ReLU MLP trained by plain SGD at learning rate 1.5: the loss
    bounces far more than batch sampling explains and does not go down."""
    return _mlp([64], "relu", "he_normal", keras.optimizers.SGD(1.5))


def logits_mlp() -> keras.Model:
    """A He-initialised ReLU MLP with a linear output and cross-entropy from logits (the
    loss is not capped, so an outlier sample shows as a loss spike); Adam 1e-3."""
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def relu_lr_one_logits() -> keras.Model:
    """`scenarios.relu_lr_one` (a ReLU MLP, Adam at 1.0) with a linear output and the
    cross-entropy from logits. TensorFlow takes a softmax's logits by itself; JAX and
    PyTorch compute the loss on the clipped probabilities, whose gradient vanishes at
    the clip, so only from logits does the gradient growth show on every backend."""
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def stalled_mlp() -> keras.Model:
    """SGD at learning rate 1e-5: nothing moves within a probe."""
    return _mlp([32], "relu", "he_normal", keras.optimizers.SGD(1e-5))


def heavy_momentum_mlp() -> keras.Model:
    """SGD at 0.5 with momentum 0.95: long overshooting swings whose phase depends on
    the seed, so the seeds end far apart."""
    return _mlp([64], "relu", "he_normal", keras.optimizers.SGD(0.5, momentum=0.95))


def momentum_runaway_mlp() -> keras.Model:
    """A tanh MLP under SGD at 0.3 with momentum 0.98: the loss falls for a few dozen
    steps, then the slowly growing swings carry it back up (3-4x its best, on both of two
    seeds at 120 steps), well short of the 10x that counts as diverged. At momentum 0.99
    one seed passed 10x on one machine and not on another: the swings are chaotic."""
    return _mlp([64], "tanh", "glorot_uniform", keras.optimizers.SGD(0.3, momentum=0.98))


def batchnorm_mlp(momentum: float = 0.99, learning_rate: float = 1e-3) -> keras.Model:
    """A He-initialised ReLU MLP with BatchNormalization of the given momentum."""
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, kernel_initializer="he_normal"),
        keras.layers.BatchNormalization(momentum=momentum),
        keras.layers.Activation("relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    return _compile(model, keras.optimizers.Adam(learning_rate))


def batchnorm_fast_mlp() -> keras.Model:
    """BatchNormalization with momentum 0.9 (settles within a probe), Adam 1e-2."""
    return batchnorm_mlp(0.9, 1e-2)


def batchnorm_slow_mlp() -> keras.Model:
    """BatchNormalization with momentum 0.999: the moving averages cannot settle in a probe."""
    return batchnorm_mlp(0.999)


def relu_glorot_deep() -> keras.Model:
    """Twelve ReLU layers with Keras' default Glorot uniform (variance halves per layer)."""
    return _mlp([32] * 12, "relu", "glorot_uniform")


def selu_he() -> keras.Model:
    """SELU layers with He normal instead of LeCun normal."""
    return _mlp([32, 32], "selu", "he_normal")


def tanh_he() -> keras.Model:
    """Tanh layers with He normal."""
    return _mlp([32, 32], "tanh", "he_normal")


class SubclassedMLP(keras.Model):
    """A subclassed model: its intermediate outputs cannot be read from outside."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(32, activation="relu", kernel_initializer="he_normal")
        self.head = keras.layers.Dense(10, activation="softmax")

    def call(self, x: object) -> object:
        return self.head(self.hidden(x))


def subclassed_mlp() -> keras.Model:
    """The healthy MLP as a subclassed model (built on first call)."""
    return _compile(SubclassedMLP())

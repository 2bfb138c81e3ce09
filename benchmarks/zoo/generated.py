"""Generated scenarios: families of unstable training, each scenario drawn from a seed.

A family is one cause the product addresses; `generate(name)` draws one scenario of it
from its seed: depth, width, activation, initializer scale, optimizer, learning rate,
batch size, data set (scikit-learn's bundled sets and seeded generated data) and the
user's training length, which the product is told as a user would tell it and for which
the judge trains. Names read ``gen-<family>-<seed>``; the same name always gives the same
scenario (`params` lists what was drawn). The hand-written zoo stays beside these as
named regression cases.

Families (`FAMILIES`): exploding gradients in MLPs and RNNs; vanishing gradients (deep
sigmoid or tanh stacks on tiny initializers); dying ReLU; oscillation (SGD with
momentum, RMSprop or Adam at high rates); BatchNormalization at batch sizes 1-4;
large-stddev initializers; unscaled targets; unscaled inputs; CNNs and autoencoders at
high rates; mixtures of two causes; and healthy controls (`HEALTHY`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from benchmarks.zoo._data import adding_problem, digits, digits_autoencoder, digits_images
from benchmarks.zoo._scenario import Scenario

__all__ = ["FAMILIES", "HEALTHY", "LENGTHS", "generate", "is_generated", "scenario_names"]

#: The user's training lengths drawn from (optimizer steps), and how often.
LENGTHS = ((300, 0.2), (600, 0.3), (1200, 0.25), (2400, 0.15), (4800, 0.1))
PREFIX = "gen-"


# -- data ------------------------------------------------------------------------------------
@functools.cache
def _blobs(seed: int, classes: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=1500, n_features=20, n_informative=10,
                               n_classes=classes, n_clusters_per_class=1, class_sep=1.0,
                               random_state=seed)
    x = (x - x.mean(axis=0)) / x.std(axis=0) * scale
    return x.astype("float32"), y.astype("int32")


@functools.cache
def _breast_cancer(scaled: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    if scaled:
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype("float32"), y.astype("int32")


@functools.cache
def _wine() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32"), y.astype("int32")


@functools.cache
def _regression(seed: int, bias: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=1500, n_features=16, n_informative=8, noise=10.0,
                           bias=bias, random_state=seed)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype("float32"), (y * scale).reshape(-1, 1).astype("float32")


@functools.cache
def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)  # targets 25-346, left in their units
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32"), \
        y.reshape(-1, 1).astype("float32")


def _classification(rng: np.random.Generator, seed: int) -> tuple[str, Callable[[], Any], int]:
    """(name, loader, classes) of a classification set drawn by `rng`."""
    choice = rng.choice(["digits", "blobs", "breast_cancer", "wine"], p=[0.4, 0.3, 0.15, 0.15])
    if choice == "digits":
        return "digits", digits, 10
    if choice == "breast_cancer":
        return "breast_cancer", functools.partial(_breast_cancer, True), 2
    if choice == "wine":
        return "wine", _wine, 3
    classes = int(rng.integers(2, 6))
    return f"blobs(seed={seed}, classes={classes})", functools.partial(_blobs, seed, classes), \
        classes


# -- models ------------------------------------------------------------------------------------
def _optimizer(kind: str, lr: float, momentum: float = 0.9) -> keras.optimizers.Optimizer:
    if kind == "sgd":
        return keras.optimizers.SGD(lr)
    if kind == "momentum":
        return keras.optimizers.SGD(lr, momentum=momentum)
    if kind == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    return keras.optimizers.Adam(lr)


def _mlp(inputs: int, outputs: int, depth: int, width: int, activation: str,
         init: Any = "glorot_uniform", bias: Any = "zeros", bn: bool = False,
         out_activation: str | None = "softmax") -> Callable[[], list[keras.layers.Layer]]:
    def layers() -> list[keras.layers.Layer]:
        stack: list[keras.layers.Layer] = [keras.Input((inputs,))]
        for _ in range(depth):
            stack.append(keras.layers.Dense(width, activation=None if bn else activation,
                                            kernel_initializer=keras.initializers.get(init)
                                            if isinstance(init, str) else init.__class__.
                                            from_config(init.get_config()),
                                            bias_initializer=bias))
            if bn:
                stack += [keras.layers.BatchNormalization(), keras.layers.Activation(activation)]
        stack.append(keras.layers.Dense(outputs, activation=out_activation))
        return stack
    return layers


def _compiled(layers: Callable[[], list[keras.layers.Layer]], optimizer: Callable[[], Any],
              loss: str) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        model = keras.Sequential(layers())
        model.compile(optimizer=optimizer(), loss=loss)
        return model
    return build


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _classifier_family(rng: np.random.Generator, seed: int, *, depth: tuple[int, int],
                       width: tuple[int, ...], activations: tuple[str, ...], init: Any,
                       optimizer: tuple[str, float, float], bias: Any = "zeros",
                       bn: bool = False, batch: tuple[int, ...] = (32,),
                       dataset: tuple[str, Callable[[], Any], int] | None = None,
                       ) -> dict[str, Any]:
    name, load, classes = dataset or _classification(rng, seed)
    d = int(rng.integers(depth[0], depth[1] + 1))
    w = int(rng.choice(width))
    act = str(rng.choice(activations))
    kind, low, high = optimizer
    lr = _log_uniform(rng, low, high)
    inputs = int(load()[0].shape[1])
    return {"params": {"data": name, "depth": d, "width": w, "activation": act,
                       "init": init if isinstance(init, str) else
                       f"{type(init).__name__}{init.get_config()}", "optimizer": kind,
                       "learning_rate": round(lr, 6), "batch_size": int(rng.choice(batch))},
            "build_fn": _compiled(_mlp(inputs, classes, d, w, act, init, bias, bn),
                                  lambda: _optimizer(kind, lr),
                                  "sparse_categorical_crossentropy"),
            "load_data": load}


def _exploding_mlp(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    kind = str(rng.choice(["adam", "sgd"]))
    lr = (0.3, 3.0) if kind == "adam" else (1.0, 5.0)
    return _classifier_family(rng, seed, depth=(2, 5), width=(64, 128), activations=("relu",),
                              init="he_normal", optimizer=(kind, *lr))


def _vanishing(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    std = _log_uniform(rng, 0.005, 0.03)
    kind = str(rng.choice(["momentum", "sgd", "adam"]))
    lr = {"momentum": (0.01, 0.05), "sgd": (0.02, 0.1), "adam": (1e-4, 5e-4)}[kind]
    return _classifier_family(rng, seed, depth=(6, 10), width=(32, 64),
                              activations=("tanh", "sigmoid"),
                              init=keras.initializers.RandomNormal(stddev=round(std, 4)),
                              optimizer=(kind, *lr))


def _dying_relu(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    bias = float(rng.uniform(-1.5, -0.5))
    return _classifier_family(rng, seed, depth=(2, 4), width=(64, 128), activations=("relu",),
                              init="he_normal", bias=keras.initializers.Constant(round(bias, 3)),
                              optimizer=("sgd", 0.5, 1.5))


def _oscillation(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    kind = str(rng.choice(["momentum", "rmsprop", "adam"]))
    lr = {"momentum": (0.2, 0.6), "rmsprop": (0.02, 0.1), "adam": (0.03, 0.1)}[kind]
    out = _classifier_family(rng, seed, depth=(1, 3), width=(32, 64),
                             activations=("tanh", "relu"), init="glorot_uniform",
                             optimizer=(kind, *lr))
    if kind == "momentum":  # momentum 0.99 keeps the swings going
        params = out["params"]
        inputs = int(out["load_data"]()[0].shape[1])
        classes = int(out["load_data"]()[1].max()) + 1
        lr_ = params["learning_rate"]
        out["build_fn"] = _compiled(_mlp(inputs, classes, params["depth"], params["width"],
                                         params["activation"]),
                                    lambda: _optimizer("momentum", lr_, 0.99),
                                    "sparse_categorical_crossentropy")
        params["momentum"] = 0.99
    return out


def _batchnorm_small_batch(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    return _classifier_family(rng, seed, depth=(2, 3), width=(32, 64), activations=("relu",),
                              init="he_normal", bn=True, optimizer=("adam", 1e-3, 1e-2),
                              batch=(1, 2, 4))


def _large_init(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    std = float(rng.uniform(1.0, 4.0))
    return _classifier_family(rng, seed, depth=(3, 6), width=(32, 64),
                              activations=("relu", "tanh", "sigmoid"),
                              init=keras.initializers.RandomNormal(stddev=round(std, 2)),
                              optimizer=("adam", 3e-4, 3e-3))


def _unscaled_targets(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    if rng.random() < 0.3:
        name, load = "diabetes (targets 25-346)", _diabetes
    else:
        bias, scale = float(rng.uniform(100, 1000)), float(rng.choice([1.0, 10.0]))
        name = f"regression(seed={seed}, bias={bias:.0f}, scale={scale:g})"
        load = functools.partial(_regression, seed, round(bias), scale)
    d, w = int(rng.integers(1, 4)), int(rng.choice([32, 64]))
    kind = str(rng.choice(["adam", "sgd"]))
    lr = _log_uniform(rng, *((1e-3, 1e-2) if kind == "adam" else (1e-4, 1e-3)))
    return {"params": {"data": name, "depth": d, "width": w, "activation": "relu",
                       "optimizer": kind, "learning_rate": round(lr, 6), "batch_size": 32},
            "build_fn": _compiled(_mlp(int(load()[0].shape[1]), 1, d, w, "relu",
                                       out_activation=None),
                                  lambda: _optimizer(kind, lr), "mse"),
            "load_data": load}


def _unscaled_inputs(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    if rng.random() < 0.5:
        dataset = ("breast_cancer (raw features, up to ~4000)",
                   functools.partial(_breast_cancer, False), 2)
    else:
        scale = float(rng.choice([100.0, 1000.0]))
        classes = int(rng.integers(2, 5))
        dataset = (f"blobs(seed={seed}, classes={classes}) x {scale:g}",
                   functools.partial(_blobs, seed, classes, scale), classes)
    return _classifier_family(rng, seed, depth=(1, 3), width=(32, 64),
                              activations=("relu", "tanh"), init="glorot_uniform",
                              optimizer=("adam", 3e-3, 3e-2), dataset=dataset)


def _cnn_high_lr(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    filters, kind = int(rng.choice([8, 16])), str(rng.choice(["adam", "sgd"]))
    lr = _log_uniform(rng, *((0.05, 0.5) if kind == "adam" else (0.5, 3.0)))

    def layers() -> list[keras.layers.Layer]:
        return [keras.Input((8, 8, 1)),
                keras.layers.Conv2D(filters, 3, activation="relu", padding="same"),
                keras.layers.Conv2D(filters, 3, activation="relu"), keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax")]
    return {"params": {"data": "digits 8x8x1", "filters": filters, "optimizer": kind,
                       "learning_rate": round(lr, 6), "batch_size": 32},
            "build_fn": _compiled(layers, lambda: _optimizer(kind, lr),
                                  "sparse_categorical_crossentropy"),
            "load_data": digits_images}


def _autoencoder_high_lr(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    code, kind = int(rng.choice([8, 16])), str(rng.choice(["adam", "rmsprop"]))
    lr = _log_uniform(rng, 0.05, 0.5)

    def layers() -> list[keras.layers.Layer]:
        return [keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(code, activation="relu"),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(64, activation="sigmoid")]
    return {"params": {"data": "digits (reconstruction)", "code": code, "optimizer": kind,
                       "learning_rate": round(lr, 6), "batch_size": 32},
            "build_fn": _compiled(layers, lambda: _optimizer(kind, lr), "mse"),
            "load_data": digits_autoencoder}


def _exploding_rnn(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    length, units = int(rng.choice([30, 50])), int(rng.choice([16, 32]))
    gain, lr = float(rng.uniform(1.5, 3.0)), _log_uniform(rng, 0.05, 0.3)

    def layers() -> list[keras.layers.Layer]:
        return [keras.Input((length, 2)),
                keras.layers.SimpleRNN(units, activation="relu",
                                       recurrent_initializer=keras.initializers.Orthogonal(
                                           gain=gain)),
                keras.layers.Dense(1)]
    return {"params": {"data": f"adding problem (length {length})", "units": units,
                       "recurrent_gain": round(gain, 3), "optimizer": "sgd",
                       "learning_rate": round(lr, 6), "batch_size": 32},
            "build_fn": _compiled(layers, lambda: _optimizer("sgd", lr), "mse"),
            "load_data": functools.partial(adding_problem, 1200, length, seed)}


def _mixture(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    """Two causes at once: a large initializer with a high rate, or unscaled inputs with
    SGD momentum."""
    if rng.random() < 0.5:
        std = float(rng.uniform(1.0, 3.0))
        return _classifier_family(rng, seed, depth=(3, 5), width=(64,), activations=("relu",),
                                  init=keras.initializers.RandomNormal(stddev=round(std, 2)),
                                  optimizer=("adam", 0.05, 0.3))
    scale = float(rng.choice([100.0, 1000.0]))
    return _classifier_family(rng, seed, depth=(1, 2), width=(32, 64), activations=("tanh",),
                              init="glorot_uniform", optimizer=("momentum", 0.05, 0.2),
                              dataset=(f"blobs(seed={seed}, classes=3) x {scale:g}",
                                       functools.partial(_blobs, seed, 3, scale), 3))


def _healthy(rng: np.random.Generator, seed: int) -> dict[str, Any]:
    return _classifier_family(rng, seed, depth=(1, 3), width=(32, 64), activations=("relu",),
                              init="he_normal", optimizer=("adam", 5e-4, 2e-3))


#: family -> (cause, the space a user would pick, draw(rng, seed) -> the scenario's parts)
FAMILIES: dict[str, tuple[str, str, Callable[[np.random.Generator, int], dict[str, Any]]]] = {
    "exploding_mlp": ("exploding gradients", "default", _exploding_mlp),
    "exploding_rnn": ("exploding gradients", "recurrent", _exploding_rnn),
    "vanishing": ("vanishing gradients", "default", _vanishing),
    "dying_relu": ("dying ReLU", "default", _dying_relu),
    "oscillation": ("oscillation", "default", _oscillation),
    "batchnorm_small_batch": ("BatchNorm at tiny batches", "small_batch",
                              _batchnorm_small_batch),
    "large_init": ("large initializer", "default", _large_init),
    "unscaled_targets": ("unscaled targets", "default", _unscaled_targets),
    "unscaled_inputs": ("unscaled inputs", "default", _unscaled_inputs),
    "cnn_high_lr": ("high learning rate (CNN)", "convolutional", _cnn_high_lr),
    "autoencoder_high_lr": ("high learning rate (autoencoder)", "default",
                            _autoencoder_high_lr),
    "mixture": ("two causes at once", "default", _mixture),
}
#: The healthy controls' family.
HEALTHY = ("healthy", "default", _healthy)


def is_generated(name: str) -> bool:
    return name.startswith(PREFIX)


def scenario_names(families: list[str] | None = None, seeds: range = range(3),
                   healthy: int = 6) -> list[str]:
    """``gen-<family>-<seed>`` for each family and seed, then `healthy` controls."""
    names = [f"{PREFIX}{f}-{s}" for s in seeds for f in (families or list(FAMILIES))]
    return names + [f"{PREFIX}healthy-{s}" for s in range(healthy)]


@functools.cache
def generate(name: str) -> Scenario:
    """The scenario named ``gen-<family>-<seed>`` (the same every time)."""
    body = name[len(PREFIX):] if is_generated(name) else ""
    family, _, seed_text = body.rpartition("-")
    if family == "healthy":
        cause, space, draw = HEALTHY
    elif family in FAMILIES:
        cause, space, draw = FAMILIES[family]
    else:
        raise KeyError(f"no generated scenario {name!r}; expected gen-<family>-<seed> with "
                       f"family one of {', '.join([*FAMILIES, 'healthy'])}")
    if not seed_text.isdigit():
        raise KeyError(f"no generated scenario {name!r}: the seed must be a whole number")
    seed = int(seed_text)
    salt = sum(map(ord, family))
    rng = np.random.default_rng([seed, salt])
    drawn = draw(rng, seed)
    lengths, weights = zip(*LENGTHS)
    train_steps = int(rng.choice(lengths, p=weights))
    params = {**drawn["params"], "train_steps": train_steps}
    batch = int(params.get("batch_size", 32))
    if space == "small_batch" or batch < 8:
        space = "small_batch"
    return Scenario(name=name, cause=cause, problem=", ".join(f"{k}={v}" for k, v in
                                                                 params.items()),
                    build_fn=drawn["build_fn"], load_data=drawn["load_data"], batch_size=batch,
                    space=space, healthy=family == "healthy", train_steps=train_steps,
                    params=params)

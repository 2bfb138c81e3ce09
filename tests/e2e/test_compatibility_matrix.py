"""The models people use: `stabilize()` (budget 1, a few steps, the diagnosis included) and
`diagnose()` on every common combination of loss, label shape, layer and model kind.

Every cell completes, or fails before the first probe with an error of the package's own
that says what is not supported. A failure inside a probe (`ProbeFailedError`, a failed
baseline) is a bug in the product, never an expected outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from stabilizer import DataError, diagnose, stabilize

N, FEATURES, CLASSES = 96, 8, 3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, FEATURES)).astype("float32")
CLASS = (X[:, 0] > 0).astype("int64") + (X[:, 1] > 0.5).astype("int64")  # 3 classes
BINARY = (X[:, 0] > 0).astype("float32")
TARGET = (X[:, :3].sum(axis=1) * 2.0 + 1.0).astype("float32")
SEQ = RNG.normal(size=(N, 6, 3)).astype("float32")
IMAGES = RNG.normal(size=(N, 6, 6, 1)).astype("float32")
TOKENS = RNG.integers(0, 20, size=(N, 5))
SETTINGS = dict(budget=1, probe_steps=6, evaluations=1, seeds=1, batch_size=16, space="quick",
                diagnose_after=False, horizon_fraction=0.0)


def _mlp(head: keras.layers.Layer, loss: Any, *body: keras.layers.Layer,
         inputs: tuple[int, ...] = (FEATURES,)) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        layers = [keras.Input(inputs), *[keras.layers.deserialize(keras.layers.serialize(b))
                                         for b in body], keras.layers.deserialize(
                                             keras.layers.serialize(head))]
        model = keras.Sequential(layers)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
        return model
    return build


def _dense(units: int, activation: str | None = None) -> keras.layers.Layer:
    return keras.layers.Dense(units, activation=activation)


HIDDEN = (keras.layers.Dense(16, activation="relu"),)


def _functional() -> keras.Model:
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class SubclassedNet(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.norm = keras.layers.BatchNormalization()
        self.out = keras.layers.Dense(CLASSES, activation="softmax")

    def call(self, x: Any, training: bool = False) -> Any:
        return self.out(self.norm(self.hidden(x), training=training))


def _subclassed() -> keras.Model:
    model = SubclassedNet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _two_inputs() -> keras.Model:
    a, b = keras.Input((FEATURES,), name="a"), keras.Input((3,), name="b")
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], keras.layers.Dense(1)(hidden))
    model.compile(optimizer="adam", loss="mse")
    return model


def _two_outputs() -> keras.Model:
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(1, name="reg")(hidden),
                                 keras.layers.Dense(CLASSES, activation="softmax",
                                                    name="cls")(hidden)])
    model.compile(optimizer="adam", loss=["mse", "sparse_categorical_crossentropy"])
    return model


class _Batches(keras.utils.PyDataset):
    def __init__(self, x: Any, y: Any, batch: int = 16) -> None:
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self) -> int:
        return N // self.batch

    def __getitem__(self, i: int) -> Any:
        part = slice(i * self.batch, (i + 1) * self.batch)
        # several inputs or outputs as tuples (Keras' PyDataset adapter takes no lists)
        def pick(value: Any) -> Any:
            return tuple(a[part] for a in value) if isinstance(value, list) else value[part]

        return pick(self.x), pick(self.y)


ONE_HOT = np.eye(CLASSES, dtype="float32")[CLASS]
BN_BINARY = _mlp(_dense(1, "sigmoid"), "binary_crossentropy", keras.layers.Dense(16),
                 keras.layers.BatchNormalization(), keras.layers.ReLU())

#: name -> (build_fn, data, expected: "ok" or the start of the error message)
CELLS: dict[str, tuple[Callable[[], keras.Model], Any, str]] = {
    # losses x label shapes
    "binary, labels (n,)": (_mlp(_dense(1, "sigmoid"), "binary_crossentropy", *HIDDEN),
                            (X, BINARY), "ok"),
    "binary, labels (n, 1)": (_mlp(_dense(1, "sigmoid"), "binary_crossentropy", *HIDDEN),
                              (X, BINARY[:, None]), "ok"),
    "binary from logits": (_mlp(_dense(1), keras.losses.BinaryCrossentropy(from_logits=True),
                                *HIDDEN), (X, BINARY), "ok"),
    "categorical, one-hot": (_mlp(_dense(CLASSES, "softmax"), "categorical_crossentropy",
                                  *HIDDEN), (X, ONE_HOT), "ok"),
    "categorical from logits": (_mlp(_dense(CLASSES), keras.losses.CategoricalCrossentropy(
        from_logits=True), *HIDDEN), (X, ONE_HOT), "ok"),
    "categorical given class indices": (_mlp(_dense(CLASSES, "softmax"),
                                             "categorical_crossentropy", *HIDDEN), (X, CLASS),
                                        "y: labels of sample shape ()"),
    "sparse, labels (n,)": (_mlp(_dense(CLASSES, "softmax"), "sparse_categorical_crossentropy",
                                 *HIDDEN), (X, CLASS), "ok"),
    "sparse, labels (n, 1)": (_mlp(_dense(CLASSES, "softmax"),
                                   "sparse_categorical_crossentropy", *HIDDEN),
                              (X, CLASS[:, None]), "ok"),
    "sparse from logits": (_mlp(_dense(CLASSES), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), *HIDDEN), (X, CLASS), "ok"),
    "mse, targets (n,)": (_mlp(_dense(1), "mse", *HIDDEN), (X, TARGET), "ok"),
    "mse, targets (n, 1)": (_mlp(_dense(1), "mse", *HIDDEN), (X, TARGET[:, None]), "ok"),
    "mae": (_mlp(_dense(1), "mae", *HIDDEN), (X, TARGET), "ok"),
    "huber object": (_mlp(_dense(1), keras.losses.Huber(), *HIDDEN), (X, TARGET[:, None]), "ok"),
    # layers
    "BatchNormalization binary classifier": (BN_BINARY, (X, BINARY), "ok"),
    "BatchNormalization binary, batch 4": (BN_BINARY, (X, BINARY), "ok"),
    "BatchNormalization multi-class": (_mlp(_dense(CLASSES, "softmax"),
                                            "sparse_categorical_crossentropy",
                                            keras.layers.Dense(16),
                                            keras.layers.BatchNormalization(),
                                            keras.layers.Activation("relu")), (X, CLASS), "ok"),
    "Dropout": (_mlp(_dense(1, "sigmoid"), "binary_crossentropy", *HIDDEN,
                     keras.layers.Dropout(0.3)), (X, BINARY), "ok"),
    "LayerNormalization": (_mlp(_dense(1), "mse", keras.layers.Dense(16),
                                keras.layers.LayerNormalization(),
                                keras.layers.Activation("relu")), (X, TARGET), "ok"),
    "Conv1D": (_mlp(_dense(1), "mse", keras.layers.Conv1D(4, 3, activation="relu"),
                    keras.layers.GlobalAveragePooling1D(), inputs=(6, 3)),
               (SEQ, TARGET), "ok"),
    "Conv2D": (_mlp(_dense(CLASSES, "softmax"), "sparse_categorical_crossentropy",
                    keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                    inputs=(6, 6, 1)), (IMAGES, CLASS), "ok"),
    "SimpleRNN": (_mlp(_dense(1), "mse", keras.layers.SimpleRNN(8), inputs=(6, 3)),
                  (SEQ, TARGET), "ok"),
    "LSTM": (_mlp(_dense(1, "sigmoid"), "binary_crossentropy", keras.layers.LSTM(8),
                  inputs=(6, 3)), (SEQ, BINARY), "ok"),
    "GRU": (_mlp(_dense(CLASSES, "softmax"), "sparse_categorical_crossentropy",
                 keras.layers.GRU(8), inputs=(6, 3)), (SEQ, CLASS), "ok"),
    "Embedding": (_mlp(_dense(1, "sigmoid"), "binary_crossentropy",
                       keras.layers.Embedding(20, 4), keras.layers.GlobalAveragePooling1D(),
                       inputs=(5,)), (TOKENS, BINARY), "ok"),
    # model kinds
    "Functional": (_functional, (X, CLASS), "ok"),
    "Subclassed with BatchNormalization": (_subclassed, (X, CLASS), "ok"),
    "two inputs, arrays": (_two_inputs, ([X, X[:, :3]], TARGET),
                           "x: models with several inputs or outputs"),
    "two inputs, PyDataset": (_two_inputs, (_Batches([X, X[:, :3]], TARGET),
                                            _Batches([X, X[:, :3]], TARGET)), "ok"),
    "two outputs, arrays": (_two_outputs, (X, TARGET),
                            "y: one array of labels, but the model has 2 outputs"),
    "two outputs, PyDataset": (_two_outputs, (_Batches(X, [TARGET, CLASS]),
                                              _Batches(X, [TARGET, CLASS])), "ok"),
}


def _settings(name: str) -> dict[str, Any]:
    return {**SETTINGS, "batch_size": 4} if "batch 4" in name else SETTINGS


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CELLS))
def test_every_common_model_is_stabilized_or_refused_before_the_first_probe(name, tmp_path):
    build, data, expected = CELLS[name]
    if expected != "ok":
        with pytest.raises(DataError) as info:
            stabilize(build, data, out_dir=str(tmp_path), **_settings(name))
        assert str(info.value).startswith(expected)
        assert not list(tmp_path.glob("*.db"))  # refused before any study or probe
        return
    result = stabilize(build, data, out_dir=str(tmp_path), **_settings(name))
    assert result.baseline.components.verdict in ("stable", "unstable", "stuck", "diverged")
    assert [t.state for t in result.trials] == ["COMPLETE"] or \
        result.trials[0].state == "PRUNED", [t.error for t in result.trials]
    found = diagnose(build, data, seeds=1, steps=6, evaluations=1, lr_range_steps=6,
                     batch_size=_settings(name)["batch_size"])
    assert not any("mode gap" in f.title for f in found.findings)


def test_the_batchnorm_binary_classifier_with_flat_labels_is_stabilized(tmp_path):
    """The model of the trust issue: it used to fail the diagnosis's first probe."""
    result = stabilize(BN_BINARY, (X, BINARY), out_dir=str(tmp_path), **SETTINGS)
    assert result.diagnosis is not None
    assert not any("mode gap" in f.title for f in result.diagnosis.findings)
    assert result.trials[0].state in ("COMPLETE", "PRUNED")

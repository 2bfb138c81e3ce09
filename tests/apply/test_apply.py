"""Applying a configuration: initializers per activation, BatchNorm, optimizer, schedule."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scenarios

from stabilizer import ModelError, SearchConfig, StabilityConfig
from stabilizer.apply import (
    CompileSpec,
    apply_config,
    layer_activations,
    make_optimizer,
    matched_initializer,
)


@pytest.mark.parametrize("activation, expected", [
    ("relu", "he_normal"), ("gelu", "he_normal"), ("leaky_relu", "he_normal"),
    ("selu", "lecun_normal"), ("tanh", "glorot_uniform"), ("sigmoid", "glorot_uniform"),
    ("softmax", "glorot_uniform"), ("linear", "glorot_uniform"),
])
def test_matched_initializer(activation, expected):
    assert matched_initializer(activation) == expected


def test_recurrent_layers_match_glorot_whatever_their_activation():
    assert matched_initializer("relu", recurrent=True) == "glorot_uniform"
    assert matched_initializer("tanh", recurrent=True) == "glorot_uniform"


def relu_irnn() -> keras.Model:
    """A ReLU SimpleRNN with identity recurrence over 50 steps, then a ReLU Dense head."""
    model = keras.Sequential([
        keras.Input((50, 2)),
        keras.layers.SimpleRNN(32, activation="relu",
                               recurrent_initializer=keras.initializers.Identity(1.0)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_auto_gives_recurrent_layers_glorot_and_their_dense_layers_he():
    applied = apply_config(relu_irnn(), StabilityConfig(initializer="auto"), SearchConfig())
    rnn, hidden, _ = applied.model.layers
    assert _kernel_init(rnn.cell) == "GlorotUniform"
    assert type(rnn.cell.recurrent_initializer).__name__ == "Orthogonal"
    assert _kernel_init(hidden) == "HeNormal"


def _exploding_rnn(cell: str = "SimpleRNN") -> keras.Model:
    """A ReLU recurrence of gain 2.2 over 50 steps: the untrained state grows ~2.2 ** 50."""
    layer = getattr(keras.layers, cell)(16, activation="relu",
                                        recurrent_initializer=keras.initializers.Orthogonal(2.2))
    model = keras.Sequential([keras.Input((50, 2)), layer, keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _radius(kernel: keras.Variable) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(keras.ops.convert_to_numpy(kernel)))))


@pytest.mark.parametrize("initializer", ["auto", "glorot_uniform"])
def test_an_initializer_redraws_recurrent_kernels_orthogonal_with_gain_one(initializer):
    """Any initializer but "keep" gives the recurrent kernel Keras' default for it, and the
    untrained output of an exploding recurrence comes back to the targets' scale."""
    x = np.random.default_rng(0).uniform(0, 1, (32, 50, 2)).astype("float32")
    keras.utils.set_random_seed(0)
    model = _exploding_rnn()
    applied = apply_config(model, StabilityConfig(initializer=initializer), SearchConfig())
    rnn = applied.model.layers[0]
    assert f"{rnn.name}: recurrent_initializer=orthogonal" in applied.changes
    assert _radius(model.layers[0].cell.recurrent_kernel) == pytest.approx(2.2, rel=1e-3)
    assert _radius(rnn.cell.recurrent_kernel) == pytest.approx(1.0, rel=1e-3)
    before = float(np.max(np.abs(keras.ops.convert_to_numpy(model(x)))))
    after = float(np.max(np.abs(keras.ops.convert_to_numpy(applied.model(x)))))
    assert before > 1000 * after  # 1.4e4 against 0.69 at seed 0 (5 seeds: 2e4 to 2e14)


def test_keep_leaves_the_recurrent_kernel_as_drawn():
    model = _exploding_rnn()
    applied = apply_config(model, StabilityConfig(), SearchConfig())
    assert not any("recurrent" in c for c in applied.changes)
    assert _radius(applied.model.layers[0].cell.recurrent_kernel) == pytest.approx(2.2, rel=1e-3)


def test_a_gated_cells_recurrent_kernel_is_redrawn_too():
    applied = apply_config(_exploding_rnn("LSTM"), StabilityConfig(initializer="auto"),
                           SearchConfig())
    cell = applied.model.layers[0].cell
    assert type(cell.recurrent_initializer).__name__ == "Orthogonal"
    assert cell.recurrent_initializer.gain == 1.0


class SubclassedRNN(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = keras.layers.SimpleRNN(8, activation="relu")
        self.out = keras.layers.Dense(4, activation="relu")

    def call(self, x):
        return self.out(self.rnn(x))


@pytest.mark.parametrize("built", [False, True])
def test_a_subclassed_models_rnn_gets_its_initializer_through_its_cell(built):
    model = SubclassedRNN()
    if built:
        model(np.zeros((1, 5, 2), "float32"))
    model.compile(optimizer="adam", loss="mse")
    applied = apply_config(model, StabilityConfig(initializer="auto"), SearchConfig())
    applied.model(np.zeros((1, 5, 2), "float32"))
    assert not applied.not_applied
    assert _kernel_init(applied.model.rnn.cell) == "GlorotUniform"
    assert _kernel_init(applied.model.out) == "HeNormal"
    assert type(applied.model.rnn.cell.recurrent_initializer).__name__ == "Orthogonal"
    assert any("recurrent_initializer=orthogonal (in place)" in c for c in applied.changes)


def test_auto_keeps_a_relu_rnns_untrained_output_small_where_he_blows_it_up():
    """He's gain compounds over the 50 time steps; Glorot's does not (mean of 20 seeds).

    With non-negative inputs, identity recurrence and ReLU the output scales with the
    input kernel's scale: sqrt(2 / 2) for He against sqrt(2 / 34) for Glorot, ~4x.
    Measured ratios (20 seeds): TensorFlow 5.1, JAX 3.7, PyTorch 2.4.
    """
    x = np.random.default_rng(0).uniform(0, 1, (64, 50, 2)).astype("float32")

    def output_scale(initializer: str) -> float:
        scales = []
        for seed in range(20):
            keras.utils.set_random_seed(seed)
            model = apply_config(relu_irnn(), StabilityConfig(initializer=initializer),
                                 SearchConfig()).model
            scales.append(float(np.mean(np.abs(keras.ops.convert_to_numpy(model(x))))))
        return float(np.mean(scales))

    assert output_scale("auto") * 2 < output_scale("he_normal")


def test_activation_is_found_through_batchnorm_and_activation_layers():
    acts = layer_activations(scenarios.batchnorm_mlp())
    assert list(acts.values()) == ["relu", "relu", "softmax"]


def _kernel_init(layer: keras.layers.Layer) -> str:
    return type(layer.kernel_initializer).__name__


def test_auto_initializer_and_batchnorm_settings_are_applied_by_cloning():
    applied = apply_config(scenarios.batchnorm_mlp(),
                           StabilityConfig(initializer="auto", bn_momentum=0.9, bn_epsilon=1e-2),
                           SearchConfig())
    assert applied.cloned and not applied.not_applied
    dense = [layer for layer in applied.model.layers if isinstance(layer, keras.layers.Dense)]
    assert [_kernel_init(d) for d in dense] == ["HeNormal", "HeNormal", "GlorotUniform"]
    bns = [layer for layer in applied.model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(bn.momentum == 0.9 and bn.epsilon == 1e-2 for bn in bns)


def _arrays(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def test_a_batchnorm_only_candidate_starts_from_the_users_own_weights():
    """The clone draws fresh weights; all are the user's again (pretrained ones too)."""
    model = scenarios.batchnorm_mlp()
    model.set_weights([w + 0.5 for w in model.get_weights()])  # as if pretrained
    applied = apply_config(model, StabilityConfig(bn_momentum=0.9), SearchConfig())
    assert applied.cloned
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(applied.model), _arrays(model)))


def test_a_new_initializer_redraws_the_kernels_and_keeps_every_other_weight():
    model = keras.Sequential([
        keras.Input((10, 2)),
        keras.layers.SimpleRNN(8, recurrent_initializer="orthogonal",
                               bias_initializer="random_normal"),
        keras.layers.Dense(1, bias_initializer="random_normal"),
    ])
    model.compile(optimizer="adam", loss="mse")
    applied = apply_config(model, StabilityConfig(initializer="he_uniform"), SearchConfig())
    same = {v.path.split("/", 1)[1]: bool(np.array_equal(keras.ops.convert_to_numpy(v), w))
            for v, w in zip(applied.model.weights, _arrays(model))}
    redrawn = {name for name, kept in same.items() if not kept}
    assert redrawn == {name for name in same if name.endswith(("/kernel", "recurrent_kernel"))}
    assert any(name.endswith("recurrent_kernel") for name in same)


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.norm = keras.layers.BatchNormalization()
        self.out = keras.layers.Dense(10, activation="softmax")

    def call(self, x, training=False):
        return self.out(self.norm(self.hidden(x), training=training))


def _subclassed() -> keras.Model:
    model = Subclassed()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_subclassed_models_are_rewritten_in_place_and_say_so():
    applied = apply_config(_subclassed(), StabilityConfig(initializer="auto", bn_momentum=0.8),
                           SearchConfig())
    assert not applied.cloned
    assert "hidden: kernel_initializer=he_normal (in place)" in "; ".join(
        c.replace(applied.model.hidden.name, "hidden") for c in applied.changes)
    assert applied.model.norm.momentum == 0.8
    assert _kernel_init(applied.model.hidden) == "HeNormal"


def test_built_subclassed_kernels_are_redrawn_from_the_new_initializer():
    model = _subclassed()
    model(keras.ops.zeros((1, 8)))
    model.hidden.kernel.assign(keras.ops.ones((8, 16)) * 5.0)
    apply_config(model, StabilityConfig(initializer="he_normal"), SearchConfig())
    kernel = keras.ops.convert_to_numpy(model.hidden.kernel)
    assert abs(kernel.mean()) < 1.0 and kernel.std() > 0.05


def _biased(activation: str, bias: float) -> keras.Model:
    init = keras.initializers.Constant(bias)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation=activation,
                                                                    bias_initializer=init),
                              keras.layers.Dense(2, bias_initializer=init)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_auto_resets_a_negative_constant_bias_on_relu_layers_only():
    applied = apply_config(_biased("relu", -0.5), StabilityConfig(initializer="auto"),
                           SearchConfig())
    hidden, output = (keras.ops.convert_to_numpy(layer.bias) for layer in applied.model.layers)
    assert (hidden == 0).all() and (output == -0.5).all()  # the linear output keeps its bias
    assert any("bias_initializer=zeros" in c for c in applied.changes)
    for activation, bias, config in (("tanh", -0.5, "auto"), ("relu", 0.1, "auto"),
                                     ("relu", -0.5, "he_normal"), ("relu", -0.5, "keep")):
        kept = apply_config(_biased(activation, bias), StabilityConfig(initializer=config),
                            SearchConfig())
        assert (keras.ops.convert_to_numpy(kept.model.layers[0].bias) == bias).all()


def test_auto_resets_the_bias_in_place_on_subclassed_models():
    model = _subclassed()
    model.hidden.bias_initializer = keras.initializers.Constant(-1.0)
    model(keras.ops.zeros((1, 8)))
    applied = apply_config(model, StabilityConfig(initializer="auto"), SearchConfig())
    assert (keras.ops.convert_to_numpy(model.hidden.bias) == 0).all()
    assert any("bias_initializer=zeros (in place)" in c for c in applied.changes)


def test_a_change_that_reaches_no_layer_is_reported():
    applied = apply_config(scenarios.healthy_mlp(), StabilityConfig(bn_momentum=0.9),
                           SearchConfig())
    assert applied.not_applied == ["bn_momentum: the model has no BatchNormalization layer"]


def test_optimizer_class_is_kept_with_new_lr_schedule_and_clipping():
    model = scenarios.healthy_mlp()
    model.compile(optimizer=keras.optimizers.RMSprop(5e-3, rho=0.8), loss="mse")
    spec = CompileSpec.from_model(model, SearchConfig())
    config = StabilityConfig(learning_rate=1e-2, lr_schedule="warmup_cosine",
                             warmup_fraction=0.2, clipping="global_norm", clip_value=0.5)
    opt = make_optimizer(spec, config, total_steps=100)
    # The user's own class (under PyTorch, Keras' torch subclass of RMSprop).
    assert type(opt) is type(model.optimizer) and isinstance(opt, keras.optimizers.RMSprop)
    assert opt.rho == pytest.approx(0.8)
    assert opt.global_clipnorm == 0.5 and opt.clipnorm is None
    schedule = opt._learning_rate
    assert float(schedule(0)) < 1e-3 and float(schedule(20)) == pytest.approx(1e-2, rel=1e-3)
    assert float(schedule(100)) < 1e-3


def test_keep_leaves_the_users_optimizer_settings():
    model = scenarios.healthy_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, clipnorm=2.0), loss="mse")
    opt = make_optimizer(CompileSpec.from_model(model, SearchConfig()), StabilityConfig(), 100)
    assert float(opt.learning_rate) == pytest.approx(0.1) and opt.clipnorm == 2.0
    assert opt.momentum == 0.9


def test_exponential_schedule_decays_by_its_rate_each_quarter():
    spec = CompileSpec.from_model(scenarios.healthy_mlp(), SearchConfig())
    opt = make_optimizer(spec, StabilityConfig(learning_rate=1e-2, lr_schedule="exponential",
                                               decay_rate=0.5), total_steps=100)
    assert float(opt._learning_rate(25)) == pytest.approx(5e-3, rel=1e-4)


def test_cooldown_holds_the_rate_then_decays_it_over_the_last_fifth(tmp_path):
    spec = CompileSpec.from_model(scenarios.healthy_mlp(), SearchConfig())
    opt = make_optimizer(spec, StabilityConfig(learning_rate=1e-2, lr_schedule="cooldown"),
                         total_steps=100)
    rate = [float(opt._learning_rate(step)) for step in (0, 50, 80, 90, 100)]
    assert rate[:3] == pytest.approx([1e-2] * 3)
    assert rate[3] == pytest.approx(5.05e-3, rel=1e-3) and rate[4] == pytest.approx(1e-4)
    # A model compiled with it trains, and saves and loads like any Keras schedule.
    model = scenarios.healthy_mlp()
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(64, 64)), np.arange(64) % 10
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert float(loaded.optimizer._learning_rate(90)) == pytest.approx(rate[3], rel=1e-4)


def test_uncompiled_model_without_loss_is_a_clear_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ModelError, match="uncompiled model and no loss"):
        apply_config(model, StabilityConfig(), SearchConfig())
    spec = CompileSpec.from_model(model, SearchConfig(loss="mse", optimizer="sgd"))
    assert isinstance(spec.optimizer, keras.optimizers.SGD) and spec.loss == "mse"

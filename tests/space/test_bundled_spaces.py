"""Every bundled space loads from the installed package and samples valid configurations
through both drivers' suggesters; small_batch's normalization alternatives apply."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import keras
import keras_tuner
import optuna
import pytest
import scenarios

from stabilizer import SearchConfig, SearchSpace, StabilityConfig, load_space, stabilize
from stabilizer.apply import apply_config
from stabilizer.result import Candidate
from stabilizer.scoring import ScoreComponents
from stabilizer.search.keras_tuner import KerasTunerSuggester, declare_space
from stabilizer.search.optuna import OptunaSuggester
from stabilizer.space import CONDITIONS, Choice, Fixed, FloatRange, bundled_spaces

BUNDLED = ("default", "quick", "small_batch", "recurrent", "convolutional")
_DEFAULTS = StabilityConfig()
_CHILD_DEFAULTS = {"decay_rate": 0.7, "warmup_fraction": 0.1, "clip_value": 1.0}


def optuna_samples(space: SearchSpace, n: int, max_batch_size: int | None = None
                   ) -> list[StabilityConfig]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(space.sample(OptunaSuggester(trial), max_batch_size=max_batch_size))
        study.tell(trial, 0.0)
    return configs


def keras_tuner_samples(space: SearchSpace, n: int, max_batch_size: int | None = None
                        ) -> list[StabilityConfig]:
    """Configurations from the values a KerasTuner random oracle proposes."""
    hp = keras_tuner.HyperParameters()
    declare_space(space, hp, max_batch_size=max_batch_size)
    oracle = keras_tuner.oracles.RandomSearchOracle(hyperparameters=hp, seed=7, max_trials=None)
    configs = []
    for i in range(n):
        trial_hp = hp.copy()
        trial_hp.values = oracle.populate_space(str(i))["values"]
        configs.append(space.sample(KerasTunerSuggester(trial_hp), max_batch_size=max_batch_size))
    return configs


SAMPLERS = {"optuna": optuna_samples, "keras_tuner": keras_tuner_samples}


def check_config(space: SearchSpace, config: StabilityConfig) -> None:
    """`config` is one the space allows: every value in its dimension, children only
    where their parent needs them, and everything left out at the user's setting."""
    for key, default in _DEFAULTS.to_dict().items():
        value = getattr(config, key)
        if key in CONDITIONS:
            parent, needs = CONDITIONS[key]
            if getattr(config, parent) not in needs:
                assert value is None, (key, config)
                continue
            dim = space.dimensions.get(key, Fixed(_CHILD_DEFAULTS[key]))
        elif key not in space.dimensions:
            assert value == default, (key, config)
            continue
        else:
            dim = space.dimensions[key]
        if isinstance(dim, Choice):
            assert value in dim.values, (key, value, dim)
        elif isinstance(dim, FloatRange):
            assert dim.low <= value <= dim.high, (key, value, dim)
        else:
            assert value == dim.value, (key, value, dim)


def test_every_named_space_is_bundled_with_a_comment_on_when_to_use_it():
    assert set(BUNDLED) <= set(bundled_spaces())
    folder = resources.files("stabilizer.space.bundled")
    for name in BUNDLED:
        text = (folder / f"{name}.yaml").read_text()
        assert text.startswith(f"# {name}:"), name
        assert load_space(name).description


@pytest.mark.parametrize("driver", sorted(SAMPLERS))
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_space_samples_valid_configs(name, driver):
    space = load_space(name)
    configs = SAMPLERS[driver](space, 40)
    for config in configs:
        check_config(space, config)
    # Every searched top-level dimension really varies (these are not defaults).
    for key in space.searched():
        if key not in CONDITIONS:
            assert len({getattr(c, key) for c in configs}) > 1, key


@pytest.mark.parametrize("driver", sorted(SAMPLERS))
def test_small_data_caps_the_batch_sizes_in_both_drivers(driver):
    configs = SAMPLERS[driver](load_space("small_batch"), 30, max_batch_size=5)
    assert {c.batch_size for c in configs} == {2, 4}


def test_recurrent_space_always_clips():
    for config in keras_tuner_samples(load_space("recurrent"), 30):
        assert config.clipping in ("norm", "value", "global_norm")
        assert config.clip_value is not None and config.learning_rate <= 3e-3


@pytest.mark.slow
def test_spaces_load_and_sample_from_a_built_wheel(tmp_path: Path):
    """Build the wheel from a copy of the sources, unpack it, and use it from elsewhere."""
    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(root / "pyproject.toml", src)
    for folder in ("stabilizer",):
        shutil.copytree(root / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("stabilizer-*.whl")
    site = tmp_path / "site"
    shutil.unpack_archive(wheel, site, format="zip")
    script = (
        "import json, sys\n"
        f"sys.path.append({str(root / 'tests')!r})\n"
        f"sys.path.append({str(Path(__file__).resolve().parent)!r})\n"
        "import stabilizer\n"
        "from stabilizer.space import bundled_spaces, load_space\n"
        "from test_bundled_spaces import optuna_samples, keras_tuner_samples\n"
        "out = {'file': stabilizer.__file__, 'spaces': {}}\n"
        "for name in bundled_spaces():\n"
        "    space = load_space(name)\n"
        "    out['spaces'][name] = [c.to_dict() for f in (optuna_samples, keras_tuner_samples)\n"
        "                           for c in f(space, 3)]\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True,
                          capture_output=True, text=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).is_relative_to(site)
    assert set(BUNDLED) <= set(out["spaces"])
    for name, configs in out["spaces"].items():
        assert len(configs) == 6
        for data in configs:
            check_config(load_space(name), StabilityConfig.from_dict(data))


# -- small_batch: group / layer normalization in place of BatchNormalization -----------------

def conv_batchnorm() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(12, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("normalization, layer_type, change", [
    ("group", keras.layers.GroupNormalization,
     "bn: BatchNormalization -> GroupNormalization(groups=4)"),  # 12 channels: 4 groups of 3
    ("layer", keras.layers.LayerNormalization, "bn: BatchNormalization -> LayerNormalization"),
    ("batch", keras.layers.BatchNormalization, "bn: epsilon=0.0001"),
])
def test_normalization_replaces_batch_norm(normalization, layer_type, change):
    config = StabilityConfig(normalization=normalization, bn_epsilon=1e-4)
    applied = apply_config(conv_batchnorm(), config, SearchConfig())
    layer = applied.model.get_layer("bn")
    assert type(layer) is layer_type
    assert layer.epsilon == pytest.approx(1e-4)
    assert change in applied.changes
    assert applied.not_applied == []
    assert applied.model(keras.ops.ones((2, 8, 8, 1))).shape == (2, 10)


def test_replacing_batch_norm_reports_the_momentum_it_drops():
    config = StabilityConfig(normalization="group", bn_momentum=0.9)
    applied = apply_config(scenarios.batchnorm_mlp(), config, SearchConfig())
    types = [type(layer).__name__ for layer in applied.model.layers]
    assert types.count("GroupNormalization") == 2 and "BatchNormalization" not in types
    assert applied.not_applied == ["bn_momentum=0.9: BatchNormalization was replaced by group "
                                   "normalization, which keeps no moving averages"]


def test_normalization_on_a_model_without_batch_norm_is_reported():
    applied = apply_config(scenarios.healthy_mlp(), StabilityConfig(normalization="group"),
                           SearchConfig())
    assert applied.not_applied == ["normalization=group: the model has no BatchNormalization layer"]


def test_normalization_on_a_subclassed_model_is_reported_not_applied():
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(8)
            self.bn = keras.layers.BatchNormalization()
            self.out = keras.layers.Dense(10, activation="softmax")

        def call(self, x):
            return self.out(self.bn(self.dense(x)))

    model = Net()
    model(keras.ops.zeros((2, 64)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    applied = apply_config(model, StabilityConfig(normalization="layer"), SearchConfig())
    assert isinstance(applied.model.bn, keras.layers.BatchNormalization)
    assert applied.not_applied == [
        "normalization=layer: BatchNormalization layers can only be replaced in Sequential and "
        "Functional models (rebuilt with keras.models.clone_model); this model kept them"]


def test_small_batch_search_probes_normalization_alternatives(small_digits, tmp_path):
    space = load_space("small_batch").with_dimensions(normalization=Choice(("group",)),
                                                      batch_size=Choice((4,)))
    result = stabilize(scenarios.batchnorm_mlp, small_digits, space=space, budget=1, seeds=1,
                       probe_steps=20, evaluations=2, out_dir=str(tmp_path),
                       driver="keras_tuner", tuner="random", horizon_fraction=0.0)
    (trial,) = result.trials
    assert trial.state == "COMPLETE" and trial.config.normalization == "group"
    assert trial.config.batch_size == 4
    assert "batch_normalization: BatchNormalization -> GroupNormalization(groups=8)" in \
        trial.curves[0]["changes"]
    # The trial's configuration, rebuilt the way the result rebuilds its best one.
    components = ScoreComponents.from_dict(trial.components)
    chosen = dataclasses.replace(result, best=Candidate(trial.config, components, trial.curves,
                                                        trial.user_params, trial.number))
    model = chosen.build_model()
    assert model.compiled
    assert [type(layer).__name__ for layer in model.layers].count("GroupNormalization") == 2

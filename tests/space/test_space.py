"""Search spaces load from the installed package, sample valid configs, reject bad input."""

from __future__ import annotations

import optuna
import pytest

from stabilizer import ConfigError, SearchSpace, StabilityConfig, load_space
from stabilizer.search.optuna import OptunaSuggester
from stabilizer.space import Choice, Fixed, FloatRange, bundled_spaces


def _samples(space: SearchSpace, n: int = 30, **kwargs) -> list[StabilityConfig]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(OptunaSuggester(trial), **kwargs))
        study.tell(trial, 0.0)
    return out


def test_bundled_spaces_come_from_the_installed_package():
    import stabilizer.space.bundled as pkg

    assert {"default", "quick"} <= set(bundled_spaces())
    assert pkg.__file__  # importable as a package, so it ships in the wheel


@pytest.mark.parametrize("name", bundled_spaces())
def test_every_bundled_space_samples_valid_configs(name):
    space = load_space(name)
    configs = _samples(space)
    assert all(isinstance(c, StabilityConfig) for c in configs)
    assert space.description


def test_conditional_parameters_only_where_they_mean_something():
    for config in _samples(load_space("default"), n=60):
        assert (config.decay_rate is not None) == (config.lr_schedule == "exponential")
        assert (config.warmup_fraction is not None) == (config.lr_schedule == "warmup_cosine")
        assert (config.clip_value is not None) == (config.clipping != "none")


def test_batch_sizes_larger_than_the_data_are_not_sampled():
    configs = _samples(load_space("default"), n=40, max_batch_size=40)
    assert {c.batch_size for c in configs} <= {16, 32}


def test_a_fixed_dimension_is_applied_not_searched():
    space = SearchSpace.from_dict({"batch_size": 64, "clipping": ["none", "norm"]})
    assert space.searched() == ["clipping"]
    assert {c.batch_size for c in _samples(space, n=5)} == {64}


@pytest.mark.parametrize("data, message", [
    ({"batchsize": [1, 2]}, "unknown dimension 'batchsize'"),
    ({"clipping": []}, "key 'clipping': empty choice list"),
    ({"learning_rate": {"low": 1e-1, "high": 1e-3}}, "low=0.1 > high=0.001; expected low <= high"),
    ({"bn_epsilon": {"low": -1e-3, "high": 1e-2}}, "bn_epsilon=-0.001: expected a value > 0"),
    ({"initializer": ["he_normal", "bogus_init"]}, "initializer='bogus_init'"),
    ({"batch_size": {"low": 1, "high": 4}}, "a range is only allowed for"),
    ({"learning_rate": {"low": 1e-3}}, "expected a range {low: .., high: .., log: true|false}"),
    ({"normalization": ["batch", "instance"]},
     "space 'custom', key 'normalization': 'instance' is not a normalization; expected one of "
     "keep, batch, group, layer"),
    ({"batch_size": [0, 8]}, "space 'custom', key 'batch_size': batch_size=0: expected an "
                             "integer >= 1"),
])
def test_invalid_space_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace("|", r"\|").replace(".", r"\.").replace("+", r"\+")):
        SearchSpace.from_dict(data)


def test_invalid_space_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("clipping: []\n")
    with pytest.raises(ConfigError, match=f"{path}, key 'clipping': empty choice list"):
        load_space(str(path))


def test_unknown_space_name_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="space='nope': not a bundled space or a file"):
        load_space("nope")


def test_python_object_space():
    space = SearchSpace({"learning_rate": FloatRange(1e-4, 1e-2, log=True),
                         "clipping": Choice(("none",)), "batch_size": Fixed(16)})
    config = _samples(space, n=1)[0]
    assert config.batch_size == 16 and config.clipping == "none"
    assert 1e-4 <= config.learning_rate <= 1e-2

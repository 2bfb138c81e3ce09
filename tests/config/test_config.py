"""The typed configs validate, round-trip, and name the bad field."""

from __future__ import annotations

import pytest

from stabilizer import ConfigError, RunConfig, SearchConfig, StabilityConfig


def test_stability_config_round_trips_through_yaml(tmp_path):
    config = StabilityConfig(initializer="auto", learning_rate=3e-3, lr_schedule="exponential",
                             decay_rate=0.8, clipping="norm", clip_value=1.0, batch_size=64,
                             bn_momentum=0.9, bn_epsilon=1e-3)
    path = tmp_path / "best.yaml"
    config.to_yaml(path)
    assert StabilityConfig.from_yaml(path) == config
    assert StabilityConfig.from_yaml(config.to_yaml()) == config


def test_default_stability_config_is_the_users_own():
    assert StabilityConfig().describe() == "the user's own configuration"


@pytest.mark.parametrize("kwargs, message", [
    ({"initializer": "nope"}, "initializer='nope': unknown initializer"),
    ({"batch_size": 0}, "batch_size=0: expected a value >= 1"),
    ({"batch_size": 2.5}, "batch_size=2.5: expected an integer"),
    ({"clipping": "norm"}, "clipping='norm' needs clip_value"),
    ({"clipping": "sometimes"}, "clipping='sometimes': expected one of"),
    ({"lr_schedule": "linear"}, "lr_schedule='linear': expected one of"),
    ({"bn_epsilon": -1.0}, "bn_epsilon=-1.0: expected a value > 0"),
    ({"bn_momentum": 1.0}, "bn_momentum=1.0: expected a value < 1"),
    ({"learning_rate": float("nan")}, "learning_rate=nan: expected a finite number"),
])
def test_invalid_stability_config_names_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        StabilityConfig(**kwargs)


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ConfigError, match="unknown key 'trails'"):
        SearchConfig.from_dict({"trails": 3})


@pytest.mark.parametrize("kwargs, message", [
    ({"trials": 0}, "trials=0: expected a value >= 1"),
    ({"seeds": "two"}, "seeds='two': expected an integer"),
    ({"driver": "hyperopt"}, "driver='hyperopt': expected one of optuna, keras_tuner"),
    ({"evaluations": 50, "probe_steps": 10}, "evaluations=50: expected at most probe_steps=10"),
    ({"validation_split": 1.5}, "validation_split=1.5: expected a value <= 0.9"),
])
def test_invalid_search_config_names_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**kwargs)


def test_config_error_is_a_value_error_and_a_stabilizer_error():
    from stabilizer import StabilizerError

    with pytest.raises(ValueError):
        SearchConfig(trials=-1)
    with pytest.raises(StabilizerError):
        SearchConfig(trials=-1)


def test_default_storage_is_an_sqlite_file_in_out_dir(tmp_path):
    settings = SearchConfig(out_dir=str(tmp_path), study_name="s1")
    assert settings.resolved_storage() == f"sqlite:///{tmp_path}/s1.db"
    assert SearchConfig(storage="sqlite:///x.db").resolved_storage() == "sqlite:///x.db"


def test_a_config_file_with_several_errors_reports_every_one_with_its_field_path(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: models:build\ndata: sklearn:nope\nepochs: 3\nsearch:\n"
                    "  trials: 0\n  seeds: two\n  colour: red\n  probe_steps: 10\n"
                    "  evaluations: 20\n  driver: optuna\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "unknown key 'epochs' (search settings go under 'search", "data='sklearn", "search",
        "search.trials=0", "search.seeds='two'", "search.evaluations=20"]
    assert "search: unknown key 'colour'" in problems[2]
    assert "expected at most probe_steps=10" in problems[-1]  # a rule between two fields
    assert str(info.value).startswith(f"{path}: 6 problems:\n  - unknown key 'epochs'")


def test_a_field_that_needs_another_is_not_reported_when_the_other_is_given():
    with pytest.raises(ConfigError) as info:
        StabilityConfig.from_dict({"clipping": "norm", "clip_value": 1.0,
                                   "learning_rate": -1, "batch_size": 0.5})
    assert [p.split(":")[0] for p in info.value.problems] == ["learning_rate=-1",
                                                              "batch_size=0.5"]
    with pytest.raises(ConfigError, match=r"^clipping='norm' needs clip_value") as info:
        StabilityConfig.from_dict({"clipping": "norm"})
    assert len(info.value.problems) == 1

"""Every answer is one the search measured: studies resumed only for the same search, only
applied values chosen and reported, the user's configuration kept unless the gain is clear,
and data that does not fit the model refused before the first probe."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import optuna
import pytest
import scenarios

from stabilizer import ConfigError, DataError, SearchConfig, StabilityConfig, stabilize
from stabilizer.cli import main
from stabilizer.errors import ProbeFailedError, clean_message
from stabilizer.result import Candidate, TrialRecord, applied_only
from stabilizer.scoring import THRESHOLDS, ScoreComponents
from stabilizer.search import CLEAR_MARGIN, choose_best, run_search
from stabilizer.search.optuna import is_baseline_trial
from stabilizer.space import load_space

TINY = dict(budget=1, probe_steps=4, evaluations=1, seeds=1, diagnose=False,
            diagnose_after=False, space="quick", horizon_fraction=0.0)


def _tanh_mlp() -> keras.Model:
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="tanh"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model


# -- 1. a study is resumed only for the search it was made for ---------------------------------
def test_a_search_of_another_model_in_the_same_folder_starts_its_own_study(small_digits,
                                                                             tmp_path):
    first = stabilize(scenarios.healthy_mlp, small_digits, out_dir=str(tmp_path), **TINY)
    second = stabilize(_tanh_mlp, small_digits, out_dir=str(tmp_path), **TINY)
    assert first.study_name != second.study_name
    assert first.study_name.startswith("stabilizer-")
    assert len(second.trials) == 1 and second.trials[0].state == "COMPLETE"
    assert second.baseline.components.final_val_loss != first.baseline.components.final_val_loss
    again = stabilize(scenarios.healthy_mlp, small_digits, out_dir=str(tmp_path), **TINY)
    assert again.study_name == first.study_name  # the same search resumes, nothing re-probed
    assert [t.number for t in again.trials] == [t.number for t in first.trials]
    assert again.baseline.components.final_val_loss == first.baseline.components.final_val_loss


def test_other_data_or_settings_are_another_search(small_digits, tmp_path):
    x, y = small_digits
    names = {stabilize(scenarios.healthy_mlp, data, out_dir=str(tmp_path), **{**TINY, **kw})
             .study_name for data, kw in [((x, y), {}), ((x[:300], y[:300]), {}),
                                          ((x, y), {"probe_steps": 6}),
                                          ((x, y), {"space": "default"})]}
    assert len(names) == 4
    # the budget is not part of it: a larger budget resumes the same study
    more = stabilize(scenarios.healthy_mlp, (x, y), out_dir=str(tmp_path), **{**TINY, "budget": 2})
    assert more.study_name in names and len(more.trials) == 2


def test_a_named_study_made_for_another_model_is_refused_with_what_differs(small_digits,
                                                                          tmp_path):
    stabilize(scenarios.healthy_mlp, small_digits, out_dir=str(tmp_path), study_name="mine",
              **TINY)
    with pytest.raises(ConfigError) as info:
        stabilize(_tanh_mlp, small_digits, out_dir=str(tmp_path), study_name="mine", **TINY)
    message = str(info.value)
    assert "study_name='mine'" in message and "model:" in message and "optimizer:" in message
    assert "SGD" in message and "resume='force'" in message and "data:" not in message
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path}/mine.db")
    assert len(study.trials) == 1 + 1  # its trial and your configuration's: nothing added
    forced = stabilize(_tanh_mlp, small_digits, out_dir=str(tmp_path), study_name="mine",
                       resume="force", **{**TINY, "budget": 2})
    assert len(forced.trials) == 2


def test_a_worker_joining_a_study_of_another_search_is_refused(small_digits, tmp_path):
    settings = SearchConfig(out_dir=str(tmp_path), study_name="shared", trials=1, probe_steps=4,
                            evaluations=1, seeds=1, diagnose=False, diagnose_after=False,
                            space="quick", horizon_fraction=0.0)
    run_search(scenarios.healthy_mlp, small_digits, load_space("quick"), settings)
    with pytest.raises(ConfigError, match="model:"):  # a worker's body is run_search
        run_search(_tanh_mlp, small_digits, load_space("quick"), settings)


def test_a_keras_tuner_project_of_another_model_is_refused(small_digits, tmp_path):
    kw = dict(out_dir=str(tmp_path), study_name="kt", driver="keras_tuner", tuner="random",
              **TINY)
    stabilize(scenarios.healthy_mlp, small_digits, **kw)
    with pytest.raises(ConfigError, match="model:"):
        stabilize(_tanh_mlp, small_digits, **kw)


def _write_configs(folder, factories: dict[str, str], extra: str = "") -> None:
    """models.py with an MLP factory per name (its arguments), and one <name>.yaml each."""
    (folder / "models.py").write_text(
        "import keras\n"
        "def mlp(units, activation):\n"
        "    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, "
        "activation=activation), keras.layers.Dense(10, activation='softmax')])\n"
        "    m.compile('adam', 'sparse_categorical_crossentropy')\n"
        "    return m\n" + "".join(f"def {name}():\n    return mlp({args})\n"
                                for name, args in factories.items()))
    search = ("search: {trials: 1, probe_steps: 4, evaluations: 1, seeds: 1, diagnose: false, "
              f"diagnose_after: false, space: quick, horizon_fraction: 0, out_dir: out{extra}}}\n")
    for name in factories:
        (folder / f"{name}.yaml").write_text(f"model: models.py:{name}\ndata: sklearn:digits\n"
                                             + search)


def test_the_cli_keeps_a_study_and_its_run_config_apart_from_another_config(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_configs(tmp_path, {"relu": "16, 'relu'", "tanh": "24, 'tanh'"})
    assert main(["search", "relu.yaml", "-q", "--format", "json"]) == 0
    assert main(["search", "tanh.yaml", "-q", "--format", "json"]) == 0
    studies = sorted(p.stem for p in (tmp_path / "out").glob("stabilizer-*.db"))
    assert len(studies) == 2
    models = set()
    for name in studies:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///out/{name}.db")
        models.add(study.user_attrs["run_config"]["model"])
        assert study.user_attrs["run_config"]["search"]["study_name"] == name
    assert models == {"models.py:relu", "models.py:tanh"}


def test_the_cli_refuses_a_named_study_of_another_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write_configs(tmp_path, {"small": "8, 'relu'", "large": "32, 'relu'"},
                   extra=", study_name: mine")
    assert main(["search", "small.yaml", "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "large.yaml", "-q"]) == 2
    err = capsys.readouterr().err
    assert "study_name='mine'" in err and "model:" in err and "--resume force" in err
    study = optuna.load_study(study_name="mine", storage="sqlite:///out/mine.db")
    assert study.user_attrs["run_config"]["model"] == "models.py:small"  # not overwritten
    assert main(["search", "large.yaml", "-q", "--resume", "force", "--trials", "2"]) == 0


# -- 2. and 3. only what can change the model is searched, chosen and reported ------------------
class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return len(self.x) // self.batch

    def __getitem__(self, index):
        part = slice(index * self.batch, (index + 1) * self.batch)
        return self.x[part], self.y[part]


def test_a_pydataset_fixes_the_batch_size_so_none_is_searched_or_returned(small_digits,
                                                                          tmp_path):
    x, y = small_digits
    data = (_Batches(x[:320], y[:320], 16), _Batches(x[320:], y[320:], 16))
    result = stabilize(scenarios.healthy_mlp, data, out_dir=str(tmp_path), **{
        **TINY, "space": {"batch_size": [64, 128], "learning_rate": [0.01, 0.001]},
        "budget": 2})
    study = optuna.load_study(study_name=result.study_name,
                              storage=f"sqlite:///{tmp_path}/{result.study_name}.db")
    assert all("batch_size" not in t.params for t in study.trials)
    assert result.best_config.batch_size is None
    assert "batch_size" not in result.fit_kwargs()
    assert any(n.startswith("batch_size not searched: the data is a keras.utils.PyDataset")
               for n in result.space_notes)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data needs TensorFlow")
def test_a_batched_tf_dataset_fixes_the_batch_size_too(small_digits, tmp_path):
    import tensorflow as tf

    x, y = small_digits
    data = (tf.data.Dataset.from_tensor_slices((x[:320], y[:320])).batch(16),
            tf.data.Dataset.from_tensor_slices((x[320:], y[320:])).batch(16))
    result = stabilize(scenarios.healthy_mlp, data, out_dir=str(tmp_path), **TINY)
    assert result.best_config.batch_size is None and "batch_size" not in result.fit_kwargs()
    assert any("a batched tf.data.Dataset, which fixes its own batch size" in note
               for note in result.space_notes)


def test_a_value_its_probes_did_not_apply_is_not_chosen_but_listed():
    config = StabilityConfig(batch_size=128, learning_rate=0.01, bn_momentum=0.9)
    not_applied = ["batch_size=128: the data (pydataset) fixes its own batch size",
                   "bn_momentum: the model has no BatchNormalization layer"]
    assert applied_only(config, not_applied) == StabilityConfig(learning_rate=0.01)
    assert applied_only(config, []) is config


def test_batchnorm_settings_are_not_searched_for_a_model_without_batchnorm(small_digits,
                                                                          tmp_path):
    result = stabilize(scenarios.healthy_mlp, small_digits, out_dir=str(tmp_path),
                       **{**TINY, "space": "default", "budget": 2})
    study = optuna.load_study(study_name=result.study_name,
                              storage=f"sqlite:///{tmp_path}/{result.study_name}.db")
    for trial in study.trials:
        assert not {"bn_momentum", "bn_epsilon"} & set(trial.params)
    assert result.best_config.bn_momentum is None and result.best_config.bn_epsilon is None
    assert "bn_" not in result.summary().split("space:")[0]
    assert "bn_momentum not searched: the model has no BatchNormalization layer" in \
        result.space_notes
    from stabilizer.report import html_report

    page = html_report(result)
    assert "Search space" in page and "bn_epsilon not searched" in page
    with_bn = stabilize(scenarios.batchnorm_mlp, small_digits, out_dir=str(tmp_path),
                        **{**TINY, "space": "default"})
    assert not any(n.startswith("bn_") for n in with_bn.space_notes)


# -- 4. every applied value is on its trial -------------------------------------------------
def test_every_applied_value_is_in_the_optuna_trials_params(small_digits, tmp_path):
    space = {"initializer": "auto", "clipping": ["norm"], "clip_value": 2.0,
             "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}
    result = stabilize(scenarios.healthy_mlp, small_digits, out_dir=str(tmp_path),
                       **{**TINY, "space": space, "budget": 2})
    study = optuna.load_study(study_name=result.study_name,
                              storage=f"sqlite:///{tmp_path}/{result.study_name}.db")
    for trial in study.trials:
        config = {k: v for k, v in trial.user_attrs["config"].items()
                  if v not in (None, "keep")}
        assert config == trial.params  # your configuration's trial: nothing, and no params
        if not is_baseline_trial(trial):
            assert trial.params["initializer"] == "auto" and trial.params["clip_value"] == 2.0


# -- 5. a configuration that learns less replaces yours only for a clear gain -------------------
def _components(loss: float, *, spread: float = 0.0, spikes: float = 0.0,
                diverged: bool = False, score: float = 1.0) -> ScoreComponents:
    reasons = [f"seed_spread={spread:.3g} > 0.15"] if spread > THRESHOLDS["seed_spread"] else []
    reasons += [f"spike_rate={spikes:.3g} > 0.03"] if spikes > THRESHOLDS["spike_rate"] else []
    verdict = "diverged" if diverged else ("unstable" if reasons else "stable")
    return ScoreComponents(
        score=score, verdict=verdict, reasons=reasons, diverged=diverged, final_val_loss=loss,
        reference_loss=2.3, quality=1.0, progress=0.8, stuck=False, oscillation=0.05,
        spike_rate=spikes, explode_rate=0.0, vanishing_share=0.0, seed_spread=spread, seeds=2,
        per_seed=[])


def _trial(number: int, components: ScoreComponents) -> TrialRecord:
    return TrialRecord(number, "COMPLETE", components.score, StabilityConfig(learning_rate=0.01),
                       {}, components.to_dict(), [])


def test_a_baseline_unstable_by_a_hair_is_kept_over_a_trial_that_learns_less():
    baseline = Candidate(StabilityConfig(), _components(0.362, spread=0.168, score=0.9), [])
    worse = _trial(0, _components(0.58, spread=0.05, score=1.2))
    choice = choose_best([worse], baseline)
    assert choice.best is baseline
    assert "your configuration kept" in choice.note and "0.362 -> 0.58" in choice.note
    assert "seed spread 0.168 -> 0.05" in choice.note


@pytest.mark.parametrize("baseline_components", [
    _components(0.362, spread=CLEAR_MARGIN * THRESHOLDS["seed_spread"] + 0.05, score=0.5),
    _components(0.362, spikes=0.2, score=0.5),
    _components(float("nan"), diverged=True, score=-50.0)])
def test_a_clear_stability_gain_may_cost_loss_and_says_so(baseline_components):
    baseline = Candidate(StabilityConfig(), baseline_components, [])
    choice = choose_best([_trial(3, _components(0.58, spread=0.05, score=1.2))], baseline)
    assert choice.best.trial_number == 3
    assert choice.note.startswith("yours -> chosen: final val loss ")
    assert "-> 0.58, seed spread" in choice.note
    if not baseline_components.diverged:
        assert "it learns less, for a clear stability gain: your configuration" in choice.note


def test_a_trial_that_learns_more_and_is_stable_replaces_yours_with_the_change_shown():
    baseline = Candidate(StabilityConfig(), _components(0.5, spread=0.16, score=0.5), [])
    choice = choose_best([_trial(1, _components(0.4, score=1.2))], baseline)
    assert choice.best.trial_number == 1
    assert choice.note == "yours -> chosen: final val loss 0.5 -> 0.4, seed spread 0.16 -> 0"


# -- 6. data that does not fit the model fails before the first probe, cleanly -----------------
def _no_probe(*args, **kwargs):
    raise AssertionError("a probe ran")


@pytest.mark.parametrize("data, field, words", [
    ((np.zeros((200, 8, 8), "float32"), np.zeros(200, "int64")), "x:", "expected input of shape"),
    ((np.zeros((200, 64), "float32"), np.arange(200) % 12), "y:", "expected indices in [0, 9]"),
    ((np.zeros((200, 64), "float32"), np.zeros((200, 3))), "y:", "one-hot"),
])
def test_data_that_does_not_fit_the_model_is_a_data_error_before_any_probe(
        data, field, words, tmp_path, monkeypatch):
    import stabilizer.diagnosis._diagnose
    import stabilizer.probe._runner
    import stabilizer.search._evaluator

    for module, name in ((stabilizer.probe._runner, "run_probe"),
                         (stabilizer.probe._runner, "run_replica_probes"),
                         (stabilizer.search._evaluator, "run_probes"),
                         (stabilizer.diagnosis._diagnose, "run_probes")):
        monkeypatch.setattr(module, name, _no_probe)
    build = scenarios.healthy_mlp
    if "one-hot" in words:
        def build():
            model = scenarios.healthy_mlp()
            model.compile("adam", "categorical_crossentropy")
            return model
    with pytest.raises(DataError) as info:
        stabilize(build, data, out_dir=str(tmp_path), **TINY)
    message = str(info.value)
    assert message.startswith(field) and words in message
    assert "\x1b[" not in message and "Traceback" not in message and "\n" not in message
    assert not list(tmp_path.glob("*.db"))


def test_binary_labels_outside_zero_one_are_refused(tmp_path):
    def build():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile("adam", "binary_crossentropy")
        return model

    x = np.random.default_rng(0).normal(size=(100, 4)).astype("float32")
    with pytest.raises(DataError, match=r"^y: labels from 0 to 2; binary_crossentropy"):
        stabilize(build, (x, np.arange(100) % 3), out_dir=str(tmp_path), **TINY)


def test_a_failed_probe_says_what_failed_and_keeps_its_traceback_on_the_trial(small_digits,
                                                                             tmp_path):
    calls = {"n": 0}

    def build():
        calls["n"] += 1
        if calls["n"] == 3:  # the check before the search and the baseline build fine
            raise RuntimeError("\x1b[1mno\x1b[0m weights\n  File \"x.py\", line 1")
        return scenarios.healthy_mlp()

    result = stabilize(build, small_digits, out_dir=str(tmp_path), **{**TINY, "budget": 2})
    study = optuna.load_study(study_name=result.study_name,
                              storage=f"sqlite:///{tmp_path}/{result.study_name}.db")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and len(result.trials) == 3
    for trial in failed:
        assert trial.user_attrs["error"] == "build_fn raised RuntimeError: no weights"
        assert "Traceback (most recent call last)" in trial.user_attrs["traceback"]


def test_clean_message_drops_colour_codes_and_trace_lines():
    raw = ("Graph execution error:\n\nDetected at node x defined at (most recent call last):\n"
           "  File \"a.py\", line 3, in f\n\n\x1b[1mReceived\x1b[0m a label value of 10 which "
           "is outside the valid range of [0, 10).\n\t [[{{node x}}]]")
    assert clean_message(raw) == ("Received a label value of 10 which is outside the valid "
                                  "range of [0, 10).")
    assert not re.search(r"\x1b|\n", clean_message(ProbeFailedError("a\nb", "tb")))
    assert json.loads(json.dumps(clean_message("x" * 2000))).endswith("...")

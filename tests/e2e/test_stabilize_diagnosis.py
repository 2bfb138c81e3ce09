"""`stabilize()` diagnoses the user's configuration first, focuses its space on the
findings, tries the diagnosis's first trial first, and shows before/after."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import scenarios

from stabilizer import StabilityResult, stabilize
from stabilizer.cli import load_result
from stabilizer.diagnosis import Diagnosis
from stabilizer.report import write_report
from stabilizer.space import load_space

pytestmark = pytest.mark.slow


def _search(data, settings, build_fn, **kwargs) -> StabilityResult:
    options = {**settings.to_dict(), **kwargs}
    return stabilize(build_fn, data, **options)


@pytest.fixture(scope="module")
def exploding(tmp_path_factory: pytest.TempPathFactory) -> StabilityResult:
    """Adam at learning rate 1.0 on a ReLU MLP: the diagnosis must see it."""
    from stabilizer.config import SearchConfig

    x, y = scenarios.digits()
    settings = SearchConfig(probe_steps=40, evaluations=2, seeds=2, space="quick", trials=3,
                            out_dir=str(tmp_path_factory.mktemp("exploding")),
                            horizon_fraction=0.0)
    return _search((x[:400], y[:400]), settings, scenarios.relu_lr_one)


def test_the_baseline_is_diagnosed_and_its_findings_focus_the_space(exploding):
    before = exploding.diagnosis
    assert isinstance(before, Diagnosis)
    assert before.seeds == [0, 1] and before.lr_range is not None
    assert {"lr_too_high", "diverged", "exploding_gradients"} & set(before.codes("warning"))
    # The baseline's score comes from the diagnosis's own probes, one per seed.
    assert len(exploding.baseline.curves) == len(before.seeds)
    assert any(n.startswith("clipping: global_norm") for n in exploding.focus_notes)
    focused = before.focus(load_space("quick"))
    cap = focused.dimensions["learning_rate"].high
    assert cap < 1.0  # the user's rate is out of the focused space
    assert all(t.config.learning_rate <= cap * (1 + 1e-9) for t in exploding.trials
               if t.config is not None and t.config.learning_rate is not None)


def test_the_first_trials_are_the_ones_the_diagnosis_suggests(exploding):
    study = optuna.load_study(study_name=exploding.study_name,
                              storage=exploding.settings.resolved_storage())
    plain, focused = study.trials[:2]
    assert plain.user_attrs.get("origin") == focused.user_attrs.get("origin") == "diagnosis"
    space = load_space("quick")
    # First the range test's learning rate alone, then the focused proposal (clipping first).
    # Each trial's params hold the suggestion and the values the space fixes besides.
    suggested = exploding.diagnosis.range_test_trial(space)
    assert suggested["clipping"] == "none"
    assert {k: plain.params[k] for k in suggested} == pytest.approx(suggested)
    first = exploding.diagnosis.first_trial(space)
    assert {k: focused.params[k] for k in first} == pytest.approx(first)
    assert focused.params["clipping"] != "none"


def test_the_result_shows_before_and_after(exploding, tmp_path: Path):
    assert exploding.improved
    after = exploding.after
    assert isinstance(after, Diagnosis) and after.config == exploding.best_config
    assert after.seeds == exploding.diagnosis.seeds and after.lr_range is None
    rows = exploding.before_after()
    assert rows and all({"code", "before", "after"} <= set(r) for r in rows)
    assert any(r["before"] in ("warning", "error") and r["after"] != r["before"]
               for r in rows), rows
    summary = exploding.summary()
    assert "diagnosis of your configuration" in summary and "before -> after" in summary

    folder = write_report(exploding, tmp_path / "report")
    page = (folder / "report.html").read_text()
    assert "Before / after" in page and "Diagnosis of your configuration (before)" in page
    assert "Diagnosis of the chosen configuration (after)" in page
    data = json.loads((folder / "summary.json").read_text())
    assert data["diagnosis"]["findings"] and data["after"]["config"]
    assert data["before_after"] == json.loads(json.dumps(data["before_after"]))


def test_a_resumed_or_reread_study_keeps_both_diagnoses(exploding):
    x, y = scenarios.digits()  # the same data as the search it resumes
    again = _search((x[:400], y[:400]), exploding.settings, scenarios.relu_lr_one)
    assert [t.number for t in again.trials] == [t.number for t in exploding.trials]
    assert again.diagnosis.to_dict() == exploding.diagnosis.to_dict()
    assert again.after.to_dict() == exploding.after.to_dict()

    loaded = load_result(exploding.study_name, exploding.settings.resolved_storage())
    assert loaded.diagnosis.codes() == exploding.diagnosis.codes()
    assert loaded.after is not None and loaded.before_after() == exploding.before_after()


def test_a_healthy_model_is_searched_over_the_whole_space(small_digits, quick_settings):
    result = _search(small_digits, quick_settings, scenarios.healthy_mlp)
    assert result.diagnosis is not None and result.diagnosis.healthy
    assert result.focus_notes == []
    study = optuna.load_study(study_name="stabilizer", storage=quick_settings.resolved_storage())
    assert "origin" not in study.trials[0].user_attrs  # nothing to suggest: no queued trial


def test_diagnose_false_probes_the_baseline_plainly(small_digits, quick_settings):
    result = _search(small_digits, quick_settings, scenarios.healthy_mlp, diagnose=False,
                     trials=1)
    assert result.diagnosis is None and result.after is None and result.before_after() == []
    assert "diagnosis" not in result.summary()

"""Reports on scripted results: the folder's files, the plots, importance, notebook display."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.report import (
    MIN_TRIALS_FOR_IMPORTANCE,
    PLOTS,
    figure,
    parameter_importance,
    plot_result,
    summary_dict,
    write_report,
)
from stabilizer.result import Candidate, StabilityResult, TrialRecord, TrialTable
from stabilizer.scoring import DIVERGED_SCORE, ScoreComponents

LAYERS = ["dense", "dense_1", "dense_2"]


def components(score: float, *, verdict: str = "stable", oscillation: float = 0.1,
               diverged: bool = False) -> ScoreComponents:
    nan = float("nan")
    return ScoreComponents(
        score=score, verdict=verdict, reasons=[] if verdict == "stable" else [verdict],
        diverged=diverged, final_val_loss=nan if diverged else math.exp(-score),
        reference_loss=1.0, quality=nan if diverged else score + 0.5 * oscillation,
        progress=nan if diverged else 0.5, stuck=False, oscillation=oscillation,
        spike_rate=0.0, explode_rate=0.0, vanishing_share=0.0, seed_spread=0.0, seeds=2,
        per_seed=[])


def curves(seeds: int = 2, steps: int = 40, *, decay: float = 0.05, diverge_at: int | None = None
           ) -> list[dict]:
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        n = steps if diverge_at is None else diverge_at
        loss = 2.3 * np.exp(-decay * np.arange(n)) * (1 + 0.1 * rng.random(n))
        loss_list = [float(v) for v in loss]
        if diverge_at is not None:
            loss_list[-1] = None  # NaN at record time is stored as None
        out.append({
            "steps": n, "loss": loss_list, "grad_norm": [float(v) for v in 1 + rng.random(n)],
            "layer_grad_norm": [[float(v) for v in 0.5 + rng.random(len(LAYERS))]
                                for _ in range(n)],
            "layer_names": LAYERS, "val_loss": [float(loss[n // 2]), float(loss[-1])],
            "learning_rate": [1e-3, 1e-3], "diverged": diverge_at is not None,
        })
    return out


def trial(number: int, score: float | None, *, state: str = "COMPLETE", lr: float = 1e-3,
          batch: int = 32, verdict: str = "stable") -> TrialRecord:
    config = StabilityConfig(initializer="auto", learning_rate=lr, batch_size=batch)
    comps = None
    if state == "COMPLETE":
        comps = components(score, verdict=verdict, diverged=verdict == "diverged").to_dict()
    return TrialRecord(number=number, state=state, score=score, config=config, user_params={},
                       components=comps, curves=curves(diverge_at=5 if verdict == "diverged"
                                                       else None),
                       error="Traceback ...\nValueError: boom" if state == "FAIL" else None,
                       seconds=1.5)


def make_result(trials: list[TrialRecord], *, best_index: int | None = 1,
                storage: str = "sqlite:///x.db") -> StabilityResult:
    baseline = Candidate(StabilityConfig(), components(0.5, verdict="unstable", oscillation=0.6),
                         curves(decay=0.02))
    if best_index is None:
        best = baseline
    else:
        t = trials[best_index]
        best = Candidate(t.config, components(t.score), t.curves, {}, t.number)
    settings = SearchConfig(trials=len(trials), storage=storage, study_name="scripted",
                            space="quick")
    return StabilityResult(best=best, baseline=baseline, trials=trials, settings=settings,
                           space_name="quick", study_name="scripted", storage="sqlite:///x.db")


@pytest.fixture
def result() -> StabilityResult:
    # Scores rise with the learning rate; one diverged, one pruned, one failed trial.
    trials = [trial(0, 0.8, lr=1e-3), trial(1, 1.6, lr=8e-3, batch=64),
              trial(2, 1.1, lr=3e-3), trial(3, 1.3, lr=5e-3, batch=64),
              trial(4, DIVERGED_SCORE, lr=0.5, verdict="diverged"),
              trial(5, None, state="PRUNED"), trial(6, None, state="FAIL")]
    return make_result(trials)


def images(page: str) -> dict[str, bytes]:
    found = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,([^']*)'>", page)
    return {alt: base64.b64decode(data) for alt, data in found}


def test_write_report_writes_the_four_files(result: StabilityResult, tmp_path: Path) -> None:
    folder = write_report(result, tmp_path / "report")
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.yaml", "report.html", "summary.json", "trials.csv"]
    assert StabilityConfig.from_yaml(folder / "best.yaml") == result.best_config

    with open(folder / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == [-1, 0, 1, 2, 3, 4, 5, 6]
    assert [r["state"] for r in rows][-2:] == ["PRUNED", "FAIL"]
    assert rows[5]["verdict"] == "diverged"

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best"]["trial"] == 1
    assert summary["best"]["config"]["learning_rate"] == pytest.approx(8e-3)
    assert summary["improved"] is True
    assert summary["trials"] == 7
    assert summary["states"] == {"complete": 5, "pruned": 1, "failed": 1, "running": 0,
                                 "diverged": 1}
    assert summary["baseline"]["components"]["verdict"] == "unstable"


def test_report_html_embeds_every_plot_with_alt_text(result: StabilityResult,
                                                     tmp_path: Path) -> None:
    page = (write_report(result, tmp_path) / "report.html").read_text()
    found = images(page)
    assert set(found) == {alt for _, alt in PLOTS.values()}
    for png in found.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert "fANOVA importance" in page
    assert "trial 6: <code>ValueError: boom</code>" in page  # the failed trial's last line
    assert page.count("<tr>") == 1 + 1 + 7  # header, baseline, trials


def test_importance_needs_enough_completed_trials(tmp_path: Path) -> None:
    few = [trial(0, 0.8), trial(1, 1.6, lr=8e-3), trial(2, None, state="PRUNED")]
    page = (write_report(make_result(few), tmp_path) / "report.html").read_text()
    assert PLOTS["importance"][1] not in images(page)
    assert (f"Parameter importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials; "
            "this study has 2.") in page
    fig, note = figure(make_result(few), "importance")
    assert fig is None and "needs at least" in note


def test_importance_finds_the_setting_that_drives_the_score() -> None:
    rng = np.random.default_rng(0)
    trials = []
    for i, lr in enumerate(np.geomspace(1e-4, 1e-1, 12)):
        batch = int(rng.choice([32, 64]))
        trials.append(trial(i, float(np.log10(lr)) + 5, lr=float(lr), batch=batch))
    importances, note = parameter_importance(trials)
    assert importances is not None
    assert max(importances, key=importances.get) == "learning_rate"
    assert importances["learning_rate"] > 0.6
    assert "12 completed trials" in note


def test_importance_explains_when_nothing_varied() -> None:
    same = [trial(i, 1.0 + i) for i in range(4)]  # one learning rate, one batch size
    importances, note = parameter_importance(same)
    assert importances is None
    assert note == "No searched setting varied across the completed trials."


def test_kept_baseline_and_diverged_baseline_still_report(tmp_path: Path) -> None:
    trials = [trial(0, DIVERGED_SCORE, verdict="diverged")]
    result = make_result(trials, best_index=None)
    result.baseline.components = components(DIVERGED_SCORE, verdict="diverged", diverged=True)
    result.best = result.baseline
    folder = write_report(result, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())  # NaN written as null
    assert summary["improved"] is False
    assert summary["best"]["components"]["final_val_loss"] is None
    assert "the baseline (kept)" in (folder / "best.yaml").read_text()
    assert StabilityConfig.from_yaml(folder / "best.yaml") == StabilityConfig()
    assert len(images((folder / "report.html").read_text())) == 3


def test_summary_masks_the_storage_password(result: StabilityResult) -> None:
    result.settings.storage = "postgresql://me:secret@db.example/stab"
    text = json.dumps(summary_dict(result))
    assert "secret" not in text
    assert "postgresql://me:***@db.example/stab" in text


def test_plot_draws_every_panel_and_shows_in_jupyter(result: StabilityResult) -> None:
    fig = result.plot()
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 7
    assert "gradient norm per layer: chosen (trial 1), seed 1" in titles
    assert "parameter importance" in titles
    loss_ax = fig.axes[0]
    assert [line.get_label() for line in loss_ax.get_lines()][:1] == ["baseline"]
    assert len(loss_ax.get_lines()) == 4  # 2 seeds x (baseline, chosen)
    assert fig._repr_png_().startswith(b"\x89PNG")  # what Jupyter displays
    assert plot_result(result).axes[-1].get_title() == "parameter importance"


def test_trials_render_as_a_table(result: StabilityResult) -> None:
    assert isinstance(result.trials, TrialTable)
    table = result.trials._repr_html_()
    assert table.count("<tr>") == 1 + 7
    assert "PRUNED" in table and "diverged" in table
    assert "StabilityResult" in result._repr_html_()

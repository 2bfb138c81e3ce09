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
from stabilizer.lr_range import LRRangeResult
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
    # Scores rise with the learning rate; one diverged, one pruned, one failed trial; enough
    # completed ones (MIN_TRIALS_FOR_IMPORTANCE) for parameter importance.
    trials = [trial(0, 0.8, lr=1e-3), trial(1, 1.6, lr=8e-3, batch=64),
              trial(2, 1.1, lr=3e-3), trial(3, 1.3, lr=5e-3, batch=64),
              trial(4, DIVERGED_SCORE, lr=0.5, verdict="diverged"),
              trial(5, None, state="PRUNED"), trial(6, None, state="FAIL"),
              *[trial(7 + i, 1.0 + 0.05 * i, lr=float(lr), batch=32 * (1 + i % 2))
                for i, lr in enumerate(np.geomspace(1e-3, 6e-3, 6))]]
    return make_result(trials)


def lr_range_result(**changes) -> LRRangeResult:
    rates = np.geomspace(1e-5, 10.0, 60)
    losses = 2.3 - 0.5 * np.tanh(np.log10(rates) + 3) + np.where(rates > 1, rates, 0.0)
    values = dict(learning_rates=rates, losses=losses, smoothed=losses, min_lr=1e-5, max_lr=10.0,
                  steps=60, max_stable_lr=0.3, suggested_lr=0.03, blowup_lr=2.0,
                  min_loss=float(losses.min()), reliable=True, user_lr=1.0)
    return LRRangeResult(**{**values, **changes})


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
    assert [int(r["number"]) for r in rows] == list(range(-1, 13))
    assert [r["state"] for r in rows][6:8] == ["PRUNED", "FAIL"]
    assert rows[5]["verdict"] == "diverged"

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best"]["trial"] == 1
    assert summary["best"]["config"]["learning_rate"] == pytest.approx(8e-3)
    assert summary["improved"] is True
    assert summary["trials"] == 13
    assert summary["states"] == {"complete": 11, "pruned": 1, "failed": 1, "running": 0,
                                 "diverged": 1}
    assert summary["baseline"]["components"]["verdict"] == "unstable"


def test_report_html_embeds_every_plot_with_alt_text(result: StabilityResult,
                                                     tmp_path: Path) -> None:
    page = (write_report(result, tmp_path) / "report.html").read_text()
    found = images(page)
    # every plot but the LR range test (this scripted search ran no diagnosis), which says so
    assert set(found) == {alt for key, (_, alt) in PLOTS.items() if key != "lr_range"}
    assert "No LR range test ran (the search ran without diagnosis)." in page
    assert "Keras " in page and "Optuna " in page and " CPUs" in page  # versions, machine
    assert "<tr class='chosen'>" in page and "<tr class='baseline'>" in page
    for png in found.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert "fANOVA importance" in page
    assert "trial 6: <code>ValueError: boom</code>" in page  # the failed trial's last line
    assert page.count("<tr") == 1 + 1 + 13  # header, baseline, trials


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
    same = [trial(i, 1.0 + i) for i in range(MIN_TRIALS_FOR_IMPORTANCE)]  # one lr, one batch
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
    assert len(images((folder / "report.html").read_text())) == 4  # loss, grads, history, scores


def test_summary_masks_the_storage_password(result: StabilityResult) -> None:
    result.settings.storage = "postgresql://me:secret@db.example/stab"
    text = json.dumps(summary_dict(result))
    assert "secret" not in text
    assert "postgresql://me:***@db.example/stab" in text


def test_plot_draws_every_panel_and_shows_in_jupyter(result: StabilityResult) -> None:
    fig = result.plot()
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 10
    assert "chosen (trial 1): median of 2 seeds, band min-max" in titles
    grads = [ax for ax in fig.axes if "median of" in ax.get_title()]
    assert grads[0].get_ylim() == grads[1].get_ylim()  # one scale for both
    assert "optimization history (11 completed)" in titles
    assert "parameter importance" in titles
    loss_ax = fig.axes[0]
    assert [line.get_label() for line in loss_ax.get_lines()][:1] == ["baseline"]
    assert len(loss_ax.get_lines()) == 4  # 2 seeds x (baseline, chosen)
    assert fig._repr_png_().startswith(b"\x89PNG")  # what Jupyter displays
    assert plot_result(result).axes[-1].get_title() == "parameter importance"


def test_trials_render_as_a_table(result: StabilityResult) -> None:
    assert isinstance(result.trials, TrialTable)
    table = result.trials._repr_html_()
    assert table.count("<tr>") == 1 + 13
    assert "PRUNED" in table and "diverged" in table
    assert "StabilityResult" in result._repr_html_()


def test_validation_curves_start_at_the_untrained_evaluation(result: StabilityResult) -> None:
    for curve in result.baseline.curves:
        curve["initial_val_loss"] = 2.5
    fig, _ = figure(result, "loss")
    val_ax = fig.axes[1]
    first = val_ax.get_lines()[0]
    assert list(first.get_xdata())[0] == 0 and list(first.get_ydata())[0] == 2.5
    assert len(first.get_xdata()) == 1 + 2  # the untrained one and every evaluation
    assert "(step 0: untrained)" in val_ax.get_title()


def test_the_lr_range_test_is_plotted_with_its_rates_marked(result: StabilityResult) -> None:
    from types import SimpleNamespace

    result.diagnosis = SimpleNamespace(lr_range=lr_range_result())
    fig, note = figure(result, "lr_range")
    assert note == "" and fig is not None
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "your rate: 1" in labels and "largest stable: 0.3" in labels
    assert "chosen: 0.008" in labels
    assert ax.get_xscale() == "log"
    ticks = [label.get_text() for label in ax.get_xticklabels()]
    assert not any("times" in t or "^" in t for t in ticks)  # plain numbers, not 3x10^0


def test_the_history_shows_the_best_so_far_and_the_durations(result: StabilityResult) -> None:
    fig, _ = figure(result, "history")
    score_ax, time_ax = fig.axes
    best = [line for line in score_ax.get_lines() if line.get_label() == "best so far"][0]
    assert list(best.get_ydata()) == sorted(best.get_ydata())  # never goes down
    assert max(best.get_ydata()) == pytest.approx(1.6)
    assert len(time_ax.patches) == 13  # every trial with a duration (pruned, failed too)


def test_the_notebook_display_is_a_styled_card_with_a_figure(result: StabilityResult) -> None:
    card = result._repr_html_()
    assert card.startswith("<div style='") and "<b>StabilityResult</b>" in card
    assert "data:image/png;base64," in card  # the compact figure
    assert "background:#e8f1fb;font-weight:bold" in card  # the chosen row
    assert "overflow-x:auto" in card and "white-space:pre-wrap" in card  # never overflows
    table = card.split("<table", 1)[1]
    assert "learning_rate=0.001431" in table  # np.geomspace's 0.0014309690811052555, rounded
    assert not re.search(r"\d\.\d{7,}", table)

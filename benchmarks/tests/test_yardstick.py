"""The yardstick: generated scenarios, the judge's verdicts and their uncertainty, the tables."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import compare, judge, stats, yardstick, zoo  # noqa: E402
from benchmarks.zoo import generated  # noqa: E402
from stabilizer.config import SearchConfig, StabilityConfig  # noqa: E402
from stabilizer.data import prepare_data  # noqa: E402


# -- generated scenarios -------------------------------------------------------------------
def test_a_generated_scenario_is_the_same_for_the_same_name():
    first, again = generated.generate("gen-vanishing-4"), zoo.get("gen-vanishing-4")
    assert first.params == again.params and first.train_steps == again.train_steps
    assert generated.generate("gen-vanishing-5").params != first.params
    assert first.train_steps in dict(generated.LENGTHS)
    with pytest.raises(KeyError, match="family one of"):
        zoo.get("gen-nonsense-1")
    with pytest.raises(KeyError, match="seed must be a whole number"):
        zoo.get("gen-vanishing-x")


def test_the_full_preset_has_every_family_and_enough_scenarios():
    names = yardstick.PRESETS["full"].scenarios
    scenarios = [zoo.get(n) for n in names]
    assert sum(not s.healthy for s in scenarios) >= 30 and sum(s.healthy for s in scenarios) >= 6
    assert {n.split("-")[1] for n in names} == {*generated.FAMILIES, "healthy"}
    lengths = {s.train_steps for s in scenarios}
    assert min(lengths) <= 600 and max(lengths) >= 2400


@pytest.mark.parametrize("family", [*generated.FAMILIES, "healthy"])
def test_every_family_builds_a_model_that_trains_on_its_data(family):
    scenario = zoo.get(f"gen-{family}-0")
    x, y = scenario.load_data()
    model = scenario.build_fn()
    assert len(x) == len(y) >= 150
    model.fit(x[:64], y[:64], batch_size=scenario.batch_size, epochs=1, verbose=0)
    assert scenario.problem and scenario.space in ("default", "recurrent", "convolutional",
                                                   "small_batch")


# -- the judge -----------------------------------------------------------------------------
def _judged(build_fn, seeds, steps=150):
    x, y = zoo.get("healthy_mlp_control").load_data()
    search, held_out = compare.split(x, y)
    data = prepare_data(search, seed=0)
    factory = judge.config_setup(build_fn, StabilityConfig(), SearchConfig(), steps)
    return judge.judge(factory, data, steps=steps, epochs=5, val_data=held_out, seeds=seeds)


def _known_diverging():
    """The zoo's healthy MLP trained by SGD at learning rate 1e4: NaN within a few steps."""
    import keras

    model = zoo.get("healthy_mlp_control").build_fn()
    model.compile(optimizer=keras.optimizers.SGD(1e4), loss=model.loss)
    return model


def test_the_judges_verdicts_hold_on_two_draws_of_judge_seeds():
    healthy = zoo.get("healthy_mlp_control").build_fn
    diverging = _known_diverging
    draws = [(7001, 7002, 7003, 7004, 7005), (7101, 7102, 7103, 7104, 7105)]
    for seeds in draws:
        good, bad = _judged(healthy, seeds), _judged(diverging, seeds)
        assert good.healthy and good.diverged == 0, good.reasons()
        assert not bad.healthy and bad.diverged >= 1, bad.reasons()
        repaired, _ = yardstick.judged_verdict(good, bad, healthy=False, chance=math.log(10))
        assert repaired
        assert stats.verdict_agreement(good, bad, lambda c, b: yardstick.judged_verdict(
            c, b, healthy=False, chance=math.log(10))[0]) == 1.0


def _run(final: float, seed: int = 0, initial: float = 10.0, diverged: bool = False):
    return judge.SeedRun(seed, initial, [final], diverged, 10, 0.0)


def _judgement(finals, initial=10.0):
    return judge.Judgement([_run(f, i, initial, not math.isfinite(f))
                            for i, f in enumerate(finals)])


def test_falling_from_a_bad_start_to_chance_is_not_a_repair():
    baseline = _judgement([math.inf] * 5)  # diverged
    at_chance = _judgement([2.2, 2.25, 2.3, 2.2, 2.28])  # 10 -> chance (2.3)
    assert judge.verdict(at_chance, baseline, healthy_scenario=False).repaired
    repaired, reasons = yardstick.judged_verdict(at_chance, baseline, healthy=False,
                                                 chance=2.3)
    assert not repaired and "against chance" in reasons[-1]
    learned = _judgement([0.5, 0.52, 0.48, 0.5, 0.51])
    assert yardstick.judged_verdict(learned, baseline, healthy=False, chance=2.3)[0]


def test_a_borderline_verdict_has_a_lower_agreement_than_a_clear_one():
    baseline = _judgement([1.0, 1.0, 1.0, 1.0, 1.0])
    clear = _judgement([0.5, 0.5, 0.5, 0.5, 0.5])
    borderline = _judgement([0.86, 0.9, 0.94, 0.88, 0.91])  # 10% below on average, by a hair

    def decide(c, b):
        return yardstick.judged_verdict(c, b, healthy=False, chance=None)[0]
    assert stats.verdict_agreement(clear, baseline, decide) == 1.0
    assert stats.verdict_agreement(borderline, baseline, decide) < 0.9


# -- the tables ----------------------------------------------------------------------------
def _row(name, healthy, repaired_by):
    """A scripted row: the baseline ends at 1.0; a repair at 0.5; a miss at 1.0."""
    methods = {"baseline": {"judge": _judgement([1.0] * 5).to_dict(), "repaired": None}}
    for method in ("stabilizer", "optuna_tpe"):
        final = 0.5 if method in repaired_by else 1.0
        if healthy:
            final = 1.0 if method in repaired_by else 2.0
        j = _judgement([final] * 5)
        ok, reasons = yardstick.judged_verdict(j, _judgement([1.0] * 5), healthy=healthy,
                                               chance=None)
        methods[method] = {"judge": j.to_dict(), "repaired": ok, "reasons": reasons,
                           "agreement": 1.0, "probe_steps": 100, "search_seconds": 1.0,
                           "config": "c"}
    return {"scenario": name, "healthy": healthy, "cause": "c", "chance": None,
            "train_steps": 300, "methods": methods, "wall_seconds": 1.0}


def test_the_summary_gives_rates_intervals_differences_and_every_false_alarm():
    rows = [_row(f"u{i}", False, {"stabilizer"} | ({"optuna_tpe"} if i < 2 else set()))
            for i in range(8)] + [_row("h0", True, {"stabilizer"})]
    summary = yardstick.summarize(rows, ("stabilizer", "optuna_tpe"), resamples=300)
    assert summary["rates"]["stabilizer"] == {"rate": 1.0, "low": 1.0, "high": 1.0}
    tpe = summary["rates"]["optuna_tpe"]
    assert tpe["rate"] == 0.25 and tpe["low"] < 0.25 < tpe["high"]
    diff = summary["differences"]["optuna_tpe"]
    assert diff["difference"] == 0.75 and 0 < diff["low"] <= 0.75 <= diff["high"]
    assert summary["controls_kept"] == {"stabilizer": 1, "optuna_tpe": 0}
    assert [a["method"] for a in summary["false_alarms"]] == ["optuna_tpe"]


def test_shards_are_written_apart_and_merged_into_one_table(tmp_path, monkeypatch):
    def fake(name, preset, search_seed=0):
        return _row(name, zoo.get(name).healthy, {"stabilizer"})
    monkeypatch.setattr(yardstick, "run_scenario", fake)
    names = ",".join(yardstick.QUICK)
    for shard in ("1/2", "2/2"):
        assert yardstick.main(["--preset", "quick", "--scenarios", names, "--shard", shard,
                               "--out", str(tmp_path)]) == 0
    first = json.loads((tmp_path / "yardstick_quick_shard1of2.json").read_text())
    assert [r["scenario"] for r in first["rows"]] == list(yardstick.QUICK[:4])
    assert yardstick.main(["--preset", "quick", "--merge", "--out", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "yardstick_quick.json").read_text())
    assert [r["scenario"] for r in merged["rows"]] == list(yardstick.QUICK)
    assert merged["summary"]["rates"]["stabilizer"]["rate"] == 1.0
    with pytest.raises(SystemExit):
        yardstick.main(["--preset", "quick", "--shard", "3/2", "--out", str(tmp_path)])
    np.testing.assert_equal(len(merged["shards"]), 2)


def test_a_later_run_overlays_the_methods_it_ran_on_the_merged_table(tmp_path, monkeypatch):
    def fake(repaired):
        def run(name, preset, search_seed=0):
            return _row(name, zoo.get(name).healthy, repaired)
        return run
    names = ",".join(yardstick.QUICK)
    monkeypatch.setattr(yardstick, "run_scenario", fake({"optuna_tpe"}))
    assert yardstick.main(["--preset", "quick", "--scenarios", names, "--shard", "1/1",
                           "--methods", "stabilizer,optuna_tpe", "--out", str(tmp_path)]) == 0
    later = tmp_path / "later"
    monkeypatch.setattr(yardstick, "run_scenario", fake({"stabilizer"}))
    assert yardstick.main(["--preset", "quick", "--scenarios", yardstick.QUICK[0],
                           "--methods", "stabilizer", "--out", str(later)]) == 0
    assert yardstick.main(["--preset", "quick", "--merge", "--out", str(tmp_path), "--overlay",
                           str(later / "yardstick_quick.json")]) == 0
    merged = json.loads((tmp_path / "yardstick_quick.json").read_text())
    first, second = merged["rows"][:2]
    assert first["methods"]["stabilizer"]["repaired"] and "code" in first["methods"]["stabilizer"]
    shard = json.loads((tmp_path / "yardstick_quick_shard1of1.json").read_text())
    assert first["methods"]["optuna_tpe"] == shard["rows"][0]["methods"]["optuna_tpe"]
    assert not second["methods"]["stabilizer"]["repaired"] and "overlaid" not in second
    (overlay,) = merged["overlays"]
    assert overlay["scenarios"] == [yardstick.QUICK[0]]
    assert overlay["methods"] == ["baseline", "stabilizer"]
    assert overlay["baseline_mean_final_moved_max"] == 0.0
    assert "Overlaid: baseline, stabilizer on 1 scenarios" in (
        tmp_path / "yardstick_quick.md").read_text()


def test_the_anytime_choice_is_the_best_of_the_first_k_trials():
    records = [("a", 3.0), ("b", 1.0), ("c", 0.5), ("d", 1.0)]
    assert yardstick.best_so_far(records, 1) == "a"
    assert yardstick.best_so_far(records, 2) == "b"
    assert yardstick.best_so_far(records, 20) == "c"
    assert yardstick.best_so_far([], 2) is None
    rows = [_row(f"u{i}", False, {"stabilizer"}) for i in range(4)]
    for i, row in enumerate(rows):
        row["methods"]["stabilizer"]["anytime"] = {"2": {"repaired": i < 1}, "5": {
            "repaired": i < 3}}
    summary = yardstick.summarize(rows, ("stabilizer", "optuna_tpe"), resamples=50)
    assert summary["anytime"] == {"stabilizer": {"2": 0.25, "5": 0.75}}
    assert "| stabilizer | 25% | 75% | 100% |" in yardstick.render_markdown(
        {"preset": {"methods": ["stabilizer", "optuna_tpe"], "trials": 6, "probe_steps": 40,
                    "seeds": 2, "judge_seeds": 5}, "preset_name": "quick", "code": "x",
         "machine": "m", "summary": summary, "rows": rows})


def test_methods_are_checked_and_the_stabilizer_comes_first(tmp_path):
    for bad in ("optuna_tpe,stabilizer", "stabilizer,grid_search"):
        with pytest.raises(SystemExit):
            yardstick.main(["--preset", "quick", "--methods", bad, "--out", str(tmp_path)])


def test_the_horizon_benchmark_counts_repairs_false_alarms_and_cost(tmp_path, monkeypatch):
    from benchmarks import horizon

    def fake(name, preset, search_seeds):
        healthy = zoo.get(name).healthy
        entry = {"search_seed": 0,
                 "flat": {"repaired": not healthy, "probe_steps": 100, "search_seconds": 1.0,
                          "config": "fast"},
                 "ladder": {"repaired": True, "probe_steps": 400, "search_seconds": 2.0,
                            "config": "yours", "rungs": [40, 120]}}
        return {"scenario": name, "healthy": healthy, "searches": [entry], "wall_seconds": 1}
    monkeypatch.setattr(horizon, "run_scenario", fake)
    names = "exploding_relu_mlp_high_lr,healthy_mlp_control"
    assert horizon.main(["--scenarios", names, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "horizon_quick_j36.json").read_text())
    assert report["totals"]["flat"] == {"repaired": 1, "unstable": 1, "controls_made_worse": 1,
                                        "controls": 1, "probe_steps": 200,
                                        "search_seconds": 2.0}
    assert report["totals"]["ladder"]["controls_made_worse"] == 0
    assert "| ladder | 1/1 | 0/1 | 800 | 4 |" in (tmp_path / "horizon_quick_j36.md").read_text()

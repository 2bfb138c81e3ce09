"""The benchmark's independent judge, its zoo and its report (benchmarks/).

The judge is checked on real trainings (a diverging regression is flagged, the
zoo's healthy control passes, reusing one compiled model across seeds gives the
fresh-build result) and its verdicts on scripted runs (exact).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import compare, judge, zoo  # noqa: E402
from stabilizer.config import SearchConfig, StabilityConfig  # noqa: E402
from stabilizer.data import prepare_data  # noqa: E402


def _sgd_1e6_regression() -> keras.Model:
    """Linear regression by SGD at learning rate 1e6: NaN within a few steps."""
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e6), loss="mse")
    return model


def _judge(build_fn, x, y, *, batch: int, steps: int, epochs: int,
           seeds=judge.JUDGE_SEEDS) -> judge.Judgement:
    search, held_out = compare.split(x, y)
    data = prepare_data(search, seed=0)
    factory = judge.config_setup(build_fn, StabilityConfig(), SearchConfig(batch_size=batch),
                                 steps)
    return judge.judge(factory, data, steps=steps, epochs=epochs, val_data=held_out,
                       seeds=seeds)


def test_judge_flags_a_diverging_configuration(digits):
    x, labels = digits
    result = _judge(_sgd_1e6_regression, x, labels.astype("float32")[:, None], batch=32,
                    steps=10, epochs=2)
    assert result.diverged == len(judge.JUDGE_SEEDS)
    assert not result.healthy
    assert math.isinf(result.mean_final) and math.isinf(result.spread)
    assert all(r.steps <= 10 for r in result.runs)  # stopped early, not trained on
    assert "diverged on 5 of 5 seeds" in result.reasons()


def test_judge_passes_the_healthy_control():
    scenario = zoo.get("healthy_mlp_control")
    x, y = scenario.load_data()
    result = _judge(scenario.build_fn, x, y, batch=scenario.batch_size, steps=60, epochs=3)
    assert result.healthy, result.reasons()
    assert result.diverged == 0 and result.learns
    assert result.spread <= judge.SPREAD_LIMIT
    assert all(len(r.val_losses) == 3 for r in result.runs)
    # The control repairs nothing, but kept as it is it stays healthy.
    assert judge.verdict(result, result, healthy_scenario=True).repaired


def test_one_compiled_model_across_seeds_matches_fresh_builds(digits):
    """The judge's speed-up (weights and optimizer state copied in) changes no result."""
    scenario = zoo.get("healthy_mlp_control")
    x, y = digits
    together = _judge(scenario.build_fn, x, y, batch=32, steps=20, epochs=2, seeds=(5, 6))
    alone = [_judge(scenario.build_fn, x, y, batch=32, steps=20, epochs=2, seeds=(s,))
             for s in (5, 6)]
    for run, single in zip(together.runs, alone):
        np.testing.assert_allclose(run.val_losses, single.runs[0].val_losses, rtol=1e-4)
        assert run.initial_loss == pytest.approx(single.runs[0].initial_loss, rel=1e-5)


def _judgement(finals: list[float], initial: float = 2.3) -> judge.Judgement:
    runs = [judge.SeedRun(seed=i, initial_loss=initial,
                          val_losses=[] if math.isinf(f) else [initial, f],
                          diverged=math.isinf(f), steps=10, seconds=0.0)
            for i, f in enumerate(finals)]
    return judge.Judgement(runs)


def test_repair_needs_no_divergence_a_better_loss_and_a_small_spread():
    baseline = _judgement([1.0, 1.0, 1.1, 0.9, 1.0])
    assert judge.verdict(_judgement([0.5] * 5), baseline, healthy_scenario=False).repaired
    not_better = judge.verdict(_judgement([0.95] * 5), baseline, healthy_scenario=False)
    assert not not_better.repaired and "not 10% below" in not_better.reasons[0]
    noisy = judge.verdict(_judgement([0.2, 0.8, 0.3, 0.9, 0.25]), baseline,
                          healthy_scenario=False)
    assert not noisy.repaired and "spread" in noisy.reasons[0]
    one_nan = judge.verdict(_judgement([0.5, 0.5, math.inf, 0.5, 0.5]), baseline,
                            healthy_scenario=False)
    assert not one_nan.repaired and "diverged on 1 of 5" in one_nan.reasons[0]


def test_against_a_diverged_baseline_a_repair_must_still_learn():
    baseline = _judgement([math.inf, 1.0, math.inf, 1.0, 1.0])
    assert math.isinf(baseline.mean_final) and not baseline.healthy
    assert judge.verdict(_judgement([1.5] * 5), baseline, healthy_scenario=False).repaired
    stuck = judge.verdict(_judgement([2.25] * 5), baseline, healthy_scenario=False)
    assert not stuck.repaired and "does not learn" in stuck.reasons[0]
    # A baseline that diverged gives no spread allowance: the limit is SPREAD_LIMIT.
    noisy = judge.verdict(_judgement([0.2, 0.8, 0.3, 0.9, 0.25]), baseline,
                          healthy_scenario=False)
    assert not noisy.repaired


def test_healthy_control_tolerates_five_percent():
    baseline = _judgement([0.5] * 5)
    assert judge.verdict(_judgement([0.52] * 5), baseline, healthy_scenario=True).repaired
    worse = judge.verdict(_judgement([0.55] * 5), baseline, healthy_scenario=True)
    assert not worse.repaired and "5%" in worse.reasons[0]


def test_largest_spike_is_measured_after_the_first_epoch():
    run = judge.SeedRun(0, 3.0, [2.0, 1.0, 3.0, 0.5], diverged=False, steps=40, seconds=0.0)
    assert run.largest_spike == pytest.approx(3.0)
    assert judge.SeedRun(0, 3.0, [9.0], False, 10, 0.0).largest_spike == 1.0


def test_zoo_covers_every_cause_with_one_healthy_control():
    assert len(zoo.names(healthy=False)) >= 10
    assert zoo.names(healthy=True) == ["healthy_mlp_control"]
    causes = " ".join(s.cause for s in zoo.SCENARIOS.values())
    for cause in ("exploding", "vanishing", "dying ReLU", "oscillating", "BatchNorm",
                  "initializer", "unscaled", "CNN", "autoencoder"):
        assert cause in causes
    assert any("RNN" in s.problem for s in zoo.SCENARIOS.values())
    with pytest.raises(KeyError, match="no zoo scenario 'nope'"):
        zoo.get("nope")


def test_render_reports_totals_and_every_scenario():
    def method(repaired, ratio, diverged=0):
        j = _judgement([math.inf] * diverged + [0.5] * (5 - diverged)).to_dict()
        return {"config": "x", "search_seconds": 1.0, "probe_steps": 10, "candidates": 1,
                "detail": {"probe_seconds": 0.9, "search_overhead": 1.1}, "judge": j,
                "verdict": {"repaired": repaired, "loss_ratio": ratio, "reasons": []},
                "repaired": repaired}

    rows = [{"scenario": name, "cause": "c", "problem": "p", "healthy": healthy, "space": "s",
             "batch_size": 32, "baseline_healthy": healthy, "baseline_reasons": [],
             "methods": {m: method(m == "stabilizer", 0.5) for m in compare.METHODS}}
            for name, healthy in (("a", False), ("b", False), ("ctl", True))]
    report = {"scenarios": rows, "totals": compare.totals(rows), "preset_name": "quick",
              "preset": {**compare.PRESETS["quick"].__dict__,
                         "budget_steps": compare.PRESETS["quick"].budget_steps},
              "machine": "m", "jobs": 1, "load_average": "0", "wall_seconds": 60.0}
    assert report["totals"]["stabilizer"]["repaired"] == 2
    assert report["totals"]["optuna_tpe"]["repaired"] == 0
    assert report["totals"]["stabilizer"]["healthy_kept"] == [True]
    text = compare.render_markdown(report)
    assert "| (e) stabilizer | 2/2 | yes |" in text
    assert "### ctl" in text and "overall 1.111" in text
    control_only = {**report, "scenarios": rows[2:], "totals": compare.totals(rows[2:])}
    # no unstable scenario: no median spread (not "inf", which would mean a diverged seed)
    assert "| (e) stabilizer | 0/0 | yes | n/a | n/a | 0 |" in \
        compare.render_markdown(control_only, full=False)


def test_a_search_seed_reseeds_the_searches_and_leaves_the_data_alone(tmp_path, capsys):
    from stabilizer.probe import probe_seeds

    preset = compare.PRESETS["quick"]
    plain = compare.scenario_setup("healthy_mlp_control", preset, tmp_path / "a")
    other = compare.scenario_setup("healthy_mlp_control",
                                   compare.Preset(**{**preset.__dict__, "search_seed": 3}),
                                   tmp_path / "b")
    assert (plain.settings.seed, other.settings.seed) == (0, 3)
    assert probe_seeds(plain.settings) != probe_seeds(other.settings)
    for a, b in ((plain.data.x, other.data.x), (plain.data.y_val, other.data.y_val),
                 (plain.held_out[0], other.held_out[0])):
        np.testing.assert_array_equal(a, b)
    # the split is the one stabilize() makes at its default seed
    np.testing.assert_array_equal(plain.data.x_val,
                                  prepare_data(plain.search_arrays, seed=0).x_val)
    assert compare.report_suffix("full", 0, subset=False) == "full"
    assert compare.report_suffix("full", 2, subset=True) == "full_seed2_subset"
    with pytest.raises(SystemExit) as bad:
        compare.main(["--search-seed", "-1"])
    assert bad.value.code == 2 and "--search-seed=-1: expected an integer >= 0" in \
        capsys.readouterr().err


def _trial(number, *, loss, lr, repaired, judged, chosen=False, verdict="stable"):
    return {"number": number, "score": -loss, "verdict": verdict, "probe_final_loss": loss,
            "learning_rate": lr, "judge_mean_final": judged, "judge_spread": 0.1,
            "repaired": repaired, "reasons": [], "config": f"learning_rate={lr}",
            "chosen": chosen}


def test_choice_report_separates_a_missed_choice_from_a_missed_search():
    from benchmarks import choice

    missed_choice = {"scenario": "a", "healthy": False, "chosen": 0, "baseline_user_lr": 1.0,
                     "chosen_repaired": False, "any_repaired": True, "trials": [
                         _trial(0, loss=1.0, lr=0.1, repaired=False, judged=0.5, chosen=True),
                         _trial(1, loss=1.08, lr=0.01, repaired=True, judged=0.6),
                         _trial(2, loss=1.5, lr=0.001, repaired=True, judged=0.9),
                         _trial(3, loss=1.01, lr=None, repaired=False, judged=0.5,
                                verdict="unstable")]}
    missed_search = {"scenario": "b", "healthy": False, "chosen": None, "baseline_user_lr": 1.0,
                     "chosen_repaired": False, "any_repaired": False, "trials": []}
    # Within 10% of the chosen probe loss: trials 0 and 1 (3 is not stable); 1 has the
    # smaller learning rate. Within 5%: only the chosen one.
    assert choice.conservative_pick(missed_choice, 0.1)["number"] == 1
    assert choice.conservative_pick(missed_choice, 0.05)["number"] == 0
    assert choice.conservative_pick(missed_search, 0.5) is None
    totals = choice.totals([missed_choice, missed_search])
    assert (totals["chosen"], totals["any_trial"], totals["scenarios"]) == (0, 1, 2)
    assert totals["conservative_tau_0.1"]["repaired"] == 1
    assert totals["conservative_tau_0.1"]["geomean_loss_vs_chosen"] == pytest.approx(1.2)
    assert totals["conservative_tau_0.05"] == {"repaired": 0, "geomean_loss_vs_chosen": 1.0}


def test_the_gap_replay_takes_each_trials_generalization_gap_off_its_score(tmp_path, capsys):
    from benchmarks import choice

    def ends(train, val):
        return [{"train_tail": train, "val_final": val, "val_min": val}] * 2

    # Trial 0 scores best but its validation loss ends 2.7x its training loss (gap 1);
    # trial 1 scores 0.5 lower with no gap. Trial 2 has no gap and the best adjusted
    # score, but is unstable: stable trials come first.
    overfit = {**_trial(0, loss=1.0, lr=0.1, repaired=False, judged=0.5, chosen=True),
               "probe_seeds": ends(0.1, 0.1 * math.e)}
    sound = {**_trial(1, loss=1.5, lr=0.1, repaired=True, judged=0.4),
             "probe_seeds": ends(0.3, 0.2)}  # below the training loss: no credit
    unstable = {**_trial(2, loss=1.1, lr=0.1, repaired=True, judged=0.4, verdict="unstable"),
                "probe_seeds": ends(0.3, 0.3)}
    row = {"scenario": "a", "healthy": False, "chosen": 0, "baseline_user_lr": 1.0,
           "chosen_repaired": False, "any_repaired": True, "trials": [overfit, sound, unstable]}
    assert choice.gap_penalty(overfit) == pytest.approx(1.0)
    assert choice.gap_penalty(sound) == 0.0
    assert choice.gap_penalty(_trial(3, loss=1.0, lr=0.1, repaired=False, judged=1.0)) == 0.0
    assert choice.gap_pick(row, 0.0)["number"] == 0  # the stabilizer's own choice
    assert choice.gap_pick(row, 0.4)["number"] == 0
    assert choice.gap_pick(row, 1.0)["number"] == 1
    assert choice.gap_pick({**row, "chosen": None}, 1.0) is None  # a kept baseline stays
    totals = choice.totals([row])
    assert totals["gap_weight_1"] == {"repaired": 1, "geomean_loss_vs_chosen":
                                      pytest.approx(0.8)}
    assert totals["gap_weight_0.5"]["repaired"] == 0
    stored = tmp_path / "choice.json"
    stored.write_text(json.dumps({"preset_name": "quick", "machine": "m", "code": "c",
                                  "wall_seconds": 60.0, "scenarios": [row], "totals": {}}))
    assert choice.main(["--replay", str(stored)]) == 0
    assert "| score - 1 x generalization gap | 1 | 0.800 |" in capsys.readouterr().out


def _noise_row(name, healthy, verdicts):
    """A judge_noise row: per method, one verdict per draw (True = repaired)."""
    from benchmarks import judge_noise

    def entry(repaired):
        return {"repaired": repaired, "spread": 0.1 if repaired else 0.3, "mean_final": 1.0,
                "diverged": 0, "healthy": True, "reasons": [],
                "finals": [1.0, math.e] if repaired else [1.0, None]}

    draws = len(next(iter(verdicts.values())))
    return {"scenario": name, "healthy": healthy, "configs": {},
            "baseline": [entry(None) for _ in range(draws)],
            "methods": {m: [entry(v) for v in verdicts.get(m, [False] * draws)]
                        for m in judge_noise.SEARCHES}}


def test_judge_noise_counts_repairs_per_draw_and_names_the_verdicts_that_flip():
    from benchmarks import judge_noise

    rows = [_noise_row("a", False, {"stabilizer": [True, False, True],
                                    "optuna_tpe": [True, True, True]}),
            _noise_row("b", False, {"stabilizer": [True, True, True]}),
            _noise_row("ctl", True, {"stabilizer": [True, True, False],
                                     "optuna_tpe": [True, True, True]})]
    totals = judge_noise.totals(rows, draws=2)
    assert totals["stabilizer"]["repaired_per_draw"] == [2, 1, 2]
    assert totals["stabilizer"]["repaired_on_every_draw"] == 1
    assert totals["stabilizer"]["control_kept_per_draw"] == [True, True, False]
    assert totals["stabilizer"]["flipped"] == ["a", "ctl"]
    assert totals["optuna_tpe"]["repaired_per_draw"] == [1, 1, 1]
    assert totals["optuna_tpe"]["flipped"] == []
    assert (totals["flipped_verdicts"], totals["verdicts"]) == (2, 12)
    report = {"source": "s.json", "source_code": "abc", "preset_name": "quick", "code": "def",
              "machine": "m", "wall_seconds": 60.0, "draws": 2,
              "seeds": [list(judge_noise.draw_seeds(d)) for d in range(3)],
              "scenarios": rows, "totals": totals}
    text = judge_noise.render_markdown(report)
    assert "| stabilizer | 2/2 | 1/2 | 2/2 | 1 | yes/yes/no | a, ctl |" in text
    assert "| a | " in text and "R-R (0.1, 0.3, 0.1; all inf)" in text  # a seed diverged
    assert "RRR (0.1, 0.1, 0.1; all 0.5)" in text  # log finals 0, 1 on every draw: std 0.5
    assert judge_noise.draw_seeds(0) == judge.JUDGE_SEEDS
    assert judge_noise.draw_seeds(2) == tuple(s + 2000 for s in judge.JUDGE_SEEDS)


def test_rejudging_a_compare_row_trains_each_draw_on_its_own_fresh_seeds():
    from benchmarks import judge_noise

    preset = compare.Preset(probe_steps=10, evaluations=1, trials=1, seeds=1, judge_factor=2)
    user = StabilityConfig().to_dict()
    lower = StabilityConfig(learning_rate=1e-4).to_dict()
    judged = {"spread": 0.01, "mean_final": 1.0, "diverged": 0, "healthy": True, "reasons": []}
    methods = {m: {"config": m, "config_dict": user, "judge": judged, "repaired": True}
               for m in compare.METHODS}
    methods["optuna_tpe"] = {"config": "slow", "config_dict": lower, "judge": judged,
                             "repaired": True}
    row = {"scenario": "healthy_mlp_control", "healthy": True, "methods": methods}
    out = judge_noise.rejudge(row, preset, draws=2)
    base = out["baseline"]
    assert len(base) == 3 and base[0]["mean_final"] == 1.0  # draw 0: the compare run's
    assert all(math.isfinite(e["mean_final"]) for e in base[1:])
    assert base[1]["mean_final"] != base[2]["mean_final"]  # other seeds, other runs
    # the user's own configuration keeps the healthy control on every draw (same training)
    assert [e["repaired"] for e in out["methods"]["stabilizer"]] == [True, True, True]
    # a learning rate 10x below Adam's default learns less in 20 steps: not kept
    assert out["methods"]["optuna_tpe"][1]["repaired"] is False
    assert out["methods"]["optuna_tpe"][1]["mean_final"] > 1.05 * base[1]["mean_final"]


def test_judge_noise_reads_a_compare_report_and_writes_its_own(tmp_path, capsys):
    import json

    from benchmarks import judge_noise

    preset = compare.Preset(probe_steps=10, evaluations=1, trials=1, seeds=1, judge_factor=2)
    judged = {"spread": 0.01, "mean_final": 1.0, "diverged": 0, "healthy": True, "reasons": [],
              "runs": [{"final_loss": 1.0}] * 5}
    methods = {m: {"config": m, "config_dict": StabilityConfig().to_dict(), "judge": judged,
                   "repaired": True} for m in compare.METHODS}
    source = tmp_path / "compare_quick.json"
    source.write_text(json.dumps({
        "preset_name": "quick", "code": "abc1234",
        "preset": {**preset.__dict__, "budget_steps": preset.budget_steps},
        "scenarios": [{"scenario": "healthy_mlp_control", "healthy": True, "methods": methods}]}))
    with pytest.raises(SystemExit) as missing:
        judge_noise.main(["--source", str(tmp_path / "nope.json")])
    assert missing.value.code == 2 and "--source" in capsys.readouterr().err
    assert judge_noise.main(["--source", str(source), "--draws", "1",
                             "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "judge_noise_quick.json").read_text())
    assert report["source_code"] == "abc1234" and report["seeds"][1] == [8001, 8002, 8003,
                                                                          8004, 8005]
    assert report["totals"]["stabilizer"]["control_kept_per_draw"] == [True, True]
    text = (tmp_path / "out" / "judge_noise_quick.md").read_text()
    assert text.startswith("# `python -m benchmarks.judge_noise --source")
    assert "| stabilizer | 0/0 | 0/0 | 0 | yes/yes | - |" in text
    # a compare run at another search seed: its re-judging is named after that seed
    seeded = json.loads(source.read_text())
    seeded["preset"]["search_seed"] = 1
    source.write_text(json.dumps(seeded))
    assert judge_noise.main(["--source", str(source), "--draws", "1",
                             "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "judge_noise_quick_seed1.json").is_file()


def test_more_probe_seeds_buy_fewer_trials_within_the_same_probe_budget():
    from benchmarks import seed_count

    for preset in compare.PRESETS.values():  # two seeds: compare's own count
        assert seed_count.stabilizer_budget(preset, 2) == preset.trials - 1
    full = compare.PRESETS["full"]
    budget = seed_count.stabilizer_budget(full, 3)
    cost = lambda trials: ((trials + 1) * 3 + seed_count.LR_TESTS) * full.probe_steps  # noqa: E731
    assert budget == 12 and cost(budget) <= full.budget_steps < cost(budget + 1)


def _seed_row(name, healthy, verdicts):
    """A seed_count row: per search seed, one verdict per draw (True = repaired)."""
    return {"scenario": name, "healthy": healthy, "budget": 3, "baseline": [0.2, 0.2],
            "searches": [{"search_seed": s, "config": f"c{s}", "probe_steps": 100 + s,
                          "draws": [{"repaired": v, "spread": 0.1, "mean_final": 1.0,
                                     "reasons": []} for v in draws]}
                         for s, draws in enumerate(verdicts)]}


def test_seed_count_totals_every_search_seed_and_draw():
    from benchmarks import seed_count

    rows = [_seed_row("a", False, [[True, False], [True, True]]),
            _seed_row("b", False, [[True, True], [False, False]]),
            _seed_row("ctl", True, [[True, True], [True, False]])]
    t = seed_count.totals(rows)
    assert [c["repaired"] for c in t["cells"]] == [2, 1, 1, 1]
    assert [c["control_kept"] for c in t["cells"]] == [True, True, True, False]
    assert (t["sum"], t["best"], t["probe_steps_max"]) == (5, 2, 101)
    report = {"preset_name": "quick", "seeds": 3, "budget": 3, "code": "abc", "machine": "m",
              "wall_seconds": 60.0, "scenarios": rows, "totals": t,
              "preset": {**compare.PRESETS["quick"].__dict__,
                         "budget_steps": compare.PRESETS["quick"].budget_steps}}
    text = seed_count.render_markdown(report)
    assert "**5** over 4 search seed x draw cells (best cell 2)" in text
    assert "| 1 | 1 | 1/2 | no |" in text and "| a | 0 | R- | 0.1, 0.1 | 1, 1 | c0 |" in text


@pytest.mark.slow
def test_seed_count_searches_on_more_seeds_within_the_budget_and_judges_each_draw():
    from benchmarks import seed_count

    # 6 x 10 steps: the baseline and one trial on two seeds, and the LR range tests
    preset = compare.Preset(probe_steps=10, evaluations=1, trials=5, seeds=1, judge_factor=2)
    row = seed_count.run_scenario("healthy_mlp_control", preset, 2, (0,), 1)
    assert row["budget"] == 1 and len(row["baseline"]) == 2
    (search,) = row["searches"]
    assert 0 < search["probe_steps"] <= preset.budget_steps
    assert search["candidates"] >= 2  # the baseline and a trial, each on two probe seeds
    assert len(search["draws"]) == 2
    assert all(isinstance(e["repaired"], bool) and math.isfinite(e["mean_final"])
               for e in search["draws"])
    assert search["draws"][0]["mean_final"] != search["draws"][1]["mean_final"]


def test_a_search_that_raises_is_recorded_as_not_repaired_and_the_others_go_on(monkeypatch):
    from benchmarks import seed_count

    def runs(final):
        return judge.Judgement([judge.SeedRun(s, 2.3, [1.0, final * (1 + s / 100)], False,
                                              10, 0.1) for s in range(5)])

    def search(build_fn, data, settings, root):
        if settings.seed == 0:
            raise RuntimeError("the user's build_fn broke")
        return compare.Outcome(StabilityConfig(learning_rate=0.01), 1.0, 40, 3)

    monkeypatch.setattr(seed_count, "stabilizer_search", search)
    monkeypatch.setattr(seed_count, "judge_on", lambda setup, config, preset, seeds:
                        runs(2.0 if config.learning_rate is None else 0.5))
    preset = compare.Preset(probe_steps=10, evaluations=1, trials=5, seeds=1, judge_factor=2)
    row = seed_count.run_scenario("dying_relu_large_lr", preset, 2, (0, 1), 1)
    failed, ok = row["searches"]
    assert "RuntimeError: the user's build_fn broke" in failed["error"]
    assert [e["repaired"] for e in failed["draws"]] == [False, False]
    assert "the search failed" in failed["draws"][0]["reasons"][0]
    assert [e["repaired"] for e in ok["draws"]] == [True, True]
    t = seed_count.totals([row])
    assert [c["repaired"] for c in t["cells"]] == [0, 0, 1, 1]
    report = {"preset_name": "quick", "seeds": 2, "budget": 1, "code": "abc", "machine": "m",
              "wall_seconds": 60.0, "scenarios": [row], "totals": t,
              "preset": {**preset.__dict__, "budget_steps": preset.budget_steps}}
    text = seed_count.render_markdown(report)  # nothing judged: no figures, not "inf"
    assert "| dying_relu_large_lr | 0 | -- | n/a | n/a | search failed |" in text
    assert "| dying_relu_large_lr | 1 | RR | 0.0139, 0.0139 | 0.51, 0.51 |" in text


def test_seed_count_rejects_bad_arguments(capsys):
    from benchmarks import seed_count

    for argv, message in ((["--seeds", "0"], "--seeds=0: expected an integer >= 1"),
                          (["--search-seeds", "a,1"], "--search-seeds=a,1: expected integers"),
                          (["--seeds", "7"], "--seeds=7: the quick budget")):
        with pytest.raises(SystemExit) as bad:
            seed_count.main(argv)
        assert bad.value.code == 2 and message in capsys.readouterr().err


def test_chance_levels_are_the_constant_predictions_losses_on_the_held_out_data():
    from benchmarks import chance_levels

    levels = chance_levels.chance_levels(["exploding_rnn_long_sequences", "healthy_mlp_control"])
    # The adding problem: predicting the mean target scores an MSE of about 1/6.
    assert 0.14 < levels["exploding_rnn_long_sequences"] < 0.18
    assert levels["healthy_mlp_control"] == pytest.approx(math.log(10), abs=0.01)


def _compare_row(name, healthy, methods):
    """A compare row: per method, (repaired, judged mean final loss)."""
    return {"scenario": name, "healthy": healthy,
            "methods": {m: {"verdict": {"repaired": rep}, "judge": {"mean_final": mean}}
                        for m, (rep, mean) in methods.items()}}


def test_a_repair_that_ends_at_the_chance_level_is_listed_not_counted(tmp_path, capsys):
    from benchmarks import chance_levels

    levels = {"rnn": 0.16, "mlp": 2.3, "ctl": 2.3}
    report = {"preset_name": "quick", "code": "abc", "scenarios": [
        _compare_row("rnn", False, {"baseline": (False, None), "tpe": (True, 0.15),
                                    "stab": (True, 0.14)}),
        _compare_row("mlp", False, {"tpe": (True, 0.2), "stab": (False, 0.1)}),
        _compare_row("ctl", True, {"tpe": (True, 2.29), "stab": (True, 2.29)})]}
    read = chance_levels.read_report(report, levels)
    assert set(read["methods"]) == {"tpe", "stab"}  # the baseline is not a method here
    tpe, stab = read["methods"]["tpe"], read["methods"]["stab"]
    assert (tpe["repaired"], tpe["beyond_chance"]) == (2, 1)  # 0.15 is not 10% below 0.16
    assert tpe["at_chance"] == [{"scenario": "rnn", "mean_final": 0.15, "chance": 0.16}]
    assert (stab["repaired"], stab["beyond_chance"], stab["at_chance"]) == (1, 1, [])
    text = chance_levels.render_markdown(levels, {"r.json": read})
    assert "| r.json | tpe | 2 | 1 | rnn 0.15 vs 0.16 |" in text
    with pytest.raises(SystemExit) as bad:
        chance_levels.main([str(tmp_path / "missing.json")])
    assert bad.value.code == 2 and "missing.json: no such report" in capsys.readouterr().err
    # A judge_noise report: every draw counts.
    draws = {"scenarios": [{"scenario": "rnn", "healthy": False, "methods": {"tpe": [
        {"repaired": True, "mean_final": 0.1}, {"repaired": True, "mean_final": 0.16},
        {"repaired": False, "mean_final": 0.1}]}}]}
    tpe = chance_levels.read_report(draws, levels)["methods"]["tpe"]
    assert (tpe["repaired"], tpe["beyond_chance"], len(tpe["at_chance"])) == (2, 1, 1)


def test_seed_count_counts_repairs_and_the_misses_by_reason():
    from benchmarks import seed_count

    def search(*draws):
        return {"candidates": 4, "draws": [
            {"repaired": d == "R", "reasons": [] if d == "R" else
             ["seed spread 0.2 above 0.15"] if d == "s" else ["final loss 2 not below 1"]}
            for d in draws]}

    report = {"scenarios": [
        {"scenario": "a", "healthy": False, "searches": [search("R", "s", "o"), search("s")]},
        {"scenario": "control", "healthy": True, "searches": [search("o", "o")]}]}
    assert seed_count.count(report) == {"repaired": 1, "verdicts": 4, "seed_spread_misses": 2,
                                        "other_misses": 1, "candidates_mean": 4.0}

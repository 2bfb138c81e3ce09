"""The yardstick: generated scenarios, judged at their training length, with intervals.

Does the stabilizer repair unstable training better than what a user would pick instead?
Each scenario (`benchmarks.zoo.generated`: a family of unstable training drawn from a
seed, with the user's training length; or a hand-written zoo scenario) is searched by
every method; each choice and the user's own configuration are trained by the judge for
the scenario's length on fresh seeds and measured on held-out data.

The judge (thresholds written down before any result of this benchmark was seen):

- `benchmarks.judge`'s training and rules: a seed diverges on a NaN/Inf loss or a
  held-out loss above 10x the untrained one; a **repair** does not diverge, learns, ends
  at least 10% below the baseline's mean final held-out loss, and its seed spread (std of
  log final loss) is at most 0.15 (or the baseline's); on a healthy scenario a method
  **keeps it healthy** when it does not diverge and ends at most 5% above the baseline.
- **Learns**, against the chance level: the mean final held-out loss is at least 10% below
  the untrained model's AND at least 10% below the chance level (the held-out loss of the
  best constant prediction, `stabilizer.chance`), where one is known. Falling from a bad
  start to chance is not learning.
- The judge trains for the scenario's `train_steps` (what the stabilizer is told, as a user
  would tell it), in 10 evaluations, on `judge_seeds` seeds (10 in the full preset),
  7001, 7002, ... (no search uses them).
- Every verdict carries its **agreement**: the share of 200 paired bootstrap resamples of
  the judge seeds that give the same verdict (`benchmarks.stats.verdict_agreement`).

Methods, at equal wall time: the stabilizer runs first; each search peer gets its wall
time as a time limit (``probe_steps`` beside each method says what it spent). Peers:
Optuna TPE on the final validation loss of plain probes (``optuna_tpe``), the same with
Optuna's `MedianPruner` (``optuna_tpe_median``: after each seed's probe), KerasTuner's
`RandomSearch` (``keras_tuner_random``), the LR range test alone (``lr_range_test``) and
the user's own configuration (the baseline, never a repair). ``stabilizer_flat`` (by
``--methods``) is the stabilizer without its ladder (``horizon_fraction=0``).

Statistics (`benchmarks.stats`): per method the repair rate of the unstable scenarios with
a 90% interval (bootstrap over scenarios and judge seeds), per peer the paired difference
stabilizer minus peer with its interval, the healthy controls kept, with every false alarm
listed, and anytime rates: each search's choice after 2, 5, 10 and 20 of its trials (within
its budget) judged the same way (the stabilizer's by its choice rule at the probe length;
the peers' by their lowest loss so far).

Presets: ``quick`` (a stated subset: 6 unstable scenarios with training lengths of 300-600
steps and one healthy control, 5 judge seeds, 6 trials of 40-step probes; the stabilizer,
Optuna TPE and the LR range test) is what to run while developing. ``full``: 3 seeds of each
of the 12 families (36 unstable) and 6 healthy controls, 10 judge seeds, 20 trials of
120-step probes, every peer; run in shards (``--shard i/n``: the i-th of n contiguous
blocks of the preset's list, which holds every family once per seed), each written
scenario by scenario and resumable (``--resume``), then merged (``--merge``) into one
table. At 4 shards a shard is 10-11 scenarios, about 35-45 minutes with ``--jobs 2``
here; the whole preset about 2.5 hours of the 2 cores (docs/experiments/yardstick.md).

Usage (from the repository root)::

    python -m benchmarks.yardstick --preset quick --jobs 2
    python -m benchmarks.yardstick --preset full --shard 1/4 --jobs 2 --resume   # 1/4 .. 4/4
    python -m benchmarks.yardstick --preset full --merge

Writes ``yardstick_<preset>[_shard<i>of<n>].json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.compare import (  # noqa: E402
    RESULTS,
    Outcome,
    _code_version,
    failure_text,
    keras_tuner_random,
    lr_range,
    machine,
    split,
    stabilizer_search,
    write_report,
)
from benchmarks.judge import (  # noqa: E402
    LEARNING_FRACTION,
    Judgement,
    SeedRun,
    config_setup,
    judge,
    train_seeds,
    verdict,
)
from benchmarks.stats import bootstrap_rates, verdict_agreement  # noqa: E402
from benchmarks.zoo import generated  # noqa: E402

__all__ = ["PRESETS", "YardstickPreset", "judged_verdict", "judgement_from_dict", "main",
           "render_markdown", "run_scenario", "summarize"]

PEERS = ("optuna_tpe", "optuna_tpe_median", "keras_tuner_random", "lr_range_test")
#: Evaluations of the judge's training (the held-out loss after each tenth).
JUDGE_EVALUATIONS = 10
QUICK = ("gen-exploding_mlp-1", "gen-oscillation-0", "gen-unscaled_inputs-0",
         "gen-cnn_high_lr-0", "gen-unscaled_targets-0", "gen-dying_relu-1", "gen-healthy-0")


@dataclasses.dataclass(frozen=True)
class YardstickPreset:
    scenarios: tuple[str, ...]
    probe_steps: int
    evaluations: int
    trials: int
    seeds: int
    judge_seeds: int
    methods: tuple[str, ...]

    @property
    def seeds_judged(self) -> tuple[int, ...]:
        return tuple(range(7001, 7001 + self.judge_seeds))


PRESETS = {
    "quick": YardstickPreset(QUICK, probe_steps=40, evaluations=2, trials=6, seeds=2,
                             judge_seeds=5, methods=("stabilizer", "optuna_tpe",
                                                     "lr_range_test")),
    "full": YardstickPreset(tuple(generated.scenario_names(seeds=range(3), healthy=6)),
                            probe_steps=120, evaluations=4, trials=20, seeds=2,
                            judge_seeds=10, methods=("stabilizer", *PEERS)),
}


# -- the judge's verdict, against the chance level -----------------------------------------
def judged_verdict(candidate: Judgement, baseline: Judgement, *, healthy: bool,
                   chance: float | None) -> tuple[bool, list[str]]:
    """(repaired or kept healthy, the reasons when not): `benchmarks.judge.verdict`, and on
    an unstable scenario the chance-level rule of the module docstring."""
    v = verdict(candidate, baseline, healthy_scenario=healthy)
    reasons = list(v.reasons)
    if not healthy and not candidate.diverged and chance is not None and math.isfinite(chance) \
            and candidate.mean_final > (1 - LEARNING_FRACTION) * chance:
        reasons.append(f"does not learn against chance (final {candidate.mean_final:.4g} vs "
                       f"chance {chance:.4g})")
    return not reasons, reasons


# -- the peers at equal wall time -------------------------------------------------------------
def _tpe(build_fn: Any, space: Any, settings: Any, data: Any, seconds: float,
         pruned: bool) -> Outcome:
    """Optuna TPE on plain final validation loss for `seconds` (at least one trial); with
    `pruned`, Optuna's MedianPruner after each seed's probe."""
    import optuna

    from stabilizer.probe import probe_seeds
    from stabilizer.search.optuna import OptunaSuggester

    records: list[tuple[Any, float]] = []
    steps = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal steps
        config = space.sample(OptunaSuggester(trial), max_batch_size=data.train_size)
        losses = []
        for i, seed in enumerate(probe_seeds(settings)):
            runs = train_seeds(config_setup(build_fn, config, settings, settings.probe_steps,
                                            data.y), data, [seed], steps=settings.probe_steps,
                               epochs=settings.evaluations, divergence_factor=math.inf)
            steps += runs[0].steps
            losses.append(runs[0].final_loss)
            if pruned:
                trial.report(float(np.mean(losses)), i)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        records.append((config, float(np.mean(losses))))
        return float(np.mean(losses))

    start = time.perf_counter()
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(
        8, max(2, settings.trials // 3)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if pruned else None
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=1, gc_after_trial=False)
    study.optimize(objective, n_trials=500, timeout=max(0.0, seconds - (time.perf_counter()
                                                                       - start)),
                   gc_after_trial=False)
    best = min(records, key=lambda r: r[1])[0] if records else None
    return Outcome(best, time.perf_counter() - start, steps, len(study.trials),
                   detail={"records": records})


def _keras_tuner(build_fn: Any, space: Any, settings: Any, data: Any, seconds: float,
                 root: Path) -> Outcome:
    """KerasTuner RandomSearch for about `seconds`: 2 trials, timed, then as many more as
    the rest of the time pays for at that pace (the tuner has no time limit of its own);
    the lower of the two runs' best plain losses wins."""
    start = time.perf_counter()
    first = keras_tuner_random(build_fn, space, dataclasses.replace(settings, trials=1), data,
                               root / "kt1")
    per_trial = max(first.seconds / max(1, first.candidates), 1e-3)
    more = int((seconds - (time.perf_counter() - start)) / per_trial)
    runs = [first]
    if more >= 2:
        runs.append(keras_tuner_random(build_fn, space, dataclasses.replace(
            settings, trials=more - 1), data, root / "kt2"))

    def best_loss(outcome: Outcome) -> float:
        losses = [v for v in outcome.detail.get("losses", []) if v is not None]
        return min(losses) if losses else math.inf
    best = min(runs, key=best_loss)
    return Outcome(best.config, time.perf_counter() - start, sum(r.steps for r in runs),
                   sum(r.candidates for r in runs))


# -- anytime: the choice after k trials --------------------------------------------------------
#: Trial counts at which each search's choice so far is judged too (those within its trials).
ANYTIME = (2, 5, 10, 20)


def best_so_far(losses: list[tuple[Any, float]], k: int) -> Any:
    """A plain search's choice after its first `k` trials: the lowest loss (the first on
    ties; None before any trial)."""
    first = losses[:k]
    return min(first, key=lambda r: (r[1], first.index(r)))[0] if first else None


def stabilizer_so_far(result: Any, k: int) -> Any:
    """The stabilizer's choice after its first `k` trials, by its own rule at the probe
    length (`choose_best` against your configuration's first probes; the ladder, which
    runs after the trials, is left out)."""
    from stabilizer.result import Candidate
    from stabilizer.scoring import ScoreComponents
    from stabilizer.search import choose_best, restore_nan

    first = result.rungs[0] if result.rungs else None
    if first is not None and first.get("baseline_components"):
        base = Candidate(result.baseline.config, ScoreComponents.from_dict(
            restore_nan(first["baseline_components"])), first["baseline_curves"])
    else:
        base = result.baseline
    return choose_best(list(result.trials)[:k], base).best.config


# -- one scenario -------------------------------------------------------------------------------
def judgement_from_dict(d: dict[str, Any]) -> Judgement:
    runs = []
    for r in d["runs"]:
        runs.append(SeedRun(r["seed"], r["initial_loss"] if r["initial_loss"] is not None
                            else math.inf,
                            [v if v is not None else math.nan for v in r["val_losses"]],
                            r["diverged"], r["steps"], r["seconds"]))
    return Judgement(runs)


def run_scenario(name: str, preset: YardstickPreset, search_seed: int = 0) -> dict[str, Any]:
    """Every method on one scenario, each choice judged; a JSON-ready row."""
    import keras
    import optuna

    from benchmarks import zoo
    from stabilizer.chance import chance_loss
    from stabilizer.config import SearchConfig, StabilityConfig
    from stabilizer.data import prepare_data
    from stabilizer.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    scenario = zoo.get(name)
    train_steps = scenario.train_steps or 3 * preset.probe_steps
    search_arrays, held_out = split(*scenario.load_data())
    root = Path(tempfile.mkdtemp(prefix=f"yard-{name}-"))
    settings = SearchConfig(space=scenario.space, trials=preset.trials,
                            probe_steps=preset.probe_steps, evaluations=preset.evaluations,
                            seeds=preset.seeds, batch_size=scenario.batch_size,
                            seed=search_seed, out_dir=str(root), train_steps=train_steps)
    data = prepare_data(search_arrays, validation_split=settings.validation_split, seed=0)
    space = load_space(scenario.space)
    model = scenario.build_fn()
    chance = chance_loss(model, model.loss, data.y, held_out[1])
    outcomes: dict[str, Outcome] = {"baseline": Outcome(StabilityConfig())}
    errors: dict[str, str] = {}
    budget = 0.0
    for method in preset.methods:
        keras.backend.clear_session()
        try:
            if method == "stabilizer":
                outcomes[method] = stabilizer_search(scenario.build_fn, data, settings, root)
                budget = outcomes[method].seconds
            elif method == "stabilizer_flat":  # without the ladder: every candidate at the
                flat = dataclasses.replace(settings, horizon_fraction=0.0)  # probe length
                outcomes[method] = stabilizer_search(scenario.build_fn, data, flat,
                                                     root / "flat")
            elif method in ("optuna_tpe", "optuna_tpe_median"):
                outcomes[method] = _tpe(scenario.build_fn, space, settings, data, budget,
                                        pruned=method == "optuna_tpe_median")
            elif method == "keras_tuner_random":
                outcomes[method] = _keras_tuner(scenario.build_fn, space, settings, data,
                                                budget, root)
            elif method == "lr_range_test":
                outcomes[method] = lr_range(scenario.build_fn, space, settings, data, root)
        except Exception as exc:  # recorded and counted as not repaired, never hidden
            errors[method] = failure_text(exc)
    cache: dict[str, Judgement] = {}

    def judged_config(config: Any) -> Judgement:
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in cache:  # the same configuration as another method: same training
            factory = config_setup(scenario.build_fn, config, settings, train_steps, data.y)
            cache[key] = judge(factory, data, steps=train_steps, epochs=JUDGE_EVALUATIONS,
                               val_data=held_out, seeds=preset.seeds_judged)
        return cache[key]

    judged = {m: judged_config(o.config) for m, o in outcomes.items() if o.config is not None}
    baseline = judged["baseline"]
    anytime: dict[str, dict[str, Any]] = {}
    for method, outcome in outcomes.items():
        for k in (k for k in ANYTIME if k < preset.trials):
            if method.startswith("stabilizer") and outcome.result is not None:
                config = stabilizer_so_far(outcome.result, k)
            elif "records" in outcome.detail:
                config = best_so_far(outcome.detail["records"], k)
            else:
                continue
            if config is None:
                continue
            ok, _ = judged_verdict(judged_config(config), baseline, healthy=scenario.healthy,
                                   chance=chance)
            anytime.setdefault(method, {})[str(k)] = {"config": config.describe(),
                                                      "repaired": ok}

    def decide(candidate: Judgement, base: Judgement) -> bool:
        return judged_verdict(candidate, base, healthy=scenario.healthy, chance=chance)[0]

    methods: dict[str, Any] = {}
    for method in ("baseline", *preset.methods):
        if method not in judged:
            methods[method] = {"error": errors.get(method, "no configuration"),
                               "repaired": False}
            continue
        outcome, judgement = outcomes[method], judged[method]
        ok, reasons = judged_verdict(judgement, baseline, healthy=scenario.healthy,
                                     chance=chance)
        methods[method] = {
            "config": outcome.config.describe(), "config_dict": outcome.config.to_dict(),
            "search_seconds": round(outcome.seconds, 2), "probe_steps": outcome.steps,
            "candidates": outcome.candidates, "repaired": ok if method != "baseline" else None,
            "anytime": anytime.get(method, {}),
            "reasons": reasons, "agreement": verdict_agreement(judgement, baseline, decide)
            if method != "baseline" else None,
            "judge": judgement.to_dict()}
    return {"scenario": name, "cause": scenario.cause, "problem": scenario.problem,
            "healthy": scenario.healthy, "train_steps": train_steps, "chance": chance,
            "space": scenario.space, "batch_size": scenario.batch_size, "methods": methods,
            "baseline_healthy": baseline.healthy, "search_seed": search_seed,
            "wall_seconds": round(time.perf_counter() - start, 1)}


# -- the tables ---------------------------------------------------------------------------------
def _scenario_verdict(candidate: Judgement, baseline: Judgement,
                      scenario: dict[str, Any]) -> bool:
    return judged_verdict(candidate, baseline, healthy=False, chance=scenario["chance"])[0]


def summarize(rows: list[dict[str, Any]], methods: tuple[str, ...],
              resamples: int = 1000) -> dict[str, Any]:
    """Repair rates with intervals, paired differences, healthy controls and false alarms."""
    unstable = []
    for row in rows:
        if row["healthy"]:
            continue
        judged = {m: judgement_from_dict(v["judge"]) if "judge" in v else None
                  for m, v in row["methods"].items()}
        unstable.append({"baseline": judged["baseline"], "methods": judged,
                         "chance": row["chance"]})
    controls = [r for r in rows if r["healthy"]]
    rates = bootstrap_rates(unstable, methods, _scenario_verdict,
                            reference="stabilizer" if "stabilizer" in methods else None,
                            resamples=resamples) if unstable else {"rates": {},
                                                                   "differences": {}}
    alarms = [{"scenario": r["scenario"], "method": m, "reasons": v.get("reasons", []),
               "config": v.get("config")}
              for r in controls for m, v in r["methods"].items()
              if m != "baseline" and not v.get("repaired")]
    kept = {m: sum(bool(r["methods"].get(m, {}).get("repaired")) for r in controls)
            for m in methods}
    cost = {m: {"probe_steps": sum(r["methods"].get(m, {}).get("probe_steps") or 0
                                   for r in rows),
                "search_seconds": round(sum(r["methods"].get(m, {}).get("search_seconds") or 0
                                            for r in rows), 1)} for m in methods}
    agreement = [v["agreement"] for r in rows for v in r["methods"].values()
                 if v.get("agreement") is not None]
    families: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["healthy"]:
            continue
        family = r["cause"]
        entry = families.setdefault(family, {"scenarios": 0, "stabilizer": 0})
        entry["scenarios"] += 1
        entry["stabilizer"] += bool(r["methods"].get("stabilizer", {}).get("repaired"))
    anytime: dict[str, dict[str, Any]] = {}
    for m in methods:
        for k in ANYTIME:
            marks = [r["methods"].get(m, {}).get("anytime", {}).get(str(k)) for r in rows
                     if not r["healthy"]]
            if marks and all(x is not None for x in marks):
                anytime.setdefault(m, {})[str(k)] = sum(x["repaired"] for x in marks) / len(marks)
    return {"unstable": len(unstable), "controls": len(controls), **rates, "anytime": anytime,
            "controls_kept": kept, "false_alarms": alarms, "cost": cost,
            "by_cause": families, "wall_seconds": round(sum(r["wall_seconds"] for r in rows), 1),
            "verdict_agreement_median": float(np.median(agreement)) if agreement else None,
            "verdicts_below_90pct_agreement": sum(a < 0.9 for a in agreement),
            "verdicts": len(agreement)}


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.0%}"


def render_markdown(report: dict[str, Any]) -> str:
    p, t = report["preset"], report["summary"]
    lines = [f"Preset `{report['preset_name']}`: {t['unstable']} unstable scenarios and "
             f"{t['controls']} healthy controls; {p['trials']} trials of {p['probe_steps']}-step "
             f"probes on {p['seeds']} seeds; judge {p['judge_seeds']} seeds at each scenario's "
             f"training length. Code {report['code']}; machine: {report['machine']}; "
             f"{t['wall_seconds']:.0f} s of scenario wall time.", "",
             *[f"Overlaid: {', '.join(o['methods'])} on {len(o['scenarios'])} scenarios from "
               f"`{Path(o['file']).name}` (code {o['code']}; the baseline's mean final loss "
               f"moved by at most {o['baseline_mean_final_moved_max']:.1%})."
               for o in report.get("overlays", [])],
             *([""] if report.get("overlays") else []),
             "| method | repair rate | 90% interval | stabilizer minus it (90% interval) | "
             "controls kept | probe steps | search s |", "|---|---|---|---|---|---|---|"]
    for m in p["methods"]:
        r = t["rates"].get(m, {})
        d = t["differences"].get(m)
        diff = f"{d['difference']:+.0%} ({d['low']:+.0%} to {d['high']:+.0%})" if d else ""
        lines.append(f"| {m} | {_pct(r.get('rate'))} | {_pct(r.get('low'))} to "
                     f"{_pct(r.get('high'))} | {diff} | {t['controls_kept'].get(m, 0)}/"
                     f"{t['controls']} | {t['cost'][m]['probe_steps']:,} | "
                     f"{t['cost'][m]['search_seconds']:,.0f} |")
    if t.get("anytime"):
        counts = sorted({k for v in t["anytime"].values() for k in v}, key=int)
        lines += ["", "Anytime (repair rate of each search's choice after k trials; the "
                  "stabilizer's by its rule at the probe length, before the ladder; the "
                  "final column is the whole search):", "",
                  "| method | " + " | ".join(f"{k} trials" for k in counts) + " | final |",
                  "|---|" + "---|" * (len(counts) + 1)]
        for m, by_k in t["anytime"].items():
            lines.append(f"| {m} | " + " | ".join(_pct(by_k.get(k)) for k in counts)
                         + f" | {_pct(t['rates'].get(m, {}).get('rate'))} |")
    lines += ["", f"Verdict agreement (share of 200 bootstrap resamples of the judge seeds "
              f"giving the same verdict): median {_pct(t['verdict_agreement_median'])}; "
              f"{t['verdicts_below_90pct_agreement']} of {t['verdicts']} verdicts below 90%.",
              "", "False alarms (a healthy control made worse): "
              + ("; ".join(f"{a['method']} on {a['scenario']} ({'; '.join(a['reasons'])})"
                           for a in t["false_alarms"]) or "none") + ".", "",
              "| scenario | length | " + " | ".join(p["methods"]) + " |",
              "|---|---|" + "---|" * len(p["methods"])]
    for row in report["rows"]:
        cells = []
        for m in p["methods"]:
            v = row["methods"].get(m, {})
            mark = "R" if v.get("repaired") else "-"
            agree = f" ({v['agreement']:.0%})" if v.get("agreement") is not None else ""
            cells.append(mark + agree)
        lines.append(f"| {row['scenario']}{' (healthy)' if row['healthy'] else ''} | "
                     f"{row['train_steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise ValueError(f"--shard={text!r}: expected i/n with 1 <= i <= n, such as 2/8")
    return int(index), int(count)


def _write(out: str, name: str, report: dict[str, Any], order: list[str]) -> str:
    report["rows"].sort(key=lambda r: order.index(r["scenario"]) if r["scenario"] in order
                        else len(order))
    report["summary"] = summarize(report["rows"], tuple(report["preset"]["methods"]))
    markdown = render_markdown(report)
    write_report(out, name, report, markdown)
    return markdown


def apply_overlay(rows: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """Replace, in `rows`, the methods that the run in `path` ran (and the baseline's
    judgement) for each scenario it holds; each replaced entry names its code version.
    Returns what was replaced, with how far the baseline's mean final loss moved (the
    judge's training is seeded: a rerun of it should not move it)."""
    over = json.loads(Path(path).read_text())
    methods = ("baseline", *over["preset"]["methods"])
    by_name = {r["scenario"]: r for r in rows}
    moved = []
    for row in over["rows"]:
        target = by_name.get(row["scenario"])
        if target is None:
            raise SystemExit(f"--overlay={path}: scenario {row['scenario']!r} is not in the "
                             "merged table; expected the preset's scenarios")
        old = target["methods"]["baseline"].get("judge", {}).get("mean_finite_final")
        new = row["methods"]["baseline"].get("judge", {}).get("mean_finite_final")
        if old is not None and new is not None:
            moved.append(abs(new - old) / max(abs(old), 1e-12))
        for m in methods:
            target["methods"][m] = {**row["methods"][m], "code": over["code"]}
        if "baseline_healthy" in row:
            target["baseline_healthy"] = row["baseline_healthy"]
        target.setdefault("overlaid", []).append(over["code"])
    return {"file": str(path), "code": over["code"], "machine": over["machine"],
            "command": over["command"], "methods": list(methods),
            "scenarios": [r["scenario"] for r in over["rows"]],
            "baseline_mean_final_moved_max": max(moved, default=0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.yardstick",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--scenarios", help="comma-separated names (default: the preset's)")
    parser.add_argument("--shard", help="i/n: the i-th of n blocks of the preset's scenarios")
    parser.add_argument("--methods", help="comma-separated methods (default: the preset's): "
                        "stabilizer first, then any of stabilizer_flat (horizon_fraction=0), "
                        + ", ".join(PEERS))
    parser.add_argument("--jobs", type=int, default=1, help="scenarios run at a time")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="keep the scenarios already in the output JSON")
    parser.add_argument("--merge", action="store_true",
                        help="merge the preset's shard files into one table; run nothing")
    parser.add_argument("--overlay", action="append", default=[], metavar="JSON",
                        help="with --merge: a later run's result file (another --out) whose "
                        "rows replace, scenario by scenario, the methods it ran and the "
                        "baseline's judgement; repeatable, applied in order")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.methods:
        methods = tuple(args.methods.split(","))
        unknown = sorted(set(methods) - {"stabilizer", "stabilizer_flat", *PEERS})
        if unknown or methods[0] != "stabilizer":
            parser.error(f"--methods={args.methods!r}: expected 'stabilizer' first (the peers "
                         f"get its wall time), then any of stabilizer_flat, {', '.join(PEERS)}")
        preset = dataclasses.replace(preset, methods=methods)
    try:
        shard = _shard(args.shard)
    except ValueError as exc:
        parser.error(str(exc))
    names = args.scenarios.split(",") if args.scenarios else list(preset.scenarios)
    if shard is not None:  # contiguous blocks: the preset lists every family once per seed
        size = -(-len(names) // shard[1])
        names = names[(shard[0] - 1) * size:shard[0] * size]
    name = f"yardstick_{args.preset}" + (f"_shard{shard[0]}of{shard[1]}" if shard else "")
    report: dict[str, Any] = {
        "command": "python -m benchmarks.yardstick " + " ".join(argv or sys.argv[1:]),
        "code": _code_version(), "machine": machine(), "preset_name": args.preset,
        "preset": {**dataclasses.asdict(preset), "scenarios": list(preset.scenarios)},
        "rows": []}
    if args.merge:
        for path in sorted(Path(args.out).glob(f"yardstick_{args.preset}_shard*.json")):
            shard_report = json.loads(path.read_text())
            report["rows"] += shard_report["rows"]
            report.setdefault("shards", []).append({"file": path.name,
                                                    "code": shard_report["code"],
                                                    "machine": shard_report["machine"]})
        for overlay in args.overlay:
            report.setdefault("overlays", []).append(apply_overlay(report["rows"], overlay))
        print(_write(args.out, name, report, list(preset.scenarios)))
        return 0
    path = Path(args.out) / f"{name}.json"
    if args.resume and path.is_file():
        report["rows"] = [r for r in json.loads(path.read_text())["rows"] if r["scenario"] in names]
    done = {r["scenario"] for r in report["rows"]}
    todo = [n for n in names if n not in done]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        from benchmarks.compare import _init_worker

        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(run_scenario, n, preset, args.search_seed): n for n in todo}
            for future in as_completed(futures):
                report["rows"].append(future.result())
                print(f"[{time.strftime('%H:%M:%S')}] {futures[future]} done", file=sys.stderr,
                      flush=True)
                _write(args.out, name, report, names)
    else:
        for n in todo:
            report["rows"].append(run_scenario(n, preset, args.search_seed))
            print(f"[{time.strftime('%H:%M:%S')}] {n} done", file=sys.stderr, flush=True)
            _write(args.out, name, report, names)
    print(_write(args.out, name, report, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

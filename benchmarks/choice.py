"""The stabilizer's choice against every trial it probed, all judged.

`benchmarks.compare` judges only the configuration each method returns. When the
stabilizer misses a repair, that leaves open whether the search never probed a
configuration the judge would pass, or probed one and the choice (the stability
score and `stabilizer.search.choose_best`) preferred another. This script runs the
stabilizer exactly as `compare` does (same preset, data split, seeds and budget:
`benchmarks.compare.stabilizer_search`), then trains the baseline and **every
completed trial** with `benchmarks.judge` and reports, per scenario, which trials
the judge calls repaired and whether the chosen one is among them. Totals:

- ``chosen``: scenarios where the stabilizer's choice is a repair (as in `compare`);
- ``any trial``: scenarios where at least one probed trial is: the most any rule
  choosing among these trials could reach.

It also replays one family of alternative choice rules on the same judged trials,
"conservative near the best": among the stable trials whose median final probe
loss is within ``(1 + tau)`` of the chosen trial's, take the one with the smallest
learning rate (short probes favour aggressive learning rates; the judge trains 3-4x
longer). Kept here as the record of a measured and rejected idea
(docs/experiments/misses-every-trial-judged.md). And a
second, "the generalization gap" (`gap_pick`): the choice with ``weight`` x the
trial's gap (`gap_penalty`, from its stored probe ends) taken off every score, the
replay that led to the gap's place in `stabilizer.scoring`
(docs/experiments/generalization-gap.md). ``--replay``
recomputes both on a stored report.

Usage (from the repository root)::

    python -m benchmarks.choice --preset quick --jobs 2
    python -m benchmarks.choice --preset full --jobs 2 --scenarios exploding_relu_mlp_high_lr
    python -m benchmarks.choice --preset full --jobs 2 --search-seed 1
    python -m benchmarks.choice --replay benchmarks/results/choice_full.json

Writes ``benchmarks/results/choice_<preset>.json`` and ``.md`` (``choice_<preset>_seed<n>``
for another ``--search-seed``, ``..._subset`` for some ``--scenarios``) and prints the
Markdown. Each trial's record keeps its probe seeds' ends (`probe_tail`) and the judge's
five final losses, so other choice rules can be replayed on it. The full preset judges
about 20 trials per scenario (an hour on 2 cores).
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
    PRESETS,
    Preset,
    _code_version,
    add_run_arguments,
    machine,
    map_scenarios,
    report_suffix,
    scenario_names,
    scenario_setup,
    stabilizer_search,
    write_report,
)

__all__ = ["GAP_WEIGHTS", "TAUS", "conservative_pick", "gap_penalty", "gap_pick",
           "judge_trials", "main", "probe_tail"]

#: The tolerances of the replayed "conservative near the best" rule.
TAUS = (0.05, 0.1, 0.2, 0.35, 0.5)
#: The weights of the replayed generalization-gap penalty (`gap_pick`).
GAP_WEIGHTS = (0.5, 1.0, 2.0)


def judge_trials(name: str, preset: Preset) -> dict[str, Any]:
    """Search one scenario with the stabilizer, then judge the baseline and every trial."""
    import keras
    import optuna

    from benchmarks.judge import config_setup, judge, verdict
    from stabilizer.config import StabilityConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = scenario_setup(name, preset, Path(tempfile.mkdtemp(prefix=f"choice-{name}-")))
    scenario, settings, data, held_out = setup.scenario, setup.settings, setup.data, \
        setup.held_out
    outcome = stabilizer_search(scenario.build_fn, data, settings, setup.root)
    result = outcome.result
    steps = preset.judge_factor * preset.probe_steps
    epochs = preset.judge_factor * preset.evaluations

    def judged(config: StabilityConfig) -> Any:
        keras.backend.clear_session()
        return judge(config_setup(scenario.build_fn, config, settings, steps, data.y), data,
                     steps=steps, epochs=epochs, val_data=held_out)

    baseline = judged(StabilityConfig())
    chosen = result.best.trial_number if result.improved else None
    trials = []
    for trial in result.trials:
        if trial.state != "COMPLETE" or trial.config is None or not trial.components:
            continue
        judgement = judged(trial.config)
        v = verdict(judgement, baseline, healthy_scenario=scenario.healthy)
        finals = [s.get("final_val_loss") for s in trial.components.get("per_seed", [])]
        finite = [f for f in finals if f is not None and math.isfinite(f)]
        trials.append({
            "number": trial.number, "score": trial.score,
            "verdict": trial.components.get("verdict"),
            "probe_final_loss": float(np.median(finite)) if len(finite) == len(finals) and finals
            else None,
            "learning_rate": trial.config.learning_rate,
            "probe_seeds": [probe_tail(c) for c in trial.curves],
            "judge_mean_final": judgement.mean_final, "judge_spread": judgement.spread,
            "judge_finals": [v if math.isfinite(v) else None for v in judgement.finals],
            "repaired": v.repaired, "reasons": v.reasons, "config": trial.config.describe(),
            "chosen": trial.number == chosen,
        })
    return {"scenario": name, "healthy": scenario.healthy, "chosen": chosen,
            "baseline_user_lr": _user_lr(scenario.build_fn, settings),
            "chosen_repaired": _chosen_repaired(trials, chosen, baseline, scenario.healthy),
            "any_repaired": any(t["repaired"] for t in trials), "trials": trials}


def probe_tail(curve: dict[str, Any]) -> dict[str, float | None]:
    """One probe seed's end, for replaying choice rules on the judged trials: the mean
    training loss over the last tenth of its (down-sampled) steps, the final and the
    lowest validation loss (None where not finite)."""
    loss = np.asarray([np.nan if v is None else v for v in curve.get("loss") or []], float)
    val = np.asarray([np.nan if v is None else v for v in curve.get("val_loss") or []], float)
    tail = loss[-max(1, len(loss) // 10):] if len(loss) else loss

    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return {"train_tail": finite(float(np.mean(tail))) if len(tail) else None,
            "val_final": finite(float(val[-1])) if len(val) else None,
            "val_min": finite(float(np.min(val))) if len(val) else None}


def _user_lr(build_fn: Any, settings: Any) -> float:
    """The learning rate the user's compiled model starts with (a trial that keeps it)."""
    from stabilizer.apply import CompileSpec, effective_learning_rate
    from stabilizer.config import StabilityConfig

    return effective_learning_rate(CompileSpec.from_model(build_fn(), settings),
                                   StabilityConfig())


def _chosen_repaired(trials: list[dict[str, Any]], chosen: int | None, baseline: Any,
                     healthy: bool) -> bool:
    """The chosen trial's verdict; keeping the baseline repairs only a healthy scenario."""
    if chosen is None:
        return healthy and baseline.healthy
    return any(t["repaired"] for t in trials if t["number"] == chosen)


def conservative_pick(row: dict[str, Any], tau: float) -> dict[str, Any] | None:
    """The replayed rule: smallest learning rate among stable trials near the chosen loss."""
    chosen = next((t for t in row["trials"] if t["chosen"]), None)
    if chosen is None or chosen["verdict"] != "stable" or chosen["probe_final_loss"] is None:
        return chosen
    limit = (1 + tau) * chosen["probe_final_loss"]
    near = [t for t in row["trials"] if t["verdict"] == "stable"
            and t["probe_final_loss"] is not None and t["probe_final_loss"] <= limit]

    def lr(t: dict[str, Any]) -> float:
        return t["learning_rate"] if t["learning_rate"] is not None else row["baseline_user_lr"]

    return min(near, key=lambda t: (lr(t), t["number"]))


def gap_penalty(trial: dict[str, Any]) -> float:
    """The trial's generalization gap as `stabilizer.scoring` counts it, from its stored
    probe ends: the median over seeds of log(final validation / tail training loss),
    floored at 0 (0 where a seed's ends are missing)."""
    from stabilizer.scoring import generalization_gap

    gaps = []
    for end in trial.get("probe_seeds") or []:
        train, val = end.get("train_tail"), end.get("val_final")
        gap = generalization_gap(np.array([math.nan if train is None else train]),
                                 math.nan if val is None else val)
        if not math.isfinite(gap):
            return 0.0
        gaps.append(gap)
    return max(0.0, float(np.median(gaps))) if gaps else 0.0


def gap_pick(row: dict[str, Any], weight: float) -> dict[str, Any] | None:
    """The replayed rule: the choice with `weight` x `gap_penalty` taken off every score.

    For reports whose scores do not count the gap yet (made before it entered
    `stabilizer.scoring`); on later ones it counts the gap a second time. Stable trials
    first, as `stabilizer.search.choose_best` ranks; a kept baseline stays kept.
    """
    if row["chosen"] is None:
        return None
    scored = [t for t in row["trials"] if t["score"] is not None and math.isfinite(t["score"])]
    pool = [t for t in scored if t["verdict"] == "stable"] or scored
    return max(pool, key=lambda t: (t["score"] - weight * gap_penalty(t), -t["number"]),
               default=None)


def _rule_totals(rows: list[dict[str, Any]],
                 picks: list[dict[str, Any] | None]) -> dict[str, Any]:
    repaired = sum((p["repaired"] if p is not None else r["chosen_repaired"])
                   for r, p in zip(rows, picks))
    ratios = [math.log(p["judge_mean_final"] / c["judge_mean_final"])
              for r, p in zip(rows, picks) for c in r["trials"] if c["chosen"] and p is not None
              and math.isfinite(p["judge_mean_final"]) and math.isfinite(c["judge_mean_final"])]
    return {"repaired": repaired,
            "geomean_loss_vs_chosen": math.exp(float(np.mean(ratios))) if ratios else None}


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "chosen": sum(r["chosen_repaired"] for r in rows),
        "any_trial": sum(r["any_repaired"] for r in rows),
        "scenarios": len(rows),
    }
    for tau in TAUS:
        out[f"conservative_tau_{tau:g}"] = _rule_totals(rows, [conservative_pick(r, tau)
                                                               for r in rows])
    for weight in GAP_WEIGHTS:
        out[f"gap_weight_{weight:g}"] = _rule_totals(rows, [gap_pick(r, weight) for r in rows])
    return out


def render_markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [
        f"Preset `{report['preset_name']}`; machine: {report['machine']}; code "
        f"{report['code']}; total wall time {report['wall_seconds'] / 60:.1f} min.", "",
        f"Chosen configuration repaired (or control kept): **{t['chosen']} of "
        f"{t['scenarios']}**; some probed trial repaired: **{t['any_trial']} of "
        f"{t['scenarios']}**.", "",
        "| rule | repaired | judge loss vs the chosen (geometric mean) |", "|---|---|---|",
        f"| the stabilizer's choice | {t['chosen']} | 1 |"]
    for tau in TAUS:
        c = t[f"conservative_tau_{tau:g}"]
        g = f"{c['geomean_loss_vs_chosen']:.3f}" if c["geomean_loss_vs_chosen"] else "n/a"
        lines.append(f"| smallest learning rate within {tau:.0%} of the chosen probe loss | "
                     f"{c['repaired']} | {g} |")
    for weight in GAP_WEIGHTS:
        c = t.get(f"gap_weight_{weight:g}")
        if c is not None:
            g = f"{c['geomean_loss_vs_chosen']:.3f}" if c["geomean_loss_vs_chosen"] else "n/a"
            lines.append(f"| score - {weight:g} x generalization gap | {c['repaired']} | {g} |")
    for row in report["scenarios"]:
        chosen = f"trial {row['chosen']}" if row["chosen"] is not None else "the baseline"
        lines += ["", f"### {row['scenario']}", "",
                  f"Chosen: {chosen} "
                  f"({'repaired' if row['chosen_repaired'] else 'not repaired'}); "
                  f"{sum(t['repaired'] for t in row['trials'])} of {len(row['trials'])} "
                  "completed trials repaired.", "",
                  "| trial | score | probe verdict | probe final loss | judge final loss | "
                  "judge spread | judge | configuration |", "|---|---|---|---|---|---|---|---|"]
        for tr in sorted(row["trials"], key=lambda t: -(t["score"] or -math.inf)):
            mark = " (chosen)" if tr["chosen"] else ""
            lines.append(
                f"| {tr['number']}{mark} | {tr['score']:.3f} | {tr['verdict']} | "
                f"{_g(tr['probe_final_loss'])} | {_g(tr['judge_mean_final'])} | "
                f"{_g(tr['judge_spread'])} | {'R' if tr['repaired'] else '-'} | "
                f"{tr['config']} |")
    return "\n".join(lines)


def _g(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"


def _run_one(args: tuple[str, Preset]) -> dict[str, Any]:
    name, preset = args
    start = time.perf_counter()
    row = judge_trials(name, preset)
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {row['wall_seconds']:.0f} s; "
          f"chosen {'R' if row['chosen_repaired'] else '-'}, "
          f"{sum(t['repaired'] for t in row['trials'])}/{len(row['trials'])} trials R",
          file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.choice",
                                     description=(__doc__ or "").splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--search-seed", type=int, default=0,
                        help="seed of the search (sampler, probe seeds), as in "
                        "benchmarks.compare; the data and the judge stay as they are")
    parser.add_argument("--replay", metavar="REPORT",
                        help="recompute the totals and replayed rules of a stored choice "
                        "JSON and print its Markdown (nothing is trained or written)")
    args = parser.parse_args(argv)
    if args.replay:
        report = json.loads(Path(args.replay).read_text())
        report["totals"] = totals(report["scenarios"])
        print(render_markdown(report))
        return 0
    if args.search_seed < 0:
        parser.error(f"--search-seed={args.search_seed}: expected an integer >= 0")
    names = scenario_names(parser, args)
    preset = dataclasses.replace(PRESETS[args.preset], search_seed=args.search_seed)
    code = _code_version()  # at the start: the workers import the tree as it is now
    start = time.perf_counter()
    rows = map_scenarios(_run_one, [(name, preset) for name in names], args.jobs)
    report = {"preset_name": args.preset, "search_seed": preset.search_seed,
              "machine": machine(), "code": code,
              "command": "python -m benchmarks.choice " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "wall_seconds": round(time.perf_counter() - start, 1),
              "scenarios": rows, "totals": totals(rows)}
    suffix = report_suffix(args.preset, preset.search_seed, subset=bool(args.scenarios))
    markdown = render_markdown(report)
    write_report(args.out, f"choice_{suffix}", report, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The stabilizer with more probe seeds and fewer trials, at the same probe budget, judged.

Most of the stabilizer's misses in the compare tables fail the judge's seed-spread rule
(five seeds at 3-4x the probe length), which two probe seeds measure poorly. This script
asks whether a third (or fourth) probe seed buys more repairs than the trials it costs:
it runs `stabilize()` exactly as `benchmarks.compare` does (same split, space, probe
length and search seeds), but on ``--seeds`` probe seeds with as many trials as the
preset's budget of probe steps still pays for (`stabilizer_budget`), then has the judge
train each choice on the judge's draws 0..``--draws`` (the seeds of
`benchmarks.judge_noise.draw_seeds`) against the baseline judged on the same draws.

Per search seed and draw it reports the repairs of the unstable scenarios and whether the
healthy control is kept; per scenario, the verdicts, spreads and mean final losses. The
runs at two seeds are `compare` and `judge_noise` (their JSON in ``benchmarks/results/``).

Usage (from the repository root)::

    python -m benchmarks.seed_count --preset full --seeds 3 --jobs 2   # about an hour here

At equal wall time instead of equal probe steps (``--time-limit-from REPORT``): each search
gets, as its `time_limit`, the wall time the search of the same scenario and search seed
took in REPORT (a run of this script, say at 2 seeds), and a trial budget twice that of
REPORT's, so the time, not the trials, ends it: how many trials the seeds leave room for.

Writes ``seed_count_<preset>_seeds<n>.json`` (``..._timed`` at equal wall time) and ``.md`` to
``--out`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.compare import (  # noqa: E402
    PRESETS,
    Preset,
    _code_version,
    add_run_arguments,
    failure_text,
    machine,
    map_scenarios,
    scenario_names,
    scenario_setup,
    stabilizer_search,
    write_report,
)
from benchmarks.judge_noise import draw_seeds, judge_on  # noqa: E402

__all__ = ["stabilizer_budget", "run_scenario", "totals", "render_markdown", "main"]

#: Steps the stabilizer's diagnosis spends on LR range tests at most, in probe lengths
#: (one test, two when its findings call for a repair; `compare.stabilizer_search`).
LR_TESTS = 2


def stabilizer_budget(preset: Preset, seeds: int) -> int:
    """Trials `stabilize()` may run on `seeds` probe seeds within `preset.budget_steps`.

    The baseline and every trial cost ``seeds * probe_steps`` steps, the LR range tests up
    to ``LR_TESTS * probe_steps``; at the presets' two seeds this is `compare`'s
    ``trials - 1``. 0 (or less) when the budget pays for no trial on that many seeds.
    """
    per_candidate = seeds * preset.probe_steps
    candidates = (preset.budget_steps - LR_TESTS * preset.probe_steps) // per_candidate
    return candidates - 1


def _failed_search(search_seed: int, exc: Exception, draws: int) -> dict[str, Any]:
    """A search that raised: its error kept, and on every draw not repaired.

    As in `benchmarks.compare`, one failing search must not end the run and lose the
    other scenarios' and search seeds' results.
    """
    reason = f"the search failed: {type(exc).__name__}: {exc}"[:300]
    return {"search_seed": search_seed, "config": "search failed", "config_dict": None,
            "probe_steps": 0, "search_seconds": None, "candidates": 0, "error": failure_text(exc),
            "draws": [{"repaired": False, "spread": None, "mean_final": None,
                       "reasons": [reason]} for _ in range(draws + 1)]}


def _verdict_entry(judgement: Any, baseline: Any, healthy: bool) -> dict[str, Any]:
    from benchmarks.judge import verdict

    v = verdict(judgement, baseline, healthy_scenario=healthy)
    j = judgement.to_dict()
    return {"repaired": bool(v.repaired), "spread": j.get("spread"),
            "mean_final": j.get("mean_final"), "reasons": v.to_dict().get("reasons", [])}


def run_scenario(name: str, preset: Preset, seeds: int, search_seeds: tuple[int, ...],
                 draws: int, limits: dict[int, float] | None = None,
                 trials: int | None = None) -> dict[str, Any]:
    """One scenario: the baseline judged on each draw, then per search seed the search on
    `seeds` probe seeds and its choice judged on the same draws; a JSON-ready dict.

    `limits[search_seed]`: that search's `time_limit` (seconds), with a budget of
    `trials` trials."""
    import keras
    import optuna

    from stabilizer.config import StabilityConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    base_setup = scenario_setup(name, preset, Path(tempfile.mkdtemp(prefix=f"seeds-{name}-")))
    healthy = base_setup.scenario.healthy

    def judged(setup: Any, config: StabilityConfig, draw: int) -> Any:
        return judge_on(setup, config, preset, draw_seeds(draw))

    baselines = [judged(base_setup, StabilityConfig(), d) for d in range(draws + 1)]
    budget = trials if trials is not None else stabilizer_budget(preset, seeds)
    searches = []
    for search_seed in search_seeds:
        # compare.stabilizer_search runs ``trials - 1`` trials (its LR tests take one)
        searched = dataclasses.replace(preset, search_seed=search_seed, seeds=seeds,
                                       trials=budget + 1)
        setup = scenario_setup(name, searched, Path(tempfile.mkdtemp(
            prefix=f"seeds-{name}-{search_seed}-")))
        if limits is not None:
            setup.settings.time_limit = limits[search_seed]
        keras.backend.clear_session()
        try:
            outcome = stabilizer_search(setup.scenario.build_fn, setup.data, setup.settings,
                                        setup.root)
        except Exception as exc:  # recorded and counted as not repaired, never hidden
            searches.append(_failed_search(search_seed, exc, draws))
        else:
            searches.append({
                "search_seed": search_seed, "config": outcome.config.describe(),
                "config_dict": outcome.config.to_dict(), "probe_steps": outcome.steps,
                "search_seconds": round(outcome.seconds, 1), "candidates": outcome.candidates,
                "time_limit": limits[search_seed] if limits is not None else None,
                "draws": [_verdict_entry(judged(setup, outcome.config, d), baselines[d],
                                         healthy) for d in range(draws + 1)]})
        print(f"[{time.strftime('%H:%M:%S')}] {name} search seed {search_seed}: "
              + "".join("R" if e["repaired"] else "-" for e in searches[-1]["draws"]),
              file=sys.stderr, flush=True)
    return {"scenario": name, "healthy": healthy, "budget": budget,
            "baseline": [b.to_dict().get("spread") for b in baselines],
            "searches": searches, "wall_seconds": round(time.perf_counter() - start, 1)}


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Repairs of the unstable scenarios per search seed and draw; the control kept."""
    unstable = [r for r in rows if not r["healthy"]]
    healthy = [r for r in rows if r["healthy"]]
    cells = []
    for i, search in enumerate(rows[0]["searches"] if rows else []):
        for d in range(len(search["draws"])):
            cells.append({"search_seed": search["search_seed"], "draw": d,
                          "repaired": sum(r["searches"][i]["draws"][d]["repaired"]
                                          for r in unstable),
                          "control_kept": all(r["searches"][i]["draws"][d]["repaired"]
                                              for r in healthy)})
    return {"unstable_scenarios": len(unstable), "cells": cells,
            "sum": sum(c["repaired"] for c in cells),
            "best": max((c["repaired"] for c in cells), default=0),
            "probe_steps_max": max((s["probe_steps"] for r in rows for s in r["searches"]),
                                   default=0)}


def _g(value: Any) -> str:
    """A judged figure; None is what `Judgement.to_dict` writes for +inf (a diverged seed)."""
    return f"{value:.3g}" if isinstance(value, (int, float)) else "inf"


def _figures(search: dict[str, Any], key: str) -> str:
    """One figure per draw, or "n/a" for a search that failed (nothing was judged)."""
    if search.get("error"):
        return "n/a"
    return ", ".join(_g(e[key]) for e in search["draws"])


def render_markdown(report: dict[str, Any]) -> str:
    t, p = report["totals"], report["preset"]
    n = t["unstable_scenarios"]
    lines = [
        f"Preset `{report['preset_name']}` ({p['probe_steps']}-step probes, budget "
        f"{p['budget_steps']} probe steps per search): the stabilizer on {report['seeds']} "
        f"probe seeds with {report['budget']} trials + the baseline (at most "
        f"{t['probe_steps_max']} steps run); judge {p['judge_factor'] * p['probe_steps']} "
        f"steps x 5 seeds per draw. Code {report['code']}; machine: {report['machine']}; "
        f"{report['wall_seconds'] / 60:.1f} min.", "",
        f"Repaired, of {n} unstable: **{t['sum']}** over {len(t['cells'])} search seed x "
        f"draw cells (best cell {t['best']}).", "",
        "| search seed | draw | repaired | healthy control kept |", "|---|---|---|---|"]
    lines += [f"| {c['search_seed']} | {c['draw']} | {c['repaired']}/{n} | "
              f"{'yes' if c['control_kept'] else 'no'} |" for c in t["cells"]]
    lines += ["", "Per scenario and search seed: the verdicts draw by draw (R repaired, - not), "
              "the seed spreads and mean final held-out losses, and the choice.", "",
              "| scenario | search seed | verdicts | spreads | mean final | choice |",
              "|---|---|---|---|---|---|"]
    for row in report["scenarios"]:
        name = row["scenario"] + (" (healthy)" if row["healthy"] else "")
        for s in row["searches"]:
            marks = "".join("R" if e["repaired"] else "-" for e in s["draws"])
            lines.append(f"| {name} | {s['search_seed']} | {marks} | "
                         f"{_figures(s, 'spread')} | {_figures(s, 'mean_final')} | "
                         f"{s['config']} |")
    return "\n".join(lines)


def _run_one(args: tuple[Any, ...]) -> dict[str, Any]:
    return run_scenario(*args)


def count(report: dict[str, Any]) -> dict[str, Any]:
    """The unstable scenarios' verdicts: repaired, and the misses by reason (the seed-spread
    rule, or another), with the candidates each search probed."""
    repaired = spread = other = 0
    candidates = []
    for row in report["scenarios"]:
        if row["healthy"]:
            continue
        for search in row["searches"]:
            candidates.append(search.get("candidates") or 0)
            for draw in search["draws"]:
                if draw["repaired"]:
                    repaired += 1
                elif any(r.startswith("seed spread") for r in draw["reasons"]):
                    spread += 1
                else:
                    other += 1
    return {"repaired": repaired, "verdicts": repaired + spread + other,
            "seed_spread_misses": spread, "other_misses": other,
            "candidates_mean": round(sum(candidates) / max(1, len(candidates)), 2)}


def time_limits(path: str) -> dict[str, dict[int, float]]:
    """scenario -> search seed -> the wall time that search took in the report at `path`."""
    import json

    report = json.loads(Path(path).read_text())
    return {row["scenario"]: {s["search_seed"]: float(s["search_seconds"])
                              for s in row["searches"] if s.get("search_seconds")}
            for row in report["scenarios"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_count",
                                     description=(__doc__ or "").splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--seeds", type=int, default=3, help="probe seeds (default 3)")
    parser.add_argument("--search-seeds", default="0,1,2",
                        help="comma-separated search seeds (default 0,1,2)")
    parser.add_argument("--draws", type=int, default=2, help="judge draws after draw 0")
    parser.add_argument("--count", nargs="+", metavar="REPORT",
                        help="only print each report's repairs and misses by reason")
    parser.add_argument("--time-limit-from", metavar="REPORT",
                        help="equal wall time: each search's time_limit is the time the same "
                             "search took in REPORT (a seed_count JSON)")
    args = parser.parse_args(argv)
    if args.count:
        import json

        for path in args.count:
            print(path, json.dumps(count(json.loads(Path(path).read_text()))))
        return 0
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds}: expected an integer >= 1")
    if args.draws < 0:
        parser.error(f"--draws={args.draws}: expected an integer >= 0")
    try:
        search_seeds = tuple(int(s) for s in args.search_seeds.split(","))
    except ValueError:
        parser.error(f"--search-seeds={args.search_seeds}: expected integers such as 0,1,2")
    if any(s < 0 for s in search_seeds):
        parser.error(f"--search-seeds={args.search_seeds}: expected integers >= 0")
    names = scenario_names(parser, args)
    preset = PRESETS[args.preset]
    budget = stabilizer_budget(preset, args.seeds)
    if budget < 1:
        parser.error(f"--seeds={args.seeds}: the {args.preset} budget "
                     f"({preset.budget_steps} steps) pays for no trial on that many seeds")
    limits: dict[str, dict[int, float]] = {}
    if args.time_limit_from:
        limits = time_limits(args.time_limit_from)
        missing = [(n, s) for n in names for s in search_seeds if s not in limits.get(n, {})]
        if missing:
            parser.error(f"--time-limit-from={args.time_limit_from}: no search time for "
                         f"{missing[0][0]} at search seed {missing[0][1]}")
        budget = 2 * stabilizer_budget(preset, 2)
    code = _code_version()  # at the start: the workers import the tree as it is now
    start = time.perf_counter()
    rows = map_scenarios(_run_one, [(name, preset, args.seeds, search_seeds, args.draws,
                                     limits.get(name), budget if limits else None)
                                    for name in names], args.jobs)
    report = {"preset_name": args.preset,
              "preset": {**dataclasses.asdict(preset), "budget_steps": preset.budget_steps},
              "seeds": args.seeds, "budget": budget,
              "time_limit_from": args.time_limit_from,
              "search_seeds": list(search_seeds), "code": code, "machine": machine(),
              "command": "python -m benchmarks.seed_count " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "wall_seconds": round(time.perf_counter() - start, 1),
              "scenarios": rows, "totals": totals(rows)}
    report["count"] = count(report)
    suffix = f"{args.preset}_seeds{args.seeds}" + ("_timed" if limits else "") \
        + ("_subset" if args.scenarios else "")
    markdown = render_markdown(report)
    write_report(args.out, f"seed_count_{suffix}", report, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

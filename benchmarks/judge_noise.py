"""How much of a repair count is the judge's own seed draw: a compare run's choices re-judged.

The judge (`benchmarks.judge`) decides "repaired" on five fresh seeds, and most misses
in the compare tables are decided by its seed-spread limit (0.15): a standard deviation
measured on five seeds is itself uncertain (for normal data its relative standard error
is about a third). This script reads a `benchmarks.compare` report (its JSON), takes the
configuration every method chose there, and has the judge train each of them, and the
baseline, again on ``--draws`` further sets of five fresh seeds, with the same thresholds
and the same held-out data. Nothing is searched again.

Per method it reports the repair count on every draw (draw 0 is the compare run's own,
read from its JSON) and how many of its verdicts are not the same on every draw; per
scenario, each method's verdicts and seed spreads draw by draw. A difference of one or
two scenarios between methods can then be read against the judge's own noise.

Draw ``k`` (k >= 1) trains on the seeds ``JUDGE_SEEDS + 1000 * k`` (8001-8005, 9001-9005,
...): fresh for every method, as the judge's own are. Every configuration is rebuilt
from its dict with `benchmarks.judge.config_setup` (compare trains the stabilizer's
choice through `StabilityResult.build_model`; on the judge's own seeds the two give the
same losses to the last digit, checked on two scenarios of the quick run at 03040e9,
three configurations each).

Usage (from the repository root, after `benchmarks/run.sh` or `benchmarks.compare`)::

    python -m benchmarks.judge_noise --preset quick --draws 2 --jobs 2
    python -m benchmarks.judge_noise --preset full --draws 2 --jobs 2

Reads ``benchmarks/results/compare_<preset>.json`` (``--source`` to change), writes
``judge_noise_<preset>.json`` and ``.md`` next to it (``--out``) and prints the Markdown.
"""

from __future__ import annotations

import argparse
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
    METHODS,
    RESULTS,
    Preset,
    _code_version,
    machine,
    map_scenarios,
    report_suffix,
    scenario_setup,
    write_report,
)

__all__ = ["draw_seeds", "judge_on", "pooled_spread", "rejudge", "totals", "render_markdown",
           "main"]

SEARCHES = METHODS[1:]  # the methods that choose a configuration


def draw_seeds(draw: int) -> tuple[int, ...]:
    """The judge seeds of draw `draw`: the judge's own for 0, shifted by 1000 per draw."""
    from benchmarks.judge import JUDGE_SEEDS

    return tuple(seed + 1000 * draw for seed in JUDGE_SEEDS)


def judge_on(setup: Any, config: Any, preset: Preset, seeds: tuple[int, ...]) -> Any:
    """`config` trained by the judge on `setup`'s scenario for `preset`'s judge length, on
    `seeds`, measured on the held-out data (a fresh Keras session first)."""
    import keras

    from benchmarks.judge import config_setup, judge

    keras.backend.clear_session()
    steps = preset.judge_factor * preset.probe_steps
    return judge(config_setup(setup.scenario.build_fn, config, setup.settings, steps,
                              setup.data.y),
                 setup.data, steps=steps, epochs=preset.judge_factor * preset.evaluations,
                 val_data=setup.held_out, seeds=seeds)


def _entry(repaired: bool | None, judge: dict[str, Any]) -> dict[str, Any]:
    """One judgement as the report keeps it; a diverged seed's final loss is None."""
    return {"repaired": repaired, "spread": judge.get("spread"),
            "mean_final": judge.get("mean_final"), "diverged": judge.get("diverged"),
            "healthy": judge.get("healthy"), "reasons": judge.get("reasons", []),
            "finals": [r.get("final_loss") for r in judge.get("runs", [])]}


def pooled_spread(entries: list[dict[str, Any]]) -> float:
    """Std of log(final loss) over the seeds of every draw together; inf if one diverged.

    The least noisy reading of a configuration's seed spread that the draws give; shown
    beside the verdicts, never used in them (the written rule is five seeds).
    """
    finals = [f for e in entries for f in e.get("finals", [])]
    if not finals or any(f is None or not math.isfinite(f) for f in finals):
        return math.inf
    return float(np.std(np.log(np.maximum(finals, 1e-12))))


def rejudge(row: dict[str, Any], preset: Preset, draws: int) -> dict[str, Any]:
    """One compare row's choices judged on draws 1..`draws`; draw 0 copied from the row."""
    from benchmarks.judge import verdict
    from stabilizer.config import StabilityConfig

    name = row["scenario"]
    setup = scenario_setup(name, preset, Path(tempfile.mkdtemp(prefix=f"noise-{name}-")))
    configs = {m: row["methods"][m].get("config_dict") for m in METHODS}
    out: dict[str, Any] = {
        "scenario": name, "healthy": row["healthy"],
        "configs": {m: row["methods"][m].get("config") for m in METHODS},
        "baseline": [_entry(None, row["methods"]["baseline"]["judge"])],
        "methods": {m: [_entry(bool(row["methods"][m].get("repaired")),
                               row["methods"][m].get("judge", {}))] for m in SEARCHES}}
    for draw in range(1, draws + 1):
        seeds = draw_seeds(draw)
        cache: dict[str, Any] = {}

        def judged(config_dict: dict[str, Any]) -> Any:
            key = json.dumps(config_dict, sort_keys=True)
            if key not in cache:  # two methods with one configuration: one training
                cache[key] = judge_on(setup, StabilityConfig.from_dict(config_dict), preset,
                                      seeds)
            return cache[key]

        baseline = judged(configs["baseline"] or StabilityConfig().to_dict())
        out["baseline"].append(_entry(None, baseline.to_dict()))
        for method in SEARCHES:
            if configs[method] is None:  # the method failed in the compare run
                out["methods"][method].append(_entry(False, {"reasons": ["no choice"]}))
                continue
            judgement = judged(configs[method])
            v = verdict(judgement, baseline, healthy_scenario=row["healthy"])
            out["methods"][method].append(_entry(v.repaired, judgement.to_dict()))
    return out


def totals(rows: list[dict[str, Any]], draws: int) -> dict[str, Any]:
    """Per method: repairs of the unstable scenarios per draw, control kept, flipped verdicts."""
    unstable = [r for r in rows if not r["healthy"]]
    healthy = [r for r in rows if r["healthy"]]
    out: dict[str, Any] = {}
    for method in SEARCHES:
        per_draw = [sum(bool(r["methods"][method][d]["repaired"]) for r in unstable)
                    for d in range(draws + 1)]
        flipped = [r["scenario"] for r in rows
                   if len({bool(e["repaired"]) for e in r["methods"][method]}) > 1]
        out[method] = {
            "repaired_per_draw": per_draw, "unstable_scenarios": len(unstable),
            "control_kept_per_draw": [all(bool(r["methods"][method][d]["repaired"])
                                          for r in healthy) for d in range(draws + 1)],
            "flipped": flipped,
            "repaired_on_every_draw": sum(all(bool(e["repaired"]) for e in r["methods"][method])
                                          for r in unstable)}
    out["verdicts"] = len(rows) * len(SEARCHES)
    out["flipped_verdicts"] = sum(len(out[m]["flipped"]) for m in SEARCHES)
    return out


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "inf"


def render_markdown(report: dict[str, Any]) -> str:
    t, draws = report["totals"], report["draws"]
    heads = " | ".join(f"draw {d}" for d in range(draws + 1))
    lines = [
        f"Re-judging `{report['source']}` (compare run at code {report['source_code']}, "
        f"preset `{report['preset_name']}`); code {report['code']}; machine: "
        f"{report['machine']}; {report['wall_seconds'] / 60:.1f} min. Draw 0 is the compare "
        "run's judgement (seeds " + ", ".join(map(str, report["seeds"][0])) + "); draw k "
        "trains on those seeds + 1000k.", "",
        f"{t['flipped_verdicts']} of {t['verdicts']} verdicts (method x scenario) are not the "
        "same on every draw.", "",
        f"| method | repaired, {heads} | repaired on every draw | healthy control kept | "
        "verdicts that flip |",
        "|---|" + "---|" * (draws + 1) + "---|---|---|"]
    for method in SEARCHES:
        m = t[method]
        kept = "/".join("yes" if k else "no" for k in m["control_kept_per_draw"])
        counts = " | ".join(f"{n}/{m['unstable_scenarios']}" for n in m["repaired_per_draw"])
        lines.append(f"| {method} | {counts} | {m['repaired_on_every_draw']} | {kept} | "
                     f"{', '.join(m['flipped']) or '-'} |")
    lines += ["", "Per scenario: each method's verdicts draw by draw (R repaired, - not), "
              "its seed spreads draw by draw and, after 'all', over the seeds of every draw "
              "together (inf: a seed diverged).", "",
              "| scenario | baseline spread | " + " | ".join(SEARCHES) + " |",
              "|---|---|" + "---|" * len(SEARCHES)]
    for row in report["scenarios"]:
        cells = []
        for method in SEARCHES:
            entries = row["methods"][method]
            marks = "".join("R" if e["repaired"] else "-" for e in entries)
            cells.append(f"{marks} ({', '.join(_g(e['spread']) for e in entries)}; "
                         f"all {_g(pooled_spread(entries))})")
        base = ", ".join(_g(e["spread"]) for e in row["baseline"])
        name = row["scenario"] + (" (healthy)" if row["healthy"] else "")
        lines.append(f"| {name} | {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run_one(args: tuple[dict[str, Any], Preset, int]) -> dict[str, Any]:
    row, preset, draws = args
    start = time.perf_counter()
    out = rejudge(row, preset, draws)
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"[{time.strftime('%H:%M:%S')}] {row['scenario']}: done in {out['wall_seconds']:.0f} "
          "s; " + ", ".join(f"{m}=" + "".join("R" if e["repaired"] else "-"
                                              for e in out["methods"][m]) for m in SEARCHES),
          file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.judge_noise",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "full"), default="quick")
    parser.add_argument("--source", help="a compare JSON (default: "
                        "benchmarks/results/compare_<preset>.json)")
    parser.add_argument("--draws", type=int, default=2, help="further seed draws to judge on")
    parser.add_argument("--scenarios", help="comma-separated zoo names (default: all in the "
                        "source)")
    parser.add_argument("--jobs", type=int, default=1, help="scenarios judged at a time")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the JSON and Markdown")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws={args.draws}: expected an integer >= 1")
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: expected an integer >= 1")
    source = Path(args.source or RESULTS / f"compare_{args.preset}.json")
    if not source.is_file():
        parser.error(f"--source {source}: no such compare report; run "
                     f"`python -m benchmarks.compare --preset {args.preset}` first")
    report_in = json.loads(source.read_text())
    rows = report_in["scenarios"]
    if args.scenarios:
        wanted = args.scenarios.split(",")
        unknown = sorted(set(wanted) - {r["scenario"] for r in rows})
        if unknown:
            parser.error(f"--scenarios: {', '.join(unknown)} not in {source}")
        rows = [r for r in rows if r["scenario"] in wanted]
    fields = {k: v for k, v in report_in["preset"].items() if k != "budget_steps"}
    preset = Preset(**fields)
    code = _code_version()  # at the start: the workers import the tree as it is now
    start = time.perf_counter()
    judged = map_scenarios(_run_one, [(row, preset, args.draws) for row in rows], args.jobs)
    report = {"preset_name": report_in["preset_name"], "source": str(source),
              "source_code": report_in.get("code"), "code": code, "machine": machine(),
              "command": "python -m benchmarks.judge_noise " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "draws": args.draws, "seeds": [list(draw_seeds(d)) for d in range(args.draws + 1)],
              "wall_seconds": round(time.perf_counter() - start, 1),
              "scenarios": judged, "totals": totals(judged, args.draws)}
    suffix = report_suffix(report["preset_name"], preset.search_seed, subset=bool(args.scenarios))
    markdown = render_markdown(report)
    write_report(args.out, f"judge_noise_{suffix}", report, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

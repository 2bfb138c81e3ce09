"""The ladder against a flat search, judged at the user's training length.

Each zoo scenario is searched twice by `stabilize()`, told the user's training length
(``--judge-factor`` probe lengths, the judge's): once flat (``horizon_fraction=0``: every
candidate compared at the probe length, as before the ladder) and once with the ladder
(the default ``horizon_fraction``). Both choices, and the user's own configuration, are
trained by the judge for that length on the judge's five seeds and measured on the
held-out data (`benchmarks.judge`, its thresholds unchanged). Per scenario and search
seed it reports whether each arm repaired the scenario (for the healthy control: whether
it kept it healthy), the probe steps and the wall time each search took.

Usage (from the repository root)::

    python -m benchmarks.horizon --preset quick --judge-factor 36 --jobs 2

Writes ``horizon_<preset>_j<factor>.json`` and ``.md`` to ``--out``, scenario by
scenario as they finish (a stopped run keeps what it finished; ``--resume`` skips them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
    scenario_names,
    scenario_setup,
    stabilizer_search,
    write_report,
)
from benchmarks.judge_noise import draw_seeds, judge_on  # noqa: E402
from benchmarks.seed_count import _verdict_entry  # noqa: E402

__all__ = ["ARMS", "run_scenario", "totals", "render_markdown", "main"]

#: The two searches: the share of the training length the longest probe may reach.
ARMS = {"flat": 0.0, "ladder": None}  # None: the product's default


def run_scenario(name: str, preset: Preset, search_seeds: tuple[int, ...]) -> dict[str, Any]:
    """One scenario: the baseline judged, then per search seed both arms searched and
    judged on the same seeds; a JSON-ready dict."""
    import keras
    import optuna

    from stabilizer.config import SearchConfig, StabilityConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    base_setup = scenario_setup(name, preset, Path(tempfile.mkdtemp(prefix=f"hz-{name}-")))
    healthy = base_setup.scenario.healthy
    seeds = draw_seeds(0)
    baseline = judge_on(base_setup, StabilityConfig(), preset, seeds)
    default_fraction = SearchConfig().horizon_fraction
    searches = []
    for search_seed in search_seeds:
        entry: dict[str, Any] = {"search_seed": search_seed}
        for arm, fraction in ARMS.items():
            searched = dataclasses.replace(preset, search_seed=search_seed)
            setup = scenario_setup(name, searched, Path(tempfile.mkdtemp(
                prefix=f"hz-{name}-{arm}-{search_seed}-")))
            setup.settings.horizon_fraction = default_fraction if fraction is None else fraction
            keras.backend.clear_session()
            try:
                outcome = stabilizer_search(setup.scenario.build_fn, setup.data, setup.settings,
                                            setup.root)
            except Exception as exc:  # counted as not repaired, never hidden
                entry[arm] = {"repaired": False, "error": failure_text(exc)}
                continue
            result = outcome.result
            entry[arm] = {
                "config": outcome.config.describe(), "probe_steps": outcome.steps,
                "search_seconds": round(outcome.seconds, 1),
                "rungs": [r["steps"] for r in result.rungs] or [preset.probe_steps],
                "kept_baseline": not result.improved,
                "ladder_notes": result.ladder_notes,
                **_verdict_entry(judge_on(setup, outcome.config, preset, seeds), baseline,
                                 healthy)}
        searches.append(entry)
        print(f"[{time.strftime('%H:%M:%S')}] {name} seed {search_seed}: "
              + ", ".join(f"{arm}={'R' if entry[arm].get('repaired') else '-'}" for arm in ARMS),
              file=sys.stderr, flush=True)
    return {"scenario": name, "healthy": healthy, "baseline": baseline.to_dict(),
            "searches": searches, "wall_seconds": round(time.perf_counter() - start, 1)}


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: repairs of the unstable scenarios, healthy controls made worse, cost."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        unstable = [s[arm] for r in rows if not r["healthy"] for s in r["searches"]]
        control = [s[arm] for r in rows if r["healthy"] for s in r["searches"]]
        runs = [s[arm] for r in rows for s in r["searches"]]
        out[arm] = {"repaired": sum(bool(e.get("repaired")) for e in unstable),
                    "unstable": len(unstable),
                    "controls_made_worse": sum(not e.get("repaired") for e in control),
                    "controls": len(control),
                    "probe_steps": sum(e.get("probe_steps") or 0 for e in runs),
                    "search_seconds": round(sum(e.get("search_seconds") or 0 for e in runs), 1)}
    return out


def render_markdown(report: dict[str, Any]) -> str:
    p, t = report["preset"], report["totals"]
    lines = [
        f"Preset `{report['preset_name']}` ({p['probe_steps']}-step probes, {p['trials']} "
        f"trials), the user's length and the judge's: {report['train_steps']} steps x 5 "
        f"seeds. Code {report['code']}; machine: {report['machine']}.", "",
        "| arm | repaired (unstable) | healthy controls made worse | probe steps | search s |",
        "|---|---|---|---|---|"]
    for arm, v in t.items():
        lines.append(f"| {arm} | {v['repaired']}/{v['unstable']} | {v['controls_made_worse']}"
                     f"/{v['controls']} | {v['probe_steps']:,} | {v['search_seconds']:,.0f} |")
    lines += ["", "| scenario | seed | " + " | ".join(ARMS) + " | rungs (ladder) |",
              "|---|---|" + "---|" * len(ARMS) + "---|"]
    for row in report["rows"]:
        for s in row["searches"]:
            cells = []
            for arm in ARMS:
                e = s[arm]
                mark = "R" if e.get("repaired") else "-"
                cells.append(f"{mark} {e.get('config', e.get('error', ''))[:60]}")
            rungs = s["ladder"].get("rungs", [])
            lines.append(f"| {row['scenario']}{' (healthy)' if row['healthy'] else ''} | "
                         f"{s['search_seed']} | " + " | ".join(cells)
                         + f" | {', '.join(map(str, rungs))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.horizon",
                                     description=(__doc__ or "").splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--judge-factor", type=int, default=36,
                        help="the user's (and the judge's) training length in probe lengths "
                        "(default 36)")
    parser.add_argument("--search-seeds", default="0", help="comma-separated (default 0)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the scenarios already in the output JSON")
    args = parser.parse_args(argv)
    names = scenario_names(parser, args)
    preset = dataclasses.replace(PRESETS[args.preset], judge_factor=args.judge_factor)
    seeds = tuple(int(s) for s in args.search_seeds.split(","))
    name = f"horizon_{args.preset}_j{args.judge_factor}"
    path = Path(args.out) / f"{name}.json"
    rows: list[dict[str, Any]] = []
    if args.resume and path.is_file():
        rows = [r for r in json.loads(path.read_text())["rows"] if r["scenario"] in names]
    done = {r["scenario"] for r in rows}
    report: dict[str, Any] = {
        "command": "python -m benchmarks.horizon " + " ".join(argv or sys.argv[1:]),
        "code": _code_version(), "machine": machine(), "preset_name": args.preset,
        "preset": dataclasses.asdict(preset),
        "train_steps": preset.judge_factor * preset.probe_steps, "rows": rows}
    todo = [n for n in names if n not in done]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        from benchmarks.compare import _init_worker

        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = [pool.submit(run_scenario, n, preset, seeds) for n in todo]
            for future in as_completed(futures):
                rows.append(future.result())
                _write(args.out, name, report, names)
    else:
        for n in todo:
            rows.append(run_scenario(n, preset, seeds))
            _write(args.out, name, report, names)
    print(_write(args.out, name, report, names))
    return 0


def _write(out: str, name: str, report: dict[str, Any], order: list[str]) -> str:
    report["rows"].sort(key=lambda r: order.index(r["scenario"]))
    report["totals"] = totals(report["rows"])
    markdown = render_markdown(report)
    write_report(out, name, report, markdown)
    return markdown


if __name__ == "__main__":
    raise SystemExit(main())

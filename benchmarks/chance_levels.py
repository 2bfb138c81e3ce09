"""Which judged repairs learned more than a constant prediction does: the zoo's chance levels.

The judge (`benchmarks.judge`) says a configuration *learns* when its mean final
held-out loss is `LEARNING_FRACTION` (10%) below that of its untrained models. Where
the untrained model is far worse than chance (a ReLU IRNN whose untrained loss spans
0.8-222 over seeds, a normal(stddev=1) classifier at 878), that is met by learning to
predict the mean. This script computes each zoo scenario's **chance level** on the
judge's held-out data (`stabilizer.chance`: the best constant prediction, fitted on the
search data and scored with the scenario's own loss) and, for every compare report it
is given (or `benchmarks.judge_noise` report: every draw it holds), counts the repairs
whose mean final held-out loss is also `LEARNING_FRACTION` below that level, and lists
the others.

A reading, not a verdict: the judge's thresholds were fixed before any result was seen
(`benchmarks/judge.py`) and its repair counts stay what they are. Nothing is trained;
the models are only built (for their output shape and loss).

Usage (from the repository root)::

    python -m benchmarks.chance_levels benchmarks/results/compare_*.json
    python -m benchmarks.chance_levels benchmarks/results/judge_noise_full*.json

Prints a Markdown table and writes ``chance_levels.json`` and ``.md`` to ``--out``
(default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.compare import RESULTS, _code_version, machine, split, write_report  # noqa: E402
from benchmarks.judge import LEARNING_FRACTION  # noqa: E402

__all__ = ["chance_levels", "beats_chance", "read_report", "render_markdown", "main"]


def chance_levels(names: list[str] | None = None) -> dict[str, float | None]:
    """Per zoo scenario: its chance level on the judge's held-out data (None if unknown)."""
    from benchmarks import zoo
    from stabilizer.chance import chance_loss

    levels: dict[str, float | None] = {}
    for name in names or zoo.names():
        scenario = zoo.get(name)
        (_, y_search), (_, y_held) = split(*scenario.load_data())
        model = scenario.build_fn()
        levels[name] = chance_loss(model, model.loss, y_search, y_held)
    return levels


def beats_chance(mean_final: float | None, level: float | None) -> bool:
    """True when a judged mean final loss is `LEARNING_FRACTION` below the chance level."""
    if level is None:
        return mean_final is not None  # no level known: nothing to hold against it
    return mean_final is not None and mean_final <= (1 - LEARNING_FRACTION) * level


def _verdicts(entry: Any) -> list[tuple[bool, float | None]]:
    """(repaired, judged mean final loss) per judge draw of one method on one scenario.

    A compare report has one draw (a dict with its verdict and judgement); a
    `benchmarks.judge_noise` report a list of draws.
    """
    if isinstance(entry, list):
        return [(bool(d["repaired"]), d.get("mean_final")) for d in entry]
    return [(bool(entry["verdict"]["repaired"]), (entry.get("judge") or {}).get("mean_final"))]


def read_report(report: dict[str, Any], levels: dict[str, float | None]) -> dict[str, Any]:
    """One compare or judge_noise report: per method, its repairs (over every draw it
    holds) and those that also beat chance."""
    methods: dict[str, dict[str, Any]] = {}
    for row in report["scenarios"]:
        if row["healthy"]:
            continue
        level = levels.get(row["scenario"])
        for method, entry in row["methods"].items():
            if method == "baseline":
                continue
            counts = methods.setdefault(method, {"repaired": 0, "beyond_chance": 0,
                                                 "at_chance": []})
            for repaired, mean in _verdicts(entry):
                if not repaired:
                    continue
                counts["repaired"] += 1
                if beats_chance(mean, level):
                    counts["beyond_chance"] += 1
                else:
                    counts["at_chance"].append({"scenario": row["scenario"], "mean_final": mean,
                                                "chance": level})
    preset = report.get("preset", {})
    return {"preset": report.get("preset_name"), "search_seed": preset.get("search_seed", 0),
            "code": report.get("code"), "methods": methods}


def render_markdown(levels: dict[str, float | None], reports: dict[str, dict[str, Any]]) -> str:
    lines = ["Chance level per scenario (the best constant prediction's held-out loss):", "",
             "| scenario | chance level |", "|---|---|"]
    lines += [f"| {name} | {'unknown' if v is None else f'{v:.4g}'} |"
              for name, v in levels.items()]
    lines += ["", f"Repairs (of the unstable scenarios) whose mean final held-out loss is also "
              f"{LEARNING_FRACTION:.0%} below the chance level:", "",
              "| report | method | repaired | of those, below chance "
              "| the others (loss vs chance) |",
              "|---|---|---|---|---|"]
    for source, read in reports.items():
        for method, c in read["methods"].items():
            others = "; ".join(f"{o['scenario']} {_g(o['mean_final'])} vs {_g(o['chance'])}"
                               for o in c["at_chance"]) or "-"
            lines.append(f"| {source} | {method} | {c['repaired']} | {c['beyond_chance']} | "
                         f"{others} |")
    return "\n".join(lines)


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chance_levels",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("reports", nargs="+", help="compare or judge_noise reports (JSON)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the JSON and Markdown")
    args = parser.parse_args(argv)
    loaded = {}
    for path in map(Path, args.reports):
        if not path.is_file():
            parser.error(f"{path}: no such report")
        try:
            loaded[path.name] = json.loads(path.read_text())
            loaded[path.name]["scenarios"]
        except (ValueError, KeyError, TypeError):
            parser.error(f"{path}: not a compare report (expected the JSON that "
                         "`python -m benchmarks.compare` or `benchmarks.judge_noise` writes)")
    levels = chance_levels()
    reports = {name: read_report(r, levels) for name, r in loaded.items()}
    markdown = render_markdown(levels, reports)
    write_report(args.out, "chance_levels", {"machine": machine(), "code": _code_version(),
                                             "levels": levels, "reports": reports}, markdown,
                 heading="`python -m benchmarks.chance_levels " + " ".join(args.reports) + "`")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

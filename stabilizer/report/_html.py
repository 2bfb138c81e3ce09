"""Reports of a search: a folder with best.yaml, trials.csv, report.html and summary.json.

`write_report(result, folder)` writes

- ``best.yaml``: the chosen `StabilityConfig` (load it with `StabilityConfig.from_yaml`);
- ``trials.csv``: `StabilityResult.to_csv()`, the baseline (number -1) then one row per trial;
- ``report.html``: one self-contained page: the summary, the chosen configuration, the
  search space, the plots as embedded PNGs (`stabilizer.report._plots`), the diagnosis
  and the trial table;
- ``summary.json``: the same facts for machines.
"""

from __future__ import annotations

import datetime
import html
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stabilizer.errors import mask_secrets
from stabilizer.report._plots import PLOTS, figure, png
from stabilizer.result import Candidate, StabilityResult, TrialRecord
from stabilizer.scoring import jsonable

__all__ = ["html_report", "summary_dict", "write_report"]


def _candidate_dict(cand: Candidate) -> dict[str, Any]:
    comps = cand.components.to_dict()
    comps.pop("per_seed", None)
    return {"trial": cand.trial_number, "config": cand.config.to_dict(),
            "user_params": cand.user_params, "components": comps}


def _state_counts(trials: Sequence[TrialRecord]) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "diverged": 0}
    for t in trials:
        key = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(
            t.state, t.state.lower())
        counts[key] = counts.get(key, 0) + 1
        if t.verdict == "diverged":
            counts["diverged"] += 1
    return counts


def summary_dict(result: StabilityResult) -> dict[str, Any]:
    """The facts of the report as JSON-ready data (NaN becomes null)."""
    settings = result.settings.to_dict()
    if settings.get("storage"):
        settings["storage"] = mask_secrets(settings["storage"])
    return {
        "study_name": result.study_name,
        "storage": result.storage,
        "space": result.space_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "improved": result.improved,
        "best": _candidate_dict(result.best),
        "baseline": _candidate_dict(result.baseline),
        "trials": len(result.trials),
        "states": _state_counts(result.trials),
        "settings": settings,
        "summary": result.summary(),
        "diagnosis": result.diagnosis.to_dict() if result.diagnosis is not None else None,
        "focus": result.focus_notes,
        "space_notes": result.space_notes,
        "not_applied": result.not_applied,
        "choice_note": result.choice_note,
        "horizon": result.horizon.to_dict() if result.horizon is not None else None,
        "train_steps": result.train_steps,
        "rungs": jsonable(result.rungs),
        "ladder_notes": result.ladder_notes,
        "after": result.after.to_dict() if result.after is not None else None,
        "before_after": jsonable(result.before_after()),
    }


def _best_yaml(result: StabilityResult) -> str:
    best = result.best
    origin = f"trial {best.trial_number}" if result.improved else "the baseline (kept)"
    lines = [f"# Most stable configuration of study {result.study_name!r}: {origin}, "
             f"score {best.score:.4g} ({best.components.verdict}).",
             "# Use: StabilityConfig.from_yaml('best.yaml').apply(model, "
             f"train_steps={result.train_steps}) on your model, then "
             "model.fit(..., **config.fit_kwargs(epochs=...))."]
    if best.user_params:
        lines.append(f"# build_fn(hp) hyperparameters of this trial: "
                     f"{json.dumps(best.user_params)}")
    return "\n".join(lines) + "\n" + result.best_config.to_yaml()


_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
pre { background: #f5f5f5; padding: 0.8em; white-space: pre-wrap; word-break: break-word; }
table { border-collapse: collapse; font-size: 0.8em; max-width: 100%; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.4em; text-align: right; }
th { white-space: normal; vertical-align: bottom; }
td:last-child { text-align: left; white-space: normal; word-break: break-word; min-width: 16em; }
tr.chosen td { background: #e8f1fb; font-weight: bold; }
tr.baseline td { background: #fbeeee; }
.note { color: #555; font-style: italic; }
.versions { color: #555; font-size: 0.85em; }
img { max-width: 100%; }
"""


def html_report(result: StabilityResult) -> str:
    """The whole report as one self-contained HTML page (plots embedded as PNG)."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<title>stabilizer report: {esc(result.study_name)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Stability report: study {esc(repr(result.study_name))}</h1>",
             f"<p>storage {esc(result.storage)}, space {esc(result.space_name)}, "
             f"{len(result.trials)} trials</p>",
             f"<p class='versions'>{esc(versions_line())}</p>",
             f"<h2>Summary</h2><pre>{esc(result.summary())}</pre>",
             f"<h2>Chosen configuration</h2><pre>{esc(_best_yaml(result))}</pre>",
             _space_html(result)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parts.append("<p class='note'>Plots need matplotlib: pip install matplotlib</p>")
    else:
        for key, (title, alt) in PLOTS.items():
            fig, note = figure(result, key)
            parts.append(f"<h2>{esc(title)}</h2>")
            if fig is not None:
                parts.append(f"<img alt='{esc(alt)}' src='data:image/png;base64,{png(fig)}'>")
            if note:
                parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append(_diagnosis_html(result))
    parts.append("<h2>Trials</h2>" + _table_html(result))
    failed = [t for t in result.trials if t.state == "FAIL" and t.error]
    if failed:
        parts.append("<h2>Failed trials</h2><ul>" + "".join(
            f"<li>trial {t.number}: <code>{esc(_last_line(t.error or ''))}</code></li>"
            for t in failed) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _space_html(result: StabilityResult) -> str:
    """The space searched, and each dimension left out because it cannot change the model."""
    esc = html.escape
    head = f"<h2>Search space</h2><p>space {esc(repr(result.space_name))}"
    if not result.space_notes:
        return head + ": every dimension it names can change this model.</p>"
    items = "".join(f"<li>{esc(note)}</li>" for note in result.space_notes)
    return (head + ". Dimensions fixed to your own setting (keep), neither sampled nor "
            f"reported, because they cannot change this model:</p><ul>{items}</ul>")


def _diagnosis_html(result: StabilityResult) -> str:
    """Before/after table, the focus notes and both diagnoses with their evidence."""
    esc = html.escape
    if result.diagnosis is None:
        return ("<h2>Diagnosis</h2><p class='note'>the search ran without a diagnosis "
                "(SearchConfig.diagnose=false)</p>")
    parts = []
    rows = result.before_after()
    if rows:
        body = "".join(
            f"<tr><td>{esc(r['code'])}</td><td>{esc(r['title'])}</td>"
            f"<td>{esc(r['before'] or '-')}</td><td>{esc(r['after'] or '-')}</td></tr>"
            for r in rows)
        parts.append("<h2>Before / after</h2><table><thead><tr><th>finding</th><th>title</th>"
                     f"<th>your configuration</th><th>chosen</th></tr></thead><tbody>{body}"
                     "</tbody></table>")
    if result.focus_notes:
        parts.append("<p>Space focused by the diagnosis: "
                     + esc("; ".join(result.focus_notes)) + "</p>")
    parts.append(result.diagnosis.html_section().replace(
        "<h2>Diagnosis</h2>", "<h2>Diagnosis of your configuration (before)</h2>", 1))
    if result.after is not None and result.improved:
        parts.append(result.after.html_section().replace(
            "<h2>Diagnosis</h2>", "<h2>Diagnosis of the chosen configuration (after)</h2>", 1))
    return "\n".join(parts)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _table_html(result: StabilityResult) -> str:
    """The trials, the baseline first; the chosen row highlighted, numbers rounded (in the
    config text too), the config column wrapping so that the table fits the page."""
    rows = result.table()
    if not rows:
        return "<p class='note'>no trials</p>"
    chosen = result.best.trial_number if result.improved else -1
    head = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in rows[0])
    body = []
    for row in rows:
        kind = "chosen" if row["number"] == chosen else \
            "baseline" if row["number"] == -1 else ""
        cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.values())
        body.append(f"<tr class='{kind}'>{cells}</tr>" if kind else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_LONG_NUMBER = re.compile(r"\d+\.\d{5,}(?:e[+-]?\d+)?")


def versions_line() -> str:
    """'stabilizer 0.1.0, Keras 3.x (tensorflow 2.x), Optuna 4.x, Python 3.11.7 on Linux
    x86_64, 2 CPUs': what made the report, for comparing two reports."""
    import os
    import platform

    import keras
    import optuna

    from stabilizer import __version__

    backend = keras.backend.backend()
    module = sys.modules.get(backend)  # the backend Keras imported
    backend_version = getattr(module, "__version__", "?")
    return (f"stabilizer {__version__}, Keras {keras.__version__} ({backend} {backend_version}), "
            f"Optuna {optuna.__version__}, Python {platform.python_version()} on "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return _LONG_NUMBER.sub(lambda m: f"{float(m.group()):.4g}", value)
    return "" if value is None else str(value)


def write_report(result: StabilityResult, folder: str | Path) -> Path:
    """Write best.yaml, trials.csv, report.html and summary.json into `folder`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "best.yaml").write_text(_best_yaml(result))
    result.to_csv(out / "trials.csv")
    (out / "report.html").write_text(html_report(result))
    (out / "summary.json").write_text(json.dumps(summary_dict(result), indent=2,
                                                 allow_nan=False, default=str) + "\n")
    return out

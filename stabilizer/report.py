"""Reports of a search: a folder with best.yaml, trials.csv, report.html and summary.json.

`write_report(result, folder)` writes

- ``best.yaml``: the chosen `StabilityConfig` (load it with `StabilityConfig.from_yaml`);
- ``trials.csv``: `StabilityResult.to_csv()`, the baseline (number -1) then one row per trial;
- ``report.html``: one self-contained page: the summary, the chosen configuration,
  the plots as embedded PNGs, and the trial table;
- ``summary.json``: the same facts for machines.

The plots (also drawn inline in a notebook by `StabilityResult.plot()`):

- loss curves of the baseline against the chosen configuration, one line per seed;
- gradient-norm traces per layer, baseline and chosen configuration;
- score components across trials (the quality gained and each weighted penalty);
- parameter importance (`optuna.importance`) once enough trials have completed.

Only matplotlib's object API is used (`matplotlib.figure.Figure`, rendered by Agg),
so nothing here needs a display or touches `pyplot`'s global state.
"""

from __future__ import annotations

import base64
import datetime
import functools
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stabilizer.errors import mask_secrets
from stabilizer.result import Candidate, StabilityResult, TrialRecord
from stabilizer.scoring import WEIGHTS, jsonable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MIN_TRIALS_FOR_IMPORTANCE",
    "PLOTS",
    "figure",
    "parameter_importance",
    "plot_result",
    "summary_dict",
    "write_report",
]

#: Completed trials needed before parameter importance is computed.
MIN_TRIALS_FOR_IMPORTANCE = 3

#: Plot key -> (section title, alt text of its image in report.html).
PLOTS = {
    "loss": ("Loss curves", "Loss curves of the baseline and the chosen configuration over seeds"),
    "grad_norm": ("Gradient norms per layer",
                  "Gradient norm traces per layer for the baseline and the chosen configuration"),
    "scores": ("Score components across trials",
               "Score components across trials: quality gained and weighted penalties"),
    "importance": ("Parameter importance", "Parameter importance of the searched settings"),
}

_BASELINE_COLOR = "tab:red"
_BEST_COLOR = "tab:blue"
_VERDICT_COLORS = {"stable": "tab:green", "unstable": "tab:orange", "stuck": "tab:gray",
                   "diverged": "tab:red"}
_PENALTY_COLORS = {"oscillation": "tab:orange", "spike_rate": "tab:purple",
                   "explode_rate": "tab:red", "vanishing_share": "tab:brown",
                   "seed_spread": "tab:pink", "stuck": "tab:gray",
                   "generalization_gap": "tab:olive"}


# -- data helpers ----------------------------------------------------------------------
def _array(values: Any) -> np.ndarray:
    """A float array from stored curves (None, i.e. NaN/Inf at record time, becomes NaN)."""
    if values is None:
        return np.zeros(0)
    rows = [[np.nan if v is None else v for v in row] if isinstance(row, list)
            else (np.nan if row is None else row) for row in values]
    return np.asarray(rows, dtype=np.float64)


def _steps_axis(curve: dict[str, Any], n: int) -> np.ndarray:
    """Step numbers of `n` down-sampled points of a probe of `curve['steps']` steps."""
    steps = int(curve.get("steps") or n)
    return np.arange(n) if n == steps else np.linspace(0, max(steps - 1, 0), n)


def _candidates(result: StabilityResult) -> list[tuple[str, Candidate, str]]:
    """(label, candidate, colour): the baseline, and the chosen one when it differs."""
    if not result.improved:
        return [("baseline (kept)", result.baseline, _BASELINE_COLOR)]
    return [("baseline", result.baseline, _BASELINE_COLOR),
            (f"chosen (trial {result.best.trial_number})", result.best, _BEST_COLOR)]


def _log_scale_if_positive(ax: Axes, arrays: Sequence[np.ndarray]) -> None:
    finite = [a[np.isfinite(a)] for a in arrays if a.size]
    values = np.concatenate(finite) if finite else np.zeros(0)
    if values.size and (values > 0).all():
        ax.set_yscale("log")


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


# -- the plots, each drawn onto given axes ------------------------------------------------
def draw_loss(result: StabilityResult, ax_train: Axes, ax_val: Axes) -> None:
    """Training loss per step and validation loss per evaluation, one line per seed."""
    drawn: list[np.ndarray] = []
    val_drawn: list[np.ndarray] = []
    for label, cand, color in _candidates(result):
        for seed, curve in enumerate(cand.curves):
            loss = _array(curve.get("loss"))
            if loss.size:
                ax_train.plot(_steps_axis(curve, len(loss)), loss, color=color, alpha=0.8,
                              lw=1.0, label=label if seed == 0 else None)
                drawn.append(loss)
            val = _array(curve.get("val_loss"))
            if val.size:
                steps = int(curve.get("steps") or len(val))
                x = np.linspace(steps / len(val), steps, len(val))
                ax_val.plot(x, val, "o-", color=color, alpha=0.8,
                            label=label if seed == 0 else None)
                val_drawn.append(val)
            if curve.get("diverged") and loss.size:
                ax_train.axvline(_steps_axis(curve, len(loss))[-1], color=color, ls=":", lw=1)
    seeds = max(len(c.curves) for _, c, _ in _candidates(result))
    for ax, arrays, title in ((ax_train, drawn, "training loss"),
                              (ax_val, val_drawn, "validation loss")):
        if not arrays:
            _empty(ax, f"no {title} recorded")
            continue
        _log_scale_if_positive(ax, arrays)
        ax.set_title(f"{title} ({seeds} seed{'s' if seeds != 1 else ''} each)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")


def draw_grad_norms(result: StabilityResult, axes: Sequence[Axes]) -> None:
    """Per-layer gradient norms (first seed) of the baseline and the chosen configuration."""
    cands = _candidates(result)
    for ax, (label, cand, _) in zip(axes, cands):
        if not cand.curves:
            _empty(ax, f"{label}: no probe recorded")
            continue
        curve = cand.curves[0]
        layers = _array(curve.get("layer_grad_norm"))
        names = list(curve.get("layer_names") or [])
        total = _array(curve.get("grad_norm"))
        if layers.ndim != 2 or not layers.size:
            _empty(ax, f"{label}: no gradient norms recorded")
            continue
        x = _steps_axis(curve, layers.shape[0])
        cmap = _colormap(layers.shape[1])
        for j in range(layers.shape[1]):
            name = names[j] if j < len(names) else f"layer {j}"
            ax.plot(x, layers[:, j], lw=1.0, color=cmap(j), label=name)
        if total.size:
            ax.plot(_steps_axis(curve, len(total)), total, "k--", lw=1.0, label="global")
        _log_scale_if_positive(ax, [layers.ravel(), total])
        ax.set_title(f"gradient norm per layer: {label}, seed 1")
        ax.set_xlabel("step")
        ax.set_ylabel("gradient norm")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2 if layers.shape[1] > 6 else 1)
    for ax in axes[len(cands):]:
        _empty(ax, "the baseline was kept: no other configuration to show")


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _colormap(n: int) -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"].resampled(max(n, 2))


def draw_scores(result: StabilityResult, ax_score: Axes, ax_parts: Axes) -> None:
    """Score per trial (by verdict) and the score's parts: quality up, penalties down."""
    trials = result.trials
    if not trials:
        _empty(ax_score, "no trials yet")
        _empty(ax_parts, "no trials yet")
        return
    scored = [t for t in trials if t.state == "COMPLETE" and t.verdict != "diverged"
              and _finite(t.score)]
    base = result.baseline.components
    finite_scores = [float(t.score) for t in scored]  # type: ignore[arg-type]
    if _finite(base.score) and not base.diverged:
        finite_scores.append(base.score)
    low = min(finite_scores) if finite_scores else -1.0
    high = max(finite_scores) if finite_scores else 1.0
    pad = max(0.1, 0.1 * (high - low))
    floor = low - pad
    for verdict, color in _VERDICT_COLORS.items():
        xs = [t.number for t in scored if t.verdict == verdict]
        ys = [t.score for t in scored if t.verdict == verdict]
        if xs:
            ax_score.scatter(xs, ys, color=color, label=verdict, zorder=3)
    for state, marker, color, label in (("diverged", "v", "tab:red", "diverged (score -50)"),
                                        ("PRUNED", "x", "tab:gray", "pruned"),
                                        ("FAIL", "X", "black", "failed")):
        xs = [t.number for t in trials if (t.verdict == "diverged" if state == "diverged"
                                           else t.state == state)]
        if xs:
            ax_score.scatter(xs, [floor] * len(xs), marker=marker, color=color, label=label,
                             zorder=3)
    if not base.diverged and _finite(base.score):
        ax_score.axhline(base.score, color=_BASELINE_COLOR, ls="--", lw=1, label="baseline")
    if result.improved and _finite(result.score):
        ax_score.scatter([result.best.trial_number], [result.score], marker="*", s=250,
                         facecolors="none", edgecolors="black", label="chosen", zorder=4)
    ax_score.set_ylim(floor - pad, high + pad)
    ax_score.xaxis.set_major_locator(_integer_ticks())
    ax_score.set_title("stability score per trial (higher is better)")
    ax_score.set_xlabel("trial")
    ax_score.set_ylabel("score")
    ax_score.grid(alpha=0.3)
    ax_score.legend(fontsize="small")

    columns: list[tuple[str, dict[str, Any]]] = []
    if not base.diverged:
        columns.append(("base", base.to_dict()))
    columns += [(str(t.number), t.components or {}) for t in scored]
    if not columns:
        _empty(ax_parts, "no completed, non-diverged trial yet")
        return
    x = np.arange(len(columns))
    quality = np.array([_num(c.get("quality")) for _, c in columns])
    ax_parts.bar(x, quality, color="tab:green", label="quality (nats of loss reduction)")
    bottom = np.zeros(len(columns))
    for key, weight in WEIGHTS.items():
        raw = np.array([float(bool(c.get(key))) if key == "stuck" else _num(c.get(key))
                        for _, c in columns])
        penalty = -weight * raw
        if np.any(penalty != 0):
            ax_parts.bar(x, penalty, bottom=bottom, color=_PENALTY_COLORS[key],
                         label=f"-{weight:g} x {key}")
            bottom += penalty
    ax_parts.plot(x, [_num(c.get("score")) for _, c in columns], "k.", ms=9, label="score")
    ax_parts.axhline(0, color="black", lw=0.5)
    ax_parts.set_xticks(x, [name for name, _ in columns], fontsize="small")
    ax_parts.set_title("score = quality - weighted penalties")
    ax_parts.set_xlabel("trial")
    ax_parts.grid(alpha=0.3, axis="y")
    ax_parts.legend(fontsize="x-small")


def _num(value: Any) -> float:
    return float(value) if _finite(value) else 0.0


def parameter_importance(trials: Sequence[TrialRecord]) -> tuple[dict[str, float] | None, str]:
    """Importance of each varying setting for the score, or None and why not.

    Uses `optuna.importance` (fANOVA when scikit-learn is installed, PED-ANOVA
    otherwise) on an in-memory study rebuilt from the completed trials, so it
    works for any driver and any storage. Diverged trials count with their score.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    rows = []
    for t in trials:
        if t.state != "COMPLETE" or t.config is None or not _finite(t.score):
            continue
        params = {k: v for k, v in t.config.to_dict().items() if v is not None}
        params.update({f"hp/{k}": v for k, v in t.user_params.items()})
        rows.append((params, float(t.score)))  # type: ignore[arg-type]
    if len(rows) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (f"Parameter importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} "
                      f"completed trials; this study has {len(rows)}.")
    common = set.intersection(*(set(p) for p, _ in rows))
    distributions: dict[str, Any] = {}
    for name in sorted(common):
        values = [p[name] for p, _ in rows]
        if len({repr(v) for v in values}) < 2:
            continue
        if all(isinstance(v, float) for v in values):
            low, high = min(values), max(values)
            distributions[name] = FloatDistribution(low, high, log=low > 0 and high >= 10 * low)
        else:
            distributions[name] = CategoricalDistribution(sorted(set(values), key=repr))
    if not distributions:
        return None, "No searched setting varied across the completed trials."
    if len({score for _, score in rows}) < 2:
        return None, "Every completed trial has the same score: no setting explains a difference."
    try:
        import sklearn  # noqa: F401

        evaluator: Any = optuna.importance.FanovaImportanceEvaluator(seed=0)
        method = "fANOVA"
    except ImportError:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        method = "PED-ANOVA"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials([optuna.trial.create_trial(
            params={k: p[k] for k in distributions}, distributions=distributions, value=score)
            for p, score in rows])
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # a degenerate study; say so instead of failing the report
        return None, f"Parameter importance could not be computed ({type(exc).__name__}: {exc})."
    finally:
        optuna.logging.set_verbosity(verbosity)
    note = (f"{method} importance (optuna.importance) over {len(rows)} completed trials; "
            "diverged trials count with their score.")
    return {k: float(v) for k, v in importances.items()}, note


def draw_importance(result: StabilityResult, ax: Axes) -> str:
    """Horizontal bars of parameter importance, or the note explaining their absence."""
    importances, note = parameter_importance(result.trials)
    if importances is None:
        _empty(ax, note)
    else:
        _draw_importances(importances, ax)
    return note


def _draw_importances(importances: dict[str, float], ax: Axes) -> None:
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (share of score variance)")
    ax.set_title("parameter importance")
    ax.grid(alpha=0.3, axis="x")


# -- figures -------------------------------------------------------------------------------
@functools.cache
def _figure_class() -> type[Figure]:
    from matplotlib.figure import Figure

    class ReportFigure(Figure):
        """A Figure that shows itself in Jupyter without pyplot (`_repr_png_`)."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=80)
            return buffer.getvalue()

    return ReportFigure


def _new_figure(width: float, height: float) -> Figure:
    return _figure_class()(figsize=(width, height), layout="constrained")


def figure(result: StabilityResult, key: str) -> tuple[Figure | None, str]:
    """One plot of `PLOTS` as its own figure, with a note ('' when there is none).

    The importance plot is None (and the note says why) until enough trials completed.
    """
    if key == "loss":
        fig = _new_figure(11, 4)
        draw_loss(result, *fig.subplots(1, 2))
        return fig, ""
    if key == "grad_norm":
        fig = _new_figure(11, 4)
        draw_grad_norms(result, list(fig.subplots(1, 2)))
        return fig, ""
    if key == "scores":
        fig = _new_figure(11, 4.5)
        draw_scores(result, *fig.subplots(1, 2))
        return fig, ""
    if key == "importance":
        importances, note = parameter_importance(result.trials)
        if importances is None:
            return None, note
        fig = _new_figure(7, 3.5)
        _draw_importances(importances, fig.subplots())
        return fig, note
    raise ValueError(f"plot {key!r}: expected one of {', '.join(PLOTS)}")


def plot_result(result: StabilityResult) -> Figure:
    """Every plot of the report in one figure (what `StabilityResult.plot()` returns)."""
    fig = _new_figure(12, 15)
    grid = fig.add_gridspec(4, 2, height_ratios=[1, 1, 1, 0.7])
    draw_loss(result, fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]))
    draw_grad_norms(result, [fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])])
    draw_scores(result, fig.add_subplot(grid[2, 0]), fig.add_subplot(grid[2, 1]))
    draw_importance(result, fig.add_subplot(grid[3, :]))
    fig.suptitle(f"stabilizer: study {result.study_name!r}")
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- summary, HTML and the folder --------------------------------------------------------------
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
        "after": result.after.to_dict() if result.after is not None else None,
        "before_after": jsonable(result.before_after()),
    }


def _best_yaml(result: StabilityResult) -> str:
    best = result.best
    origin = f"trial {best.trial_number}" if result.improved else "the baseline (kept)"
    lines = [f"# Most stable configuration of study {result.study_name!r}: {origin}, "
             f"score {best.score:.4g} ({best.components.verdict}).",
             "# Load: StabilityConfig.from_yaml('best.yaml'); "
             "build: StabilityResult.build_model()."]
    if best.user_params:
        lines.append(f"# build_fn(hp) hyperparameters of this trial: "
                     f"{json.dumps(best.user_params)}")
    return "\n".join(lines) + "\n" + result.best_config.to_yaml()


_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
td:last-child { text-align: left; }
.note { color: #555; font-style: italic; }
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
                parts.append(f"<img alt='{esc(alt)}' src='data:image/png;base64,{_png(fig)}'>")
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
    rows = result.table()
    if not rows:
        return "<p class='note'>no trials</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.values())
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
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

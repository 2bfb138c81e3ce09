"""The plots of a search, drawn with matplotlib's object API (no display, no `pyplot` state):

- loss curves of the baseline against the chosen configuration, one line per seed;
- gradient-norm traces per layer, baseline and chosen configuration;
- score components across trials (the quality gained and each weighted penalty);
- parameter importance (`optuna.importance`) once enough trials have completed.

`StabilityResult.plot()` draws them inline in a notebook; report.html embeds them.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stabilizer.result import Candidate, StabilityResult, TrialRecord
from stabilizer.scoring import WEIGHTS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "PLOTS", "figure", "parameter_importance", "plot_result",
           "png"]

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


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- summary, HTML and the folder --------------------------------------------------------------

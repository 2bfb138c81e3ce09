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

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "PLOTS", "compact_figure", "figure",
           "parameter_importance", "plot_result", "png"]

#: Completed trials needed before parameter importance is computed.
MIN_TRIALS_FOR_IMPORTANCE = 10

#: Plot key -> (section title, alt text of its image in report.html).
PLOTS = {
    "loss": ("Loss curves", "Loss curves of the baseline and the chosen configuration over seeds"),
    "grad_norm": ("Gradient norms per layer",
                  "Gradient norm traces per layer for the baseline and the chosen configuration"),
    "lr_range": ("LR range test", "Training loss against the learning rate in the LR range "
                 "test, with your rate, the largest stable rate and the chosen rate marked"),
    "history": ("Optimization history", "The score of each trial with the best so far, and "
                "the duration of each trial"),
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


def _log_scale_if_positive(ax: Axes, arrays: Sequence[np.ndarray], axis: str = "y") -> None:
    finite = [a[np.isfinite(a)] for a in arrays if a.size]
    values = np.concatenate(finite) if finite else np.zeros(0)
    if values.size and (values > 0).all():
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        _plain_log_ticks(ax, axis)


def _plain_log_ticks(ax: Axes, axis: str = "y") -> None:
    """Log-axis labels as plain numbers ('0.01', '3', '200'), not '3x10^0'; minor ticks
    unlabelled."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


# -- the plots, each drawn onto given axes ------------------------------------------------
def draw_loss(result: StabilityResult, ax_train: Axes | None, ax_val: Axes) -> None:
    """Training loss per step and validation loss per evaluation, one line per seed
    (`ax_train` None: the validation loss alone)."""
    drawn: list[np.ndarray] = []
    val_drawn: list[np.ndarray] = []
    for label, cand, color in _candidates(result):
        for seed, curve in enumerate(cand.curves):
            loss = _array(curve.get("loss"))
            if loss.size and ax_train is not None:
                ax_train.plot(_steps_axis(curve, len(loss)), loss, color=color, alpha=0.8,
                              lw=1.0, label=label if seed == 0 else None)
                drawn.append(loss)
            val = _array(curve.get("val_loss"))
            if val.size:
                steps = int(curve.get("steps") or len(val))
                x = np.linspace(steps / len(val), steps, len(val))
                start = curve.get("initial_val_loss")
                if _finite(start):  # the untrained evaluation, at step 0
                    x, val = np.concatenate([[0.0], x]), np.concatenate([[float(start)], val])
                ax_val.plot(x, val, "o-", color=color, alpha=0.8, ms=3,
                            label=label if seed == 0 else None)
                val_drawn.append(val)
            if curve.get("diverged") and loss.size and ax_train is not None:
                ax_train.axvline(_steps_axis(curve, len(loss))[-1], color=color, ls=":", lw=1)
    seeds = max(len(c.curves) for _, c, _ in _candidates(result))
    for ax, arrays, title in ((ax_train, drawn, "training loss"),
                              (ax_val, val_drawn, "validation loss")):
        if ax is None:
            continue
        if not arrays:
            _empty(ax, f"no {title} recorded")
            continue
        _log_scale_if_positive(ax, arrays)
        ax.set_title(f"{title}, {seeds} seed{'s' if seeds != 1 else ''} each"
                     + (" (step 0: untrained)" if ax is ax_val else ""), fontsize="medium")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")


def draw_grad_norms(result: StabilityResult, axes: Sequence[Axes]) -> None:
    """Per-layer gradient norms of the baseline and the chosen configuration: the median
    over every seed with a band from the lowest to the highest seed, on one shared scale."""
    cands = _candidates(result)
    drawn: list[tuple[Axes, np.ndarray]] = []
    for ax, (label, cand, _) in zip(axes, cands):
        stacks = [_array(c.get("layer_grad_norm")) for c in cand.curves]
        stacks = [a for a in stacks if a.ndim == 2 and a.size]
        if not stacks:
            _empty(ax, f"{label}: no gradient norms recorded")
            continue
        rows = min(a.shape[0] for a in stacks)
        cols = min(a.shape[1] for a in stacks)
        layers = np.stack([a[:rows, :cols] for a in stacks])  # (seeds, points, layers)
        curve = cand.curves[0]
        names = list(curve.get("layer_names") or [])
        x = _steps_axis(curve, rows)
        cmap = _colormap(cols)
        with np.errstate(all="ignore"):
            for j in range(cols):
                name = names[j] if j < len(names) else f"layer {j}"
                column = layers[:, :, j]
                ax.plot(x, np.nanmedian(column, axis=0), lw=1.0, color=cmap(j), label=name)
                if len(stacks) > 1:
                    ax.fill_between(x, np.nanmin(column, axis=0), np.nanmax(column, axis=0),
                                    color=cmap(j), alpha=0.15, lw=0)
        ax.set_title(f"{label}: median of {len(stacks)} seed{'s' if len(stacks) != 1 else ''}"
                     + (", band min-max" if len(stacks) > 1 else ""), fontsize="medium")
        ax.set_xlabel("step")
        ax.set_ylabel("gradient norm")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2 if cols > 6 else 1, loc="best", framealpha=0.7)
        drawn.append((ax, layers))
    if drawn:  # one scale for both panels
        values = np.concatenate([layers[np.isfinite(layers)].ravel() for _, layers in drawn])
        positive = values[values > 0]
        for ax, _ in drawn:
            if positive.size and positive.size == values.size:
                ax.set_yscale("log")
                _plain_log_ticks(ax)
                ax.set_ylim(positive.min() / 1.5, positive.max() * 1.5)
            elif values.size:
                ax.set_ylim(values.min(), values.max() * 1.05 + 1e-12)
    for ax in axes[len(cands):]:
        _empty(ax, "the baseline was kept: no other configuration to show")


def draw_lr_range(result: StabilityResult, ax: Axes) -> str:
    """The LR range test's loss against the learning rate, your rate, the largest stable
    one and the chosen one marked; a note when there was none."""
    test = result.diagnosis.lr_range if result.diagnosis is not None else None
    if test is None or not len(test.losses):
        note = "No LR range test ran (the search ran without diagnosis)."
        _empty(ax, note)
        return note
    rates, losses = np.asarray(test.learning_rates), np.asarray(test.losses)
    ax.plot(rates, losses, color="0.6", lw=0.8, label="training loss per step")
    if np.isfinite(test.smoothed).any():
        ax.plot(rates, test.smoothed, color="k", lw=1.4, label="smoothed")
    ax.set_xscale("log")
    _plain_log_ticks(ax, "x")
    marks = [("your rate", test.user_lr, _BASELINE_COLOR, "--"),
             ("largest stable", test.max_stable_lr, "tab:green", ":"),
             ("chosen", result.best_config.learning_rate or test.user_lr, _BEST_COLOR, "-")]
    for name, rate, color, style in marks:
        if _finite(rate):
            ax.axvline(float(rate), color=color, ls=style, lw=1.2, label=f"{name}: {rate:.3g}")
    finite = losses[np.isfinite(losses)]
    if finite.size:
        low, high = finite.min(), np.percentile(finite, 95)
        ax.set_ylim(low - 0.05 * (high - low + 1e-12), high + 0.1 * (high - low + 1e-12))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test ({test.steps_done} steps, {test.min_lr:.3g} to "
                 f"{test.max_lr:.3g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", framealpha=0.8)
    return ""


def draw_history(result: StabilityResult, ax_score: Axes, ax_time: Axes | None) -> None:
    """Each trial's score with the best so far (the baseline's as a line), and each
    trial's duration coloured by its verdict (`ax_time` None: the scores alone)."""
    trials = sorted(result.trials, key=lambda t: t.number)
    scored = [(t.number, t.score, t.verdict) for t in trials
              if t.state == "COMPLETE" and _finite(t.score)]
    if not scored:
        _empty(ax_score, "no completed trial yet")
    else:
        numbers = [n for n, _, _ in scored]
        scores = np.asarray([v for _, v, _ in scored])
        diverged = np.asarray([v == "diverged" for _, _, v in scored])
        shown = [*scores[~diverged]] + ([result.baseline.score]
                                        if _finite(result.baseline.score) else [])
        # the scale of the trials that trained; a diverged one (a fixed, far lower score)
        # sits on the bottom edge instead of squashing the rest
        low, high = (min(shown), max(shown)) if shown else (-1.0, 1.0)
        pad = 0.1 * (high - low) or 0.5
        floor = low - pad
        for mask, marker, label in ((~diverged, "o", "trial"), (diverged, "v", "diverged")):
            if mask.any():
                ax_score.scatter(np.asarray(numbers)[mask], np.maximum(scores[mask], floor),
                                 c=[_VERDICT_COLORS.get(v, "tab:blue")
                                    for (_, _, v), m in zip(scored, mask) if m],
                                 marker=marker, s=24, zorder=3, label=label, clip_on=False)
        ax_score.step(numbers, np.maximum(np.maximum.accumulate(scores), floor), where="post",
                      color="k", lw=1.2, label="best so far")
        if _finite(result.baseline.score):
            ax_score.axhline(result.baseline.score, color=_BASELINE_COLOR, ls="--", lw=1,
                             label="your configuration")
        ax_score.set_ylim(floor, high + pad)
        ax_score.set_xlabel("trial")
        ax_score.set_ylabel("stability score")
        ax_score.xaxis.set_major_locator(_integer_ticks())
        ax_score.set_title(f"optimization history ({len(scored)} completed)")
        ax_score.grid(alpha=0.3)
        ax_score.legend(fontsize="x-small", loc="lower right", framealpha=0.8)
    if ax_time is None:
        return
    timed = [(t.number, t.seconds, t.verdict) for t in trials if _finite(t.seconds)]
    if not timed:
        _empty(ax_time, "no trial duration recorded")
        return
    ax_time.bar([n for n, _, _ in timed], [s for _, s, _ in timed],
                color=[_VERDICT_COLORS.get(v, "tab:gray") for _, _, v in timed])
    ax_time.set_xlabel("trial")
    ax_time.set_ylabel("seconds")
    ax_time.xaxis.set_major_locator(_integer_ticks())
    total = sum(s for _, s, _ in timed)
    ax_time.set_title(f"trial durations (total {total:.0f} s; colour: verdict)")
    ax_time.grid(alpha=0.3, axis="y")


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
    low, high = ax_parts.get_ylim()  # room above the bars, so that the legend covers none
    ax_parts.set_ylim(low, high + 0.45 * (high - low))
    ax_parts.legend(fontsize="x-small", loc="upper left", ncol=3, framealpha=0.9)


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
    if key == "lr_range":
        fig = _new_figure(8, 3.8)
        note = draw_lr_range(result, fig.subplots())
        return (None, note) if note else (fig, "")
    if key == "history":
        fig = _new_figure(11, 3.8)
        draw_history(result, *fig.subplots(1, 2))
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
    fig = _new_figure(12, 19)
    grid = fig.add_gridspec(5, 2, height_ratios=[1, 1, 1, 1, 0.7])
    draw_loss(result, fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]))
    draw_grad_norms(result, [fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])])
    draw_history(result, fig.add_subplot(grid[2, 0]), fig.add_subplot(grid[2, 1]))
    draw_scores(result, fig.add_subplot(grid[3, 0]), fig.add_subplot(grid[3, 1]))
    draw_lr_range(result, fig.add_subplot(grid[4, 0]))
    draw_importance(result, fig.add_subplot(grid[4, 1]))
    fig.suptitle(f"stabilizer: study {result.study_name!r}")
    return fig


def compact_figure(result: StabilityResult) -> Figure:
    """Two small panels for a notebook: validation loss (yours and the chosen one, every
    seed) and the optimization history (`StabilityResult._repr_html_`)."""
    fig = _new_figure(10, 2.8)
    ax_val, ax_history = fig.subplots(1, 2)
    draw_loss(result, None, ax_val)
    draw_history(result, ax_history, None)
    return fig


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- summary, HTML and the folder --------------------------------------------------------------

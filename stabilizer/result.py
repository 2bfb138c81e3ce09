"""The result of a search: the chosen configuration, the baseline and the evidence."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from stabilizer.apply import (
    ConfiguredModel,
    apply_to_model,
    build_configured_model,
    fit_arguments,
    replay_hyperparameters,
    resolve_build_fn,
)
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.errors import ConfigError
from stabilizer.probe import Horizon
from stabilizer.scoring import ScoreComponents

if TYPE_CHECKING:
    from stabilizer.diagnosis import Diagnosis

__all__ = ["StabilityResult", "Candidate", "TrialRecord", "TrialTable", "applied_only"]

_TABLE_COLUMNS = ("number", "state", "score", "verdict", "final_val_loss", "quality",
                  "oscillation", "spike_rate", "explode_rate", "vanishing_share",
                  "seed_spread", "generalization_gap", "progress", "config")


@dataclasses.dataclass
class TrialRecord:
    """One finished (or failed, or pruned) trial, as read back from the driver's store."""

    number: int
    state: str  # "COMPLETE", "PRUNED", "FAIL" or "RUNNING"
    score: float | None
    config: StabilityConfig | None
    user_params: dict[str, Any]
    components: dict[str, Any] | None
    curves: list[dict[str, Any]]
    error: str | None = None
    seconds: float | None = None
    #: How the seeds were trained: {"seeds", "together", "fallback"}; "fallback" says why
    #: they ran one after another (`stabilizer.probe.ProbeRun`).
    probes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.components:
            return str(self.components.get("verdict"))
        return self.state.lower()


@dataclasses.dataclass
class Candidate:
    """A scored configuration (the baseline or a trial)."""

    config: StabilityConfig
    components: ScoreComponents
    curves: list[dict[str, Any]]
    user_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    trial_number: int | None = None  # None for the baseline

    @property
    def score(self) -> float:
        return self.components.score

    @property
    def not_applied(self) -> list[str]:
        """What the probes were asked to change but could not (`AppliedModel.not_applied`)."""
        seen: list[str] = []
        for curve in self.curves:
            for entry in curve.get("not_applied") or []:
                if entry not in seen:
                    seen.append(entry)
        return seen


_NOT_APPLIED_FIELD = re.compile(r"^(\w+)\s*[=:]")


def applied_only(config: StabilityConfig, not_applied: list[str]) -> StabilityConfig:
    """`config` with every field its probes did not apply set back to "keep" (or None).

    `not_applied` holds the probes' reasons, each starting with the field's name.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(StabilityConfig)}
    reset = {}
    for entry in not_applied:
        match = _NOT_APPLIED_FIELD.match(entry)
        if match and match.group(1) in defaults:
            reset[match.group(1)] = defaults[match.group(1)]
    if "clipping" in reset or "clip_value" in reset:  # a clipping mode needs its value
        reset.update(clipping=defaults["clipping"], clip_value=None)
    return dataclasses.replace(config, **reset) if reset else config


@dataclasses.dataclass
class StabilityResult:
    """What `stabilize()` returns.

    `best` is the highest-scoring candidate among the completed trials and the
    baseline (the user's own configuration, probed the same way). `trials` holds
    every trial with its score components; `table()` and `to_csv()` tabulate them.
    `diagnosis` is what the baseline's diagnosis found (the "before"), `after`
    the chosen configuration's on the same seeds, `before_after()` the two side
    by side, and `focus_notes` how the findings narrowed the space.
    """

    best: Candidate
    baseline: Candidate
    trials: list[TrialRecord]
    settings: SearchConfig
    space_name: str
    study_name: str
    storage: str
    build_fn: Callable[..., Any] | None = dataclasses.field(default=None, repr=False)
    diagnosis: Diagnosis | None = dataclasses.field(default=None, repr=False)
    after: Diagnosis | None = dataclasses.field(default=None, repr=False)
    focus_notes: list[str] = dataclasses.field(default_factory=list)
    #: the training labels, for `output_bias="chance"` (None: set them before `build_model`)
    targets: Any = dataclasses.field(default=None, repr=False)
    #: the dimensions of the space taken out because they cannot change this model, and why
    space_notes: list[str] = dataclasses.field(default_factory=list)
    #: True when the data fixed its own batch size (a PyDataset, a batched tf.data.Dataset)
    fixed_batch: bool = False
    #: why the baseline was kept over a trial that learns less, or the trade a chosen
    #: trial that learns less makes (`stabilizer.search.choose_best`); "" otherwise
    choice_note: str = ""
    #: how long you train (given or assumed) and the rungs the probes grew over
    horizon: Horizon | None = None
    #: the ladder's rungs: steps, and the verdict and final validation loss of your
    #: configuration and of each candidate that reached it (`baseline` and `best` are
    #: compared at the last one)
    rungs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: what the ladder saw: candidates per rung, fading advantages, the finalists' seeds
    ladder_notes: list[str] = dataclasses.field(default_factory=list)
    #: the finalists measured on more seeds before the choice: steps, seeds, trials and
    #: what their new probes cost (steps and seconds); {} when they were not
    finals: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trials = TrialTable(self.trials)

    # -- the chosen configuration ------------------------------------------------
    @property
    def best_config(self) -> StabilityConfig:
        return self.best.config

    @property
    def score(self) -> float:
        return self.best.score

    @property
    def components(self) -> ScoreComponents:
        return self.best.components

    @property
    def improved(self) -> bool:
        """True when a searched configuration beat the user's own."""
        return self.best.trial_number is not None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The best configuration as YAML (loadable with `StabilityConfig.from_yaml`)."""
        return self.best_config.to_yaml(path)

    @property
    def not_applied(self) -> list[str]:
        """What the chosen configuration's probes could not apply (left out of it)."""
        return self.best.not_applied

    @property
    def train_steps(self) -> int:
        """Your training length in optimizer steps at the chosen batch size: what
        `build_model()` sizes the schedule for (given as `train_steps` or `epochs`, else
        the assumed `stabilizer.config.DEFAULT_TRAIN_STEPS`)."""
        if self.horizon is None:  # a result made before the horizon was recorded
            return self.settings.train_steps or self.settings.probe_steps
        return self.horizon.steps_for(self.best_config.batch_size or self.settings.batch_size)

    def fit_kwargs(self, *, epochs: int | None = None, steps_per_epoch: int | None = None,
                   monitor: bool = False) -> dict[str, Any]:
        """Keyword arguments for your own ``model.fit`` on the model of `build_model()` or
        `apply()`: `batch_size`, `epochs`, `steps_per_epoch` and `callbacks`.

        `epochs` defaults to the length you gave the search in epochs; `steps_per_epoch`
        is passed on when given. The callbacks stretch a decaying schedule over the fit
        that runs (epochs x steps per epoch, as Keras counts them), so fitting longer or
        shorter than the search was told needs no other change, and carry the plateau
        schedule's ReduceLROnPlateau. No `batch_size` when the data fixes its own (a
        PyDataset or a batched tf.data.Dataset): none was measured. ``monitor=True`` adds
        `stabilizer.monitor` with rescue, its gradient-norm history seeded with what the
        chosen configuration's probes measured and its divergence rule the search's.
        """
        if epochs is None and self.horizon is not None:
            epochs = self.horizon.epochs
        kwargs = fit_arguments(self.best_config, epochs=epochs, steps_per_epoch=steps_per_epoch,
                               batch_size=self.settings.batch_size)
        if self.fixed_batch:
            kwargs.pop("batch_size", None)
        if monitor:
            from stabilizer.guard import monitor as make_monitor

            norms = [v for curve in self.best.curves for v in curve.get("grad_norm") or []]
            kwargs["callbacks"].append(make_monitor(
                rescue=True, divergence_factor=self.settings.divergence_factor,
                grad_norms=norms))
        return kwargs

    def apply(self, model: keras.Model, train_steps: int | None = None) -> keras.Model:
        """Your `model` (one you built yourself, like the search's `build_fn` does) with
        the chosen configuration applied and compiled with your loss and metrics.

        `train_steps` defaults to `self.train_steps` (decaying schedules span it; the
        callbacks of `fit_kwargs()` stretch them over the fit that runs). Sequential and
        Functional models are cloned with their weights; a subclassed one is changed in
        place. Needs `targets` for ``output_bias="chance"`` (set by `stabilize()`).
        """
        return apply_to_model(model, self.best_config, train_steps=train_steps or
                              self.train_steps, settings=self.settings, targets=self.targets)

    def build_model(self, train_steps: int | None = None, seed: int | None = None) -> keras.Model:
        """The user's model with the best configuration applied, compiled.

        `train_steps` is the length of the training you will run (decaying
        schedules span it); it defaults to the length the search was told
        (`SearchConfig.train_steps` or `epochs`, else the assumed default: see
        `train_steps`).
        """
        if self.build_fn is None:
            raise RuntimeError("this result was loaded without build_fn; pass it to "
                               "StabilityResult.build_model via result.build_fn = ...")
        if seed is not None:
            keras.utils.set_random_seed(seed)
        return self._configured(train_steps or self.train_steps).model

    def optimizer(self, train_steps: int | None = None) -> keras.optimizers.Optimizer:
        """Your optimizer class with the chosen learning rate, schedule (spanning
        `train_steps`, default `self.train_steps`) and clipping, for a custom training loop
        (``optimizer.apply(grads, model.trainable_variables)``). Not built: it builds on
        its first step. The plateau schedule is a callback of `fit_kwargs()` and has no
        counterpart here: the rate stays constant."""
        if self.build_fn is None:
            raise RuntimeError("this result was loaded without build_fn; set result.build_fn "
                               "first")
        return self._configured(train_steps or self.train_steps).model.optimizer

    def _configured(self, steps: int) -> ConfiguredModel:
        assert self.build_fn is not None
        fn, uses_hp = resolve_build_fn(self.build_fn)
        hp = replay_hyperparameters(self.best.user_params) if uses_hp else None
        if self.best_config.output_bias == "chance" and self.targets is None:
            raise ConfigError("the best configuration sets output_bias='chance', which needs "
                              "the training labels: set result.targets = y_train (as an "
                              "array) before calling build_model()")
        return build_configured_model(fn, self.best_config, self.settings, steps, hp=hp,
                                      targets=self.targets)

    # -- before / after ------------------------------------------------------------
    def before_after(self) -> list[dict[str, Any]]:
        """One row per finding of either diagnosis: its severity before and after.

        Empty when the search ran without diagnosis (`SearchConfig.diagnose`) or
        without the diagnosis of the chosen configuration (`diagnose_after`).
        """
        if self.diagnosis is None or self.after is None:
            return []
        return self.diagnosis.compare(self.after)

    def _diagnosis_lines(self) -> list[str]:
        if self.diagnosis is None:
            return []
        lines = [f"diagnosis of your configuration: {_findings_line(self.diagnosis)}"]
        if self.focus_notes:
            lines.append(f"space focused: {'; '.join(self.focus_notes)}")
        if self.after is not None:
            what = "the chosen configuration" if self.improved else "the baseline (kept)"
            lines.append(f"diagnosis of {what}: {_findings_line(self.after)}")
            changed = [f"{r['code']} {r['before'] or '-'} -> {r['after'] or '-'}"
                       for r in self.before_after() if r["before"] != r["after"]]
            if changed:
                lines.append(f"before -> after: {', '.join(changed)}")
        return lines

    # -- tables and display --------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per trial (the baseline first, as number -1)."""
        rows = [_row(-1, "BASELINE", self.baseline.components.to_dict(), self.baseline.config)]
        for t in self.trials:
            rows.append(_row(t.number, t.state, t.components or {}, t.config))
        return rows

    def to_csv(self, path: str | Path | None = None) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(_TABLE_COLUMNS))
        writer.writeheader()
        writer.writerows(self.table())
        if path is not None:
            Path(path).write_text(buffer.getvalue())
        return buffer.getvalue()

    def summary(self) -> str:
        b, c = self.baseline.components, self.components
        counts = _state_counts(self.trials)
        lines = [
            f"study {self.study_name!r}: {counts}",
            f"baseline: score {b.score:.3f} ({b.verdict}"
            + (f": {'; '.join(b.reasons)}" if b.reasons else "") + f"), final val loss "
            f"{_fmt(b.final_val_loss)}, seed spread {_fmt(b.seed_spread)}",
            f"best:     score {c.score:.3f} ({c.verdict}"
            + (f": {'; '.join(c.reasons)}" if c.reasons else "") + "), final val loss "
            f"{_fmt(c.final_val_loss)}, seed spread {_fmt(c.seed_spread)}"
            + (f" [trial {self.best.trial_number}]" if self.improved else " [baseline kept]"),
            f"config:   {self.best_config.describe()}",
            *([self.choice_note] if self.choice_note else []),
            *([f"not applied (left out): {'; '.join(self.not_applied)}"]
              if self.not_applied else []),
            *([f"space: {'; '.join(self.space_notes)}"] if self.space_notes else []),
            *_probes_lines(self.trials),
            *([f"horizon:  {self.horizon.describe()}"] if self.horizon is not None else []),
            *self.ladder_notes,
            *self._diagnosis_lines(),
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def plot(self) -> Any:
        """The report's plots in one matplotlib `Figure` (shown inline in Jupyter).

        Loss curves of the baseline against the chosen configuration over seeds,
        gradient norms per layer, score components across trials and parameter
        importance; see `stabilizer.report`.
        """
        from stabilizer.report import plot_result

        return plot_result(self)

    def _repr_html_(self) -> str:
        """A styled card for Jupyter: the summary, a compact figure (validation loss and
        the optimization history) and the trials, the chosen one highlighted; it fits the
        notebook's width (long rows scroll inside the card, never the page)."""
        summary = html.escape(self.summary())
        figure = ""
        try:
            from stabilizer.report import compact_figure, png

            figure = (f"<img style='max-width:100%' alt='validation loss and optimization "
                      f"history' src='data:image/png;base64,{png(compact_figure(self))}'>")
        except ImportError:  # matplotlib is optional
            pass
        chosen = self.best.trial_number if self.improved else -1
        return (f"<div style='{_CARD}'><b>StabilityResult</b>"
                f"<pre style='{_PRE}'>{summary}</pre>{figure}"
                f"{_html_table(self.table(), chosen)}</div>")


#: Inline styles of the notebook display (a notebook keeps no stylesheet of ours).
_CARD = ("font-family:sans-serif;font-size:13px;max-width:100%;border:1px solid #ddd;"
         "border-radius:6px;padding:8px 12px")
_PRE = "white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:6px;margin:6px 0"
_TABLE = "border-collapse:collapse;font-size:12px"
_CELL = "border:1px solid #ddd;padding:2px 6px;text-align:right"
_COMPACT_COLUMNS = ("number", "state", "score", "verdict", "final_val_loss", "oscillation",
                    "seed_spread", "config")


def _html_table(rows: list[dict[str, Any]], chosen: int | None = None) -> str:
    """The compact trials table of the notebook display; `chosen`'s row highlighted."""
    head = "".join(f"<th style='{_CELL}'>{k.replace('_', ' ')}</th>" for k in _COMPACT_COLUMNS)
    body = []
    for row in rows:
        shade = "background:#e8f1fb;font-weight:bold;" if row["number"] == chosen else \
            "background:#fbeeee;" if row["number"] == -1 else ""
        cells = "".join(
            f"<td style='{_CELL}{';text-align:left;white-space:normal' if k == 'config' else ''}"
            f"'>{html.escape(_cell(row[k]))}</td>" for k in _COMPACT_COLUMNS)
        body.append(f"<tr style='{shade}'>{cells}</tr>" if shade else f"<tr>{cells}</tr>")
    return (f"<div style='max-width:100%;overflow-x:auto;max-height:24em;overflow-y:auto'>"
            f"<table style='{_TABLE}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


class TrialTable(list[TrialRecord]):
    """The list of trials; in Jupyter it renders as a table (one row per trial)."""

    def rows(self) -> list[dict[str, Any]]:
        return [_row(t.number, t.state, t.components or {}, t.config) for t in self]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{k}</th>" for k in _TABLE_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r[k]))}</td>" for k in _TABLE_COLUMNS)
            + "</tr>" for r in self.rows())
        return (f"<div style='max-width:100%;overflow-x:auto'><table><thead><tr>{head}</tr>"
                f"</thead><tbody>{body}</tbody></table></div>")


def _row(number: int, state: str, comps: dict[str, Any],
         config: StabilityConfig | None) -> dict[str, Any]:
    row: dict[str, Any] = {"number": number, "state": state}
    for key in _TABLE_COLUMNS[2:-1]:
        row[key] = comps.get(key)
    row["config"] = config.describe() if config else ""
    return row


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):  # a config's description: its long numbers rounded
        return re.sub(r"\d+\.\d{5,}(?:e[+-]?\d+)?", lambda m: f"{float(m.group()):.4g}", value)
    return "" if value is None else str(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _findings_line(diagnosis: Diagnosis) -> str:
    above = diagnosis.above("info")
    if not above:
        return "no finding above info"
    return ", ".join(f"{f.code} ({f.severity})" for f in above)


def _probes_lines(trials: list[TrialRecord]) -> list[str]:
    """How the trials' seeds were trained: together (replicas), or one after another and why."""
    together = [t.probes["together"] for t in trials if t.probes.get("together", 1) > 1]
    reasons: dict[str, int] = {}
    for t in trials:
        if t.probes.get("fallback"):
            reasons[t.probes["fallback"]] = reasons.get(t.probes["fallback"], 0) + 1
    lines = []
    if together:
        lines.append(f"probes:   seeds trained together in {len(together)} trial(s), up to "
                     f"{max(together)} per program")
    for reason, count in reasons.items():
        lines.append(f"probes:   seeds one after another in {count} trial(s): {reason}")
    return lines


def _state_counts(trials: list[TrialRecord]) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        key = "diverged" if t.verdict == "diverged" else t.state.lower()
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no trials"

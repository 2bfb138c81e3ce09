"""The zoo repaired five ways at an equal probe budget, every result judged independently.

For each zoo scenario (`benchmarks.zoo`) the data is split once: 20% is held out
for the judge (no method sees it), the rest is what every method searches on (one
80/20 train/validation split, seeded with 0, the one `stabilize()` makes at its
default seed; `stabilize()` is handed it ready-split). Methods:

(a) ``baseline``: the user's configuration, unchanged.
(b) ``keras_tuner_random``: KerasTuner's `RandomSearch` (a `Tuner` whose `run_trial`
    trains the candidate) over the scenario's search space, minimizing the plain
    final validation loss.
(c) ``optuna_tpe``: Optuna's `TPESampler` over the same space, minimizing the same
    loss; its random start is as long as the stabilizer's (``min(8, max(2, trials //
    3))`` trials), so at small budgets it is TPE and not random search.
(d) ``lr_range_test``: `stabilizer.lr_range.lr_range_test` (learning rate ramped
    from 1e-6 to 10 over one candidate's probe steps) picks the learning rate
    (``suggested_lr``: a tenth of the largest stable one); everything else is kept.
(e) ``stabilizer``: `stabilize()` with the scenario's space: the baseline diagnosed
    first (its probes plus an LR range test, and a second one under the repairs the
    findings call for: clipping when gradients explode, the matched initializer when
    the initialization is implicated), the space focused on the findings, then the
    search (one trial fewer, for the range tests' steps).

Budget: every search gets ``(trials + 1) * seeds * probe_steps`` optimizer steps.
The stabilizer probes the baseline, runs one or two LR range tests of ``probe_steps``
steps and ``trials - 1`` candidates on ``seeds`` seeds of ``probe_steps`` steps; (b) and
(c) run ``trials + 1`` candidates, each for
``probe_steps`` steps (``evaluations`` epochs) on the stabilizer's probe seeds with
the user's batch size unless the candidate sets one; (d) needs only one candidate's
worth. (b) and (c) sample the space through the same `SearchSpace.sample` as the
stabilizer (KerasTuner hyperparameters via `declare_space`, Optuna suggestions via
`OptunaSuggester`) and apply a candidate the same way (`stabilizer.apply`), but
train it with a plain `model.fit` (no telemetry, no pruning; only a NaN loss stops a
run early) and score it by its mean final validation loss over the seeds (+inf
when a seed produced NaN). Each reports the candidate with the lowest mean. The
steps each method actually ran are in the output.

Every chosen configuration, and the baseline, is then trained by `benchmarks.judge`
for ``judge_factor`` times the probe length on the judge's five fresh seeds and
measured on the held-out data; the judge decides "repaired" with thresholds fixed
in its module. The stabilizer's configuration is trained through the public API
(`StabilityResult.build_model` / `fit_kwargs`).

Search overhead: for each stabilizer run, its total wall time over the sum of its
probes' own training time (``seconds`` of every probe curve, baseline included).

Usage (from the repository root; `benchmarks/run.sh` wraps it)::

    python -m benchmarks.compare --preset quick --jobs 2
    python -m benchmarks.compare --preset full --jobs 2
    python -m benchmarks.compare --preset quick --scenarios healthy_mlp_control
    python -m benchmarks.compare --preset full --jobs 2 --search-seed 1

Writes ``benchmarks/results/compare_<preset>.json`` and ``.md`` (`--out` to change;
``compare_<preset>_seed<n>`` for another ``--search-seed``, which reseeds every
method's search and nothing else: the searches' own luck, beside the judge's
measured by `benchmarks.judge_noise`) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

__all__ = ["PRESETS", "METHODS", "Preset", "ScenarioSetup", "main", "map_scenarios",
           "report_suffix", "run_scenario", "render_markdown", "scenario_setup", "write_report"]

METHODS = ("baseline", "keras_tuner_random", "optuna_tpe", "lr_range_test", "stabilizer")
#: Share of each scenario's data held out for the judge, and the seed of that split.
TEST_SHARE = 0.2
SPLIT_SEED = 12345
RESULTS = Path(__file__).parent / "results"
_Work = TypeVar("_Work")  # one scenario's work item for `map_scenarios`


@dataclasses.dataclass(frozen=True)
class Preset:
    """One benchmark size: probe length, budget and the judge's training length.

    `search_seed` seeds the searches only (the samplers and the probe seeds of every
    method); the data, its splits and the judge's seeds do not depend on it, so runs
    at two search seeds differ by the searches' own luck and nothing else.
    """

    probe_steps: int
    evaluations: int
    trials: int
    seeds: int
    judge_factor: int
    search_seed: int = 0

    @property
    def budget_steps(self) -> int:
        return (self.trials + 1) * self.seeds * self.probe_steps


PRESETS = {
    "quick": Preset(probe_steps=40, evaluations=2, trials=6, seeds=2, judge_factor=3),
    "full": Preset(probe_steps=120, evaluations=4, trials=20, seeds=2, judge_factor=4),
}


# -- the methods ---------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """What one method chose, and what the choice cost."""

    config: Any  # StabilityConfig
    seconds: float = 0.0
    steps: int = 0
    candidates: int = 0
    result: Any = None  # the StabilityResult, for the stabilizer
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


def _plain_score(build_fn: Any, config: Any, settings: Any, data: Any) -> tuple[float, int]:
    """Mean final validation loss of a plain probe over the probe seeds; steps run."""
    from benchmarks.judge import config_setup, train_seeds
    from stabilizer.probe import probe_seeds

    runs = train_seeds(config_setup(build_fn, config, settings, settings.probe_steps,
                                   data.y), data,
                       probe_seeds(settings), steps=settings.probe_steps,
                       epochs=settings.evaluations, divergence_factor=math.inf)
    finals = [r.final_loss for r in runs]
    return float(np.mean(finals)), sum(r.steps for r in runs)


def _best(records: list[tuple[Any, float]]) -> Any:
    """The configuration with the lowest loss (the first one when all are +inf)."""
    return min(records, key=lambda r: (r[1], records.index(r)))[0]


def keras_tuner_random(build_fn: Any, space: Any, settings: Any, data: Any,
                       workdir: Path) -> Outcome:
    """(b): KerasTuner `RandomSearch` over `space` on plain final validation loss."""
    import keras_tuner

    from stabilizer.search.keras_tuner import KerasTunerSuggester, declare_space

    hp = keras_tuner.HyperParameters()
    declare_space(space, hp, max_batch_size=data.train_size)
    records: list[tuple[Any, float]] = []
    steps = 0

    class PlainRandomSearch(keras_tuner.RandomSearch):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            nonlocal steps
            config = space.sample(KerasTunerSuggester(trial.hyperparameters),
                                  max_batch_size=data.train_size)
            loss, used = _plain_score(build_fn, config, settings, data)
            steps += used
            records.append((config, loss))
            return {"val_loss": loss if math.isfinite(loss) else 1e30}

    start = time.perf_counter()
    tuner = PlainRandomSearch(
        hyperparameters=hp, objective=keras_tuner.Objective("val_loss", "min"),
        max_trials=settings.trials + 1, seed=settings.seed + 1, directory=str(workdir),
        project_name="keras_tuner_random", overwrite=True, max_consecutive_failed_trials=3)
    tuner.search(verbose=0)
    return Outcome(_best(records), time.perf_counter() - start, steps, len(records),
                   detail={"losses": [_finite(r[1]) for r in records]})


def optuna_tpe(build_fn: Any, space: Any, settings: Any, data: Any, workdir: Path) -> Outcome:
    """(c): Optuna TPE over `space` on plain final validation loss (in-memory study)."""
    import optuna

    from stabilizer.search.optuna import OptunaSuggester

    records: list[tuple[Any, float]] = []
    steps = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal steps
        config = space.sample(OptunaSuggester(trial), max_batch_size=data.train_size)
        loss, used = _plain_score(build_fn, config, settings, data)
        steps += used
        records.append((config, loss))
        return loss

    start = time.perf_counter()
    sampler = optuna.samplers.TPESampler(
        seed=settings.seed, n_startup_trials=min(8, max(2, settings.trials // 3)))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=settings.trials + 1, gc_after_trial=False)
    return Outcome(_best(records), time.perf_counter() - start, steps, len(records),
                   detail={"losses": [_finite(r[1]) for r in records]})


def lr_range(build_fn: Any, space: Any, settings: Any, data: Any, workdir: Path) -> Outcome:
    """(d): an LR range test alone; its suggested learning rate, everything else kept."""
    from stabilizer.config import StabilityConfig
    from stabilizer.lr_range import lr_range_test
    from stabilizer.probe import probe_seeds

    start = time.perf_counter()
    test = lr_range_test(build_fn, data, min_lr=1e-6, max_lr=10.0,
                         steps=settings.probe_steps * settings.seeds, config=settings,
                         seed=probe_seeds(settings)[0])
    return Outcome(StabilityConfig(learning_rate=test.suggested_lr),
                   time.perf_counter() - start, test.steps_done, 1,
                   detail={"max_stable_lr": test.max_stable_lr, "blowup_lr": test.blowup_lr,
                           "reliable": test.reliable})


def failure_text(exc: BaseException) -> str:
    """A failed search's record: the exception and its traceback's last 3000 characters."""
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"[-3000:]


def stabilizer_search(build_fn: Any, data: Any, settings: Any, workdir: Path) -> Outcome:
    """(e): `stabilize()`; also measures the search's own overhead.

    The diagnosis of the baseline adds an LR range test of ``probe_steps`` steps
    (two when the findings call for a repair: the second under it), so the stabilizer runs
    one trial fewer than the budget allows (a trial is ``seeds * probe_steps`` steps,
    as many as both tests at the presets' two seeds). The diagnosis of the
    chosen configuration (`diagnose_after`) does not change the choice and is
    left out here. It searches `data` (the `ProbeData` the peers search) passed as
    ``(x, y, x_val, y_val)``: the same split whatever `settings.seed` is.
    """
    from stabilizer import stabilize

    start = time.perf_counter()
    result = stabilize(build_fn, (data.x, data.y, data.x_val, data.y_val), space=settings.space,
                       budget=max(1, settings.trials - 1), seeds=settings.seeds,
                       probe_steps=settings.probe_steps, evaluations=settings.evaluations,
                       batch_size=settings.batch_size, out_dir=str(workdir),
                       study_name="stabilizer", seed=settings.seed, diagnose_after=False,
                       time_limit=settings.time_limit, train_steps=settings.train_steps,
                       horizon_fraction=settings.horizon_fraction)
    wall = time.perf_counter() - start
    first = result.rungs[0]["baseline_curves"] if result.rungs else result.baseline.curves
    curves = list(first) + [c for t in result.trials for c in t.curves]
    probe_seconds = sum(float(c.get("seconds") or 0.0) for c in curves)
    steps = sum(int(c.get("steps") or 0) for c in curves)
    for rung in result.rungs[1:]:  # the ladder's longer probes
        probe_seconds += rung["cost"]["seconds"]
        steps += rung["cost"]["steps"]
    if result.finals:  # the finalists' probes on more seeds
        probe_seconds += result.finals["cost"]["seconds"]
        steps += result.finals["cost"]["steps"]
    diagnosis = result.diagnosis
    tests = [diagnosis.lr_range, diagnosis.repaired_lr_range] if diagnosis is not None else []
    for lr_test in tests:  # training runs like the probes
        if lr_test is not None:
            probe_seconds += lr_test.seconds
            steps += lr_test.steps_done
    return Outcome(result.best_config, wall, steps, len(result.trials) + 1, result=result,
                   detail={
                       "probe_seconds": probe_seconds,
                       "search_overhead": wall / probe_seconds if probe_seconds else None,
                       "overhead_per_probe_s": (wall - probe_seconds) / max(1, len(curves)),
                       "kept_baseline": not result.improved,
                       "score": _finite(result.score),
                       "baseline_score": _finite(result.baseline.score),
                       "verdict": result.components.verdict,
                       "findings": result.diagnosis.codes("warning")
                       if result.diagnosis is not None else [],
                       "focus": result.focus_notes,
                       "states": [t.state for t in result.trials]})


# -- one scenario ----------------------------------------------------------------------------

def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def split(x: np.ndarray, y: np.ndarray) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """(search data, held-out judge data): a seeded `TEST_SHARE` split."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(TEST_SHARE * len(x)))
    test, rest = order[:n_test], order[n_test:]
    return (x[rest], y[rest]), (x[test], y[test])


@dataclasses.dataclass
class ScenarioSetup:
    """One scenario as every benchmark searches it: data split, settings, probe data."""

    scenario: Any
    search_arrays: tuple[Any, Any]
    held_out: tuple[Any, Any]
    settings: Any  # stabilizer.config.SearchConfig
    data: Any  # stabilizer.data.ProbeData
    root: Path


def scenario_setup(name: str, preset: Preset, root: Path) -> ScenarioSetup:
    """The held-out split, the preset's `SearchConfig` (its search seed, the scenario's
    batch and space, studies under `root`) and the probe data every method searches on.

    The probe data's validation split is seeded with 0 whatever the search seed.
    """
    from benchmarks import zoo
    from stabilizer.config import SearchConfig
    from stabilizer.data import prepare_data

    scenario = zoo.get(name)
    search_arrays, held_out = split(*scenario.load_data())
    # told the judge's length as a user tells their own (search.train_steps)
    settings = SearchConfig(space=scenario.space, trials=preset.trials,
                            probe_steps=preset.probe_steps, evaluations=preset.evaluations,
                            seeds=preset.seeds, batch_size=scenario.batch_size,
                            seed=preset.search_seed, out_dir=str(root),
                            train_steps=preset.judge_factor * preset.probe_steps)
    data = prepare_data(search_arrays, validation_split=settings.validation_split, seed=0)
    return ScenarioSetup(scenario, search_arrays, held_out, settings, data, root)


def run_scenario(name: str, preset: Preset, workdir: str | None = None) -> dict[str, Any]:
    """Run every method on one scenario and judge the choices; a JSON-ready dict."""
    import keras
    import optuna

    from benchmarks.judge import config_setup, judge, result_setup, verdict
    from stabilizer.config import StabilityConfig
    from stabilizer.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = scenario_setup(name, preset, Path(workdir or tempfile.mkdtemp(prefix=f"bench-{name}-")))
    scenario, settings, data = setup.scenario, setup.settings, setup.data
    held_out, root = setup.held_out, setup.root
    space = load_space(scenario.space)
    outcomes: dict[str, Outcome] = {"baseline": Outcome(StabilityConfig())}
    errors: dict[str, str] = {}
    searches = {
        "keras_tuner_random": lambda: keras_tuner_random(scenario.build_fn, space, settings,
                                                         data, root),
        "optuna_tpe": lambda: optuna_tpe(scenario.build_fn, space, settings, data, root),
        "lr_range_test": lambda: lr_range(scenario.build_fn, space, settings, data, root),
        "stabilizer": lambda: stabilizer_search(scenario.build_fn, data, settings, root),
    }
    for method, search in searches.items():
        keras.backend.clear_session()
        try:
            outcomes[method] = search()
        except Exception as exc:  # recorded and counted as not repaired, never hidden
            errors[method] = failure_text(exc)
    judge_steps = preset.judge_factor * preset.probe_steps
    judge_epochs = preset.judge_factor * preset.evaluations
    judged: dict[str, Any] = {}
    cache: dict[str, Any] = {}
    for method, outcome in outcomes.items():
        key = json.dumps(outcome.config.to_dict(), sort_keys=True)
        if key in cache:  # the same configuration as another method: same training
            judged[method] = cache[key]
            continue
        factory = result_setup(outcome.result, judge_steps) if outcome.result is not None \
            else config_setup(scenario.build_fn, outcome.config, settings, judge_steps, data.y)
        judged[method] = cache[key] = judge(factory, data, steps=judge_steps,
                                            epochs=judge_epochs, val_data=held_out)
    baseline = judged["baseline"]
    methods: dict[str, Any] = {}
    for method in METHODS:
        if method not in outcomes:
            methods[method] = {"error": errors.get(method), "repaired": False}
            continue
        outcome, judgement = outcomes[method], judged[method]
        v = verdict(judgement, baseline, healthy_scenario=scenario.healthy)
        methods[method] = {
            "config": outcome.config.describe(), "config_dict": outcome.config.to_dict(),
            "search_seconds": round(outcome.seconds, 2), "probe_steps": outcome.steps,
            "candidates": outcome.candidates, "detail": outcome.detail,
            "judge": judgement.to_dict(), "verdict": v.to_dict(),
            "repaired": v.repaired if method != "baseline" else None,
        }
    return {"scenario": name, "cause": scenario.cause, "problem": scenario.problem,
            "healthy": scenario.healthy, "space": scenario.space,
            "batch_size": scenario.batch_size, "budget_steps": preset.budget_steps,
            "judge_steps": judge_steps, "baseline_healthy": baseline.healthy,
            "baseline_reasons": baseline.reasons(), "methods": methods}


# -- totals and output -------------------------------------------------------------------------

def totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: repair rate on the unstable scenarios, control kept, medians, time."""
    out: dict[str, dict[str, Any]] = {}
    unstable = [r for r in rows if not r["healthy"]]
    healthy = [r for r in rows if r["healthy"]]
    for method in METHODS:
        entries = [r["methods"][method] for r in unstable]
        ratios = [e["verdict"]["loss_ratio"] for e in entries
                  if "verdict" in e and e["verdict"]["loss_ratio"] is not None]
        spreads = [e["judge"]["spread"] if e["judge"]["spread"] is not None else math.inf
                   for e in entries if "judge" in e]
        out[method] = {
            "repaired": sum(bool(e.get("repaired")) for e in entries),
            "unstable_scenarios": len(unstable),
            "healthy_kept": [bool(r["methods"][method].get("verdict", {}).get("repaired"))
                             for r in healthy],
            "diverged_seeds": sum(e["judge"]["diverged"] for e in entries if "judge" in e),
            "median_loss_ratio": statistics.median(ratios) if ratios else None,
            "median_spread": _finite(statistics.median(spreads)) if spreads else None,
            "search_seconds": round(sum(r["methods"][method].get("search_seconds", 0.0)
                                        for r in rows), 1),
            "probe_steps": sum(r["methods"][method].get("probe_steps", 0) for r in rows),
        }
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import keras

    backend = keras.backend.backend()
    version = ""
    if backend == "tensorflow":
        import tensorflow as tf

        version = f" {tf.__version__}"
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, Keras {keras.__version__} on "
            f"{backend}{version}")


def _code_version(root: Path | None = None) -> str:
    """The commit benchmarked (of this checkout, or of `root`), with "+changes" when the
    working tree's package differs from it."""
    import subprocess

    root = root or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "stabilizer"], cwd=root,
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def _num(value: Any, fmt: str = ".3g") -> str:
    if value is None:
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return format(value, fmt)


def _ratio(value: Any, fmt: str = ".3g") -> str:
    """A loss ratio; n/a where undefined (a side with every judge seed diverged)."""
    return "n/a" if value is None else format(value, fmt)


_LABELS = {"baseline": "(a) baseline", "keras_tuner_random": "(b) KerasTuner random",
           "optuna_tpe": "(c) Optuna TPE", "lr_range_test": "(d) LR range test",
           "stabilizer": "(e) stabilizer"}
_SHORT = {"baseline": "baseline", "keras_tuner_random": "KT random", "optuna_tpe": "Optuna TPE",
          "lr_range_test": "LR range", "stabilizer": "stabilizer"}


def render_markdown(report: dict[str, Any], *, full: bool = True) -> str:
    """The totals, the scenario x method matrix and (when `full`) a table per scenario."""
    rows, tot, p = report["scenarios"], report["totals"], report["preset"]
    n_unstable = sum(not r["healthy"] for r in rows)
    lines = [
        f"Preset `{report['preset_name']}`: probes of {p['probe_steps']} steps "
        f"({p['evaluations']} evaluations) on {p['seeds']} seeds, {p['trials']} trials + the "
        f"baseline = {p['budget_steps']} probe steps per search, search seed "
        f"{p.get('search_seed', 0)}; judge: "
        f"{p['judge_factor'] * p['probe_steps']} steps on 5 fresh seeds, held-out data. "
        f"Machine: {report['machine']}; code {report.get('code', 'not recorded')}; "
        f"{report['jobs']} scenario(s) at a time; load average "
        f"at start {report['load_average']}; total wall time {report['wall_seconds'] / 60:.1f} "
        "min.",
        "",
        "| method | repaired (of %d unstable) | healthy control kept | median final-loss ratio "
        "to baseline | median seed spread | diverged judge runs | search time (s) | probe "
        "steps |" % n_unstable,
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        t = tot[method]
        kept = "n/a" if method == "baseline" else \
            ", ".join("yes" if k else "no" for k in t["healthy_kept"]) or "n/a"
        repaired = "n/a" if method == "baseline" else f"{t['repaired']}/{t['unstable_scenarios']}"
        ratio = "1" if method == "baseline" else _ratio(t["median_loss_ratio"])
        spread = _num(t["median_spread"]) if t["unstable_scenarios"] else "n/a"
        lines.append(f"| {_LABELS[method]} | {repaired} | {kept} | {ratio} | "
                     f"{spread} | {t['diverged_seeds']} | "
                     f"{t['search_seconds']:.0f} | {t['probe_steps']} |")
    lines += ["", "Loss ratio: mean final held-out loss over the judge seeds that did not "
              "diverge, over the baseline's; n/a where either side diverged on every seed "
              "(medians are over the scenarios where it is defined). Spread: std of log final "
              "loss over the 5 judge seeds (inf when a seed diverged).", "",
              "Per scenario: repaired (R) or not (-), the loss ratio, and diverged judge seeds "
              "(healthy control: R = kept healthy); baseline column: the judge's verdict on "
              "the user's configuration.", "",
              "| scenario | baseline | " + " | ".join(_SHORT[m] for m in METHODS[1:]) + " |",
              "|---|---|" + "---|" * (len(METHODS) - 1)]
    for r in rows:
        base = "healthy" if r["baseline_healthy"] else "unhealthy"
        cells = []
        for method in METHODS[1:]:
            m = r["methods"][method]
            if "verdict" not in m:
                cells.append("error")
                continue
            mark = "R" if m["verdict"]["repaired"] else "-"
            div = m["judge"]["diverged"]
            ratio = _ratio(m["verdict"]["loss_ratio"], ".2f")
            cells.append(f"{mark} {ratio}" + (f" ({div} div)" if div else ""))
        lines.append(f"| {r['scenario']} | {base} | " + " | ".join(cells) + " |")
    overhead = [(r["scenario"], r["methods"]["stabilizer"]["detail"]) for r in rows
                if "detail" in r["methods"]["stabilizer"]]
    if overhead:
        wall = sum(r["methods"]["stabilizer"]["search_seconds"] for r in rows
                   if "detail" in r["methods"]["stabilizer"])
        probe = sum(d["probe_seconds"] for _, d in overhead)
        lines += ["", f"Search overhead (stabilize() wall time / sum of its probes' training "
                  f"time; target <= 1.15): overall {wall / probe:.3f}; per scenario "
                  + ", ".join(f"{n} {_num(d['search_overhead'], '.2f')}" for n, d in overhead)
                  + "."]
    if not full:
        return "\n".join(lines)
    for r in rows:
        lines += ["", f"### {r['scenario']}", "",
                  f"{r['problem']} (cause: {r['cause']}; space `{r['space']}`, user batch "
                  f"{r['batch_size']}). Baseline: "
                  + ("healthy" if r["baseline_healthy"] else "; ".join(r["baseline_reasons"])),
                  "", "| method | diverged | final loss (mean +- std) | ratio | spread | "
                  "largest spike | verdict | search s | steps | configuration |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            m = r["methods"][method]
            if "judge" not in m:
                lines.append(f"| {_LABELS[method]} | error: "
                             f"{(m.get('error') or '').splitlines()[0][:120]} |||||||||")
                continue
            j = m["judge"]
            finals = [run["final_loss"] for run in j["runs"] if run["final_loss"] is not None]
            spread = f"{np.mean(finals):.4g} +- {np.std(finals):.2g}" if finals else "inf"
            if method == "baseline":
                verdict_text = "healthy" if j["healthy"] else "unhealthy"
            else:
                verdict_text = ("kept healthy" if r["healthy"] else "repaired") \
                    if m["verdict"]["repaired"] else "; ".join(m["verdict"]["reasons"])
            lines.append(
                f"| {_LABELS[method]} | {j['diverged']}/5 | {spread} | "
                f"{_ratio(m['verdict']['loss_ratio'], '.3f')} | {_num(j['spread'])} | "
                f"{_num(j['largest_spike'])} | {verdict_text} | {m['search_seconds']:.0f} | "
                f"{m['probe_steps']} | {m['config']} |")
    return "\n".join(lines)


def _init_worker(threads: int) -> None:
    """Each worker process: quiet logs and `threads` TensorFlow threads."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # --jobs 1 in a process whose TensorFlow already runs: keep its pools
            pass


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every zoo benchmark takes: preset, scenarios, jobs and output folder."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--scenarios", help="comma-separated zoo names (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="scenarios run at a time")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the JSON and Markdown")


def scenario_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The zoo scenarios `--scenarios` names (all by default); a usage error otherwise."""
    from benchmarks import zoo

    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: expected an integer >= 1")
    names = args.scenarios.split(",") if args.scenarios else zoo.names()
    for name in names:
        try:
            zoo.get(name)
        except KeyError as exc:
            parser.error(exc.args[0])
    return list(names)


def map_scenarios(run_one: Callable[[_Work], dict[str, Any]], work: list[_Work],
                  jobs: int) -> list[dict[str, Any]]:
    """`run_one` over `work` in order, `jobs` at a time in spawned processes.

    The cores are shared out: each process gets ``cpu_count // jobs`` TensorFlow threads.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs == 1:
        _init_worker(threads)
        return [run_one(w) for w in work]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        return list(pool.map(run_one, work))


def write_report(out_dir: str | Path, name: str, report: dict[str, Any], markdown: str, *,
                 heading: str | None = None) -> Path:
    """Write `report` to ``<out_dir>/<name>.json`` and `markdown` to ``.md``; the JSON's path.

    The Markdown file starts with `heading` (default: the command that made it).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    title = heading if heading is not None else f"`{report['command']}`"
    (out / f"{name}.md").write_text(f"# {title}\n\n{markdown}\n")
    return out / f"{name}.json"


def report_suffix(preset_name: str, search_seed: int, *, subset: bool) -> str:
    """``full``, ``full_seed1``, ``quick_subset``...: the report files' name after their kind."""
    seed = f"_seed{search_seed}" if search_seed else ""
    return f"{preset_name}{seed}" + ("_subset" if subset else "")


def _run_one(args: tuple[str, Preset]) -> dict[str, Any]:
    name, preset = args
    start = time.perf_counter()
    row = run_scenario(name, preset)
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {row['wall_seconds']:.0f} s; "
          + ", ".join(f"{m}={'R' if row['methods'][m].get('repaired') else '-'}"
                      for m in METHODS[1:]), file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare",
                                     description=(__doc__ or "").splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--trials", type=int, help="override the preset's trials")
    parser.add_argument("--probe-steps", type=int, help="override the preset's probe steps")
    parser.add_argument("--search-seed", type=int, default=0,
                        help="seed of every method's search (samplers, probe seeds); the data "
                        "and the judge stay as they are (default 0)")
    args = parser.parse_args(argv)
    if args.search_seed < 0:
        parser.error(f"--search-seed={args.search_seed}: expected an integer >= 0")
    names = scenario_names(parser, args)
    preset = PRESETS[args.preset]
    if args.trials is not None or args.probe_steps is not None:
        preset = dataclasses.replace(preset, trials=args.trials or preset.trials,
                                     probe_steps=args.probe_steps or preset.probe_steps)
    preset = dataclasses.replace(preset, search_seed=args.search_seed)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    code = _code_version()  # at the start: the workers import the tree as it is now
    start = time.perf_counter()
    rows = map_scenarios(_run_one, [(name, preset) for name in names], args.jobs)
    report = {
        "preset_name": args.preset,
        "preset": {**dataclasses.asdict(preset), "budget_steps": preset.budget_steps},
        "machine": machine(), "code": code, "jobs": args.jobs,
        "load_average": load,
        "command": "python -m benchmarks.compare " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "scenarios": rows, "totals": totals(rows),
    }
    suffix = report_suffix(args.preset, preset.search_seed, subset=bool(args.scenarios))
    markdown = render_markdown(report)
    written = write_report(args.out, f"compare_{suffix}", report, markdown,
                           heading=f"Benchmark: `{report['command']}`")
    print(markdown)
    print(f"\nwritten {written} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

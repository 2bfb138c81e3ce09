"""`diagnose()`: train the user's configuration briefly, and say what is wrong."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.apply import (
    apply_config,
    call_build_fn,
    output_bias,
    output_layer,
    replay_hyperparameters,
    resolve_build_fn,
)
from stabilizer.chance import fit_targets, resolve_loss
from stabilizer.compatibility import inspect_model
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData, prepare_data
from stabilizer.diagnosis._finding import Finding
from stabilizer.diagnosis._monitor import (
    _actual_batch,
    _in_chunks,
    _SeedMonitor,
    _validation_sample,
)
from stabilizer.diagnosis._record import Diagnosis
from stabilizer.diagnosis._thresholds import (
    _ORDER,
    _RANK,
    CLIP_REPAIR,
    CLIPPING_CODES,
    INIT_REPAIR,
    INIT_REPAIR_CODES,
    _dims,
    resolve_thresholds,
)
from stabilizer.diagnosis.checks import Evidence, find
from stabilizer.errors import ConfigError
from stabilizer.lr_range import (
    LRRangeResult,
    configured_learning_rate,
    lr_range_test,
    settings_with,
)
from stabilizer.probe import (
    ProbePlan,
    batch_size_of,
    probe_seeds,
    quiet_frameworks,
    run_probes,
)
from stabilizer.telemetry import ProbeTrace

__all__ = ["check_output_offset", "diagnose", "repair_for"]


def diagnose(build_fn: Callable[..., Any], data: Any, *, config: SearchConfig | None = None,
             seeds: int = 3, steps: int | None = None, thresholds: dict[str, float] | None = None,
             candidate: StabilityConfig | None = None, evaluations: int | None = None,
             lr_range: bool | LRRangeResult = True, lr_range_steps: int = 80,
             sample_size: int = 256, hp_values: dict[str, Any] | None = None,
             **options: Any) -> Diagnosis:
    """Train the configuration briefly on a few seeds and report what is wrong.

    Args:
        build_fn: as for `stabilize()`: `build_fn()` / `build_fn(hp)` returning a
            Keras model (compiled, or pass `loss=`), or a KerasTuner `HyperModel`.
        data: anything `stabilize()` accepts, or a prepared `ProbeData`.
        config: search settings (batch size, divergence checks, seed, loss for an
            uncompiled model); keyword `options` override its fields.
        seeds: seeds to train (run-to-run variance needs at least 2).
        steps: optimizer steps per seed (default `config.probe_steps`).
        thresholds: overrides of `THRESHOLDS` (see the module docstring).
        candidate: the configuration to diagnose; default the user's own
            (`StabilityConfig()`). Diagnosing the chosen one gives the "after".
        evaluations: evaluations per seed, i.e. rows of the per-epoch record
            (default `config.evaluations`).
        lr_range: True runs an LR range test of `lr_range_steps` steps; False
            skips it; an `LRRangeResult` is used as is.
        sample_size: validation samples for the forward checks.
        hp_values: for a KerasTuner-style `build_fn(hp)`, the values its
            hyperparameters take (e.g. a trial's `user_params`); defaults otherwise.

    Returns:
        A `Diagnosis`: `findings` (most severe first), `to_text()`, `to_dict()`,
        `html_section()`, and `focus(space)` for the search.
    """
    start = time.perf_counter()
    th = resolve_thresholds(thresholds)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds={seeds!r}: expected an integer >= 1")
    settings = settings_with(config, options, "diagnose")
    steps = settings.probe_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps={steps!r}: expected an integer >= 2")
    evaluations = min(evaluations or settings.evaluations, steps)
    settings = SearchConfig.from_dict({**settings.to_dict(), "probe_steps": steps,
                                       "evaluations": evaluations, "seeds": seeds})
    with quiet_frameworks(settings.verbose):  # the probes' retracing warnings
        probe_data = data if isinstance(data, ProbeData) else prepare_data(
            data, validation_split=settings.validation_split, seed=settings.seed)
        if not isinstance(data, ProbeData):  # stabilize() checked its data before diagnosing
            inspect_model(build_fn, probe_data, settings)  # a DataError before the first probe
        fn, uses_hp = resolve_build_fn(build_fn)
        hp = replay_hyperparameters(hp_values or {}) if uses_hp else None
        candidate = candidate or StabilityConfig()
        batch = batch_size_of(candidate, settings, probe_data)
        actual_batch = _actual_batch(probe_data, batch)
        plan = ProbePlan.from_settings(settings)
        sample = _validation_sample(probe_data, sample_size)
        seed_list = probe_seeds(settings)
        monitors = [_SeedMonitor(sample, actual_batch, th, static=i == 0)
                    for i in range(len(seed_list))]
        run = run_probes(fn, probe_data, candidate, settings, seed_list, hp=hp, plan=plan,
                         hooks=dict(enumerate(monitors)), stop_on_divergence=False)
        traces: list[ProbeTrace] = run.traces
        user_lr = configured_learning_rate(fn, hp, candidate, settings)
        lr_result: LRRangeResult | None = None
        if isinstance(lr_range, LRRangeResult):
            lr_result = lr_range
        elif lr_range:
            lr_result = lr_range_test(build_fn, probe_data, steps=lr_range_steps,
                                      config=settings, candidate=candidate, hp_values=hp_values)
        evidence = Evidence(th, traces, monitors, plan, actual_batch, steps, user_lr, lr_result,
                            settings)
        findings = find(evidence)
        offset = check_output_offset(fn, hp, candidate, settings, probe_data, seed_list[0],
                                     sample, th)
        if offset is not None:
            findings.append(offset)
            findings.sort(key=lambda f: (-_RANK[f.severity], _ORDER.index(f.code)))
        repair = repair_for(findings, candidate) if lr_range is True else {}
        repaired: LRRangeResult | None = None
        if repair:
            repaired = lr_range_test(build_fn, probe_data, steps=lr_range_steps, config=settings,
                                     hp_values=hp_values,
                                     candidate=dataclasses.replace(candidate, **repair))
        for monitor, trace in zip(monitors, traces):
            _add_update_ratios(monitor.records, trace, plan)
        return Diagnosis(
            findings=findings, config=candidate, seeds=seed_list, steps=steps,
            batch_size=actual_batch, thresholds=th, per_seed=evidence.per_seed,
            epochs=[m.records for m in monitors], initializers=monitors[0].static_layers,
            lr_range=lr_result, user_lr=user_lr, seconds=time.perf_counter() - start,
            repaired_lr_range=repaired, repair=repair if repaired is not None else {},
            hp_values=dict(hp.values) if hp is not None else {}, traces=traces)


def check_output_offset(fn: Callable[..., Any], hp: Any, candidate: StabilityConfig,
                        settings: SearchConfig, data: ProbeData, seed: int,
                        sample: tuple[Any, Any] | None,
                        thresholds: dict[str, float]) -> Finding | None:
    """`output_offset` (module docstring), or None when absent or not checkable.

    Builds the candidate's untrained model on `seed` and compares its loss on the
    validation sample with the loss under the output bias `output_bias="chance"`
    would set.
    """
    if sample is None or sample[1] is None or data.kind != "arrays":
        return None
    keras.utils.set_random_seed(seed)
    applied = apply_config(call_build_fn(fn, hp), candidate, settings, data.y)
    model = applied.model
    found = output_bias(model, applied.compile_spec.loss, data.y)
    if isinstance(found, str):  # not settable here (its reason is the probes' not_applied)
        return None
    layer, bias = found
    loss = resolve_loss(applied.compile_spec.loss)
    x, y = sample

    def sample_loss() -> tuple[float, float]:
        prediction = ops.convert_to_numpy(_in_chunks(model, x, 256)).astype(np.float64)
        target = fit_targets(y, tuple(prediction.shape[1:]))
        value = float(ops.convert_to_numpy(ops.mean(loss(target, prediction))))
        return value, float(prediction.mean())

    try:
        before, output_mean = sample_loss()
        layer.bias.assign(bias)
        after, _ = sample_loss()
    except Exception:  # a loss that needs more than (y, y_pred): not checked
        return None
    limit = thresholds["output_offset"]
    if not (math.isfinite(before) and after > 0 and before >= limit * after):
        return None
    evidence = {"initial_loss": before, "offset_loss": after, "ratio": before / after,
                "samples": len(x)}
    means = ""
    if output_layer(model)[1] == "linear":  # a regression: the offset in the targets' units
        evidence["output_mean"] = output_mean
        evidence["target_mean"] = float(np.mean(np.asarray(data.y, dtype=np.float64)))
        means = f"; mean output {output_mean:.3g}, mean target {evidence['target_mean']:.3g}"
    return Finding(
        "output_offset", "outputs start far from the targets", "warning", evidence,
        {"output_offset": limit}, _dims("output_offset"),
        f"the untrained model's loss is {before / after:.3g}x what it is with the output "
        f"layer's bias at the best constant prediction ({before:.3g} against {after:.3g} on "
        f"{len(x)} validation samples{means}): most of the starting loss is the outputs' "
        "offset", [layer.name])


def repair_for(findings: Iterable[Finding], candidate: StabilityConfig) -> dict[str, Any]:
    """The settings the second LR range test runs under (empty: no second test).

    Global-norm clipping at 1.0 for `CLIPPING_CODES`, the initializer "auto" for
    `INIT_REPAIR_CODES` (unless the candidate already uses it), at warning level
    or above; both when both apply, so one test covers the search's first trial.
    """
    active = {f.code for f in findings if f.at_least("warning")}
    repair: dict[str, Any] = {}
    if active & CLIPPING_CODES:
        repair.update(CLIP_REPAIR)
    if active & INIT_REPAIR_CODES and candidate.initializer != INIT_REPAIR["initializer"]:
        repair.update(INIT_REPAIR)
    return repair


def _add_update_ratios(records: list[dict[str, Any]], trace: ProbeTrace, plan: ProbePlan) -> None:
    ratios = np.asarray(trace.update_ratio, dtype=np.float64)
    for i, record in enumerate(records):
        rows = ratios[i * plan.steps_per_epoch:(i + 1) * plan.steps_per_epoch]
        if not len(rows):
            continue
        for j, name in enumerate(trace.layer_names):
            col = rows[:, j]
            col = col[np.isfinite(col)]
            if name in record["layers"] and len(col):
                record["layers"][name]["update_ratio"] = float(col.mean())

"""One probe: a short, instrumented training of one candidate on one seed, alone.

A probe builds the user's model (seeded), applies the candidate, compiles it with
the instrumented subclass of the user's optimizer class, attaches the loss
recorder, and calls the plain `model.fit` for `probe_steps` steps split into
`evaluations` epochs (one validation pass each), after one validation pass of the
untrained model (the starting point that progress is measured from, with the
chance level of `stabilizer.chance` when that is lower). Telemetry is read back
once at the end (see `stabilizer.telemetry`).
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from typing import Any

import keras

from stabilizer.apply import AppliedModel, build_configured_model
from stabilizer.chance import chance_loss
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData
from stabilizer.errors import (
    ProbeFailedError,
    ProbeOutOfMemoryError,
    StabilizerError,
    clean_message,
)
from stabilizer.probe._plan import (
    EvaluationHook,
    ProbePlan,
    batch_size_of,
    is_out_of_memory,
    prebuild_optimizer,
)
from stabilizer.telemetry import (
    LossRecorder,
    ProbeTrace,
    TelemetryCallback,
    attach_loss_recorder,
    instrumented_optimizer_class,
    loss_ceiling,
    read_trace,
)

__all__ = ["run_probe"]


def run_probe(build_fn: Callable[..., Any], data: ProbeData, config: StabilityConfig,
              settings: SearchConfig, seed: int, *, hp: Any = None,
              plan: ProbePlan | None = None,
              on_evaluation: EvaluationHook | None = None) -> ProbeTrace:
    """Run one probe and return its trace; a NaN or exploding loss ends it early."""
    plan = plan or ProbePlan.from_settings(settings)
    batch = batch_size_of(config, settings, data)
    # Fresh layer names and graphs for every probe; the full garbage collection
    # that clear_session() runs by default costs ~0.3 s a probe, so it runs only
    # after an out-of-memory error, when freeing memory matters.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    recorders: list[LossRecorder] = []

    def instrument(applied: AppliedModel, optimizer: Any) -> None:
        optimizer.stab_capacity = plan.total_steps
        recorders.append(LossRecorder(plan.total_steps, settings.divergence_factor,
                                      ceiling=loss_ceiling(applied.compile_spec.loss)))
        attach_loss_recorder(applied.model, recorders[0])

    configured = build_configured_model(
        build_fn, config, settings, plan.total_steps, hp=hp,
        targets=data.y if data.kind == "arrays" else None,
        optimizer_class=instrumented_optimizer_class, before_compile=instrument)
    model, applied, recorder = configured.model, configured.applied, recorders[0]
    prebuild_optimizer(model)
    telemetry = TelemetryCallback(recorder, settings.check_every, on_evaluation)
    callbacks: list[keras.callbacks.Callback] = [telemetry, *configured.callbacks]
    start = time.perf_counter()
    try:
        initial = model.evaluate(**data.validation_batches(batch), verbose=0, return_dict=True)
        model.fit(**data.fit_inputs(batch, plan.total_steps, seed), epochs=plan.epochs,
                  steps_per_epoch=plan.steps_per_epoch, callbacks=callbacks, verbose=0)
    except StabilizerError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            del model, applied, configured
            gc.collect()
            raise ProbeOutOfMemoryError(
                f"out of memory at batch_size={batch}: {type(exc).__name__}: "
                f"{clean_message(exc)}", batch, traceback.format_exc()) from exc
        raise ProbeFailedError(f"training raised {type(exc).__name__}: {clean_message(exc)}",
                               traceback.format_exc()) from exc
    seconds = time.perf_counter() - start
    trace = read_trace(model, recorder, telemetry, seconds, float(initial["loss"]))
    if data.kind == "arrays":
        chance = chance_loss(model, applied.compile_spec.loss, data.y, data.y_val)
        trace.chance_loss = float("nan") if chance is None else chance
    trace.changes = applied.changes
    trace.not_applied = applied.not_applied
    if config.batch_size is not None and data.fixed_batch:
        trace.not_applied = [*trace.not_applied, f"batch_size={config.batch_size}: the data "
                             f"({data.kind}) fixes its own batch size"]
    return trace

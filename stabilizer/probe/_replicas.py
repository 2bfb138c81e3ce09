"""Replica probes: a candidate's seeds trained together, as K replicas in one program.

Replica k is the user's model built under seed k with the candidate applied
(`build_configured_model`, exactly as a probe alone on seed k builds it), fed its own
batches (`ProbeData.train_order` for seed k). The K replicas are the K outputs of one
Keras model whose `compute_loss` sums the replicas' own `compute_loss` (the user's loss,
regularizers and any override of it), so one optimizer step of the user's optimizer
class updates every replica; the replicas share no variable, so each replica's
gradients are those of its own loss. What couples them is taken apart:

- global-norm clipping is per replica (`stabilizer.telemetry.replica_optimizer_class`),
  per-variable clipping (clipnorm, clipvalue) is per replica by construction;
- a replica that diverges (the single probe's rule, per replica) leaves the total loss
  from that step on, a replica whose gradients are not finite gets zero gradients, and
  its record ends at the step it diverged; the others go on;
- losses, metrics, BatchNormalization statistics and validation are per replica.

Where replicas cannot be built, `ReplicasUnavailable` says why and the seeds run one
after another (`stabilizer.probe.run_probes` records the reason).
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import math
import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from stabilizer.apply import ConfiguredModel, build_configured_model, fresh_metrics
from stabilizer.chance import chance_loss
from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData
from stabilizer.errors import ProbeFailedError, StabilizerError, clean_message
from stabilizer.keras_internals import flat_layers
from stabilizer.probe._plan import (
    EvaluationHook,
    ProbePlan,
    batch_size_of,
    is_out_of_memory,
    prebuild_optimizer,
)
from stabilizer.telemetry import (
    ProbeTrace,
    ReplicaLossMeans,
    ReplicaLossRecorder,
    bn_statistics,
    current_learning_rate,
    layer_groups,
    loss_ceiling,
    replica_optimizer_class,
)

__all__ = ["MAX_REPLICAS", "ReplicasUnavailable", "ReplicasOutOfMemory", "max_replicas",
           "replica_fallback", "run_replica_probes"]

#: The most replicas in one program (`SearchConfig.replicas="auto"`).
MAX_REPLICAS = 32
#: Share of the free memory the replicas of one program may take, by `max_replicas`.
_MEMORY_SHARE = 0.25


class ReplicasUnavailable(Exception):
    """Replicas cannot be built for this model or data; `reason` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplicasOutOfMemory(Exception):
    """The program of `replicas` replicas ran out of memory (fewer may fit)."""

    def __init__(self, replicas: int, message: str) -> None:
        super().__init__(message)
        self.replicas = replicas


def replica_fallback(data: ProbeData, config: StabilityConfig, settings: SearchConfig,
                     seeds: int) -> str | None:
    """Why this candidate's seeds cannot train together, before any model is built."""
    if settings.replicas == "off":
        return "replicas='off' in the settings"
    if seeds < 2 or settings.replicas == 1:
        return None if seeds < 2 else "replicas=1 in the settings"
    if data.kind != "arrays":
        return (f"the data is a {data.kind} pipeline, which cannot give each replica its own "
                "batch order; in-memory arrays can")
    if config.lr_schedule == "plateau":
        return ("the 'plateau' schedule lowers one learning rate on one validation loss; "
                "replicas share their optimizer's learning rate")
    return None


def _free_memory() -> float:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2.0 ** 31


def max_replicas(model: keras.Model, data: ProbeData, batch: int, plan: ProbePlan,
                 limit: int = MAX_REPLICAS) -> int:
    """How many replicas of `model` fit in a quarter of the free memory, at most `limit`.

    Per replica: its weights about 8 times over (weights, gradients, two optimizer
    slots, the telemetry's copy before the update, the clone's and the backend's
    working copies), its own batch order of the data and its copy of the validation
    data, and its activations, taken as the largest layer output times the number of
    layers, forward and backward.
    """
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    rows = plan.total_steps * batch
    row_bytes = data.x[:1].nbytes + np.asarray(data.y[:1]).nbytes
    validation = data.x_val.nbytes + np.asarray(data.y_val).nbytes
    widest = 1
    for layer in flat_layers(model):
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is not None:
            widest = max(widest, int(np.prod([d or 1 for d in shape[1:]])))
    activations = 2 * 4 * batch * widest * max(1, len(model.layers))
    per_replica = 8 * 4 * params + rows * row_bytes + validation + activations
    fit = int(_MEMORY_SHARE * _free_memory() // max(per_replica, 1))
    return max(1, min(limit, fit))


@dataclasses.dataclass
class _ReplicaView:
    """What an evaluation hook reads for one replica (as it reads a `TelemetryCallback`)."""

    model: keras.Model
    val_loss: list[float]
    learning_rate: list[float]
    diverged: bool
    step: int


class _ReplicaProgram(keras.Model):
    """K replicas as the K outputs of one model; the loss is the sum of theirs."""

    def __init__(self, replicas: list[keras.Model], recorder: ReplicaLossRecorder,
                 shape: tuple[int, ...], dtype: str) -> None:
        inputs = [keras.Input(shape=shape, dtype=dtype, name=f"replica_{k}_x")
                  for k in range(len(replicas))]
        outputs = [replica(x) for replica, x in zip(replicas, inputs)]
        super().__init__(inputs, outputs, name="replicas")
        self.replicas = replicas
        # a user's compute_loss override may not take `training`
        self.takes_training = ["training" in inspect.signature(r.compute_loss).parameters
                               for r in replicas]
        self.stab_recorder = recorder  # tracked by Keras as a model metric
        self.stab_means = ReplicaLossMeans(len(replicas))

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        if len(self.replicas) == 1:  # Keras hands a one-input model its tensors unwrapped
            x, y, y_pred = [_first(x)], [_first(y)], [_first(y_pred)]
        losses = ops.stack([
            ops.cast(replica.compute_loss(xk, yk, pk, None, training=training) if takes
                     else replica.compute_loss(xk, yk, pk, None), "float32")
            for replica, takes, xk, yk, pk in zip(self.replicas, self.takes_training, x, y,
                                                  y_pred)])
        self.stab_means.update_state(losses, ops.shape(x[0])[0])
        if not training:
            return ops.sum(losses)
        diverged = self.stab_recorder.record(losses)
        # A diverged replica leaves the total: its gradients are zero from this step on.
        return ops.sum(ops.where(diverged, ops.zeros_like(losses), losses))


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


class _ReplicaCallback(keras.callbacks.Callback):
    """Stops the program when its replicas are done; keeps each one's evaluation record."""

    def __init__(self, recorder: ReplicaLossRecorder, replicas: list[keras.Model],
                 check_every: int, hooks: Sequence[EvaluationHook | None]) -> None:
        super().__init__()
        self.recorder = recorder
        self.replica_models = replicas
        self.check_every = check_every
        self.hooks = list(hooks)
        k = len(replicas)
        self.val_loss: list[list[float]] = [[] for _ in range(k)]
        self.val_metrics: list[list[dict[str, float]]] = [[] for _ in range(k)]
        self.bn_stats: list[list[dict[str, float]]] = [[] for _ in range(k)]
        self.learning_rate: list[float] = []
        self.val_diverged = [False] * k
        self.ended = [False] * k  # diverged at an earlier evaluation: its record has ended
        self.hook_stopped = False
        self._batches = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1
        if self._batches % self.check_every:
            return
        flag = (logs or {}).get(self.recorder.name)
        if isinstance(flag, float) and flag != 0.0:
            self.model.stop_training = True

    def diverged(self) -> np.ndarray:
        flags = np.asarray(ops.convert_to_numpy(self.recorder.diverged.value)) > 0.5
        nonfinite = np.asarray(ops.convert_to_numpy(self.model.optimizer.stab_nonfinite.value))
        return flags | (nonfinite > 0.5) | np.asarray(self.val_diverged)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        self.learning_rate.append(current_learning_rate(self.model.optimizer))
        for k, replica in enumerate(self.replica_models):
            val = float(logs.get(f"val_replica_loss_{k}", float("nan")))
            self.val_loss[k].append(val)
            self.val_metrics[k].append(_replica_logs(logs, k))
            self.bn_stats[k].append(bn_statistics(replica))
            if not math.isfinite(val):
                self.val_diverged[k] = True
        diverged = self.diverged()
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        for k, hook in enumerate(self.hooks):
            if hook is None or self.ended[k]:  # a probe alone stops after this evaluation
                continue
            view = _ReplicaView(self.replica_models[k], self.val_loss[k], self.learning_rate,
                                bool(diverged[k]), step)
            if hook(epoch, view):
                self.hook_stopped = True
        self.ended = [bool(d) for d in diverged]
        stop_on_any = self.recorder.stop_on_any
        if self.hook_stopped or (diverged.any() if stop_on_any else diverged.all()):
            self.model.stop_training = True


def _replica_logs(logs: dict[str, Any], k: int) -> dict[str, float]:
    """Replica k's entries of the program's logs, under the names a probe alone logs."""
    out: dict[str, float] = {}
    for key, value in logs.items():
        if not isinstance(value, (int, float)):
            continue
        val = key.startswith("val_")
        name = key[4:] if val else key
        if name == f"replica_loss_{k}":
            out["val_loss" if val else "loss"] = float(value)
        elif name.startswith(f"replica_{k}_"):
            out[("val_" if val else "") + name[len(f"replica_{k}_"):]] = float(value)
    return out


def _check_replicable(model: keras.Model, configured: ConfiguredModel) -> None:
    """Raise `ReplicasUnavailable` for a model replicas cannot be built from."""
    cls = type(model)
    if cls.train_step is not keras.Model.train_step:
        raise ReplicasUnavailable(f"{cls.__name__} overrides train_step; replicas train "
                                  "with Keras' own step")
    stateful = [layer.name for layer in flat_layers(model) if getattr(layer, "stateful", False)]
    if stateful:
        raise ReplicasUnavailable(f"stateful recurrent layers ({', '.join(stateful)}) carry "
                                  "state across batches")
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        raise ReplicasUnavailable("a LossScaleOptimizer scales one loss for all replicas")
    outputs = getattr(model, "outputs", None)
    if outputs is not None and len(outputs) != 1:
        raise ReplicasUnavailable(f"the model has {len(outputs)} outputs; replicas need one")
    spec = configured.applied.compile_spec
    for name in ("metrics", "weighted_metrics"):
        value = getattr(spec, name)
        if value is not None and not isinstance(value, (list, tuple)):
            raise ReplicasUnavailable(f"{name} given as a {type(value).__name__}; replicas "
                                      "need a list")


def _per_output(metrics: Any, k: int) -> list[Any] | None:
    """The user's metrics for each of the K outputs (fresh objects: no shared state)."""
    return None if metrics is None else [fresh_metrics(list(metrics)) for _ in range(k)]


def _program_optimizer(configured: ConfiguredModel, replicas: list[keras.Model],
                       capacity: int) -> keras.optimizers.Optimizer:
    """The candidate's optimizer, of the replica-instrumented class, clipping per replica."""
    user = configured.model.optimizer
    cfg = user.get_config()
    clipnorm = cfg.get("global_clipnorm")
    cfg["global_clipnorm"] = None
    optimizer = replica_optimizer_class(type(user)).from_config(cfg)
    names, _ = layer_groups(list(replicas[0].trainable_variables))
    slots: dict[int, tuple[int, int]] = {}
    for k, replica in enumerate(replicas):
        variables = list(replica.trainable_variables)
        replica_names, index = layer_groups(variables)
        if len(replica_names) != len(names):
            raise ReplicasUnavailable("build_fn built models of different structure for "
                                      "different seeds")
        slots.update({id(v): (k, i) for v, i in zip(variables, index)})
    optimizer.stab_capacity = capacity
    optimizer.stab_replicas = len(replicas)
    optimizer.stab_layer_names = names
    optimizer.stab_slots = slots
    optimizer.stab_clipnorm = clipnorm
    return optimizer


def run_replica_probes(build_fn: Callable[..., Any], data: ProbeData, config: StabilityConfig,
                       settings: SearchConfig, seeds: Sequence[int], *, hp: Any = None,
                       plan: ProbePlan, hooks: Sequence[EvaluationHook | None] = (),
                       stop_on_any: bool = True) -> tuple[list[ProbeTrace], bool]:
    """Probe `config` on `seeds` as replicas of one program: (one trace per seed trained,
    whether a hook stopped the program). Only the seeds whose replicas fit in memory
    (`max_replicas`) are trained; the caller runs the rest.

    `hooks[k]` is replica k's evaluation hook (as `run_probe`'s `on_evaluation`).
    `stop_on_any` stops the program when one replica diverges (a candidate is diverged
    whatever its other seeds do), else when every replica has.
    """
    batch = batch_size_of(config, settings, data)
    keras.backend.clear_session(free_memory=False)
    configured: list[ConfiguredModel] = []
    seeds = list(seeds)
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        configured.append(build_configured_model(
            build_fn, config, settings, plan.total_steps, hp=hp, targets=data.y))
        if len(configured) == 1:
            # Refused before building the others; then only as many as fit in memory (the
            # caller runs the rest).
            _check_replicable(configured[0].model, configured[0])
            del seeds[max_replicas(configured[0].model, data, batch, plan, limit=len(seeds)):]
    first = configured[0]
    replicas = [c.model for c in configured]
    for k, replica in enumerate(replicas):
        replica.name = f"replica_{k}"
    spec = first.applied.compile_spec
    recorder = ReplicaLossRecorder(len(seeds), plan.total_steps, settings.divergence_factor,
                                   loss_ceiling(spec.loss), stop_on_any=stop_on_any)
    try:
        program = _ReplicaProgram(replicas, recorder, tuple(data.x.shape[1:]), str(data.x.dtype))
    except Exception as exc:  # a model Keras cannot nest
        raise ReplicasUnavailable(f"the model cannot be nested in another Keras model "
                                  f"({type(exc).__name__}: {clean_message(exc)})") from exc
    k = len(seeds)
    program.compile(optimizer=_program_optimizer(first, replicas, plan.total_steps),
                    metrics=_per_output(spec.metrics, k),
                    weighted_metrics=_per_output(spec.weighted_metrics, k))
    prebuild_optimizer(program)
    callback = _ReplicaCallback(recorder, replicas, settings.check_every,
                                list(hooks) + [None] * (k - len(hooks)))
    orders = [data.train_order(batch, plan.total_steps, seed) for seed in seeds]
    validation = ([data.x_val] * k, [data.y_val] * k)
    start = time.perf_counter()
    try:
        initial = program.evaluate(*validation, batch_size=batch, verbose=0, return_dict=True)
        program.fit([data.x[o] for o in orders], [data.y[o] for o in orders], batch_size=batch,
                    epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch, shuffle=False,
                    validation_data=validation, callbacks=[callback], verbose=0)
    except StabilizerError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            del program, replicas, configured
            gc.collect()
            raise ReplicasOutOfMemory(k, f"{type(exc).__name__}: {clean_message(exc)}") from exc
        raise ProbeFailedError(f"training raised {type(exc).__name__}: {clean_message(exc)}",
                               traceback.format_exc()) from exc
    seconds = time.perf_counter() - start
    traces = _read_traces(program, recorder, callback, plan, seconds,
                          [float(initial.get(f"replica_loss_{i}", math.nan)) for i in range(k)])
    chance = chance_loss(replicas[0], spec.loss, data.y, data.y_val)
    for trace, c in zip(traces, configured):
        trace.chance_loss = float("nan") if chance is None else chance
        trace.changes = c.applied.changes
        trace.not_applied = c.applied.not_applied
    return traces, callback.hook_stopped


def _read_traces(program: _ReplicaProgram, recorder: ReplicaLossRecorder,
                 callback: _ReplicaCallback, plan: ProbePlan, seconds: float,
                 initial: list[float]) -> list[ProbeTrace]:
    """Every replica's trace, read back in one go; a diverged replica's ends where it did."""
    opt = program.optimizer
    k, names = opt.stab_replicas, list(opt.stab_layer_names)
    steps = int(ops.convert_to_numpy(recorder.count.value))
    opt_steps = int(ops.convert_to_numpy(opt.stab_step.value)) if opt.built else 0
    n = min(steps, opt_steps, recorder.capacity)
    stats = np.asarray(ops.convert_to_numpy(opt.stab_stats.value))[:n].reshape(n, k, -1)
    losses = np.asarray(ops.convert_to_numpy(recorder.buffer.value))[:n].astype(np.float64)
    flags = np.asarray(ops.convert_to_numpy(recorder.diverged.value)) > 0.5
    at = np.asarray(ops.convert_to_numpy(recorder.diverged_at.value))
    diverged = callback.diverged()
    layers = len(names)
    traces = []
    for i in range(k):
        done = min(n, int(at[i]) + 1) if flags[i] else n
        evaluations = len(callback.val_loss[i])
        if flags[i]:  # a probe alone stops after validating the epoch it diverged in
            evaluations = min(evaluations, int(at[i]) // plan.steps_per_epoch + 1)
        traces.append(ProbeTrace(
            loss=losses[:done, i],
            grad_norm=stats[:done, i, 0].astype(np.float64),
            layer_grad_norm=stats[:done, i, 1:1 + layers],
            update_ratio=stats[:done, i, 1 + layers:1 + 2 * layers],
            layer_names=names,
            val_loss=callback.val_loss[i][:evaluations],
            val_metrics=callback.val_metrics[i][:evaluations],
            bn_stats=callback.bn_stats[i][:evaluations],
            learning_rate=callback.learning_rate[:evaluations],
            diverged=bool(diverged[i]),
            steps_done=done,
            seconds=seconds / k,
            initial_val_loss=initial[i],
        ))
    return traces

"""A candidate's probes over its seeds: together as replicas where they can be, else one
after another, and the record of which and why."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stabilizer.config import SearchConfig, StabilityConfig
from stabilizer.data import ProbeData
from stabilizer.probe._plan import EvaluationHook, ProbePlan
from stabilizer.probe._replicas import (
    MAX_REPLICAS,
    ReplicasOutOfMemory,
    ReplicasUnavailable,
    replica_fallback,
    run_replica_probes,
)
from stabilizer.probe._single import run_probe
from stabilizer.telemetry import ProbeTrace

__all__ = ["ProbeRun", "run_probes"]


@dataclasses.dataclass
class ProbeRun:
    """The traces of a candidate's seeds, and how they were trained."""

    traces: list[ProbeTrace]
    #: The most seeds trained together in one program (1: one after another).
    together: int = 1
    #: Why the seeds were trained one after another (None when they were not, or when
    #: there was one seed).
    fallback: str | None = None
    #: True when an evaluation hook stopped the probes (a pruned candidate).
    stopped: bool = False

    def describe(self) -> dict[str, Any]:
        """What a trial stores about its probes (`"probes"`)."""
        return {"seeds": len(self.traces), "together": self.together, "fallback": self.fallback}


def run_probes(build_fn: Callable[..., Any], data: ProbeData, config: StabilityConfig,
               settings: SearchConfig, seeds: Sequence[int], *, hp: Any = None,
               plan: ProbePlan | None = None,
               hooks: Mapping[int, EvaluationHook] | None = None,
               stop_on_divergence: bool = True) -> ProbeRun:
    """Probe `config` on every seed of `seeds`; see the module docstring.

    `hooks[i]` is seed i's evaluation hook (`run_probe`'s `on_evaluation`); one that
    returns True stops the probes. With `stop_on_divergence` the probes stop at the
    first diverged seed (a diverged seed makes the candidate diverged), else every seed
    trains to the end.
    """
    plan = plan or ProbePlan.from_settings(settings)
    hooks = dict(hooks or {})
    seeds = list(seeds)
    reason = replica_fallback(data, config, settings, len(seeds))
    if reason is None and len(seeds) > 1:
        try:
            return _together(build_fn, data, config, settings, seeds, hp, plan, hooks,
                             stop_on_divergence)
        except ReplicasUnavailable as exc:
            reason = exc.reason
    traces, stopped = _in_turn(build_fn, data, config, settings, seeds, hp, plan, hooks,
                               stop_on_divergence)
    return ProbeRun(traces, 1, reason, stopped)


def _in_turn(build_fn: Callable[..., Any], data: ProbeData, config: StabilityConfig,
             settings: SearchConfig, seeds: list[int], hp: Any, plan: ProbePlan,
             hooks: Mapping[int, EvaluationHook], stop_on_divergence: bool,
             offset: int = 0) -> tuple[list[ProbeTrace], bool]:
    """Probes alone, one seed after another: (traces, whether a hook stopped them).
    `offset` is the first seed's index in the candidate's seeds."""
    traces: list[ProbeTrace] = []
    for i, seed in enumerate(seeds, start=offset):
        hook = hooks.get(i)
        fired: list[bool] = []

        def watched(epoch: int, view: Any, hook: EvaluationHook | None = hook,
                    fired: list[bool] = fired) -> bool:
            stop = bool(hook(epoch, view)) if hook is not None else False
            fired.append(stop)
            return stop

        trace = run_probe(build_fn, data, config, settings, seed, hp=hp, plan=plan,
                          on_evaluation=watched if hook is not None else None)
        traces.append(trace)
        if any(fired):
            return traces, True
        if trace.diverged and stop_on_divergence:
            break
    return traces, False


def _together(build_fn: Callable[..., Any], data: ProbeData, config: StabilityConfig,
              settings: SearchConfig, seeds: list[int], hp: Any, plan: ProbePlan,
              hooks: dict[int, EvaluationHook], stop_on_divergence: bool) -> ProbeRun:
    limit = MAX_REPLICAS if settings.replicas == "auto" else int(settings.replicas)
    size = min(len(seeds), limit)
    traces: list[ProbeTrace] = []
    most, start = 1, 0
    while start < len(seeds):
        chunk = seeds[start:start + size]
        if len(chunk) == 1:  # one seed left (or only one fits in memory): the rest in turn
            rest, stopped = _in_turn(build_fn, data, config, settings, seeds[start:], hp,
                                     plan, hooks, stop_on_divergence, offset=start)
            why = None if most > 1 else "only one replica of this model fits in memory"
            return ProbeRun(traces + rest, most, why, stopped)
        try:
            found, stopped = run_replica_probes(
                build_fn, data, config, settings, chunk, hp=hp, plan=plan,
                hooks=[hooks.get(start + j) for j in range(len(chunk))],
                stop_on_any=stop_on_divergence)
        except ReplicasOutOfMemory:
            size = max(1, len(chunk) // 2)
            continue
        most = max(most, len(found))
        size = len(found)  # fewer than asked when only that many fit in memory
        traces += found
        if stopped:
            return ProbeRun(traces, most, None, True)
        if stop_on_divergence and any(t.diverged for t in found):
            break
        start += len(found)
    return ProbeRun(traces, most, None, False)

"""The activation family: `dead_relu`, `saturated_activations`."""

from __future__ import annotations

import math
from typing import Any

from stabilizer.diagnosis._stats import _median
from stabilizer.diagnosis.checks._evidence import Evidence, last_forward

__all__ = ["activations", "worst_share"]


def activations(ev: Evidence) -> None:
    th = ev.th
    lasts = [last_forward(m) for m in ev.monitors]
    dead = worst_share(ev, lasts, "dead_share")
    if dead is not None:
        worst, layers, medians = dead
        ev.add("dead_relu", "dead ReLU units",
               "error" if worst >= th["dead_share_error"] else "warning",
               {"worst_layer_dead_share": worst,
                **{f"{n}.dead_share": v for n, v in medians.items()},
                "sample": len(ev.monitors[0].sample[0])},  # type: ignore[index]
               ["dead_share", "dead_share_error"],
               "units never active on any validation sample at the end of the probe",
               layers)
    sat = worst_share(ev, lasts, "saturated_share")
    if sat is not None:
        worst, layers, medians = sat
        ev.add("saturated_activations", "saturated sigmoid/tanh units",
               "error" if worst >= th["saturated_share_error"] else "warning",
               {"worst_layer_saturated_share": worst,
                **{f"{n}.saturated_share": v for n, v in medians.items()}},
               ["saturation_z", "saturated_share", "saturated_share_error"],
               f"pre-activations beyond +-{th['saturation_z']:g}: their gradient is "
               "almost zero", layers)


def worst_share(ev: Evidence, lasts: list[dict[str, Any]], key: str
                 ) -> tuple[float, list[str], dict[str, float]] | None:
    """The per-layer share `key` (dead or saturated units) against `THRESHOLDS[key]`.

    None unless the worst layer's share, median over seeds, reaches the
    threshold; else (that share, the layers at or above it on any seed, each
    layer's median share over seeds).
    """
    shares = [r.get(key) for r in lasts if r.get(key)]
    if not shares:
        return None
    limit = ev.th[key]
    worst = _median(max(s.values()) for s in shares)
    if worst < limit:
        return None
    layers = [n for s in shares for n, v in s.items() if v >= limit]
    medians = {n: _median(s.get(n, math.nan) for s in shares) for n in shares[0]}
    return worst, layers, medians

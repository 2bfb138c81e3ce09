"""Diagnosis: what is wrong with this training, with the evidence.

`diagnose(build_fn, data)` trains the user's own configuration (or any `StabilityConfig`)
briefly on a few seeds with the probes' full per-step telemetry, watches each seed's
model at every evaluation (`_monitor`), checks the initializers statically, and runs an
LR range test (`stabilizer.lr_range`). Every finding carries a severity, the numbers
that triggered it, the thresholds it was held to and the search dimensions that address
it; `Diagnosis.focus(space)` narrows a search space accordingly (`_focus`).

- `_thresholds`: every check, its thresholds (`THRESHOLDS`) and what addresses it;
- `_finding`: the `Finding` record; `_stats`: per-seed statistics of a trace;
- `_monitor`: the forward monitor; `checks/`: one module per family of findings;
- `_record`: the `Diagnosis` record; `_focus`: focusing a search on it;
- `_diagnose`: `diagnose()` itself.
"""

from stabilizer.diagnosis._diagnose import check_output_offset, diagnose, repair_for
from stabilizer.diagnosis._finding import Finding
from stabilizer.diagnosis._record import Diagnosis
from stabilizer.diagnosis._stats import gradient_stats, loss_stats
from stabilizer.diagnosis._thresholds import (
    CLIP_REPAIR,
    CLIPPING_CODES,
    INIT_CODES,
    INIT_REPAIR,
    INIT_REPAIR_CODES,
    SEVERITIES,
    THRESHOLDS,
    dimensions_for,
    resolve_thresholds,
)
from stabilizer.diagnosis.checks import Evidence, check_initializers, find

__all__ = [
    "CLIPPING_CODES",
    "CLIP_REPAIR",
    "INIT_CODES",
    "INIT_REPAIR",
    "INIT_REPAIR_CODES",
    "SEVERITIES",
    "THRESHOLDS",
    "Diagnosis",
    "Evidence",
    "Finding",
    "check_initializers",
    "check_output_offset",
    "dimensions_for",
    "diagnose",
    "find",
    "gradient_stats",
    "loss_stats",
    "repair_for",
    "resolve_thresholds",
]

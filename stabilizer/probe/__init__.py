"""Probes: short, instrumented trainings of one candidate on its seeds.

`run_probes` trains a candidate's seeds together as replicas of one program
(`_replicas`) where it can, else one after another (`_single.run_probe`), and records
which and why (`ProbeRun`). `ProbePlan` says how long a probe trains and how often it
is evaluated; `probe_seeds` which seeds every candidate gets; `quiet_frameworks` the
frameworks' warnings around them.
"""

from stabilizer.probe._plan import (
    RUNG_FACTOR,
    EvaluationHook,
    Horizon,
    ProbePlan,
    batch_size_of,
    is_out_of_memory,
    probe_seeds,
)
from stabilizer.probe._quiet import quiet_frameworks
from stabilizer.probe._replicas import (
    MAX_REPLICAS,
    ReplicasUnavailable,
    max_replicas,
    replica_fallback,
    run_replica_probes,
)
from stabilizer.probe._runner import ProbeRun, run_probes
from stabilizer.probe._single import run_probe

__all__ = [
    "MAX_REPLICAS",
    "RUNG_FACTOR",
    "EvaluationHook",
    "Horizon",
    "ProbePlan",
    "ProbeRun",
    "ReplicasUnavailable",
    "batch_size_of",
    "is_out_of_memory",
    "max_replicas",
    "probe_seeds",
    "quiet_frameworks",
    "replica_fallback",
    "run_probe",
    "run_probes",
    "run_replica_probes",
]

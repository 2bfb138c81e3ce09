"""The checks, one module per family of findings, and `find`, which runs them all.

The thresholds they hold the numbers to, and what each finding means, are documented
in `stabilizer.diagnosis._thresholds`.
"""

from __future__ import annotations

from stabilizer.diagnosis._finding import Finding
from stabilizer.diagnosis._thresholds import _ORDER, _RANK
from stabilizer.diagnosis.checks._activations import activations
from stabilizer.diagnosis.checks._batchnorm import batchnorm
from stabilizer.diagnosis.checks._evidence import Evidence
from stabilizer.diagnosis.checks._gradients import divergence, gradients
from stabilizer.diagnosis.checks._initializers import check_initializers
from stabilizer.diagnosis.checks._learning_rate import learning_rate, not_checked
from stabilizer.diagnosis.checks._loss import loss
from stabilizer.diagnosis.checks._seeds import seeds

__all__ = [
    "Evidence",
    "activations",
    "batchnorm",
    "check_initializers",
    "divergence",
    "find",
    "gradients",
    "learning_rate",
    "loss",
    "not_checked",
    "seeds",
]


def find(evidence: Evidence) -> list[Finding]:
    """Run every family of checks on `evidence`, in order; the findings, worst first."""
    divergence(evidence)
    gradients(evidence)
    activations(evidence)
    loss(evidence)
    seeds(evidence)
    batchnorm(evidence)
    evidence.findings += evidence.monitors[0].static_findings
    learning_rate(evidence)
    not_checked(evidence)
    evidence.findings.sort(key=lambda f: (-_RANK[f.severity], _ORDER.index(f.code)))
    return evidence.findings

"""A guard for long training: the probes' telemetry in your own `fit`, with rescue.

`monitor(model)` returns a Keras callback (`StabilityMonitor`) that records every step's
gradient norms and update ratios on the device, checks each window with the diagnosis's
thresholds, warns with the evidence (`StabilityWarning`) and, with ``rescue=True``,
restores and repairs a diverging run. See `stabilizer.guard._monitor`.
"""

from stabilizer.guard._monitor import StabilityMonitor, StabilityWarning, monitor

__all__ = ["StabilityMonitor", "StabilityWarning", "monitor"]

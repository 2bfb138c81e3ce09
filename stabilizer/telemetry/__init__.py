"""Per-step telemetry recorded on the device and read back in bulk.

Three pieces, all through Keras' own extension points:

- `instrumented_optimizer_class(cls)` subclasses the user's optimizer class. Its
  `apply()` writes, at each step, the global gradient norm, the per-layer
  gradient norms and the per-layer update/weight ratio into preallocated
  optimizer variables (optimizer state, so this works under the TensorFlow, JAX
  and PyTorch backends alike), then calls the real `apply()`.
- `LossRecorder`, a `keras.metrics.Metric` attached to the model and fed from the
  model's `compute_loss` hook when `training=True`, records the per-step training
  loss and keeps an on-device divergence flag (non-finite loss, or loss above
  `divergence_factor` times the first loss). Validation never writes to it.
- `TelemetryCallback` watches that flag, which is the recorder's metric result and
  so arrives in the logs Keras already returns after each step (no extra read
  from the device), and stops training when it is set; at each epoch end (one
  evaluation) it keeps the validation logs, the learning rate and the
  BatchNormalization moving statistics. The buffers are read back in one go
  after the probe (`read_trace`).

`StepLosses` records each step's loss for a reader that comes every so many steps and
shows nothing in the logs (`stabilizer.monitor`).

`_replicas` records the same per replica when a candidate's seeds train together in one
program (`ReplicaLossRecorder`, `ReplicaLossMeans`, `replica_optimizer_class`).
"""

from stabilizer.telemetry._buffers import host_array
from stabilizer.telemetry._loss import (
    LossRecorder,
    StepLosses,
    attach_loss_recorder,
    loss_ceiling,
)
from stabilizer.telemetry._optimizer import instrumented_optimizer_class, layer_groups
from stabilizer.telemetry._replicas import (
    ReplicaLossMeans,
    ReplicaLossRecorder,
    replica_optimizer_class,
)
from stabilizer.telemetry._trace import (
    ProbeTrace,
    TelemetryCallback,
    bn_statistics,
    current_learning_rate,
    read_trace,
)

__all__ = [
    "LossRecorder",
    "ProbeTrace",
    "ReplicaLossMeans",
    "ReplicaLossRecorder",
    "StepLosses",
    "TelemetryCallback",
    "attach_loss_recorder",
    "bn_statistics",
    "current_learning_rate",
    "host_array",
    "instrumented_optimizer_class",
    "layer_groups",
    "loss_ceiling",
    "read_trace",
    "replica_optimizer_class",
]

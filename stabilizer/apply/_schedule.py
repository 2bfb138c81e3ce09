"""The `learning_rate`, `lr_schedule`, `decay_rate` and `warmup_fraction` knobs."""

from __future__ import annotations

from typing import Any

import keras

from stabilizer.config import StabilityConfig

__all__ = [
    "COOLDOWN_FRACTION",
    "Cooldown",
    "make_schedule",
    "plateau_callback",
    "user_learning_rate",
]


def user_learning_rate(optimizer: keras.optimizers.Optimizer) -> tuple[float, Any]:
    """(initial learning rate as a float, the schedule object or None)."""
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(schedule(0))), schedule
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate)), None


def make_schedule(config: StabilityConfig, lr: float, total_steps: int) -> Any:
    """The learning rate argument for the optimizer: a float or a schedule object."""
    schedules = keras.optimizers.schedules
    if config.lr_schedule in ("keep", "constant", "plateau"):
        return lr
    if config.lr_schedule == "exponential":
        return schedules.ExponentialDecay(lr, decay_steps=max(1, total_steps // 4),
                                          decay_rate=config.decay_rate or 0.7)
    if config.lr_schedule == "cosine":
        return schedules.CosineDecay(lr, decay_steps=max(1, total_steps), alpha=0.01)
    if config.lr_schedule == "cooldown":
        return Cooldown(lr, total_steps)
    warmup = max(1, int(round(total_steps * (config.warmup_fraction or 0.1))))
    return schedules.CosineDecay(lr * 0.01, decay_steps=max(1, total_steps - warmup), alpha=0.01,
                                 warmup_target=lr, warmup_steps=warmup)


#: Share of training the "cooldown" schedule spends decaying (the last 20%).
COOLDOWN_FRACTION = 0.2


@keras.saving.register_keras_serializable(package="stabilizer")
class Cooldown(keras.optimizers.schedules.LearningRateSchedule):
    """A constant rate, then a linear decay to `alpha` x the rate over the last `fraction`.

    The rate a constant-rate probe measured is kept for most of training, and the
    steps shrink only at the end, where a constant rate leaves the final weights
    (and so the final loss) bouncing with the last batches. Spans `total_steps`,
    like every schedule here; the step is a tensor, so it runs on any backend.
    Registered with Keras as "stabilizer>Cooldown": a saved model that uses it
    loads wherever `stabilizer` has been imported.
    """

    def __init__(self, learning_rate: float, total_steps: int,
                 fraction: float = COOLDOWN_FRACTION, alpha: float = 0.01) -> None:
        self.learning_rate = float(learning_rate)
        self.total_steps = max(1, int(total_steps))
        self.fraction = float(fraction)
        self.alpha = float(alpha)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        length = max(1.0, self.total_steps * self.fraction)
        start = self.total_steps - length
        done = ops.clip((ops.cast(step, "float32") - start) / length, 0.0, 1.0)
        return self.learning_rate * (1.0 - (1.0 - self.alpha) * done)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "fraction": self.fraction, "alpha": self.alpha}


def plateau_callback(config: StabilityConfig, lr: float) -> keras.callbacks.Callback | None:
    """ReduceLROnPlateau for the 'plateau' schedule (patience in evaluations)."""
    if config.lr_schedule != "plateau":
        return None
    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
                                             min_lr=lr / 100, verbose=0)

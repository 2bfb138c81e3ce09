"""The `learning_rate`, `lr_schedule`, `decay_rate` and `warmup_fraction` knobs."""

from __future__ import annotations

from typing import Any

import keras

from stabilizer.config import StabilityConfig

__all__ = [
    "COOLDOWN_FRACTION",
    "DECAYING_SCHEDULES",
    "Cooldown",
    "ScheduleSpan",
    "make_schedule",
    "plateau_callback",
    "resize_schedule",
    "user_learning_rate",
]

#: The schedules whose shape depends on the training length (`make_schedule`'s `total_steps`).
DECAYING_SCHEDULES = ("exponential", "cosine", "warmup_cosine", "cooldown")


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


def resize_schedule(schedule: Any, total_steps: int) -> bool:
    """Stretch a schedule `make_schedule` made to span `total_steps`, in place; True when
    its length changed (False for a constant rate or a schedule it did not make)."""
    total = max(1, int(total_steps))
    schedules = keras.optimizers.schedules
    if isinstance(schedule, Cooldown):
        before, schedule.total_steps = schedule.total_steps, total
        return before != total
    if isinstance(schedule, schedules.CosineDecay):
        warmup = int(getattr(schedule, "warmup_steps", 0) or 0)
        span = schedule.decay_steps + warmup
        new_warmup = max(1, int(round(total * warmup / span))) if warmup else 0
        before = (schedule.decay_steps, warmup)
        schedule.decay_steps = max(1, total - new_warmup)
        schedule.warmup_steps = new_warmup
        return before != (schedule.decay_steps, new_warmup)
    if isinstance(schedule, schedules.ExponentialDecay):
        before, schedule.decay_steps = schedule.decay_steps, max(1, total // 4)
        return before != schedule.decay_steps
    return False


class ScheduleSpan(keras.callbacks.Callback):
    """Stretches the model's decaying schedule over the `fit` it is passed to.

    At the start of `fit` the length is the fit's own (`epochs` x steps per epoch, as Keras
    counts them), so a schedule built for another length (``result.build_model()`` sized
    for what the search was told) spans the training that actually runs. A fit whose
    steps per epoch Keras cannot count (a data pipeline of unknown length without
    `steps_per_epoch`) keeps the schedule as it was built. The model's train function
    is rebuilt when the length changed, so a schedule traced before is traced anew.
    """

    def __init__(self) -> None:
        super().__init__()
        #: the length the schedule was stretched to at the last fit (None: left alone)
        self.total_steps: int | None = None

    def on_train_begin(self, logs: Any = None) -> None:
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        optimizer = getattr(self.model, "optimizer", None)
        if not epochs or not steps or optimizer is None:
            return
        self.total_steps = int(epochs) * int(steps)
        if resize_schedule(getattr(optimizer, "_learning_rate", None), self.total_steps):
            self.model.make_train_function(force=True)


class _Plateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose floor (a hundredth of the starting rate) is read from the
    optimizer when the fit starts (for a configuration that keeps the user's rate)."""

    def on_train_begin(self, logs: Any = None) -> None:
        if self.min_lr <= 0:
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.min_lr = rate / 100
        super().on_train_begin(logs)


def plateau_callback(config: StabilityConfig,
                     lr: float | None) -> keras.callbacks.Callback | None:
    """ReduceLROnPlateau for the 'plateau' schedule (patience in evaluations), down to a
    hundredth of `lr` (None: of the optimizer's rate when the fit starts)."""
    if config.lr_schedule != "plateau":
        return None
    return _Plateau(monitor="val_loss", factor=0.5, patience=1,
                    min_lr=lr / 100 if lr is not None else 0.0, verbose=0)

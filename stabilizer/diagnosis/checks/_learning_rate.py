"""The learning-rate family: `lr_too_high`, and `not_checked` for what was not."""

from __future__ import annotations

import math

from stabilizer.diagnosis.checks._evidence import Evidence

__all__ = ["learning_rate", "not_checked"]


def learning_rate(ev: Evidence) -> None:
    lr, user = ev.lr, ev.user_lr
    if lr is None or user is None:
        return
    evidence = {"learning_rate": user, "max_stable_lr": lr.max_stable_lr,
                "suggested_lr": lr.suggested_lr,
                "blowup_lr": lr.blowup_lr if lr.blowup_lr is not None else math.nan,
                "ratio": user / lr.max_stable_lr}
    above_blowup = lr.blowup_lr is not None and user >= lr.blowup_lr
    if above_blowup or (lr.reliable and user > ev.th["lr_margin"] * lr.max_stable_lr):
        ev.add("lr_too_high", "learning rate above what the LR range test finds stable",
               "error" if above_blowup else "warning", evidence, ["lr_margin"],
               f"learning rate {user:.3g} vs max stable {lr.max_stable_lr:.3g}"
               + (f" (the loss blew up from {lr.blowup_lr:.3g})" if above_blowup else ""))


def not_checked(ev: Evidence) -> None:
    reasons = {k: v for m in ev.monitors[:1] for k, v in m.not_checked.items()}
    for key, reason in reasons.items():
        ev.add("not_checked", f"{key.replace('_', ' ')} not checked", "info", {}, [],
               reason)

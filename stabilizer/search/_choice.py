"""Which configuration a search hands back: the rule, in one place.

The highest-ranked candidate among the completed trials and the baseline (the user's
own configuration, probed the same way) wins: stable before unstable, anything before
diverged, then the score. One more rule guards the user's configuration: a candidate
whose median final validation loss is higher than the baseline's (it learns less)
replaces the baseline only for a **clear** stability gain, that is when the baseline

- diverged, or
- spikes: its ``spike_rate`` or ``explode_rate`` is above its threshold, or
- parts between seeds or oscillates well above the line: ``seed_spread`` or
  ``oscillation`` above `CLEAR_MARGIN` times its threshold.

A baseline judged unstable by a hair (a seed spread of 0.168 against 0.15) is kept
then, and the result says so (`Choice.note`). When a candidate replaces it, the note
gives the change in one line (loss and spread, yours and the chosen one's), with the
clear gain it was bought for when the chosen one learns less.
If every candidate diverged, the (diverged) baseline comes back: nothing is made up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from stabilizer.result import Candidate, TrialRecord, applied_only
from stabilizer.scoring import THRESHOLDS, ScoreComponents

__all__ = ["CLEAR_MARGIN", "Choice", "choice_rank", "choose_best", "clear_gain", "restore_nan"]

#: "Well above" a threshold: this many times it (seed spread and oscillation).
CLEAR_MARGIN = 1.5

_FLOATS = ("score", "final_val_loss", "reference_loss", "quality", "progress", "oscillation",
           "spike_rate", "explode_rate", "vanishing_share", "seed_spread", "generalization_gap")


def restore_nan(data: dict[str, Any]) -> dict[str, Any]:
    """Stored score components with the NaN that JSON keeps as null put back."""
    return {k: (float("nan") if v is None and k in _FLOATS else v) for k, v in data.items()}


@dataclasses.dataclass
class Choice:
    """The chosen candidate and, when the loss moved the wrong way, why (`note`)."""

    best: Candidate
    note: str = ""


def clear_gain(baseline: ScoreComponents) -> str:
    """Why leaving the baseline is a clear stability gain, in words ("" when it is not)."""
    if baseline.diverged:
        return "your configuration diverged"
    for key in ("spike_rate", "explode_rate"):
        value = getattr(baseline, key)
        if math.isfinite(value) and value > THRESHOLDS[key]:
            return f"your configuration spikes ({key} {value:.3g} > {THRESHOLDS[key]:g})"
    for key in ("seed_spread", "oscillation"):
        value = getattr(baseline, key)
        line = CLEAR_MARGIN * THRESHOLDS[key]
        if math.isfinite(value) and value > line:
            return (f"your configuration's {key} {value:.3g} is well above its threshold "
                    f"{THRESHOLDS[key]:g} (> {line:.3g})")
    return ""


def choice_rank(components: ScoreComponents) -> tuple[bool, bool, float]:
    """Stable before unstable, anything before diverged, then by score."""
    return (components.verdict == "stable", not components.diverged, components.score)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def _trade(baseline: ScoreComponents, best: ScoreComponents) -> str:
    return (f"final val loss {_fmt(baseline.final_val_loss)} -> {_fmt(best.final_val_loss)}, "
            f"seed spread {_fmt(baseline.seed_spread)} -> {_fmt(best.seed_spread)}")


def choose_best(records: Sequence[TrialRecord], baseline: Candidate) -> Choice:
    """The candidate to hand back (see the module docstring)."""
    best = baseline
    for record in records:
        if record.state != "COMPLETE" or record.components is None or record.config is None:
            continue
        comps = ScoreComponents.from_dict(restore_nan(record.components))
        if comps.diverged or not math.isfinite(comps.score):
            continue
        if choice_rank(comps) > choice_rank(best.components):
            best = Candidate(record.config, comps, record.curves, record.user_params,
                             record.number)
    if best is baseline:
        return Choice(baseline)
    best.config = applied_only(best.config, best.not_applied)  # only what its probes applied
    base, chosen = baseline.components, best.components
    change = f"yours -> chosen: {_trade(base, chosen)}"
    learns_less = math.isfinite(base.final_val_loss) and \
        not chosen.final_val_loss <= base.final_val_loss
    if not learns_less:
        return Choice(best, change)
    why = clear_gain(base)
    if why:
        return Choice(best, f"{change}; it learns less, for a clear stability gain: {why}")
    yours = f"yours is {base.verdict}" + (f" ({'; '.join(base.reasons)})" if base.reasons else "")
    return Choice(baseline, (
        f"your configuration kept: trial {best.trial_number} is {chosen.verdict} but learns "
        f"less ({_trade(base, chosen)}), and {yours}: no clear stability gain"))

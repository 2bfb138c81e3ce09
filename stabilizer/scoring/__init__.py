"""The stability score: one formula, every component kept.

For each seed of a candidate the probe's trace gives:

- ``final_val_loss``: the validation loss at the end of the probe;
- ``progress``: ``1 - final_val_loss / start``, where ``start`` is the untrained
  model's validation loss, or the chance level (`stabilizer.chance`: the loss of the
  best constant prediction) when that is lower: a classifier initialized to be
  confidently wrong has not learned anything by falling to the class frequencies;
- ``oscillation``: in the later half of the probe, the standard deviation (in nats)
  of ``log(loss + floor)`` around its moving average (window ``max(3, n/10)``, `window`):
  loss variance and oscillation, scale-free. ``floor`` is 5% of the initial
  validation loss, so near-zero losses are judged on the problem's loss scale;
- ``spike_rate``: share of later-half steps whose ``loss + floor`` is more than
  twice the median of the preceding window;
- ``explode_rate``: share of steps whose global gradient norm exceeds 10x the
  running median of the preceding window, non-finite norms included;
- ``vanishing_share``: share of layers whose median gradient norm is below
  1e-4 of the largest layer's median, or below 1e-8;
- ``generalization_gap``: ``log(final_val_loss / train_tail)``, ``train_tail`` the
  mean training loss over the last tenth of the probe's steps. A configuration
  whose validation loss already sits well above its training loss when the probe
  ends is fitting the training data and not the problem: trained for longer (the
  run the probe stands for) its validation loss climbs back and parts between seeds.

The untrained loss stands for the problem's loss scale only up to ``SCALE_CAP`` (100)
times the chance level (`loss_scale`): beyond that (an initialization that explodes
before the first step) the floors and ``L_ref`` below are drawn from 100x the chance
level instead, or every final loss would look the same under a floor of 5e18.

Seeds are combined by median (the gap's median floored at 0: a validation loss
below the training loss is no merit); ``seed_spread`` is the standard deviation of
``log(final_val_loss + floor)`` across seeds (``floor`` = 5% of ``L_ref``). With
``L_ref`` the reference loss (the baseline's median initial validation loss, shared
by every candidate of a study)::

    quality = log((L_ref + floor) / (final_val_loss + floor))   (nats of loss reduction)
    score   = quality
              - 0.5 * oscillation - 2 * spike_rate - 2 * explode_rate
              - 0.5 * vanishing_share - 1 * seed_spread - 1 * stuck
              - 1 * generalization_gap

where ``stuck`` is 1 when the median progress is below 5%. A candidate with any
diverged seed (NaN/Inf, loss above ``divergence_factor`` x its start, or a clipped
cross-entropy halfway to its maximum: `stabilizer.telemetry.LossRecorder`) gets
``DIVERGED_SCORE`` instead. Higher is better. The verdict is "stable" only when
none of the thresholds in `THRESHOLDS` is crossed.
"""

from stabilizer.scoring._records import jsonable
from stabilizer.scoring._score import (
    DIVERGED_SCORE,
    LOSS_FLOOR,
    SCALE_CAP,
    THRESHOLDS,
    WEIGHTS,
    ScoreComponents,
    loss_scale,
    score_seeds,
    score_traces,
    seed_metrics,
)
from stabilizer.scoring._stats import (
    MIN_WINDOW,
    explode_rate,
    generalization_gap,
    oscillation,
    preceding_median,
    spike_rate,
    vanishing_share,
    window,
)

__all__ = [
    "DIVERGED_SCORE",
    "LOSS_FLOOR",
    "MIN_WINDOW",
    "SCALE_CAP",
    "THRESHOLDS",
    "WEIGHTS",
    "ScoreComponents",
    "explode_rate",
    "generalization_gap",
    "jsonable",
    "loss_scale",
    "oscillation",
    "preceding_median",
    "score_seeds",
    "score_traces",
    "seed_metrics",
    "spike_rate",
    "vanishing_share",
    "window",
]

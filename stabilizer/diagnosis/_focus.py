"""Focusing a search on the findings: `Diagnosis.focus` and the first trials."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import keras

from stabilizer.diagnosis._thresholds import _DIMENSION_NAMES, CLIPPING_CODES, INIT_CODES
from stabilizer.diagnosis.checks._initializers import _mismatch
from stabilizer.space import Choice, Fixed, FloatRange, SearchSpace, load_space

if TYPE_CHECKING:
    from stabilizer.diagnosis._record import Diagnosis

__all__ = [
    "first_lr",
    "first_trial",
    "focus",
    "focus_notes",
    "mismatched",
    "narrow",
    "range_test_trial",
]


def _leading(dim: Any) -> Any:
    """The value a dimension offers first: a fixed value, a choice's first; else None."""
    return dim.value if isinstance(dim, Fixed) else \
        dim.values[0] if isinstance(dim, Choice) else None


def focus(diagnosis: Diagnosis, space: SearchSpace | str | dict[str, Any]) -> SearchSpace:
    """`space` narrowed and reordered by the findings at warning level or above.

    The changes are listed in the returned space's description and by
    `focus_notes(space)`. See `narrow` for the rules.
    """
    focused, _ = narrow(diagnosis, load_space(space))
    return focused


def focus_notes(diagnosis: Diagnosis, space: SearchSpace | str | dict[str, Any]) -> list[str]:
    """What `focus(space)` changes, one line per dimension."""
    return narrow(diagnosis, load_space(space))[1]


def first_trial(diagnosis: Diagnosis, space: SearchSpace | str | dict[str, Any]) -> dict[str, Any]:
    """Parameters for a first trial in the focused space (for `study.enqueue_trial`).

    The first choice of every focused categorical dimension, the range test's
    suggested learning rate (clipped to the range) and the geometric middle of
    the other ranges; conditional children only where their parent needs them.
    The batch size stays the user's when the findings did not reorder the batch
    sizes and the space offers it (a space lists them smallest first, which says
    nothing about the model). Dimensions that are not searched (fixed, or a
    single choice) are left out.
    """
    original = load_space(space)
    focused = focus(diagnosis, original)
    params: dict[str, Any] = {}
    for key, dim in focused.dimensions.items():
        if isinstance(dim, Choice) and len(dim.values) > 1:
            params[key] = dim.values[0]
            if key == "batch_size" and diagnosis.batch_size in dim.values \
                    and dim == original.dimensions.get(key):
                params[key] = diagnosis.batch_size
        elif isinstance(dim, FloatRange):
            middle = math.sqrt(dim.low * dim.high) if dim.log and dim.low > 0 \
                else (dim.low + dim.high) / 2
            if key == "learning_rate" and diagnosis.lr_range is not None:
                middle = min(max(first_lr(diagnosis, focused), dim.low), dim.high)
            params[key] = middle
    parents = {"decay_rate": ("lr_schedule", ("exponential",)),
               "warmup_fraction": ("lr_schedule", ("warmup_cosine",)),
               "clip_value": ("clipping", ("norm", "value", "global_norm"))}
    values = {k: _leading(d) for k, d in focused.dimensions.items()}
    for child, (parent, needs) in parents.items():
        if child in params and params.get(parent, values.get(parent)) not in needs:
            del params[child]
    return params


def mismatched(diagnosis: Diagnosis, initializer: str) -> bool:
    """Would the named initializer mismatch an activation of the diagnosed model?

    "auto" and "keep" never do (auto matches each layer; keep is the user's
    own); a name applies to every layer, so it must suit all their activations.
    """
    if initializer in ("auto", "keep"):
        return False
    try:
        init = keras.initializers.get(initializer)
    except (ValueError, TypeError):
        return False
    return any(_mismatch(init, str(r.get("activation")), bool(r.get("recurrent")))
               for r in diagnosis.initializers)


def first_lr(diagnosis: Diagnosis, focused: SearchSpace) -> float:
    """The range test's suggestion; the repaired test's when the first trial repairs.

    The first trial applies the repair when it clips (for a repair that clips)
    or takes the initializer "auto" (for a repair of the initializer).
    """
    assert diagnosis.lr_range is not None

    def first(key: str) -> Any:
        return _leading(focused.dimensions.get(key))

    repaired = diagnosis.repaired_lr_range
    if repaired is not None and (
            (diagnosis.repair_clips() and first("clipping") not in (None, "none", "keep"))
            or ("initializer" in diagnosis.repair
                and first("initializer") == diagnosis.repair["initializer"])):
        return repaired.suggested_lr
    return diagnosis.lr_range.suggested_lr


def range_test_trial(diagnosis: Diagnosis, space: SearchSpace | str | dict[str, Any]
                     ) -> dict[str, Any] | None:
    """The LR range test's suggestion alone, as parameters of the focused space.

    Its suggested learning rate (clipped to the range) with the user's other
    settings wherever the space offers them (initializer "keep", no clipping,
    a constant schedule, the user's batch size); None without a range test or
    a searched learning rate. `stabilize()` queues it before `first_trial`, so
    the search always weighs the plain LR fix against the focused proposal.
    """
    focused = focus(diagnosis, space)
    dim = focused.dimensions.get("learning_rate")
    if diagnosis.lr_range is None or not isinstance(dim, FloatRange):
        return None
    params: dict[str, Any] = {
        "learning_rate": min(max(diagnosis.lr_range.suggested_lr, dim.low), dim.high)}
    plain = {"initializer": "keep", "clipping": "none", "lr_schedule": "constant",
             "normalization": "keep", "output_bias": "keep", "batch_size": diagnosis.batch_size}
    for key, value in plain.items():
        choice = focused.dimensions.get(key)
        if isinstance(choice, Choice) and len(choice.values) > 1 and value in choice.values:
            params[key] = value
    return params


def narrow(diagnosis: Diagnosis, space: SearchSpace) -> tuple[SearchSpace, list[str]]:
    active = {f.code for f in diagnosis.findings if f.at_least("warning")}
    dims: dict[str, Any] = {}
    notes: list[str] = []
    current = dict(space.dimensions)

    def values(key: str, default: tuple[Any, ...]) -> list[Any]:
        dim = current.get(key)
        if isinstance(dim, Choice):
            return list(dim.values)
        if isinstance(dim, Fixed):
            return [dim.value]
        return list(default)

    def first(items: list[Any], preferred: Iterable[Any]) -> list[Any]:
        order = list(preferred)
        return sorted(items, key=lambda v: order.index(v) if v in order else len(order))

    # Clipping first when gradients explode or the run diverged; "none" stays last,
    # because clipping far below the gradients' scale (unscaled targets) stalls. It is
    # offered where the space offers it or leaves clipping out (the user's unclipped
    # optimizer); a space that always clips (`recurrent`) keeps clipping on, and a
    # fixed clipping is the user's decision.
    clip_codes = active & CLIPPING_CODES
    if clip_codes and not isinstance(current.get("clipping"), Fixed):
        offered = values("clipping", ("global_norm", "norm", "none"))
        clip = [v for v in offered if v not in ("none", "keep")]
        clip = first(clip or ["global_norm", "norm"], ("global_norm", "norm", "value"))
        clip += [v for v in ("none", "keep") if v in offered]
        dims["clipping"] = Choice(tuple(clip))
        notes.append(f"clipping: {', '.join(clip)} ({', '.join(sorted(clip_codes))})")
        if "clip_value" not in current:
            dims["clip_value"] = FloatRange(0.5, 5.0, log=True)
    # Learning rate: the range test's bound, or below the rate that misbehaved.
    cap, why = None, ""
    lr, repaired = diagnosis.lr_range, diagnosis.repaired_lr_range
    if lr is not None and (lr.reliable or "lr_too_high" in active):
        cap, why = lr.max_stable_lr, "LR range test max stable LR"
        if clip_codes and repaired is None:
            # The test ran unclipped; clipping bounds the steps it blew up on.
            cap, why = 10 * cap, "10x the LR range test max stable LR: clipping is searched"
    if repaired is not None and (cap is not None or repaired.reliable):
        # The repairs are searched, first: their own range test bounds the rates.
        cap = max(cap or 0.0, repaired.max_stable_lr)
        why = f"LR range test max stable LR under {diagnosis.repair_text()}"
    if active & {"oscillating_loss", "diverged"} and diagnosis.user_lr and lr is None:
        cap, why = diagnosis.user_lr, "the learning rate that misbehaved"
    if "loss_rising" in active and diagnosis.user_lr and not clip_codes and (
            cap is None or cap > diagnosis.user_lr):
        # The user's own training came apart at this rate, whatever the ramp said.
        cap, why = diagnosis.user_lr, "the learning rate at which the loss rose again"
    if cap is not None:
        dim = current.get("learning_rate")
        if isinstance(dim, FloatRange) and dim.high > cap:
            # Down to the plain test's suggestion too, so `range_test_trial` is in range.
            low = min(dim.low, cap / 30, lr.suggested_lr if lr is not None else cap)
            dims["learning_rate"] = FloatRange(low, cap, log=True)
            notes.append(f"learning_rate: [{low:.3g}, {cap:.3g}] ({why})")
        elif isinstance(dim, Choice) and max(dim.values) > cap:
            kept = tuple(v for v in dim.values if v <= cap) or (cap,)
            dims["learning_rate"] = Choice(kept)
            notes.append(f"learning_rate: {', '.join(f'{v:g}' for v in kept)} ({why})")
        elif dim is None and "lr_too_high" in active:
            dims["learning_rate"] = FloatRange(cap / 30, cap, log=True)
            notes.append(f"learning_rate: added [{cap / 30:.3g}, {cap:.3g}] ({why})")
    # Matched initializers first when the initialisation is implicated.
    init_codes = active & INIT_CODES
    if init_codes:
        inits = first(values("initializer", ("auto",)), ("auto",))
        if "auto" not in inits:
            inits.insert(0, "auto")
        if active & {"init_mismatch", "large_init", "small_init"}:
            inits = [v for v in inits if v != "keep"]
        inits = [v for v in inits if not mismatched(diagnosis, v)]
        dims["initializer"] = Choice(tuple(inits))
        notes.append(f"initializer: {', '.join(inits)} ({', '.join(sorted(init_codes))})")
    elif "init_mismatch" in diagnosis and isinstance(current.get("initializer"), Choice):
        inits = first(values("initializer", ("auto",)), ("auto",))
        dims["initializer"] = Choice(tuple(inits))
    # Decaying schedules first whenever something is wrong: the steps shrink towards
    # the end, and with them the final loss's seed-to-seed noise, which short probes
    # on few seeds measure poorly (the first trial takes the first schedule).
    if active:
        order = ("warmup_cosine", "cosine", "exponential", "cooldown", "plateau", "constant")
        schedules = first(values("lr_schedule", ("warmup_cosine", "cosine", "constant")), order)
        dims["lr_schedule"] = Choice(tuple(schedules))
        notes.append(f"lr_schedule: {', '.join(schedules)}")
    # Larger batches first for BatchNormalization trouble and seed variance.
    if active & {"bn_small_batch", "bn_mode_gap", "seed_variance"}:
        batches = sorted(values("batch_size", (32, 16)), reverse=True)
        if "bn_small_batch" in active:
            big = [b for b in batches if b >= diagnosis.thresholds["bn_min_batch"]]
            batches = big or [max(16, int(diagnosis.thresholds["bn_min_batch"]) * 2)]
        dims["batch_size"] = Choice(tuple(batches))
        notes.append(f"batch_size: {', '.join(map(str, batches))}")
        if "normalization" in _DIMENSION_NAMES and active & {"bn_small_batch", "bn_mode_gap"}:
            norms = first(values("normalization", ("group", "layer", "keep")),
                          ("group", "layer", "keep", "batch"))
            dims["normalization"] = Choice(tuple(norms))
            notes.append(f"normalization: {', '.join(norms)}")
    # The output bias at the best constant when the offset is most of the untrained
    # loss: on every trial, unless the space searches it (then first) or fixes it.
    if "output_offset" in active and not isinstance(current.get("output_bias"), Fixed):
        offered = current.get("output_bias")
        if isinstance(offered, Choice):
            biases = first(list(offered.values), ("chance", "keep"))
            if "chance" not in biases:
                biases.insert(0, "chance")
            dims["output_bias"] = Choice(tuple(biases))
        else:
            biases = ["chance"]
            dims["output_bias"] = Fixed("chance")
        notes.append(f"output_bias: {', '.join(biases)} (output_offset)")
    if active & {"bn_unsettled", "bn_mode_gap"}:
        dim = current.get("bn_momentum")
        if isinstance(dim, FloatRange):
            high = min(dim.high, 0.95)
            dims["bn_momentum"] = FloatRange(min(dim.low, high), high, dim.log)
        else:
            dims["bn_momentum"] = FloatRange(0.8, 0.95)
        notes.append("bn_momentum: at most 0.95 (moving statistics settle faster)")
    focused = space.with_dimensions(**dims)
    if notes:
        text = "; ".join(notes)
        focused = dataclasses.replace(
            focused, description=f"{space.description} [focused by diagnosis: {text}]".strip())
    return focused, notes

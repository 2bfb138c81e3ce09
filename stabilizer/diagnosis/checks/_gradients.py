"""The gradient family: `diverged`, `exploding_gradients`, `vanishing_gradients`."""

from __future__ import annotations

import math

from stabilizer.diagnosis._stats import _finite_max, _median
from stabilizer.diagnosis.checks._evidence import Evidence

__all__ = ["divergence", "gradients"]


def divergence(ev: Evidence) -> None:
    diverged = [i for i, lo in enumerate(ev.losses) if lo["diverged"]]
    if not diverged:
        return
    first = min(ev.losses[i]["steps"] for i in diverged)
    worst = max((_finite_max(ev.traces[i].loss) / ev.losses[i]["initial_val_loss"]
                 for i in diverged if ev.losses[i]["initial_val_loss"] > 0), default=math.nan)
    ev.add("diverged", "training diverged", "error",
           {"seeds_diverged": len(diverged), "seeds": len(ev.losses),
            "stopped_at_step": first, "max_loss_over_initial": worst,
            "nonfinite_loss_steps": sum(ev.losses[i]["nonfinite_steps"] for i in diverged)},
           [], f"the loss became NaN/Inf or exceeded {ev.settings.divergence_factor:g}x "
               f"its start on {len(diverged)} of {len(ev.losses)} seeds")


def gradients(ev: Evidence) -> None:
    th, grads = ev.th, ev.grads
    nonfinite = sum(g["nonfinite_steps"] for g in grads)
    spikes = _median(g["spikes"] for g in grads)
    ratio = _median(g["max_layer_ratio"] for g in grads)
    growth = _median(g["growth"] for g in grads)
    severe = bool(nonfinite) or growth > th["explode_growth_error"]
    if nonfinite or spikes >= th["explode_spikes"] or ratio > th["explode_layer_ratio"] \
            or growth > th["explode_growth"]:
        firsts = [g["first_spike_step"] for g in grads if g["first_spike_step"] >= 0]
        firsts += [g["first_nonfinite_step"] for g in grads if g["first_nonfinite_step"] >= 0]
        layers = [n for g in grads for n in g["spiking_layers"]]
        if ratio > th["explode_layer_ratio"]:
            layers += [n for g in grads for n, r in g["layer_ratios"].items()
                       if r > th["explode_layer_ratio"]]
        reasons = []
        if nonfinite:
            reasons.append(f"{nonfinite} steps with NaN/Inf gradients")
        if spikes >= th["explode_spikes"]:
            reasons.append(f"{spikes:g} spikes per seed above {th['explode_factor']:g}x the "
                           "running median")
        if ratio > th["explode_layer_ratio"]:
            reasons.append(f"a layer's gradients {ratio:.3g}x the output layer's")
        if growth > th["explode_growth"]:
            reasons.append(f"the gradient norm grew to {growth:.3g}x its starting value")
        ev.add("exploding_gradients", "exploding gradients",
               "error" if severe else "warning",
               {"spikes_per_seed": spikes,
                "seeds_with_spikes": sum(g["spikes"] > 0 for g in grads),
                "max_spike_ratio": _median(g["max_spike_ratio"] for g in grads),
                "first_step": min(firsts) if firsts else -1,
                "nonfinite_steps": nonfinite, "max_layer_ratio": ratio,
                "median_grad_norm": _median(g["median_norm"] for g in grads),
                "growth": growth},
               ["explode_factor", "explode_spikes", "explode_layer_ratio", "explode_growth",
                "explode_growth_error"],
               "; ".join(reasons), layers)
    low = _median(g["min_layer_ratio"] for g in grads)
    floor = _median(g["min_layer_median"] for g in grads)
    if low < th["vanish_ratio"] or floor < th["vanish_floor"]:
        layers = [n for g in grads for n, r in g["layer_ratios"].items()
                  if r < th["vanish_ratio"]]
        layers += [n for g in grads for n, m in g["layer_medians"].items()
                   if m < th["vanish_floor"]]
        severity = "error" if low < th["vanish_ratio_error"] else "warning"
        ev.add("vanishing_gradients", "vanishing gradients", severity,
               {"min_layer_ratio": low, "min_layer_median": floor,
                "output_layer_median": _median(
                    g["layer_medians"].get(g["output_layer"], math.nan) for g in grads)},
               ["vanish_ratio", "vanish_ratio_error", "vanish_floor"],
               f"the smallest layer gradient norm is {low:.3g}x the output layer's "
               f"(median over steps and seeds)" if math.isfinite(low) else
               f"the output layer's gradient norm is zero, so no layer can be compared "
               f"with it; the smallest layer gradient norm is {floor:.3g} (median over "
               "steps and seeds)", layers)

"""Static checks of the initializers, before any training: the `init_mismatch`,
`large_init` and `small_init` findings (`large_init` also for a recurrent kernel whose
spectral radius grows the state over the time steps).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from stabilizer.apply import (
    activation_family,
    is_recurrent,
    layer_activations,
)
from stabilizer.diagnosis._finding import Finding
from stabilizer.diagnosis._thresholds import THRESHOLDS, _dims
from stabilizer.keras_internals import flat_layers
from stabilizer.telemetry import host_array

__all__ = ["check_initializers"]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        return int(shape[0]) if shape else 1, int(shape[0]) if shape else 1
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def _initializer_info(init: Any, fan_in: int, fan_out: int) -> tuple[str, float | None]:
    """(a short description, Var(W)) of an initializer; None when unknown."""
    inits = keras.initializers
    name = type(init).__name__
    if isinstance(init, inits.VarianceScaling):
        scale, mode = float(init.scale), init.mode
        n = {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2)
        return f"{name}(scale={scale:g}, mode={mode}, {init.distribution})", scale / max(n, 1)
    if isinstance(init, inits.TruncatedNormal):
        return f"{name}(stddev={init.stddev:g})", 0.7737 * float(init.stddev) ** 2
    if isinstance(init, inits.RandomNormal):
        return f"{name}(stddev={init.stddev:g})", float(init.stddev) ** 2
    if isinstance(init, inits.RandomUniform):
        return f"{name}({init.minval:g}, {init.maxval:g})", \
            (float(init.maxval) - float(init.minval)) ** 2 / 12
    if isinstance(init, inits.Orthogonal):
        return f"{name}(gain={init.gain:g})", \
            float(init.gain) ** 2 * min(1.0, fan_in / max(fan_out, 1)) / max(fan_in, 1)
    if isinstance(init, inits.Constant):
        return f"{name}({float(init.value):g})", float(init.value) ** 2
    if isinstance(init, inits.Zeros):
        return name, 0.0
    if isinstance(init, inits.Ones):
        return name, 1.0
    return name, None


def _activation_slope(activation: str) -> float:
    return 0.5 if activation_family(activation) == "relu" else 1.0


def check_initializers(model: keras.Model, thresholds: dict[str, float] | None = None
                       ) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Static initializer checks (no training); returns (findings, one record per layer).

    Reads each layer's `kernel_initializer` object and kernel shape and the
    activation that follows it (`layer_activations`); see the module docstring.
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    activations = layer_activations(model)
    records: list[dict[str, Any]] = []
    for layer in flat_layers(model):
        target = layer if hasattr(layer, "kernel_initializer") else getattr(layer, "cell", None)
        kernel = getattr(target, "kernel", None)
        if target is None or kernel is None or layer.name not in activations:
            continue
        fan_in, fan_out = _fans(tuple(int(d) for d in kernel.shape))
        description, variance = _initializer_info(target.kernel_initializer, fan_in, fan_out)
        act = activations[layer.name]
        gain = fan_in * variance * _activation_slope(act) if variance is not None else None
        recurrent = is_recurrent(layer)
        records.append({"layer": layer.name, "activation": act, "initializer": description,
                        "fan_in": fan_in, "fan_out": fan_out, "variance_gain": gain,
                        "recurrent": recurrent,
                        "mismatch": _mismatch(target.kernel_initializer, act, recurrent)})
    gains = [r["variance_gain"] for r in records if r["variance_gain"] is not None]
    cumulative = [float(np.prod(gains[:i + 1])) for i in range(len(gains))]
    drift = max((abs(math.log10(c)) for c in cumulative if c > 0), default=0.0)
    if any(c == 0 for c in cumulative):
        drift = math.inf
    findings: list[Finding] = []
    mismatched = [r for r in records if r["mismatch"]]
    if mismatched:
        drifted = drift > math.log10(th["init_drift"])
        kinds = sorted({r["mismatch"] for r in mismatched})
        evidence: dict[str, float] = {"layers_mismatched": len(mismatched),
                                      "kernel_layers": len(records),
                                      "total_variance_gain": cumulative[-1] if cumulative
                                      else float("nan")}
        for r in mismatched:
            if r["variance_gain"] is not None:
                evidence[f"{r['layer']}.variance_gain"] = r["variance_gain"]
        findings.append(Finding(
            "init_mismatch", "initializer does not match the activation",
            "warning" if drifted else "info", evidence,
            {"init_drift": th["init_drift"]}, _dims("init_mismatch"),
            "; ".join(kinds) + (
                f": the signal variance changes by a factor {cumulative[-1]:.3g} over the "
                "stack at initialisation" if drifted else
                "; the variance drift over this stack stays within bounds, so it is minor"),
            [r["layer"] for r in mismatched]))
    plain = [r for r in records if r["variance_gain"] is not None
             and _is_plain_random(r["initializer"])]
    peak = max(cumulative, default=1.0)
    trough = min(cumulative, default=1.0)
    large = [r for r in plain if r["variance_gain"] > th["large_init_gain"]]
    if large or (plain and peak > th["init_drift"]):
        large = large or [r for r in plain if r["variance_gain"] > 1]
        evidence = {f"{r['layer']}.variance_gain": r["variance_gain"] for r in large}
        evidence["max_cumulative_gain"] = peak
        findings.append(Finding(
            "large_init", "initializer scale too large for the layer's fan-in", "warning",
            evidence, {"large_init_gain": th["large_init_gain"], "init_drift": th["init_drift"]},
            _dims("large_init"),
            "fan_in * Var(W) is large: pre-activations grow layer by layer, to "
            f"{peak:.3g}x the input variance ({_initializer_names(large)})",
            [r["layer"] for r in large]))
    _recurrent_radius(model, th, findings)
    if plain and trough < 1 / th["init_drift"]:
        small = [r for r in plain if r["variance_gain"] < 1]
        evidence = {f"{r['layer']}.variance_gain": r["variance_gain"] for r in small}
        evidence["min_cumulative_gain"] = trough
        findings.append(Finding(
            "small_init", "initializer scale too small for the layer's fan-in", "warning",
            evidence, {"init_drift": th["init_drift"]}, _dims("small_init"),
            "fan_in * Var(W) is small: the signal shrinks layer by layer, to "
            f"{trough:.3g}x the input variance ({_initializer_names(small)})",
            [r["layer"] for r in small]))
    return findings, records


def _recurrent_radius(model: keras.Model, th: dict[str, float],
                      findings: list[Finding]) -> None:
    """Add the recurrent kernels whose spectral radius is above ``recurrent_radius`` to
    the `large_init` finding (made when there is none)."""
    evidence: dict[str, float] = {}
    layers: list[str] = []
    for layer in flat_layers(model):
        kernel = getattr(layer, "recurrent_kernel", None)
        if kernel is None or isinstance(layer, keras.layers.RNN):
            continue  # the cell holds the kernel (an RNN layer's is a view of it)
        shape = tuple(int(d) for d in kernel.shape)
        if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
            continue  # gated cells: one block per gate
        radius = float(np.max(np.abs(np.linalg.eigvals(host_array(kernel).astype("float64")))))
        if radius > th["recurrent_radius"]:
            evidence[f"{layer.name}.recurrent_radius"] = radius
            layers.append(layer.name)
    if not layers:
        return
    text = ("the recurrent kernel's spectral radius is above 1: the state grows by about "
            f"that factor per time step ({', '.join(f'{k} {v:.3g}' for k, v in evidence.items())})")
    for finding in findings:
        if finding.code == "large_init":
            finding.evidence.update(evidence)
            finding.thresholds["recurrent_radius"] = th["recurrent_radius"]
            finding.message += f"; {text}"
            finding.layers.extend(layers)
            return
    findings.append(Finding(
        "large_init", "initializer scale too large for the layer's fan-in", "warning",
        evidence, {"recurrent_radius": th["recurrent_radius"]}, _dims("large_init"), text,
        layers))


def _initializer_names(records: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({r["initializer"] for r in records}))


def _is_plain_random(description: str) -> bool:
    return description.startswith(("RandomNormal", "TruncatedNormal", "RandomUniform",
                                   "Constant", "Ones"))


def _mismatch(init: Any, activation: str, recurrent: bool = False) -> str:
    """Why `init` does not suit `activation` ("" when it does); see the module docstring.

    A recurrent layer's Glorot input kernel is the match for every activation
    (`stabilizer.apply.matched_initializer`), so it is never a mismatch there.
    """
    family = activation_family(activation)
    scaling = isinstance(init, keras.initializers.VarianceScaling)
    if family == "selu":
        lecun = scaling and float(init.scale) == 1.0 and init.mode == "fan_in" \
            and init.distribution in ("truncated_normal", "normal", "untruncated_normal")
        return "" if lecun else "SELU without LeCun normal"
    if activation in ("sigmoid", "tanh", "softmax", "linear") or family == "saturating":
        if scaling and float(init.scale) >= 1.5 and activation in ("sigmoid", "tanh"):
            return f"{activation} with He (scale {float(init.scale):g})"
        return ""
    if family == "relu" and scaling and float(init.scale) < 1.5 and not recurrent:
        return f"{activation} with Glorot/LeCun (scale {float(init.scale):g})"
    return ""

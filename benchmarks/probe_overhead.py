"""Time of an instrumented probe against a plain `model.fit` of the same steps.

For each model (a small MLP and a small CNN on scikit-learn's digits) and each
repeat, three runs train the same freshly built model for the same steps, batch
size and validation passes:

- ``plain``: `model.compile` + `model.fit` as a user would write it;
- ``instrumented``: the same fit with the stabilizer's telemetry (instrumented
  optimizer subclass, loss recorder, divergence-check callback);
- ``probe``: `run_probe` as the search runs it (instrumented fit plus one
  validation pass of the untrained model and the bulk read-back).

Each figure is the median wall time over the repeats, model build and compile
included. Usage::

    python benchmarks/probe_overhead.py [--steps 200] [--repeats 5] [--out FILE]

Prints a Markdown table and writes JSON (default benchmarks/results/probe_overhead.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from stabilizer import SearchConfig, StabilityConfig  # noqa: E402
from stabilizer.apply import apply_config, compile_model, make_optimizer  # noqa: E402
from stabilizer.data import ProbeData, prepare_data  # noqa: E402
from stabilizer.probe import ProbePlan, run_probe  # noqa: E402
from stabilizer.telemetry import (  # noqa: E402
    LossRecorder,
    TelemetryCallback,
    attach_loss_recorder,
    instrumented_optimizer_class,
)


def mlp() -> keras.Model:
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def cnn() -> keras.Model:
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def digits(image: bool) -> ProbeData:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    if image:
        x = x.reshape(-1, 8, 8, 1)
    return prepare_data((x, y.astype("int32")))


def _fit(build: Callable[[], keras.Model], data: ProbeData, settings: SearchConfig,
         instrumented: bool, seed: int) -> float:
    plan = ProbePlan.from_settings(settings)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    applied = apply_config(build(), StabilityConfig(), settings)
    callbacks = []
    if instrumented:
        cls = instrumented_optimizer_class(type(applied.compile_spec.optimizer))
        optimizer = make_optimizer(applied.compile_spec, StabilityConfig(), plan.total_steps, cls)
        optimizer.stab_capacity = plan.total_steps
        recorder = LossRecorder(plan.total_steps, settings.divergence_factor)
        attach_loss_recorder(applied.model, recorder)
        callbacks.append(TelemetryCallback(recorder, settings.check_every))
    else:
        optimizer = make_optimizer(applied.compile_spec, StabilityConfig(), plan.total_steps)
    model = compile_model(applied, optimizer)
    model.fit(**data.fit_inputs(settings.batch_size, plan.total_steps, seed), epochs=plan.epochs,
              steps_per_epoch=plan.steps_per_epoch, callbacks=callbacks, verbose=0)
    if instrumented:
        keras.ops.convert_to_numpy(recorder.buffer.value)  # the bulk read-back
    return time.perf_counter() - start


def _probe(build: Callable[[], keras.Model], data: ProbeData, settings: SearchConfig,
           seed: int) -> float:
    start = time.perf_counter()
    run_probe(build, data, StabilityConfig(), settings, seed)
    return time.perf_counter() - start


def measure(name: str, build: Callable[[], keras.Model], data: ProbeData, steps: int,
            repeats: int) -> dict[str, Any]:
    settings = SearchConfig(probe_steps=steps, evaluations=4, batch_size=32)
    _fit(build, data, settings, True, 0)  # warm-up: first-time imports and kernels
    times: dict[str, list[float]] = {"plain": [], "instrumented": [], "probe": []}
    for r in range(repeats):  # interleaved so drift hits all three alike
        times["plain"].append(_fit(build, data, settings, False, r))
        times["instrumented"].append(_fit(build, data, settings, True, r))
        times["probe"].append(_probe(build, data, settings, r))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "steps": steps, "repeats": repeats,
            "plain_s": med["plain"], "instrumented_s": med["instrumented"],
            "probe_s": med["probe"],
            "instrumented_ratio": med["instrumented"] / med["plain"],
            "probe_ratio": med["probe"] / med["plain"], "all_times": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "probe_overhead.json"))
    args = parser.parse_args(argv)
    rows = [measure("mlp", mlp, digits(False), args.steps, args.repeats),
            measure("cnn", cnn, digits(True), args.steps, args.repeats)]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"Keras {keras.__version__} on {keras.backend.backend()}")
    print(f"Probe overhead ({args.steps} steps, median of {args.repeats}; {machine})\n")
    print("| model | plain fit (s) | instrumented fit (s) | ratio | full probe (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['plain_s']:.2f} | {r['instrumented_s']:.2f} | "
              f"{r['instrumented_ratio']:.3f}x | {r['probe_s']:.2f} | {r['probe_ratio']:.3f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

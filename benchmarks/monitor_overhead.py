"""Time of a `model.fit` with `stabilizer.monitor` against the same plain fit.

For each model (the MLP and the CNN of `benchmarks/probe_overhead.py`, on scikit-learn's
digits) and each repeat, two fits train a freshly built model for the same epochs and
batch size: ``plain`` (the user's fit) and ``monitored`` (the same fit with
``callbacks=[stabilizer.monitor(every=K)]``, rescue on: it keeps a copy of the weights
every window). Interleaved in pairs, model build and compile included; the first fit of
each kind is a warm-up. Reported: the ratio of the median wall times, the median of the
pairs' ratios with a 90% bootstrap interval (a pair runs back to back, so a slow spell of
the machine touches both), and the ratio of the median CPU times of the process (which
a busy neighbour on the host does not inflate). Target (issue 38): at most 1.05x at
K=50. Usage::

    python -m benchmarks.monitor_overhead [--epochs 6] [--repeats 5] [--every 50] [--models mlp,cnn]
        [--out FILE]

Prints a Markdown table and writes JSON (default benchmarks/results/monitor_overhead.json),
with the code version, the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import stabilizer  # noqa: E402
from benchmarks.compare import _code_version, machine  # noqa: E402
from benchmarks.probe_overhead import cnn, mlp  # noqa: E402


def digits(image: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return (x.reshape(-1, 8, 8, 1) if image else x), y.astype("int32")


def _fit(build: Callable[[], keras.Model], data: tuple[np.ndarray, np.ndarray], epochs: int,
         every: int | None, seed: int) -> tuple[float, float]:
    """Wall and CPU seconds of building, compiling and fitting one model."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    start, cpu = time.perf_counter(), time.process_time()
    model = build()
    callbacks = [stabilizer.monitor(every=every, rescue=True)] if every else []
    model.fit(*data, batch_size=32, epochs=epochs, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start, time.process_time() - cpu


def measure(name: str, build: Callable[[], keras.Model], data: Any, epochs: int, every: int,
            repeats: int) -> dict[str, Any]:
    _fit(build, data, epochs, None, 0)
    _fit(build, data, epochs, every, 0)
    times: dict[str, list[float]] = {"plain": [], "monitored": []}
    cpu: dict[str, list[float]] = {"plain": [], "monitored": []}
    for r in range(repeats):
        for kind, watch in (("plain", None), ("monitored", every)):
            wall, used = _fit(build, data, epochs, watch, r)
            times[kind].append(wall)
            cpu[kind].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    pairs = [m / p for p, m in zip(times["plain"], times["monitored"])]
    rng = np.random.default_rng(0)
    resampled = [float(np.median(rng.choice(pairs, len(pairs)))) for _ in range(2000)]
    steps = epochs * -(-len(data[0]) // 32)
    return {"model": name, "steps": steps, "every": every, "repeats": repeats,
            "plain_s": med["plain"], "monitored_s": med["monitored"],
            "ratio": med["monitored"] / med["plain"],
            "pair_ratio": statistics.median(pairs),
            "pair_ratio_90": [float(np.percentile(resampled, 5)),
                              float(np.percentile(resampled, 95))],
            "cpu_ratio": statistics.median(cpu["monitored"]) / statistics.median(cpu["plain"]),
            "all_times": times, "all_cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "monitor_overhead.json"))
    args = parser.parse_args(argv)
    models = {"mlp": (mlp, False), "cnn": (cnn, True)}
    rows = [measure(name, models[name][0], digits(models[name][1]), args.epochs, args.every,
                    args.repeats) for name in args.models.split(",")]
    command = "python -m benchmarks.monitor_overhead " + " ".join(argv or sys.argv[1:])
    print(f"# `{command.strip()}`\n\nmonitor overhead (every={args.every}, median of "
          f"{args.repeats}; {machine()})\n")
    print("| model | steps | plain fit (s) | with monitor (s) | ratio | pairs' ratio (90%) "
          "| CPU-time ratio |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        low, high = row["pair_ratio_90"]
        print(f"| {row['model']} | {row['steps']} | {row['plain_s']:.2f} | "
              f"{row['monitored_s']:.2f} | {row['ratio']:.3f} | {row['pair_ratio']:.3f} "
              f"({low:.3f}-{high:.3f}) | {row['cpu_ratio']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"code": _code_version(), "machine": machine(),
                               "command": command.strip(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

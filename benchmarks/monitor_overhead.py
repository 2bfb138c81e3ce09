"""Time of a `model.fit` with `stabilizer.monitor` against the same plain fit.

For each model (the MLP and the CNN of `benchmarks/probe_overhead.py`, on scikit-learn's
digits) and each repeat, two fits train a freshly built model for the same epochs and
batch size: ``plain`` (the user's fit) and ``monitored`` (the same fit with
``callbacks=[stabilizer.monitor(every=K)]``, rescue on: it keeps a copy of the weights
every window). Interleaved, median wall time over the repeats, model build and compile
included; the first fit of each kind is a warm-up. Target (issue 38): at most 1.05x at
K=50. Usage::

    python -m benchmarks.monitor_overhead [--epochs 6] [--repeats 5] [--every 50] [--out FILE]

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
         every: int | None, seed: int) -> float:
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model = build()
    callbacks = [stabilizer.monitor(every=every, rescue=True)] if every else []
    model.fit(*data, batch_size=32, epochs=epochs, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def measure(name: str, build: Callable[[], keras.Model], data: Any, epochs: int, every: int,
            repeats: int) -> dict[str, Any]:
    _fit(build, data, epochs, None, 0)
    _fit(build, data, epochs, every, 0)
    times: dict[str, list[float]] = {"plain": [], "monitored": []}
    for r in range(repeats):
        times["plain"].append(_fit(build, data, epochs, None, r))
        times["monitored"].append(_fit(build, data, epochs, every, r))
    med = {k: statistics.median(v) for k, v in times.items()}
    steps = epochs * -(-len(data[0]) // 32)
    return {"model": name, "steps": steps, "every": every, "repeats": repeats,
            "plain_s": med["plain"], "monitored_s": med["monitored"],
            "ratio": med["monitored"] / med["plain"], "all_times": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "monitor_overhead.json"))
    args = parser.parse_args(argv)
    rows = [measure("mlp", mlp, digits(False), args.epochs, args.every, args.repeats),
            measure("cnn", cnn, digits(True), args.epochs, args.every, args.repeats)]
    command = "python -m benchmarks.monitor_overhead " + " ".join(argv or sys.argv[1:])
    print(f"# `{command.strip()}`\n\nmonitor overhead (every={args.every}, median of "
          f"{args.repeats}; {machine()})\n")
    print("| model | steps | plain fit (s) | with monitor (s) | ratio |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['steps']} | {row['plain_s']:.2f} | "
              f"{row['monitored_s']:.2f} | {row['ratio']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"code": _code_version(), "machine": machine(),
                               "command": command.strip(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

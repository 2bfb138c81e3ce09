"""Probes per hour: seeds one after another against seeds trained together as replicas.

One probe is one seed of one candidate trained for `--steps` steps with `--evaluations`
validation passes. For each zoo model (the digits MLP, the digits CNN, the RNN on the
adding problem and the digits autoencoder), under one candidate that keeps them from
diverging (learning rate 1e-4, global-norm clipping at 1.0: every probe trains all its
steps), it times:

- ``(a) plain fit``: the model built and compiled as the product builds it
  (`build_configured_model`) and trained by a plain `model.fit` on the same batches, one
  seed after another, as a user would;
- ``(b) probes alone``: today's instrumented probes (`run_probe`), one seed after another;
- ``(c) K=k``: one program of k replicas (`run_replica_probes`), k seeds at once.

Each figure is probes per hour over the wall time, model building and compiling included,
the best of `--repeats` runs (the least disturbed by other work on the machine). Usage::

    python -m benchmarks.throughput [--steps 120] [--evaluations 4] [--replicas 1 2 4 8 16 32]
                                    [--models mlp cnn rnn autoencoder] [--repeats 2] [--out DIR]

Prints a Markdown table and writes ``throughput_<backend>.json`` and ``.md`` to ``--out``
(default benchmarks/results/), the machine named in both.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from benchmarks import zoo  # noqa: E402
from benchmarks.compare import machine as host  # noqa: E402
from stabilizer.apply import build_configured_model  # noqa: E402
from stabilizer.config import SearchConfig, StabilityConfig  # noqa: E402
from stabilizer.data import ProbeData, prepare_data  # noqa: E402
from stabilizer.probe import ProbePlan, run_probe, run_replica_probes  # noqa: E402

MODELS = {"mlp": "healthy_mlp_control", "cnn": "cnn_digits_high_lr",
          "rnn": "exploding_rnn_long_sequences", "autoencoder": "autoencoder_high_lr"}
#: Every probe trains all its steps under it (no divergence cuts one short).
CANDIDATE = StabilityConfig(learning_rate=1e-4, clipping="global_norm", clip_value=1.0)
TARGET_K8 = 3.0  # (c) at K=8 against (a), for the MLP and the CNN, on 2 CPU cores
TARGET_K1 = 1.05  # (c) at K=1: at most this times (a)'s time per probe


def machine() -> str:
    """The machine in words (`benchmarks.compare.machine`) and the device the backend uses."""
    device = "CPU"
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = str(jax.devices()[0].device_kind)
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                device = torch.cuda.get_device_name(0)
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            device = gpus[0].name if gpus else "CPU"
    except Exception:  # the name is a label; a backend that cannot say is left at CPU
        pass
    return f"{host()}, device {device}"


def _plain(build: Callable[[], keras.Model], data: ProbeData, settings: SearchConfig,
           plan: ProbePlan, seed: int) -> None:
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    batch = settings.batch_size
    model = build_configured_model(build, CANDIDATE, settings, plan.total_steps).model
    model.evaluate(data.x_val, data.y_val, batch_size=batch, verbose=0)
    model.fit(**data.fit_inputs(batch, plan.total_steps, seed), epochs=plan.epochs,
              steps_per_epoch=plan.steps_per_epoch, verbose=0)


def _best_seconds(run: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, steps: int, evaluations: int, replicas: list[int], repeats: int,
            sequential_seeds: int) -> list[dict[str, Any]]:
    scenario = zoo.get(MODELS[name])
    x, y = scenario.load_data()
    settings = SearchConfig(probe_steps=steps, evaluations=evaluations,
                            batch_size=scenario.batch_size, divergence_factor=1e12)
    data = prepare_data((x, y), validation_split=settings.validation_split)
    plan = ProbePlan.from_settings(settings)
    seeds = list(range(sequential_seeds))
    rows = []

    def add(method: str, probes: int, seconds: float) -> None:
        rows.append({"model": name, "scenario": scenario.name, "method": method,
                     "probes": probes, "seconds": round(seconds, 3),
                     "probes_per_hour": round(3600 * probes / seconds, 1)})
        print(f"{name:12} {method:16} {probes:3} probes {seconds:8.2f} s", flush=True)

    _plain(scenario.build_fn, data, settings, plan, 0)  # warm up the backend once
    add("(a) plain fit", len(seeds), _best_seconds(
        lambda: [_plain(scenario.build_fn, data, settings, plan, s) for s in seeds], repeats))
    add("(b) probes alone", len(seeds), _best_seconds(
        lambda: [run_probe(scenario.build_fn, data, CANDIDATE, settings, s, plan=plan)
                 for s in seeds], repeats))
    for k in replicas:
        found: list[Any] = []

        def together(k: int = k) -> None:
            traces, _ = run_replica_probes(scenario.build_fn, data, CANDIDATE, settings,
                                           list(range(k)), plan=plan, stop_on_any=False)
            found[:] = traces
        seconds = _best_seconds(together, repeats)
        if len(found) < k:  # fewer fit in memory
            print(f"{name:12} K={k}: only {len(found)} replicas fit in memory", flush=True)
        add(f"(c) K={k}", len(found), seconds)
    return rows


def table(rows: list[dict[str, Any]], title: str) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["model"], r["method"]): r for r in rows}
    lines = [title, "", "| method | " + " | ".join(models) + " |",
             "|---|" + "---|" * len(models)]
    for method in methods:
        cells = []
        for model in models:
            row, plain = by.get((model, method)), by.get((model, "(a) plain fit"))
            if row is None:
                cells.append("")
                continue
            ratio = row["probes_per_hour"] / plain["probes_per_hour"] if plain else float("nan")
            cells.append(f"{row['probes_per_hour']:,.0f} ({ratio:.2f}x)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    by = {(r["model"], r["method"]): r for r in rows}
    out = []
    for model in ("mlp", "cnn"):
        plain, k8 = by.get((model, "(a) plain fit")), by.get((model, "(c) K=8"))
        if plain and k8:
            ratio = k8["probes_per_hour"] / plain["probes_per_hour"]
            out.append(f"{model}: (c) K=8 gives {ratio:.2f}x the probes per hour of (a) "
                       f"(target {TARGET_K8:g}x: {'met' if ratio >= TARGET_K8 else 'not met'})")
    for model in dict.fromkeys(r["model"] for r in rows):
        plain, k1 = by.get((model, "(a) plain fit")), by.get((model, "(c) K=1"))
        if plain and k1:
            ratio = plain["probes_per_hour"] / k1["probes_per_hour"]
            out.append(f"{model}: (c) K=1 takes {ratio:.3f}x the time per probe of (a) "
                       f"(target at most {TARGET_K1:g}x: "
                       f"{'met' if ratio <= TARGET_K1 else 'not met'})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--evaluations", type=int, default=4)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sequential-seeds", type=int, default=4,
                        help="seeds (a) and (b) train one after another per repeat")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    if args.steps < 2 or args.evaluations < 1 or args.repeats < 1 \
            or any(k < 1 for k in args.replicas) or args.sequential_seeds < 1:
        parser.error("--steps must be >= 2; --evaluations, --repeats, --replicas and "
                     "--sequential-seeds >= 1")
    where = machine()
    print(f"machine: {where}", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        rows += measure(name, args.steps, args.evaluations, args.replicas, args.repeats,
                        args.sequential_seeds)
    backend = keras.backend.backend()
    title = (f"Probes per hour ({args.steps} steps, {args.evaluations} evaluations; in "
             f"brackets, against (a)) on {where}; `python -m benchmarks.throughput "
             f"{' '.join(argv if argv is not None else __import__('sys').argv[1:])}`")
    text = table(rows, title) + "\n\n" + "\n".join(f"- {v}" for v in verdicts(rows)) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"throughput_{backend}.md").write_text(text)
    (out / f"throughput_{backend}.json").write_text(json.dumps(
        {"machine": where, "backend": backend, "steps": args.steps,
         "evaluations": args.evaluations, "candidate": CANDIDATE.to_dict(), "rows": rows,
         "verdicts": verdicts(rows)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fault-injection campaign: many tiny probes, with NaN, exceptions, OOM and SIGKILLs injected.

A supervisor starts `--workers` worker processes, each an ordinary `stabilize()` call
on one shared study (a journal file by default, or `--storage URL`), and SIGKILLs a
worker in the middle of a probe `--kills` times, spread evenly over the campaign
(the k-th once k/(kills+1) of the budget is done), starting a new worker in its
place, until the study's budget of `--trials` finished trials is spent. Every probe
is tiny (an 8-unit MLP, 6 steps, 1 seed). The model factory injects faults by trial
number (seeded, so a trial's fault does not depend on which worker runs it):

- ``exception``: `build_fn` raises (the trial fails with its traceback; the search goes on);
- ``nan``: the model has a layer with an infinite gradient (sqrt(0 * h)): its gradients,
  then weights and loss go NaN (scored diverged);
- ``oom``: every model raises the backend's out-of-memory error for batches above 16, and
  the space offers 8, 16, 32, 64 (each too-large batch size fails once or a few times,
  then is marked infeasible and never sampled again);
- ``kill``: SIGKILL of the worker process running a probe (its trial is found lost,
  failed, and its budget slot runs again).

Every probe appends "start <trial> <pid>" to a log before it builds its model and
every finished trial "end <trial> <state> <pid>" (the progress hook). The counts,
from the storage and the logs:

- started: trial probes begun (log lines), finished: COMPLETE + PRUNED trials, which
  must equal the budget; failed: FAIL trials, by cause;
- lost: trials left RUNNING or WAITING at the end, plus probes begun whose trial is
  missing from the storage: must be 0;
- duplicated: trials whose probe began more than once, or that finished more than
  once: must be 0.

Usage::

    python benchmarks/fault_campaign.py [--trials 200] [--workers 3] [--kills 10]
        [--storage URL] [--seed 0] [--out FILE]

Prints a table and writes JSON (default benchmarks/results/fault_campaign.json).
Exit status 1 when lost or duplicated is not 0, or the budget was not met exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STUDY = "fault-campaign"
FAULTS = {"exception": 0.12, "nan": 0.12}  # per trial; OOM comes from the batch size
OOM_ABOVE = 16
SPACE = {"batch_size": [8, 16, 32, 64], "learning_rate": {"low": 1e-3, "high": 3e-2, "log": True},
         "clipping": ["none", "norm"], "clip_value": [1.0]}


def fault_of(trial: int | None, seed: int) -> str:
    """The fault injected into a trial (by number, so any worker injects the same)."""
    if trial is None:
        return "none"  # the baseline
    r = random.Random(seed * 1_000_003 + trial).random()
    edge = 0.0
    for name, share in FAULTS.items():
        edge += share
        if r < edge:
            return name
    return "none"


# -- worker ---------------------------------------------------------------------------------------
def _oom_layer(limit: int) -> Any:
    import keras
    import tensorflow as tf

    class OOMAbove(keras.layers.Layer):
        """The backend's out-of-memory error (ResourceExhaustedError) for large batches."""

        def __init__(self, limit: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.limit = limit

        def call(self, x: Any) -> Any:
            def check(n: Any) -> Any:
                if int(n) > self.limit:
                    raise MemoryError(f"OOM when allocating tensor with shape[{int(n)},64]")
                return n

            n = tf.py_function(check, [tf.shape(x)[0]], tf.int32)
            n.set_shape(())
            return x + tf.cast(n * 0, x.dtype)

        def compute_output_shape(self, shape: Any) -> Any:
            return shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "limit": self.limit}

    return OOMAbove(limit)


def run_worker(args: argparse.Namespace) -> int:
    import keras
    from sklearn.datasets import load_digits

    from stabilizer import SearchAbortedError, stabilize

    log = open(Path(args.log_dir) / f"worker-{os.getpid()}.log", "a", buffering=1)

    def build(hp: Any) -> Any:
        trial = getattr(hp, "trial", None)
        number = trial.number if trial is not None else None
        log.write(f"start {'baseline' if number is None else number} {os.getpid()}\n")
        fault = fault_of(number, args.seed)
        if fault == "exception":
            raise RuntimeError(f"injected fault in build_fn (trial {number})")
        inputs = keras.Input((64,))
        hidden = keras.layers.Dense(8, activation="relu")(_oom_layer(OOM_ABOVE)(inputs))
        if fault == "nan":  # sqrt(0 * h) has an infinite gradient: NaN weights, NaN loss
            root = keras.layers.Lambda(lambda h: keras.ops.sqrt(keras.ops.abs(h) * 0.0))
            hidden = keras.layers.Add()([hidden, root(hidden)])
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
        model.compile(optimizer=keras.optimizers.SGD(1e-2),
                      loss="sparse_categorical_crossentropy")
        return model

    def progress(record: Any) -> None:
        log.write(f"end {record.number} {record.state} {os.getpid()}\n")

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")[:300]
    y = y.astype("int32")[:300]
    try:
        stabilize(build, (x, y), space=SPACE, budget=args.trials, seeds=1, probe_steps=6,
                  evaluations=2, batch_size=8, prune=False, storage=args.storage,
                  study_name=STUDY, max_consecutive_failures=10_000, progress=progress)
    except SearchAbortedError as exc:
        print(f"worker {os.getpid()}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- supervisor -----------------------------------------------------------------------------------
def _spawn(args: argparse.Namespace, log_dir: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--worker", "--storage", args.storage, "--trials",
               str(args.trials), "--seed", str(args.seed), "--log-dir", str(log_dir)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL,
                            stderr=open(log_dir / "workers.stderr", "ab"))


def _load(storage: str) -> Any:
    import optuna

    from stabilizer.search.optuna import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=STUDY, storage=open_storage(storage))
    except KeyError:
        return None


def supervise(args: argparse.Namespace) -> dict[str, Any]:
    from optuna.trial import TrialState

    rng = random.Random(args.seed)
    log_dir = Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    if args.storage is None:
        args.storage = f"journal://{log_dir / 'study.log'}"
    started_at = time.monotonic()
    workers = [_spawn(args, log_dir) for _ in range(args.workers)]
    spawned, kills, killed_trials = len(workers), 0, []
    done = 0
    while True:
        time.sleep(0.5)
        study = _load(args.storage)
        trials = study.get_trials(deepcopy=False) if study is not None else []
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        alive = [w for w in workers if w.poll() is None]
        if done >= args.trials and not alive:
            break
        if time.monotonic() - started_at > args.timeout:
            for worker in alive:
                worker.kill()
            raise SystemExit(f"campaign timed out after {args.timeout} s with {done} trials")
        if kills < args.kills and done >= (kills + 1) * args.trials / (args.kills + 1):
            pids = {w.pid: w for w in alive}
            now = time.time()
            running = [t for t in trials if t.state == TrialState.RUNNING
                       and t.user_attrs.get("worker", {}).get("pid") in pids
                       and t.datetime_start and now - t.datetime_start.timestamp() > 0.3]
            if running:
                victim = rng.choice(running)
                os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
                kills += 1
                killed_trials.append(victim.number)
        for i, worker in enumerate(workers):
            if worker.poll() not in (None, 0) and done < args.trials:
                workers[i] = _spawn(args, log_dir)  # a killed worker is replaced
                spawned += 1
    seconds = time.monotonic() - started_at
    return count(args, _load(args.storage), log_dir, seconds, kills, killed_trials, spawned,
                 [w.returncode for w in workers])


def count(args: argparse.Namespace, study: Any, log_dir: Path, seconds: float, kills: int,
          killed_trials: list[int], spawned: int, exit_codes: list[int | None]) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    starts: Counter[str] = Counter()
    ends: Counter[int] = Counter()
    for path in log_dir.glob("worker-*.log"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts[0] == "start":
                starts[parts[1]] += 1
            elif parts[0] == "end":
                ends[int(parts[1])] += 1
    baseline_probes = starts.pop("baseline", 0)
    started = {int(n): c for n, c in starts.items()}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    unfinished = [t.number for t in trials if t.state in (TrialState.RUNNING,
                                                         TrialState.WAITING)]
    missing = [n for n in started if n not in by_number]
    causes: Counter[str] = Counter()
    for t in failed:
        attrs = t.user_attrs
        cause = ("surplus" if "surplus" in attrs else "lost (killed)" if "lost" in attrs
                 else "out of memory" if "out_of_memory" in attrs
                 else "interrupted" if "interrupted" in attrs
                 else "exception" if "injected fault" in str(attrs.get("error", ""))
                 else "other")
        causes[cause] += 1
    diverged = sum(1 for t in finished
                   if (t.user_attrs.get("components") or {}).get("diverged"))
    injected = Counter(fault_of(t.number, args.seed) for t in trials
                       if "surplus" not in t.user_attrs)
    duplicated = sorted({n for n, c in started.items() if c > 1}
                        | {n for n, c in ends.items() if c > 1})
    infeasible = sorted(int(k.split(":", 1)[1]) for k in study.user_attrs
                        if k.startswith("infeasible_batch_size:"))
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"trials": args.trials, "workers": args.workers, "kills": args.kills,
                     "seed": args.seed,
                     "storage": "journal file" if args.storage.startswith("journal")
                     else "database", "probe_steps": 6, "seeds": 1,
                     "fault_shares": FAULTS, "oom_above_batch": OOM_ABOVE},
        "seconds": round(seconds, 1),
        "probes_started": sum(started.values()),
        "baseline_probes": baseline_probes,
        "trials_in_storage": len(trials),
        "finished": len(finished),
        "finished_diverged": diverged,
        "failed": len(failed),
        "failed_by_cause": dict(sorted(causes.items())),
        "lost": len(unfinished) + len(missing),
        "duplicated": len(duplicated),
        "budget_met_exactly": len(finished) == args.trials,
        "kills_sent": kills,
        "killed_trials": killed_trials,
        "worker_processes_started": spawned,
        "infeasible_batch_sizes": infeasible,
        "faults_drawn_per_trial": dict(sorted(injected.items())),
        "worker_exit_codes_at_end": exit_codes,
        "platform": f"{platform.system()} {platform.machine()}, Python "
                    f"{platform.python_version()}, {os.cpu_count()} CPUs",
    }


def print_table(result: dict[str, Any]) -> None:
    rows = [("probes started", result["probes_started"]),
            ("  + baseline probes", result["baseline_probes"]),
            ("finished (COMPLETE+PRUNED)", result["finished"]),
            ("  of which diverged (NaN)", result["finished_diverged"]),
            ("failed", result["failed"])]
    rows += [(f"  {cause}", n) for cause, n in result["failed_by_cause"].items()]
    rows += [("lost (must be 0)", result["lost"]),
             ("duplicated (must be 0)", result["duplicated"]),
             ("budget met exactly", result["budget_met_exactly"]),
             ("SIGKILLs sent", result["kills_sent"]),
             ("worker processes started", result["worker_processes_started"]),
             ("infeasible batch sizes", result["infeasible_batch_sizes"]),
             ("wall time (s)", result["seconds"])]
    width = max(len(name) for name, _ in rows)
    print(f"| {'fault campaign':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="budget (default %(default)s)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10,
                        help="SIGKILLs of workers, spread over the campaign")
    parser.add_argument("--storage", help="Optuna storage URL (default: a journal file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "fault_campaign.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)
    result = supervise(args)
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["budget_met_exactly"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

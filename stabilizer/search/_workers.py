"""Several worker processes on one study: ``stabilize(..., workers=N)`` and
``stabilizer search config.yaml --workers N``.

Every worker is an ordinary search (`OptunaDriver.run`) on the same storage and
study name: it runs one trial at a time until the study's budget is spent, and
the storage decides who runs what, so each trial runs exactly once (see
`stabilizer.search.optuna`). Workers need not be started by this module:
``stabilizer search`` or `stabilize()` started on several machines with one
PostgreSQL URL and study name cooperate the same way (docs/workers.md).

Here the calling process probes the baseline (the user's own configuration)
once, starts N worker processes (multiprocessing "spawn": nothing is forked
from a process that has TensorFlow loaded), reports each trial as it finishes
to the `progress` hook, and returns when they are done. Ctrl-C is passed on to
the workers; each marks its running trial ``interrupted`` and stops.

Storage: the default SQLite file suits one process. With N > 1 and no
``storage`` given, the study goes to Optuna's journal file
``<out_dir>/<study_name>.log`` instead (`storage_for_workers`); a later
single-process run of the same study finds that file and resumes from it. A
study already begun in the default SQLite file is not moved: N > 1 then raises
`ConfigError` asking for ``--workers 1`` or an explicit storage. An explicit
``storage`` is used as given.

What each worker needs to rebuild the search: a `WorkerSource`. `ObjectSource`
sends the objects themselves (pickled, so `build_fn` must be a module-level
function and the data picklable, e.g. numpy arrays; as with any
multiprocessing program, a script that calls ``stabilize(..., workers=N)``
must guard its top level with ``if __name__ == "__main__":``). The CLI uses
`RunConfigSource`: each worker loads the same config file itself.
"""

from __future__ import annotations

import abc
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stabilizer.config import RunConfig, SearchConfig, load_run
from stabilizer.errors import ConfigError, SearchAbortedError, StabilizerError, mask_secrets
from stabilizer.result import TrialRecord
from stabilizer.search._policy import raise_if_interrupted
from stabilizer.search.optuna import open_storage

__all__ = ["WorkerSource", "ObjectSource", "RunConfigSource", "run_workers",
           "storage_for_workers"]

#: Seconds workers get to stop after Ctrl-C before they are killed.
INTERRUPT_GRACE_S = 30.0


def storage_for_workers(settings: SearchConfig, workers: int) -> SearchConfig:
    """`settings` with the storage that `workers` processes share (see the module docstring)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}: expected an integer >= 1")
    if workers > 1 and settings.driver != "optuna":
        raise ConfigError(f"workers={workers} with driver={settings.driver!r}: expected "
                          "driver='optuna' (only Optuna studies are shared between processes)")
    if settings.storage:
        if workers > 1 and ":memory:" in settings.storage:
            raise ConfigError(f"storage={mask_secrets(settings.storage)!r} with "
                              f"workers={workers}: an in-memory database cannot be shared; "
                              "expected a file or a database URL")
        return settings
    folder = Path(settings.out_dir)
    journal = (folder / f"{settings.study}.log").resolve()
    sqlite = folder / f"{settings.study}.db"
    if workers == 1:
        if journal.is_file() and not sqlite.is_file():  # a study begun with several workers
            return dataclasses.replace(settings, storage=f"journal://{journal}")
        return settings
    if sqlite.is_file():
        import optuna

        names = optuna.study.get_all_study_names(open_storage(f"sqlite:///{sqlite}"))
        if settings.study in names:
            raise ConfigError(
                f"workers={workers}: study {settings.study!r} already lives in the SQLite "
                f"file {str(sqlite)!r}, which suits one process; expected workers=1 (--workers "
                "1) to resume it there, or a storage for a new study: a journal file "
                "(journal:///path/study.log) or a database URL")
    return dataclasses.replace(settings, storage=f"journal://{journal}")


class WorkerSource(abc.ABC):
    """What a worker process loads to rebuild the search: (build_fn, data, space)."""

    @abc.abstractmethod
    def load(self) -> tuple[Callable[..., Any], Any, Any]:
        """Return `build_fn`, the data and the search space, in the worker process."""


@dataclasses.dataclass
class ObjectSource(WorkerSource):
    """The objects themselves, pickled to each worker."""

    build_fn: Callable[..., Any]
    data: Any
    space: Any

    def __post_init__(self) -> None:
        for name in ("build_fn", "data", "space"):
            try:
                pickle.dumps(getattr(self, name))
            except Exception as exc:
                raise ConfigError(
                    f"workers > 1: {name} cannot be sent to a worker process "
                    f"({type(exc).__name__}: {exc}); expected a module-level build_fn and "
                    "picklable data such as numpy arrays, or use `stabilizer search "
                    "--workers N`, where each worker loads the config file itself") from None

    def load(self) -> tuple[Callable[..., Any], Any, Any]:
        return self.build_fn, self.data, self.space


@dataclasses.dataclass
class RunConfigSource(WorkerSource):
    """A `RunConfig` (as a dict) and the folder its relative paths start from."""

    run: dict[str, Any]
    base_dir: str

    def load(self) -> tuple[Callable[..., Any], Any, Any]:
        # the search checks them again before its first probe (`prepare_search`)
        loaded = load_run(RunConfig.from_dict(self.run), Path(self.base_dir))
        return loaded.build_fn, loaded.data, loaded.space


#: What a worker runs: ``body(build_fn, data, space, settings, diagnose_after=False,
#: climb_ladder=False)``, an ordinary single-process search that runs trials only
#: (`stabilizer.search.run_search`), handed in by the caller.
WorkerBody = Callable[..., Any]


def _worker_main(source: WorkerSource, settings: dict[str, Any], error_file: str,
                 body: WorkerBody) -> None:
    """One worker process: `body` on what `source` loads."""
    import optuna

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even if inherited ignored
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    code = 0
    try:
        from stabilizer.space import load_space

        build_fn, data, space = source.load()
        # The calling process diagnoses the chosen configuration once all are done.
        body(build_fn, data, load_space(space), SearchConfig.from_dict(settings),
             diagnose_after=False, climb_ladder=False)
    except KeyboardInterrupt:
        code = 130
    except StabilizerError as exc:
        Path(error_file).write_text(mask_secrets(f"{type(exc).__name__}: {exc}"))
        code = 1
    except Exception:
        Path(error_file).write_text(mask_secrets(traceback.format_exc()))
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit work (TensorFlow's can hang a spawned child)


def run_workers(workers: int, source: WorkerSource, settings: SearchConfig, *,
                body: WorkerBody, records: Callable[[], list[TrialRecord]],
                progress: Callable[[TrialRecord], None] | None = None,
                poll_seconds: float = 1.0) -> None:
    """Run `workers` processes on the study of `settings` until its budget is spent.

    Each process runs `body` (a module-level function, sent by reference) on what
    `source` loads. `records` reads the study's trials (`OptunaDriver.records`); `progress` is
    called once with each trial that finishes meanwhile. Raises
    `SearchAbortedError` when the workers stopped before the budget was spent
    (their errors in the message), and `KeyboardInterrupt` after passing a
    Ctrl-C on to them.
    """
    context = multiprocessing.get_context("spawn")
    seen = {r.number for r in records() if r.state != "RUNNING"}
    with tempfile.TemporaryDirectory(prefix="stabilizer-workers-") as folder:
        errors = [str(Path(folder) / f"worker-{i}.err") for i in range(workers)]
        processes = [context.Process(target=_worker_main, name=f"stabilizer-worker-{i}",
                                     args=(source, settings.to_dict(), errors[i], body))
                     for i in range(workers)]
        for process in processes:
            process.start()
        try:
            while alive := [p.sentinel for p in processes if p.is_alive()]:
                multiprocessing.connection.wait(alive, timeout=poll_seconds)
                raise_if_interrupted()
                _report_new(records(), seen, progress)
        except KeyboardInterrupt:
            _stop(processes)
            raise
        _report_new(records(), seen, progress)
        failures = [(i, p.exitcode, Path(errors[i]).read_text() if Path(errors[i]).is_file()
                     else "") for i, p in enumerate(processes) if p.exitcode != 0]
    done = sum(r.state in ("COMPLETE", "PRUNED") for r in records())
    if done < settings.trials:
        lines = [f"worker {i} exited with status {code}" + (f": {text}" if text else "")
                 for i, code, text in failures]
        raise SearchAbortedError(f"the {workers} workers stopped after {done} of "
                                 f"{settings.trials} trials:\n" + "\n".join(lines))


def _report_new(current: list[TrialRecord], seen: set[int],
                progress: Callable[[TrialRecord], None] | None) -> None:
    for record in current:
        if record.state != "RUNNING" and record.number not in seen:
            seen.add(record.number)
            if progress is not None:
                progress(record)


def _stop(processes: list[Any]) -> None:
    """Pass Ctrl-C on to the workers; kill those still running after the grace period."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + INTERRUPT_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()

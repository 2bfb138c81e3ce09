"""`stabilize()`: the library call (the search itself is `stabilizer.search.run_search`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stabilizer.config import SearchConfig
from stabilizer.errors import ConfigError
from stabilizer.progress import ProgressBar
from stabilizer.result import StabilityResult, TrialRecord
from stabilizer.search import (
    ObjectSource,
    WorkerSource,
    prepare_search,
    run_search,
    storage_for_workers,
)
from stabilizer.space import SearchSpace, load_space

__all__ = ["stabilize", "make_settings"]


def make_settings(config: SearchConfig | None = None, **overrides: Any) -> SearchConfig:
    """`config` (or the defaults) with keyword overrides; unknown names are errors."""
    return SearchConfig.with_overrides(config, overrides, "stabilize")


def stabilize(build_fn: Callable[..., Any], data: Any, *,
              space: str | SearchSpace | dict[str, Any] | None = None,
              budget: int | None = None, seeds: int | None = None,
              storage: str | None = None, study_name: str | None = None,
              config: SearchConfig | None = None,
              progress: Callable[[TrialRecord], None] | None = None,
              workers: int = 1, worker_source: WorkerSource | None = None,
              **options: Any) -> StabilityResult:
    """Search for the most stable configuration of `build_fn` that still learns.

    Args:
        build_fn: `build_fn()` or KerasTuner-style `build_fn(hp)` returning a Keras
            model (compiled, or pass `loss=`), or a `keras_tuner.HyperModel`.
        data: `(x, y)`, `(x, y, x_val, y_val)`, a `keras.utils.PyDataset` or a
            `tf.data.Dataset` (see `stabilizer.data`).
        space: a bundled space name ("default", "quick", ...), a YAML path, a
            mapping or a `SearchSpace`.
        budget: number of candidate configurations to probe (`SearchConfig.trials`).
        seeds: seeds per candidate.
        storage: Optuna storage URL; default an SQLite file in `out_dir`.
        study_name: the study. Without one the study is named from the search's
            fingerprint (model, data, space, probe settings), so running the same
            search again resumes it and any other search starts a new study. A
            named study is resumed only when its fingerprint matches; otherwise a
            `ConfigError` says what differs (``resume="force"`` resumes it anyway).
        config: a full `SearchConfig`; keyword arguments override its fields.
        progress: called with each trial's `TrialRecord` as it finishes (the CLI's
            progress line, `stabilizer.cli.ProgressLine`); its ``phase(text)`` method,
            where it has one, with what the search does now. Default: a progress bar
            (`stabilizer.progress.ProgressBar`, tqdm) unless ``verbose=0``.
        workers: worker processes sharing the study (`stabilizer.search.run_workers`); with
            more than one and no `storage`, the study goes to a journal file
            ``<out_dir>/<study_name>.log``.
        worker_source: how each worker rebuilds `build_fn` and the data (default:
            the objects, pickled; `stabilizer search` sends its config file).
        **options: any other `SearchConfig` field (`probe_steps`, `driver`, ...).

    Returns:
        A `StabilityResult` with the best configuration, the baseline and every trial.

    Raises:
        DataError: data that is invalid or does not fit the model, before any probe.
        ConfigError: a bad setting, or a named study made for another search.
        SearchInterrupted: on Ctrl-C (a `KeyboardInterrupt`); its `result` holds the
            `StabilityResult` of the trials that finished (None before the baseline).
    """
    space_obj = None
    if isinstance(space, SearchSpace):
        space_obj, space = space, None
    if budget is not None:
        if "trials" in options:
            raise ConfigError("stabilize() got both budget= and trials=; expected one of them "
                              "(budget is the number of trials)")
        options["trials"] = budget
    settings = make_settings(config, space=space, seeds=seeds, storage=storage,
                             study_name=study_name, **options)
    space_obj = space_obj or load_space(settings.space)
    settings, prepared = prepare_search(build_fn, data, space_obj, settings)
    settings = storage_for_workers(settings, workers)
    source = (worker_source or ObjectSource(build_fn, data, space_obj)) if workers > 1 else None
    bar = ProgressBar(settings.trials) if progress is None and settings.verbose >= 1 else None
    try:
        return run_search(build_fn, data, space_obj, settings, progress=progress or bar,
                          workers=workers, source=source, prepared=prepared)
    finally:
        if bar is not None:
            bar.close()



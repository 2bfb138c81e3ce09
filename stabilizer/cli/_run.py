"""What a command does before it searches: the run config read (with the command-line
flags applied), and everything it names loaded and checked, each error a `ConfigError`
naming the config's field."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stabilizer.config import RunConfig, SearchConfig, StabilityConfig, load_run, one_line
from stabilizer.errors import ConfigError

__all__ = ["PreparedRun", "check_model_factory", "load_config", "prepare_run"]


def check_model_factory(spec: str, build_fn: Callable[..., Any], settings: SearchConfig) -> None:
    """Call the factory once: it must return a keras.Model the search can compile."""
    import keras

    from stabilizer.apply import CompileSpec, replay_hyperparameters, resolve_build_fn
    from stabilizer.errors import ModelError

    function, uses_hp = resolve_build_fn(build_fn)
    try:
        model = function(replay_hyperparameters({})) if uses_hp else function()
    except Exception as exc:
        raise ConfigError(f"model={spec!r}: calling it raised {type(exc).__name__}: "
                          f"{one_line(str(exc))}") from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"model={spec!r}: returned {type(model).__name__}; "
                          "expected a keras.Model")
    try:
        CompileSpec.from_model(model, settings)
    except ModelError as exc:
        raise ConfigError(f"model={spec!r}: {one_line(str(exc))}") from None


@dataclasses.dataclass
class PreparedRun:
    """Everything a `RunConfig` names, loaded and checked."""

    run: RunConfig
    build_fn: Callable[..., Any]
    data: Any
    space: Any  # SearchSpace

    @property
    def settings(self) -> SearchConfig:
        return self.run.search


def prepare_run(run: RunConfig, base_dir: Path) -> PreparedRun:
    """Load (`stabilizer.config.load_run`) and check the model factory, the data and the
    space, each error a `ConfigError` naming the config's field."""
    from stabilizer.data import prepare_data
    from stabilizer.probe import batch_size_of
    from stabilizer.space import load_space

    settings = run.search
    loaded = load_run(run, base_dir)
    try:
        space_obj = load_space(loaded.space)
    except ConfigError as exc:
        raise ConfigError(f"search.space: {one_line(str(exc))}") from None
    check_model_factory(run.model, loaded.build_fn, settings)
    try:
        probe_data = prepare_data(loaded.data, validation_split=settings.validation_split,
                                  seed=settings.seed)
    except ConfigError as exc:
        raise ConfigError(f"data={run.data!r}: {one_line(str(exc))}") from None
    try:
        batch_size_of(StabilityConfig(), settings, probe_data)
    except ConfigError as exc:
        raise ConfigError(f"search.{one_line(str(exc))}") from None
    return PreparedRun(run, loaded.build_fn, loaded.data, space_obj)


def verbosity(args: argparse.Namespace) -> int | None:
    """`SearchConfig.verbose` from ``-q`` (0) and ``-v`` (2); None keeps the file's."""
    if getattr(args, "quiet", False):
        return 0
    if getattr(args, "verbose", False):
        return 2
    return None


def load_config(path: str, args: argparse.Namespace | None = None) -> tuple[RunConfig, Path]:
    """The `RunConfig` of `path`, with the command-line flags applied."""
    config_path = Path(path)
    run = RunConfig.from_yaml(config_path)
    if args is not None:
        space = getattr(args, "space", None)
        if space and space.endswith((".yaml", ".yml")):
            space = str(Path(space).resolve())  # a flag is relative to the working directory
        try:
            run = run.with_search(trials=getattr(args, "trials", None),
                                  seeds=getattr(args, "seeds", None),
                                  probe_steps=getattr(args, "probe_steps", None),
                                  time_limit=getattr(args, "time_limit", None),
                                  storage=getattr(args, "storage", None),
                                  study_name=getattr(args, "study_name", None),
                                  resume=getattr(args, "resume", None),
                                  space=space, out_dir=getattr(args, "out", None),
                                  verbose=verbosity(args))
            # a length on the command line replaces the file's, in steps or in epochs
            for given, other in (("train_steps", "epochs"), ("epochs", "train_steps")):
                if getattr(args, given, None) is not None:
                    run = dataclasses.replace(run, search=SearchConfig.from_dict(
                        {**run.search.to_dict(), given: getattr(args, given), other: None}))
        except ConfigError as exc:
            raise ConfigError(f"command line: {one_line(str(exc))}") from None
    return run, config_path.resolve().parent

"""The command line: ``stabilizer search | diagnose | report | show-space``.

``stabilizer search config.yaml`` reads a `RunConfig` (model factory, data, and a
nested `SearchConfig`), checks everything it names before anything runs (the file,
its keys and types, the factory's module and that it returns a keras.Model, the
data, the space, the storage), then runs `stabilize()` with a progress line and
writes a report folder ``<out_dir>/<study_name>/`` (see `stabilizer.report`).

Exit status: 0 done; 2 a usage or configuration error (one line on stderr, nothing
run, no study created); 1 the search stopped (e.g. too many failed trials);
130 interrupted (the report of what finished is written; re-run the same command to resume
the study).

Relative paths inside the YAML file (``model``, ``data``, ``search.space``) are
read relative to the file's folder; paths given as flags and ``out_dir`` are
relative to the working directory. Loading ``module:function`` (or
``file.py:function``) is the only code a config can run; YAML is read with
``yaml.safe_load``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from stabilizer.config import (
    RunConfig,
    SearchConfig,
    StabilityConfig,
    load_data,
    load_run,
    load_target,
    one_line,
)
from stabilizer.errors import ConfigError, SearchInterrupted, StabilizerError

__all__ = ["main", "build_parser", "load_target", "load_data", "load_result", "prepare_run",
           "PreparedRun"]

def check_model_factory(spec: str, build_fn: Callable[..., Any], settings: SearchConfig) -> None:
    """Call the factory once: it must return a keras.Model the search can compile."""
    import keras

    from stabilizer.errors import ModelError
    from stabilizer.model import CompileSpec, replay_hyperparameters, resolve_build_fn

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


def _load_config(path: str, args: argparse.Namespace | None = None) -> tuple[RunConfig, Path]:
    """The `RunConfig` of `path`, with the command-line flags applied."""
    config_path = Path(path)
    run = RunConfig.from_yaml(config_path)
    if args is not None:
        space = getattr(args, "space", None)
        if space and space.endswith((".yaml", ".yml")):
            space = str(Path(space).resolve())  # a flag is relative to the working directory
        try:
            run = run.with_search(trials=getattr(args, "trials", None),
                                  storage=getattr(args, "storage", None),
                                  study_name=getattr(args, "study_name", None),
                                  resume=getattr(args, "resume", None),
                                  space=space, out_dir=getattr(args, "out", None))
        except ConfigError as exc:
            raise ConfigError(f"command line: {one_line(str(exc))}") from None
    return run, config_path.resolve().parent


# -- rebuilding a result from storage -------------------------------------------------------------
def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        return Path(url[len(prefix):].split("?", 1)[0])
    return None


def load_result(study_name: str, storage: str) -> Any:
    """The `StabilityResult` of a finished or running study, read from storage alone.

    The baseline comes from the study's ``baseline`` attribute, the trials from
    `records_from_study`, the settings from the ``run_config`` attribute the CLI
    stores (defaults when the study was made by the Python API). `build_fn` is
    not known: set ``result.build_fn`` before calling `build_model()` (and
    ``result.targets``, the training labels, when the best configuration sets
    ``output_bias: chance``).
    """
    import optuna

    from stabilizer.errors import mask_secrets
    from stabilizer.result import Candidate, StabilityResult
    from stabilizer.scoring import ScoreComponents
    from stabilizer.search._choice import choose_best, restore_nan
    from stabilizer.search.optuna import journal_path, open_storage, records_from_study

    label = mask_secrets(storage)
    for kind, path in (("database", _sqlite_path(storage)), ("journal", journal_path(storage))):
        if path is not None and not path.is_file():  # opening would create an empty one
            raise ConfigError(f"storage={label!r}: {kind} file {str(path)!r} not found; "
                              "expected the storage of an existing study (--storage URL)")
    try:  # an RDB URL or a journal file
        rdb = open_storage(storage)
    except ConfigError as exc:
        raise ConfigError(one_line(str(exc))) from None
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        names = optuna.study.get_all_study_names(storage=rdb)
        raise ConfigError(f"study {study_name!r} not found in {label}; it holds "
                          f"{', '.join(map(repr, names)) or 'no studies'}") from None
    attrs = study.user_attrs
    stored = attrs.get("baseline")
    if stored is None:
        raise StabilizerError(f"study {study_name!r} has no baseline yet: it is still probing "
                              "the user's own configuration; try again in a moment")
    run_config = attrs.get("run_config") or {}
    settings = SearchConfig.from_dict(run_config.get("search") or {"study_name": study_name})
    baseline = Candidate(StabilityConfig(),
                         ScoreComponents.from_dict(restore_nan(stored["components"])),
                         stored["curves"], stored.get("user_params", {}))
    records = records_from_study(study)
    space = attrs.get("space_name") or (settings.space if isinstance(settings.space, str)
                                        else "custom")
    choice = choose_best(records, baseline)
    result = StabilityResult(best=choice.best, baseline=baseline, choice_note=choice.note,
                             trials=records, settings=settings, space_name=space,
                             study_name=study_name, storage=label,
                             space_notes=list(attrs.get("space_notes") or []))
    if stored.get("diagnosis"):
        from stabilizer.diagnosis import Diagnosis

        result.diagnosis = Diagnosis.from_dict(stored["diagnosis"])
        if isinstance(settings.space, str):
            from stabilizer.space import load_space

            try:
                result.focus_notes = result.diagnosis.focus_notes(load_space(settings.space))
            except ConfigError:
                pass  # a space file that moved: the notes are only a summary
        after = attrs.get(f"diagnosis_after_{result.best.trial_number}")
        if not result.improved:
            result.after = result.diagnosis
        elif after:
            result.after = Diagnosis.from_dict(after)
    return result


# -- subcommands ----------------------------------------------------------------------------------
def _print_result(result: Any, folder: Path, fmt: str, quiet: bool) -> None:
    from stabilizer.report import summary_dict

    if quiet:
        print(folder / "report.html")
    elif fmt == "json":
        print(json.dumps({**summary_dict(result), "report": str(folder)}, indent=2,
                         default=str))
    else:
        print(result.summary())
        print(f"report: {folder / 'report.html'}")


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) a search and write its report folder."""
    from stabilizer.errors import mask_secrets
    from stabilizer.progress import ProgressLine
    from stabilizer.report import write_report
    from stabilizer.search import prepare_search, run_search
    from stabilizer.search._workers import RunConfigSource, storage_for_workers

    run, base_dir = _load_config(args.config, args)
    prepared = prepare_run(run, base_dir)
    # the data checked against the model, the study named and its fingerprint checked
    # before anything is written to it
    settings, search = prepare_search(prepared.build_fn, prepared.data, prepared.space,
                                      prepared.settings)
    settings = storage_for_workers(settings, args.workers)
    run = run.with_search(study_name=settings.study)
    existing: list[Any] = []
    baseline_stored = False
    if settings.driver == "optuna":
        from stabilizer.search.optuna import OptunaDriver, records_from_study

        driver = OptunaDriver(settings, prepared.space)  # opens (creates) the study
        driver.check_fingerprint(search.fingerprint, force=settings.resume == "force")
        study = driver._study()
        study.set_user_attr("run_config", run.to_dict())
        study.set_user_attr("space_name", prepared.space.name)
        existing = records_from_study(study)
        baseline_stored = "baseline" in study.user_attrs
    progress = ProgressLine(settings.trials, quiet=args.quiet, existing=existing)
    progress.note(f"study {settings.study!r} ({mask_secrets(settings.resolved_storage())}): "
                  f"{progress.done} of {settings.trials} trials done")
    if not baseline_stored:
        progress.note("diagnosing your own configuration (the baseline) ..." if settings.diagnose
                      else "probing your own configuration (the baseline) ...")
    progress.show()
    folder = Path(settings.out_dir) / settings.study
    try:
        source = RunConfigSource(run.to_dict(), str(base_dir)) if args.workers > 1 else None
        result = run_search(prepared.build_fn, prepared.data, prepared.space, settings,
                            progress=progress, workers=args.workers, source=source,
                            prepared=search)
    except SearchInterrupted as exc:
        progress.close()
        if exc.result is not None:  # what finished is reported before exiting with 130
            write_report(exc.result, folder)
            print(f"partial report: {folder / 'report.html'}", file=sys.stderr)
        raise
    finally:
        progress.close()
    folder = write_report(result, folder)
    _print_result(result, folder, args.format, args.quiet)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Diagnose the user's own configuration (`stabilizer.diagnosis.diagnose`); no study."""
    from stabilizer.diagnosis import diagnose

    run, base_dir = _load_config(args.config)
    prepared = prepare_run(run, base_dir)
    settings = prepared.settings
    if not args.quiet:
        print(f"diagnosing your own configuration: {settings.seeds} seed(s) x "
              f"{settings.probe_steps} steps ...", file=sys.stderr, flush=True)
    diagnosis = diagnose(prepared.build_fn, prepared.data, config=settings,
                         seeds=settings.seeds)
    if args.format == "json":
        print(json.dumps({"model": run.model, "data": run.data, **diagnosis.to_dict()},
                         indent=2, default=str))
    else:
        print(diagnosis.to_text())
        if not diagnosis.healthy:
            print(f"next: stabilizer search {args.config}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild the report folder of a finished or running study from its storage."""
    from stabilizer.report import write_report

    storage = args.storage or f"sqlite:///{Path(args.out) / f'{args.study}.db'}"
    result = load_result(args.study, storage)
    folder = write_report(result, Path(args.out) / args.study)
    _print_result(result, folder, args.format, args.quiet)
    return 0


def cmd_show_space(args: argparse.Namespace) -> int:
    """Print a search space (bundled name or YAML file), or list the bundled ones."""
    from stabilizer.space import bundled_spaces, load_space

    if args.name is None:
        for name in bundled_spaces():
            print(f"{name:<16} {load_space(name).description}")
        return 0
    space = load_space(args.name)
    if args.format == "json":
        print(json.dumps({"name": space.name, "description": space.description,
                          "searched": space.searched(), "dimensions": space.to_dict()},
                         indent=2))
        return 0
    print(f"# space {space.name!r}: {space.description}")
    print(f"# searched: {', '.join(space.searched()) or 'nothing (all fixed)'}")
    print(yaml.safe_dump(space.to_dict(), sort_keys=False), end="")
    return 0


# -- parser and entry point -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from stabilizer import __version__

    parser = argparse.ArgumentParser(
        prog="stabilizer", description="Make Keras training stable: probe, score, search.")
    parser.add_argument("--version", action="version", version=f"stabilizer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = commands.add_parser(
        "search", help="search for the most stable configuration and write a report",
        description="Run (or resume) the search a config file describes; write "
                    "<out_dir>/<study_name>/ with best.yaml, trials.csv, report.html, "
                    "summary.json.")
    search.add_argument("config", help="YAML file: model, data and search settings")
    search.add_argument("--trials", type=int, help="override search.trials (the budget)")
    search.add_argument("--storage", help="override search.storage (an Optuna storage URL)")
    search.add_argument("--study-name", help="override search.study_name (default: named "
                                             "from the search's fingerprint)")
    search.add_argument("--resume", choices=("auto", "force"),
                        help="override search.resume: 'force' resumes a named study made for "
                             "another model, data, space or probe settings")
    search.add_argument("--space", help="override search.space (a bundled name or a file)")
    search.add_argument("--out", help="override search.out_dir (the report folder's parent)")
    search.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes sharing the study (default: 1); with N > 1 and "
                             "no --storage the study is kept in <out_dir>/<study_name>.log")
    search.set_defaults(handler=cmd_search)

    diagnose = commands.add_parser(
        "diagnose", help="probe your current setup and say how stable it is",
        description="Probe the configuration the model factory returns, as it is, and "
                    "print its stability verdict and score components.")
    diagnose.add_argument("config", help="YAML file: model, data and search settings")
    diagnose.set_defaults(handler=cmd_diagnose)

    report = commands.add_parser(
        "report", help="rebuild the report of a finished or running study",
        description="Rebuild <out>/<STUDY>/ from the study's storage alone.")
    report.add_argument("study", metavar="STUDY", help="the study name")
    report.add_argument("--storage", help="Optuna storage URL (default: the SQLite file "
                                          "<out>/<STUDY>.db that `search` makes)")
    report.add_argument("--out", default=SearchConfig().out_dir,
                        help="folder of the report (default: %(default)s)")
    report.set_defaults(handler=cmd_report)

    for sub in (search, diagnose, report):
        sub.add_argument("-q", "--quiet", action="store_true",
                         help="no progress or summary (CI); print only the report path")
        sub.add_argument("--format", choices=("text", "json"), default="text",
                         help="output format (default: %(default)s)")

    show = commands.add_parser("show-space", help="print a search space, or list bundled ones",
                               description="Print a bundled search space or a space file.")
    show.add_argument("name", nargs="?", metavar="NAME",
                      help="bundled space name or YAML file; omit to list the bundled spaces")
    show.add_argument("--format", choices=("yaml", "json"), default="yaml",
                      help="output format (default: %(default)s)")
    show.set_defaults(handler=cmd_show_space)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stabilizer`` console script; returns the exit status."""
    import optuna

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the error
        return int(exc.code) if isinstance(exc.code, int) else 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    where = f"stabilizer {args.command}"
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"{where}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except StabilizerError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{where}: interrupted; the study is kept: re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The command line: ``stabilizer search | diagnose | report | dashboard | show-space``.

``stabilizer search config.yaml`` reads a `RunConfig` (model factory, data, and a
nested `SearchConfig`), checks everything it names before anything runs (the file,
its keys and types, the factory's module and that it returns a keras.Model, the
data, the space, the storage), then runs `stabilize()` with a progress line and
writes a report folder ``<out_dir>/<study_name>/`` (see `stabilizer.report`).

Exit status: 0 done; 2 a usage or configuration error (one line on stderr, nothing
run, no study created); 1 the search stopped (e.g. too many failed trials);
130 interrupted (the report of what finished is written; re-run the same command to resume
the study); 3 ``stabilizer diagnose --fail-on SEVERITY`` found a finding at that severity or
above (for a CI job to gate on).

Relative paths inside the YAML file (``model``, ``data``, ``search.space``) are
read relative to the file's folder; paths given as flags and ``out_dir`` are
relative to the working directory. Loading ``module:function`` (or
``file.py:function``) is the only code a config can run; YAML is read with
``yaml.safe_load``.
"""

from __future__ import annotations

import abc
import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from stabilizer.cli._run import load_config, prepare_run
from stabilizer.config import SearchConfig, one_line
from stabilizer.errors import ConfigError, SearchInterrupted, StabilizerError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


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


def _output_options(parser: argparse.ArgumentParser, quiet: str) -> None:
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help=quiet)
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="also one line per trial and per ladder probe, and the "
                               "frameworks' own logs (search.verbose: 2)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="output format (default: %(default)s)")


class Command(abc.ABC):
    """One subcommand: its name, help, arguments and what it runs (`main` dispatches)."""

    name: str
    help: str
    description: str

    @abc.abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the subcommand's arguments."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Run it; return the exit status (errors raise, and `main` reports them)."""


class SearchCommand(Command):
    name = "search"
    help = "search for the most stable configuration and write a report"
    description = ("Run (or resume) the search a config file describes; write "
                   "<out_dir>/<study_name>/ with best.yaml, trials.csv, report.html, "
                   "summary.json.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", help="YAML file: model, data and search settings")
        parser.add_argument("--trials", type=int, help="override search.trials (the budget)")
        parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                            help="override search.time_limit: no new trial starts after this "
                            "many seconds of the search")
        _probe_options(parser)
        parser.add_argument("--dry-run", action="store_true",
                            help="check the config, build the model once, print the plan "
                                 "(trials, seeds, probe steps, rungs, the budget in steps, the "
                                 "storage) and stop: nothing is created")
        length = parser.add_mutually_exclusive_group()
        length.add_argument("--train-steps", type=int, metavar="N",
                            help="override search.train_steps: how long you will train, in "
                                 "optimizer steps (the chosen schedule spans it; the probes "
                                 "grow towards it)")
        length.add_argument("--epochs", type=int, metavar="N",
                            help="override search.epochs: how long you will train, in epochs")
        parser.add_argument("--storage", help="override search.storage (an Optuna storage URL)")
        parser.add_argument("--study-name", help="override search.study_name (default: named "
                                                 "from the search's fingerprint)")
        parser.add_argument("--resume", choices=("auto", "force"),
                            help="override search.resume: 'force' resumes a named study made "
                                 "for another model, data, space or probe settings")
        parser.add_argument("--space", help="override search.space (a bundled name or a file)")
        parser.add_argument("--out", help="override search.out_dir (the report folder's parent)")
        parser.add_argument("--workers", type=int, default=1, metavar="N",
                            help="worker processes sharing the study (default: 1); with N > 1 "
                                 "and no --storage the study is kept in "
                                 "<out_dir>/<study_name>.log")
        _output_options(parser, "no progress or summary (CI): print only the report path "
                                "(search.verbose: 0)")

    def run(self, args: argparse.Namespace) -> int:
        """Run (or resume) a search and write its report folder."""
        run, base_dir = load_config(args.config, args)  # a bad file answers before imports
        _quiet_optuna(run.search.verbose)
        from stabilizer.cli._progress import ProgressLine
        from stabilizer.errors import mask_secrets
        from stabilizer.report import write_report
        from stabilizer.search import (
            RunConfigSource,
            prepare_search,
            run_search,
            storage_for_workers,
        )

        prepared = prepare_run(run, base_dir)
        # the data checked against the model, the study named and its fingerprint checked
        # before anything is written to it
        settings, search = prepare_search(prepared.build_fn, prepared.data, prepared.space,
                                          prepared.settings)
        settings = storage_for_workers(settings, args.workers)
        if args.dry_run:
            print("\n".join(plan_lines(settings, search.horizon, args.workers)))
            return 0
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
        progress = ProgressLine(settings.trials, quiet=settings.verbose == 0, existing=existing)
        progress.note(f"study {settings.study!r} ({mask_secrets(settings.resolved_storage())}): "
                      f"{progress.done} of {settings.trials} trials done")
        if not baseline_stored:
            progress.note("diagnosing your own configuration (the baseline) ..."
                          if settings.diagnose
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


class DiagnoseCommand(Command):
    name = "diagnose"
    help = "probe your current setup and say how stable it is"
    description = ("Probe the configuration the model factory returns, as it is, and print its "
                   "stability verdict and score components (the score a search gives it), "
                   "then the findings with their evidence and the per-evaluation records.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", help="YAML file: model, data and search settings")
        _probe_options(parser)
        parser.add_argument("--fail-on", choices=("info", "warning", "error"), metavar="SEVERITY",
                            help="exit with status 3 when any finding is at SEVERITY (info, "
                                 "warning or error) or above, for a CI job to gate on")
        _output_options(parser, "print only the verdict line (search.verbose: 0)")

    def run(self, args: argparse.Namespace) -> int:
        """Diagnose the user's own configuration (`stabilizer.diagnosis.diagnose`); no study."""
        run, base_dir = load_config(args.config, args)  # a bad file answers before imports
        _quiet_optuna(run.search.verbose)
        from stabilizer.diagnosis import diagnose
        from stabilizer.scoring import score_traces

        prepared = prepare_run(run, base_dir)
        settings = prepared.settings
        if not args.quiet:
            print(f"diagnosing your own configuration: {settings.seeds} seed(s) x "
                  f"{settings.probe_steps} steps ...", file=sys.stderr, flush=True)
        diagnosis = diagnose(prepared.build_fn, prepared.data, config=settings,
                             seeds=settings.seeds)
        components = score_traces(diagnosis.traces)
        verdict = verdict_line(diagnosis, components)
        if args.format == "json":
            print(json.dumps({"model": run.model, "data": run.data, "verdict": verdict,
                              "components": components.to_dict(), **diagnosis.to_dict()},
                             indent=2, default=str))
        elif args.quiet:
            print(verdict)
        else:
            print(verdict)
            print(components_line(components))
            print(diagnosis.to_text())
            if not diagnosis.healthy:
                print(f"next: stabilizer search {args.config}")
        failing = diagnosis.codes(args.fail_on) if args.fail_on else []
        if failing:
            print(f"stabilizer diagnose: {len(failing)} finding(s) at {args.fail_on} or above "
                  f"({', '.join(failing)}): exit status {FAIL_ON_STATUS}", file=sys.stderr)
            return FAIL_ON_STATUS
        return 0


def verdict_line(diagnosis: Any, components: Any) -> str:
    """'verdict: stable, score 0.812; healthy (no finding above info)' or the findings'
    count by severity, worst first (``stabilizer diagnose``'s first line)."""
    counts = {level: sum(f.severity == level for f in diagnosis.findings)
              for level in ("error", "warning")}
    found = ", ".join(f"{n} {level}{'s' if n != 1 else ''}" for level, n in counts.items() if n)
    state = "healthy (no finding above info)" if diagnosis.healthy else \
        f"unhealthy: {found} ({', '.join(diagnosis.codes('warning'))})"
    return f"verdict: {components.verdict}, score {components.score:.3f}; {state}"


def components_line(components: Any) -> str:
    """The score's components on one line (what the search weighs)."""
    return (f"components: final val_loss {components.final_val_loss:.4g} (reference "
            f"{components.reference_loss:.4g}), quality {components.quality:.3f}, oscillation "
            f"{components.oscillation:.3f}, spikes {components.spike_rate:.3f}, explosions "
            f"{components.explode_rate:.3f}, vanishing {components.vanishing_share:.3f}, seed "
            f"spread {components.seed_spread:.3f} over {components.seeds} seed(s)")


class ReportCommand(Command):
    name = "report"
    help = "rebuild the report of a finished or running study"
    description = "Rebuild <out>/<STUDY>/ from the study's storage alone."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_options(parser, "folder of the report")
        _output_options(parser, "print only the report path")

    def run(self, args: argparse.Namespace) -> int:
        """Rebuild the report folder of a finished or running study from its storage."""
        _quiet_optuna(2 if args.verbose else 1)
        from stabilizer.report import write_report
        from stabilizer.search import load_result

        result = load_result(args.study, _study_storage(args))
        folder = write_report(result, Path(args.out) / args.study)
        _print_result(result, folder, args.format, args.quiet)
        return 0


class DashboardCommand(Command):
    name = "dashboard"
    help = "open a study in optuna-dashboard"
    description = ("Serve optuna-dashboard on the study's storage (pip install "
                   "'stabilizer[dashboard]'): every trial with its configuration, its score "
                   "components as columns (user attributes stability_*) and your own "
                   "configuration as the trial marked baseline=True. Ctrl-C stops it.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_options(parser, "folder of the study file")
        parser.add_argument("--host", default="127.0.0.1",
                            help="address to serve on (default: %(default)s, this machine "
                                 "only)")
        parser.add_argument("--port", type=int, default=8080,
                            help="port to serve on (default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        """Serve optuna-dashboard on the study's storage until interrupted."""
        try:
            import optuna_dashboard
        except ImportError:
            raise StabilizerError("optuna-dashboard is not installed; expected it for "
                                  "`stabilizer dashboard`: pip install 'stabilizer[dashboard]' "
                                  "(or pip install optuna-dashboard)") from None
        _quiet_optuna(1)
        from stabilizer.search import open_existing_study
        from stabilizer.search.optuna import open_storage

        storage = _study_storage(args)
        open_existing_study(args.study, storage)  # a missing storage or study answers here
        print(f"optuna-dashboard on study {args.study!r}: http://{args.host}:{args.port}/ "
              "(Ctrl-C stops it)", file=sys.stderr, flush=True)
        optuna_dashboard.run_server(open_storage(storage), host=args.host, port=args.port)
        return 0


class ShowSpaceCommand(Command):
    name = "show-space"
    help = "print a search space, or list bundled ones"
    description = "Print a bundled search space or a space file."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", nargs="?", metavar="NAME",
                            help="bundled space name or YAML file; omit to list the bundled "
                                 "spaces")
        parser.add_argument("--format", choices=("yaml", "json"), default="yaml",
                            help="output format (default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
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


def _study_options(parser: argparse.ArgumentParser, out_help: str) -> None:
    """STUDY, --storage and --out: where an existing study is (`report`, `dashboard`)."""
    parser.add_argument("study", metavar="STUDY", help="the study name")
    parser.add_argument("--storage", help="Optuna storage URL (default: the SQLite file "
                                          "<out>/<STUDY>.db that `search` makes)")
    parser.add_argument("--out", default=SearchConfig().out_dir,
                        help=f"{out_help} (default: %(default)s)")


def _study_storage(args: argparse.Namespace) -> str:
    return args.storage or f"sqlite:///{Path(args.out) / f'{args.study}.db'}"


def _probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, metavar="N", help="override search.seeds")
    parser.add_argument("--probe-steps", type=int, metavar="N",
                        help="override search.probe_steps (optimizer steps per probe)")


def plan_lines(settings: SearchConfig, horizon: Any, workers: int = 1) -> list[str]:
    """What a search will do and spend, in steps (``stabilizer search --dry-run``).

    The budget counts every probe at full length (pruning only shortens it): the user's
    configuration and each trial on every seed, the LR range test of the diagnosis, and
    each rung of the ladder (a third of the candidates below it, at least one, and the
    user's configuration, on every seed), and the finalists (`FINALISTS` of them and the
    user's configuration) on the seeds after `seeds` up to `final_seeds`.
    """
    from stabilizer.errors import mask_secrets
    from stabilizer.search import FINALISTS

    seeds, steps = settings.seeds, settings.probe_steps
    flat = (settings.trials + 1) * seeds * steps + (steps if settings.diagnose else 0)
    ladder, going = 0, settings.trials
    for rung in horizon.rungs[1:]:
        going = max(1, going // 3)
        ladder += (going + 1) * seeds * rung
    finals = (min(FINALISTS, going) + 1) * max(0, settings.seeds_final - seeds) * horizon.rungs[-1]
    storage = settings.storage or f"sqlite:///{Path(settings.out_dir) / settings.study}.db"
    return [f"study:      {settings.study!r} in {mask_secrets(storage)}"
            + (f" ({workers} workers)" if workers > 1 else ""),
            f"trials:     {settings.trials} ({settings.driver}"
            + (f", {settings.tuner}" if settings.driver == "keras_tuner" else "")
            + f"), space {settings.space if isinstance(settings.space, str) else 'custom'}",
            f"probes:     {seeds} seed(s) x {steps} steps, {settings.evaluations} evaluations",
            f"horizon:    {horizon.describe()}",
            f"budget:     at most {flat + ladder + finals:,} optimizer steps ({flat:,} for "
            f"your configuration, the trials and the LR range test; {ladder:,} for the "
            f"ladder" + (f"; {finals:,} for the finalists on {settings.seeds_final} seeds"
                         if finals else "") + ")",
            *([] if settings.time_limit is None else
              [f"time limit: {settings.time_limit:g} s"]),
            "dry run: nothing was created"]


#: The exit status of `stabilizer diagnose --fail-on` when a finding reaches the severity.
FAIL_ON_STATUS = 3


def _import_frameworks(verbose: int = 1) -> None:
    """Keras (and its backend) imported without TensorFlow's start-up INFO lines
    (`stabilizer.quiet_imports`), unless `verbose` is 2 (``-v``): called by a command once
    its arguments and config file are read."""
    from stabilizer import quiet_imports

    if verbose >= 2:
        import keras  # noqa: F401
        return
    with quiet_imports():
        import keras  # noqa: F401


def _quiet_optuna(verbose: int = 1) -> None:
    """Optuna's INFO lines and experimental-feature warnings off, for a command that uses it
    (imported here, after the arguments and the config file were read), unless `verbose`
    is 2 (``-v``). The command is the whole process: nothing to restore."""
    _import_frameworks(verbose)
    import optuna

    if verbose >= 2:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


#: The subcommands, in the order `stabilizer --help` lists them.
COMMANDS: tuple[Command, ...] = (SearchCommand(), DiagnoseCommand(), ReportCommand(),
                                 DashboardCommand(), ShowSpaceCommand())


def build_parser() -> argparse.ArgumentParser:
    from stabilizer import __version__

    parser = argparse.ArgumentParser(
        prog="stabilizer", description="Make Keras training stable: probe, score, search.")
    parser.add_argument("--version", action="version", version=f"stabilizer {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help,
                                    description=command.description)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stabilizer`` console script; returns the exit status.

    Keras and Optuna are imported by the commands that use them, not before the
    arguments are read: help, version, ``show-space`` and argument errors answer without
    them.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the error
        return int(exc.code) if isinstance(exc.code, int) else 2
    where = f"stabilizer {args.command}"
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        if len(exc.problems) > 1:  # a config file with several problems: one line each
            head = str(exc).splitlines()[0]
            print(f"{where}: error: {one_line(head)}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {one_line(problem)}", file=sys.stderr)
        else:
            print(f"{where}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except StabilizerError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{where}: interrupted; the study is kept: re-run the same command to resume",
              file=sys.stderr)
        return 130

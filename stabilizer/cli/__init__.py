"""The command line: ``stabilizer search | diagnose | report | show-space``.

One command object per subcommand (`_commands.py`, `COMMANDS`), the run config read and
checked before anything runs (`_run.py`), the progress line (`_progress.py`). See
`stabilizer.cli._commands` for the exit statuses and how paths are read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabilizer.cli._commands import COMMANDS, Command, build_parser, main
from stabilizer.cli._progress import ProgressLine, format_duration
from stabilizer.cli._run import PreparedRun, check_model_factory, load_config, prepare_run
from stabilizer.config import load_data, load_target

if TYPE_CHECKING:
    from stabilizer.search import load_result


def __getattr__(name: str) -> Any:
    # the search (Optuna, Keras) is imported when it is used, not for `stabilizer --help`
    if name == "load_result":
        from stabilizer.search import load_result

        return load_result
    raise AttributeError(f"module 'stabilizer.cli' has no attribute {name!r}")

__all__ = [
    "COMMANDS",
    "Command",
    "PreparedRun",
    "ProgressLine",
    "build_parser",
    "check_model_factory",
    "format_duration",
    "load_config",
    "load_data",
    "load_result",
    "load_target",
    "main",
    "prepare_run",
]

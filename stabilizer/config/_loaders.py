"""Loading what a `RunConfig` names: the model factory, the data, and where the space is.

Nothing here runs a model or checks data against one (the search does that before its
first probe, `stabilizer.search.prepare_search`): these functions import the factory a
``module:function`` or ``file.py:function`` string names, read the data a ``sklearn:``
name, an ``.npz`` file or a function gives, and resolve a space file's path. Relative
paths are read relative to the config file's folder (`base_dir`). Loading
``module:function`` is the only code a config can run. Errors are `ConfigError`s naming
the field.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stabilizer.config._settings import TARGET_HELP, RunConfig
from stabilizer.errors import ConfigError

__all__ = ["LoadedRun", "load_data", "load_run", "load_target", "one_line"]


def one_line(text: str) -> str:
    """`text` on one line (its lines stripped and joined by spaces)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _ensure_on_path(folder: Path) -> None:
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def load_target(key: str, spec: str, base_dir: Path) -> Callable[..., Any]:
    """Import the function named by ``module:function`` or ``path/to/file.py:function``.

    A file path is relative to `base_dir` (the config file's folder); a module is
    imported with `base_dir` and the working directory on ``sys.path``.
    """
    target, _, name = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise ConfigError(f"{key}={spec!r}: file {str(path)!r} not found; expected "
                              f"{TARGET_HELP} (a file path is relative to the config file)")
        module = _import_file(key, spec, path)
        origin = str(path)
    else:
        module = _import_module(key, spec, target, base_dir)
        origin = f"module {target!r}"
    function = getattr(module, name, None)
    if function is None:
        raise ConfigError(f"{key}={spec!r}: {origin} has no function {name!r}")
    if not callable(function):
        raise ConfigError(f"{key}={spec!r}: {origin}.{name} is a {type(function).__name__}; "
                          "expected a function")
    return function  # type: ignore[no-any-return]


def _import_file(key: str, spec: str, path: Path) -> Any:
    _ensure_on_path(path.resolve().parent)
    module_name = f"_stabilizer_config_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{key}={spec!r}: {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"{key}={spec!r}: importing {str(path)!r} raised "
                          f"{type(exc).__name__}: {one_line(str(exc))}") from None
    return module


def _import_module(key: str, spec: str, target: str, base_dir: Path) -> Any:
    _ensure_on_path(Path.cwd())
    _ensure_on_path(base_dir.resolve())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise ConfigError(f"{key}={spec!r}: no module named {exc.name!r}; expected "
                              f"{TARGET_HELP}") from None
        raise ConfigError(f"{key}={spec!r}: importing module {target!r} failed: "
                          f"{one_line(str(exc))}") from None
    except Exception as exc:
        raise ConfigError(f"{key}={spec!r}: importing module {target!r} raised "
                          f"{type(exc).__name__}: {one_line(str(exc))}") from None


def _sklearn_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled scikit-learn data set, ready to train on.

    Features are scaled (digits to [0, 1], the others standardized); class labels
    are int32; the diabetes regression target is standardized.
    """
    try:
        from sklearn import datasets
    except ImportError:
        raise ConfigError(f"data='sklearn:{name}': scikit-learn is not installed; "
                          "pip install scikit-learn") from None
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x = np.asarray(x, dtype=np.float32)
    if name == "digits":
        x = x / 16.0
    else:
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    if name == "diabetes":
        y = ((y - y.mean()) / y.std()).astype(np.float32)
    else:
        y = np.asarray(y, dtype=np.int32)
    return x, y


_NPZ_KEYS = ("x", "y", "x_val", "y_val")


def _npz_data(spec: str, base_dir: Path) -> tuple[np.ndarray, ...]:
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ConfigError(f"data={spec!r}: file {str(path)!r} not found "
                          "(a path is relative to the config file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:
        raise ConfigError(f"data={spec!r}: cannot read {str(path)!r} as .npz "
                          f"({type(exc).__name__}: {one_line(str(exc))})") from None
    unknown = sorted(set(arrays) - set(_NPZ_KEYS))
    if unknown:
        raise ConfigError(f"data={spec!r}: unexpected array {unknown[0]!r}; expected "
                          "x, y and optionally x_val, y_val")
    for key in ("x", "y"):
        if key not in arrays:
            raise ConfigError(f"data={spec!r}: missing array {key!r}; expected x, y and "
                              "optionally x_val, y_val")
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing = "y_val" if "x_val" in arrays else "x_val"
        raise ConfigError(f"data={spec!r}: missing array {missing!r}; expected both x_val "
                          "and y_val or neither")
    return tuple(arrays[k] for k in _NPZ_KEYS if k in arrays)


def load_data(spec: str, base_dir: Path) -> Any:
    """The data a `RunConfig.data` string names (validated later by `prepare_data`)."""
    if spec.startswith("sklearn:"):
        return _sklearn_data(spec.split(":", 1)[1])
    if spec.endswith(".npz"):
        return _npz_data(spec, base_dir)
    function = load_target("data", spec, base_dir)
    try:
        return function()
    except Exception as exc:
        raise ConfigError(f"data={spec!r}: calling it raised {type(exc).__name__}: "
                          f"{one_line(str(exc))}") from None


@dataclasses.dataclass
class LoadedRun:
    """What a `RunConfig` names, loaded: the factory, the data, and the space to load."""

    run: RunConfig
    build_fn: Callable[..., Any]
    data: Any
    space: str | dict[str, Any]  # a bundled name, a mapping, or a YAML file's resolved path


def load_run(run: RunConfig, base_dir: Path) -> LoadedRun:
    """Import the model factory and read the data `run` names (see the module docstring)."""
    space = run.search.space
    if isinstance(space, str) and space.endswith((".yaml", ".yml")):
        path = Path(space).expanduser()
        space = str(path if path.is_absolute() else base_dir / path)
    build_fn = load_target("model", run.model, base_dir)
    return LoadedRun(run, build_fn, load_data(run.data, base_dir), space)

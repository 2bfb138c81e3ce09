"""Typed configuration: the candidate applied to a model, and the search settings.

`StabilityConfig` is one point of the search space: what the stabilizer changes in
the user's training (initializer, learning rate and schedule, clipping, batch size,
BatchNormalization momentum and epsilon, or group/layer normalization in its place, and
the output layer's initial bias).
`SearchConfig` holds the settings of a search (budget, seeds, storage, ...). Both are
plain dataclasses that validate on construction, round-trip through dicts and YAML,
and reject unknown keys by name, so the Python API, the YAML file and the CLI all
build the same objects.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from stabilizer.errors import ConfigError

__all__ = [
    "StabilityConfig",
    "SearchConfig",
    "RunConfig",
    "SKLEARN_DATASETS",
    "INITIALIZER_MODES",
    "LR_SCHEDULES",
    "CLIPPING_MODES",
    "DEFAULT_TRAIN_STEPS",
    "NORMALIZATIONS",
    "OUTPUT_BIASES",
    "RESUME_MODES",
    "TARGET_HELP",
    "check_initializer",
    "check_number",
]

#: "keep" leaves the user's initializers alone; "auto" matches each layer's activation.
INITIALIZER_MODES = ("keep", "auto")
#: "cooldown" holds the rate constant, then decays it linearly to 1% over the last 20% of
#: training (`stabilizer.apply.Cooldown`, a "stable then decay" schedule).
LR_SCHEDULES = ("keep", "constant", "exponential", "cosine", "warmup_cosine", "plateau",
                "cooldown")
CLIPPING_MODES = ("keep", "none", "norm", "value", "global_norm")
#: What stands where the model has BatchNormalization: "keep" and "batch" leave the
#: BatchNormalization layers ("batch" names the choice explicitly in a space), "group" and
#: "layer" replace them by GroupNormalization / LayerNormalization, which do not depend
#: on the batch and so suit batch sizes of 2-16.
NORMALIZATIONS = ("keep", "batch", "group", "layer")
#: "chance" starts the output layer's bias at the best constant prediction of the training
#: targets (their mean for a regression, the class log-frequencies for a softmax), so the
#: untrained model is not far off the targets' scale (`stabilizer.apply.output_bias`).
OUTPUT_BIASES = ("keep", "chance")
#: The training length assumed when the user gives neither `train_steps` nor `epochs`.
DEFAULT_TRAIN_STEPS = 2000
#: How a study found under the same name is treated (`SearchConfig.resume`).
RESUME_MODES = ("auto", "force")

_T = TypeVar("_T")


def _field(default: Any, help: str) -> Any:
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _check_mapping(data: Mapping[str, Any], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")


def _unknown_keys(cls: type, data: Mapping[str, Any], hint: str = "") -> list[str]:
    known = {f.name for f in dataclasses.fields(cls)}
    return [f"unknown key {key!r}{hint}; expected one of {', '.join(sorted(known))}"
            for key in sorted(set(data) - known, key=str)]


def _field_problems(cls: type, data: Mapping[str, Any]) -> list[str]:
    """Every problem of the known fields in `data`, not the first one alone.

    Each field is checked on its own; a field that fails alone only for want of another
    (``clipping: norm`` needs ``clip_value``) is checked again beside the fields that
    passed; what is left after that (a rule between two valid fields) is one problem.
    Each problem names its field: ``trials=0: expected a value >= 1``.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in data.items() if k in known}
    try:
        cls(**fields)
        return []
    except ConfigError as exc:
        first = str(exc)
    bad: dict[str, str] = {}
    for key, value in fields.items():
        try:
            cls(**{key: value})
        except ConfigError as exc:
            bad[key] = str(exc)
    passed = {k: v for k, v in fields.items() if k not in bad}
    for key in list(bad):
        try:
            cls(**passed, **{key: fields[key]})
            del bad[key]
        except ConfigError:
            pass
    rest = {k: v for k, v in fields.items() if k not in bad}
    try:
        cls(**rest)
        between: list[str] = []
    except ConfigError as exc:
        between = [str(exc)]
    return list(bad.values()) + between or [first]


def _problems_error(where: str, problems: list[str]) -> ConfigError:
    """One `ConfigError` for the problems of `where`: its message counts them and names
    each on its own line (`ConfigError.problems` holds them)."""
    if len(problems) == 1:
        return ConfigError(f"{where}: {problems[0]}", problems)
    listed = "".join(f"\n  - {problem}" for problem in problems)
    return ConfigError(f"{where}: {len(problems)} problems:{listed}", problems)


def check_number(name: str, value: Any, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False, integer: bool = False,
                 where: str = "") -> Any:
    """`value` as a float (an int with `integer`), or a `ConfigError` naming `name`.

    Finite, at least `low` (above it with `low_open`), at most `high`; `integer`
    accepts whole floats (3.0). Every numeric field of the package is checked here.
    """
    prefix = f"{name}={value!r}{where}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{prefix}: expected {kind}")
    if integer and not float(value).is_integer():
        raise ConfigError(f"{prefix}: expected an integer")
    if not math.isfinite(value):
        raise ConfigError(f"{prefix}: expected a finite number")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{prefix}: expected a value {'>' if low_open else '>='} {low}")
    if high is not None and value > high:
        raise ConfigError(f"{prefix}: expected a value <= {high}")
    return int(value) if integer else float(value)


def _choice(name: str, value: Any, choices: tuple[str, ...], where: str = "") -> str:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}{where}: expected one of {', '.join(choices)}")
    return str(value)


#: Keras' built-in initializer names: accepted without importing Keras (any other name is
#: checked with `keras.initializers.get`, which also knows registered custom ones).
_KERAS_INITIALIZERS = frozenset((
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
    "lecun_normal", "orthogonal", "zeros", "ones", "random_normal", "random_uniform",
    "truncated_normal", "variance_scaling", "identity"))


def check_initializer(name: str, value: Any, where: str = "") -> str:
    """Accept "keep", "auto" or a name `keras.initializers.get` knows."""
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}{where}: expected an initializer name (a string)")
    if value in INITIALIZER_MODES or value in _KERAS_INITIALIZERS:
        return value
    import keras

    try:
        keras.initializers.get(value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{name}={value!r}{where}: unknown initializer; expected 'keep', 'auto' or a "
            "Keras initializer name such as 'he_normal', 'glorot_uniform', 'lecun_normal'"
        ) from None
    return value


def _yaml_source(source: str | Path, where: str, missing: str) -> tuple[str, str]:
    """(where, YAML text) of a file path or a YAML string; `missing` (with ``{path}``) is
    the message of a `ConfigError` for a path that is not a file."""
    text = str(source)
    if isinstance(source, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(missing.format(path=str(path)))
        return str(path), path.read_text()
    return where, text


class _YamlMixin:
    """Dict and YAML round-trip shared by the config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_T], data: Mapping[str, Any], where: str | None = None) -> _T:
        """From a mapping; every unknown key and bad value is reported, each by name."""
        where = where or cls.__name__
        _check_mapping(data, where)
        unknown = _unknown_keys(cls, data)
        problems = _field_problems(cls, data)
        if len(unknown) + len(problems) > 1 or unknown:
            raise _problems_error(where, unknown + problems)
        if problems:  # one problem: its message names the field
            raise ConfigError(problems[0], problems)
        return cls(**dict(data))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls: type[_T], source: str | Path) -> _T:
        """Load from a YAML file path or a YAML string."""
        where, text = _yaml_source(source, cls.__name__, "{path}: file not found")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: invalid YAML: {exc}") from None
        return cls.from_dict(data or {}, where=where)  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class StabilityConfig(_YamlMixin):
    """One candidate configuration: the changes applied to the user's training.

    "keep" (or None for numbers) leaves that part of the user's setup as it is, so
    `StabilityConfig()` is the user's own configuration, the baseline.
    """

    initializer: str = _field(
        "keep", "'keep', 'auto' (He for ReLU family, Glorot for tanh/sigmoid and for "
        "recurrent layers, LeCun for SELU; a negative constant bias on a ReLU layer is "
        "reset to zeros) or a Keras initializer name applied to every kernel")
    learning_rate: float | None = _field(None, "initial learning rate; None keeps the user's")
    lr_schedule: str = _field("keep", f"one of {', '.join(LR_SCHEDULES)}")
    decay_rate: float | None = _field(
        None, "exponential schedule: factor per decay period (one period = one evaluation)")
    warmup_fraction: float | None = _field(
        None, "warmup_cosine schedule: share of the probe spent warming up linearly")
    clipping: str = _field("keep", f"one of {', '.join(CLIPPING_MODES)}")
    clip_value: float | None = _field(None, "threshold for clipnorm / clipvalue / global_clipnorm")
    batch_size: int | None = _field(None, "training batch size; None keeps the user's")
    bn_momentum: float | None = _field(None, "BatchNormalization momentum; None keeps the model's")
    bn_epsilon: float | None = _field(None, "BatchNormalization epsilon; None keeps the model's")
    normalization: str = _field(
        "keep", "'keep' or 'batch' leave BatchNormalization layers; 'group' or 'layer' replace "
        "them by GroupNormalization / LayerNormalization (batch-independent, for small batches)")
    output_bias: str = _field(
        "keep", "'keep' or 'chance': the output layer's bias starts at the best constant "
        "prediction of the training targets (their mean; the class log-frequencies)")

    def __post_init__(self) -> None:
        check_initializer("initializer", self.initializer)
        _choice("output_bias", self.output_bias, OUTPUT_BIASES)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("clipping", self.clipping, CLIPPING_MODES)
        _choice("normalization", self.normalization, NORMALIZATIONS)
        if self.learning_rate is not None:
            object.__setattr__(self, "learning_rate", check_number(
                "learning_rate", self.learning_rate, low=0, low_open=True, high=100))
        if self.decay_rate is not None:
            object.__setattr__(self, "decay_rate", check_number(
                "decay_rate", self.decay_rate, low=0, low_open=True, high=1))
        if self.warmup_fraction is not None:
            object.__setattr__(self, "warmup_fraction", check_number(
                "warmup_fraction", self.warmup_fraction, low=0, high=0.9))
        if self.clip_value is not None:
            object.__setattr__(self, "clip_value", check_number(
                "clip_value", self.clip_value, low=0, low_open=True))
        if self.clipping in ("norm", "value", "global_norm") and self.clip_value is None:
            raise ConfigError(f"clipping={self.clipping!r} needs clip_value: expected a number > 0")
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", check_number(
                "batch_size", self.batch_size, low=1, integer=True))
        if self.bn_momentum is not None:
            object.__setattr__(self, "bn_momentum", check_number(
                "bn_momentum", self.bn_momentum, low=0, high=1, low_open=True))
            if self.bn_momentum >= 1:
                raise ConfigError(f"bn_momentum={self.bn_momentum!r}: expected a value < 1")
        if self.bn_epsilon is not None:
            object.__setattr__(self, "bn_epsilon", check_number(
                "bn_epsilon", self.bn_epsilon, low=0, low_open=True, high=1))

    def apply(self, model: Any, *, train_steps: int | None = None,
              loss: Any = None, optimizer: str | None = None, metrics: list[str] | None = None,
              targets: Any = None) -> Any:
        """Your `model` (a `keras.Model` you built) with this configuration applied and
        compiled with your loss, metrics and optimizer class (uncompiled: pass `loss`, and
        `optimizer` and `metrics` by name).

        `train_steps` is your training length in optimizer steps, required by a decaying
        `lr_schedule` (pass `fit_kwargs()`'s callbacks to `fit` and the schedule spans the
        fit that runs instead). Sequential and Functional models are cloned with their
        weights; a subclassed one is changed in place. The batch size is a `fit` argument:
        see `fit_kwargs`. Loading a saved result: ``StabilityConfig.from_yaml("best.yaml")
        .apply(model, train_steps=...)``.
        """
        from stabilizer.apply import apply_to_model

        settings = SearchConfig(loss=loss, optimizer=optimizer or "adam",
                                metrics=list(metrics or []))
        return apply_to_model(model, self, train_steps=train_steps, settings=settings,
                              targets=targets)

    def fit_kwargs(self, *, epochs: int | None = None, steps_per_epoch: int | None = None,
                   batch_size: int | None = None) -> dict[str, Any]:
        """Keyword arguments for your ``model.fit`` on the model of `apply`: the batch
        size (this configuration's, else `batch_size`), `epochs` and `steps_per_epoch` as
        given, and the callbacks the configuration trains with (a decaying schedule is
        stretched over the fit that runs, the plateau schedule's ReduceLROnPlateau)."""
        from stabilizer.apply import fit_arguments

        return fit_arguments(self, batch_size=batch_size, epochs=epochs,
                             steps_per_epoch=steps_per_epoch)

    def describe(self) -> str:
        """A one-line human summary of what differs from the user's setup."""
        parts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                 if getattr(self, f.name) not in (None, "keep")]
        return ", ".join(parts) or "the user's own configuration"


@dataclasses.dataclass
class SearchConfig(_YamlMixin):
    """Settings of one search: budget, probe length, seeds, storage and driver."""

    space: str | dict[str, Any] = _field(
        "default", "a bundled space name, a YAML file path, or a mapping of dimensions")
    trials: int = _field(20, "number of candidate configurations to probe (the budget)")
    time_limit: float | None = _field(
        None, "seconds of wall time for the whole search, from its start: once spent, no "
        "new trial starts (the running ones finish); the trial budget still caps it. None: "
        "the trial budget alone")
    train_steps: int | None = _field(
        None, "how long you will train, in optimizer steps: the chosen schedule spans it and "
        "the probes of the surviving candidates grow towards it (see horizon_fraction). None "
        "(and no epochs): assumed DEFAULT_TRAIN_STEPS, and the summary says so")
    epochs: int | None = _field(
        None, "how long you will train, in epochs over the training data (instead of "
        "train_steps; converted with the batch size)")
    horizon_fraction: float = _field(
        0.25, "the longest probe as a share of your training length: candidates start at "
        "probe_steps, and a third of them go on to each next rung, 3x longer, up to this "
        "share; 0 compares every candidate at probe_steps only")
    probe_steps: int = _field(120, "optimizer steps per probe (per seed)")
    evaluations: int = _field(4, "validation passes per probe; the steps are split evenly")
    seeds: int = _field(2, "seeds per candidate; run-to-run spread is measured over them")
    seed: int = _field(0, "seed of the sampler and of the probe seeds")
    final_seeds: int | None = _field(
        None, "seeds the finalists (the best 3 candidates at the longest probe length, and "
        "your configuration) are measured on before the choice, such as 4: their probes on "
        "the first `seeds` are kept and the rest run now, so the seed spread the choice "
        "weighs rests on more runs. None (or at most `seeds`): off, the choice rests on "
        "`seeds` (on the yardstick, 4 seeds cost 32% more probe steps and repaired no more)")
    replicas: str | int = _field(
        "auto", "a candidate's seeds trained together as replicas in one program: 'auto' (as "
        "many as fit in memory), 'off' (one after another), or the most per program (a "
        "number); where replicas cannot be built the seeds run one after another and the "
        "trial records why")
    batch_size: int = _field(32, "the user's batch size (used by the baseline)")
    validation_split: float = _field(
        0.2, "share of (x, y) held out for validation when no validation data is given")
    storage: str | None = _field(
        None, "Optuna storage URL; None makes an SQLite file '<study_name>.db' in out_dir")
    study_name: str | None = _field(
        None, "Optuna study name; None names the study from the search's fingerprint "
        "('stabilizer-<digest>' of the model, data, space and probe settings), so the same "
        "search resumes and any other starts anew. A named study is resumed only when its "
        "fingerprint matches (see `resume`)")
    resume: str = _field(
        "auto", "'auto' resumes a study only when its fingerprint (model, data, space, probe "
        "settings) matches this search and refuses a named one that differs; 'force' resumes "
        "the named study whatever it was made for")
    driver: str = _field("optuna", "search driver: 'optuna' or 'keras_tuner'")
    tuner: str = _field("bayesian", "KerasTuner tuner: 'bayesian', 'random' or 'hyperband'")
    out_dir: str = _field("stabilizer-out", "folder for the study file and reports")
    prune: bool = _field(True, "stop probes that are clearly worse than the others early")
    divergence_factor: float = _field(
        10.0, "a probe diverges when its loss exceeds this factor times its starting loss")
    check_every: int = _field(
        1, "steps between divergence checks (the flag comes with each step's logs)")
    max_consecutive_failures: int = _field(
        5, "stop the search after this many failed trials in a row")
    loss: str | None = _field(None, "loss for an uncompiled model (a Keras loss name)")
    optimizer: str = _field("adam", "optimizer for an uncompiled model (a Keras name)")
    metrics: list[str] = _field([], "metrics for an uncompiled model")
    verbose: int = _field(
        1, "what the search prints: 0 nothing; 1 a progress bar (terminal or notebook) with "
        "the best score, the diverged and pruned counts and the time left; 2 also one line "
        "per finished trial and per ladder probe, and the frameworks' own logs (TensorFlow's "
        "retracing warnings, Optuna's INFO lines) that 0 and 1 quiet during the search. "
        "true/false read as 2/0")
    diagnose: bool = _field(
        True, "diagnose the user's configuration first (its probes are the baseline, plus "
        "an LR range test) and focus the space on what it finds")
    diagnose_after: bool = _field(
        True, "diagnose the chosen configuration after the search on the same seeds, for "
        "the before/after comparison (costs one more candidate's probes)")

    def __post_init__(self) -> None:
        if not isinstance(self.space, (str, dict)):
            raise ConfigError(f"space={self.space!r}: expected a space name, a file path or "
                              "a mapping")
        self.trials = check_number("trials", self.trials, low=1, integer=True)
        if self.time_limit is not None:
            self.time_limit = check_number("time_limit", self.time_limit, low=0, low_open=True)
        if self.train_steps is not None and self.epochs is not None:
            raise ConfigError(f"train_steps={self.train_steps!r} and epochs={self.epochs!r}: "
                              "expected one of them (your training length)")
        if self.train_steps is not None:
            self.train_steps = check_number("train_steps", self.train_steps, low=1, integer=True)
        if self.epochs is not None:
            self.epochs = check_number("epochs", self.epochs, low=1, integer=True)
        self.horizon_fraction = check_number("horizon_fraction", self.horizon_fraction, low=0,
                                        high=1)
        self.probe_steps = check_number("probe_steps", self.probe_steps, low=2, integer=True)
        self.evaluations = check_number("evaluations", self.evaluations, low=1, integer=True)
        if self.evaluations > self.probe_steps:
            raise ConfigError(
                f"evaluations={self.evaluations}: expected at most probe_steps={self.probe_steps}")
        self.seeds = check_number("seeds", self.seeds, low=1, integer=True)
        self.seed = check_number("seed", self.seed, low=0, integer=True)
        if self.final_seeds is not None:
            self.final_seeds = check_number("final_seeds", self.final_seeds, low=1,
                                            integer=True)
        if self.replicas not in ("auto", "off"):
            if isinstance(self.replicas, str) or isinstance(self.replicas, bool):
                raise ConfigError(f"replicas={self.replicas!r}: expected 'auto', 'off' or a "
                                  "whole number >= 1")
            self.replicas = check_number("replicas", self.replicas, low=1, integer=True)
        self.batch_size = check_number("batch_size", self.batch_size, low=1, integer=True)
        self.validation_split = check_number("validation_split", self.validation_split, low=0,
                                        low_open=True, high=0.9)
        if self.storage is not None and not isinstance(self.storage, str):
            raise ConfigError(f"storage={self.storage!r}: expected a database URL string or null")
        if self.study_name is not None and (not isinstance(self.study_name, str)
                                            or not self.study_name):
            raise ConfigError(f"study_name={self.study_name!r}: expected a non-empty string, "
                              "or null to name the study from its fingerprint")
        _choice("resume", self.resume, RESUME_MODES)
        _choice("driver", self.driver, ("optuna", "keras_tuner"))
        _choice("tuner", self.tuner, ("bayesian", "random", "hyperband"))
        if not isinstance(self.out_dir, str):
            raise ConfigError(f"out_dir={self.out_dir!r}: expected a folder path")
        if not isinstance(self.prune, bool):
            raise ConfigError(f"prune={self.prune!r}: expected true or false")
        self.divergence_factor = check_number("divergence_factor", self.divergence_factor, low=1,
                                         low_open=True)
        self.check_every = check_number("check_every", self.check_every, low=1, integer=True)
        self.max_consecutive_failures = check_number(
            "max_consecutive_failures", self.max_consecutive_failures, low=1, integer=True)
        if self.loss is not None and not isinstance(self.loss, str):
            raise ConfigError(f"loss={self.loss!r}: expected a Keras loss name")
        if not isinstance(self.optimizer, str):
            raise ConfigError(f"optimizer={self.optimizer!r}: expected a Keras optimizer name")
        if not isinstance(self.metrics, (list, tuple)) \
                or not all(isinstance(m, str) for m in self.metrics):
            raise ConfigError(f"metrics={self.metrics!r}: expected a list of metric names")
        self.metrics = list(self.metrics)
        if isinstance(self.verbose, bool):
            self.verbose = 2 if self.verbose else 0
        self.verbose = check_number("verbose", self.verbose, low=0, high=2, integer=True)
        for name in ("diagnose", "diagnose_after"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected true or false")

    @classmethod
    def with_overrides(cls, config: SearchConfig | None, options: Mapping[str, Any],
                       caller: str) -> SearchConfig:
        """`config` (or the defaults) with keyword overrides from `caller()`.

        Unknown names are errors naming the argument; None means "not given".
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(f"{caller}() got an unexpected argument {unknown[0]!r}; expected "
                              f"one of {', '.join(sorted(fields))}")
        base = config.to_dict() if config is not None else {}
        base.update({k: v for k, v in options.items() if v is not None})
        return cls.from_dict(base)

    @property
    def seeds_final(self) -> int:
        """How many seeds the finalists are measured on (`final_seeds`; `seeds` when off)."""
        return self.seeds if self.final_seeds is None else max(self.seeds, self.final_seeds)

    @property
    def study(self) -> str:
        """The study name; a `ConfigError` before the search has named an unnamed study."""
        if self.study_name is None:
            raise ConfigError("study_name=None: the study is named from the search's "
                              "fingerprint when the search starts (stabilizer.search."
                              "prepare_search); expected a named study here")
        return self.study_name

    def resolved_storage(self) -> str:
        """The storage URL, defaulting to an SQLite file in `out_dir`."""
        if self.storage:
            return self.storage
        path = Path(self.out_dir) / f"{self.study}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"


#: Data sets bundled with scikit-learn that `RunConfig.data` may name as "sklearn:<name>".
SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
TARGET_HELP = "'module:function' or 'path/to/file.py:function'"
_DATA_HELP = ("'sklearn:<name>' (" + ", ".join(SKLEARN_DATASETS) + "), a path to an .npz file "
              "with arrays x, y (optionally x_val, y_val), or " + TARGET_HELP)


def _check_target(name: str, value: Any) -> str:
    """A 'module:function' or 'file.py:function' reference (not imported here)."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{name}={value!r}: expected {TARGET_HELP}")
    target, _, function = value.rpartition(":")
    if not target or not function.isidentifier():
        raise ConfigError(f"{name}={value!r}: expected {TARGET_HELP}")
    return value


def _check_data(value: Any) -> str:
    """A `RunConfig.data` string (not read here)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"data={value!r}: expected {_DATA_HELP}")
    if value.startswith("sklearn:"):
        _choice("data", value, tuple(f"sklearn:{n}" for n in SKLEARN_DATASETS))
    elif not value.endswith(".npz"):
        _check_target("data", value)
    return value


@dataclasses.dataclass
class RunConfig(_YamlMixin):
    """What `stabilizer search config.yaml` runs: a model factory, data and a search.

    `model` and `data` are required; `search` holds a `SearchConfig` (a nested
    mapping in YAML; every key optional, with the same defaults as `stabilize()`).
    Relative file paths in `model`, `data` and `search.space` are read relative to
    the YAML file's folder; `search.out_dir` is relative to the working directory.
    Nothing is imported or run when the config is loaded.
    """

    model: str = dataclasses.field(metadata={"help": (
        f"the model factory: {TARGET_HELP}; it returns a compiled keras.Model (or takes "
        "a KerasTuner `hp`)")})
    data: str = dataclasses.field(metadata={"help": f"the training data: {_DATA_HELP}"})
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig, metadata={
        "help": "search settings (SearchConfig fields: space, trials, seeds, storage, ...)"})

    def __post_init__(self) -> None:
        _check_target("model", self.model)
        _check_data(self.data)
        if isinstance(self.search, Mapping):
            self.search = SearchConfig.from_dict(self.search, where="search")
        if not isinstance(self.search, SearchConfig):
            raise ConfigError(f"search={self.search!r}: expected a mapping of search settings")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | None = None) -> RunConfig:
        """From a mapping; every problem is reported with its field path (``search.trials``)."""
        where = where or cls.__name__
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys model, data and search, "
                              f"got {type(data).__name__}")
        search_keys = {f.name for f in dataclasses.fields(SearchConfig)}
        problems = [problem for key in sorted(set(data) - {"model", "data", "search"}, key=str)
                    for problem in _unknown_keys(
                        cls, {key: None},
                        " (search settings go under 'search:')" if key in search_keys else "")]
        for key, check in (("model", lambda v: _check_target("model", v)),
                           ("data", _check_data)):
            if key not in data:
                problems.append(f"missing key {key!r}; expected "
                                f"{TARGET_HELP if key == 'model' else _DATA_HELP}")
                continue
            try:
                check(data[key])
            except ConfigError as exc:
                problems.append(str(exc))
        search = data.get("search") or {}
        if not isinstance(search, (Mapping, SearchConfig)):
            problems.append(f"search: expected a mapping of settings, got "
                            f"{type(search).__name__}")
        elif isinstance(search, Mapping):
            problems += [f"search: {p}" for p in _unknown_keys(SearchConfig, search)]
            problems += [f"search.{p}" for p in _field_problems(SearchConfig, search)]
        if problems:
            raise _problems_error(where, problems)
        return cls(model=data["model"], data=data["data"], search=search)

    @classmethod
    def from_yaml(cls, source: str | Path) -> RunConfig:
        """Load from a YAML file path (or a YAML string); errors name the file and line."""
        where, text = _yaml_source(source, "config", "config file {path!r} not found")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
        return cls.from_dict(data if data is not None else {}, where=where)

    def with_search(self, **changes: Any) -> RunConfig:
        """A copy with some search settings replaced (None leaves a setting alone)."""
        known = {f.name for f in dataclasses.fields(SearchConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown search setting {unknown[0]!r}; expected one of "
                              f"{', '.join(sorted(known))}")
        merged = {**self.search.to_dict(), **{k: v for k, v in changes.items() if v is not None}}
        return dataclasses.replace(self, search=SearchConfig.from_dict(merged))

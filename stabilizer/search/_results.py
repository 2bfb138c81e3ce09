"""A search read back from its storage alone: `load_result` (``stabilizer report``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna

from stabilizer.config import SearchConfig, StabilityConfig, one_line
from stabilizer.diagnosis import Diagnosis
from stabilizer.errors import ConfigError, StabilizerError, mask_secrets
from stabilizer.probe import Horizon, ProbePlan
from stabilizer.result import Candidate, StabilityResult
from stabilizer.scoring import ScoreComponents
from stabilizer.search._choice import choose_best, restore_nan
from stabilizer.search._finals import on_more_seeds
from stabilizer.search._ladder import choose_on_ladder, stored_rungs
from stabilizer.search.optuna import journal_path, open_storage, records_from_study
from stabilizer.space import load_space

__all__ = ["load_result", "open_existing_study"]


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        return Path(url[len(prefix):].split("?", 1)[0])
    return None


def open_existing_study(study_name: str, storage: str) -> optuna.Study:
    """The study `study_name` in `storage`; a `ConfigError` when the storage or the study
    does not exist (an SQLite or journal file is not created by looking)."""
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
        return optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        names = optuna.study.get_all_study_names(storage=rdb)
        raise ConfigError(f"study {study_name!r} not found in {label}; it holds "
                          f"{', '.join(map(repr, names)) or 'no studies'}") from None


def load_result(study_name: str, storage: str) -> StabilityResult:
    """The `StabilityResult` of a finished or running study, read from storage alone.

    The baseline comes from the study's ``baseline`` attribute, the trials from
    `records_from_study`, the settings from the ``run_config`` attribute the CLI
    stores (defaults when the study was made by the Python API). `build_fn` is
    not known: set ``result.build_fn`` before calling `build_model()` (and
    ``result.targets``, the training labels, when the best configuration sets
    ``output_bias: chance``).
    """
    study = open_existing_study(study_name, storage)
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
    horizon = Horizon.from_dict(attrs["horizon"]) if attrs.get("horizon") else None
    compared, rungs, notes = baseline, [], []
    if horizon is None:  # a search stopped before its ladder, or made before there was one
        choice = choose_best(records, baseline)
    else:
        ladder = choose_on_ladder(stored_rungs(attrs.get, horizon, records, baseline),
                                  records, baseline, horizon)
        used = dataclasses.replace(settings, final_seeds=attrs.get("final_seeds")
                                   or settings.final_seeds)  # what the search ran
        ladder = on_more_seeds(ladder, records, used, plan=ProbePlan.from_settings(settings),
                               reference=baseline.components.reference_loss, load=attrs.get)
        choice, compared = ladder.choice, ladder.baseline
        rungs, notes = [r.summary() for r in ladder.rungs], ladder.notes
    result = StabilityResult(best=choice.best, baseline=compared, choice_note=choice.note,
                             trials=records, settings=settings, space_name=space,
                             study_name=study_name, storage=mask_secrets(storage),
                             space_notes=list(attrs.get("space_notes") or []),
                             horizon=horizon, rungs=rungs, ladder_notes=notes,
                             finals=ladder.finals if horizon is not None else {})
    if stored.get("diagnosis"):
        result.diagnosis = Diagnosis.from_dict(stored["diagnosis"])
        if isinstance(settings.space, str):
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

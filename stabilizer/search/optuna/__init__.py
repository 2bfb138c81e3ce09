"""The default driver: an Optuna study on SQLite, a journal file or any database URL.

See `stabilizer.search.optuna._driver` for the sampler, the pruner, the storages, the
budget shared between workers, lost trials and faults.
"""

from stabilizer.search.optuna._driver import (
    OptunaDriver,
    OptunaHyperParameters,
    OptunaSuggester,
    StabilityPruner,
    TrialSeededSampler,
    fail_lost_trials,
    infeasible_batch_sizes,
    is_baseline_trial,
    journal_path,
    open_storage,
    open_study,
    record_from_trial,
    records_from_study,
    this_worker,
)

__all__ = [
    "OptunaDriver",
    "OptunaHyperParameters",
    "OptunaSuggester",
    "StabilityPruner",
    "TrialSeededSampler",
    "fail_lost_trials",
    "infeasible_batch_sizes",
    "is_baseline_trial",
    "journal_path",
    "open_storage",
    "open_study",
    "record_from_trial",
    "records_from_study",
    "this_worker",
]

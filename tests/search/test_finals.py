"""The finalists on more seeds: the choice made again with the seed spread of more runs.

The unit tests drive `on_more_seeds` with scripted probes (each seed's validation loss
at the end); the search at the end trains real models, resumes, and is read back.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest
import scenarios

from stabilizer import ConfigError, SearchConfig, StabilityConfig, stabilize
from stabilizer.data import prepare_data
from stabilizer.probe import Horizon, ProbePlan
from stabilizer.result import Candidate, TrialRecord
from stabilizer.scoring import score_traces
from stabilizer.search._finals import FINALISTS, final_key, finalists, on_more_seeds
from stabilizer.search._ladder import choose_on_ladder, climb
from stabilizer.telemetry import ProbeTrace

FALL = np.geomspace(2.0, 0.5, 30)


def _trace(final: float) -> ProbeTrace:
    n = len(FALL)
    return ProbeTrace(loss=FALL, grad_norm=np.ones(n), layer_grad_norm=np.ones((n, 2)),
                      update_ratio=np.full((n, 2), 1e-3), layer_names=["a", "b"],
                      val_loss=[final], val_metrics=[], bn_stats=[], learning_rate=[],
                      diverged=False, steps_done=n, initial_val_loss=2.0)


def _scored(*finals: float) -> dict[str, Any]:
    return score_traces([_trace(f) for f in finals], reference_loss=2.0).to_dict()


#: learning rate -> (the finals of the two seeds searched, of the two seeds after them)
SEEDS = {None: ((0.5, 0.5), (0.5, 0.5)),   # yours: stable, the worst loss
         0.1: ((0.2, 0.2), (0.9, 1.0)),    # agrees on two seeds, parts on four
         0.01: ((0.3, 0.3), (0.3, 0.3)),   # stable on every seed
         0.001: ((0.4, 0.4), (0.4, 0.4))}


class _Storage:
    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}

    def load_attr(self, key: str) -> Any:
        return self.attrs.get(key)

    def save_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value

    def out_of_time(self) -> bool:
        return False


def _ladder(rates=(0.1, 0.01, 0.001)):
    records = [TrialRecord(i, "COMPLETE", 0.0, StabilityConfig(learning_rate=lr), {},
                           _scored(*SEEDS[lr][0]), [{"steps": 30}] * 2)
               for i, lr in enumerate(rates)]
    baseline = Candidate(StabilityConfig(), score_traces([_trace(f) for f in SEEDS[None][0]],
                                                         reference_loss=2.0), [])
    data = prepare_data((np.zeros((100, 2), "float32"), np.zeros(100, "float32")))
    horizon = Horizon.resolve(SearchConfig(probe_steps=30, evaluations=2, train_steps=120), data)
    evaluator = types.SimpleNamespace(plan=ProbePlan(15, 2))  # one rung: nothing is probed
    rungs = climb(_Storage(), evaluator, horizon, records, baseline)
    return choose_on_ladder(rungs, records, baseline, horizon), records


def _probe(calls: list[tuple[int | None, list[int]]]):
    def run(number, record, plan, seeds):
        calls.append((number, seeds))
        rate = None if record is None else record.config.learning_rate
        traces = [_trace(f) for f in SEEDS[rate][1]]
        return {"components": score_traces(traces, reference_loss=2.0).to_dict(),
                "curves": [{"steps": 30, "seconds": 0.1}] * len(seeds)}
    return run


def _again(ladder, records, storage, probe=None, final_seeds=4):
    return on_more_seeds(ladder, records, SearchConfig(seeds=2, final_seeds=final_seeds),
                         plan=ProbePlan(15, 2), reference=2.0, load=storage.load_attr,
                         probe=probe)


def test_a_candidate_that_parts_on_more_seeds_loses_to_one_that_does_not():
    ladder, records = _ladder()
    assert ladder.choice.best.trial_number == 0  # 0.2 on both seeds searched
    calls: list[tuple[int | None, list[int]]] = []
    again = _again(ladder, records, _Storage(), _probe(calls))
    assert sorted(calls, key=str) == sorted([(None, [2, 3]), (0, [2, 3]), (1, [2, 3]),
                                             (2, [2, 3])], key=str)
    assert again.choice.best.trial_number == 1  # stable at 0.3 on all four
    spread = again.choice.best.components.seed_spread
    assert again.choice.best.components.seeds == 4 and spread == pytest.approx(0.0)
    assert again.baseline.components.seeds == 4
    assert again.finals == {"steps": 30, "seeds": 4, "trials": [0, 1, 2],
                            "cost": {"steps": 8 * 30, "seconds": 0.8}}
    assert "finalists on 4 seeds at 30 steps" in again.notes[-1]
    assert "trial 0" in again.notes[-1] and "(unstable)" in again.notes[-1]


def test_the_finalists_are_the_best_few_and_stored_probes_are_not_run_again():
    rates = (0.1, 0.01, 0.001, 0.001, 0.001)
    ladder, records = _ladder(rates)
    assert len(finalists(ladder)) == FINALISTS == 3
    storage, calls = _Storage(), []
    probe = _probe(calls)

    def storing(number, record, plan, seeds):
        stored = probe(number, record, plan, seeds)
        storage.save_attr(final_key(30, "baseline" if number is None else number, 4), stored)
        return stored
    first = _again(ladder, records, storage, storing)
    assert len(calls) == 1 + FINALISTS
    read_back = _again(ladder, records, storage)  # no probe: what was stored only
    assert read_back.choice.best.trial_number == first.choice.best.trial_number
    assert read_back.notes == first.notes and read_back.finals == first.finals


def test_no_more_seeds_than_searched_leaves_the_choice_alone():
    ladder, records = _ladder()
    calls: list[tuple[int | None, list[int]]] = []
    assert _again(ladder, records, _Storage(), _probe(calls), final_seeds=2) is ladder
    assert not calls


def test_final_seeds_are_off_by_default_and_checked():
    assert SearchConfig().seeds_final == 2 and SearchConfig(seeds=3).seeds_final == 3
    assert SearchConfig(final_seeds=4).seeds_final == 4
    assert SearchConfig(seeds=3, final_seeds=2).seeds_final == 3
    with pytest.raises(ConfigError, match="final_seeds=0: expected a value >= 1"):
        SearchConfig(final_seeds=0)


def test_a_search_measures_its_finalists_resumes_and_reads_them_back(small_digits, tmp_path):
    from stabilizer.search import load_result

    options = dict(space="quick", budget=3, seeds=2, final_seeds=4, probe_steps=10,
                   evaluations=2, train_steps=40, diagnose=False, diagnose_after=False, prune=False,
                   out_dir=str(tmp_path), study_name="finals")
    builds = []

    def build():
        builds.append(1)
        return scenarios.healthy_mlp()
    result = stabilize(build, small_digits, **options)
    finals = result.finals
    assert finals["seeds"] == 4 and finals["steps"] == 10 and finals["trials"]
    assert finals["cost"]["steps"] == (1 + len(finals["trials"])) * 2 * 10
    assert result.baseline.components.seeds == 4
    if result.improved:
        assert result.best.trial_number in finals["trials"]
        assert result.best.components.seeds == 4
    assert "finalists on 4 seeds at 10 steps" in result.summary()
    built = len(builds)
    again = stabilize(build, small_digits, **options)
    assert len(builds) == built + 1  # the check before the search; no probe runs again
    assert again.best.trial_number == result.best.trial_number
    assert again.ladder_notes == result.ladder_notes
    loaded = load_result("finals", f"sqlite:///{tmp_path}/finals.db")
    assert loaded.best.trial_number == result.best.trial_number
    assert loaded.finals == result.finals

"""The failure policy both drivers share."""

from __future__ import annotations

from stabilizer.errors import SearchAbortedError
from stabilizer.search._policy import FailurePolicy, error_text


def test_failures_in_a_row_trip_the_policy_and_a_success_resets_the_run():
    policy = FailurePolicy(3)
    assert not policy.record(True, "boom 1")
    assert not policy.record(True, "boom 2")
    assert not policy.record(False)
    assert not policy.record(True, "boom 3")
    assert not policy.record(True, "boom 4")
    assert policy.record(True, "boom 5")
    error = policy.aborted()
    assert isinstance(error, SearchAbortedError)
    assert "3 trials failed in a row" in str(error) and "boom 5" in str(error)


def test_out_of_memory_and_surplus_trials_neither_count_nor_break_the_run():
    policy = FailurePolicy(2)
    policy.record(True, "first")
    assert not policy.record(True, "out of memory", skipped=True)
    assert not policy.record(False, skipped=True)
    assert policy.record(True, "second")


def test_a_stored_error_masks_passwords_and_keeps_its_first_line_and_end():
    text = "postgresql://user:hunter2@db/x failed\n" + "x" * 5000 + "\nthe end"
    stored = error_text(text, limit=400)
    assert "hunter2" not in stored
    assert stored.startswith("postgresql://user:") and stored.endswith("the end")
    assert len(stored) <= 400

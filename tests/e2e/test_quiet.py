"""The package prints only what it means to say, and quiets only its own calls."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stabilizer.probe import quiet_frameworks
from stabilizer.progress import ProgressBar
from stabilizer.quiet import filtered_stderr
from stabilizer.result import TrialRecord

SCRIPT = """
import logging, os, sys
import numpy as np
if sys.argv[3] == "keras-first":  # the user imports TensorFlow: its start-up lines are theirs
    import keras
    sys.stderr.write("MARK\\n")
    sys.stderr.flush()
from stabilizer import stabilize   # the package imports TensorFlow: its start-up lines are held
import keras, optuna

def build():
    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    return m

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = x.sum(axis=1, keepdims=True)
levels = (optuna.logging.get_verbosity(), logging.getLogger("tensorflow").level)
result = stabilize(build, (x, y), budget=3, probe_steps=20, evaluations=2, out_dir=sys.argv[1],
                   space="quick", verbose=int(sys.argv[2]))
after = (optuna.logging.get_verbosity(), logging.getLogger("tensorflow").level)
print("restored", levels == after, "env", os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""


def _run(tmp_path: Path, verbose: int, first: str = "stabilizer"
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"{verbose}{first}"),
                           str(verbose), first], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.slow
def test_a_three_trial_search_prints_nothing_at_verbose_0_and_a_bar_at_1(tmp_path):
    pytest.importorskip("tensorflow")
    quiet = _run(tmp_path, 0)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # no start-up lines, no XLA lines, no warnings, no INFO lines
    assert quiet.stdout.splitlines()[-1] == "restored True env None"  # nothing left behind
    bar = _run(tmp_path, 1)
    assert bar.returncode == 0, bar.stderr
    lines = [line for line in bar.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith(("stabilizer", "diagnosing", "searching", "probing"))
                         for line in lines), bar.stderr
    assert "3/3" in bar.stderr and "best " in bar.stderr
    # TensorFlow imported by the user first: its start-up lines are the user's, but the XLA
    # lines of the first compiled probe step (C++, straight to the descriptor) are held
    theirs = _run(tmp_path, 0, "keras-first")
    assert theirs.returncode == 0, theirs.stderr
    assert "I0000" in theirs.stderr.split("MARK")[0]  # their import's lines, left alone
    assert theirs.stderr.split("MARK\n", 1)[1] == ""  # nothing from the search


def test_the_stderr_filter_drops_the_frameworks_info_lines_only(capfd):
    with filtered_stderr():
        os.write(2, b"I0000 00:00:1796653802.03 1963 service.cc:153] XLA service 0x7f\n")
        os.write(2, b"W0000 00:00:1796653802.03 a C++ warning\n")
        os.write(2, b"\rsearching:  33%|###       | 1/3")  # a progress bar: no newline
        os.write(2, b"\nWARNING: All log messages before absl::InitializeLog() is called\n")
        with filtered_stderr():  # nested: the outer filter serves
            os.write(2, b"I1207 12:00:00.000 1 port.cc:153] oneDNN custom operations\n")
        os.write(2, b"Traceback (most recent call last): kept\n")
    assert capfd.readouterr().err == ("W0000 00:00:1796653802.03 a C++ warning\n"
                                      "\rsearching:  33%|###       | 1/3\n"
                                      "Traceback (most recent call last): kept\n")
    os.write(2, b"I0000 after the block: not ours to filter\n")
    assert "I0000 after the block" in capfd.readouterr().err


def test_framework_warnings_are_quiet_inside_the_block_and_back_after_it(caplog):
    logger = logging.getLogger("tensorflow")
    logger.setLevel(logging.INFO)
    with quiet_frameworks(verbose=1):
        logger.warning("5 out of the last 5 calls triggered tf.function retracing")
        assert logger.level == logging.ERROR
    assert logger.level == logging.INFO
    with quiet_frameworks(verbose=2):  # -v lets them through
        logger.warning("shown")
    assert [r.getMessage() for r in caplog.records] == ["shown"]
    logger.setLevel(logging.NOTSET)


def _record(number: int, state: str, score: float | None = None,
            verdict: str = "stable") -> TrialRecord:
    return TrialRecord(number, state, score, None, {}, {"verdict": verdict}, [], seconds=1.0)


def test_the_progress_bar_counts_trials_and_follows_the_phases():
    stream = io.StringIO()
    bar = ProgressBar(4, stream=stream, existing=[_record(0, "COMPLETE", 0.5)])
    bar.phase("diagnosing your configuration")
    bar(_record(1, "COMPLETE", 0.8))
    bar(_record(2, "PRUNED", verdict="pruned"))
    bar(_record(3, "COMPLETE", -1.0, verdict="diverged"))
    bar.phase("searching")
    bar.close()
    text = stream.getvalue()
    assert "diagnosing your configuration" in text and "searching" in text
    assert "4/4" in text.replace(" ", "")
    assert "best 0.800 | diverged 1 | pruned 1 | failed 0" in text
    assert bar.counts.done == 4

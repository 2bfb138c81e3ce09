"""The command line: config errors (exit 2, nothing run), show-space, progress, end to end."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stabilizer.cli import (
    ProgressLine,
    build_parser,
    format_duration,
    load_config,
    load_data,
    load_result,
    load_target,
    main,
    prepare_run,
)
from stabilizer.config import SKLEARN_DATASETS, RunConfig, SearchConfig, StabilityConfig
from stabilizer.errors import ConfigError
from stabilizer.result import TrialRecord
from stabilizer.space import bundled_spaces, load_space

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits.yaml"
MODELS = REPO / "examples" / "models.py"

BAD_MODELS = '''
import pathlib

import keras


def not_a_model():
    return 3


def broken():
    raise RuntimeError("boom")


def uncompiled():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])


def marked():
    pathlib.Path(__file__).with_name("called").touch()
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])


def nan_data():
    import numpy as np

    x = np.ones((20, 64), "float32")
    x[3, 5] = np.nan
    return x, np.zeros(20, "int32")
'''


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bad_models.py").write_text(BAD_MODELS)
    np.savez(tmp_path / "no_y.npz", x=np.zeros((10, 64), "float32"))
    np.savez(tmp_path / "tiny.npz", x=np.zeros((10, 64), "float32"), y=np.zeros(10, "int32"))
    return tmp_path


def write_config(folder: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(text)
    return path


GOOD_MODEL = f"model: {MODELS}:digits_mlp\n"
GOOD_DATA = "data: sklearn:digits\n"
OUT = "search: {out_dir: OUT}\n"

# (config text, extra flags, expected part of the one-line message)
ERRORS = {
    "missing file": (None, [], "config file '{dir}/absent.yaml' not found"),
    "yaml syntax": ("model: [a\ndata: b\n", [], "config.yaml: invalid YAML at line 2"),
    "unknown key": (GOOD_MODEL + GOOD_DATA + "trails: 3\n", [], "unknown key 'trails'"),
    "search key at the top": (GOOD_MODEL + GOOD_DATA + "trials: 3\n", [],
                              "unknown key 'trials' (search settings go under 'search:')"),
    "unknown search key": (GOOD_MODEL + GOOD_DATA + "search: {trails: 3}\n", [],
                           "config.yaml: search: unknown key 'trails'; expected one of"),
    "missing model": (GOOD_DATA, [], "missing key 'model'; expected 'module:function'"),
    "wrong type": (GOOD_MODEL + GOOD_DATA + "search: {trials: ten}\n", [],
                   "search.trials='ten': expected an integer"),
    "wrong type model": ("model: 3\n" + GOOD_DATA, [],
                         "model=3: expected 'module:function' or 'path/to/file.py:function'"),
    "search not a mapping": (GOOD_MODEL + GOOD_DATA + "search: [1, 2]\n", [],
                             "search: expected a mapping of settings, got list"),
    "bad module path": ("model: no_such_module_xyz:build\n" + GOOD_DATA, [],
                        "model='no_such_module_xyz:build': no module named 'no_such_module_xyz'"),
    "missing model file": ("model: missing.py:build\n" + GOOD_DATA, [],
                           "file '{dir}/missing.py' not found"),
    "no such function": ("model: bad_models.py:nope\n" + GOOD_DATA, [],
                         "bad_models.py has no function 'nope'"),
    "not a model": ("model: bad_models.py:not_a_model\n" + GOOD_DATA, [],
                    "model='bad_models.py:not_a_model': returned int; expected a keras.Model"),
    "not a model, by module": ("model: bad_models:not_a_model\n" + GOOD_DATA, [],
                               "returned int; expected a keras.Model"),
    "factory raises": ("model: bad_models.py:broken\n" + GOOD_DATA, [],
                       "calling it raised RuntimeError: boom"),
    "uncompiled": ("model: bad_models.py:uncompiled\n" + GOOD_DATA, [],
                   "returned an uncompiled model and no loss was given"),
    "unknown data set": (GOOD_MODEL + "data: sklearn:mnist\n", [],
                         "data='sklearn:mnist': expected one of sklearn:digits"),
    "npz without y": (GOOD_MODEL + "data: no_y.npz\n", [],
                      "data='no_y.npz': missing array 'y'"),
    "data with NaN": (GOOD_MODEL + "data: bad_models.py:nan_data\n", [],
                      "data='bad_models.py:nan_data': x: contains NaN values"),
    "batch too large": (GOOD_MODEL + "data: tiny.npz\n", [],
                        "search.batch_size=32: larger than the 8 training samples"),
    "bad space": (GOOD_MODEL + GOOD_DATA + "search: {space: nope}\n", [],
                  "search.space: space='nope': not a bundled space"),
    "bad storage": (GOOD_MODEL + GOOD_DATA + "search: {storage: 'nodb://x/y'}\n", [],
                    "storage='nodb://x/y': cannot open"),
    "bad flag value": (GOOD_MODEL + GOOD_DATA, ["--trials", "0"],
                       "command line: trials=0: expected a value >= 1"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_config_errors_exit_2_with_one_line_and_create_nothing(
        case: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, flags, expected = ERRORS[case]
    path = workdir / "absent.yaml" if text is None else write_config(workdir, text)
    out_dir = workdir / "out"
    code = main(["search", str(path), "--out", str(out_dir), *flags])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("stabilizer search: error: ")
    assert expected.format(dir=workdir) in lines[0]
    assert captured.out == ""
    assert not out_dir.exists()  # no study file, no report
    assert not list(workdir.rglob("*.db"))


def test_a_config_file_with_several_errors_names_each_on_its_own_line(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(workdir, GOOD_MODEL + "data: sklearn:mnist\nsearch:\n  trials: 0\n"
                        "  seeds: 1.5\n  verbose: 3\n")
    assert main(["search", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"stabilizer search: error: {path}: 4 problems:"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  - data='sklearn", "  - search.trials=0", "  - search.seeds=1.5",
        "  - search.verbose=3"]


@pytest.mark.parametrize("flags, verbose", [([], 1), (["-q"], 0), (["--verbose"], 2)])
def test_quiet_and_verbose_flags_set_the_search_verbosity(
        flags: list[str], verbose: int, workdir: Path) -> None:
    from stabilizer.cli._run import load_config

    path = write_config(workdir, GOOD_MODEL + GOOD_DATA)
    args = build_parser().parse_args(["search", str(path), *flags])
    assert load_config(str(path), args)[0].search.verbose == verbose
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", str(path), "-q", "-v"])  # one or the other


def test_a_config_error_runs_no_user_code(workdir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(workdir, "model: bad_models.py:marked\n" + GOOD_DATA + "trails: 1\n")
    assert main(["search", str(path)]) == 2
    assert not (workdir / "called").exists()
    assert "unknown key 'trails'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["search"], ["search", "c.yaml", "--trials", "x"],
                                  ["report"], ["frobnicate"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: stabilizer" in capsys.readouterr().err


def test_report_of_a_missing_study_creates_nothing(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "nope", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stabilizer report: error: storage='sqlite:///")
    assert "nope.db' not found" in err
    assert not (tmp_path / "out").exists()
    journal = tmp_path / "runs" / "study.log"
    assert main(["report", "nope", "--storage", f"journal://{journal}",
                 "--out", str(tmp_path / "out")]) == 2
    assert "journal file" in capsys.readouterr().err
    assert not journal.parent.exists()  # not created by looking


def test_diagnose_reports_config_errors_the_same_way(workdir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(workdir, "model: bad_models.py:not_a_model\n" + GOOD_DATA)
    assert main(["diagnose", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stabilizer diagnose: error: model='bad_models.py:not_a_model'")


# -- the config object ----------------------------------------------------------------------------
def test_run_config_round_trips_and_takes_flag_overrides(tmp_path: Path) -> None:
    run = RunConfig.from_yaml(EXAMPLE)
    assert run.model == "models.py:digits_mlp" and run.data == "sklearn:digits"
    assert run.search.space == "quick" and run.search.study_name == "digits"
    assert RunConfig.from_yaml(run.to_yaml()) == run
    changed = run.with_search(trials=2, storage=None, out_dir=str(tmp_path))
    assert (changed.search.trials, changed.search.out_dir) == (2, str(tmp_path))
    assert changed.search.probe_steps == run.search.probe_steps  # the rest kept
    assert RunConfig.from_dict({"model": "m:f", "data": "sklearn:iris"}).search == SearchConfig()
    with pytest.raises(ConfigError, match="unknown search setting 'trails'"):
        run.with_search(trails=3)


def test_the_training_length_flags_replace_the_files_length(tmp_path: Path) -> None:
    path = write_config(tmp_path, "model: m.py:f\ndata: sklearn:digits\nsearch: {epochs: 20}\n")
    parser = build_parser()
    assert load_config(str(path))[0].search.epochs == 20
    run, _ = load_config(str(path), parser.parse_args(["search", str(path),
                                                        "--train-steps", "5000"]))
    assert (run.search.train_steps, run.search.epochs) == (5000, None)
    run, _ = load_config(str(path), parser.parse_args(["search", str(path), "--epochs", "3"]))
    assert (run.search.train_steps, run.search.epochs) == (None, 3)
    with pytest.raises(ConfigError, match="command line: epochs=0: expected a value >= 1"):
        load_config(str(path), parser.parse_args(["search", str(path), "--epochs", "0"]))
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args(["search", str(path), "--epochs", "3", "--train-steps", "9"])


def test_relative_paths_are_read_from_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(MODELS, folder / "models.py")
    np.savez(folder / "train.npz", x=np.random.default_rng(0).random((80, 64), "float32"),
             y=np.arange(80) % 10)
    (folder / "space.yaml").write_text("learning_rate: [0.001, 0.01]\n")
    path = write_config(folder, "model: models.py:digits_mlp\ndata: train.npz\n"
                                "search: {space: space.yaml}\n")
    run = RunConfig.from_yaml(path)
    prepared = prepare_run(run, path.parent)
    assert prepared.build_fn.__name__ == "digits_mlp"
    x, y = prepared.data
    assert x.shape == (80, 64) and y.shape == (80,)
    assert prepared.space.name == "space" and prepared.space.searched() == ["learning_rate"]
    assert load_target("model", "models:digits_mlp", folder)().count_params() > 0


def test_a_keras_tuner_style_factory_is_checked_with_default_hyperparameters(
        tmp_path: Path) -> None:
    run = RunConfig(model=f"{MODELS}:digits_mlp_hp", data="sklearn:digits",
                    search=SearchConfig(out_dir=str(tmp_path)))
    assert prepare_run(run, tmp_path).build_fn.__name__ == "digits_mlp_hp"


@pytest.mark.parametrize("name", SKLEARN_DATASETS)
def test_bundled_data_sets_load_ready_to_train(name: str) -> None:
    x, y = load_data(f"sklearn:{name}", Path.cwd())
    assert x.dtype == np.float32 and np.isfinite(x).all() and len(x) == len(y) > 100
    if name == "digits":
        assert 0 <= x.min() and x.max() <= 1
    else:
        assert np.allclose(x.mean(axis=0), 0, atol=1e-4)
    assert y.dtype == (np.float32 if name == "diabetes" else np.int32)


# -- show-space -----------------------------------------------------------------------------------
def test_show_space_prints_loadable_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show-space", "quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# space 'quick': small space for a first look\n# searched: ")
    assert yaml.safe_load(out) == load_space("quick").to_dict()


def test_show_space_json_and_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show-space", "default", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "default" and data["dimensions"] == load_space("default").to_dict()
    assert main(["show-space"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == bundled_spaces()
    assert main(["show-space", "nope"]) == 2
    assert "space='nope': not a bundled space" in capsys.readouterr().err


# -- progress -------------------------------------------------------------------------------------
def record(number: int, state: str = "COMPLETE", score: float | None = 1.0,
           verdict: str = "stable", seconds: float = 10.0) -> TrialRecord:
    comps = {"verdict": verdict} if state == "COMPLETE" else None
    return TrialRecord(number, state, score, StabilityConfig(), {}, comps, [], seconds=seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_and_estimates() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ProgressLine(5, stream=stream, clock=clock, existing=[record(0, score=0.5)])
    clock.now += 30
    progress(record(1, score=1.25, seconds=20))
    clock.now += 40
    progress(record(2, score=-50.0, verdict="diverged", seconds=40))
    progress(record(3, state="PRUNED", score=None, seconds=3))
    progress(record(4, state="FAIL", score=None, seconds=1))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # not a terminal: one line per finished trial
    assert lines[0] == ("[2/5] ########------------ best 1.250 | diverged 0 | pruned 0 | "
                        "failed 0 | 0:30 elapsed, ~1:00 left")
    # 4 of 5 done (the failure does not count); mean of this session's 4 trials is 16 s.
    assert lines[-1] == ("[4/5] ################---- best 1.250 | diverged 1 | pruned 1 | "
                         "failed 1 | 1:10 elapsed, ~0:16 left")


def test_progress_rewrites_one_line_on_a_terminal_and_is_silent_when_quiet() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    progress = ProgressLine(2, stream=term)
    progress(record(0))
    progress(record(1))
    progress.close()
    text = term.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    quiet = io.StringIO()
    silent = ProgressLine(2, stream=quiet, quiet=True)
    silent.note("probing")
    silent(record(0))
    silent.close()
    assert quiet.getvalue() == ""


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 42.4, 725, 3723, float("nan"))] == [
        "0:00", "0:42", "12:05", "1:02:03", "?"]


# -- end to end -----------------------------------------------------------------------------------
def _cli() -> list[str]:
    script = shutil.which("stabilizer")
    return [script] if script else [sys.executable, "-m", "stabilizer.cli"]


@pytest.mark.slow
def test_search_end_to_end_writes_a_loadable_report(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([*_cli(), "search", str(EXAMPLE), "--trials", "3", "--out", str(out),
                           "--study-name", "e2e"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = out / "e2e"
    assert f"report: {folder / 'report.html'}" in proc.stdout
    assert "[3/3] ####################" in proc.stderr  # the progress line reached the budget
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.yaml", "report.html", "summary.json", "trials.csv"]

    # best.yaml loads, and with the factory rebuilds a model that trains.
    best = StabilityConfig.from_yaml(folder / "best.yaml")
    result = load_result("e2e", f"sqlite:///{out / 'e2e.db'}")
    assert result.best_config == best
    result.build_fn = load_target("model", f"{MODELS}:digits_mlp", REPO)
    model = result.build_model(seed=0)
    assert isinstance(model, keras.Model) and model.compiled
    if best.learning_rate is not None:
        assert float(model.optimizer.learning_rate) == pytest.approx(best.learning_rate,
                                                                     rel=1e-5)
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    history = model.fit((x[:64] / 16).astype("float32"), y[:64], epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])

    # one CSV row per trial (after the baseline row), matching the study and summary.json
    with open(folder / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads((folder / "summary.json").read_text())
    assert rows[0]["number"] == "-1" and rows[0]["state"] == "BASELINE"
    assert [int(r["number"]) for r in rows[1:]] == [t.number for t in result.trials]
    assert len(rows) - 1 == summary["trials"] == len(result.trials) >= 3
    assert summary["study_name"] == "e2e" and summary["space"] == "quick"
    assert summary["settings"]["probe_steps"] == 40  # the example's, kept under the flags

    # the HTML embeds the plots, each with its alt text
    page = (folder / "report.html").read_text()
    for alt in ("Loss curves of the baseline and the chosen configuration over seeds",
                "Gradient norm traces per layer", "Score components across trials"):
        assert f"<img alt='{alt}" in page
    assert page.count("src='data:image/png;base64,") >= 3

    # `report` rebuilds the same table from storage alone
    assert main(["report", "e2e", "--out", str(tmp_path / "again"), "--storage",
                 f"sqlite:///{out / 'e2e.db'}", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "again" / "e2e" / "report.html")
    assert (tmp_path / "again" / "e2e" / "trials.csv").read_text() == \
        (folder / "trials.csv").read_text()

    # re-running the same command resumes the finished study: nothing new is probed
    assert main(["search", str(EXAMPLE), "--trials", "3", "--out", str(out),
                 "--study-name", "e2e", "--quiet"]) == 0
    assert len(load_result("e2e", f"sqlite:///{out / 'e2e.db'}").trials) == len(result.trials)


@pytest.mark.slow
def test_diagnose_prints_the_diagnosis(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, GOOD_MODEL + GOOD_DATA + "search: {probe_steps: 20, "
                        "evaluations: 2, seeds: 1, out_dir: " + str(tmp_path / "out") + "}\n")
    assert main(["diagnose", str(path), "--format", "json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"].endswith("models.py:digits_mlp")
    assert data["steps"] == 20 and len(data["seeds"]) == 1
    assert data["worst"] in ("ok", "info", "warning", "error")
    assert not (tmp_path / "out").exists()  # a diagnosis makes no study


INTERRUPTING_MODEL = """
import keras

calls = {"n": 0}


def build():
    calls["n"] += 1
    # the config check, the check before the search, the baseline, trial 0; then Ctrl-C
    # in trial 1
    if calls["n"] == 5:
        raise KeyboardInterrupt
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model
"""


@pytest.mark.slow
def test_ctrl_c_writes_the_report_of_what_finished_and_exits_130(tmp_path: Path, capsys):
    (tmp_path / "model.py").write_text(INTERRUPTING_MODEL)
    config = tmp_path / "run.yaml"
    config.write_text("model: model.py:build\ndata: sklearn:digits\nsearch:\n  space: quick\n"
                      "  trials: 3\n  seeds: 1\n  probe_steps: 6\n  evaluations: 2\n"
                      "  prune: false\n  diagnose: false\n  study_name: cut\n"
                      f"  out_dir: {tmp_path / 'out'}\n")
    assert main(["search", str(config)]) == 130
    err = capsys.readouterr().err
    folder = tmp_path / "out" / "cut"
    assert f"partial report: {folder / 'report.html'}" in err and "interrupted" in err
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["states"]["complete"] == 1 and summary["states"]["failed"] == 1
    assert (folder / "report.html").is_file() and (folder / "best.yaml").is_file()


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["show-space"],
                                  ["show-space", "default"], ["search"],
                                  ["search", "no-such-config.yaml"]])
def test_help_version_spaces_and_argument_errors_import_no_framework(argv, tmp_path):
    """They answer without importing Keras, its backend or Optuna (the figures are in
    benchmarks/startup.py, not timed here)."""
    script = ("import sys\nfrom stabilizer.cli import main\n"
              f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
              "heavy = sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch', 'optuna')"
              " if m in sys.modules)\nprint('HEAVY', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []", proc.stdout + proc.stderr


def test_diagnose_fail_on_exits_non_zero_when_a_finding_reaches_the_severity(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "exploding.py").write_text(
        "import keras\n"
        "def mlp():\n"
        "    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation='relu'),"
        " keras.layers.Dense(10, activation='softmax')])\n"
        "    m.compile(keras.optimizers.Adam(1.0), 'sparse_categorical_crossentropy')\n"
        "    return m\n")
    settings = "search: {probe_steps: 20, evaluations: 2, seeds: 1}\n"
    exploding = write_config(tmp_path, "model: exploding.py:mlp\n" + GOOD_DATA + settings)
    assert main(["diagnose", str(exploding), "--quiet", "--fail-on", "warning"]) == 3
    err = capsys.readouterr().err
    assert "at warning or above" in err and "exit status 3" in err
    assert main(["diagnose", str(exploding), "--quiet"]) == 0  # without --fail-on: reported
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("verdict: ")  # -q: the verdict line alone
    assert "; unhealthy: " in out[0] and "error" in out[0]
    assert main(["diagnose", str(exploding), "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    first, second = out.splitlines()[:2]
    assert first.startswith("verdict: ")
    assert second.startswith("components: final val_loss ") and "seed spread" in second
    assert "Per evaluation (seed" in out and "next: stabilizer search" in out
    assert main(["diagnose", str(exploding), "--fail-on", "fatal"]) == 2  # not a severity


def test_a_dry_run_prints_the_plan_and_creates_nothing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    path = write_config(tmp_path, GOOD_MODEL + GOOD_DATA + "search: {trials: 6, epochs: 20, "
                        "out_dir: out, study_name: planned}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["search", str(path), "--dry-run", "--seeds", "3", "--probe-steps", "60"]) == 0
    out = capsys.readouterr().out
    assert "study:      'planned' in sqlite:///out/planned.db" in out
    assert "probes:     3 seed(s) x 60 steps" in out
    assert "candidates compared at 60, 180 steps" in out  # 20 epochs of 1,437 rows: 900 steps
    # (6 + 1) x 3 x 60 + 60 for the range test; the ladder: (2 + 1) x 3 x 180
    assert ("at most 2,940 optimizer steps (1,320 for your configuration, the trials and the "
            "LR range test; 1,620 for the ladder)") in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no study, no folder
    path.write_text(path.read_text().replace("out_dir: out,", "out_dir: out, final_seeds: 6,"))
    assert main(["search", str(path), "--dry-run", "--seeds", "3", "--probe-steps", "60"]) == 0
    # the two finalists at 180 steps and yours on 3 more seeds: 3 x 3 x 180
    assert ("at most 4,560 optimizer steps (1,320 for your configuration, the trials and the "
            "LR range test; 1,620 for the ladder; 1,620 for the finalists on 6 seeds)"
            ) in capsys.readouterr().out
    assert main(["search", str(path), "--dry-run", "--seeds", "0"]) == 2
    assert "seeds=0" in capsys.readouterr().err

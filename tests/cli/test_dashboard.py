"""`stabilizer dashboard` serves a study in optuna-dashboard, and says what it needs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from stabilizer.cli import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _study(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    study = optuna.create_study(study_name="demo", storage=url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("learning_rate", 1e-4, 1e-1, log=True), n_trials=2)
    return url


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8", "replace")


def test_the_dashboard_serves_the_study_on_localhost_and_stops(tmp_path):
    pytest.importorskip("optuna_dashboard")
    url, port = _study(tmp_path), _free_port()
    log = tmp_path / "dashboard.log"
    log_file = log.open("w")
    server = subprocess.Popen([sys.executable, "-m", "stabilizer.cli", "dashboard", "demo",
                               "--storage", url, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline, page = time.monotonic() + 90, None
        while page is None and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()
            try:
                page = _get(f"http://127.0.0.1:{port}/dashboard/")
            except OSError:
                time.sleep(0.5)
        assert page is not None and page[0] == 200 and "<html" in page[1].lower()
        status, body = _get(f"http://127.0.0.1:{port}/api/studies")
        assert status == 200 and "demo" in [s["study_name"]
                                            for s in json.loads(body)["study_summaries"]]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log_file.close()
    assert server.returncode is not None  # stopped


def test_without_optuna_dashboard_it_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails
    assert main(["dashboard", "demo", "--storage", _study(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "optuna-dashboard is not installed" in err and "stabilizer[dashboard]" in err


def test_a_missing_study_is_named_before_anything_is_served(tmp_path, capsys):
    pytest.importorskip("optuna_dashboard")
    assert main(["dashboard", "nope", "--storage", _study(tmp_path)]) == 2
    assert "study 'nope' not found" in capsys.readouterr().err
    assert main(["dashboard", "demo", "--out", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

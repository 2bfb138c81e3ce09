"""Three worker processes on one study in a real PostgreSQL server.

The fixture starts a private PostgreSQL cluster (Debian's ``postgresql`` package:
``initdb`` / ``pg_ctl``) in a temporary folder, listening on 127.0.0.1 only, with
password authentication (so the storage URL carries a password that must never be
printed). As root it runs the server as the ``postgres`` user (``initdb`` refuses
root). Where no PostgreSQL binaries exist or the server cannot start, the test is
skipped and the reason is printed: ``.ci/run`` installs the package first.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from stabilizer.search.optuna import is_baseline_trial, open_storage

TESTS = Path(__file__).resolve().parents[1]
PASSWORD = "pg-s3cret-Xy7"


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _skip(request: pytest.FixtureRequest, reason: str) -> None:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\ntests/test_postgres.py SKIPPED: {reason}", file=sys.stderr, flush=True)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest):
    """A storage URL to a fresh database on a private PostgreSQL server."""
    bin_dir = _binaries()
    if bin_dir is None:
        _skip(request, "no PostgreSQL binaries (initdb) found; install Debian's 'postgresql' "
                       "package (apt-get install -y postgresql), as .ci/run does")
    try:
        import psycopg2
    except ImportError:
        _skip(request, "psycopg2 is not installed (pip install -e '.[dev]')")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _skip(request, "running as root and there is no 'postgres' user to run the server")
        if shutil.which("runuser") is None:
            _skip(request, "running as root and 'runuser' is missing")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="stabilizer-pg-"))
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    folder.chmod(0o700)
    data, log, pwfile = folder / "data", folder / "server.log", folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if owner is not None:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=180)

    init = run(str(bin_dir / "initdb"), "-D", str(data), "-U", "stab", "--pwfile", str(pwfile),
               "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        _skip(request, f"initdb failed: {(init.stderr or init.stdout).strip()[-500:]}")
    start = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "120",
                "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start")
    if start.returncode != 0:
        text = log.read_text()[-500:] if log.exists() else start.stderr
        shutil.rmtree(folder, ignore_errors=True)
        _skip(request, f"the PostgreSQL server did not start: {text.strip()}")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="stab", password=PASSWORD,
                                dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE stabilizer")
        conn.close()
        yield f"postgresql+psycopg2://stab:{PASSWORD}@127.0.0.1:{port}/stabilizer"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


WORKER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    import scenarios
    from stabilizer import stabilize

    LOG = {log!r}

    def build(hp):
        # one line per probe: which trial (or the baseline) and which process ran it
        trial = getattr(hp, "trial", None)
        with open(LOG, "a") as log:
            log.write(f"{{trial.number if trial is not None else 'baseline'}} {{os.getpid()}}\\n")
        hp.Choice("units", [16, 32])
        return scenarios.healthy_mlp()

    x, y = scenarios.digits()
    result = stabilize(build, (x[:300], y[:300]), space="quick", budget={budget}, seeds=1,
                       probe_steps=20, evaluations=2, prune=False, storage={storage!r},
                       study_name="shared", out_dir={out!r}, verbose=True,
                       diagnose_after=False, horizon_fraction=0.0)
    print("STORAGE", result.storage)
    print(result.summary())
""")


@pytest.mark.slow
def test_three_workers_share_one_postgres_study(postgres_url, tmp_path):
    budget, workers = 6, 3
    log = tmp_path / "probes.log"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), log=str(log), budget=budget,
                                    storage=postgres_url, out=str(tmp_path)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(workers)]
    outputs = []
    deadline = time.time() + 900
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=max(1, deadline - time.time()))[0])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = [t for t in study.get_trials() if not is_baseline_trial(t)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget  # the expected number of trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # the only other rows are trials opened as the budget ran out, closed before any probe
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)

    lines = [line.split() for line in log.read_text().splitlines()]
    # The baseline (its diagnosis: probes, LR range test) is built by one worker only; every
    # worker builds the model once more, outside any trial, for the check before its search.
    builds = Counter(pid for tag, pid in lines if tag == "baseline")
    assert sorted(builds.values())[:-1] == [1] * (workers - 1) and max(builds.values()) > 1
    probes = Counter(tag for tag, _ in lines if tag != "baseline")
    assert all(count == 1 for count in probes.values()), probes  # no duplicate
    assert set(probes) == {str(t.number) for t in complete}  # no lost trial

    pids = {proc.pid for proc in procs}
    owners = Counter(t.user_attrs["worker"]["pid"] for t in complete)
    assert set(owners) <= pids and len(owners) >= 2, owners  # they did cooperate

    for out in outputs:  # the password is never printed, in results, logs or summaries
        assert PASSWORD not in out
        assert "STORAGE postgresql+psycopg2://stab:***@127.0.0.1" in out


def _fresh_database(url: str, name: str) -> str:
    """A new, empty database on the fixture's server; its storage URL."""
    import psycopg2

    parts = make_url(url)
    conn = psycopg2.connect(host=parts.host, port=parts.port, user=parts.username,
                            password=parts.password, dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return parts.set(database=name).render_as_string(hide_password=False)


def test_workers_opening_a_fresh_database_at_once_all_get_the_storage(postgres_url):
    # Workers started together all create Optuna's schema in an empty database at the same
    # moment; the losers of that race (a duplicate type or table) must open it, not fail.
    url = _fresh_database(postgres_url, "race")
    workers = 8
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    storages: list[optuna.storages.BaseStorage] = []

    def open_one() -> None:
        barrier.wait()
        try:
            storages.append(open_storage(url))
        except BaseException as exc:  # noqa: BLE001 - collected and shown by the assert
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(storages) == workers
    study = optuna.create_study(storage=storages[0], study_name="after-the-race")
    assert optuna.load_study(study_name="after-the-race", storage=storages[-1]).study_name \
        == study.study_name

"""A real PostgreSQL server lets separate processes fill one Optuna study; and the server finder skips cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tune import conftest as pg

# Each worker waits until both have started, so their trials interleave on the server instead of running in turn.
WORKER = """
import os, sys, time
from pathlib import Path
import optuna

url, name, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name=name, storage=url, load_if_exists=True)
(ready / str(os.getpid())).touch()
deadline = time.monotonic() + 30
while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    trial.set_user_attr("pid", os.getpid())
    time.sleep(0.2)  # s; long enough that the two workers' trials overlap
    return x**2

study.optimize(objective, n_trials=5)
"""


def test_two_processes_share_one_study(postgres_url, tmp_path):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="shared", storage=optuna.storages.RDBStorage(postgres_url))
    ready = tmp_path / "ready"
    ready.mkdir()

    workers = [subprocess.Popen([sys.executable, "-c", WORKER, postgres_url, "shared", str(ready)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0, out

    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    assert len(trials) == 10
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["pid"] for t in trials} == {w.pid for w in workers}
    first, second = ([t for t in trials if t.user_attrs["pid"] == w.pid] for w in workers)
    # the two runs overlap in time: each started before the other finished
    assert min(t.datetime_start for t in first) < max(t.datetime_complete for t in second)
    assert min(t.datetime_start for t in second) < max(t.datetime_complete for t in first)


def _fake_server(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for tool in pg.PG_TOOLS:
        (folder / tool).write_text("#!/bin/sh\n")
        (folder / tool).chmod(0o755)
    return folder


def test_finder_returns_none_without_postgres(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pg, "PG_BIN_GLOB", str(tmp_path / "postgresql" / "*" / "bin"))
    assert pg.find_pg_bin() is None


def test_finder_picks_the_newest_version(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(pg, "PG_BIN_GLOB", str(tmp_path / "postgresql" / "*" / "bin"))
    _fake_server(tmp_path / "postgresql" / "9.6" / "bin")
    newest = _fake_server(tmp_path / "postgresql" / "15" / "bin")
    assert pg.find_pg_bin() == newest


def test_finder_follows_a_symlink_on_path(tmp_path, monkeypatch):
    real = _fake_server(tmp_path / "opt" / "pg" / "bin")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "initdb").symlink_to(real / "initdb")  # like /usr/local/bin/initdb on Debian
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(pg, "PG_BIN_GLOB", str(tmp_path / "none" / "*" / "bin"))
    assert pg.find_pg_bin() == real

"""`cnnfit tune` end to end on the digits set: grid, pruning, refit, resume after a kill, and two processes
sharing one study on a real PostgreSQL server."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cnnfit.cli import main
from cnnfit.config import load_config
from cnnfit.tune import tune

GRID = ["space.lr=choice([0.001, 0.003, 0.01])", "space.batch=choice([32, 64, 128])"]
QUICK = ["data=digits", "epochs=1", "model=simplecnn", "train.log_every=1000"]


def _study(tune_dir: Path, name: str = "tune") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tune_dir / 'study.db'}")


def _states_read_only(db: Path) -> list[str]:
    """Trial states read without creating tables: optuna's loader would race the worker creating them."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return [state for (state,) in conn.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:  # no file yet, or the worker has not created its tables yet
        return []


def test_grid_over_3x3_runs_exactly_nine_distinct_trials_on_two_workers(tmp_path):
    cfg = load_config([*QUICK, *GRID, "tune.sampler=grid", "pruner=none", "refit=false", "workers=2",
                       f"project={tmp_path}"])
    result = tune(cfg)
    trials = _study(result.dir).trials
    assert len(trials) == 9 and all(t.state == TrialState.COMPLETE for t in trials)
    points = {(t.params["optim.lr"], t.params["train.batch"]) for t in trials}
    assert len(points) == 9  # every grid point, none twice
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes took trials
    rows = (result.dir / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 9
    best = load_config([f"config={result.dir / 'best.yaml'}"])
    top = _study(result.dir).best_trial  # the study's direction: val_loss (digits' 269 val images) is minimized
    assert top.value == min(t.value for t in trials)
    assert (best.optim.lr, best.train.batch) == (top.params["optim.lr"], top.params["train.batch"])
    assert not (result.dir / "refit").exists()
    assert all((Path(t.user_attrs["run_dir"]) / "metrics.json").exists() for t in trials)
    # trials never look at the test split: their metrics are the val split's
    assert json.loads((Path(trials[0].user_attrs["run_dir"]) / "metrics.json").read_text())["split"] == "val"


def test_tpe_with_median_pruning_prunes_bad_trials_and_refits_once_on_test(tmp_path):
    # learning rates up to 3 ruin some trials within an epoch: the median pruner stops those
    cfg = load_config(["data=digits", "epochs=3", "model=simplecnn", "space.lr=loguniform(1e-4, 3)", "trials=8",
                       "tune.sampler=tpe", "pruner=median", f"project={tmp_path}"])
    result = tune(cfg)
    trials = _study(result.dir).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 8
    assert TrialState.PRUNED in states
    pruned = next(t for t in trials if t.state == TrialState.PRUNED)
    assert pruned.user_attrs["epochs_run"] < 3 and "pruned" in pruned.user_attrs["stop"]
    refit = json.loads((result.dir / "refit" / "metrics.json").read_text())
    assert refit["split"] == "test" and refit["accuracy"] == result.summary["refit"]["test_accuracy"] > 0.8
    assert len(json.loads((result.dir / "refit" / "split.json").read_text())["train"]) > len(
        json.loads((Path(trials[0].user_attrs["run_dir"]) / "split.json").read_text())["train"])  # train+val
    assert (result.dir / "tune_report.html").exists() and (result.dir / "plots" / "history.png").exists()


def test_a_killed_search_resumes_the_same_study_and_loses_no_trial(tmp_path):
    args = [*QUICK, "epochs=2", *GRID, "sampler=grid", "pruner=none", "refit=false", f"project={tmp_path}",
            "name=search"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnfit", "tune", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = tmp_path / "search" / "study.db"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # kill -9 once two trials have finished and a third is running
            states = _states_read_only(db)
            if states.count("COMPLETE") >= 2 and "RUNNING" in states:
                break
            time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = _study(db.parent, "search").trials
    lost = [t.params for t in before if t.state == TrialState.RUNNING]
    assert lost and len(before) == 9  # the grid was enqueued whole; some ran, one was cut
    assert main(["tune", *args, "resume=true"]) == 0
    after = _study(db.parent, "search").trials
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert [t.number for t in after[: len(before)]] == [t.number for t in before]  # the same study, continued
    assert len(complete) == 9 and len({(t.params["optim.lr"], t.params["train.batch"]) for t in complete}) == 9
    assert any(t.params == lost[0] and "retry_of" in t.user_attrs for t in complete)  # the cut trial ran again


def test_a_grid_point_killed_before_its_values_were_drawn_is_queued_again_with_them():
    """Claimed from the queue (RUNNING) but cut before suggest(): the trial's params are still empty."""
    from cnnfit.tune.search import _retry_lost

    study = optuna.create_study()
    study.enqueue_trial({"optim.lr": 0.003, "train.batch": 64})
    assert study._pop_waiting_trial_id() is not None  # the claim a worker makes, then it is killed
    assert _retry_lost(study) == 1
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"optim.lr": 0.003, "train.batch": 64}]
    assert study.get_trials(states=(TrialState.FAIL,))[0].number == 0


def test_two_workers_on_postgresql_share_one_grid(postgres_url, tmp_path):
    args = [*QUICK, *GRID, "sampler=grid", "pruner=none", "refit=false", "name=grid_shared", f"storage={postgres_url}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "cnnfit", "tune", *args, f"project={tmp_path / f'machine{i}'}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = optuna.load_study(study_name="grid_shared", storage=postgres_url).trials
    assert len(trials) == 9 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(t.params["optim.lr"], t.params["train.batch"]) for t in trials}) == 9  # no grid point twice
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # the trials of both workers
    assert all("trial" in out for out in outputs)


@pytest.mark.parametrize("arg, message", [
    ("space.lr=often(1, 2)", "not a distribution"),
    ("space.colour=choice([red])", "not a setting a trial can vary"),
    ("space.batch=choice([0, 64])", "value 0 is not valid for train.batch"),
    ("space.lr=loguniform(0, 1)", "positive low end"),
    ("space.model=choice([simplecnn, lenet5])", "below lenet5's minimum of 12 px"),  # digits are 8 px
])
def test_bad_search_spaces_are_refused_before_anything_is_written(tmp_path, capsys, arg, message):
    assert main(["tune", "data=digits", arg, f"project={tmp_path}"]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_grid_needs_finite_values_and_resume_needs_a_study(tmp_path, capsys):
    assert main(["tune", "data=digits", "sampler=grid", "space.lr=loguniform(1e-4, 1e-1)", f"project={tmp_path}"]) == 2
    assert "sampler=grid needs a finite list" in capsys.readouterr().err
    assert main(["tune", "data=digits", "space.lr=choice([0.001])", "resume=true", f"project={tmp_path}"]) == 2
    assert "holds no study.db" in capsys.readouterr().err

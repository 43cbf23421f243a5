"""k-fold cross-validation: the fold split, `cv`'s out-of-fold files, workers, and a killed cv resumed exactly."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnnfit.cli import main
from cnnfit.config import load_config
from cnnfit.errors import CnnfitError
from cnnfit.pipeline import cv, train
from cnnfit.pipeline.prepare import prepare

# digits (1797 images, 8x8) on the CPU in deterministic mode: bit-identical reruns; 2 epochs, ~2 s a fold
FAST = {"data": "digits", "epochs": 2, "device": "cpu", "deterministic": True}
FAST_ARGS = ["data=digits", "epochs=2", "device=cpu", "deterministic=true"]


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    return cv(folds=5, project=str(tmp_path_factory.mktemp("runs")), name="five", **FAST)


def _held_out(fold_dir):
    with np.load(fold_dir / "oof.npz", allow_pickle=False) as z:
        return z["indices"], z["probs"]


def test_five_folds_cover_train_and_val_once_and_never_test(five):
    summary = json.loads((five.dir / "cv.json").read_text())
    assert summary == five.summary and summary["folds"] == 5 and len(summary["scores"]) == 5
    assert summary["runs"] == [f"fold{k}" for k in range(5)] and len(summary["test"]) == 5
    assert abs(summary["mean"] - np.mean(summary["scores"])) < 1e-12 and summary["mean"] > 0.8
    plain = prepare(load_config(data="digits")).parts  # the split a plain run of the same data and seed gets
    pool = np.union1d(plain["train"], plain["val"])
    with open(five.dir / "oof.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["index"]) for r in rows) == pool.tolist()  # every train+val image exactly once
    assert not set(int(r["index"]) for r in rows) & set(plain["test"].tolist())
    assert list(rows[0])[:4] == ["index", "file", "label", "fold"] and list(rows[0])[4:] == [
        f"prob_{c}" for c in map(str, range(10))]
    for k in range(5):
        split = json.loads((five.dir / f"fold{k}" / "split.json").read_text())
        indices, probs = _held_out(five.dir / f"fold{k}")
        assert indices.dtype == np.int64 and probs.dtype == np.float32 and probs.shape == (len(indices), 10)
        assert not set(split["train"]) & set(indices.tolist())  # the fold never trained on what it predicted
        assert split["val"] == indices.tolist() and split["test"] == plain["test"].tolist()
        assert f"fold {k} of 5 of train+val (stratified, seed 0)" in split["how"]
        assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert {int(r["fold"]) for r in rows} == set(range(5))


@pytest.mark.parametrize("args, message", [
    (["data.folds=1"], "data.folds=1 cuts nothing; use data.folds=2 or more"),
    (["data.fold=2"], "data.fold=2 needs data.folds=K"),
    (["data.folds=5", "data.fold=5"], "data.fold=5 is out of range for data.folds=5; use 0 to 4"),
    (["data.folds=5", "data.merge_val=true"], "data.folds and data.merge_val disagree"),
])
def test_fold_keys_are_refused_in_one_line(args, message):
    with pytest.raises(CnnfitError, match=message) as err:
        load_config(args)
    assert "\n" not in str(err.value)


def test_folds_without_a_fold_and_cv_with_a_fold_are_refused(tmp_path):
    with pytest.raises(CnnfitError, match=r"trains one fold: add data.fold=0..4, or run every fold with cnnfit cv"):
        train(project=str(tmp_path), **FAST, **{"data.folds": 5})
    with pytest.raises(CnnfitError, match="cnnfit cv trains every fold; drop data.fold=1"):
        cv(project=str(tmp_path), **FAST, **{"data.folds": 5, "data.fold": 1})
    assert main(["cv", "folds=five"]) == 2 and main(["cv", "workers=0"]) == 2
    assert not list(tmp_path.iterdir())  # refused before any folder is made


def test_workers_give_the_same_folds(five, tmp_path):
    again = cv(folds=5, workers=2, project=str(tmp_path), **FAST)
    assert again.dir.name == "cv" and again.summary == five.summary


def test_kill_during_the_third_fold_resumes_to_the_same_cv_json(five, tmp_path):
    cv_dir = tmp_path / "killed"
    # last.pt every 5 of an epoch's 20 steps: the kill lands mid-epoch, and the resume continues from inside it
    cmd = [sys.executable, "-m", "cnnfit", "cv", *FAST_ARGS, "folds=5", "ckpt_every=5", f"project={tmp_path}",
           "name=killed"]
    with open(tmp_path / "log.txt", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600  # a hang guard, not a speed check: shared CPUs run folds slowly
        while not (cv_dir / "fold2" / "last.pt").is_file():  # fold index 2, the third fold, has started training
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    assert (cv_dir / "fold1" / "oof.npz").is_file() and not (cv_dir / "fold2" / "oof.npz").is_file()
    assert not (cv_dir / "cv.json").exists()
    with pytest.raises(CnnfitError, match=r"resume: train.epochs=3 differs"):
        cv(resume=str(cv_dir), **{**FAST, "epochs": 3})
    assert main(["cv", *FAST_ARGS, f"resume={cv_dir}"]) == 0  # the same command, plus resume=
    assert json.loads((cv_dir / "cv.json").read_text()) == five.summary
    assert sorted(p.name for p in cv_dir.iterdir() if p.name.startswith("fold")) == [f"fold{k}" for k in range(5)]


def test_cv_with_devices_trains_every_fold_data_parallel(tmp_path):
    """`cnnfit cv devices=2`: torchrun's two processes train each fold together (one run directory per fold, its
    checkpoint from a world of 2); rank 0 alone writes the held-out predictions, oof.csv and cv.json."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    done = subprocess.run([sys.executable, "-m", "cnnfit", "cv", *FAST_ARGS, "folds=2", "devices=2",
                           f"project={tmp_path}", "name=ddp"], capture_output=True, text=True, timeout=600,
                          env={**env, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    summary = json.loads((tmp_path / "ddp" / "cv.json").read_text())
    assert len(summary["scores"]) == 2 and summary["oof_accuracy"] > 0.8, summary
    import torch

    for k in range(2):
        state = torch.load(tmp_path / "ddp" / f"fold{k}" / "last.pt", weights_only=True)["train_state"]
        assert state["world"] == 2
    with open(tmp_path / "ddp" / "oof.csv") as f:
        index = [int(r["index"]) for r in csv.DictReader(f)]
    assert len(index) == len(set(index)) == sum(len(json.loads((tmp_path / "ddp" / f"fold{k}" / "split.json")
                                                           .read_text())["val"]) for k in range(2))

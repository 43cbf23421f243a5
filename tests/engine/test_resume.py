"""Exact resume, interruption, non-finite losses and failed checkpoint writes, through cnnfit.train."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import cnnfit
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError, TrainingStopped

RECIPE = dict(data="digits", model="simplecnn", epochs=3, batch=64, deterministic=True, seed=0)


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model_state"]


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path, monkeypatch):
    ref = cnnfit.train(**RECIPE, project=str(tmp_path), name="ref")
    from cnnfit.engine.callbacks import progress

    real = progress.ProgressBar.on_step_end

    def sigterm_at_27(self, state):  # a real SIGTERM to this process after step 27 (mid-epoch 2 of 20 steps)
        real(self, state)
        if state.step == 27:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(progress.ProgressBar, "on_step_end", sigterm_at_27)
    # the signal lands during step 27's hooks, so the run stops cleanly at the end of step 28
    with pytest.raises(TrainingStopped, match="interrupted by SIGTERM at step 28") as err:
        cnnfit.train(**RECIPE, project=str(tmp_path), name="cut")
    assert err.value.code == 130
    cut = tmp_path / "cut"
    assert load_checkpoint(cut / "last.pt")["train_state"]["step"] == 28
    monkeypatch.undo()
    resumed = cnnfit.train(resume=str(cut))
    assert resumed.dir == cut and len(resumed.history) == 3
    assert resumed.timings["resumed_at_step"] == 28  # train_seconds counts from here, and the report says so
    assert "since the resume at step 28" in (cut / "report.html").read_text()
    assert _same(_weights(ref.dir), _weights(cut))
    assert [round(h["val_loss"], 6) for h in resumed.history] == [round(h["val_loss"], 6) for h in ref.history]


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """The benchmark version kills 10 runs; here two kills in one run keep the suite quick."""
    args = [f"{k}={v}" for k, v in RECIPE.items()] + ["ckpt_every=4", f"project={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "cnnfit", "train", *args, "name=ref"], env=env, check=True,
                   capture_output=True)
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "cnnfit", "train", *args, "name=cut"]
    kills = 0
    for delay in (0.3, 0.6):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (cut / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        cmd = [sys.executable, "-m", "cnnfit", "train", f"resume={cut}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert kills >= 1
    assert _same(_weights(tmp_path / "ref"), _weights(cut))


def test_resume_refuses_a_setting_that_changes_the_run(tmp_path):
    run = cnnfit.train(**{**RECIPE, "epochs": 1}, project=str(tmp_path))
    with pytest.raises(CnnfitError, match=r"resume: train.epochs=2 differs from the run's train.epochs=1.*resume.force=true"):
        cnnfit.train(resume=str(run.dir), epochs=2)
    with pytest.raises(CnnfitError, match="no last.pt"):
        cnnfit.train(resume=str(tmp_path / "nothing"))
    longer = cnnfit.train(resume=str(run.dir), epochs=2, resume__force=True, train__log_every=5)  # log_every is harmless
    assert len(longer.history) == 2


def test_a_diverging_run_stops_at_the_first_bad_step_and_keeps_good_checkpoints(tmp_path):
    with pytest.raises(TrainingStopped, match=r"NaN or Inf at step (\d+) .*lower lr") as err:
        cnnfit.train(data="digits", model="simplecnn", epochs=2, lr=1e6, optim="sgd", project=str(tmp_path))
    assert err.value.code == 1
    ckpt = load_checkpoint(tmp_path / "train" / "last.pt")
    bad = int(str(err.value).split("at step ")[1].split()[0])
    assert ckpt["step"] < bad
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.is_floating_point())


def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_previous_file(tmp_path, monkeypatch):
    from cnnfit.engine import checkpoint

    real_save = torch.save
    calls = {"n": 0}

    def disk_fills(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:  # the third write: half a file, then the disk is full
            f.write(b"\x80\x02partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", disk_fills)
    with pytest.raises(TrainingStopped, match="No space left on device.*previous last.pt is intact.*resume="):
        cnnfit.train(**RECIPE, ckpt_every=5, project=str(tmp_path))
    monkeypatch.undo()
    run_dir = tmp_path / "train"
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["step"] == 5
    assert not list(run_dir.glob(".*.tmp"))
    assert len(cnnfit.train(resume=str(run_dir)).history) == 3


def test_accumulated_micro_batches_match_one_large_batch(tmp_path):
    common = dict(data="digits", model="simplecnn", model__bn=False, model__dropout=0.0, epochs=3, seed=0,
                  deterministic=True, amp="off", aug="none", project=str(tmp_path))  # augmentation draws per batch
    big = cnnfit.train(batch=64, **common)
    small = cnnfit.train(batch=16, accumulate=4, **common)
    for a, b in zip(big.history, small.history):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 and abs(a["val_loss"] - b["val_loss"]) < 1e-4
    assert big.history[-1]["val_acc"] > 0.8


def test_ema_weights_are_validated_and_saved_as_best(tmp_path):
    run = cnnfit.train(data="digits", epochs=3, ema=0.9, project=str(tmp_path))
    best, last = load_checkpoint(run.dir / "best.pt"), load_checkpoint(run.dir / "last.pt")
    assert not _same(last["state_dict"], last["model_state"])  # the EMA differs from the raw weights
    assert last["ema"] is not None and run.accuracy > 0.8
    assert best["epoch"] == run.metrics["best_epoch"] - 1


def test_time_budget_ends_the_run_cleanly(tmp_path):
    run = cnnfit.train(data="digits", epochs=50, time=0.001, project=str(tmp_path))
    assert run.metrics["stop"].startswith("time budget of 0.001 minutes") and len(run.history) == 1
    assert (run.dir / "best.pt").exists()

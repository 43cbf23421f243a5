"""Data-parallel training under torchrun (gloo on CPU): the same numbers as one process, one run
directory, and a dead rank that ends the job quickly and resumably."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnfit
from cnnfit import distributed
from cnnfit.data import DeviceLoader
from cnnfit.data.augment import build as build_augment
from cnnfit.errors import CnnfitError

# lenet5 has neither batch norm nor dropout, so 2 ranks compute what one process does, up to float rounding
# deterministic: fp32; aug=none: augmentation draws differ between ranks
EXACT = ["data=digits", "model=lenet5", "imgsz=16", "lr=0.003", "deterministic=true", "aug=none"]
RUN = ["epochs=12", "ckpt_every=7", "patience=0"]  # last.pt every 7 of an epoch's 20 steps: mid-epoch ones too


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "cnnfit", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(), timeout=600)


def _single(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnfit", "train", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=600)


def _history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_rank_shares_make_up_the_global_batch():
    images = np.random.default_rng(0).integers(0, 256, (103, 1, 4, 4), dtype=np.uint8)
    labels = np.arange(103)  # one label per image: the batches below say exactly which images they hold
    common = dict(batch=10, device=torch.device("cpu"), mean=[0.5], std=[0.25], shuffle=True, seed=3)
    one = DeviceLoader(images, labels, **common)
    ranks = [DeviceLoader(images, labels, rank=r, world=2, augment_seed=distributed.rank_seed(3, r), **common)
             for r in range(2)]
    order = one.new_order()
    assert all(torch.equal(order, r.new_order()) for r in ranks)  # one global order on every rank
    whole = [y for _, y in one.iterate(order)]
    shares = [[y for _, y in r.iterate(order)] for r in ranks]
    assert len(ranks[0]) == len(one) == 11 and ranks[0].num_images == 103
    for step, y in enumerate(whole):
        together = torch.cat([shares[0][step], shares[1][step]])
        assert sorted(together.tolist()) == sorted(y.tolist())
        assert abs(len(shares[0][step]) - len(shares[1][step])) <= 1
    # a last batch with fewer images than ranks is dropped, so no rank ever gets an empty batch
    tail = DeviceLoader(images[:101], labels[:101], rank=1, world=2, **{**common, "batch": 20})
    assert tail.num_images == 100 and all(len(y) == 10 for _, y in tail)


def test_ranks_draw_their_own_augmentation():
    images = np.full((8, 1, 8, 8), 128, dtype=np.uint8)
    common = dict(batch=16, device=torch.device("cpu"), mean=[0.0], std=[1.0], augment=build_augment(noise=0.2))
    x0 = next(iter(DeviceLoader(images, np.zeros(8), rank=0, world=2, augment_seed=distributed.rank_seed(0, 0),
                                **common)))[0]
    x1 = next(iter(DeviceLoader(images, np.zeros(8), rank=1, world=2, augment_seed=distributed.rank_seed(0, 1),
                                **common)))[0]
    assert x0.shape == x1.shape == (4, 1, 8, 8)
    assert not torch.allclose(x0, x1)  # same images, independent noise
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 1) == distributed.rank_seed(7, 1) != 7


def test_what_differs_between_ranks_is_named_for_deterministic_runs():
    """deterministic=true cannot make per-rank dropout, batch norm or augmentation equal one process's: the
    run names them (an empty list is the promise that the numbers match)."""
    simple = cnnfit.models.create("simplecnn", num_classes=10, in_chans=1, imgsz=16)
    lenet = cnnfit.models.create("lenet5", num_classes=10, in_chans=1, imgsz=16)
    assert distributed.per_rank_draws(lenet, augment=False, mixing=False, sync_bn=False) == []
    assert distributed.per_rank_draws(lenet, augment=True, mixing=True, sync_bn=False) == ["augmentations",
                                                                                          "mixup/cutmix draws"]
    assert distributed.per_rank_draws(simple, augment=False, mixing=False, sync_bn=False) == ["dropout masks"]
    fast = cnnfit.models.create("fastnet", num_classes=10, in_chans=1, imgsz=16)
    assert distributed.per_rank_draws(fast, augment=False, mixing=False, sync_bn=False) == ["batch-norm statistics"]
    assert distributed.per_rank_draws(fast, augment=False, mixing=False, sync_bn=True) == []


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The single-process run the 2-process runs are held to: the same recipe and global batch."""
    root = tmp_path_factory.mktemp("one")
    done = _single([*EXACT, *RUN, "batch=64", f"project={root}", "name=one"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "one"


def test_torchrun_matches_one_process_and_writes_one_run_dir(tmp_path, one_process):
    """Checks 1 and 2: `torchrun --nproc_per_node=2` (gloo) writes one run directory; its test accuracy is within
    1 point of one process's, and with deterministic=true its loss after one epoch equals it to 1e-5."""
    two = _torchrun([*EXACT, *RUN, "batch=64", f"project={tmp_path / 'runs'}", "name=two"], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["two"]  # rank 1 wrote no directory of its own
    assert "2 processes (gloo)" in two.stdout and two.stdout.count("test accuracy") == 1
    acc2 = json.loads((tmp_path / "runs/two/metrics.json").read_text())["accuracy"]
    acc1 = json.loads((one_process / "metrics.json").read_text())["accuracy"]
    assert acc1 > 0.9 and abs(acc2 - acc1) <= 0.01, (acc2, acc1)
    h2, h1 = _history(tmp_path / "runs/two"), _history(one_process)
    assert abs(h2[0]["train_loss"] - h1[0]["train_loss"]) < 1e-5, (h2[0], h1[0])
    assert abs(h2[0]["val_loss"] - h1[0]["val_loss"]) < 1e-5, (h2[0], h1[0])
    assert h2[0]["train_acc"] == h1[0]["train_acc"]
    ckpt = torch.load(tmp_path / "runs/two/last.pt", weights_only=True)
    assert ckpt["train_state"]["world"] == 2 and len(ckpt["train_state"]["ranks"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # loads without DDP


def _rank_pid(tag: str, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"CNNFIT_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finding a rank's process needs /proc (Linux)")
def test_a_killed_rank_ends_the_job_quickly_and_resume_finishes_it(tmp_path, one_process):
    """Check 3: SIGKILL one rank of `devices=2`; the job ends within 60 s naming that rank, and resume= completes
    it with the numbers an uninterrupted single process gets (exact resume, per-rank RNG states included)."""
    run = tmp_path / "runs" / "k"
    # the kill usually lands after a mid-epoch last.pt, whose running sums (totals over both ranks) and per-rank
    # RNG states the resumed job must take up exactly; and 2 accumulated micro-batches of 32 (gradients
    # synchronized once per step) stand against one process's batch of 64
    args = [*EXACT, *RUN, f"project={tmp_path / 'runs'}"]
    tag = uuid.uuid4().hex
    job = subprocess.Popen([sys.executable, "-m", "cnnfit", "train", *args, "batch=32", "accumulate=2", "name=k",
                            "devices=2"], cwd=tmp_path,
                           env=_env(CNNFIT_TEST_TAG=tag), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and job.poll() is None:
            if (run / "history.csv").exists() and len((run / "history.csv").read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        pid = _rank_pid(tag, 1)
        assert job.poll() is None and pid is not None, "the job ended before a rank could be killed"
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        out, err = job.communicate(timeout=60)
        took = time.time() - killed
    finally:
        if job.poll() is None:
            job.kill()
    assert took < 60 and job.returncode == 1, (took, job.returncode, err[-2000:])
    assert "rank 1 of 2 ended the job (killed by SIGKILL)" in err
    assert f"resume={run} devices=2" in err
    done = len(_history(run))
    assert 2 <= done < 12

    resumed = _single([f"resume={run}", "devices=2"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    h2, h1 = _history(run), _history(one_process)
    assert [r["epoch"] for r in h2] == list(range(1, 13))
    for a, b in zip(h2, h1):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 and abs(a["val_loss"] - b["val_loss"]) < 1e-4, (a, b)


def test_distributed_settings_that_cannot_work_are_refused(tmp_path, monkeypatch):
    """Refused before any process group or run directory exists, each with the fix."""
    project = tmp_path / "runs"
    single = cnnfit.train(data="digits", epochs=1, project=str(project), name="single")
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    cases = [
        ({"train__sync_bn": True, "device": "cpu"}, "sync_bn=true needs CUDA GPUs"),
        ({"batch": 1}, "batch=1 is the global batch and is smaller than the 2 processes"),
        ({"train__devices": 3}, "devices=3, but torchrun started 2 processes"),
        ({"resume": str(single.dir)}, "was trained by 1 processes and this job has 2"),
        ({"train__repeats": 2}, "start one job per seed"),
    ]
    for overrides, message in cases:
        run = {} if "resume" in overrides else {"data": "digits", "epochs": 1, "project": str(project), "name": "no"}
        with pytest.raises(CnnfitError, match=message):
            cnnfit.train(**run, **overrides)
    assert sorted(p.name for p in project.iterdir()) == ["single"]

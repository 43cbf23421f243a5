"""Training options end to end through cnnfit.train and the command line: each one changes what it says."""

import json

import pytest

import cnnfit
from cnnfit.cli import main
from cnnfit.engine import load_checkpoint

QUICK = dict(data="digits", model="simplecnn", epochs=2, seed=0)


def test_lr_find_writes_the_curve_and_a_suggestion_inside_the_range(tmp_path, capsys):
    assert main(["lr-find", "data=digits", f"project={tmp_path}"]) == 0
    out = capsys.readouterr().out
    found = json.loads((tmp_path / "lr_find" / "lr_find.json").read_text())
    assert 1e-7 < found["lr"] < 10 and (tmp_path / "lr_find" / "lr_find.png").stat().st_size > 1000
    assert "suggested lr" in out and found["rule"].split()[0] in out


def test_repeats_report_mean_and_std_over_seeds(tmp_path):
    run = cnnfit.train(**QUICK, repeats=2, project=str(tmp_path), name="rep")
    summary = json.loads((run.dir / "repeats.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["accuracy"]["values"]) == 2
    assert summary["accuracy"]["mean"] == pytest.approx(sum(summary["accuracy"]["values"]) / 2)
    assert run.accuracy > 0.8 and (run.dir / "seed1" / "best.pt").exists()


def test_profile_and_tensorboard_write_into_the_run_directory(tmp_path):
    pytest.importorskip("tensorboard")
    run = cnnfit.train(**QUICK, profile=True, tensorboard=True, project=str(tmp_path))
    trace = json.loads((run.dir / "trace.json").read_text())
    assert trace["traceEvents"] and "aten::" in (run.dir / "profile.txt").read_text()
    assert list(run.dir.glob("events.out.tfevents.*"))


def test_l1_and_clipping_change_the_weights_and_still_learn(tmp_path):
    plain = cnnfit.train(**QUICK, deterministic=True, project=str(tmp_path), name="plain")
    tight = cnnfit.train(**QUICK, deterministic=True, l1=1e-4, clip_norm=0.5, project=str(tmp_path), name="l1")
    w0, w1 = (load_checkpoint(r.dir / "best.pt")["state_dict"] for r in (plain, tight))
    l1_norm = lambda w: sum(v.abs().sum() for k, v in w.items() if k.endswith("weight") and v.ndim > 1)  # noqa: E731
    assert l1_norm(w1) < l1_norm(w0)
    assert tight.accuracy > 0.8


def test_compile_is_checked_against_eager_gradients(tmp_path):
    pytest.importorskip("torch._inductor")
    from torch._dynamo.exc import BackendCompilerFailed

    try:
        run = cnnfit.train(data="digits", model="lenet5", imgsz=28, epochs=3, lr=3e-3, compile=True,
                           project=str(tmp_path))
    except BackendCompilerFailed as exc:  # no C++ compiler for inductor on this machine
        pytest.skip(f"torch.compile cannot build kernels here: {str(exc).splitlines()[0]}")
    assert run.timings["compile"].startswith("compile: gradients match eager"), run.timings["compile"]
    assert run.accuracy > 0.5


def test_schedules_and_plateau_train(tmp_path):
    for name, extra in (("multistep", {"schedule__milestones": [1]}), ("exponential", {}), ("plateau", {})):
        run = cnnfit.train(**QUICK, schedule=name, project=str(tmp_path), name=name, **extra)
        assert run.accuracy > 0.7, name
    lrs = [h["lr"] for h in cnnfit.train(**{**QUICK, "epochs": 3}, schedule="multistep", lr=0.01,
                                        schedule__milestones=[1, 2], project=str(tmp_path)).history]
    assert lrs == pytest.approx([0.001, 0.0001, 0.0001])


def test_merge_val_trains_on_val_and_does_not_score_it(tmp_path):
    """Val images that were trained on would only measure training: the val columns are nan, best.pt is the
    last epoch, and the curves leave val out."""
    import math

    run = cnnfit.train(data="digits", epochs=2, data__merge_val=True, project=str(tmp_path), name="merged")
    split = json.loads((run.dir / "split.json").read_text())
    assert split["val"] and set(split["val"]) <= set(split["train"])
    assert all(math.isnan(h["val_loss"]) and math.isnan(h["val_acc"]) for h in run.history)
    assert run.metrics["best_epoch"] == 2 and run.accuracy > 0.85
    assert (run.dir / "plots" / "curves.png").stat().st_size > 0
    page = (run.dir / "report.html").read_text()
    assert "val not scored: its images were trained on" in page and ">nan<" not in page
    report = json.loads((run.dir / "data_report.json").read_text())  # val inside train is by design, no error
    assert "split_overlap" not in {f["kind"] for f in report["findings"]} and "val" not in report["counts"]["per_split"]


def test_decoupled_hyperparameters_are_for_sgd_and_refused_elsewhere_before_any_file(tmp_path, capsys):
    code = main(["train", "data=digits", "optim=adamw", "optim.decoupled=true", f"project={tmp_path}"])
    assert code == 2 and "optim.decoupled=true is for sgd" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no run directory left behind

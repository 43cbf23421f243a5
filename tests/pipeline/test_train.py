"""End to end through the Python API: train, the run directory, eval, predict, repeat a run."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import cnnfit
from cnnfit.engine import load_checkpoint
from tests.conftest import make_folder, shared_dataset

RUN_FILES = {"config.yaml", "split.json", "best.pt", "last.pt", "history.csv", "metrics.json", "predictions.csv",
             "report.html", "plots"}
PLOTS = {"curves.png", "lr.png", "samples.png", "confusion.png", "confusion_normalized.png", "confusion.csv",
         "confusion_normalized.csv", "per_class_f1.png", "roc.png", "pr.png", "reliability.png", "wrong.png"}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return cnnfit.train(data="digits", epochs=6, project=str(tmp_path_factory.mktemp("runs")), name="d")


def test_digits_run_directory_is_complete(digits_run):
    assert digits_run.accuracy >= 0.9
    assert RUN_FILES <= {p.name for p in digits_run.dir.iterdir()}
    assert PLOTS <= {p.name for p in (digits_run.dir / "plots").iterdir()}
    metrics = json.loads((digits_run.dir / "metrics.json").read_text())
    assert metrics["accuracy"] == digits_run.accuracy and len(metrics["per_class"]) == 10
    assert metrics["num_images"] == len(json.loads((digits_run.dir / "split.json").read_text())["test"])
    with open(digits_run.dir / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_checkpoint_describes_itself(digits_run):
    ckpt = load_checkpoint(digits_run.dir / "best.pt")
    for key in ("model", "model_kwargs", "classes", "imgsz", "channels", "mean", "std", "config", "state_dict"):
        assert key in ckpt
    last = load_checkpoint(digits_run.dir / "last.pt")
    assert "optimizer" in last and last["step"] == 6 * 20


def test_eval_reproduces_the_training_metrics(digits_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # from another folder
    again = cnnfit.evaluate(digits_run.dir)
    assert again["accuracy"] == digits_run.accuracy
    assert again["confusion_matrix"] == digits_run.metrics["confusion_matrix"]
    assert again["timings"]["train_seconds"] > 0  # training figures survive a re-evaluation


def test_config_yaml_repeats_the_run(digits_run):
    cfg = cnnfit.load_config([f"config={digits_run.dir / 'config.yaml'}"])
    assert cfg.data.imgsz == 8 and cfg.optim.lr == 1e-3 and cfg.train.amp in ("bf16", "off")
    repeat = cnnfit.train(cfg, epochs=1)
    assert len(repeat.history) == 1
    assert repeat.dir != digits_run.dir and repeat.dir.name == "d2"  # never overwrites
    assert repeat.timings["cache_hit"]


def test_folder_predict_agrees_with_eval(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=20)
    (folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    run = cnnfit.train(data=str(folder), model="simplecnn", imgsz=16, epochs=3, batch=16,
                       project=str(tmp_path / "runs"))
    assert run.accuracy >= 0.9
    assert (run.dir / "skipped.txt").read_text().startswith(str(folder / "red" / "broken.jpg"))
    with open(run.dir / "predictions.csv") as f:
        evals = {r["file"]: r["pred"] for r in csv.DictReader(f)}
    rows = list(cnnfit.predict(run.dir, list(evals), topk=2, out=tmp_path / "p.csv").rows())
    assert {r["file"]: r["top1"] for r in rows} == evals
    assert all(r["prob1"] >= r["prob2"] for r in rows)
    with open(tmp_path / "p.csv") as f:
        assert len(list(csv.DictReader(f))) == len(evals)
    from_folder = cnnfit.predict(run.dir, [str(folder / "red")])  # a folder: every file in it, a bad one with why
    good = [r for r in from_folder.rows() if r["status"] == "ok"]
    assert from_folder.skipped == 1 and len(good) == 20 and sum(r["top1"] == "red" for r in good) >= 18
    assert (run.dir / "predict.csv").exists()


def test_real_hymenoptera_trains_from_its_own_split(tmp_path):
    root = shared_dataset("hymenoptera_data")
    run = cnnfit.train(data=str(root), imgsz=32, epochs=1, batch=32, project=str(tmp_path))
    split = json.loads((run.dir / "split.json").read_text())
    assert len(split["val"]) == 153 and len(split["train"]) == 245
    assert "measured on val" in split["how"]
    assert np.isfinite(run.accuracy)


def test_imbalanced_data_picks_macro_f1_and_weights_classes(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=24)
    for f in sorted((folder / "blue").iterdir())[4:]:
        f.unlink()  # blue: 4 images against 24: ratio 6
    run = cnnfit.train(data=str(folder), imgsz=16, epochs=2, batch=8, class_weight="balanced", sampler="balanced",
                       aug__only_minority=True, aug__hflip=True, project=str(tmp_path / "runs"))
    cfg = cnnfit.load_config([f"config={run.dir / 'config.yaml'}"])
    assert cfg.train.monitor == "val_macro_f1"
    assert "val_macro_f1" in run.history[0] and "val_balanced_acc" in run.history[0]


def test_class_weight_names_must_exist(tmp_path):
    with pytest.raises(cnnfit.CnnfitError, match="unknown classes \\['eleven'\\]"):
        cnnfit.train(data="digits", epochs=1, class_weight={"eleven": 2.0}, project=str(tmp_path))
    assert not (tmp_path / "train").exists()


def test_augmented_run_writes_data_report_and_samples(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=16)
    run = cnnfit.train(data=str(folder), imgsz=16, epochs=2, batch=8, aug__hflip=True, aug__rotation=15,
                       aug__brightness=0.2, aug__erasing=0.25, aug__mixup=0.2, aug__cutmix=1.0,
                       project=str(tmp_path / "runs"))
    report = json.loads((run.dir / "data_report.json").read_text())
    assert report["split"] and (run.dir / "plots" / "samples.png").stat().st_size > 1000
    assert (run.dir / "clean_manifest.csv").exists()
    assert np.isfinite(run.history[-1]["train_loss"])


def test_exclude_file_trains_on_the_cleaned_list(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=12)
    (tmp_path / "drop.txt").write_text(f"# leaked copies\n{folder / 'red' / '0.png'}\n*/green/1.jpg\n")
    run = cnnfit.train(data=str(folder), imgsz=16, epochs=1, batch=8, exclude=str(tmp_path / "drop.txt"),
                       project=str(tmp_path / "runs"))
    split = json.loads((run.dir / "split.json").read_text())
    assert sum(len(split[k]) for k in ("train", "val", "test")) == 36 - 2
    with pytest.raises(cnnfit.CnnfitError, match="exclude file"):
        cnnfit.train(data=str(folder), exclude="missing.txt", project=str(tmp_path / "runs2"))
    assert not (tmp_path / "runs2").exists()


def test_fine_tune_from_a_run_keeps_the_frozen_backbone(tmp_path):
    common = dict(data="digits", model="resnet20", imgsz=16, project=str(tmp_path))
    source = cnnfit.train(name="source", epochs=2, **common)
    tuned = cnnfit.train(name="tuned", epochs=2, init=str(source.dir), freeze="backbone", head_lr_mult=3, **common)
    report = json.loads((tuned.dir / "init.json").read_text())
    assert not report["missing"] and not report["unexpected"] and not report["new_head"]  # same classes
    before = load_checkpoint(source.dir / "best.pt")["state_dict"]
    after = load_checkpoint(tuned.dir / "best.pt")["state_dict"]
    backbone = [k for k in after if not k.startswith("head.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BN statistics
    assert tuned.accuracy > 0.8
    cfg = load_checkpoint(tuned.dir / "best.pt")["config"]
    assert cfg["finetune"]["freeze"] == "backbone" and cfg["model"]["init"] == str(source.dir.resolve())


def test_model_options_reach_the_model_and_its_checkpoint(tmp_path):
    run = cnnfit.train(data="digits", model="simplecnn", model__width=0.5, model__act="gelu", model__bn=True,
                       epochs=2, imgsz=12, project=str(tmp_path))
    ckpt = load_checkpoint(run.dir / "best.pt")
    assert ckpt["model_kwargs"] == {"width": 0.5, "bn": True, "act": "gelu"}
    assert ckpt["state_dict"]["conv1.weight"].shape[0] == 16 and "bn1.running_mean" in ckpt["state_dict"]
    assert cnnfit.evaluate(run.dir)["accuracy"] == pytest.approx(run.accuracy)


def test_the_cifar10_speed_recipe_trains_a_folder_of_classes(tmp_path):
    """The GPU recipe on 2 CPU cores, as a user with a folder would run it: only data=, and the batch and epochs a
    90-image folder allows (compile off: minutes of CPU compilation for seconds of training)."""
    folder = make_folder(tmp_path / "photos", per_class=40)
    run = cnnfit.train(recipe="cifar10-speed", data=str(folder), batch=32, epochs=6, compile=False, imgsz=32,
                       project=str(tmp_path / "runs"))
    assert run.accuracy > 0.9 and run.timings["init_seconds"] > 0
    whiten = load_checkpoint(run.dir / "best.pt")["state_dict"]["whiten.weight"]  # (24, 3, 2, 2), set from the data
    eye = torch.eye(12).reshape(12, 3, 2, 2)
    assert whiten.shape == (24, 3, 2, 2) and not torch.allclose(whiten[:12], eye)
    assert torch.equal(whiten[12:], -whiten[:12])


def test_report_false_skips_plots_and_page_and_eval_can_draw_them_later(tmp_path):
    run = cnnfit.train(data="digits", epochs=1, eval__report=False, project=str(tmp_path))
    assert (run.dir / "metrics.json").exists() and (run.dir / "predictions.csv").exists()
    assert not (run.dir / "report.html").exists() and not list((run.dir / "plots").glob("*.png"))
    again = cnnfit.evaluate(run.dir, report=True)
    assert again["accuracy"] == run.accuracy
    assert (run.dir / "report.html").exists() and (run.dir / "plots" / "confusion.png").exists()


def test_the_python_api_prints_nothing_until_the_caller_configures_logging(tmp_path):
    train = (f"import cnnfit; cnnfit.train(data='digits', epochs=1, project={str(tmp_path)!r}, "
             "**{'eval.report': False})")
    quiet = subprocess.run([sys.executable, "-c", train], capture_output=True, text=True, check=True)
    assert (quiet.stdout, quiet.stderr) == ("", "")
    logged = subprocess.run([sys.executable, "-c", "import logging; logging.basicConfig(level=logging.INFO, "
                             f"format='%(message)s'); {train}"], capture_output=True, text=True, check=True)
    assert "optimizer    adamw lr 0.001" in logged.stderr and "test accuracy" in logged.stderr

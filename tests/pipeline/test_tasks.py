"""Multi-label and regression end to end through the Python API: train, the run directory, predict."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

import cnnfit
from cnnfit.engine import load_checkpoint, save_checkpoint
from cnnfit.pipeline import inspect
from tests.conftest import COLORS, make_folder, write_image

COMMON = dict(model="simplecnn", imgsz=16, epochs=5, batch=16, seed=0)


def _multilabel_csv(root, n=200):
    """Two labels per image: the colour (red, green) and a painted square (bright, dark)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        colour, shade = ("red", "green")[i % 2], ("bright", "dark")[i // 2 % 2]
        path = root / f"{i}.png"
        write_image(path, COLORS[colour], (16, 16), rng)
        arr = np.asarray(Image.open(path)).copy()  # (16, 16, 3)
        y, x = rng.integers(0, 10, 2)
        arr[y: y + 6, x: x + 6] = 255 if shade == "bright" else 0
        Image.fromarray(arr).save(path)
        rows.append(f"{path.name},{colour};{shade}")
    (root / "labels.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
    return root / "labels.csv"


def _regression_csv(root, n=200):
    """Grey images whose brightness is 40 + 1.6 * target, target uniform in [0, 100]."""
    rng = np.random.default_rng(0)
    targets = rng.uniform(0, 100, n)
    for i, t in enumerate(targets):
        level = int(40 + 1.6 * t)
        write_image(root / f"{i}.png", (level, level, level), (16, 16), rng)
    rows = [f"{i}.png,{t:.3f}" for i, t in enumerate(targets)]
    (root / "brightness.csv").write_text("path,target\n" + "\n".join(rows) + "\n")
    return root / "brightness.csv", targets


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_multilabel_trains_and_predicts_label_sets(tmp_path):
    manifest = _multilabel_csv(tmp_path / "images")
    run = cnnfit.train(data=str(manifest), project=str(tmp_path / "runs"), **COMMON)
    metrics = json.loads((run.dir / "metrics.json").read_text())
    labels = ["bright", "dark", "green", "red"]
    assert metrics["task"] == "multilabel" and metrics["split"] == "test" and metrics["best_epoch"] >= 1
    assert sorted(metrics["per_label"]) == labels and all(0 <= v["f1"] <= 1 for v in metrics["per_label"].values())
    # predicting every label scores F1 2/3 each: a model that learned colour and square clears 0.85
    assert metrics["micro"]["f1"] > 0.85 and metrics["macro"]["f1"] > 0.85
    thresholds = json.loads((run.dir / "thresholds.json").read_text())
    assert sorted(thresholds) == labels and metrics["thresholds"] == [thresholds[k] for k in labels]
    report = json.loads((run.dir / "data_report.json").read_text())
    assert {k: v["total"] for k, v in report["counts"]["per_label"].items()} == dict.fromkeys(labels, 100)

    evals = {r["file"]: r["pred"] for r in _rows(run.dir / "predictions.csv")}
    assert len(evals) == metrics["num_images"]
    rows = list(cnnfit.predict(run.dir, list(evals), out=tmp_path / "p.csv").rows())
    assert {r["file"]: r["labels"] for r in rows} == evals  # predict uses the thresholds evaluate fitted
    assert all(set(r["labels"].split(";")) <= set(labels) and 0 <= r["prob_red"] <= 1 for r in rows)
    assert list(_rows(tmp_path / "p.csv")[0]) == ["file", "labels", *(f"prob_{k}" for k in labels), "status"]
    (run.dir / "thresholds.json").unlink()  # without it every label is cut at 0.5
    assert all(r["labels"] for r in cnnfit.predict(run.dir, list(evals)[:4], out=tmp_path / "half.csv").rows())


def test_regression_trains_and_predicts_in_target_units(tmp_path):
    manifest, targets = _regression_csv(tmp_path / "images")
    run = cnnfit.train(data=str(manifest), project=str(tmp_path / "runs"), **COMMON)
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert metrics["task"] == "regress" and metrics["split"] == "test" and "val_r2" in metrics["val"]
    # brightness is easy to read off: R^2 near 1 when it works, below 0 for a constant or unscaled prediction
    assert metrics["r2"] > 0.8 and metrics["mae"] < 0.25 * targets.std()  # MAE in the targets' units (std ~29)
    assert (run.dir / "plots" / "regression.png").stat().st_size > 1000
    report = json.loads((run.dir / "data_report.json").read_text())
    target = report["counts"]["target"]
    assert sum(target["histogram"]["counts"]) == 200 and target["min"] == pytest.approx(targets.min(), abs=1e-3)

    evals = _rows(run.dir / "predictions.csv")
    assert list(evals[0]) == ["index", "file", "true", "pred", "error"]
    rows = list(cnnfit.predict(run.dir, [r["file"] for r in evals], out=tmp_path / "p.csv").rows())
    values = np.array([r["value"] for r in rows])
    assert np.allclose(values, [float(r["pred"]) for r in evals], atol=1e-3)
    assert values.min() > -10 and values.max() < 110  # the target's range, not standardized units
    assert np.abs(values - [float(r["true"]) for r in evals]).mean() == pytest.approx(metrics["mae"], rel=1e-3)


def test_inspect_reports_a_regression_manifest(tmp_path):
    manifest, _ = _regression_csv(tmp_path / "images", n=40)
    out = inspect(cnnfit.load_config(data=str(manifest), imgsz=16, project=str(tmp_path / "runs")))
    report = json.loads((out / "data_report.json").read_text())
    assert report["task"] == "regress" and report["imbalance"] is None
    assert (out / "samples.png").stat().st_size > 1000  # titled by target value
    with open(out / "clean_manifest.csv", newline="") as f:
        assert next(csv.reader(f)) == ["path", "target", "split"]  # reads back as regression


def test_checkpoints_without_a_task_are_classifiers(tmp_path):
    folder = make_folder(tmp_path / "photos", per_class=10)
    run = cnnfit.train(data=str(folder), imgsz=16, epochs=1, batch=8, project=str(tmp_path / "runs"))
    ckpt = load_checkpoint(run.dir / "best.pt")
    old = {k: v for k, v in ckpt.items() if k not in ("task", "target_scale", "format_version")}
    save_checkpoint(old, run.dir / "best.pt")  # as cnnfit wrote it before multilabel and regression
    assert cnnfit.evaluate(run.dir)["accuracy"] == pytest.approx(run.accuracy)
    rows = list(cnnfit.predict(run.dir, [str(folder / "red")], topk=2).rows())
    assert len(rows) == 10 and {"top1", "prob2"} <= set(rows[0])

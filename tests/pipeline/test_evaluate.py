"""Evaluation from a run directory: metrics against scikit-learn on a real run, calibration, TTA, and scoring
a trained model on another dataset."""

import csv
import json
import logging
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

import cnnfit
from cnnfit import models
from cnnfit.data import DeviceLoader
from cnnfit.device import cpu_has_bf16
from cnnfit.engine import infer
from cnnfit.pipeline.resolve import eval_amp
from cnnfit.cli import main
from cnnfit.data import load_imageset, resolve
from cnnfit.engine import load_checkpoint
from cnnfit.eval import intervals
from tests.conftest import make_folder, write_image


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    return cnnfit.train(data="digits", epochs=4, calibrate=True, project=str(tmp_path_factory.mktemp("runs")),
                        name="cal")


def _logits(run_dir, split="test", as_evaluated=False):
    """Outputs of best.pt on a split, recomputed here, and the labels: in fp32 as predict gives them, or in the
    precision the run trained in, as evaluate scores them."""
    ckpt = load_checkpoint(run_dir / "best.pt")
    ds = load_imageset(resolve("digits"), None, None, "squash", None, True)[0]
    idx = np.asarray(json.loads((run_dir / "split.json").read_text())[split])
    model = models.from_checkpoint(ckpt, torch.device("cpu"))
    amp = eval_amp(ckpt["config"]["train"]["amp"], torch.device("cpu")) if as_evaluated else None
    loader = DeviceLoader(ds.images, ds.labels, index=idx, batch=256, device=torch.device("cpu"), mean=ckpt["mean"],
                          std=ckpt["std"])
    outputs, labels = infer(model, loader, amp_dtype=amp)
    return outputs.double(), labels


def _test_probs(run_dir, as_evaluated=False):
    """Softmax of best.pt's test outputs with the stored temperature applied, and the labels."""
    outputs, labels = _logits(run_dir, as_evaluated=as_evaluated)
    t = load_checkpoint(run_dir / "best.pt")["calibration"]["temperature"]
    return (outputs / t).softmax(1).numpy(), labels.numpy()


def test_metrics_of_a_real_run_equal_scikit_learn(calibrated_run):
    metrics = json.loads((calibrated_run.dir / "metrics.json").read_text())
    probs, y = _test_probs(calibrated_run.dir, as_evaluated=True)
    classes = metrics["classes"]
    p, r, f, s = precision_recall_fscore_support(y, probs.argmax(1), labels=range(len(classes)), zero_division=0)
    for k, c in enumerate(classes):
        row = metrics["per_class"][c]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == (p[k], r[k], f[k], s[k])
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y == k, probs[:, k]), abs=1e-9)
        assert row["pr_auc"] == pytest.approx(average_precision_score(y == k, probs[:, k]), abs=1e-9)
    assert metrics["roc_auc"]["macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"), abs=1e-9)
    assert metrics["accuracy"] >= 0.85
    with open(calibrated_run.dir / "plots" / "confusion.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == classes and [[int(v) for v in row[1:]] for row in rows[1:]] == metrics["confusion_matrix"]


def test_calibration_is_stored_lowers_ece_on_val_fit_and_predict_uses_it(calibrated_run, tmp_path):
    metrics = json.loads((calibrated_run.dir / "metrics.json").read_text())
    cal = metrics["calibration"]
    ckpt = load_checkpoint(calibrated_run.dir / "best.pt")
    assert ckpt["calibration"]["temperature"] == cal["temperature"] != 1.0
    assert cal["ece_after"] == metrics["ece"] and cal["log_loss_after"] == metrics["log_loss"]
    # on the split it was fitted on, the temperature can only lower the log loss (test-split gains are measured
    # on Fashion-MNIST in the benchmarks: 269 val images of digits say little about the test split)
    val, y = _logits(calibrated_run.dir, "val", as_evaluated=True)
    nll = lambda t: float(torch.nn.functional.cross_entropy(val / t, y))  # noqa: E731
    assert nll(cal["temperature"]) < nll(1.0)
    # predict on the test images saved as files gives the calibrated probabilities
    ds = load_imageset(resolve("digits"), None, None, "squash", None, True)[0]
    idx = json.loads((calibrated_run.dir / "split.json").read_text())["test"][:5]
    for i in idx:
        Image.fromarray(np.asarray(ds.images[i][0])).save(tmp_path / f"{i:04d}.png")
    rows = list(cnnfit.predict(calibrated_run.dir, [str(tmp_path)], topk=1).rows())
    probs, _ = _test_probs(calibrated_run.dir)
    assert [r["prob1"] for r in rows] == pytest.approx(probs[:5].max(1), abs=1e-5)


def test_metrics_json_holds_bootstrap_intervals_of_the_test_predictions(calibrated_run):
    metrics = json.loads((calibrated_run.dir / "metrics.json").read_text())
    ci = metrics["intervals"]
    assert (ci["resamples"], ci["level"], ci["seed"]) == (1000, 0.95, 0)
    for name, value in (("accuracy", metrics["accuracy"]), ("balanced_accuracy", metrics["balanced_accuracy"]),
                        ("macro_f1", metrics["macro"]["f1"])):
        lo, hi = ci[name]
        assert lo <= value <= hi and 0.0 < hi - lo < 0.2, name  # digits: 269 test images, about +-3 points
    with open(calibrated_run.dir / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = {c: i for i, c in enumerate(metrics["classes"])}
    y, pred = (np.array([ids[r[k]] for r in rows]) for k in ("true", "pred"))
    assert {k: list(v) for k, v in intervals(y, pred, num_classes=len(ids)).items()} == {
        k: ci[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}  # the images predictions.csv lists


def test_eval_with_tta_reports_the_mode(calibrated_run, tmp_path, caplog):
    caplog.set_level("INFO", logger="cnnfit")
    m = cnnfit.evaluate(calibrated_run.dir, tta="flip")
    assert m["tta"] == "flip" and 0.0 < m["accuracy"] <= 1.0
    lo, hi = m["intervals"]["accuracy"]
    assert f"test accuracy {m['accuracy']:.4f} (95% CI {lo:.3f}-{hi:.3f})" in caplog.text
    saved = json.loads((calibrated_run.dir / "metrics.json").read_text())
    assert saved["tta"] == "flip" and saved["accuracy"] == m["accuracy"]
    assert main(["eval", str(calibrated_run.dir), "tta=rotate"]) == 2


def test_eval_scores_in_the_precision_the_run_trained_in_unless_told(tmp_path):
    run = cnnfit.train(data="digits", epochs=2, amp="bf16", project=str(tmp_path), name="bf16",
                       **{"eval.report": False})
    trained = json.loads((run.dir / "metrics.json").read_text())
    native = cpu_has_bf16()
    assert trained["amp"] == ("bf16" if native else "off")  # a CPU without bf16 scores in fp32
    assert main(["eval", str(run.dir), "amp=off"]) == 0
    fp32 = json.loads((run.dir / "metrics.json").read_text())
    assert fp32["amp"] == "off" and abs(fp32["accuracy"] - trained["accuracy"]) <= 0.01
    assert main(["eval", str(run.dir), "amp=fp8"]) == 2
    cpu = torch.device("cpu")
    assert eval_amp("off", cpu) is None and eval_amp("fp16", cpu) is None
    assert eval_amp("bf16", cpu, "off") is None
    assert eval_amp("bf16", torch.device("cuda")) is torch.bfloat16
    assert eval_amp("bf16", torch.device("cuda"), task="regress") is None  # the numbers themselves


def test_eval_on_another_dataset_matches_classes_by_name(tmp_path, capsys):
    folder = make_folder(tmp_path / "photos", per_class=16)
    run = cnnfit.train(data=str(folder), model="simplecnn", imgsz=16, epochs=3, batch=8, project=str(tmp_path / "runs"))
    own = (run.dir / "metrics.json").read_bytes()
    other = tmp_path / "other"
    rng = np.random.default_rng(5)
    for name, color in {"green": (40, 180, 60), "blue": (40, 60, 200), "purple": (150, 40, 160)}.items():
        for i in range(6):
            write_image(other / name / f"{i}.png", color, (30, 30), rng)
    assert main(["eval", str(run.dir), f"data={other}"]) == 0
    printed = capsys.readouterr().out
    assert "purple (6 images)" in printed and "red" in printed
    m = json.loads((run.dir / "eval_other" / "metrics.json").read_text())
    assert m["num_images"] == 12 and m["unknown_classes"] == ["purple"] and m["absent_classes"] == ["red"]
    assert m["per_class"]["red"]["support"] == 0 and m["per_class"]["green"]["support"] == 6
    assert m["accuracy"] >= 0.8  # colours the model learned
    assert (run.dir / "eval_other" / "report.html").exists()
    assert (run.dir / "metrics.json").read_bytes() == own  # the run's own evaluation is left alone
    strangers = tmp_path / "strangers"
    for name in ("cat", "dog"):
        for i in range(3):
            write_image(strangers / name / f"{i}.png", (90, 90, 90), (20, 20), rng)
    assert main(["eval", str(run.dir), f"data={strangers}"]) == 2
    assert "class names must match" in capsys.readouterr().err


def test_fashion_mnist_run_writes_every_plot_and_a_report_true_to_metrics(tmp_path):
    import html
    import re

    from cnnfit.report import format_metric, lookup_metric
    from tests.conftest import shared_dataset

    shared_dataset("fashion-mnist")
    run = cnnfit.train(data="fashion-mnist", model="lenet5", epochs=1, batch=128, data__fraction=0.05,
                       calibrate=True, project=str(tmp_path))
    plots = {p.name for p in (run.dir / "plots").iterdir()}
    assert {"curves.png", "lr.png", "confusion.png", "confusion_normalized.png", "per_class_f1.png", "roc.png",
            "pr.png", "reliability.png", "wrong.png", "samples.png"} <= plots
    page = (run.dir / "report.html").read_text()
    metrics = json.loads((run.dir / "metrics.json").read_text())
    spans = re.findall(r'<span class="num" data-metric="([^"]*)">([^<]*)</span>', page)
    assert len(spans) > 10 * 6  # every class's row, the headline numbers, calibration, timings
    for path, text in spans:
        path = html.unescape(path)
        assert format_metric(lookup_metric(metrics, path), path) == html.unescape(text), path
    assert metrics["calibration"]["ece_after"] == metrics["ece"] and "Ankle boot" in page


def test_predict_with_tta_averages_the_mirrored_image(calibrated_run, tmp_path):
    ds = load_imageset(resolve("digits"), None, None, "squash", None, True)[0]
    image = np.asarray(ds.images[0][0])  # (H, W)
    Image.fromarray(image).save(tmp_path / "a.png")
    plain = cnnfit.predict(calibrated_run.dir, [str(tmp_path / "a.png")], topk=10, tta="none").head[0]
    Image.fromarray(image[:, ::-1].copy()).save(tmp_path / "a.png")
    mirror = cnnfit.predict(calibrated_run.dir, [str(tmp_path / "a.png")], topk=10, tta="none").head[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    both = cnnfit.predict(calibrated_run.dir, [str(tmp_path / "a.png")], topk=10, tta="flip").head[0]
    prob = lambda row: {row[f"top{j}"]: row[f"prob{j}"] for j in range(1, 11)}  # noqa: E731
    p, m, b = prob(plain), prob(mirror), prob(both)
    # TTA averages the raw softmax, then the temperature applies: p ** T, renormalized, undoes the temperature
    t = load_checkpoint(calibrated_run.dir / "best.pt")["calibration"]["temperature"]
    raw = lambda q: {c: v ** t / sum(w ** t for w in q.values()) for c, v in q.items()}  # noqa: E731
    rp, rm = raw(p), raw(m)
    mean = {c: (rp[c] + rm[c]) / 2 for c in p}
    expected = {c: v ** (1 / t) for c, v in mean.items()}  # softmax(log(mean) / T), before renormalizing
    zz = sum(expected.values())
    assert max(abs(b[c] - expected[c] / zz) for c in b) < 1e-4  # probabilities are rounded to 6 places


def test_the_reject_threshold_is_fitted_on_val_and_kept_in_best_pt(calibrated_run):
    from cnnfit.eval.reject import PRECISION, answered, scores

    cnnfit.evaluate(calibrated_run.dir, tta="none", report=False)  # as predict scores: another test evaluates with tta
    ckpt = load_checkpoint(calibrated_run.dir / "best.pt")
    saved, shown = ckpt["reject"], json.loads((calibrated_run.dir / "metrics.json").read_text())["reject"]
    z_val, y_val = _logits(calibrated_run.dir, "val", as_evaluated=True)
    t = ckpt["calibration"]["temperature"]
    s = scores(z_val.numpy(), t)
    keep = answered(s, saved["threshold"] - 1e-6)  # float32 storage of the scores: a hair of slack
    assert saved["score"] == "maxprob" and saved["temperature"] == t and len(saved["val"]["correct"]) == len(y_val)
    assert (z_val.numpy().argmax(1) == y_val.numpy())[keep].mean() >= PRECISION
    assert saved["val_coverage"] == pytest.approx(keep.mean(), abs=1 / len(y_val))
    for kind in ("maxprob", "energy"):
        assert 0 <= shown[kind]["test_coverage"] <= 1 and shown[kind]["threshold"] is not None
    assert shown["maxprob"]["threshold"] == saved["threshold"]


def test_explanations_never_fail_the_evaluation(calibrated_run, tmp_path, monkeypatch, caplog):
    run = tmp_path / "copy"
    shutil.copytree(calibrated_run.dir, run)
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # Captum not installed: import raises ImportError
    with caplog.at_level(logging.INFO, logger="cnnfit"):
        metrics = cnnfit.evaluate(run)
    assert metrics["accuracy"] >= 0.85 and (run / "report.html").is_file()
    assert "Grad-CAM skipped: explanations need Captum" in caplog.text
    plots = run / "plots"  # the figures of the earlier evaluation are gone, the embedding one is drawn again
    assert not (plots / "explain_wrong.png").exists() and not (plots / "explain_right.png").exists()
    assert (plots / "neighbours.png").is_file()


def test_right_answers_are_a_seeded_sample_spread_over_the_classes():
    from cnnfit.pipeline.explain_plots import spread_right

    true = np.repeat(np.arange(5), 20)  # 5 classes of 20
    pred = true.copy()
    pred[true == 4] = 0  # class 4 never right
    picked = spread_right(true, pred, 12)
    assert len(picked) == 12 and (true[picked] == pred[picked]).all() and len(set(picked.tolist())) == 12
    assert sorted(np.bincount(true[picked], minlength=5).tolist()) == [0, 3, 3, 3, 3]  # round-robin over classes
    assert (spread_right(true, pred, 12) == picked).all() and len(spread_right(true, pred, 500)) == 80
    assert len(spread_right(true, (true + 1) % 5, 12)) == 0
    uneven = np.r_[np.zeros(30, int), np.arange(1, 5)]  # 30 of class 0, one of each other: 4 + 8 more of class 0
    assert np.bincount(uneven[spread_right(uneven, uneven, 12)]).tolist() == [8, 1, 1, 1, 1]

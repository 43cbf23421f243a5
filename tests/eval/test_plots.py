import math

import numpy as np
import pytest
from PIL import Image

from cnnfit.eval.plots import (_ece_bins, plot_confusion, plot_curves, plot_lr, plot_per_class_f1, plot_pr,
                               plot_reliability, plot_roc, plot_wrong, pyplot)


def _probs(n: int, k: int, seed: int = 0, noise: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of noisy one-hot logits: a classifier that is mostly right and sometimes confidently wrong."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = 3 * np.eye(k)[labels] + rng.normal(0, noise, (n, k))  # (N, K)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True), labels


def _png(path, min_side: int = 250, max_side: int = 2500) -> tuple[int, int]:
    """The PNG opens, is sized for a screen, and no temporary file is left beside it."""
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert min_side <= img.width <= max_side and min_side <= img.height <= max_side, img.size
        size = img.size
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert pyplot().get_fignums() == []  # every figure closed
    return size


def test_ece_bins_on_a_hand_computed_case():
    conf = np.array([0.0, 0.3, 0.5, 0.9, 0.95])  # bins of 0.25: (0, .25] takes 0; .5 sits in (.25, .5]
    correct = np.array([0, 1, 0, 1, 0])
    acc, mean_conf, counts, ece = _ece_bins(conf, correct, bins=4)
    assert counts.tolist() == [1, 2, 0, 2]
    assert np.allclose(acc[[0, 1, 3]], [0, 0.5, 0.5]) and np.isnan(acc[2])
    assert np.allclose(mean_conf[[0, 1, 3]], [0.0, 0.4, 0.925])
    # 1/5*|0 - 0| + 2/5*|0.5 - 0.4| + 2/5*|0.5 - 0.925| = 0.04 + 0.17
    assert math.isclose(ece, 0.21)
    assert _ece_bins(np.ones(4), np.ones(4), 15)[3] == 0.0  # sure and right: perfectly calibrated


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("k", [3, 40])
def test_confusion_counts_and_row_normalized(tmp_path, normalize, k):
    rng = np.random.default_rng(k)
    cm = rng.integers(0, 5, (k, k)) + np.diag(rng.integers(20, 60, k))
    plot_confusion(cm.tolist(), [f"class {i}" for i in range(k)], tmp_path / "cm.png", normalize=normalize)
    width, height = _png(tmp_path / "cm.png")
    assert (width > 1200) == (k > 30)  # grows with the class count, up to 16 inches


def test_curves_still_written(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_acc": 1 - 0.5 / e} for e in (1, 2, 3)]
    plot_curves(history, tmp_path / "curves.png")
    assert _png(tmp_path / "curves.png")[0] == 1100  # 10 in at 110 dpi


def test_lr_schedule_linear_log_and_empty(tmp_path):
    steps = np.arange(300)
    cosine = 0.1 * 0.5 * (1 + np.cos(np.pi * steps / 300)) + 1e-9  # 8 decades, but only in the last steps
    assert plot_lr(steps, cosine, tmp_path / "lr.png", steps_per_epoch=50) == "linear"
    _png(tmp_path / "lr.png")
    decay = 0.1 * 0.95 ** steps  # most steps far below the peak: only a log axis shows them
    assert plot_lr(steps, decay, tmp_path / "decay.png") == "log"
    assert plot_lr(list(range(10)), [0.01] * 10, tmp_path / "flat.png") == "linear"
    _png(tmp_path / "flat.png")
    plot_lr([], [], tmp_path / "empty.png")
    _png(tmp_path / "empty.png", min_side=200)
    with pytest.raises(ValueError, match="one lr per step"):
        plot_lr([0, 1], [0.1], tmp_path / "bad.png")


@pytest.mark.parametrize("k", [3, 150])
def test_per_class_f1_bars(tmp_path, k):
    rng = np.random.default_rng(0)
    per_class = {f"class {i}": {"precision": 0.8, "recall": 0.8, "f1": float(rng.uniform(0.3, 1)),
                                "support": int(rng.integers(5, 50))} for i in range(k)}
    plot_per_class_f1(per_class, tmp_path / "f1.png")
    width, height = _png(tmp_path / "f1.png", min_side=200)
    assert height <= 20 * 110 and (height > 1500) == (k > 100)  # 60 worst bars past 100 classes, capped


@pytest.mark.parametrize("plot", [plot_roc, plot_pr])
@pytest.mark.parametrize("k", [2, 3, 20])
def test_one_vs_rest_curves(tmp_path, plot, k):
    probs, labels = _probs(400, k)
    scores = plot(probs, labels, [f"class {i}" for i in range(k)], tmp_path / "curves.png")
    _png(tmp_path / "curves.png")
    if k == 2:
        assert list(scores) == ["class 1"]
    elif k == 3:
        assert list(scores) == ["class 0", "class 1", "class 2"]
    else:  # averages and the 3 worst, instead of 20 crossing curves
        assert list(scores)[:2] == ["macro average", "micro average"] and len(scores) == 5
        worst = sorted(v for name, v in scores.items() if name.startswith("class"))
        assert worst[-1] <= min(scores["macro average"], scores["micro average"]) + 0.05
    chance = 0.5 if plot is plot_roc else 1 / k  # a random scorer's AUC; its precision is the positive share
    assert all(chance + 0.15 < v <= 1 for v in scores.values())


def test_roc_skips_a_class_with_no_positives(tmp_path):
    probs, labels = _probs(200, 4)
    labels[labels == 2] = 0  # no "c" in the test split: its AUC is undefined
    scores = plot_roc(probs, labels, ["a", "b", "c", "d"], tmp_path / "roc.png")
    _png(tmp_path / "roc.png")
    assert list(scores) == ["a", "b", "d"]
    binary, _ = _probs(200, 2)
    assert plot_pr(binary, np.zeros(200, int), ["a", "b"], tmp_path / "pr.png") == {}  # no positive "b" at all
    _png(tmp_path / "pr.png")


def test_reliability_before_and_after(tmp_path):
    probs, labels = _probs(500, 10, noise=2.0)
    sharp = np.exp(3 * np.log(probs))  # overconfident: logits times 3
    sharp /= sharp.sum(1, keepdims=True)
    plot_reliability(sharp, labels, tmp_path / "rel.png", probs_after=probs)
    _png(tmp_path / "rel.png")
    plot_reliability(probs, labels, tmp_path / "one.png", bins=10)
    _png(tmp_path / "one.png")
    correct = sharp.argmax(1) == labels
    assert _ece_bins(sharp.max(1), correct, 15)[3] > _ece_bins(probs.max(1), correct, 15)[3]


def test_wrong_gallery_shows_the_most_confident_mistakes(tmp_path):
    rng = np.random.default_rng(0)
    true = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    pred = np.array([0, 2, 2, 1, 1, 0, 2, 1])  # wrong at 1, 3, 5, 6
    confidence = np.array([0.99, 0.6, 0.9, 0.95, 0.8, 0.7, 0.85, 0.5])
    classes = ["cat", "a very long class name indeed", "fox"]
    rgb = rng.integers(0, 256, (8, 3, 16, 16), dtype=np.uint8)
    shown = plot_wrong(rgb, true, pred, confidence, classes, tmp_path / "wrong.png", n=3)
    assert shown.tolist() == [3, 6, 5]  # most confident first; index 1 (0.6) does not make the cut
    _png(tmp_path / "wrong.png", min_side=100)
    gray = rng.random((8, 1, 28, 28))
    assert plot_wrong(gray, true, pred, confidence, classes, tmp_path / "gray.png").tolist() == [3, 6, 5, 1]
    _png(tmp_path / "gray.png", min_side=100)
    none = plot_wrong(gray, true, true, confidence, classes, tmp_path / "none.png")
    assert len(none) == 0
    _png(tmp_path / "none.png", min_side=200)

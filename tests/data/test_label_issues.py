"""Label-error search on real data: digits with 5% of the labels flipped, out-of-fold probabilities from a
logistic regression, and cleanlab finding the flips through an oof.csv in `cnnfit cv`'s format; Fashion-MNIST's
shirts, T-shirts, pullovers and coats told apart as overlapping classes rather than wrong labels."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest

from cnnfit.data.label_issues import find_label_issues, overlapping_classes, read_oof, write_label_issues
from cnnfit.errors import CnnfitError
from cnnfit.files import write_csv
from tests.conftest import shared_dataset

CLASSES = [f"d{k}" for k in range(10)]


def _write_oof(path, labels, probs, folds, files=None):
    header = ["index", "file", "label", "fold"] + [f"prob_{c}" for c in CLASSES]
    rows = [[i, files[i] if files else "", CLASSES[y], folds[i]] + [f"{p:.6f}" for p in probs[i]]
            for i, y in enumerate(labels)]
    return write_csv(path, header, rows)


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory):
    """oof.csv of digits (1,797 images) with 5% of the labels flipped to another class (seeded), and the flips."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = load_digits(return_X_y=True)
    noisy, flipped = _flip(y)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    probs = cross_val_predict(LogisticRegression(max_iter=2000), x / 16, noisy, cv=cv, method="predict_proba")
    folds = np.zeros(len(y), dtype=int)
    for f, (_, held) in enumerate(cv.split(x, noisy)):
        folds[held] = f
    path = _write_oof(tmp_path_factory.mktemp("cv") / "oof.csv", noisy, probs, folds)
    return path, set(flipped.tolist()), y


def _flip(y: np.ndarray, share: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """`y` with `share` of its labels moved to another class uniformly (seeded), and the rows moved."""
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), int(share * len(y)), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10  # never the true class
    return noisy, flipped


def test_finds_flipped_digits(noisy_digits, tmp_path, caplog):
    path, flipped, truth = noisy_digits
    index, files, labels, classes, probs = read_oof(path)
    assert classes == CLASSES and probs.shape == (1797, 10) and files == [""] * 1797
    with caplog.at_level(logging.INFO, logger="cnnfit.data.label_issues"):
        issues = find_label_issues(labels, probs, classes=classes, files=files, index=index)
    found = {i["index"] for i in issues}
    precision, recall = len(found & flipped) / len(found), len(found & flipped) / len(flipped)
    logging.getLogger(__name__).info("digits, 5%% flipped: %d flagged, precision %.3f, recall %.3f",
                                     len(found), precision, recall)
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)
    assert [i["rank"] for i in issues] == list(range(1, len(issues) + 1))
    scores = [i["score"] for i in issues]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    right = [i for i in issues if i["index"] in flipped]  # a flip the model saw through suggests the true digit
    assert np.mean([i["suggested"] == CLASSES[truth[i["index"]]] for i in right]) >= 0.9
    assert any("labels look wrong" in r.message for r in caplog.records)
    assert overlapping_classes(labels, probs, classes=classes) == []  # uniform noise: no pair stands out
    assert {i["kind"] for i in issues} == {"wrong"}

    out = write_label_issues(issues, tmp_path)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert out.name == "label_issues.csv" and len(rows) == len(issues)
    assert list(rows[0]) == ["file", "index", "given", "suggested", "score", "kind"] and rows[0]["kind"] == "wrong"
    assert int(rows[0]["index"]) == issues[0]["index"] and float(rows[0]["score"]) == pytest.approx(scores[0], 1e-5)


def test_fashion_mnist_shirts_are_overlap_not_wrong_labels():
    """4,000 Fashion-MNIST images, 5% flipped, a logistic regression on 40 principal components: the doubts between
    shirts, T-shirts, pullovers and coats are mostly hard images, so they are listed as overlap, and what stays
    "wrong" holds the flips far more densely."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from cnnfit.data.sources import read, resolve

    shared_dataset("fashion-mnist")
    ds = read(resolve("fashion-mnist"))
    test = np.flatnonzero(ds.origin == 2)[:4000]
    y = ds.labels[test]
    noisy, flipped = _flip(y)
    x = PCA(40, random_state=0).fit_transform(ds.images[test].reshape(len(test), -1) / 255.0)  # (4000, 40)
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x, noisy,
                              cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    classes = list(ds.classes)
    pairs = {frozenset(p["classes"]) for p in overlapping_classes(noisy, probs, classes=classes)}
    shirt = {frozenset(("Shirt", c)) for c in ("T-shirt/top", "Pullover", "Coat")} | {frozenset(("Pullover", "Coat"))}
    assert shirt <= pairs and not any("Sneaker" in p or "Bag" in p for p in pairs), pairs
    issues = find_label_issues(noisy, probs, classes=classes)
    kinds = [i["kind"] for i in issues]
    assert kinds == sorted(kinds, key=lambda k: k != "wrong")  # the wrong first
    flips = set(flipped.tolist())
    share = {k: np.mean([i["index"] in flips for i in issues if i["kind"] == k]) for k in ("wrong", "overlap")}
    everything = np.mean([i["index"] in flips for i in issues])
    assert share["wrong"] > 1.8 * everything and share["overlap"] < 0.15, (share, everything)


def test_clean_labels_flag_few():
    labels = np.repeat(np.arange(10), 20)
    probs = np.full((200, 10), 0.01)
    probs[np.arange(200), labels] = 0.91  # a model that agrees with every label
    assert find_label_issues(labels, probs, classes=CLASSES) == []


def _lines(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("index,file,label,prob_a,prob_b\n0,,a,0.5,0.5\n", "no column fold"),
    ("index,file,label,fold,prob_a\n0,,a,0,1.0\n", "1 prob_<class> column(s)"),
    ("index,file,label,fold,prob_a,prob_b\n0,,a,0,0.5,0.2\n", "sum to 0.7000"),
    ("index,file,label,fold,prob_a,prob_b\n0,,c,0,0.5,0.5\n", "label 'c' has no prob_c column"),
    ("index,file,label,fold,prob_a,prob_b\n0,,a,0,x,0.5\n", "'x' is not a number"),
    ("index,file,label,fold,prob_a,prob_b\n0,,a,0,nan,0.5\n", "not in [0, 1]"),
    ("index,file,label,fold,prob_a,prob_b\n0,,a,0,0.5\n", "has 5 cells"),
    ("index,file,label,fold,prob_a,prob_b\n0,,a,0,0.5,0.5\n0,,b,1,0.5,0.5\n", "an index appears twice"),
    ("index,file,label,fold,prob_a,prob_b\n", "no rows"),
    ("", "is empty"),
])
def test_malformed_oof_is_one_line_error(tmp_path, text, message):
    with pytest.raises(CnnfitError) as err:
        read_oof(_lines(tmp_path / "oof.csv", text))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_missing_file_and_mismatched_arrays(tmp_path):
    with pytest.raises(CnnfitError, match="cannot read"):
        read_oof(tmp_path / "nope.csv")
    with pytest.raises(CnnfitError, match="do not match 10 classes"):
        find_label_issues(np.zeros(3, int), np.full((3, 9), 1 / 9), classes=CLASSES)

"""Label errors from out-of-fold probabilities: read a cross-validation run's oof.csv, ask cleanlab which given
labels the held-out model confidently disagrees with, and list them, most likely wrong first.

    index, files, labels, classes, probs = read_oof("runs/cv/oof.csv")
    issues = find_label_issues(labels, probs, classes=classes, files=files, index=index)
    write_label_issues(issues, "runs/cv")  # runs/cv/label_issues.csv

Each issue is of one kind: "wrong", a label the held-out model confidently disagrees with, or "overlap", a doubt
between two classes the model confuses far more often than the rest (shirt and T-shirt): there the image is often
ambiguous rather than mislabelled, so it is listed for a look but not counted as wrong.

Nothing here moves, deletes or relabels a file: the list is for a person to review (report.label_review).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from cnnfit.errors import CnnfitError, one_line
from cnnfit.files import write_csv

log = logging.getLogger(__name__)

OOF_COLUMNS = ("index", "file", "label", "fold")  # then prob_<class> for every class, in the dataset's order
ISSUE_COLUMNS = ["file", "index", "given", "suggested", "score", "kind"]
PROB_PREFIX = "prob_"
SUM_TOLERANCE = 0.01  # |row sum - 1|: 100 classes written with 4 decimals round off by 0.005 at most
# cleanlab's confident learning: how many labels are wrong is read off the calibrated confident joint
# (count.estimate_joint; its off-diagonal sum is count.num_label_issues' "off_diagonal_calibrated"), and that many are
# taken lowest self-confidence first. The uncalibrated count ("off_diagonal", what filter_by="low_self_confidence"
# uses) leaves out the flipped images the model is unsure of: digits, 5% flipped, 20 epochs: 64 flagged of 73 flips
# (precision 1.000, recall 0.877) against 75 (0.960, 0.986) calibrated; MNIST, 10,000 images, 8 epochs: 444 of 500
# (0.995, 0.884) against 506 (0.970, 0.982) (benchmarks/bench_labels.py).
COUNT_BY = "the calibrated confident joint"
RANK_BY = "self_confidence"  # p(given label): a flipped image's held-out model gives its given label little
# Two classes overlap when the joint puts OVERLAP_TIMES the median pair's count of images between them. Uniform noise
# gives every pair about the same share (5% over 10 classes: 2 x 0.05 / 90 = 0.0011; MNIST measured median 0.0011,
# largest 1.6x it). Fashion-MNIST's shirt against T-shirt, pullover and coat, and pullover against coat, stand at
# 6-12x, the next pair at 3x. Those pairs' doubts are hard images more than wrong labels, so they are counted and
# listed apart ("overlap"), and "wrong" is the joint's count outside them: on Fashion-MNIST with 500 flips that took
# the wrong set from 1,037 images (precision 0.472, recall 0.978) to 561 (0.806, 0.904); MNIST is unchanged.
OVERLAP_TIMES = 4.0
# ... and holds OVERLAP_SHARE of the two classes' images: uniform 5% noise over 10 classes puts 0.55% of them
# between any two, Fashion-MNIST's four pairs 4-8%; 1,797 digits with 5% flipped put 8 flips (2.2%) between 3 and 4,
# which is 8x a median pair of 1 image but no overlap.
OVERLAP_SHARE = 0.03
# ... and Poisson chance around the median would reach the count with p < 0.01 over all K(K-1)/2 pairs
# (Bonferroni): with a few hundred images a pair holds under one image, and 4x that is often chance.
OVERLAP_ALPHA = 0.01


def _float(cell: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise CnnfitError(f"{where}: '{cell}' is not a number; write the probabilities as plain numbers") from None
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise CnnfitError(f"{where}: probability {cell} is not in [0, 1]; write the model's softmax outputs")
    return value


def _header(path: Path, header: list[str]) -> list[str]:
    """The class names of an oof.csv header, in column order, or a one-line error naming what is missing."""
    missing = [c for c in OOF_COLUMNS if c not in header]
    classes = [h[len(PROB_PREFIX):] for h in header if h.startswith(PROB_PREFIX)]
    if missing or len(classes) < 2:
        what = f"column {', '.join(missing)}" if missing else f"{len(classes)} prob_<class> column(s), 2 or more"
        raise CnnfitError(f"{path} is not an out-of-fold file: no {what}; expected index,file,label,fold,"
                          "prob_<class>... as `cnnfit cv` writes it")
    if len(set(classes)) != len(classes):
        raise CnnfitError(f"{path}: a prob_<class> column appears twice; write each class once")
    return classes


def read_oof(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray, list[str], np.ndarray]:
    """An oof.csv as (index (N,) int64 dataset rows, files (N,) '' for array datasets, labels (N,) int64 class
    indices, classes, probs (N, K) float64); a one-line CnnfitError for a file in any other shape."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CnnfitError(f"cannot read {path} ({one_line(exc)}); point at the oof.csv of a `cnnfit cv` run") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise CnnfitError(f"{path} is empty; run `cnnfit cv` to write it")
    header = [h.strip() for h in rows[0]]
    classes = _header(path, header)
    col = {h: i for i, h in enumerate(header)}
    prob_cols = [col[PROB_PREFIX + c] for c in classes]
    of_class = {c: k for k, c in enumerate(classes)}
    index, files, labels, probs = [], [], [], []
    for line, row in enumerate(rows[1:], start=2):
        where = f"{path.name} line {line}"
        if len(row) != len(header):
            raise CnnfitError(f"{where} has {len(row)} cells, the header {len(header)}; rewrite the file")
        label = row[col["label"]]
        if label not in of_class:
            raise CnnfitError(f"{where}: label '{label}' has no prob_{label} column; classes are "
                              f"{', '.join(classes)}")
        p = [_float(row[i], where) for i in prob_cols]
        if abs(sum(p) - 1.0) > SUM_TOLERANCE:
            raise CnnfitError(f"{where}: probabilities sum to {sum(p):.4f}, not 1; write softmax outputs, one "
                              "column per class")
        if not row[col["index"]].strip().isdigit():
            raise CnnfitError(f"{where}: index '{row[col['index']]}' is not a row number of the dataset")
        index.append(int(row[col["index"]]))
        files.append(row[col["file"]])
        labels.append(of_class[label])
        probs.append(p)
    if not index:
        raise CnnfitError(f"{path} has a header and no rows; run `cnnfit cv` again")
    if len(set(index)) != len(index):
        raise CnnfitError(f"{path}: an index appears twice; each image has one out-of-fold row")
    return (np.array(index, dtype=np.int64), files, np.array(labels, dtype=np.int64), classes,
            np.array(probs, dtype=np.float64))  # (N,), N, (N,), K, (N, K)


def _checked(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    n, k = probs.shape if probs.ndim == 2 else (len(probs), 0)
    if len(labels) != n or k != len(classes):
        raise CnnfitError(f"labels ({len(labels)}) and probabilities {probs.shape} do not match {len(classes)} "
                          "classes; pass the arrays read_oof returns")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise CnnfitError(f"a label is outside 0..{k - 1}; labels are class indices into classes")
    return labels, probs


def _cleanlab_error(exc: Exception) -> CnnfitError:
    return CnnfitError(f"cleanlab cannot search these labels ({one_line(exc)}); give every class a few examples "
                       "and out-of-fold probabilities")


def _joint(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(K, K) cleanlab's calibrated confident joint in images: [i, j] estimates how many images given class i are
    truly of class j."""
    from cleanlab.count import estimate_joint

    try:
        return estimate_joint(labels=labels, pred_probs=probs) * len(labels)
    except (ValueError, AssertionError) as exc:  # cleanlab asserts on classes without examples, and the like
        raise _cleanlab_error(exc) from None


def _overlaps(joint: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[dict]:
    """overlapping_classes on a joint already estimated."""
    from cleanlab.dataset import find_overlapping_classes
    from scipy.stats import poisson

    n = len(labels)
    if len(classes) < 3 or not n:  # one pair: nothing to compare it with
        return []
    pairs = find_overlapping_classes(joint=joint / n, num_examples=n)  # every pair, both directions, largest first
    a, b = pairs["Class Index A"].to_numpy(), pairs["Class Index B"].to_numpy()  # (K(K-1)/2,) each
    count = pairs["Num Overlapping Examples"].to_numpy()  # (pairs,)
    size = np.bincount(labels, minlength=len(classes))  # (K,) images given each class
    share = count / np.maximum(size[a] + size[b], 1)  # (pairs,)
    floor = max(float(np.median(count)), 1.0)  # under one image per pair there is no floor to measure: take one
    chance = poisson.sf(count - 1, floor)  # (pairs,) P(at least this many | the floor)
    over = (count >= OVERLAP_TIMES * floor) & (share >= OVERLAP_SHARE) & (chance < OVERLAP_ALPHA / len(count))
    return [{"classes": [classes[a[p]], classes[b[p]]], "images": int(count[p]), "share": round(float(share[p]), 4),
             "times": round(float(count[p]) / floor, 1)} for p in np.flatnonzero(over).tolist()]


def overlapping_classes(labels: np.ndarray, probs: np.ndarray, *, classes: list[str]) -> list[dict]:
    """The pairs of classes the out-of-fold model confuses far beyond the rest (OVERLAP_TIMES the median pair,
    OVERLAP_SHARE of their images, and not by chance), most confused first: each as {classes: [a, b], images
    (estimated, both directions), share (of the two classes' images), times (the median pair's count)}. Empty under
    uniform noise, and with fewer than 3 classes."""
    labels, probs = _checked(labels, probs, classes)
    return _overlaps(_joint(labels, probs), labels, classes) if len(labels) else []


def find_label_issues(labels: np.ndarray, probs: np.ndarray, *, classes: list[str], files: list[str] | None = None,
                      index: np.ndarray | None = None) -> list[dict]:
    """The images whose given label the out-of-fold probabilities doubt: the likely wrong first, then those between
    two overlapping classes (overlapping_classes), each part most doubtful first and as many as the calibrated joint
    counts in it. Each as {index, file, given, suggested (the argmax class), score (1 - probability of the given
    label), kind ("wrong" or "overlap"), rank (1 = first)}.

    `labels` (N,) class indices, `probs` (N, K) out-of-fold (in-sample probabilities hide the errors a model has
    memorised); `index` the dataset rows (default 0..N-1), `files` their paths ('' without files)."""
    from cleanlab.rank import get_label_quality_scores

    labels, probs = _checked(labels, probs, classes)
    n, k = len(labels), len(classes)
    if not n:
        return []
    joint = _joint(labels, probs)  # (K, K)
    at = {c: i for i, c in enumerate(classes)}
    in_pair = np.zeros((k, k), dtype=bool)  # (K, K) True where (given, true) is an overlapping pair
    for pair in _overlaps(joint, labels, classes):
        i, j = (at[c] for c in pair["classes"])
        in_pair[i, j] = in_pair[j, i] = True
    off = ~np.eye(k, dtype=bool)
    count = {"wrong": round(float(joint[off & ~in_pair].sum())), "overlap": round(float(joint[in_pair].sum()))}
    try:
        quality = get_label_quality_scores(labels, probs, method=RANK_BY)  # (N,) low = likely wrong
    except (ValueError, AssertionError) as exc:
        raise _cleanlab_error(exc) from None
    suggested = probs.argmax(1)  # (N,)
    order = np.argsort(quality, kind="stable")  # (N,) most likely wrong first, ties in file order
    between = in_pair[labels[order], suggested[order]]  # (N,) the doubt lies between overlapping classes
    wrong, doubt = order[~between][:count["wrong"]], order[between][:count["overlap"]]  # (<= count,) each
    found = [(i, "wrong") for i in wrong.tolist()] + [(i, "overlap") for i in doubt.tolist()]
    rows = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
    score = 1.0 - probs[np.arange(n), labels]  # (N,) 1 - self-confidence
    issues = [{"index": int(rows[i]), "file": files[i] if files is not None else "", "given": classes[labels[i]],
               "suggested": classes[int(suggested[i])], "score": float(score[i]), "kind": kind, "rank": r}
              for r, (i, kind) in enumerate(found, start=1)]
    log.info("%d of %d labels look wrong, %d more are doubts between overlapping classes (cleanlab, %s)",
             len(wrong), n, len(doubt), COUNT_BY)
    return issues


def write_label_issues(issues: list[dict], path: str | Path) -> Path:
    """Write `label_issues.csv` (file, index, given, suggested, score, kind) in find_label_issues' order; `path` is
    the CSV or a folder for it. Returns the CSV's path."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "label_issues.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[i["file"], i["index"], i["given"], i["suggested"], f"{i['score']:.6f}", i["kind"]] for i in issues]
    return write_csv(path, ISSUE_COLUMNS, rows)


__all__ = ["COUNT_BY", "ISSUE_COLUMNS", "OOF_COLUMNS", "find_label_issues", "overlapping_classes", "read_oof",
           "write_label_issues"]

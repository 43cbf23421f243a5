"""Label errors from out-of-fold probabilities: read a cross-validation run's oof.csv, ask cleanlab which given
labels the held-out model confidently disagrees with, and list them, most likely wrong first.

    index, files, labels, classes, probs = read_oof("runs/cv/oof.csv")
    issues = find_label_issues(labels, probs, classes=classes, files=files, index=index)
    write_label_issues(issues, "runs/cv")  # runs/cv/label_issues.csv

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
ISSUE_COLUMNS = ["file", "index", "given", "suggested", "score"]
PROB_PREFIX = "prob_"
SUM_TOLERANCE = 0.01  # |row sum - 1|: 100 classes written with 4 decimals round off by 0.005 at most
# cleanlab's confident learning, counted on the calibrated confident joint (count.num_label_issues,
# "off_diagonal_calibrated") and taken lowest self-confidence first. Its uncalibrated count ("off_diagonal", what
# filter_by="low_self_confidence" uses) leaves out the flipped images the model is unsure of: digits, 5% flipped,
# 20 epochs: 64 flagged of 73 flips (precision 1.000, recall 0.877) against 75 (0.960, 0.986) calibrated; MNIST,
# 10,000 images, 8 epochs: 444 of 500 (0.995, 0.884) against 506 (0.970, 0.982) (benchmarks/bench_labels.py).
COUNT_BY = "off_diagonal_calibrated"
RANK_BY = "self_confidence"  # p(given label): a flipped image's held-out model gives its given label little


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


def find_label_issues(labels: np.ndarray, probs: np.ndarray, *, classes: list[str], files: list[str] | None = None,
                      index: np.ndarray | None = None) -> list[dict]:
    """The images whose given label the out-of-fold probabilities doubt, most likely wrong first: each as
    {index, file, given, suggested (the argmax class), score (1 - probability of the given label), rank (1 = first)}.

    `labels` (N,) class indices, `probs` (N, K) out-of-fold (in-sample probabilities hide the errors a model has
    memorised); `index` the dataset rows (default 0..N-1), `files` their paths ('' without files)."""
    from cleanlab.count import num_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    n, k = probs.shape if probs.ndim == 2 else (len(probs), 0)
    if len(labels) != n or k != len(classes):
        raise CnnfitError(f"labels ({len(labels)}) and probabilities {probs.shape} do not match {len(classes)} "
                          "classes; pass the arrays read_oof returns")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise CnnfitError(f"a label is outside 0..{k - 1}; labels are class indices into classes")
    try:
        count = int(num_label_issues(labels, probs, estimation_method=COUNT_BY))
        quality = get_label_quality_scores(labels, probs, method=RANK_BY)  # (N,) low = likely wrong
    except (ValueError, AssertionError) as exc:  # cleanlab asserts on classes without examples, and the like
        raise CnnfitError(f"cleanlab cannot search these labels ({one_line(exc)}); give every class a few "
                          "examples and out-of-fold probabilities") from None
    found = np.argsort(quality, kind="stable")[:count]  # (count,) most likely wrong first, ties in file order
    rows = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
    score = 1.0 - probs[np.arange(n), labels]  # (N,) 1 - self-confidence
    issues = [{"index": int(rows[i]), "file": files[i] if files is not None else "", "given": classes[labels[i]],
               "suggested": classes[int(probs[i].argmax())], "score": float(score[i]), "rank": r}
              for r, i in enumerate(found.tolist(), start=1)]
    log.info("%d of %d labels look wrong (cleanlab, %s)", len(issues), n, COUNT_BY)
    return issues


def write_label_issues(issues: list[dict], path: str | Path) -> Path:
    """Write `label_issues.csv` (file, index, given, suggested, score), most likely wrong first; `path` is the CSV
    or a folder for it. Returns the CSV's path."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "label_issues.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[i["file"], i["index"], i["given"], i["suggested"], f"{i['score']:.6f}"] for i in issues]
    return write_csv(path, ISSUE_COLUMNS, rows)


__all__ = ["COUNT_BY", "ISSUE_COLUMNS", "OOF_COLUMNS", "find_label_issues", "read_oof", "write_label_issues"]

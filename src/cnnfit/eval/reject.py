"""Answering "unknown": a threshold on a confidence score below which a prediction is withheld, fitted on the
validation split for a target precision (accuracy of the answers given) or coverage (share answered).

    r = fit_reject(scores(val_logits, temperature), val_logits.argmax(1) == val_labels, precision=0.99)
    known = scores(test_logits, temperature) >= r["threshold"]  # the rest are "unknown"

Scores, higher meaning more familiar: `maxprob`, the calibrated maximum softmax probability (Hendrycks & Gimpel,
2017), and `energy`, logsumexp of the logits (Liu et al., 2020), which keeps the logits' scale that softmax throws
away and so separates images of no known class better on many sets (benchmarks/bench_ood.py)."""

from __future__ import annotations

import math

import numpy as np

from cnnfit.errors import CnnfitError

SCORES = ("maxprob", "energy")
PRECISION = 0.99  # the default target: at most 1 wrong answer in 100 given, on val


def scores(logits: np.ndarray, temperature: float = 1.0, kind: str = "maxprob") -> np.ndarray:
    """(N, K) logits -> (N,) confidence, higher = more familiar."""
    if kind not in SCORES:
        raise CnnfitError(f"reject.score={kind!r} is not a score; choose from: {', '.join(SCORES)}")
    z = np.asarray(logits, dtype=np.float64) / temperature  # (N, K)
    top = z.max(1, keepdims=True)
    lse = (top + np.log(np.exp(z - top).sum(1, keepdims=True)))[:, 0]  # (N,) logsumexp, overflow-safe
    return (np.exp(top[:, 0] - lse) if kind == "maxprob" else lse).astype(np.float64)


def fit_reject(score: np.ndarray, correct: np.ndarray, *, precision: float | None = None,
               coverage: float | None = None) -> dict:
    """The threshold that answers as many validation images as possible while the answers' accuracy stays at or
    above `precision`, or that answers the `coverage` share of them; with what it achieved on that split.
    Exactly one of the two targets is given. An image is answered when its score >= threshold."""
    if (precision is None) == (coverage is None):
        raise CnnfitError("give one target: reject.precision (e.g. 0.99) or reject.coverage (e.g. 0.9)")
    target = precision if precision is not None else coverage
    if not 0 < target <= 1:
        raise CnnfitError(f"reject target {target} must be in (0, 1]; e.g. reject.precision=0.99")
    score, correct = np.asarray(score, dtype=np.float64), np.asarray(correct, dtype=bool)
    if not len(score):
        raise CnnfitError("no validation images to fit the reject threshold on; keep a val split (data.val > 0)")
    order = np.argsort(-score, kind="stable")  # most confident first
    s, hits = score[order], np.cumsum(correct[order])
    n = np.arange(1, len(s) + 1)
    answered_ok = np.r_[s[:-1] > s[1:], True]  # a cut between tied scores cannot be made
    if precision is not None:
        good = np.flatnonzero((hits / n >= precision) & answered_ok)
        k = int(good[-1]) + 1 if len(good) else 0  # the largest answered set that is precise enough
    else:
        k = int(np.flatnonzero(answered_ok & (n >= math.ceil(coverage * len(s) - 1e-9)))[0]) + 1
    threshold = float(s[k - 1]) if k else math.inf  # inf: no cut reaches the precision; nothing is answered
    return {"threshold": threshold, "precision_target": precision, "coverage_target": coverage,
            "val_precision": float(hits[k - 1] / k) if k else None, "val_coverage": k / len(s),
            "val_images": len(s)}


def answered(score: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bool: the predictions given; the others are "unknown"."""
    return np.asarray(score) >= threshold


def ood_figures(known: np.ndarray, unknown: np.ndarray) -> dict[str, float]:
    """How well a score tells images of the known classes (positives) from unknown ones: AUROC, and the share of
    unknown images let through when 95% of known ones are (FPR at 95% TPR; lower is better)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    cut = np.quantile(known, 0.05)  # 95% of known images score at or above it
    return {"auroc": float(roc_auc_score(y, np.r_[known, unknown])), "fpr95": float((unknown >= cut).mean())}


__all__ = ["PRECISION", "SCORES", "answered", "fit_reject", "ood_figures", "scores"]

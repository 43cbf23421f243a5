"""Are two runs' accuracies really different? Each run against the first on the same test images, image by
image (paired bootstrap and McNemar's test, eval.bootstrap.paired_difference), with the verdict in words; or why
no paired test is possible (other images, other labels, not a classifier)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnfit.eval.bootstrap import paired_difference
from cnnfit.report.runfiles import RunFiles

_Answers = tuple[list[tuple[str, str]], list[str], list[str]]  # per test image: (index, file), true, predicted


def paired(runs: list[RunFiles], labels: list[str]) -> list[dict[str, Any]]:
    """Each run against the first, image by image on the same test images: accuracy difference, its interval,
    McNemar's p and a verdict (eval.bootstrap.paired_difference); or, as the verdict, why no paired test is
    possible. [] where no run is a classifier."""
    if not any(run.task == "classify" for run in runs):
        return []
    first = _answers(runs[0], labels[0])
    tests = []
    for run, label in zip(runs[1:], labels[1:]):
        other = _answers(run, label)
        why = first if isinstance(first, str) else other if isinstance(other, str) else _unpaired(
            first, other, labels[0], label)
        if why:
            tests.append({"run": label, "against": labels[0],
                          "verdict": f"{label} against {labels[0]}: a paired test is not possible: {why}"})
            continue
        (_, true, pred_a), (_, _, pred_b) = first, other
        codes = {name: i for i, name in enumerate(dict.fromkeys(true + pred_a + pred_b))}  # class name -> index
        y, a, b = (np.array([codes[c] for c in names], dtype=np.int64) for names in (true, pred_a, pred_b))
        test = paired_difference(y, a, b, names=(labels[0], label))
        tests.append({"run": label, "against": labels[0], **test, "interval": list(test["interval"])})
    return tests


def _answers(run: RunFiles, label: str) -> _Answers | str:
    """The run's test images with their true and predicted classes, from predictions.csv; or why it has none."""
    if run.task != "classify":
        return f"{label} is a {run.task} run, and the test pairs the right and wrong answers of classifiers"
    rows = run.predictions
    if not (run.dir / "metrics.json").is_file() or not rows:
        return f"{label} has not been scored on its test split (no metrics.json or predictions.csv)"
    if not {"index", "true", "pred"} <= set(rows[0]):
        return f"{label}'s predictions.csv has no index, true and pred columns; run cnnfit eval on it again"
    return [(r["index"], r.get("file") or "") for r in rows], [r["true"] for r in rows], [r["pred"] for r in rows]


def _unpaired(a: _Answers, b: _Answers, name_a: str, name_b: str) -> str:
    """Why two runs' predictions cannot be paired image by image; '' when they can: the same images (index and
    file) in the same order, with the same true classes."""
    (images_a, true_a, _), (images_b, true_b, _) = a, b
    if len(images_a) != len(images_b):
        return (f"{name_a} was scored on {len(images_a):,} test images and {name_b} on {len(images_b):,} "
                "(another split or dataset)")
    row = next((i for i, (x, y) in enumerate(zip(images_a, images_b)) if x != y), None)
    if row is not None:
        image = lambda x: x[1] or f"image {x[0]}"  # noqa: E731  the file where there is one, else the index
        return (f"their test images differ (row {row + 1} of predictions.csv: {image(images_a[row])} against "
                f"{image(images_b[row])}), so they were split or sampled differently")
    row = next((i for i, (x, y) in enumerate(zip(true_a, true_b)) if x != y), None)
    if row is not None:
        return (f"the same test images carry different true classes (row {row + 1}: {true_a[row]} against "
                f"{true_b[row]}), so the data changed between the runs")
    return ""


__all__ = ["paired"]

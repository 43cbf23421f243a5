"""Plots a person reads at a glance; matplotlib is imported here only, with the file-only Agg backend.

One style throughout: 110 dpi, grid alpha 0.3, constrained layout, sentence-case titles; every figure is written
by `save_figure` (temporary file, then rename) and closed there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnfit.engine.scores import DIRECTIONS
from cnnfit.files import atomic_path

if TYPE_CHECKING:
    from cnnfit.engine.lr_find import LRFind


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write at 110 dpi through a temporary name, so a reader never sees half a PNG; the figure is closed either
    way, since pyplot keeps every open figure alive."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    finally:
        pyplot().close(fig)


def _note(title: str, text: str, path: Path) -> None:
    """A figure that says why there is nothing to draw, so a report never links to a missing file."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3), constrained_layout=True)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="grey", transform=ax.transAxes)
    ax.set_title(title)
    ax.axis("off")
    save_figure(fig, path)


def _short(name: str, width: int = 14) -> str:
    """A class name cut to `width` characters, so long names do not run into the neighbouring panel."""
    return name if len(name) <= width else name[: width - 1] + "…"


# a history score's name on a plot; the score panel shows the first one a history holds: any task has one
SCORE_NAMES = {"val_acc": "accuracy", "val_macro_f1": "macro F1", "val_r2": "R^2", "val_f1": "micro F1",
               "val_mae": "MAE"}


def plot_curves(history: list[dict[str, float]], path: Path, score: str | None = None,
                best_epoch: int | None = None) -> None:
    """Loss, and a score per epoch (train and val where both are logged): `score` (a history key such as
    'val_macro_f1'), else the first of SCORE_NAMES in the history, with the best epoch marked: `best_epoch` (the
    one best.pt holds), else the score's best. A val series that is all nan (not validated) is left out."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    score = score or next((k for k in SCORE_NAMES if history and k in history[0]), "val_loss")
    name = SCORE_NAMES.get(score, score.removeprefix("val_"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, title in zip(axes, ("val_loss", score), ("loss", name)):
        train = "train_" + key.removeprefix("val_")
        if history and train in history[0]:
            ax.plot(epochs, [h[train] for h in history], "o-", label="train")
        values = [h.get(key, float("nan")) for h in history]
        if not np.all(np.isnan(values)):
            ax.plot(epochs, values, "o-", label="val")
        if key == score and history:
            pick = np.nanargmin if DIRECTIONS.get(score) == "min" else np.nanargmax
            best = (epochs.index(best_epoch) if best_epoch in epochs else
                    int(pick(values)) if not np.all(np.isnan(values)) else len(epochs) - 1)
            ax.axvline(epochs[best], color="grey", ls=":", label=f"best epoch ({epochs[best]})")
        ax.set(xlabel="epoch", ylabel=title, title=title[0].upper() + title[1:])
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def plot_confusion(matrix: list[list[int]] | np.ndarray, classes: list[str], path: Path,
                   normalize: bool = False) -> None:
    """Where the errors go. Colour is always the share of the true class (row), so a rare class's mistakes
    stand out as much as a common one's; cell text is that share with `normalize` (recall on the diagonal),
    else the raw count. Above 30 classes the cells are too small for text."""
    plt = pyplot()
    cm = np.asarray(matrix)  # (K, K): rows true, columns predicted
    n = len(classes)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.5 * n, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), constrained_layout=True)
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    title = "Confusion matrix (row-normalized: recall on the diagonal)" if normalize else "Confusion matrix (counts)"
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ticks = 6 if n > 30 else 9
    if n <= 120:  # 16 inches hold ~120 labels at 6 pt; past that they overlap into a black bar
        ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=ticks)
        ax.set_yticklabels(classes, fontsize=ticks)
    else:
        ax.set(xticklabels=[], yticklabels=[])
    if n <= 30:
        fontsize = 9 if n <= 10 else 7 if n <= 20 else 6
        for i, j in np.ndindex(n, n):
            ax.text(j, i, f"{rows[i, j]:.2f}" if normalize else str(cm[i, j]), ha="center", va="center",
                    fontsize=fontsize, color="white" if rows[i, j] > 0.5 else "black")
    save_figure(fig, path)


def plot_regression(true: np.ndarray, pred: np.ndarray, path: Path, name: str = "target") -> None:
    """Predicted against true targets, with the y = x line a perfect model would sit on."""
    plt = pyplot()
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    ax.scatter(true, pred, s=10, alpha=0.6)
    both = np.concatenate([true, pred])
    if len(both):
        lo, hi = float(both.min()), float(both.max())
        ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=1, label="y = x")
        ax.legend()
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=f"Test split: {len(true)} images")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_samples(images, labels, classes: list[str], path: Path) -> None:
    """Up to 64 images (B, C, H, W) in [0, 1], 8 a row, titled by class: what the model sees after augmentation.
    `images` and `labels` may be numpy arrays or torch tensors; soft labels (B, K) from mixup show their top class."""
    plt = pyplot()
    # torch tensors to numpy; torch itself is not imported here
    images, labels = (a.detach().float().cpu().numpy() if hasattr(a, "detach") else a for a in (images, labels))
    x = np.clip(np.asarray(images, dtype=np.float32)[:64], 0, 1)  # (B, C, H, W); noise may push past [0, 1]
    y = np.asarray(labels)[: len(x)]
    y = y.argmax(1) if y.ndim == 2 else y
    fig = _image_grid(plt, x, [classes[int(label)] for label in y], cell=(1.3, 1.45))
    save_figure(fig, path)


def _image_grid(plt, images: np.ndarray, titles: list[str], cell: tuple[float, float], extra_height: float = 0.0,
                **title_kw):
    """Images (B, C, H, W) in [0, 1], 8 a row, each under its title; grayscale for one channel.

    One mosaic image on one axes, titles as text: 64 subplots under constrained layout took ~1.5 s to save,
    this takes a tenth of that."""
    cols = max(1, min(8, len(images)))
    rows = max(1, -(-len(images) // cols))
    n, c, h, w = images.shape if len(images) else (0, 1, 8, 8)
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    px_per_inch = w / (cell[0] * 0.9)  # the image fills 90% of its cell's width
    top = round(cell[1] * px_per_inch) - h  # pixels above each image, for its title
    gap = max(1, round(cell[0] * px_per_inch) - w)
    mosaic = np.ones((rows * (h + top), cols * (w + gap), c), dtype=np.float32)  # white background, (Hm, Wm, C)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        y0, x0 = r * (h + top) + top, k * (w + gap) + gap // 2
        mosaic[y0: y0 + h, x0: x0 + w] = img.transpose(1, 2, 0)  # (H, W, C)
    fig = plt.figure(figsize=(cell[0] * cols, cell[1] * rows + extra_height))
    ax = fig.add_axes((0, 0, 1, cell[1] * rows / (cell[1] * rows + extra_height)))
    ax.axis("off")
    # cmap and limits apply to one channel only: matplotlib ignores them for RGB
    ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    for i, title in enumerate(titles[: len(images)]):
        r, k = divmod(i, cols)
        ax.text(k * (w + gap) + gap // 2 + w / 2, r * (h + top) + top - 0.5 - top * 0.08, title, ha="center",
                va="bottom", fontsize=7, linespacing=1.1 if lines > 1 else 1.0, **title_kw)
    return fig


def plot_lr_find(result: LRFind, path: Path) -> None:
    """The LR range test: raw loss faint, smoothed loss bold, on a log LR axis, with the suggestion marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", lw=2.2, label="smoothed loss")
    ax.axvline(result.suggestion, color="tab:red", ls="--", label=f"suggested lr = {result.suggestion:.3g}")
    ax.text(result.suggestion, 0.98, f" {result.suggestion:.3g}", transform=ax.get_xaxis_transform(),
            color="tab:red", va="top", ha="left")  # x in data units, y in axes units: always at the top
    ax.set_xscale("log")
    smoothed = np.asarray(result.smoothed, dtype=np.float64)
    if len(smoothed):  # the raw loss spikes as it diverges; clip there so the useful part stays readable
        low = min(float(np.min(result.losses)), float(smoothed.min()))
        top = max(1.5 * float(smoothed[: int(np.argmin(smoothed)) + 1].max()), low + 1e-3)
        ax.set_ylim(low - 0.05 * (top - low), top)
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title="LR range test")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_lr(steps: list[int] | np.ndarray, lrs: list[float] | np.ndarray, path: Path,
            steps_per_epoch: int | None = None) -> str:
    """The learning rate the optimizer actually used, per step: shows warmup, decay and restarts as they ran.
    The y-axis turns log when most steps sit 2 decades below the peak (exponential or step decay), where a linear
    one would flatten them to zero; a cosine or one-cycle end that dives to 0 stays linear, or its last few steps
    would fill the plot. With `steps_per_epoch` a top axis reads in epochs. Returns the y scale used."""
    plt = pyplot()
    steps, lrs = np.asarray(steps, dtype=np.float64), np.asarray(lrs, dtype=np.float64)
    if len(steps) != len(lrs):
        raise ValueError(f"plot_lr got {len(steps)} steps but {len(lrs)} learning rates; pass one lr per step")
    if not len(steps):
        _note("Learning rate schedule", "no steps recorded", path)
        return "linear"
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot(steps, lrs, color="tab:blue", lw=1.8)
    positive = lrs[lrs > 0]
    if len(positive) and positive.max() / np.median(positive) > 100:
        ax.set_yscale("log")  # a zero lr (warmup start) has no place on it and is left out of the line
    ax.set(xlabel="optimizer step", ylabel="learning rate" + (" (log scale)" if ax.get_yscale() == "log" else ""),
           title=f"Learning rate schedule: peak {lrs.max():.3g}, last {lrs[-1]:.3g}")
    if steps_per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
        top.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    scale = ax.get_yscale()
    save_figure(fig, path)
    return scale


def plot_per_class_f1(per_class: dict[str, dict], path: Path) -> None:
    """F1 per class, worst at the top, where a reviewer looks first; the dashed macro mean splits the classes
    that pull the average down (red) from the rest. Tick labels carry the support, since the F1 of a class
    with 5 test images is noise. Past 100 classes only the 60 worst are drawn: more bars stop being readable."""
    plt = pyplot()
    if not per_class:
        _note("Per-class F1", "no classes", path)
        return
    names = list(per_class)
    f1 = np.array([per_class[c]["f1"] for c in names], dtype=np.float64)  # (K,)
    mean = float(f1.mean())
    order = np.argsort(f1, kind="stable")  # worst first
    title = f"Per-class F1 ({len(names)} classes; dashed: macro mean {mean:.3f})"
    if len(order) > 100:
        order = order[:60]
        title = f"Per-class F1: the 60 worst of {len(names)} classes (dashed: macro mean {mean:.3f})"
    labels = [_short(names[i], 24) + (f" (n={per_class[names[i]]['support']})" if "support" in per_class[names[i]]
                                      else "") for i in order]
    n = len(order)
    fig, ax = plt.subplots(figsize=(7, min(1.2 + 0.28 * n, 20)), constrained_layout=True)
    colors = ["tab:red" if f1[i] < mean else "tab:blue" for i in order]
    bars = ax.barh(range(n), f1[order], color=colors, alpha=0.8)
    ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7 if n > 30 else 8)
    ax.axvline(mean, color="black", ls="--", lw=1.2)  # named in the title: a legend would cover the bars
    ax.set_yticks(range(n), labels, fontsize=6 if n > 30 else 9)
    ax.invert_yaxis()  # bar 0, the worst, at the top
    ax.set(xlim=(0, 1.1), ylim=(n - 0.5, -0.5), xlabel="F1", title=title)
    ax.grid(alpha=0.3, axis="x")
    save_figure(fig, path)


def _one_vs_rest(kind: str, probs: np.ndarray, labels: np.ndarray, classes: list[str], path: Path
                 ) -> dict[str, float]:
    """ROC or precision-recall curves, one class against the rest; both plots share every rule, so they share this.

    Binary: one curve, for classes[1]. Up to 12 classes: one curve each. More: macro and micro averages and the
    3 worst classes, since 20 crossing curves read as noise. A class with no positives or no negatives has no
    curve and is named in the title."""
    plt = pyplot()
    probs = np.asarray(probs, dtype=np.float64)  # (N, K)
    labels = np.asarray(labels).astype(np.int64)  # (N,)
    n_classes = probs.shape[1]
    onehot = labels[:, None] == np.arange(n_classes)[None, :]  # (N, K) one-vs-rest truth
    curves, title = _ovr_curves(kind, probs, onehot, classes)

    fig, ax = plt.subplots(figsize=(6.2, 6), constrained_layout=True)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    else:  # a random scorer's precision is the positive share: 1/K averaged over one-vs-rest classes
        base = float(onehot[:, 1].mean()) if n_classes == 2 else 1 / n_classes
        ax.axhline(base, color="grey", ls=":", lw=1, label=f"chance (precision {base:.2f})")
    cycle = plt.colormaps["tab10"].colors
    metric = "AUC" if kind == "roc" else "AP"
    for i, (name, x_, y_, score, style) in enumerate(curves):
        style = {"color": cycle[i % 10], "lw": 1.6, "ls": "-" if i < 10 else "--", **style}
        ax.plot(x_, y_, label=f"{_short(name)} ({metric} {score:.3f})", **style)
    xlabel, ylabel = ("false positive rate", "true positive rate") if kind == "roc" else ("recall", "precision")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), xlabel=xlabel, ylabel=ylabel, aspect="equal")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    save_figure(fig, path)
    return {name: score for name, _, _, score, _ in curves}


def _curve(kind: str, y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(x, y, summary) with x increasing: (FPR, TPR, AUC) or (recall, precision, AP)."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    if kind == "roc":
        fpr, tpr, _ = roc_curve(y, score)
        return fpr, tpr, float(auc(fpr, tpr))
    precision, recall, _ = precision_recall_curve(y, score)
    return recall[::-1], precision[::-1], float(average_precision_score(y, score))


def _ovr_curves(kind: str, probs: np.ndarray, onehot: np.ndarray, classes: list[str]) -> tuple[list[tuple], str]:
    """The curves to draw, each (label, x, y, score, style), and a title that says which and what was left out."""
    from sklearn.metrics import auc

    n_classes = probs.shape[1]
    stepwise = {} if kind == "roc" else {"drawstyle": "steps-pre"}  # precision holds until recall moves on
    what = "ROC" if kind == "roc" else "Precision-recall"
    curves, skipped = [], []
    for k in [1] if n_classes == 2 else range(n_classes):
        y = onehot[:, k]
        if y.all() or not y.any():
            skipped.append(_short(classes[k]))
            continue
        curves.append((classes[k], *_curve(kind, y, probs[:, k]), stepwise))
    title = (f"{what} curve: {_short(classes[1], 30)} as positive" if n_classes == 2 else
             f"{what} curves, one-vs-rest ({n_classes} classes)")
    if n_classes > 12 and curves:
        grid = np.linspace(0, 1, 201)
        mean_y = np.mean([np.interp(grid, x_, y_) for _, x_, y_, _, _ in curves], axis=0)
        macro = float(auc(grid, mean_y)) if kind == "roc" else float(np.mean([c[3] for c in curves]))
        mx, my, micro = _curve(kind, onehot.ravel(), probs.ravel())
        worst = sorted(curves, key=lambda c: c[3])[:3]
        curves = [("macro average", grid, mean_y, macro, {"color": "black", "lw": 2.4}),
                  ("micro average", mx, my, micro, {"color": "black", "lw": 1.8, "ls": "--", **stepwise})] + worst
        title = f"{what}: macro and micro average, and the 3 worst of {n_classes} classes"
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        title += f"\nno curve (no positives or no negatives): {shown}"
    return curves, title


def plot_roc(probs: np.ndarray, labels: np.ndarray, classes: list[str], path: Path) -> dict[str, float]:
    """One-vs-rest ROC curves from probabilities (N, K) and integer labels (N,): how well each class ranks
    above the rest at every threshold. Returns {curve name: AUC} for the curves drawn (see _one_vs_rest)."""
    return _one_vs_rest("roc", probs, labels, classes, path)


def plot_pr(probs: np.ndarray, labels: np.ndarray, classes: list[str], path: Path) -> dict[str, float]:
    """One-vs-rest precision-recall curves, the ROC's honest sibling for rare classes, where a high AUC can
    hide poor precision. Same rules as plot_roc; returns {curve name: average precision}."""
    return _one_vs_rest("pr", probs, labels, classes, path)


def _ece_bins(conf: np.ndarray, correct: np.ndarray, bins: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-bin accuracy, mean confidence and count over `bins` equal-width bins (lo, hi] of [0, 1] (the first
    also takes 0), and the expected calibration error sum_b (n_b / N) * |acc_b - conf_b| (Guo et al. 2017).
    Empty bins have NaN accuracy and confidence and add nothing to the ECE."""
    conf = np.asarray(conf, dtype=np.float64)  # (N,) top-1 confidence
    correct = np.asarray(correct, dtype=np.float64)  # (N,) 1.0 where top-1 is right
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (N,) bin of each sample
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(index, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / counts
    ece = float(np.nansum(counts / max(len(conf), 1) * np.abs(acc - mean_conf)))
    return acc, mean_conf, counts, ece


def plot_reliability(probs_before: np.ndarray, labels: np.ndarray, path: Path, probs_after: np.ndarray | None = None,
                     bins: int = 15) -> None:
    """Reliability diagram: accuracy per top-1 confidence bin against the diagonal a calibrated model sits on
    (bars below it: overconfident), with the image count per bin underneath, since a bin of 3 images says
    little. With `probs_after` (e.g. after temperature scaling) both are drawn side by side, ECE in the legend."""
    plt = pyplot()
    labels = np.asarray(labels).astype(np.int64)  # (N,)
    sets = [("before" if probs_after is not None else "model", probs_before, "tab:blue")]
    if probs_after is not None:
        sets.append(("after temperature scaling", probs_after, "tab:orange"))
    edges = np.linspace(0, 1, bins + 1)
    width = 1 / bins / len(sets)
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, height_ratios=[3, 1],
                                   constrained_layout=True)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    all_counts = []
    for i, (name, probs, color) in enumerate(sets):
        probs = np.asarray(probs, dtype=np.float64)  # (N, K)
        acc, _, counts, ece = _ece_bins(probs.max(1), probs.argmax(1) == labels, bins)
        x = edges[:-1] + width * i  # left edge of this set's bar in each bin
        filled = counts > 0
        ax.bar(x[filled], acc[filled], width=width, align="edge", color=color, alpha=0.75, edgecolor="white",
               label=f"{name}: ECE {ece:.3f}")
        ax_n.bar(x, counts, width=width, align="edge", color=color, alpha=0.35)
        all_counts.append(counts)
    counts = np.concatenate(all_counts)
    if counts.max(initial=0) > 100 * max(counts[counts > 0].min(initial=1), 1):
        ax_n.set_yscale("log")  # most images sit in the top bin; log keeps the others visible
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
           title=f"Reliability diagram ({len(labels)} images, {bins} bins)")
    ax_n.set(xlabel="top-1 confidence", ylabel="images")
    for a in (ax, ax_n):
        a.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def plot_wrong(images: np.ndarray, true: np.ndarray, pred: np.ndarray, confidence: np.ndarray,
               classes: list[str], path: Path, n: int = 24) -> np.ndarray:
    """The `n` most confidently wrong images (B, C, H, W; uint8 0..255 or float 0..1), 8 a row: confident
    mistakes are where label noise and look-alike classes show. Returns the indices drawn, most confident
    first, so a report can list the files."""
    plt = pyplot()
    true, pred = np.asarray(true).astype(np.int64), np.asarray(pred).astype(np.int64)
    confidence = np.asarray(confidence, dtype=np.float64)
    wrong = np.flatnonzero(pred != true)
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]  # (n,) most confident first
    if not len(shown):
        _note("Confidently wrong predictions", "no misclassified images", path)
        return shown
    x = np.asarray(images)[shown]
    x = x / 255.0 if x.dtype == np.uint8 else np.clip(x.astype(np.float32), 0, 1)  # (n, C, H, W) in [0, 1]
    titles = [f"true: {_short(classes[true[i]])}\npred: {_short(classes[pred[i]])} ({confidence[i]:.2f})"
              for i in shown]
    fig = _image_grid(plt, x, titles, cell=(1.5, 1.75), extra_height=0.4, color="tab:red")
    fig.suptitle(f"The {len(shown)} most confident mistakes ({len(wrong)} wrong of {len(true)} images)")
    save_figure(fig, path)
    return shown


__all__ = ["SCORE_NAMES", "plot_confusion", "plot_curves", "plot_lr", "plot_lr_find", "plot_per_class_f1", "plot_pr",
           "plot_regression", "plot_reliability", "plot_roc", "plot_samples", "plot_wrong", "pyplot", "save_figure"]

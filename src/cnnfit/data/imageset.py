"""ImageSet: uint8 images, labels and class names; and the seeded, stratified split of it.

Three tasks share the one container; the labels' dtype and shape tell them apart:
classify (N,) int64 class index, multilabel (N, L) uint8 multi-hot, regress (N,) float32 target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnfit.errors import CnnfitError

SPLITS = ("train", "val", "test")
TASKS = ("classify", "multilabel", "regress")
_MAX_BINS = 10  # target deciles for a regression split
_PER_BIN = 20  # images per quantile bin at least: fewer bins on small sets, so each bin still splits 70/15/15


@dataclass
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8, array or memmap
    labels: np.ndarray  # classify (N,) int64 class index; multilabel (N, L) uint8 multi-hot; regress (N,) float32
    classes: list[str]  # class names; label names (multilabel); [target column name] (regress)
    files: list[str] | None = None  # where each image came from, when it came from a file
    origin: np.ndarray | None = None  # (N,) int8 index into SPLITS when the source is already split
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) never decoded
    task: str = "classify"  # one of TASKS
    native: int | None = None  # px: the source's own side when its arrays were resized to this size (8: digits)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CnnfitError(f"unknown task '{self.task}'; choose from: {', '.join(TASKS)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # (C, H, W)


def check_task(task: str) -> None:
    """Refuse a task name cnnfit does not know (`auto` included: readers detect it), listing the ones it does."""
    if task != "auto" and task not in TASKS:
        raise CnnfitError(f"unknown task '{task}'; choose from: auto, {', '.join(TASKS)}")


def task_of(labels: np.ndarray) -> str:
    """The task a label array belongs to, from its shape and dtype alone."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return "multilabel"
    return "regress" if np.issubdtype(labels.dtype, np.floating) else "classify"


def class_counts(ds: ImageSet, index: np.ndarray | None = None) -> np.ndarray:
    """(K,) images per class (classify) or positives per label (multilabel) among ds[index]."""
    labels = ds.labels if index is None else ds.labels[np.asarray(index, dtype=np.int64)]
    if ds.task == "multilabel":
        return labels.sum(0, dtype=np.int64)
    if ds.task == "regress":
        raise CnnfitError("a regression dataset has no classes to count; use its targets (ds.labels) instead")
    return np.bincount(labels, minlength=len(ds.classes))


def label_text(ds: ImageSet, i: int) -> str:
    """Image i's label as a person writes it: 'cat', 'cat;outdoor' or '3.25' (the manifest's own syntax)."""
    if ds.task == "multilabel":
        return ";".join(ds.classes[k] for k in np.flatnonzero(ds.labels[i]))
    if ds.task == "regress":
        return str(np.float32(ds.labels[i]))  # shortest text that reads back to the same float32
    return ds.classes[int(ds.labels[i])]


def strata(labels: np.ndarray, task: str | None = None) -> tuple[np.ndarray, str]:
    """(N,) int group of each image for a stratified split, and what the groups are.

    classify: the class. multilabel: the row's rarest label (a cheap stand-in for iterative stratification,
    Sechidis et al. 2011), so rare labels reach every split; rows without labels form one group.
    regress: the target's quantile bin, so every split spans the range of targets.
    """
    labels = np.asarray(labels)
    task = task or task_of(labels)
    if task == "classify":
        return labels.astype(np.int64), "stratified"
    if task == "multilabel":
        hot = labels.astype(bool)  # (N, L)
        by_rarity = np.argsort(hot.sum(0), kind="stable")  # label ids, rarest first
        first = hot[:, by_rarity].argmax(1)  # (N,) position of each row's rarest present label
        rarest = np.where(hot.any(1), by_rarity[first], labels.shape[1])  # no labels: a group of their own
        return rarest.astype(np.int64), "stratified by each image's rarest label"
    bins = int(np.clip(len(labels) // _PER_BIN, 1, _MAX_BINS))
    edges = np.quantile(labels, np.linspace(0, 1, bins + 1)[1:-1]) if len(labels) else np.zeros(0)
    return np.searchsorted(edges, labels, side="right").astype(np.int64), f"stratified by {bins} target quantile bins"


def _stratified(keys: np.ndarray, idx: np.ndarray, frac: float, rng: np.random.Generator):
    """Split idx into (rest, taken) taking `frac` of each group, rounded, at least one when frac > 0."""
    take = np.zeros(len(keys), dtype=bool)
    sub = keys[idx]
    order = np.argsort(sub, kind="stable")  # idx grouped by key, in one sort
    bounds = np.flatnonzero(np.diff(sub[order])) + 1
    for members in np.split(idx[order], bounds):
        members = members[rng.permutation(len(members))]
        n = int(round(frac * len(members)))
        if frac > 0 and len(members) > 1:
            n = min(max(n, 1), len(members) - 1)
        take[members[:n]] = True
    return idx[~take[idx]], idx[take[idx]]


def split_indices(ds: ImageSet, val: float, test: float, seed: int) -> tuple[dict[str, np.ndarray], str]:
    """Indices of train/val/test and a sentence on how they were made.

    A split present in the source is kept; a missing val is carved from train (fraction `val`);
    a missing test falls back to val, said so, because carving it would change the user's split.
    Groups are classes, or for other tasks the groups `strata` names.
    """
    rng = np.random.default_rng(seed)
    everything = np.arange(len(ds))
    keys, by = strata(ds.labels, ds.task)
    if ds.origin is None:
        rest, test_idx = _stratified(keys, everything, test, rng)
        train_idx, val_idx = _stratified(keys, rest, val / max(1e-9, 1 - test), rng)
        return {"train": train_idx, "val": val_idx, "test": test_idx}, (
            f"{by} {1 - val - test:.0%}/{val:.0%}/{test:.0%} split, seed {seed}")
    parts = {name: everything[ds.origin == i] for i, name in enumerate(SPLITS)}
    how = ["the source's own split"]
    if len(parts["val"]) == 0:
        parts["train"], parts["val"] = _stratified(keys, parts["train"], val, rng)
        how.append(f"val carved from train ({val:.0%}, {by}, seed {seed})")
    if len(parts["test"]) == 0:
        parts["test"] = parts["val"]
        how.append("no test split: test metrics are measured on val, which also picked the best epoch")
    return parts, "; ".join(how)


def subsample(labels: np.ndarray, index: np.ndarray, *, fraction: float = 1.0, per_class: int | None = None,
              seed: int = 0) -> np.ndarray:
    """A stratified, seeded subset of `index` (sorted): `fraction` of each class, then at most `per_class` of it.
    For quick experiments and scarce-data studies; a fixed seed gives the same subset every run.
    Multilabel groups by each image's rarest label, regression by target quantile bin (see `strata`)."""
    if per_class and task_of(labels) == "regress":
        raise CnnfitError("data.per_class needs classes, and regression targets have none; "
                          "use data.fraction to take part of the data")
    keys = strata(labels)[0]
    rng = np.random.default_rng(seed + 7919)  # apart from the split's own stream, so the split stays put
    keep = []
    for c in np.unique(keys[index]):
        members = rng.permutation(index[keys[index] == c])
        n = max(1, round(len(members) * fraction))
        keep.append(members[: min(n, per_class) if per_class else n])
    return np.sort(np.concatenate(keep)) if keep else index

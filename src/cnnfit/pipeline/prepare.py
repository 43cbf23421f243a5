"""Data preparation shared by `cnnfit train` and `cnnfit inspect`: load (cached), check, split,
normalization statistics, and the data report with its augmented-samples grid."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnfit.config import Config
from cnnfit.data import DeviceLoader, ImageSet, augment, class_counts, label_text, read_rows, split_indices, split_stats
from cnnfit.data import strata, subsample
from cnnfit.data.augment import Augment
from cnnfit.data.cache import open_dataset, remembered
from cnnfit.data.inspect import format_report, inspect_dataset, write_clean_manifest
from cnnfit.data.look import Look, look
from cnnfit.device import synchronize
from cnnfit.errors import CnnfitError
from cnnfit.pipeline.rundir import write_json

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    ds: ImageSet
    cache_hit: bool
    parts: dict[str, np.ndarray]  # train/val/test indices into ds
    split_how: str
    mean: list[float]
    std: list[float]
    source: Path | None = None  # the folder, zip or file the images came from
    merged_val: bool = False  # val's images are also in train (merge_val)

    @property
    def train_counts(self) -> np.ndarray | None:
        """(K,) train images per class, or per label (multilabel); None for regression, which has no classes."""
        return None if self.ds.task == "regress" else class_counts(self.ds, self.parts["train"])


def look_at(cfg: Config) -> Look:
    """A first look at the run's data (data.look): what the defaults that decide the decode are chosen from."""
    d = cfg.data
    return look(d.source, exclude=d.exclude, allow_outside=d.allow_outside, imgsz=d.imgsz, channels=d.channels,
                resize=d.resize, cache=d.cache, task=d.task, download=d.download, arrays=(d.h5_images, d.h5_labels))


def load_data(cfg: Config) -> tuple[ImageSet, bool, Path | None]:
    d = cfg.data
    return open_dataset(d.source, imgsz=d.imgsz, channels=d.channels, resize=d.resize, workers=d.workers,
                        cache=d.cache, task=d.task, download=d.download, exclude=d.exclude,
                        allow_outside=d.allow_outside, arrays=(d.h5_images, d.h5_labels))


def prepare(cfg: Config, *, min_size: int = 1) -> Prepared:
    """Everything about the data that can fail, checked before anything is written."""
    ds, cache_hit, source = load_data(cfg)
    if len(ds.classes) < 2 and ds.task == "classify":
        raise CnnfitError(f"only one class ('{ds.classes[0]}') found in '{cfg.data.source}'; a classifier needs "
                          "at least two classes (one sub-folder each)")
    if not ds.classes and ds.task == "multilabel":
        raise CnnfitError(f"no labels found in '{cfg.data.source}': every row's label set is empty; give rows "
                          "such as 'img.png,cat;outdoor'")
    side = ds.shape[1]
    if side < min_size:
        raise CnnfitError(f"imgsz={side} is below {cfg.model.name}'s minimum of {min_size} px; "
                          f"set imgsz={min_size} or larger")
    parts, split_how = split_indices(ds, cfg.data.val, cfg.data.test, cfg.train.seed)
    d = cfg.data
    if d.fraction < 1 or d.per_class:
        for name in ("train", "val"):
            parts[name] = subsample(ds.labels, parts[name], fraction=d.fraction, per_class=d.per_class,
                                    seed=cfg.train.seed)
        group = "class" if ds.task == "classify" else "group"  # other tasks: the groups strata names
        limits = ([f"{d.fraction:g} of each {group}"] if d.fraction < 1 else []) + (
            [f"at most {d.per_class} per {group}"] if d.per_class else [])
        split_how += f"; train and val limited to {' and '.join(limits)}"
    if d.folds is not None:
        parts, split_how = _fold(ds, parts, d.folds, d.fold, cfg.train.seed, split_how)
    if d.merge_val:  # the val images join training; they stay the val split only to keep the loop's bookkeeping
        parts["train"] = np.sort(np.concatenate([parts["train"], parts["val"]]))
        split_how += "; val merged into train (merge_val)"
    mean, std = split_stats(ds, parts["train"])
    return Prepared(ds, cache_hit, parts, split_how, mean, std, source, merged_val=d.merge_val)


def _fold(ds: ImageSet, parts: dict[str, np.ndarray], folds: int, fold: int | None, seed: int,
          split_how: str) -> tuple[dict[str, np.ndarray], str]:
    """data.folds/data.fold: train+val pooled and cut into `folds` stratified folds; val = fold `fold`, train = the
    rest; test as without folds. The pool leaves out test's images, so a source whose test falls back to its val
    (no test split of its own) cuts its folds from train alone."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if fold is None:
        raise CnnfitError(f"data.folds={folds} trains one fold: add data.fold=0..{folds - 1}, or run every fold "
                          f"with cnnfit cv folds={folds}")
    pool = np.setdiff1d(np.union1d(parts["train"], parts["val"]), parts["test"])  # sorted
    if len(pool) < folds:
        raise CnnfitError(f"data.folds={folds} needs at least {folds} train+val images, the data has {len(pool)}; "
                          "use fewer folds")
    keys, by = strata(ds.labels, ds.task)
    smallest = int(np.unique(keys[pool], return_counts=True)[1].min())
    if smallest >= folds:
        cut = StratifiedKFold(folds, shuffle=True, random_state=seed).split(pool, keys[pool])
    else:  # a group with fewer images than folds cannot reach every fold: sklearn warns and splits unevenly
        cut, by = KFold(folds, shuffle=True, random_state=seed).split(pool), f"not stratified: a group has {smallest}"
    train_pos, val_pos = list(cut)[fold]
    parts = {**parts, "train": pool[train_pos], "val": pool[val_pos]}  # positions are sorted: so are the parts
    return parts, f"{split_how}; fold {fold} of {folds} of train+val ({by}, seed {seed}); test as always"


def write_data_report(prep: Prepared, out_dir: Path, max_lines: int = 12) -> dict[str, Any]:
    """data_report.json and clean_manifest.csv in out_dir, and the findings logged. The report is remembered
    with the cached data, so a second run of the same data and split starts at once."""
    # merged into train, val is no split of its own: checked apart, its images would all be "in train and val"
    parts = {k: v for k, v in prep.parts.items() if not (prep.merged_val and k == "val")}
    key = np.concatenate([parts.get(k, np.array([-2])) for k in ("train", "val", "test")] + [np.array([-1])])
    report = remembered(prep.ds, key, "report", lambda: inspect_dataset(prep.ds, parts, source=prep.source))
    report["split"] = prep.split_how
    write_json(out_dir / "data_report.json", report)
    if prep.ds.files is not None:
        write_clean_manifest(report, prep.ds, out_dir / "clean_manifest.csv")
    lines = format_report(report)
    shown = lines[:-1]
    if len(shown) > max_lines:  # the log gets the overview and the first findings; the file has all
        shown = shown[:max_lines] + [f"... more findings in {out_dir / 'data_report.json'}"]
    for line in shown + lines[-1:]:
        log.info(line)
    return report


def write_samples(prep: Prepared, out_dir: Path, augment: Augment, seed: int, n: int = 64) -> None:
    """samples.png: n random training images after augmentation, before normalization, so users see what the
    model sees."""
    from cnnfit.eval.plots import plot_samples

    idx = np.sort(np.random.default_rng(seed).choice(prep.parts["train"], min(n, len(prep.parts["train"])),
                                                     replace=False))
    g = torch.Generator()
    g.manual_seed(seed)
    images = augment(torch.from_numpy(read_rows(prep.ds.images, idx)).float() / 255, g).clamp(0, 1).numpy()
    titles = [label_text(prep.ds, i) for i in idx]  # 'cat', 'cat;outdoor' or '3.25': any task
    plot_samples(images, np.arange(len(idx)), titles, out_dir / "samples.png")


def init_from_data(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, train: np.ndarray, seed: int,
                   loader_args: dict, sample: int = 5000) -> float:
    """Give a model that sets weights from the data (airnet's whitening layer) a seeded sample of `sample` normalized,
    unaugmented training images; the seconds it took, synchronized (0 for other models)."""
    if not hasattr(model, "init_from_data"):
        return 0.0
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)  # a sample of every class: a split is often in class-folder order
    rows = np.sort(rng.choice(train, min(sample, len(train)), replace=False))
    x, _ = next(iter(DeviceLoader(images, labels, index=rows, **{**loader_args, "batch": len(rows)})))
    model.init_from_data(x)  # (N, C, H, W)
    synchronize(loader_args["device"])
    return time.perf_counter() - t0


def build_augment(cfg: Config) -> Augment:
    """The batched training augmentation from `aug.*` (mixup/cutmix act on labels, in the loop)."""
    keys = {k: v for k, v in cfg.aug.model_dump().items() if k not in ("mixup", "cutmix", "only_minority", "preset")}
    return augment.build(**keys)



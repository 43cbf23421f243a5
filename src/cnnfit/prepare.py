"""Data preparation shared by `cnnfit train` and `cnnfit inspect`: load (cached), check, split,
normalization statistics, and the data report with its augmented-samples grid."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnfit import data as D
from cnnfit.config import Config
from cnnfit.device import synchronize
from cnnfit.errors import CnnfitError


@dataclass
class Prepared:
    ds: D.ImageSet
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
        return None if self.ds.task == "regress" else D.class_counts(self.ds, self.parts["train"])


def exclude_patterns(spec: str | list[str]) -> tuple[str, ...]:
    """`exclude=` as patterns: a .txt file contributes one per line (blank lines and # comments skipped)."""
    items = [spec] if isinstance(spec, str) else list(spec)
    patterns: list[str] = []
    for item in items:
        if item.endswith(".txt"):
            if not Path(item).is_file():
                raise CnnfitError(f"exclude file '{item}' not found; give a .txt with one path per line, or patterns")
            lines = Path(item).read_text().splitlines()
            patterns += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        else:
            patterns.append(item)
    return tuple(patterns)


def load_data(cfg: Config) -> tuple[D.ImageSet, bool, Path | None]:
    ref = D.resolve(cfg.data.source, download=cfg.data.download, exclude=exclude_patterns(cfg.data.exclude))
    d = cfg.data
    return *D.load_imageset(ref, d.imgsz, d.channels, d.resize, d.workers, d.cache, task=d.task), ref.path


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
    parts, split_how = D.split_indices(ds, cfg.data.val, cfg.data.test, cfg.train.seed)
    d = cfg.data
    if d.fraction < 1 or d.per_class:
        for name in ("train", "val"):
            parts[name] = D.subsample(ds.labels, parts[name], fraction=d.fraction, per_class=d.per_class,
                                      seed=cfg.train.seed)
        group = "class" if ds.task == "classify" else "group"  # other tasks: the groups D.strata names
        limits = ([f"{d.fraction:g} of each {group}"] if d.fraction < 1 else []) + (
            [f"at most {d.per_class} per {group}"] if d.per_class else [])
        split_how += f"; train and val limited to {' and '.join(limits)}"
    if d.merge_val:  # the val images join training; they stay the val split only to keep the loop's bookkeeping
        parts["train"] = np.sort(np.concatenate([parts["train"], parts["val"]]))
        split_how += "; val merged into train (merge_val)"
    mean, std = D.split_stats(ds, parts["train"])
    return Prepared(ds, cache_hit, parts, split_how, mean, std, source, merged_val=d.merge_val)


def augmented_samples(prep: Prepared, augment: D.augment.Augment | None, seed: int,
                      n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """n random training images as the model sees them, before normalization: (n, C, H, W) in [0, 1], and
    their (n,) indices into prep.ds."""
    import torch

    idx = np.sort(np.random.default_rng(seed).choice(prep.parts["train"], min(n, len(prep.parts["train"])),
                                                     replace=False))
    x = torch.from_numpy(D.read_rows(prep.ds.images, idx)).float() / 255
    if augment is not None:
        g = torch.Generator()
        g.manual_seed(seed)
        x = augment(x, g)
    return x.clamp(0, 1).numpy(), idx


def write_data_report(prep: Prepared, out_dir: Path, console: Console, max_lines: int = 12) -> dict[str, Any]:
    """data_report.json and clean_manifest.csv in out_dir, and the findings on the console. The report
    is remembered with the cached data, so a second run of the same data and split starts at once."""
    from cnnfit.data.cache import remembered
    from cnnfit.data.inspect import format_report, inspect_dataset, write_clean_manifest

    # merged into train, val is no split of its own: checked apart, its images would all be "in train and val"
    parts = {k: v for k, v in prep.parts.items() if not (prep.merged_val and k == "val")}
    key = np.concatenate([parts.get(k, np.array([-2])) for k in ("train", "val", "test")] + [np.array([-1])])
    report = remembered(prep.ds, key, "report", lambda: inspect_dataset(prep.ds, parts, source=prep.source))
    report["split"] = prep.split_how
    (out_dir / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    if prep.ds.files is not None:
        write_clean_manifest(report, prep.ds, out_dir / "clean_manifest.csv")
    lines = format_report(report)
    shown = lines[:-1]
    if len(shown) > max_lines:  # the console gets the overview and the first findings; the file has all
        shown = shown[:max_lines] + [f"... more findings in {out_dir / 'data_report.json'}"]
    for line in shown + lines[-1:]:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    return report


def write_samples(prep: Prepared, out_dir: Path, augment, seed: int) -> None:
    """samples.png: training images after augmentation, so users see what the model sees."""
    from cnnfit.eval.plots import plot_samples

    images, idx = augmented_samples(prep, augment, seed)
    titles = [D.label_text(prep.ds, i) for i in idx]  # 'cat', 'cat;outdoor' or '3.25': any task
    plot_samples(images, np.arange(len(idx)), titles, out_dir / "samples.png")


def new_run_dir(project: str, name: str) -> Path:
    """runs/name, or runs/name2, runs/name3 ...: an existing run is never touched."""
    parent = Path(project)
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        candidate = parent / (name if i == 1 else f"{name}{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CnnfitError(f"no free run name for '{name}' in {parent}; pick another name=")


def init_from_data(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, train: np.ndarray, seed: int,
                   loader_args: dict, sample: int = 5000) -> float:
    """Give a model that sets weights from the data (airnet's whitening layer) a seeded sample of `sample` normalized,
    unaugmented training images; the seconds it took, synchronized (0 for other models)."""
    if not hasattr(model, "init_from_data"):
        return 0.0
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)  # a sample of every class: a split is often in class-folder order
    rows = np.sort(rng.choice(train, min(sample, len(train)), replace=False))
    x, _ = next(iter(D.DeviceLoader(images, labels, index=rows, **{**loader_args, "batch": len(rows)})))
    model.init_from_data(x)  # (N, C, H, W)
    synchronize(loader_args["device"])
    return time.perf_counter() - t0


def build_augment(cfg: Config) -> D.augment.Augment | None:
    """The batched training augmentation from `aug.*` (mixup/cutmix act on labels, in the loop)."""
    keys = {k: v for k, v in cfg.aug.model_dump().items() if k not in ("mixup", "cutmix", "only_minority")}
    return D.augment.build(**keys)


def inspect(cfg: Config, console: Console | None = None) -> Path:
    """`cnnfit inspect`: the data report alone, in runs/inspect*, without training."""
    console = console or Console()
    prep = prepare(cfg)
    out = new_run_dir(cfg.project, "inspect")
    ds = prep.ds
    what = {"classify": f"{len(ds.classes)} classes", "multilabel": f"{len(ds.classes)} labels",
            "regress": f"target '{ds.classes[0]}'"}[ds.task]
    console.print(f"{cfg.data.source}: {len(ds)} images, {what}, "
                  f"{'x'.join(map(str, ds.shape))}, {len(ds.skipped)} skipped; {prep.split_how}", highlight=False,
                  markup=False, soft_wrap=True)
    write_data_report(prep, out, console, max_lines=60)
    write_samples(prep, out, build_augment(cfg), cfg.train.seed)
    console.print(f"report -> {out / 'data_report.json'}, augmented samples -> {out / 'samples.png'}", markup=False,
                  soft_wrap=True)
    return out
